//! The driver's side of consensus: API calls into the member, its messages onto
//! `/paxos/1.0.0`, its events back to the callers.

use futures::{FutureExt, StreamExt};
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use netabase_core::consensus::{
    Configuration, EntryId, Event as MemberEvent, KvCommand, LogStore, Member, Membership,
    MembershipChange, Output as MemberOutput, Position, ProposeError, Slot, State, Value,
};

use super::Driver;
use crate::behaviour::NodeBehaviourEvent;
use crate::consensus::{
    AppliedEntry, ClusterStatus, Committed, ConsensusCommand, ConsensusError, ConsensusLog,
    ConsensusState,
};
use crate::convert::{to_core_peer, to_libp2p_peer, to_multiaddr};
use crate::error::NetabaseError;
use crate::event::NetabaseEvent;
use crate::runtime::Runtime;

/// How long a stopping leader waits for the member it hands leadership to.
const HAND_OVER_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

impl<R: Runtime> Driver<R> {
    pub(super) fn on_consensus_command(&mut self, command: ConsensusCommand) {
        #[cfg(feature = "paxakos")]
        if self.paxakos_is_engine() {
            self.on_paxakos_command(command);
            return;
        }
        let now = self.now();
        match command {
            ConsensusCommand::Start {
                cluster,
                members,
                create,
                reply,
            } => match self.start_consensus(cluster, &members, create) {
                // A joining node waits until it votes.
                Ok(()) => {
                    self.consensus.joining.push(reply);
                    self.resolve_activated();
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            ConsensusCommand::Change { change, reply } => {
                let Some(member) = &mut self.machine.consensus else {
                    let _ = reply.send(Err(ConsensusError::NoCluster.into()));
                    return;
                };
                match member.change_membership(now, change) {
                    Ok(id) => {
                        self.consensus.changes.insert(id, reply);
                    }
                    Err(ProposeError::Membership(e)) => {
                        let _ = reply.send(Err(ConsensusError::Membership(e).into()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ConsensusError::from(e).into()));
                    }
                }
            }
            ConsensusCommand::Propose { command, reply } => {
                let Some(member) = &mut self.machine.consensus else {
                    let _ = reply.send(Err(ConsensusError::NoCluster.into()));
                    return;
                };
                match member.propose(now, command.encode()) {
                    Ok(id) => {
                        self.consensus.writes.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ConsensusError::from(e).into()));
                    }
                }
            }
            ConsensusCommand::Read { key, level, reply } => {
                let Some(member) = &mut self.machine.consensus else {
                    let _ = reply.send(Err(ConsensusError::NoCluster.into()));
                    return;
                };
                match member.read(now, level) {
                    Ok(read) => {
                        self.consensus.reads.insert(read, (key, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ConsensusError::from(e).into()));
                    }
                }
            }
            ConsensusCommand::Status { reply } => {
                let status = self.machine.consensus.as_ref().map(|m| ClusterStatus {
                    cluster: m.cluster(),
                    members: m
                        .configuration()
                        .voters
                        .keys()
                        .filter_map(to_libp2p_peer)
                        .collect(),
                    learners: m
                        .latest_configuration()
                        .map(|c| c.learners.keys().filter_map(to_libp2p_peer).collect())
                        .unwrap_or_default(),
                    stale_instance: m.is_stale_instance(),
                    role: m.role(),
                    leader: m.leader().as_ref().and_then(to_libp2p_peer),
                    round: m.round(),
                    committed: m.committed(),
                    applied: m.applied(),
                    stats: m.stats().clone(),
                });
                let _ = reply.send(status);
            }
            ConsensusCommand::Transfer { reply } => {
                let answer = match &mut self.machine.consensus {
                    Some(m) => Ok(m.transfer_leadership(now).as_ref().and_then(to_libp2p_peer)),
                    None => Err(ConsensusError::NoCluster.into()),
                };
                let _ = reply.send(answer);
            }
            ConsensusCommand::Applied { from, limit, reply } => {
                let entries = match &self.machine.consensus {
                    Some(m) if from.max(1) <= m.log().truncated() => {
                        Err(ConsensusError::Compacted {
                            first: m.log().truncated() + 1,
                        }
                        .into())
                    }
                    Some(m) => Ok(applied_entries(m, from, limit)),
                    None => Err(ConsensusError::NoCluster.into()),
                };
                let _ = reply.send(entries);
            }
            ConsensusCommand::EntryStatus { id, reply } => {
                let status = match &self.machine.consensus {
                    Some(m) => Ok(m.entry_status(&id)),
                    None => Err(ConsensusError::NoCluster.into()),
                };
                let _ = reply.send(status);
            }
        }
    }

