//! `netabase-sim`: run simulation scenarios and sweeps of seeds (see [`netabase_sim::cli`]).

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    use_huge_pages();
    netabase_sim::cli::main()
}

/// Networks from this many nodes up run on huge pages (see [`use_huge_pages`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HUGE_PAGES_FROM_NODES: usize = 1_000;

/// Large simulations spend most of their time waiting for memory: the routing tables and
/// connection sets of ten thousand nodes are spread over a gigabyte of heap, so an event
/// misses the TLB as well as the caches. glibc backs its heap with transparent huge pages
/// when its `glibc.malloc.hugetlb=1` tunable is set, which takes about a fifth off the
/// 10,000-node scenario (two-megabyte pages cover the whole heap with the TLB's entries).
/// Small networks fit in cache and would only pay for zeroing and compacting huge pages,
/// so this applies to scenarios of at least [`HUGE_PAGES_FROM_NODES`] nodes. Tunables are
/// read only when a process starts, so the binary starts itself again with the tunable
/// set. A `GLIBC_TUNABLES` already in the environment (even empty) is left as it is, which
/// also turns this off; so does any failure to read the scenario or to start again.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn use_huge_pages() {
    use clap::Parser;
    use netabase_sim::cli::{Cli, Command};
    use std::os::unix::process::CommandExt;

    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(cli) = Cli::try_parse() else {
        return;
    };
    let (Command::Run { scenario, .. } | Command::Sweep { scenario, .. }) = &cli.command;
    let large =
        netabase_sim::Scenario::load(scenario).is_ok_and(|s| s.nodes >= HUGE_PAGES_FROM_NODES);
    if !large {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    // `exec` returns only if it failed; the run then goes on in this process.
    let _failed = command
        .args(args)
        .env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
        .exec();
}
