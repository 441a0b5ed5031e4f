//! mDNS discovery between two node processes, each in a network namespace of its own,
//! joined by a veth pair. mDNS multicasts on every interface it sees, so it runs only in
//! namespaces this test creates (and removes again, also when the test fails); libp2p's
//! mDNS ignores loopback, so two namespaces are what it takes.
//!
//! Two nodes of one runtime find each other on each runtime (tokio's libp2p-mdns, the
//! core's mDNS on async-std and smol); a tokio node and a smol node find each other; and
//! a smol node finds, and is found by, a stock rust-libp2p node with libp2p-mdns on tokio
//! that runs on a thread of the test moved into the second namespace.

use std::process::Command as Process;
use std::sync::atomic::{AtomicUsize, Ordering};

use netabase_testnode::{Command, Event, PutReply};

use crate::support::*;

/// Two network namespaces joined by a veth pair carrying `10.213.0.0/24`, named after this
/// process's id so that parallel runs do not collide. Dropping it deletes both namespaces
/// (and with them the veth pair).
struct Namespaces {
    names: [String; 2],
}

/// The prefix of every namespace these tests create.
const PREFIX: &str = "nbt";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Process::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Namespaces {
    fn create() -> Namespaces {
        // Tests of one process (`cargo test` runs them on threads) get pairs of their own.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        remove_stale();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 10;
        let names = [format!("{PREFIX}{pid}x{n}a"), format!("{PREFIX}{pid}x{n}b")];
        let veth = [format!("nbv{pid}{n}a"), format!("nbv{pid}{n}b")];
        // The guard exists before the first namespace does, so a failing step below still
        // removes whatever was made.
        let guard = Namespaces {
            names: names.clone(),
        };
        if let Err(e) = ip(&["netns", "add", &names[0]]) {
            panic!(
                "the mDNS test needs network namespaces (run as root with iproute2's \
                 `ip netns`): {e}"
            );
        }
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &names[1]],
            vec![
                "link", "add", &veth[0], "netns", &names[0], "type", "veth", "peer", "name",
                &veth[1], "netns", &names[1],
            ],
            vec![
                "-n",
                &names[0],
                "addr",
                "add",
                "10.213.0.1/24",
                "dev",
                &veth[0],
            ],
            vec![
                "-n",
                &names[1],
                "addr",
                "add",
                "10.213.0.2/24",
                "dev",
                &veth[1],
            ],
            vec!["-n", &names[0], "link", "set", &veth[0], "up"],
            vec!["-n", &names[1], "link", "set", &veth[1], "up"],
            vec!["-n", &names[0], "link", "set", "lo", "up"],
            vec!["-n", &names[1], "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(e) = ip(&step) {
                panic!("setting up the test network: {e}");
            }
        }
        guard
    }

    /// The IPv4 address of side `i` (0 or 1).
    fn addr(&self, i: usize) -> String {
        format!("10.213.0.{}", i + 1)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            if let Err(e) = ip(&["netns", "del", name]) {
                // Absent already (a setup step failed before creating it) is fine.
                if !e.contains("No such file") {
                    eprintln!("removing namespace {name}: {e}");
                }
            }
        }
    }
}

/// Deletes namespaces left by test processes that no longer exist (killed before their
/// guards ran).
fn remove_stale() {
    let Ok(out) = Process::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let side = &rest[digits.len()..];
        if digits.is_empty() || !(side.ends_with('a') || side.ends_with('b')) {
            continue;
        }
        if !std::path::Path::new(&format!("/proc/{digits}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
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
    let ns = Namespaces::create();
    let launched: Vec<Launched> = (0..2)
        .map(|i| {
            Spawn::new(&format!("mdns-{i}"), runtimes[i])
                .listen(&format!("/ip4/{}/tcp/0", ns.addr(i)))
                .in_namespace_with_mdns(&ns.names[i])
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
/// entered network namespace `ns`: it listens on `listen` and reports the peers its mDNS
/// discovers on `found`, until `stop` fires.
fn stock_mdns_node(
    ns: &str,
    listen: String,
    keypair: libp2p::identity::Keypair,
    found: std::sync::mpsc::Sender<(libp2p::PeerId, libp2p::Multiaddr)>,
    stop: futures::channel::oneshot::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        use futures::StreamExt;
        use libp2p::swarm::SwarmEvent;
        // Only this thread (and what it spawns) moves into the namespace.
        let file = std::fs::File::open(&path).expect("the namespace exists");
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
    let ns = Namespaces::create();
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let stock_id = keypair.public().to_peer_id();
    let (found_tx, found_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel();
    let stock = stock_mdns_node(
        &ns.names[1],
        format!("/ip4/{}/tcp/0", ns.addr(1)),
        keypair,
        found_tx,
        stop_rx,
    );
    let mut node = Spawn::new("mdns-smol", Rt::Smol)
        .listen(&format!("/ip4/{}/tcp/0", ns.addr(0)))
        .in_namespace_with_mdns(&ns.names[0])
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
