//! The network benchmark's quick mode (`NETABASE_BENCH_QUICK=1 cargo bench --bench
//! network`), run in-process: every network starts, every operation succeeds, and the
//! report has its rows and ratios.

use crate::network_bench::{Settings, System, quantile, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_benchmark_runs_in_quick_mode() {
    let settings = Settings::quick();
    let report = run(&settings, |what| eprintln!("{what}"))
        .await
        .expect("the benchmark runs");
    assert_eq!(report.systems.len(), 3);
    for system in [System::Stock, System::NetabaseMemory, System::NetabaseRedb] {
        let r = report.of(system).expect("every network ran");
        assert_eq!(r.failures, 0, "{}", system.name());
        assert_eq!(r.ops, settings.ops * settings.rounds, "{}", system.name());
        assert_eq!(r.put.len(), r.ops);
        assert!(quantile(&r.put, 0.5) > std::time::Duration::ZERO);
        assert!(quantile(&r.op, 0.99) >= quantile(&r.op, 0.5));
        assert!(r.throughput() > 0.0);
        // The sealed record: the payload and the envelope around it.
        assert!(r.value_bytes > settings.payload, "{}", r.value_bytes);
    }
    let table = report.render();
    eprintln!("{table}");
    for needle in [
        "ops/s",
        "put p50",
        "stock libp2p kad (MemoryStore)",
        "Netabase (memory backend) / stock: throughput x",
        "Netabase (redb, durable) / stock: throughput x",
    ] {
        assert!(table.contains(needle), "{needle:?} in\n{table}");
    }
}
