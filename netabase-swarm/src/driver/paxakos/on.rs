//! The paxakos engine in the driver.

use std::collections::HashMap;

use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use netabase_core::consensus::{ClusterId, ConsensusStats, Role};
use netabase_paxakos::engine::{self, EngineError, EngineStatus, Input, Observed, Setup, Start};
use netabase_paxakos::{KvSnapshot, Transport};
use netabase_store::backend::WriteTransaction;
use netabase_store::{AnyBackend, Backend, Durability};
use serde::{Deserialize, Serialize};

use crate::consensus::{ClusterStatus, Committed, ConsensusCommand, ConsensusError};
use crate::convert::{to_core_peer, to_multiaddr};
use crate::driver::Driver;
use crate::error::NetabaseError;
use crate::event::NetabaseEvent;
use crate::runtime::Runtime;

/// The table the engine's cluster and its clean-stop snapshot live in.
const TABLE: &str = "paxakos.meta";
/// Key of the cluster this node is a member of.
const CLUSTER_KEY: &[u8] = b"cluster";
/// Key of the snapshot a clean stop left (taken, and deleted durably, before the node
/// resumes from it: resuming twice from one snapshot would break promises made between).
const SNAPSHOT_KEY: &[u8] = b"snapshot";

/// Requests the engine sends that wait for the driver.
const OUTBOUND_QUEUE: usize = 1024;
/// Inputs waiting for the engine.
const INPUT_QUEUE: usize = 1024;

/// Why an exchange with a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SwarmTransportError {
    /// Too many requests wait for the driver.
    #[error("too many requests are waiting")]
    Busy,
    /// The node stopped.
    #[error("the node stopped")]
    Stopped,
    /// libp2p's request-response reported a failure.
    #[error("{0}")]
    Failed(String),
}

type Answer = oneshot::Sender<Result<Vec<u8>, SwarmTransportError>>;

/// A request of the engine's to a peer, with where its answer goes.
pub(crate) struct Outbound {
    to: PeerId,
    bytes: Vec<u8>,
    answer: Answer,
}

/// The engine's [`Transport`]: its requests go to the driver, which sends them on the
/// swarm.
#[derive(Clone)]
struct SwarmTransport {
    requests: mpsc::Sender<Outbound>,
}

impl Transport for SwarmTransport {
    type Error = SwarmTransportError;

    fn request(
        &self,
        to: PeerId,
        request: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, SwarmTransportError>> {
        let (answer, answered) = oneshot::channel();
        let sent = self.requests.clone().try_send(Outbound {
            to,
            bytes: request,
            answer,
        });
        async move {
            if let Err(e) = sent {
                return Err(if e.is_full() {
                    SwarmTransportError::Busy
                } else {
                    SwarmTransportError::Stopped
                });
            }
            answered.await.map_err(|_| SwarmTransportError::Stopped)?
        }
        .boxed()
    }
}

/// A peer's request being answered by the engine: the channel to answer on and the
/// answer (`None`: refused, the stream is dropped).
type Serving = (ResponseChannel<Vec<u8>>, Option<Vec<u8>>);

/// The running engine.
struct Run {
    cluster: ClusterId,
    inputs: mpsc::Sender<Input>,
    thread: Option<std::thread::JoinHandle<Option<KvSnapshot>>>,
    requests: mpsc::Receiver<Outbound>,
    pending: HashMap<OutboundRequestId, Answer>,
    /// Peers' requests being answered, and API calls waiting for the engine (`None`).
    waiting: FuturesUnordered<BoxFuture<'static, Option<Serving>>>,
}

/// The paxakos engine of a node, once it created or joined a cluster.
#[derive(Default)]
pub(crate) struct PaxakosSlot {
    run: Option<Run>,
    /// Peers' requests refused because the engine's queue was full.
    refused: u64,
}

/// Something the engine's side needs the driver for.
pub(crate) enum PaxakosStep {
    /// A request to a peer.
    Request(Outbound),
    /// An answer to a peer's request is ready (or an API call was answered).
    Served(Option<Serving>),
}

/// The next thing the engine needs; never ready while there is no engine.
pub(crate) async fn next_step(slot: &mut PaxakosSlot) -> PaxakosStep {
    let Some(run) = &mut slot.run else {
        return futures::future::pending().await;
    };
    futures::select_biased! {
        request = run.requests.select_next_some() => PaxakosStep::Request(request),
        served = run.waiting.select_next_some() => PaxakosStep::Served(served),
    }
}

/// The cluster record kept in [`TABLE`].
#[derive(Serialize, Deserialize)]
struct ClusterRecord {
    cluster: [u8; 16],
    members: Vec<Vec<u8>>,
}

fn store_error(e: netabase_store::StoreError) -> NetabaseError {
    NetabaseError::Store(e)
}

/// The cluster this node's database says it is a member of, if any.
fn load_cluster(backend: &AnyBackend) -> Result<Option<(ClusterId, Vec<PeerId>)>, NetabaseError> {
    let Some(bytes) = backend
        .with_read(|r| r.get(TABLE, CLUSTER_KEY))
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let record: ClusterRecord = netabase_core::model::decode_value("paxakos cluster", &bytes)
        .map_err(|e| {
            NetabaseError::Config(format!("the paxakos cluster record is corrupt: {e}"))
        })?;
    let members = record
        .members
        .iter()
        .map(|b| PeerId::from_bytes(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            NetabaseError::Config(format!("the paxakos cluster record is corrupt: {e}"))
        })?;
    Ok(Some((ClusterId(record.cluster), members)))
}

/// Writes `changes` to [`TABLE`] in one durable transaction.
fn write_durably(
    backend: &AnyBackend,
    changes: &[(&[u8], Option<&[u8]>)],
) -> Result<(), NetabaseError> {
    let mut tx = backend
        .begin_write_with(Durability::Immediate)
        .map_err(store_error)?;
    tx.apply(TABLE, changes).map_err(store_error)?;
    tx.commit().map_err(store_error)
}

fn engine_error(e: EngineError) -> NetabaseError {
    match e {
        EngineError::Indeterminate(id) => ConsensusError::Indeterminate(id).into(),
        EngineError::Recovering => ConsensusError::Recovering.into(),
        EngineError::Busy => ConsensusError::Busy.into(),
        EngineError::Stopped => NetabaseError::Stopped,
    }
}

impl<R: Runtime> Driver<R> {
    /// Whether the node's consensus engine is paxakos.
    pub(crate) fn paxakos_is_engine(&self) -> bool {
        self.settings.engine == crate::config::Engine::Paxakos
    }