    /// Answers the membership changes whose configuration is in force here, and the
    /// `join_cluster` calls once this node votes.
    fn resolve_activated(&mut self) {
        if self.consensus_votes_here() {
            for reply in self.consensus.joining.drain(..) {
                let _ = reply.send(Ok(()));
            }
        }
        if self.consensus.activating.is_empty() {
            return;
        }
        let applied = self.machine.consensus.as_ref().map_or(0, |m| m.applied());
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.consensus.activating)
            .into_iter()
            .partition(|(from, _)| applied + 1 >= *from);
        self.consensus.activating = waiting;
        for (from, reply) in done {
            let _ = reply.send(Ok(from));
        }
    }

    /// Whether this node is a voter of the configuration in force at its next slot.
    fn consensus_votes_here(&self) -> bool {
        self.machine
            .consensus
            .as_ref()
            .is_some_and(|m| m.configuration().votes(&m.local(), m.instance()))
    }

    fn start_consensus(
        &mut self,
        cluster: netabase_core::consensus::ClusterId,
        members: &[libp2p::PeerId],
        create: bool,
    ) -> Result<(), NetabaseError> {
        if let Some(m) = &self.machine.consensus {
            return Err(ConsensusError::AlreadyMember(m.cluster()).into());
        }
        let members = members
            .iter()
            .map(|p| to_core_peer(p).ok_or(ConsensusError::UnsupportedPeer(*p)))
            .collect::<Result<Vec<_>, _>>()?;
        let contacts = members.iter().copied().collect();
        let local = to_core_peer(self.swarm.local_peer_id())
            .ok_or_else(|| NetabaseError::Config("unsupported local peer id".into()))?;
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed)
            .map_err(|e| NetabaseError::Config(format!("no randomness for the member: {e}")))?;
        let backend = self.machine.kad.store().backend().clone();
        let mut log = ConsensusLog::open(backend)?;
        let state = ConsensusState::open(&mut log)?;
        // A new cluster starts with its creator alone; every other member joins through
        // the log, so that each voter is bound to its instance before it votes (a first
        // voter that lost its data could not be told from one starting for the first
        // time). An empty configuration joins.
        let first = if create {
            Configuration::new([local])
        } else {
            Configuration::default()
        };
        let now = self.now();
        let mut member: Member<ConsensusLog, ConsensusState> = Member::new(
            self.consensus.config.clone(),
            Membership {
                local,
                cluster,
                members: first,
                contacts,
            },
            log,
            state,
            u64::from_le_bytes(seed),
            now,
        )
        .map_err(ConsensusError::from)?;
        let mut adding = Vec::new();
        if create {
            for peer in members.into_iter().filter(|p| *p != local) {
                let id = member
                    .change_membership(now, MembershipChange::Add(peer))
                    .map_err(ConsensusError::from)?;
                adding.push((id, peer));
            }
        }
        self.consensus.adding.extend(adding);
        self.machine.consensus = Some(member);
        Ok(())
    }

    /// A change adding a member of a created cluster had an unknown outcome: proposed
    /// again (adding a member twice changes nothing).
    fn add_again(&mut self, id: EntryId) {
        let Some(peer) = self.consensus.adding.remove(&id) else {
            return;
        };
        let now = self.now();
        if let Some(member) = &mut self.machine.consensus
            && let Ok(id) = member.change_membership(now, MembershipChange::Add(peer))
        {
            self.consensus.adding.insert(id, peer);
        }
    }

    pub(super) fn on_consensus_output(&mut self, output: MemberOutput) {
        match output {
            MemberOutput::Send { to, envelope } => {
                if let Some(m) = &self.metrics {
                    m.node
                        .message_counter(
                            "out",
                            std::borrow::Cow::Borrowed(crate::paxos::PAXOS_NAME),
                            envelope.message.kind(),
                            "request",
                        )
                        .inc();
                }
                let bytes = match envelope.encode() {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        tracing::warn!(error = %e, "a consensus message cannot be encoded");
                        return;
                    }
                };
                let Some(peer) = to_libp2p_peer(&to) else {
                    return;
                };
                // The answer to an open request from that peer carries it, if there is
                // one (a vote rides on the accept's stream).
                let mut bytes = bytes;
                while let Some(channel) = self
                    .consensus
                    .open_requests
                    .get_mut(&peer)
                    .and_then(|open| (!open.is_empty()).then(|| open.remove(0)))
                {
                    match self
                        .swarm
                        .behaviour_mut()
                        .paxos
                        .send_response(channel, bytes)
                    {
                        Ok(()) => return,
                        // The stream is gone (closed or timed out): try the next one.
                        Err(returned) => bytes = returned,
                    }
                }
                let addrs = self
                    .machine
                    .kad
                    .routing_table()
                    .entry(&to)
                    .map(|e| e.addrs.iter().filter_map(to_multiaddr).collect())
                    .unwrap_or_default();
                self.swarm
                    .behaviour_mut()
                    .paxos
                    .send_request_with_addresses(&peer, bytes, addrs);
            }
            MemberOutput::Event(event) => self.on_member_event(event),
        }
    }

    fn on_member_event(&mut self, event: MemberEvent) {
        match event {
            MemberEvent::Committed {
                id,
                position,
                response,
                ..
            } => {
                if let Some(reply) = self.consensus.writes.remove(&id) {
                    let _ = reply.send(Ok(Committed {
                        id,
                        position,
                        response,
                    }));
                }
            }
            MemberEvent::Indeterminate { id } => {
                self.add_again(id);
                if let Some(reply) = self.consensus.writes.remove(&id) {
                    let _ = reply.send(Err(ConsensusError::Indeterminate(id).into()));
                }
                if let Some(reply) = self.consensus.changes.remove(&id) {
                    let _ = reply.send(Err(ConsensusError::Indeterminate(id).into()));
                }
            }
            MemberEvent::ChangeDone { id, result } => {
                self.consensus.adding.remove(&id);
                if let Some(reply) = self.consensus.changes.remove(&id) {
                    match result {
                        Ok(from) => self.consensus.activating.push((from, reply)),
                        Err(e) => {
                            let _ = reply.send(Err(ConsensusError::Membership(e).into()));
                        }
                    }
                    self.resolve_activated();
                }
            }
            MemberEvent::Configuration {
                from,
                configuration,
            } => {
                self.emit(NetabaseEvent::ConsensusConfiguration {
                    from,
                    voters: configuration
                        .voters
                        .keys()
                        .filter_map(to_libp2p_peer)
                        .collect(),
                    learners: configuration
                        .learners
                        .keys()
                        .filter_map(to_libp2p_peer)
                        .collect(),
                });
                self.resolve_activated();
            }
            MemberEvent::ReadReady { read } => {
                if let Some((key, reply)) = self.consensus.reads.remove(&read) {
                    let found = self
                        .machine
                        .consensus
                        .as_ref()
                        .and_then(|m| m.state().get(&key));
                    let _ = reply.send(Ok(found));
                }
            }
            MemberEvent::ReadFailed { read, reason } => {
                if let Some((_, reply)) = self.consensus.reads.remove(&read) {
                    let _ = reply.send(Err(ConsensusError::from(reason).into()));
                }
            }
            MemberEvent::Applied { entries, .. } => {
                if let Some(m) = &self.metrics {
                    m.node.consensus_batch(entries.len());
                }
                self.resolve_activated();
            }
            MemberEvent::SnapshotInstalled { slot } => {
                self.emit(NetabaseEvent::ConsensusSnapshotInstalled { slot });
                self.resolve_activated();
            }
            MemberEvent::Leader { leader, round } => {
                self.emit(NetabaseEvent::ConsensusLeader {
                    leader: leader.as_ref().and_then(to_libp2p_peer),
                    round,
                });
            }
        }
    }

    pub(super) fn on_paxos_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        let request_response::Event::Message { peer, message, .. } = event else {
            return;
        };
        let bytes = match message {
            request_response::Message::Request {
                request, channel, ..
            } => {
                // Answered by the step's next message to `peer`, or empty at its end.
                self.consensus
                    .open_requests
                    .entry(peer)
                    .or_default()
                    .push(channel);
                request
            }
            request_response::Message::Response { response, .. } => response,
        };
        if bytes.is_empty() {
            return;
        }
        let Some(from) = to_core_peer(&peer) else {
            return;
        };
        let now = self.now();
        if let Err(e) = self.machine.handle_consensus_bytes(now, from, &bytes) {
            tracing::debug!(%peer, error = %e, "malformed consensus message");
        }
    }

    /// A leader about to stop hands leadership over (so the cluster need not wait out an
    /// election timeout), and waits until the member it asked has received the request,
    /// at most [`HAND_OVER_WAIT`].
    pub(super) async fn hand_over(&mut self) {
        let now = self.now();
        let Some(target) = self
            .machine
            .consensus
            .as_mut()
            .and_then(|m| m.transfer_leadership(now))
        else {
            return;
        };
        self.drain();
        let Some(target) = to_libp2p_peer(&target) else {
            return;
        };
        let mut deadline = R::sleep(HAND_OVER_WAIT).fuse();
        loop {
            futures::select_biased! {
                event = self.swarm.select_next_some() => {
                    let answered = matches!(
                        &event,
                        SwarmEvent::Behaviour(NodeBehaviourEvent::Paxos(
                            request_response::Event::Message {
                                peer,
                                message: request_response::Message::Response { .. },
                                ..
                            }
                        )) if *peer == target
                    );
                    self.on_swarm_event(event);
                    self.drain();
                    self.close_open_requests();
                    if answered {
                        return;
                    }
                }
                () = deadline => return,
            }
        }
    }

    /// Answers every request still open with an empty answer (at the end of a step).
    pub(super) fn close_open_requests(&mut self) {
        for (_, open) in self.consensus.open_requests.drain() {
            for channel in open {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .paxos
                    .send_response(channel, Vec::new());
            }
        }
    }
}

/// The entries of the applied slots `from..from + limit` of `member`'s log.
fn applied_entries(
    member: &Member<ConsensusLog, ConsensusState>,
    from: Slot,
    limit: usize,
) -> Vec<AppliedEntry> {
    let applied = member.state().applied();
    let mut out = Vec::new();
    let end = from.max(1).saturating_add(limit as u64);
    for slot in from.max(1)..end.min(applied.saturating_add(1)) {
        let Some(accepted) = member.log().get(slot) else {
            continue;
        };
        if let Value::Batch(entries) = accepted.value {
            for (index, entry) in entries.into_iter().enumerate() {
                out.push(AppliedEntry {
                    position: Position {
                        slot,
                        index: index as u32,
                    },
                    id: entry.id,
                    command: KvCommand::decode(&entry.command),
                });
            }
        }
    }
    out
}
