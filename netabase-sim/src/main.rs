//! `netabase-sim`: run simulation scenarios and sweeps of seeds (see [`netabase_sim::cli`]).

/// The simulator allocates and frees a message, an answer's peer list and a queue entry
/// for nearly every event, often on one thread and frees on another; mimalloc's per-thread
/// free lists make that cheaper than glibc's bins, and it backs its segments with
/// transparent huge pages, so the node state of a large network (a gigabyte for ten
/// thousand nodes, touched at random) costs fewer TLB misses. Measured on the 2-core
/// reference machine, alternating with the system allocator: `dht-loss` 6–10% faster,
/// `dht-10k` 12% (the system allocator needed huge pages asked for by a glibc tunable to
/// come close).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    netabase_sim::cli::main()
}
