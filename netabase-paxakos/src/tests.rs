//! Three paxakos nodes on the key-value state: over paxakos's in-process communicator,
//! and over [`NetCommunicator`] with every message through the wire format.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, mpsc};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::BoxFuture;
use netabase_core::PeerId;
use netabase_core::consensus::{Entry, EntryId, KvCommand, KvResponse, KvState, State as _};
use paxakos::catch_up::CatchUpBuilderExt;
use paxakos::communicator::Communicator;
use paxakos::invocation::Invocation;
use paxakos::prototyping::{DirectCommunicatorError, DirectCommunicators, RetryIndefinitely};
use paxakos::{Event, Node, NodeInfo, RequestHandler};

use super::*;
use crate::wire::{Request, Response, Unavailable};

/// How often a node's events are polled without a wake-up.
const TICK: Duration = Duration::from_millis(20);

/// A running node: its handle, the effects it applied, and how to stop it.
struct Running<E: Debug + Send + Sync + 'static> {
    handle: paxakos::NodeHandle<KvInvocation<E>>,
    applied: mpsc::Receiver<AppliedEntry>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<KvMachine>>,
}

impl<E: Debug + Send + Sync + 'static> Running<E> {
    /// Stops the node and returns the state it ended with.
    fn stop(mut self) -> KvMachine {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("node thread")
    }
}

/// Starts a node of `members` talking through `communicator` on its own thread, polling
/// its events until stopped; `register` makes its request handler reachable.
fn start<E, C>(
    me: PeerNode,
    members: &[PeerNode],
    communicator: C,
    register: impl FnOnce(RequestHandler<KvInvocation<E>>, paxakos::NodeHandle<KvInvocation<E>>),
) -> Running<E>
where
    E: Debug + Send + Sync + 'static,
    C: Communicator<
            Node = PeerNode,
            RoundNum = u64,
            CoordNum = u32,
            LogEntry = PaxakosEntry,
            Error = E,
            Yea = Duration,
            Nay = Infallible,
            Abstain = Duration,
        >,
{
    let (handler, node) = futures::executor::block_on(
        KvInvocation::<E>::node_builder()
            .for_node(me.id())
            .communicating_via(communicator)
            .with_initial_state(KvMachine::new(members.to_vec(), 2))
            .voting_with(crate::leases::LeaseVoter::new(
                crate::leases::LeaseBook::new(me.0, None),
            ))
            .catch_up(paxakos::catch_up::StaticConfig::default())
            .spawn(),
    )
    .expect("node starts");
    let handle = node.handle();
    register(handler, node.handle());
    let (applied_tx, applied) = mpsc::channel();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let mut node = node;
        // The node is polled on a tick as well as when woken: paxakos 0.13's catch-up
        // starts its next poll inside `poll_events` without polling it, so a node that
        // hears nothing else would never run it (the swarm's driver will do the same).
        let mut tick = futures_timer::Delay::new(TICK);
        futures::executor::block_on(futures::future::poll_fn(|cx| {
            loop {
                while let Poll::Ready(e) = node.poll_events(cx) {
                    if let Event::Apply { effect, .. } = e {
                        let _ = applied_tx.send(effect);
                    }
                }
                if stopped.poll_unpin(cx).is_ready() {
                    return Poll::Ready(());
                }
                if tick.poll_unpin(cx).is_pending() {
                    return Poll::Pending;
                }
                tick.reset(TICK);
            }
        }));
        futures::executor::block_on(
            node.enter_on_poll(|n| async move { n.read_stale(|s| s.clone()).await }),
        )
        .expect("state")
    });
    Running {
        handle,
        applied,
        stop: Some(stop),
        thread: Some(thread),
    }
}

fn entry(proposer: u64, seq: u64, command: KvCommand) -> PaxakosEntry {
    PaxakosEntry(Entry {
        id: EntryId {
            proposer: PeerId::from_seed(proposer),
            seq,
        },
        command: command.encode(),
    })
}

/// Waits until `node` reports `count` applied entries (ten seconds at most).
fn applied<E: Debug + Send + Sync + 'static>(node: &Running<E>, count: usize) -> Vec<AppliedEntry> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match node.applied.recv_timeout(left) {
            Ok(e) => out.push(e),
            Err(e) => panic!("only {} of {count} entries applied: {e}", out.len()),
        }
    }
    out
}

fn members() -> Vec<PeerNode> {
    (0..3)
        .map(|_| PeerNode(libp2p_identity::PeerId::random()))
        .collect()
}

