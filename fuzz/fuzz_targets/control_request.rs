//! Any bytes fed to a control connection, split into lines, give requests or one refusal
//! that ends the session: nothing runs after a refusal, nothing runs on a TCP session
//! before its token, a line starting with an HTTP method never runs, and every request
//! parsed re-encodes to a line that parses to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netabase_control::protocol::Request;
use netabase_control::session::{Session, Step, Token, parse_request, starts_with_http_method};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a Unix session (no token) or a TCP one; on a TCP session whose
    // second byte is odd, the first line is the right token.
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let token = Token::from_hex(&"5a".repeat(32)).expect("a valid token");
    let tcp = kind & 1 == 1;
    let mut input = rest.to_vec();
    if tcp && kind & 2 == 2 {
        let mut with_token = token.to_hex().as_bytes().to_vec();
        with_token.push(b'\n');
        with_token.extend_from_slice(rest);
        input = with_token;
    }
    let mut session = Session::new(tcp.then(|| token.clone()));
    let mut authenticated = !tcp;
    let mut refused = false;
    for line in input.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let awaited_token = session.awaits_token();
        match session.on_line(line) {
            Step::Authenticated => {
                assert!(awaited_token && !refused);
                assert!(token.matches(line));
                authenticated = true;
            }
            Step::Request(request) => {
                assert!(authenticated && !refused && !awaited_token);
                assert!(!starts_with_http_method(line));
                let again = serde_json::to_string(&request).expect("a request encodes");
                assert_eq!(parse_request(again.as_bytes()).as_ref(), Ok(&request));
                let _: Request = request;
            }
            Step::Refuse(_) => refused = true,
        }
    }
});