    /// An API consensus call, for the paxakos engine.
    pub(crate) fn on_paxakos_command(&mut self, command: ConsensusCommand) {
        match command {
            ConsensusCommand::Start {
                cluster,
                members,
                reply,
                ..
            } => {
                let _ = reply.send(self.start_paxakos(cluster, members));
            }
            ConsensusCommand::Propose { command, reply } => {
                self.paxakos_call(
                    reply,
                    |reply| Input::Write {
                        command: command.encode(),
                        reply,
                    },
                    |written| {
                        written.map_err(engine_error).map(|w| Committed {
                            id: w.id,
                            position: w.position,
                            response: w.response,
                        })
                    },
                );
            }
            ConsensusCommand::Read { key, level, reply } => {
                self.paxakos_call(
                    reply,
                    |reply| Input::Read { key, level, reply },
                    |found| found.map_err(engine_error),
                );
            }
            ConsensusCommand::Status { reply } => {
                let Some(run) = &self.paxakos.run else {
                    let _ = reply.send(None);
                    return;
                };
                let cluster = run.cluster;
                let refused = self.paxakos.refused;
                let local = *self.swarm.local_peer_id();
                self.paxakos_call(
                    reply,
                    |reply| Input::Status { reply },
                    move |status| Some(cluster_status(cluster, local, refused, status)),
                );
            }
            ConsensusCommand::Change { reply, .. } => {
                let _ = reply.send(Err(ConsensusError::NotOffered("membership changes").into()));
            }
            ConsensusCommand::Transfer { reply } => {
                let _ = reply.send(Err(ConsensusError::NotOffered("leadership transfer").into()));
            }
            ConsensusCommand::Applied { reply, .. } => {
                let _ = reply.send(Err(
                    ConsensusError::NotOffered("an applied-entries feed").into()
                ));
            }
            ConsensusCommand::EntryStatus { reply, .. } => {
                let _ = reply.send(Err(ConsensusError::NotOffered("entry status").into()));
            }
        }
    }

    /// Hands the engine an input made with a reply channel of its own, and answers
    /// `reply` with `map` of the engine's answer once it comes. Without an engine the
    /// call fails with [`ConsensusError::NoCluster`] (a status with `None`).
    fn paxakos_call<A: Send + 'static, T: Send + 'static + From<NoEngine>>(
        &mut self,
        reply: oneshot::Sender<T>,
        input: impl FnOnce(oneshot::Sender<A>) -> Input,
        map: impl FnOnce(A) -> T + Send + 'static,
    ) {
        let Some(run) = &mut self.paxakos.run else {
            let _ = reply.send(NoEngine::NoCluster.into());
            return;
        };
        let (engine_reply, answered) = oneshot::channel();
        if let Err(e) = run.inputs.try_send(input(engine_reply)) {
            let refusal = if e.is_full() {
                NoEngine::Busy
            } else {
                NoEngine::Stopped
            };
            let _ = reply.send(refusal.into());
            return;
        }
        run.waiting.push(
            async move {
                let answer = match answered.await {
                    Ok(a) => map(a),
                    Err(_) => NoEngine::Stopped.into(),
                };
                let _ = reply.send(answer);
                None
            }
            .boxed(),
        );
    }