#[test]
fn three_nodes_apply_the_same_entries_as_the_core_state() {
    let communicators = DirectCommunicators::<KvInvocation<DirectCommunicatorError>>::new();
    let members = members();
    let nodes: Vec<_> = members
        .iter()
        .map(|m| {
            start(
                *m,
                &members,
                communicators.create_communicator_for(m.id()),
                |h, _| {
                    futures::executor::block_on(communicators.register(m.id(), h));
                },
            )
        })
        .collect();
    workload(nodes);
}

/// A node's request handler and handle, shared with the transport.
type Handler = Arc<(
    RequestHandler<NetInvocation<Memory>>,
    paxakos::NodeHandle<NetInvocation<Memory>>,
)>;

/// Every request in memory, through the wire format both ways; a node can be cut off
/// (its requests and those to it fail).
#[derive(Clone, Default)]
struct Memory {
    /// The sending node (unset: a sender that is never cut off).
    me: Option<libp2p_identity::PeerId>,
    handlers: Arc<Mutex<BTreeMap<libp2p_identity::PeerId, Handler>>>,
    cut: Arc<Mutex<BTreeSet<libp2p_identity::PeerId>>>,
}

impl Memory {
    /// The transport of node `me`, on the same network.
    fn of(&self, me: libp2p_identity::PeerId) -> Memory {
        Memory {
            me: Some(me),
            ..self.clone()
        }
    }
}

/// Why an exchange in memory failed.
#[derive(Debug)]
enum MemoryError {
    /// No node of that id was registered.
    UnknownPeer,
    /// The sender or the receiver is cut off.
    Cut,
    /// The request did not decode.
    Wire,
}

impl Transport for Memory {
    type Error = MemoryError;

