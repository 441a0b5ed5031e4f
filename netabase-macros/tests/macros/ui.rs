//! Compile-time behaviour: the shape users write compiles, misuse fails with clear errors
//! (the expected messages are in `tests/ui/fail/*.stderr`).

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
