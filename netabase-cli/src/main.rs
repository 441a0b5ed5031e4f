//! `netabase`: run a Netabase node from the shell, control it, read its metrics, or run the
//! simulator (see the `netabase_cli` crate documentation).

fn main() -> std::process::ExitCode {
    netabase_cli::main()
}
