//! Configurations a node refuses, each with the field it names, and the largest K at work.

use std::time::Duration;

use netabase_core::{
    Config, ConfigError, ConnectionType, Instant, MemoryStore, Node, Output, PeerId, PeerInfo,
    RecordKey, Request, Response,
};

use crate::harness::addr_of;

fn refused(config: Config) -> ConfigError {
    let local = PeerId::from_seed(0);
    match Node::new(config, local, MemoryStore::new(local), 1, Instant::ZERO) {
        Ok(_) => panic!("the configuration was accepted"),
        Err(e) => e,
    }
}

#[test]
fn invalid_configurations_are_refused_with_the_field_they_name() {
    let range = |field, value, min, max| ConfigError::OutOfRange {
        field,
        value,
        min,
        max,
    };
    let max_k = Config::MAX_K as u64;
    let d = Config::default();
    let cases = [
        (Config { k: 0, ..d.clone() }, range("k", 0, 1, max_k)),
        (
            Config {
                k: Config::MAX_K + 1,
                ..d.clone()
            },
            range("k", max_k + 1, 1, max_k),
        ),
        (
            Config {
                alpha: 0,
                ..d.clone()
            },
            range("alpha", 0, 1, max_k),
        ),
        (
            Config {
                max_queries: 0,
                ..d.clone()
            },
            range("max_queries", 0, 1, u64::MAX),
        ),
        (
            Config {
                cache_peers: 21,
                ..d.clone()
            },
            range("cache_peers", 21, 0, 20),
        ),
        (
            Config {
                request_timeout: Duration::ZERO,
                ..d.clone()
            },
            ConfigError::Zero {
                field: "request_timeout",
            },
        ),
        (
            Config {
                expiry_sweep_interval: Duration::ZERO,
                ..d.clone()
            },
            ConfigError::Zero {
                field: "expiry_sweep_interval",
            },
        ),
        (
            Config {
                replication_interval: Some(Duration::ZERO),
                ..d.clone()
            },
            ConfigError::Zero {
                field: "replication_interval",
            },
        ),
        (
            Config {
                request_timeout: Duration::from_secs(61),
                ..d.clone()
            },
            ConfigError::Contradiction {
                field: "request_timeout",
                other: "query_timeout",
                reason: "a query would end before its first answer could come",
            },
        ),
        (
            Config {
                tombstone_horizon: Duration::from_secs(3600),
                ..d.clone()
            },
            ConfigError::Contradiction {
                field: "tombstone_horizon",
                other: "record_ttl",
                reason: "a removal would be forgotten while older copies may still live",
            },
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(refused(config), expected);
    }
    assert_eq!(
        refused(Config { k: 0, ..d.clone() }).to_string(),
        format!("`k` is 0, outside 1..={max_k}")
    );
    d.validate().unwrap();
}

/// With the largest K, a peer's answer naming more peers than a lookup keeps candidates
/// for fills the lookup without overflowing its candidate indices.
#[test]
fn the_largest_k_takes_answers_of_every_size() {
    let config = Config {
        k: Config::MAX_K,
        bootstrap_interval: None,
        ..Config::default()
    };
    let local = PeerId::from_seed(0);
    let mut node = Node::new(config, local, MemoryStore::new(local), 1, Instant::ZERO).unwrap();
    let first = PeerId::from_seed(1);
    node.add_address(Instant::ZERO, first, addr_of(&first));
    node.get_closest_peers(Instant::ZERO, RecordKey::new(b"target").unwrap())
        .unwrap();
    let outputs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    let id = outputs
        .iter()
        .find_map(|o| match o {
            Output::SendRequest {
                id,
                request: Request::FindNode { .. },
                ..
            } => Some(*id),
            _ => None,
        })
        .expect("a FIND_NODE request");
    // More peers than the lookup keeps candidates for (8 K).
    let closer_peers: Vec<PeerInfo> = (2..(8 * Config::MAX_K as u64 + 100))
        .map(|n| {
            let id = PeerId::from_seed(n);
            PeerInfo {
                id,
                addrs: vec![addr_of(&id)].into(),
                connection: ConnectionType::NotConnected,
            }
        })
        .collect();
    node.handle_response(Instant::ZERO, id, Response::FindNode { closer_peers });
    node.check_invariants().unwrap();
}
