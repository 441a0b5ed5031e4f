//! `netabase-sim`: run simulation scenarios and sweeps of seeds (see [`netabase_sim::cli`]).

fn main() -> std::process::ExitCode {
    netabase_sim::cli::main()
}
