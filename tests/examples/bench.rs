//! The network benchmark's quick mode (`NETABASE_BENCH_QUICK=1 cargo bench --bench
//! network`), run in-process: every network starts, every operation succeeds, and the
//! report has its rows and ratios.

use crate::network_bench::{Backend, Rt, Settings, System, quantile, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_benchmark_runs_in_quick_mode() {
    let settings = Settings::quick();
    let report = run(&settings, |what| eprintln!("{what}"))
        .await
        .expect("the benchmark runs");
    assert_eq!(report.systems.len(), 3);
    for system in [
        System::Stock,
        System::NETABASE_MEMORY,
        System::NETABASE_REDB,
    ] {
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
        "Netabase memory, tokio / stock: throughput x",
        "Netabase redb durable, tokio / stock: throughput x",
    ] {
        assert!(table.contains(needle), "{needle:?} in\n{table}");
    }
}

/// The same quick run with Netabase's nodes on async-std and on smol, beside stock.
#[cfg(all(feature = "async-std", feature = "smol"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_benchmark_runs_netabase_on_async_std_and_smol() {
    let systems = System::parse_list("stock,memory-async-std,netabase-memory-smol").unwrap();
    assert_eq!(
        systems,
        [
            System::Stock,
            System::Netabase(Backend::Memory, Rt::AsyncStd),
            System::Netabase(Backend::Memory, Rt::Smol),
        ]
    );
    let settings = Settings {
        systems,
        ..Settings::quick()
    };
    let report = run(&settings, |what| eprintln!("{what}"))
        .await
        .expect("the benchmark runs");
    for r in &report.systems {
        assert_eq!(r.failures, 0, "{}", r.system.name());
        assert_eq!(r.ops, settings.ops * settings.rounds, "{}", r.system.name());
    }
    let table = report.render();
    eprintln!("{table}");
    for needle in [
        "Netabase memory, async-std / stock: throughput x",
        "Netabase memory, smol / stock: throughput x",
    ] {
        assert!(table.contains(needle), "{needle:?} in\n{table}");
    }
}

#[test]
fn network_names_are_parsed_and_unknown_ones_refused() {
    assert_eq!(
        System::parse_list("stock, memory,redb").unwrap(),
        [
            System::Stock,
            System::NETABASE_MEMORY,
            System::NETABASE_REDB
        ]
    );
    assert_eq!(
        System::parse_list("redb-tokio,redb").unwrap(),
        [System::NETABASE_REDB]
    );
    let all = System::parse_list("all").unwrap();
    assert_eq!(all[0], System::Stock);
    assert_eq!(
        all.len(),
        1 + 2 * [Rt::Tokio, Rt::AsyncStd, Rt::Smol]
            .iter()
            .filter(|r| r.built())
            .count()
    );
    for bad in ["sled", "memory-glommio", "redb-", "stock-tokio"] {
        let e = System::parse_list(bad).expect_err(bad);
        assert!(e.contains(bad), "{e}");
    }
}
