//! The async-io TCP transport on its own: listening on unspecified addresses, DNS names,
//! closing listeners, and connections carrying bytes both ways.

use std::pin::Pin;

use futures::future::poll_fn;
use futures::{AsyncReadExt, AsyncWriteExt};
use netabase_async_std::libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportEvent};
use netabase_async_std::libp2p::core::{Endpoint, Transport};
use netabase_async_std::libp2p::multiaddr::Protocol;
use netabase_async_std::{AsyncStdRuntime, Multiaddr, Runtime, SmolRuntime, TcpTransport};
use netabase_testnode::in_process::within;

type Event = TransportEvent<
    <TcpTransport as Transport>::ListenerUpgrade,
    <TcpTransport as Transport>::Error,
>;

/// The next event of `transport`, within the deadline on `R`'s timer.
async fn next_event<R: Runtime>(transport: &mut TcpTransport) -> Event {
    within::<R, _>(
        "a transport event",
        poll_fn(|cx| Pin::new(&mut *transport).poll(cx)),
    )
    .await
}

fn dial_opts() -> DialOpts {
    DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::New,
    }
}

fn port_of(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP port")
}

/// Accepts one connection on `listener` and dials it with `dial`, then checks bytes go both
/// ways.
async fn connect_and_talk<R: Runtime>(
    listener: &mut TcpTransport,
    dialer: &mut TcpTransport,
    to: Multiaddr,
) {
    let dial = dialer.dial(to, dial_opts()).expect("dial accepted");
    let incoming = async {
        // Further interface addresses may still be announced before the connection.
        loop {
            match next_event::<R>(listener).await {
                TransportEvent::Incoming {
                    upgrade,
                    send_back_addr,
                    ..
                } => return (upgrade, send_back_addr),
                TransportEvent::NewAddress { .. } => {}
                other => panic!("expected an incoming connection, got {other:?}"),
            }
        }
    };
    let (outbound, (upgrade, send_back_addr)) = futures::join!(dial, incoming);
    let mut outbound = outbound.expect("connected");
    assert_eq!(
        port_of(&send_back_addr),
        outbound.get_ref().local_addr().unwrap().port()
    );
    let mut inbound = upgrade.await.expect("accepted");
    outbound.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    inbound.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    inbound.write_all(b"pong").await.unwrap();
    outbound.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

#[test]
fn an_unspecified_listen_address_is_expanded_into_interface_addresses() {
    smol::block_on(async {
        let mut listener = TcpTransport::default();
        let id = ListenerId::next();
        listener
            .listen_on(id, "/ip4/0.0.0.0/tcp/0".parse().unwrap())
            .unwrap();
        // Every IPv4 interface address is announced with the one bound port; loopback is
        // always among them.
        let loopback = loop {
            match next_event::<SmolRuntime>(&mut listener).await {
                TransportEvent::NewAddress {
                    listener_id,
                    listen_addr,
                } => {
                    assert_eq!(listener_id, id);
                    assert!(!listen_addr.to_string().starts_with("/ip4/0.0.0.0"));
                    if listen_addr.to_string().starts_with("/ip4/127.0.0.1/") {
                        break listen_addr;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        let mut dialer = TcpTransport::default();
        connect_and_talk::<SmolRuntime>(&mut listener, &mut dialer, loopback).await;

        assert!(listener.remove_listener(id));
        assert!(!listener.remove_listener(id));
        match next_event::<SmolRuntime>(&mut listener).await {
            TransportEvent::ListenerClosed {
                listener_id,
                reason,
            } => {
                assert_eq!(listener_id, id);
                assert!(reason.is_ok());
            }
            other => panic!("unexpected {other:?}"),
        }
    });
}

#[test]
fn a_dns_name_is_resolved_on_the_blocking_pool_and_dialled() {
    async_std::task::block_on(async {
        let mut listener = TcpTransport::default();
        listener
            .listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let TransportEvent::NewAddress { listen_addr, .. } =
            next_event::<AsyncStdRuntime>(&mut listener).await
        else {
            panic!("expected the listen address");
        };
        let port = port_of(&listen_addr);
        let mut dialer = TcpTransport::default();
        let by_name: Multiaddr = format!("/dns4/localhost/tcp/{port}").parse().unwrap();
        connect_and_talk::<AsyncStdRuntime>(&mut listener, &mut dialer, by_name).await;

        // A name that does not resolve fails the dial with an error, not a panic.
        let nowhere: Multiaddr = "/dns4/nowhere.invalid/tcp/1".parse().unwrap();
        let failed = dialer.dial(nowhere, dial_opts()).unwrap().await;
        assert!(failed.is_err());
    });
}

#[test]
fn a_dial_to_a_closed_port_fails() {
    smol::block_on(async {
        // Bind and drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut dialer = TcpTransport::default();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        let result =
            within::<SmolRuntime, _>("the failed dial", dialer.dial(addr, dial_opts()).unwrap())
                .await;
        assert_eq!(
            result.expect_err("nobody listens").kind(),
            std::io::ErrorKind::ConnectionRefused
        );
    });
}
