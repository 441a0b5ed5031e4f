//! The default configuration on each runtime: it listens on every transport the runtime
//! has (TCP and QUIC on tokio, TCP on async-std and smol) on every IPv4 interface, and
//! peers reach it over each; an address of a transport the runtime lacks is refused with
//! an error naming the address and the runtime. mDNS stays off, as in every test outside
//! a network namespace.

use netabase::swarm::{Runtime, TransportKind};
use netabase::{
    AsyncStdRuntime, Multiaddr, NetabaseConfig, NetabaseError, NetabaseEvent, SmolRuntime,
    TokioRuntime,
};
use netabase_testnode::in_process::*;

/// What each runtime is expected to offer, written out here rather than read from the
/// runtime: its transports and its default listen addresses.
fn expected<R: Runtime>() -> (&'static [TransportKind], &'static [&'static str]) {
    assert_eq!(
        [TokioRuntime::NAME, AsyncStdRuntime::NAME, SmolRuntime::NAME],
        ["tokio", "async-std", "smol"]
    );
    match R::NAME {
        "tokio" => (
            &[TransportKind::Tcp, TransportKind::Quic],
            &["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"],
        ),
        "async-std" | "smol" => (&[TransportKind::Tcp], &["/ip4/0.0.0.0/tcp/0"]),
        other => panic!("no expectations for the {other} runtime"),
    }
}

/// A loopback listen address of transport `kind` for another node.
fn loopback(kind: TransportKind) -> Multiaddr {
    match kind {
        TransportKind::Tcp => "/ip4/127.0.0.1/tcp/0",
        TransportKind::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        other => panic!("no loopback address for {other}"),
    }
    .parse()
    .unwrap()
}

per_runtime!(the_default_configuration_listens_on_every_transport_of_the_runtime);
async fn the_default_configuration_listens_on_every_transport_of_the_runtime<R: TestRuntime>() {
    let (transports, defaults) = expected::<R>();
    let dir = tempfile::tempdir().unwrap();
    let config = NetabaseConfig::default()
        .with_data_dir(dir.path())
        .with_mdns(false);
    assert_eq!(config.listen_addresses, None);
    let defaults: Vec<Multiaddr> = defaults.iter().map(|a| a.parse().unwrap()).collect();
    assert_eq!(config.listen_addresses_on::<R>(), defaults);

    let node = Node::<R>::new_with_config(config).unwrap();
    // Subscribed before the start, one subscriber per transport, so that no address
    // announcement is missed.
    let mut events: Vec<_> = transports.iter().map(|_| subscribe(&node)).collect();
    node.start_swarm()
        .await
        .unwrap_or_else(|e| panic!("the default configuration starts on {}: {e}", R::NAME));
    // `0.0.0.0` is expanded into the interface addresses, loopback among them.
    let mut loopbacks = Vec::new();
    for (kind, events) in transports.iter().zip(&mut events) {
        let address = events
            .wait_for(&format!("a loopback {kind} listen address"), |e| match e {
                NetabaseEvent::ListenAddressAdded { address }
                    if address.to_string().starts_with("/ip4/127.0.0.1/")
                        && TransportKind::of(address) == Some(*kind) =>
                {
                    Some(address.clone())
                }
                _ => None,
            })
            .await;
        loopbacks.push((*kind, address));
    }
    let addrs = node.listen_addresses().await.unwrap();
    for (_, address) in &loopbacks {
        assert!(addrs.contains(address), "{addrs:?}");
    }
    for addr in &addrs {
        let kind = TransportKind::of(addr);
        assert!(kind.is_some_and(|k| transports.contains(&k)), "{addr}");
        assert!(!addr.to_string().starts_with("/ip4/0.0.0.0/"), "{addr}");
    }

    // Peers join it over each transport.
    let id = node.local_peer_id();
    for (kind, address) in loopbacks {
        let other = start_with::<R>(|c| {
            c.listen_addresses = Some(vec![loopback(kind)]);
            c.bootstrap_peers = vec![(id, address.clone())];
        })
        .await;
        let joined = other
            .node
            .bootstrap()
            .await
            .expect("joins the default node");
        assert_eq!(joined.routing_table_size, 1, "over {address}");
        assert_eq!(other.node.connected_peers().await.unwrap(), vec![id]);
        other.node.stop_swarm().await.unwrap();
    }
    node.stop_swarm().await.unwrap();
}

per_runtime!(a_listen_address_of_another_transport_is_refused_with_the_runtime_named);
/// A listen address of a transport the runtime lacks (QUIC on async-io, plain UDP,
/// WebSocket, memory anywhere) fails `start_swarm` with `UnsupportedListenAddress`, before
/// any listener opens; the node then starts with the runtime's default addresses.
async fn a_listen_address_of_another_transport_is_refused_with_the_runtime_named<R: TestRuntime>() {
    let (transports, _) = expected::<R>();
    let mut refused = vec![
        "/ip4/127.0.0.1/udp/0",
        "/ip4/127.0.0.1/tcp/0/ws",
        "/memory/1",
    ];
    if !transports.contains(&TransportKind::Quic) {
        refused.insert(0, "/ip4/127.0.0.1/udp/0/quic-v1");
    }
    for refused in refused {
        let refused: Multiaddr = refused.parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir)
            .with_listen_addresses(["/ip4/127.0.0.1/tcp/0".parse().unwrap(), refused.clone()]);
        let node = Node::<R>::new_with_config(config).unwrap();
        let e = node.start_swarm().await.expect_err("refused");
        match &e {
            NetabaseError::UnsupportedListenAddress {
                address,
                runtime,
                supported,
            } => {
                assert_eq!(address, &refused);
                assert_eq!(*runtime, R::NAME);
                assert_eq!(*supported, transports);
            }
            other => panic!("{refused}: expected UnsupportedListenAddress, got {other:?}"),
        }
        let text = e.to_string();
        assert!(text.contains(&refused.to_string()), "{text}");
        assert!(text.contains(&format!("{} runtime", R::NAME)), "{text}");
        assert!(!node.is_running());
        drop(node);
    }
    // With the configured addresses left to the runtime, the same node starts.
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&dir)
        .with_listen_addresses(["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()])
        .with_default_listen_addresses();
    let node = Node::<R>::new_with_config(config).unwrap();
    node.start_swarm().await.unwrap();
    node.stop_swarm().await.unwrap();
}