    fn request(
        &self,
        to: libp2p_identity::PeerId,
        request: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, MemoryError>> {
        let handler = self.handlers.lock().expect("handlers").get(&to).cloned();
        let cut = {
            let cut = self.cut.lock().expect("cut");
            cut.contains(&to) || self.me.is_some_and(|me| cut.contains(&me))
        };
        async move {
            if cut {
                return Err(MemoryError::Cut);
            }
            let handler = handler.ok_or(MemoryError::UnknownPeer)?;
            serve(&handler.0, &handler.1, &request)
                .await
                .map_err(|_| MemoryError::Wire)
        }
        .boxed()
    }
}

/// Starts `members` over `memory`, each reachable there.
fn start_on(memory: &Memory, members: &[PeerNode]) -> Vec<Running<CommunicatorError<MemoryError>>> {
    members
        .iter()
        .map(|m| {
            start(*m, members, NetCommunicator::new(memory.of(m.0)), |h, n| {
                memory
                    .handlers
                    .lock()
                    .expect("handlers")
                    .insert(m.0, Arc::new((h, n)));
            })
        })
        .collect()
}

#[test]
fn three_nodes_over_the_wire_format_apply_the_same_entries_as_the_core_state() {
    let memory = Memory::default();
    let members = members();
    let nodes = start_on(&memory, &members);
    workload(nodes);
}

/// A node cut off while the others commit learns the rounds it missed from them once it
/// is back (paxakos's catch-up polls them; the answers carry the settled entries over the
/// wire format) and ends with the same state.
#[test]
fn a_node_cut_off_catches_up_over_the_wire_format() {
    let memory = Memory::default();
    let members = members();
    let nodes = start_on(&memory, &members);
    memory.cut.lock().expect("cut").insert(members[2].0);
    let append = |node: &Running<_>, seq: u64| {
        let e = entry(
            1,
            seq,
            KvCommand::Append {
                key: b"l".to_vec(),
                value: seq.to_be_bytes().to_vec(),
            },
        );
        let commit = futures::executor::block_on(node.handle.append(
            e,
            RetryIndefinitely::pausing_up_to(Duration::from_millis(50)),
        ))
        .expect("appended");
        futures::executor::block_on(commit).expect("committed");
    };
    for seq in 1..=8 {
        append(&nodes[0], seq);
    }
    assert!(
        nodes[2].applied.try_recv().is_err(),
        "the node cut off applied nothing"
    );
    memory.cut.lock().expect("cut").clear();
    append(&nodes[0], 9);
    let logs: Vec<Vec<AppliedEntry>> = nodes.iter().map(|n| applied(n, 9)).collect();
    assert_eq!(logs[2], logs[0]);
    let states: Vec<KvMachine> = nodes.into_iter().map(|n| n.stop()).collect();
    assert_eq!(states[2].digest(), states[0].digest());
}

/// Puts, compare-and-sets and appends from two of `nodes` and one retried entry: every
/// node applies the same entries in the same rounds with the answers and digest a core
/// state gives them.
fn workload<E: Debug + Send + Sync + 'static>(nodes: Vec<Running<E>>) {
    // Puts, compare-and-sets and appends from two nodes, and one entry retried.
    let mut appended = Vec::new();
    for i in 0..12u64 {
        let command = match i % 3 {
            0 => KvCommand::Put {
                key: vec![(i % 2) as u8],
                value: i.to_be_bytes().to_vec(),
            },
            1 => KvCommand::CompareAndSet {
                key: vec![0],
                expected: Some(0u64.to_be_bytes().to_vec()),
                new: Some(vec![9]),
            },
            _ => KvCommand::Append {
                key: b"list".to_vec(),
                value: vec![i as u8],
            },
        };
        appended.push(entry(1 + i % 2, i, command));
    }
    appended.push(appended[4].clone());
    for (i, e) in appended.iter().enumerate() {
        let node = &nodes[i % 2];
        let commit = futures::executor::block_on(node.handle.append(
            e.clone(),
            RetryIndefinitely::pausing_up_to(Duration::from_millis(50)),
        ))
        .expect("appended");
        let outcome = futures::executor::block_on(commit).expect("committed");
        assert_eq!(outcome.duplicate, i == appended.len() - 1, "entry {i}");
    }
    let logs: Vec<Vec<AppliedEntry>> = nodes.iter().map(|n| applied(n, appended.len())).collect();
    // Every node applied the same entries in the same rounds, with the same answers.
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0], logs[2]);
    // The core's state, fed the same entries at the same positions, answers and hashes
    // the same.
    let mut core = KvState::new();
    for a in &logs[0] {
        let e = appended
            .iter()
            .find(|e| e.0.id == a.id)
            .expect("an appended entry");
        let answer = core.apply(a.position, &e.0);
        core.set_applied(a.position.slot);
        assert_eq!(
            (answer.response.clone(), answer.duplicate),
            (a.response.clone(), a.duplicate)
        );
    }
    assert!(
        logs[0]
            .iter()
            .any(|a| KvResponse::decode(&a.response) == Some(KvResponse::Swapped(true)))
    );
    let states: Vec<KvMachine> = nodes.into_iter().map(|n| n.stop()).collect();
    for s in &states {
        assert_eq!(s.round(), appended.len() as u64);
        assert_eq!(s.digest(), core.digest());
        assert_eq!(s.kv(), &core);
    }
}

/// paxakos keeps promises in memory only: a node restarted through its recovery path is
/// passive, and its answers over the wire say so instead of promising or accepting.
#[test]
fn a_recovering_node_answers_passive_instead_of_voting() {
    use paxakos::node::{Participation, Snapshot};

    let members = members();
    let me = members[0];
    let snapshot = Snapshot::<KvMachine, u64, u32>::initial_with(KvMachine::new(members, 4));
    let (handler, node) = futures::executor::block_on(
        NetInvocation::<Memory>::node_builder()
            .for_node(me.id())
            .communicating_via(NetCommunicator::new(Memory::default()))
            .recovering_with(snapshot)
            .voting_with(crate::leases::LeaseVoter::new(
                crate::leases::LeaseBook::new(me.0, None),
            ))
            .spawn(),
    )
    .expect("node starts");
    assert!(matches!(node.participation(), Participation::Passive));
    let handle = node.handle();
    let ask = |request: Request| {
        let bytes = request.encode().expect("encodes");
        let answer =
            futures::executor::block_on(serve(&handler, &handle, &bytes)).expect("a request");
        Response::decode(&answer).expect("an answer")
    };
    let passive = Response::Unavailable(Unavailable::Passive);
    assert_eq!(ask(Request::Prepare { round: 1, coord: 7 }), passive);
    let e = entry(1, 1, KvCommand::Remove { key: vec![1] });
    assert_eq!(
        ask(Request::Proposal {
            round: 1,
            coord: 7,
            entry: e
        }),
        passive
    );
    // Garbage is refused with a typed error, not answered.
    assert!(futures::executor::block_on(serve(&handler, &handle, b"\x01\xff\xff")).is_err());
}
