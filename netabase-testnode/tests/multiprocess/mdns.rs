//! mDNS discovery between two node processes, each in a network namespace of its own,
//! joined by a veth pair. mDNS multicasts on every interface it sees, so it runs only in
//! namespaces this test creates (and removes again, also when the test fails); libp2p's
//! mDNS ignores loopback, so two namespaces are what it takes.

use std::process::Command as Process;

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
        remove_stale();
        let pid = std::process::id();
        let names = [format!("{PREFIX}{pid}a"), format!("{PREFIX}{pid}b")];
        let veth = [format!("nbv{pid}a"), format!("nbv{pid}b")];
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
        if digits.is_empty() || !(side == "a" || side == "b") {
            continue;
        }
        if !std::path::Path::new(&format!("/proc/{digits}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn mdns_discovers_a_node_in_another_namespace(rt: Rt) {
    let ns = Namespaces::create();
    let launched: Vec<Launched> = (0..2)
        .map(|i| {
            Spawn::new(&format!("mdns-{i}"), rt)
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

per_runtime!(mdns_discovers_a_node_in_another_namespace: tokio);
