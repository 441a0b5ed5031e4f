//! The default configuration on the async-io runtimes: it listens on what the runtime
//! offers (TCP on every IPv4 interface, no QUIC), and a listen address the runtime has no
//! transport for is refused with an error naming the address and the runtime. mDNS stays
//! off, as in every test outside a network namespace.

use netabase_async_std::{
    AsyncStdRuntime, Multiaddr, NetabaseConfig, NetabaseError, NetabaseEvent, Runtime, SmolRuntime,
    TransportKind,
};

use crate::support::*;

/// A node with the default configuration but for its data directory and mDNS starts,
/// listens on TCP on every interface, and another node joins it over loopback.
async fn default_listen_addresses<R: Runtime>() {
    let dir = tempfile::tempdir().unwrap();
    let config = NetabaseConfig::default()
        .with_data_dir(dir.path())
        .with_mdns(false);
    assert_eq!(config.listen_addresses, None);
    let any_tcp: Multiaddr = "/ip4/0.0.0.0/tcp/0".parse().unwrap();
    assert_eq!(config.listen_addresses_on::<R>(), vec![any_tcp]);

    let node = Node::<R>::new_with_config(config).unwrap();
    let mut events = node.subscribe_to_broadcasts();
    node.start_swarm()
        .await
        .unwrap_or_else(|e| panic!("the default configuration starts on {}: {e}", R::NAME));
    // `0.0.0.0` is expanded into the interface addresses, loopback among them.
    let loopback = wait_for(&mut events, "a loopback listen address", |e| match e {
        NetabaseEvent::ListenAddressAdded { address }
            if address.to_string().starts_with("/ip4/127.0.0.1/tcp/") =>
        {
            Some(address.clone())
        }
        _ => None,
    })
    .await;
    let addrs = node.listen_addresses().await.unwrap();
    assert!(addrs.contains(&loopback), "{addrs:?}");
    for addr in &addrs {
        assert_eq!(TransportKind::of(addr), Some(TransportKind::Tcp), "{addr}");
        assert!(!addr.to_string().starts_with("/ip4/0.0.0.0/"), "{addr}");
    }

    let id = node.local_peer_id();
    let other = start::<R>(|c| c.bootstrap_peers = vec![(id, loopback)]).await;
    let joined = other
        .node
        .bootstrap()
        .await
        .expect("joins the default node");
    assert_eq!(joined.routing_table_size, 1);
    assert_eq!(other.node.connected_peers().await.unwrap(), vec![id]);
    other.node.stop_swarm().await.unwrap();
    node.stop_swarm().await.unwrap();
}

#[test]
fn the_default_configuration_listens_on_tcp_on_each_runtime() {
    on_each_runtime(
        default_listen_addresses::<AsyncStdRuntime>,
        default_listen_addresses::<SmolRuntime>,
    );
}

/// A QUIC listen address (and one of no transport at all) fails `start_swarm` with
/// `UnsupportedListenAddress`, before any listener opens; the node then starts on TCP.
async fn unsupported_listen_address<R: Runtime>() {
    for refused in [
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "/ip4/127.0.0.1/tcp/0/ws",
        "/memory/1",
    ] {
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
                assert_eq!(*supported, &[TransportKind::Tcp]);
            }
            other => panic!("{refused}: expected UnsupportedListenAddress, got {other:?}"),
        }
        let text = e.to_string();
        assert!(
            text.contains(&refused.to_string()) && text.contains(R::NAME),
            "{text}"
        );
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

#[test]
fn a_listen_address_of_another_transport_is_refused_with_the_runtime_named() {
    on_each_runtime(
        unsupported_listen_address::<AsyncStdRuntime>,
        unsupported_listen_address::<SmolRuntime>,
    );
}
