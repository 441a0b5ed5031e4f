//! Three nodes: a record put on one is read from another, and each node's metrics show it.

use serde_json::Value;

use crate::support::{NodeProcess, ctl, eventually, json, ok, run, sample, scrape};

#[test]
fn three_nodes_put_on_one_get_from_another_and_count_it_in_their_metrics() {
    let root = tempfile::tempdir().unwrap();
    let a = NodeProcess::start(&root.path().join("a"), &[]);
    let b = NodeProcess::start(&root.path().join("b"), &["--bootstrap", &a.address()]);
    let c = NodeProcess::start(&root.path().join("c"), &["--bootstrap", &a.address()]);

    // B and C bootstrap through A when they start; wait until A knows both.
    eventually("A's routing table holds B and C", || {
        let table = json(&ok(&ctl(&a, &["routing-table", "--json"])));
        let peers: Vec<&str> = table
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        peers.contains(&b.peer_id().as_str()) && peers.contains(&c.peer_id().as_str())
    });

    // A raw record put on B, read from C.
    let put = ok(&ctl(&b, &["put", "greeting", "hello from b"]));
    assert!(put.starts_with("stored \"greeting\" here and at "), "{put}");
    let got = ok(&ctl(&c, &["get", "greeting"]));
    assert_eq!(got, "hello from b\n");
    let got = json(&ok(&ctl(&c, &["get", "greeting", "--json"])));
    assert_eq!(got["value"], "hello from b");
    assert_eq!(got["origin"], b.peer_id().as_str());

    // Binary values travel as hex.
    ok(&ctl(&c, &["put", "--hex", "blob", "00ff10"]));
    let got = json(&ok(&ctl(&a, &["get", "blob", "--json"])));
    assert_eq!(got["value_hex"], "00ff10");
    assert_eq!(ok(&ctl(&a, &["get", "blob"])), "0x00ff10\n");

    // A JSON document put on A, read from C.
    let doc = r#"{"name":"ada","langs":["en","fr"],"n":1.5}"#;
    ok(&ctl(&a, &["put", "--doc", "profile", doc]));
    let got = json(&ok(&ctl(&c, &["get", "--doc", "profile", "--json"])));
    assert_eq!(got["doc"], json(doc));
    assert_eq!(got["origin"], a.peer_id().as_str());
    // The document is not a raw record.
    let missing = ctl(&c, &["get", "profile"]);
    assert_eq!(missing.status.code(), Some(1));

    // Providers: B provides, C finds it.
    ok(&ctl(&b, &["provide", "greeting"]));
    let providers = json(&ok(&ctl(&c, &["providers", "greeting", "--json"])));
    assert!(
        providers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer"] == b.peer_id().as_str()),
        "{providers}"
    );

    // Every node's metrics moved.
    let (ma, mb, mc) = (
        scrape(&a.metrics()),
        scrape(&b.metrics()),
        scrape(&c.metrics()),
    );
    let put_ok = r#"netabase_operations_total{operation="put_record",outcome="success"}"#;
    let get_ok = r#"netabase_operations_total{operation="get_record",outcome="success"}"#;
    assert_eq!(sample(&mb, put_ok), Some(1.0), "{mb}");
    assert_eq!(sample(&ma, put_ok), Some(1.0), "{ma}");
    assert!(sample(&mc, get_ok).unwrap_or(0.0) >= 2.0, "{mc}");
    assert!(
        sample(
            &mb,
            r#"netabase_operations_total{operation="start_providing",outcome="success"}"#
        ) == Some(1.0),
        "{mb}"
    );
    assert!(
        sample(
            &mc,
            r#"netabase_query_duration_seconds_count{operation="get_record",outcome="success"}"#
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{mc}"
    );
    // A served PUT_VALUE requests from B (and C), and answered them.
    let in_put = r#"netabase_messages_total{direction="in",protocol="/netabase/kad/1.0.0",kind="put_value",role="request"}"#;
    let out_put = r#"netabase_messages_total{direction="out",protocol="/netabase/kad/1.0.0",kind="put_value",role="response"}"#;
    assert!(sample(&ma, in_put).unwrap_or(0.0) >= 1.0, "{ma}");
    assert!(sample(&ma, out_put).unwrap_or(0.0) >= 1.0, "{ma}");
    for (name, m) in [("a", &ma), ("b", &mb), ("c", &mc)] {
        for metric in [
            "netabase_messages_total",
            "libp2p_swarm_connections_established_total",
            "libp2p_identify_received_total",
            "libp2p_bandwidth_bytes_total",
        ] {
            assert!(
                sample(m, metric).unwrap_or(0.0) > 0.0,
                "{name}: {metric} is zero\n{m}"
            );
        }
        // libp2p's bandwidth counters measure the node's connections both ways.
        for direction in ["Inbound", "Outbound"] {
            let bytes: f64 = m
                .lines()
                .filter(|l| {
                    l.starts_with("libp2p_bandwidth_bytes_total{")
                        && l.contains(&format!("direction=\"{direction}\""))
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
            assert!(bytes > 0.0, "{name}: no {direction} bytes counted\n{m}");
        }
        assert!(m.trim_end().ends_with("# EOF"), "{name}: not OpenMetrics");
    }
    // Gauges are refreshed within a second.
    eventually("A's gauges show its peers and records", || {
        let m = scrape(&a.metrics());
        sample(&m, "netabase_routing_table_peers") == Some(2.0)
            && sample(&m, "netabase_connected_peers").unwrap_or(0.0) >= 1.0
            && sample(&m, "netabase_store_records").unwrap_or(0.0) >= 2.0
    });

    // `netabase metrics` prints the same text, filtered by name.
    let printed = ok(&run(&[
        "metrics",
        &b.metrics(),
        "--prefix",
        "netabase_operations",
    ]));
    assert!(printed.contains(put_ok), "{printed}");
    assert!(!printed.contains("libp2p_"), "{printed}");

    // The stats command agrees with the network view.
    let stats = json(&ok(&ctl(&b, &["stats", "--json"])));
    assert_eq!(stats["local_raw_records"], 1);
    assert!(stats["requests_sent"].as_u64().unwrap() > 0);
    assert_eq!(stats["routing_table_peers"], 2);
}
