//! Three engines over memory: writes from every node, reads at every level, a crash and
//! recovery, a clean stop and resume.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt};
use netabase_core::consensus::{KvCommand, KvResponse, ReadLevel};

use super::*;

/// Requests in memory, handed to the receiving engine as [`Input::Serve`]; a node can be
/// cut off (its requests and those to it fail).
#[derive(Clone, Default)]
struct Net {
    me: Option<libp2p_identity::PeerId>,
    engines: Arc<Mutex<BTreeMap<libp2p_identity::PeerId, mpsc::Sender<Input>>>>,
    cut: Arc<Mutex<BTreeSet<libp2p_identity::PeerId>>>,
}

#[derive(Debug)]
enum NetError {
    Unreachable,
    Refused,
}

impl Transport for Net {
    type Error = NetError;

    fn request(
        &self,
        to: libp2p_identity::PeerId,
        request: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, NetError>> {
        let cut = {
            let cut = self.cut.lock().expect("cut");
            cut.contains(&to) || self.me.is_some_and(|me| cut.contains(&me))
        };
        let engine = self.engines.lock().expect("engines").get(&to).cloned();
        async move {
            let mut engine = engine.filter(|_| !cut).ok_or(NetError::Unreachable)?;
            let (reply, answer) = oneshot::channel();
            engine
                .send(Input::Serve { request, reply })
                .await
                .map_err(|_| NetError::Unreachable)?;
            answer
                .await
                .map_err(|_| NetError::Unreachable)?
                .map_err(|_| NetError::Refused)
        }
        .boxed()
    }
}

/// A running engine.
struct Running {
    id: libp2p_identity::PeerId,
    inputs: mpsc::Sender<Input>,
    thread: std::thread::JoinHandle<Option<KvSnapshot>>,
}

impl Running {
    fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Input) -> T {
        let (reply, answer) = oneshot::channel();
        futures::executor::block_on(self.inputs.clone().send(make(reply))).expect("running");
        futures::executor::block_on(answer).expect("answered")
    }

    fn write(&self, command: KvCommand) -> Result<Written, EngineError> {
        self.call(|reply| Input::Write {
            command: command.encode(),
            reply,
        })
    }

    fn read(&self, key: &[u8], level: ReadLevel) -> Result<ReadAnswer, EngineError> {
        self.call(|reply| Input::Read {
            key: key.to_vec(),
            level,
            reply,
        })
    }

    fn status(&self) -> EngineStatus {
        self.call(|reply| Input::Status { reply })
    }

    /// Stops the engine cleanly; returns the snapshot to resume from.
    fn stop(self, net: &Net) -> Option<KvSnapshot> {
        net.engines.lock().expect("engines").remove(&self.id);
        drop(self.inputs);
        self.thread.join().expect("engine thread")
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        heartbeat_interval: Duration::from_millis(300),
        leader_heartbeat_interval: Duration::from_millis(50),
        lease: Some(netabase_core::consensus::LeaseConfig {
            duration: Duration::from_millis(200),
            drift_ppm: 10_000,
            margin: Duration::from_millis(10),
        }),
        ..EngineConfig::default()
    }
}

fn start(
    net: &Net,
    me: libp2p_identity::PeerId,
    members: &[libp2p_identity::PeerId],
    start: Start,
) -> Running {
    let seed = u64::from(me.to_bytes()[6]);
    let setup = Setup {
        me,
        proposer: netabase_core::PeerId::from_seed(seed),
        first_seq: 1 + 1_000_000 * u64::from(matches!(start, Start::Recover | Start::Resume(_))),
        members: members.to_vec(),
        transport: Net {
            me: Some(me),
            ..net.clone()
        },
        config: config(),
        start,
        observer: None,
    };
    let (inputs, thread) = spawn(setup, 64).expect("engine starts");
    net.engines
        .lock()
        .expect("engines")
        .insert(me, inputs.clone());
    Running {
        id: me,
        inputs,
        thread,
    }
}

fn cluster(net: &Net) -> (Vec<libp2p_identity::PeerId>, Vec<Running>) {
    let members: Vec<_> = (0..3).map(|_| libp2p_identity::PeerId::random()).collect();
    let nodes = members
        .iter()
        .map(|m| start(net, *m, &members, Start::Initial))
        .collect();
    (members, nodes)
}