    fn start_paxakos(
        &mut self,
        cluster: ClusterId,
        members: Vec<PeerId>,
    ) -> Result<(), NetabaseError> {
        if let Some(run) = &self.paxakos.run {
            return Err(ConsensusError::AlreadyMember(run.cluster).into());
        }
        let local = *self.swarm.local_peer_id();
        let proposer = to_core_peer(&local)
            .ok_or_else(|| NetabaseError::Config("unsupported local peer id".into()))?;
        let backend = self.machine.kad.store().backend().clone();
        let (members, start) = match load_cluster(&backend)? {
            Some((known, _)) if known != cluster => {
                return Err(ConsensusError::AlreadyMember(known).into());
            }
            // A restart: from the snapshot of a clean stop (deleted first, durably), or
            // through the recovery path after a crash.
            Some((_, members)) => {
                let snapshot = backend
                    .with_read(|r| r.get(TABLE, SNAPSHOT_KEY))
                    .map_err(store_error)?
                    .and_then(|b| netabase_paxakos::wire::decode_snapshot(&b).ok());
                let start = match snapshot {
                    Some(snapshot) => {
                        write_durably(&backend, &[(SNAPSHOT_KEY, None)])?;
                        Start::Resume(Box::new(snapshot))
                    }
                    None => Start::Recover,
                };
                (members, start)
            }
            // A new member: every member starts the cluster at round 0.
            None => {
                let mut members = members;
                members.push(local);
                members.sort();
                members.dedup();
                let record = ClusterRecord {
                    cluster: cluster.0,
                    members: members.iter().map(|p| p.to_bytes()).collect(),
                };
                let bytes = netabase_core::model::encode_value(&record)
                    .map_err(|e| NetabaseError::Config(e.to_string()))?;
                write_durably(&backend, &[(CLUSTER_KEY, Some(&bytes))])?;
                (members, Start::Initial)
            }
        };
        if !members.contains(&local) {
            return Err(ConsensusError::NoCluster.into());
        }
        let (requests_tx, requests) = mpsc::channel(OUTBOUND_QUEUE);
        // The engine's changes of leader are the node's `ConsensusLeader` events, as the
        // core engine's are; its one configuration is announced at the start.
        self.emit(NetabaseEvent::ConsensusConfiguration {
            from: 1,
            voters: members.clone(),
            learners: Vec::new(),
        });
        let events = self.events.clone();
        let observer: engine::Observer = Box::new(move |observed| {
            if let Observed::Leader { leader, coord } = observed {
                let _ = events.try_broadcast(NetabaseEvent::ConsensusLeader {
                    leader: Some(leader),
                    round: u64::from(coord),
                });
            }
        });
        let setup = Setup {
            me: local,
            proposer,
            first_seq: super::super::wall_clock_micros(),
            members,
            transport: SwarmTransport {
                requests: requests_tx,
            },
            config: self.settings.paxakos.clone(),
            start,
            observer: Some(observer),
        };
        let (inputs, thread) = engine::spawn(setup, INPUT_QUEUE)
            .map_err(|e| NetabaseError::Config(format!("the paxakos engine cannot start: {e}")))?;
        self.paxakos.run = Some(Run {
            cluster,
            inputs,
            thread: Some(thread),
            requests,
            pending: HashMap::new(),
            waiting: FuturesUnordered::new(),
        });
        Ok(())
    }

