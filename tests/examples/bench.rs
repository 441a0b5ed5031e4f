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
    assert_eq!(report.systems.len(), 4);
    for system in [
        System::Stock,
        System::StockRedb,
        System::NETABASE_MEMORY,
        System::NETABASE_REDB,
    ] {
        let r = report.of(system).expect("every network ran");
        assert_eq!(r.failures, 0, "{}", system.name());
        assert_eq!(r.ops, settings.ops * settings.rounds, "{}", system.name());
        assert_eq!(r.put.len(), r.ops);
        assert_eq!(r.rounds.len(), settings.rounds, "{}", system.name());
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
        "stock libp2p kad (redb durable) / stock: throughput x",
        "Netabase redb durable, tokio / stock redb: throughput x",
        "fsync floor",
        "scheduling: every node's event loop",
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
    assert_eq!(all[..2], [System::Stock, System::StockRedb]);
    assert_eq!(
        all.len(),
        2 + 2 * [Rt::Tokio, Rt::AsyncStd, Rt::Smol]
            .iter()
            .filter(|r| r.built())
            .count()
    );
    assert_eq!(
        System::parse_list("stock-redb,stock").unwrap(),
        [System::StockRedb, System::Stock]
    );
    for bad in [
        "sled",
        "memory-glommio",
        "redb-",
        "stock-tokio",
        "stock-sled",
    ] {
        let e = System::parse_list(bad).expect_err(bad);
        assert!(e.contains(bad), "{e}");
    }
}

/// The stock network's redb record store keeps what it acknowledged: a record put, then
/// the store reopened from its file, gives the same key, value, publisher and (to the
/// millisecond) expiry; a removed record is gone after reopening, and too large a value
/// is refused.
#[test]
fn the_stock_redb_store_keeps_acknowledged_records() {
    use crate::network_bench::RedbRecordStore;
    use libp2p::kad::store::RecordStore;
    use libp2p::kad::{Record, RecordKey};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let local = libp2p::PeerId::random();
    let errors = Arc::new(AtomicU64::new(0));
    let publisher = libp2p::PeerId::random();
    let expires = Instant::now() + Duration::from_secs(3600);
    let kept = Record {
        key: RecordKey::new(&b"kept"),
        value: vec![1, 2, 3],
        publisher: Some(publisher),
        expires: Some(expires),
    };
    let removed = Record::new(RecordKey::new(&b"removed"), vec![4]);
    {
        let mut store = RedbRecordStore::create(&path, local, Arc::clone(&errors)).unwrap();
        store.put(kept.clone()).unwrap();
        store.put(removed.clone()).unwrap();
        store.remove(&removed.key);
        assert!(matches!(
            store.put(Record::new(RecordKey::new(&b"big"), vec![0; 65 * 1024])),
            Err(libp2p::kad::store::Error::ValueTooLarge)
        ));
    }
    let store = RedbRecordStore::create(&path, local, Arc::clone(&errors)).unwrap();
    let found = store.get(&kept.key).expect("the record survives reopening");
    assert_eq!(found.value, kept.value);
    assert_eq!(found.publisher, Some(publisher));
    let at = found.expires.expect("its expiry too");
    let off = if at > expires {
        at - expires
    } else {
        expires - at
    };
    assert!(off < Duration::from_millis(50), "{off:?}");
    assert!(store.get(&removed.key).is_none());
    assert!(store.get(&RecordKey::new(&b"big")).is_none());
    assert_eq!(store.records().count(), 1);
    assert_eq!(errors.load(Ordering::Relaxed), 0);
}
