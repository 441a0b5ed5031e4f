//! One machine for a whole node: the Kademlia [`Node`] and, when the node is a member of
//! a consensus cluster, its [`Member`]. Adapters and the simulator drive this one type:
//! it routes each input to its protocol and merges their outputs and timers.

use crate::consensus::{self, LogStore, Member, State, WireError};
use crate::{Instant, Node, Output, PeerId, RecordStore};

/// An output of either protocol.
#[derive(Clone, Debug)]
pub enum MachineOutput {
    /// From the Kademlia node.
    Kad(Output),
    /// From the consensus member.
    Consensus(consensus::Output),
}

/// A node's protocols under one driving contract: the union of [`Node`]'s and
/// [`Member`]'s (outputs, timers, the group-commit rule).
pub struct Machine<S, L, T> {
    /// The Kademlia node.
    pub kad: Node<S>,
    /// The consensus member, while the node is in a cluster.
    pub consensus: Option<Member<L, T>>,
}

impl<S: RecordStore, L: LogStore, T: State> Machine<S, L, T> {
    /// A machine running `kad` and no consensus member yet.
    pub fn new(kad: Node<S>) -> Self {
        Machine {
            kad,
            consensus: None,
        }
    }

    /// The next output of either protocol (Kademlia's first).
    pub fn poll_output(&mut self) -> Option<MachineOutput> {
        if let Some(o) = self.kad.poll_output() {
            return Some(MachineOutput::Kad(o));
        }
        self.consensus
            .as_mut()
            .and_then(Member::poll_output)
            .map(MachineOutput::Consensus)
    }

    /// The earliest deadline of either protocol.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let consensus = self
            .consensus
            .as_ref()
            .map(Member::poll_timeout)
            .filter(|t| *t != Instant::MAX);
        match (self.kad.poll_timeout(), consensus) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers of both protocols that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.kad.poll_timeout().is_some_and(|t| t <= now) {
            self.kad.handle_timeout(now);
        }
        if let Some(m) = &mut self.consensus
            && m.poll_timeout() <= now
        {
            m.handle_timeout(now);
        }
    }

    /// Hands a consensus message's bytes from `from` to the member (dropped, and counted
    /// by the member, when the node is in no cluster or the bytes are malformed).
    pub fn handle_consensus_bytes(
        &mut self,
        now: Instant,
        from: PeerId,
        bytes: &[u8],
    ) -> Result<(), WireError> {
        match &mut self.consensus {
            Some(m) => m.handle_bytes(now, from, bytes),
            None => Ok(()),
        }
    }

    /// Whether `output` waits until every write so far is durable.
    pub fn output_waits_for_sync(&self, output: &MachineOutput) -> bool {
        match output {
            MachineOutput::Kad(o) => self.kad.output_waits_for_sync(o),
            MachineOutput::Consensus(o) => o.waits_for_sync(),
        }
    }

    /// Whether a sync is due even with no output waiting for it (the consensus leader's
    /// own vote counts only once durable).
    pub fn needs_sync(&self) -> bool {
        self.consensus.as_ref().is_some_and(Member::needs_sync)
    }

    /// Tells both protocols that every write so far is durable.
    pub fn synced(&mut self, now: Instant) {
        self.kad.synced();
        if let Some(m) = &mut self.consensus {
            m.synced(now);
        }
    }
}