    pub(crate) fn on_paxakos_step(&mut self, step: PaxakosStep) {
        match step {
            PaxakosStep::Served(None) => {}
            PaxakosStep::Served(Some((channel, answer))) => {
                if let (Some(answer), Some(behaviour)) =
                    (answer, self.swarm.behaviour_mut().paxakos.as_mut())
                {
                    let _ = behaviour.send_response(channel, answer);
                }
            }
            PaxakosStep::Request(Outbound { to, bytes, answer }) => {
                let local = *self.swarm.local_peer_id();
                if to == local {
                    // paxakos counts its own vote through its communicator too.
                    let (reply, served) = oneshot::channel();
                    let Some(run) = &mut self.paxakos.run else {
                        return;
                    };
                    if run
                        .inputs
                        .try_send(Input::Serve {
                            request: bytes,
                            reply,
                        })
                        .is_err()
                    {
                        let _ = answer.send(Err(SwarmTransportError::Busy));
                        return;
                    }
                    run.waiting.push(
                        async move {
                            let result = match served.await {
                                Ok(Ok(bytes)) => Ok(bytes),
                                Ok(Err(e)) => Err(SwarmTransportError::Failed(e.to_string())),
                                Err(_) => Err(SwarmTransportError::Stopped),
                            };
                            let _ = answer.send(result);
                            None
                        }
                        .boxed(),
                    );
                    return;
                }
                let addrs = to_core_peer(&to)
                    .and_then(|p| self.machine.kad.routing_table().entry(&p))
                    .map(|e| e.addrs.iter().filter_map(to_multiaddr).collect())
                    .unwrap_or_default();
                let Some(behaviour) = self.swarm.behaviour_mut().paxakos.as_mut() else {
                    let _ = answer.send(Err(SwarmTransportError::Stopped));
                    return;
                };
                let id = behaviour.send_request_with_addresses(&to, bytes, addrs);
                if let Some(run) = &mut self.paxakos.run {
                    run.pending.insert(id, answer);
                }
            }
        }
    }

    pub(crate) fn on_paxakos_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        let Some(run) = &mut self.paxakos.run else {
            return;
        };
        match event {
            request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let (reply, served) = oneshot::channel();
                if run
                    .inputs
                    .try_send(Input::Serve { request, reply })
                    .is_err()
                {
                    // The stream is dropped unanswered; the peer's paxakos counts a
                    // failed exchange.
                    self.paxakos.refused += 1;
                    return;
                }
                run.waiting.push(
                    async move { Some((channel, served.await.ok().and_then(Result::ok))) }.boxed(),
                );
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(answer) = run.pending.remove(&request_id) {
                    let _ = answer.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(answer) = run.pending.remove(&request_id) {
                    let _ = answer.send(Err(SwarmTransportError::Failed(error.to_string())));
                }
            }
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Stops the engine cleanly and keeps the snapshot it leaves, durably, for the next
    /// start to resume from.
    pub(crate) fn stop_paxakos(&mut self) {
        let Some(run) = self.paxakos.run.take() else {
            return;
        };
        // Everything the engine could wait on goes first (its requests in flight fail at
        // once: a stopping node sends nothing more), then its inputs, which ends it.
        let Run {
            inputs,
            thread,
            requests,
            pending,
            waiting,
            ..
        } = run;
        drop(requests);
        drop(pending);
        drop(waiting);
        drop(inputs);
        let snapshot = thread.and_then(|t| t.join().ok()).flatten();
        let Some(snapshot) = snapshot else {
            return;
        };
        let backend = self.machine.kad.store().backend().clone();
        match netabase_paxakos::wire::encode_snapshot(&snapshot) {
            Ok(bytes) => {
                if let Err(e) = write_durably(&backend, &[(SNAPSHOT_KEY, Some(&bytes))]) {
                    tracing::warn!(error = %e, "the paxakos snapshot could not be kept; the next start recovers from a peer");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the paxakos snapshot is too large to keep; the next start recovers from a peer");
            }
        }
    }
}

/// Why a call could not reach the engine.
enum NoEngine {
    NoCluster,
    Busy,
    Stopped,
}

impl From<NoEngine> for NetabaseError {
    fn from(e: NoEngine) -> Self {
        match e {
            NoEngine::NoCluster => ConsensusError::NoCluster.into(),
            NoEngine::Busy => ConsensusError::Busy.into(),
            NoEngine::Stopped => NetabaseError::Stopped,
        }
    }
}

impl<T> From<NoEngine> for Result<T, NetabaseError> {
    fn from(e: NoEngine) -> Self {
        Err(e.into())
    }
}

impl From<NoEngine> for Option<ClusterStatus> {
    fn from(_: NoEngine) -> Self {
        None
    }
}

/// The engine's status as the API reports a cluster's; `refused` counts the peers'
/// requests the driver dropped (the engine's queue full).
fn cluster_status(
    cluster: ClusterId,
    local: PeerId,
    refused: u64,
    status: EngineStatus,
) -> ClusterStatus {
    let stats = ConsensusStats {
        entries_committed: status.stats.applied,
        lease_reads: status.stats.lease_reads,
        refused: status.stats.refused_requests + refused,
        snapshot_installs: status.stats.snapshots_installed,
        ..ConsensusStats::default()
    };
    ClusterStatus {
        cluster,
        members: status.members,
        learners: Vec::new(),
        stale_instance: false,
        role: if status.leader == Some(local) {
            Role::Leader
        } else {
            Role::Follower
        },
        leader: status.leader,
        round: u64::from(status.coord),
        committed: status.round,
        applied: status.round,
        stats,
    }
}