fn put(key: &[u8], value: &[u8]) -> KvCommand {
    KvCommand::Put {
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

/// Retries `f` until it returns `Some`, for ten seconds at most.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn writes_from_every_node_are_applied_everywhere_and_read_at_every_level() {
    let net = Net::default();
    let (_, nodes) = cluster(&net);
    for (i, node) in nodes.iter().enumerate() {
        let w = node
            .write(put(b"k", &[i as u8]))
            .expect("the write is applied");
        assert_eq!(KvResponse::decode(&w.response), Some(KvResponse::Done));
        // The writer applied it before it answered: its local read sees it.
        let (value, at) = node
            .read(b"k", ReadLevel::Local)
            .expect("read")
            .expect("set");
        assert_eq!((value, at), (vec![i as u8], w.position));
        // So does a linearizable read on every other node.
        for other in &nodes {
            let (value, _) = other
                .read(b"k", ReadLevel::Linearizable)
                .expect("read")
                .expect("set");
            assert_eq!(value, vec![i as u8]);
        }
    }
    // One node leads; the others forwarded their writes to it.
    let statuses: Vec<_> = nodes.iter().map(Running::status).collect();
    let leader = statuses[0].leader.expect("a leader is known");
    assert!(statuses.iter().all(|s| s.leader == Some(leader)));
    let forwarded: u64 = statuses.iter().map(|s| s.stats.forwarded).sum();
    assert!(forwarded >= 2, "{statuses:?}");
    // The leader serves lease reads once its heartbeats renewed its leases.
    let lead = nodes.iter().find(|n| n.id == leader).expect("leader");
    eventually("a lease read", || {
        let found = lead.read(b"k", ReadLevel::Lease).expect("read");
        assert_eq!(found.map(|(v, _)| v), Some(vec![2]));
        (lead.status().stats.lease_reads > 0).then_some(())
    });
    let rounds: Vec<_> = nodes
        .into_iter()
        .map(|n| n.stop(&net).expect("a snapshot").round())
        .collect();
    assert!(rounds.iter().all(|r| *r >= 3), "{rounds:?}");
}

#[test]
fn a_crashed_node_recovers_from_a_peer_snapshot_and_takes_part_again() {
    let net = Net::default();
    let (members, mut nodes) = cluster(&net);
    for i in 0..5u8 {
        nodes[0].write(put(&[i], &[i])).expect("write");
    }
    // A crash: the node's memory (its promises and state) is gone; it restarts through
    // the recovery path.
    let crashed = nodes.pop().expect("three");
    let id = crashed.id;
    let _lost = crashed.stop(&net);
    let back = start(&net, id, &members, Start::Recover);
    // Passive and without state until it installed a snapshot.
    assert_eq!(
        back.write(put(b"early", b"x")),
        Err(EngineError::Recovering),
        "a node without state refuses writes"
    );
    eventually("a snapshot installed", || {
        let s = back.status();
        (s.oriented && s.stats.snapshots_installed == 1).then_some(())
    });
    for i in 0..5u8 {
        let found = back.read(&[i], ReadLevel::Local).expect("read");
        assert_eq!(found.map(|(v, _)| v), Some(vec![i]));
    }
    // It takes part again: its writes are applied, and the others see them.
    let w = eventually("a write through the recovered node", || {
        back.write(put(b"after", b"crash")).ok()
    });
    let (value, _) = nodes[1]
        .read(b"after", ReadLevel::Linearizable)
        .expect("read")
        .expect("set");
    assert_eq!(value, b"crash");
    assert!(w.position.slot > 5);
    back.stop(&net);
    for n in nodes {
        n.stop(&net);
    }
}

#[test]
fn a_cleanly_stopped_node_resumes_from_its_snapshot() {
    let net = Net::default();
    let (members, mut nodes) = cluster(&net);
    nodes[1].write(put(b"a", b"1")).expect("write");
    eventually("the write applied on the node to stop", || {
        (nodes[2].status().round >= 1).then_some(())
    });
    let stopped = nodes.pop().expect("three");
    let id = stopped.id;
    let snapshot = stopped.stop(&net).expect("a snapshot");
    let round = snapshot.round();
    assert!(round >= 1);
    nodes[0]
        .write(put(b"b", b"2"))
        .expect("write while it is down");
    let back = start(&net, id, &members, Start::Resume(Box::new(snapshot)));
    // It resumes active, with its state, and catches up on what it missed.
    eventually("the node resumed with its state", || {
        let s = back.status();
        (s.oriented && s.active && s.round >= round).then_some(())
    });
    let w = back.write(put(b"c", b"3")).expect("a write right away");
    let found = back.read(b"b", ReadLevel::Local).expect("read");
    assert_eq!(found.map(|(v, _)| v), Some(b"2".to_vec()));
    assert!(w.position.slot > round);
    back.stop(&net);
    for n in nodes {
        n.stop(&net);
    }
}
