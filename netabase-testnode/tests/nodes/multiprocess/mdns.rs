//! mDNS discovery between two node processes, each in a network namespace of its own,
//! joined by a veth pair. mDNS multicasts on every interface it sees, so it runs only in
//! namespaces this test creates (and removes again, also when the test fails); libp2p's
//! mDNS ignores loopback, so two namespaces are what it takes.
//!
//! Two nodes of one runtime find each other on each runtime (tokio's libp2p-mdns, the
//! core's mDNS on async-std and smol); a tokio node and a smol node find each other; and
//! a smol node finds, and is found by, a stock rust-libp2p node with libp2p-mdns on tokio
//! that runs on a thread of the test moved into the second namespace.

use netabase_testnode::netns::Namespaces;
use netabase_testnode::{Command, Event, PutReply};

use super::support::*;

/// Two namespaces joined by a veth pair carrying `10.213.0.0/24`; the test fails, saying
/// why, where namespaces cannot be made.
fn namespaces() -> Namespaces {
    Namespaces::create().unwrap_or_else(|e| panic!("{e}"))
}

fn mdns_discovers_a_node_in_another_namespace(rt: Rt) {
    mdns_pair([rt, rt]);
}

per_runtime!(mdns_discovers_a_node_in_another_namespace);

#[test]
fn mdns_of_a_tokio_node_and_a_smol_node_find_each_other() {
    mdns_pair([Rt::Tokio, Rt::Smol]);
}

/// Two nodes on `runtimes`, one per namespace, find each other with mDNS alone and then
/// exchange a record.
fn mdns_pair(runtimes: [Rt; 2]) {
    let ns = namespaces();
    let launched: Vec<Launched> = (0..2)
        .map(|i| {
            Spawn::new(&format!("mdns-{i}"), runtimes[i])
                .listen(&format!("/ip4/{}/tcp/0", ns.addr(i)))
                .in_namespace_with_mdns(ns.name(i))
                .launch()
        })
        .collect();
    let mut nodes: Vec<NodeProc> = launched.into_iter().map(Launched::ready).collect();
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();

    // Each finds the other, at its address on the veth pair, and adds it to its table.
    for (i, node) in nodes.iter_mut().enumerate() {
        let other = &ids[1 - i];
        let address = node.expect_event("the other node discovered", |e| match e {
            Event::PeerDiscovered { peer, address } if peer == other => Some(address.clone()),
            _ => None,
        });
        assert!(
            address.starts_with(&format!("/ip4/{}/tcp/", ns.addr(1 - i))),
            "{address}"
        );
        node.expect_event("the other node in the routing table", |e| {
            matches!(e, Event::RoutingTablePeerAdded { peer } if peer == other).then_some(())
        });
    }

    // With no other configuration, records flow between the namespaces.
    let put: PutReply = nodes[0].call(Command::Put {
        message: message(1, "found you"),
    });
    assert_eq!(put.stored_at, vec![ids[1].clone()]);
    let got = nodes[1].get(1).expect("stored by the put");
    assert_eq!(got.record, message(1, "found you"));
    assert_eq!(got.origin, ids[0]);
}

/// A stock rust-libp2p node (TCP, noise, yamux, libp2p-mdns on tokio) on a thread that
/// entered the network namespace whose file is `ns`: it listens on `listen` and reports
/// the peers its mDNS discovers on `found`, until `stop` fires.
fn stock_mdns_node(
    ns: std::path::PathBuf,
    listen: String,
    keypair: libp2p::identity::Keypair,
    found: std::sync::mpsc::Sender<(libp2p::PeerId, libp2p::Multiaddr)>,
    stop: futures::channel::oneshot::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use futures::StreamExt;
        use libp2p::swarm::SwarmEvent;
        // Only this thread (and what it spawns) moves into the namespace.
        let file = std::fs::File::open(&ns).expect("the namespace exists");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_tcp(
                    libp2p::tcp::Config::default(),
                    libp2p::noise::Config::new,
                    libp2p::yamux::Config::default,
                )
                .unwrap()
                .with_behaviour(|key| {
                    libp2p::mdns::tokio::Behaviour::new(
                        libp2p::mdns::Config::default(),
                        key.public().to_peer_id(),
                    )
                    .expect("the stock mDNS service starts")
                })
                .unwrap()
                .build();
            swarm.listen_on(listen.parse().unwrap()).unwrap();
            let mut stop = stop;
            loop {
                futures::select! {
                    _ = stop => return,
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::Behaviour(libp2p::mdns::Event::Discovered(peers)) = event {
                            for peer in peers {
                                let _ = found.send(peer);
                            }
                        }
                    }
                }
            }
        });
    })
}

#[test]
fn mdns_of_a_smol_node_interoperates_with_stock_libp2p_mdns() {
    let ns = namespaces();
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let stock_id = keypair.public().to_peer_id();
    let (found_tx, found_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel();
    let stock = stock_mdns_node(
        ns.path(1),
        format!("/ip4/{}/tcp/0", ns.addr(1)),
        keypair,
        found_tx,
        stop_rx,
    );
    let mut node = Spawn::new("mdns-smol", Rt::Smol)
        .listen(&format!("/ip4/{}/tcp/0", ns.addr(0)))
        .in_namespace_with_mdns(ns.name(0))
        .start();

    // The Netabase node finds the stock node at its address on the veth pair...
    let stock_text = stock_id.to_string();
    let address = node.expect_event("the stock node discovered", |e| match e {
        Event::PeerDiscovered { peer, address } if *peer == stock_text => Some(address.clone()),
        _ => None,
    });
    assert!(
        address.starts_with(&format!("/ip4/{}/tcp/", ns.addr(1))),
        "{address}"
    );
    // ...and the stock node finds the Netabase node at its listen address.
    let deadline = std::time::Instant::now() + DEADLINE;
    let ours = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let (peer, addr) = found_rx
            .recv_timeout(left)
            .expect("the stock node discovers the Netabase node");
        if peer.to_string() == node.peer_id {
            break addr;
        }
    };
    assert_eq!(
        ours.to_string(),
        format!("{}/p2p/{}", node.addrs[0], node.peer_id)
    );
    let _ = stop_tx.send(());
    stock.join().expect("the stock node's thread ends cleanly");
}
