//! The default configuration on tokio: it listens on TCP and QUIC on every IPv4 interface
//! and peers reach it over both; an address of no transport the runtime has is refused
//! with an error naming the address and the runtime. mDNS stays off, as in every test
//! outside a network namespace.

use netabase_tokio::{
    Multiaddr, NetabaseConfig, NetabaseError, NetabaseEvent, Runtime, TokioRuntime, TransportKind,
};

use crate::support::*;

/// Waits for a listen address on 127.0.0.1 of transport `kind`.
async fn loopback_address(
    events: &mut netabase_tokio::EventSubscriber,
    kind: TransportKind,
) -> Multiaddr {
    wait_for(
        events,
        &format!("a loopback {kind} listen address"),
        |e| match e {
            NetabaseEvent::ListenAddressAdded { address }
                if address.to_string().starts_with("/ip4/127.0.0.1/")
                    && TransportKind::of(address) == Some(kind) =>
            {
                Some(address.clone())
            }
            _ => None,
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_configuration_listens_on_tcp_and_quic() {
    let dir = tempfile::tempdir().unwrap();
    let config = NetabaseConfig::default()
        .with_data_dir(dir.path())
        .with_mdns(false);
    assert_eq!(config.listen_addresses, None);
    let expected: Vec<Multiaddr> = vec![
        "/ip4/0.0.0.0/tcp/0".parse().unwrap(),
        "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap(),
    ];
    assert_eq!(config.listen_addresses_on::<TokioRuntime>(), expected);
    assert_eq!(TokioRuntime::NAME, "tokio");

    let node = Node::new_with_config(config).unwrap();
    // Subscribed before the start, so that no address announcement is missed.
    let mut tcp_events = node.subscribe_to_broadcasts();
    let mut quic_events = node.subscribe_to_broadcasts();
    node.start_swarm()
        .await
        .expect("the default configuration starts");
    let tcp = loopback_address(&mut tcp_events, TransportKind::Tcp).await;
    let quic = loopback_address(&mut quic_events, TransportKind::Quic).await;
    let addrs = node.listen_addresses().await.unwrap();
    assert!(addrs.contains(&tcp) && addrs.contains(&quic), "{addrs:?}");
    assert!(
        addrs
            .iter()
            .all(|a| !a.to_string().starts_with("/ip4/0.0.0.0/")),
        "{addrs:?}"
    );

    // Peers join it over either transport.
    let id = node.local_peer_id();
    for (addr, listen) in [
        (tcp, "/ip4/127.0.0.1/tcp/0"),
        (quic, "/ip4/127.0.0.1/udp/0/quic-v1"),
    ] {
        let other = start_with(|c| {
            c.listen_addresses = Some(vec![listen.parse().unwrap()]);
            c.bootstrap_peers = vec![(id, addr.clone())];
        })
        .await;
        let joined = other
            .node
            .bootstrap()
            .await
            .expect("joins the default node");
        assert_eq!(joined.routing_table_size, 1, "over {addr}");
        assert_eq!(other.node.connected_peers().await.unwrap(), vec![id]);
        other.node.stop_swarm().await.unwrap();
    }
    node.stop_swarm().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_address_of_no_tokio_transport_is_refused_with_the_runtime_named() {
    for refused in [
        "/ip4/127.0.0.1/udp/0",
        "/ip4/127.0.0.1/tcp/0/ws",
        "/memory/1",
    ] {
        let refused: Multiaddr = refused.parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&dir)
            .with_listen_addresses(["/ip4/127.0.0.1/tcp/0".parse().unwrap(), refused.clone()]);
        let node = Node::new_with_config(config).unwrap();
        let e = node.start_swarm().await.expect_err("refused");
        match &e {
            NetabaseError::UnsupportedListenAddress {
                address,
                runtime,
                supported,
            } => {
                assert_eq!(address, &refused);
                assert_eq!(*runtime, "tokio");
                assert_eq!(*supported, &[TransportKind::Tcp, TransportKind::Quic]);
            }
            other => panic!("{refused}: expected UnsupportedListenAddress, got {other:?}"),
        }
        assert!(e.to_string().contains(&refused.to_string()), "{e}");
        assert!(e.to_string().contains("tokio runtime"), "{e}");
        assert!(!node.is_running());
    }
}
