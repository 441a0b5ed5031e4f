//! Master leases: a voter that grants the leader a lease with each accepted proposal, a
//! communicator that records the leases the leader is granted, and the book both write
//! to, which the engine reads for lease reads.
//!
//! paxakos 0.13 has the same three parts (`LeaseGrantingVoter`,
//! `LeaseRecordingCommunicator`, the `MasterLeases` decoration), but its voter reports each
//! lease over a bounded channel with `futures::executor::block_on` inside the state keeper:
//! under paxakos's default executor that panics, and whenever the channel is full (its
//! reader busy waiting on the state keeper) the state keeper blocks for good. Here both
//! sides write to a shared [`LeaseBook`] under a mutex, which never waits on anyone.
//!
//! The rule is the core engine's ([`LeaseConfig`]): a voter that grants a lease of `D`
//! abstains from other candidates for `D·(1 + ε)` on its own clock; the leader relies on
//! the lease for `D·(1 − ε) − margin` from the moment it sent the proposal (the
//! difference is paxakos's dilation margin); a restarted voter grants nothing until `D`
//! has passed since it started, since it may have granted a lease before.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use netabase_core::consensus::LeaseConfig;
use paxakos::communicator::{Acceptance, AcceptanceFor, Communicator};
use paxakos::voting::{Decision, Voter};
use paxakos::{LogEntry, NodeInfo};

use crate::{KvMachine, PaxakosEntry, PeerNode};

/// The leases one node knows of: those granted to it (by itself and by the others), and
/// the one it granted last.
#[derive(Debug)]
pub struct LeaseBook {
    me: libp2p_identity::PeerId,
    config: Option<LeaseConfig>,
    /// When each member's lease to this node ends (on this node's clock).
    granted: std::collections::BTreeMap<libp2p_identity::PeerId, instant::Instant>,
}

impl LeaseBook {
    /// An empty book of node `me`, with leases per `config` (`None`: no leases).
    pub fn new(me: libp2p_identity::PeerId, config: Option<LeaseConfig>) -> Arc<Mutex<LeaseBook>> {
        Arc::new(Mutex::new(LeaseBook {
            me,
            config,
            granted: std::collections::BTreeMap::new(),
        }))
    }

    /// The lease a voter grants (zero without leases).
    pub fn duration(&self) -> Duration {
        self.config.map_or(Duration::ZERO, |c| c.duration)
    }

    /// How long before a lease's end the leader stops relying on it: `D·ε + margin`.
    pub fn dilation_margin(&self) -> Duration {
        self.config.map_or(Duration::ZERO, |c| {
            c.duration.saturating_sub(c.leader_span())
        })
    }

    fn record(&mut self, lessor: libp2p_identity::PeerId, end: instant::Instant) {
        let kept = self.granted.entry(lessor).or_insert(end);
        *kept = (*kept).max(end);
    }

    fn valid(&self, lessor: &libp2p_identity::PeerId, now: instant::Instant) -> bool {
        let margin = self.dilation_margin();
        self.granted
            .get(lessor)
            .is_some_and(|end| end.checked_sub(margin).is_some_and(|e| e > now))
    }

    /// Whether this node holds a master lease among `members` now: its own lease and
    /// leases from a majority of them, each before its end less the dilation margin
    /// (paxakos's strict master read, for a cluster whose members are fixed).
    pub fn is_master(&self, members: &[libp2p_identity::PeerId]) -> bool {
        if self.config.is_none() {
            return false;
        }
        let now = instant::Instant::now();
        let held = members.iter().filter(|m| self.valid(m, now)).count();
        self.valid(&self.me, now) && held > members.len() / 2
    }
}

/// A voter that grants the leader of each accepted proposal a master lease, and abstains
/// from electing anyone else while a lease it granted lasts.
pub struct LeaseVoter {
    book: Arc<Mutex<LeaseBook>>,
    started: instant::Instant,
    /// The coordination number of the leader whose commits this node saw last.
    leader_coord: u32,
    leader: Option<libp2p_identity::PeerId>,
    /// Until when a lease this node granted binds it.
    bound_until: Option<instant::Instant>,
}

impl LeaseVoter {
    /// A voter writing the leases it grants to itself into `book`.
    pub fn new(book: Arc<Mutex<LeaseBook>>) -> Self {
        LeaseVoter {
            book,
            started: instant::Instant::now(),
            leader_coord: 0,
            leader: None,
            bound_until: None,
        }
    }
}

impl Voter for LeaseVoter {
    type State = KvMachine;
    type RoundNum = u64;
    type CoordNum = u32;
    type Yea = Duration;
    type Nay = Infallible;
    type Abstain = Duration;

    fn contemplate_candidate(
        &mut self,
        _round: u64,
        _coord: u32,
        candidate: Option<&PeerNode>,
        _state: Option<&KvMachine>,
    ) -> Decision<(), Infallible, Duration> {
        let now = instant::Instant::now();
        match self.bound_until {
            Some(until)
                if until > now
                    && (self.leader.is_none() || self.leader != candidate.map(|c| c.id())) =>
            {
                Decision::Abstain(until - now)
            }
            _ => Decision::Yea(()),
        }
    }

    fn contemplate_proposal(
        &mut self,
        _round: u64,
        coord: u32,
        _entry: &PaxakosEntry,
        leader: Option<&PeerNode>,
        _state: Option<&KvMachine>,
    ) -> Decision<Duration, Infallible, Infallible> {
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let Some(config) = book.config else {
            return Decision::Yea(Duration::ZERO);
        };
        let now = instant::Instant::now();
        // A restarted voter may have granted a lease it no longer remembers.
        let settled = self.started + config.duration < now;
        if !settled || coord != self.leader_coord {
            return Decision::Yea(Duration::ZERO);
        }
        let until = now + config.acceptor_wait();
        self.bound_until = Some(self.bound_until.map_or(until, |u| u.max(until)));
        if let Some(leader) = leader
            && leader.id() == book.me
        {
            let end = now + config.duration;
            let me = book.me;
            book.record(me, end);
        }
        Decision::Yea(config.duration)
    }

    fn observe_commit(
        &mut self,
        _round: u64,
        coord: u32,
        _entry: &PaxakosEntry,
        leader: Option<&PeerNode>,
    ) {
        if coord > self.leader_coord {
            self.leader_coord = coord;
            self.leader = None;
        }
        if coord == self.leader_coord && self.leader.is_none() {
            self.leader = leader.map(|l| l.id());
        }
    }
}

/// A communicator that records, in the book, the lease each accepted proposal granted.
#[derive(Clone)]
pub struct LeaseCommunicator<C> {
    inner: C,
    book: Arc<Mutex<LeaseBook>>,
}

impl<C> LeaseCommunicator<C> {
    /// `inner`, recording into `book`.
    pub fn new(inner: C, book: Arc<Mutex<LeaseBook>>) -> Self {
        LeaseCommunicator { inner, book }
    }
}

impl<C> Communicator for LeaseCommunicator<C>
where
    C: Communicator<
            Node = PeerNode,
            RoundNum = u64,
            CoordNum = u32,
            LogEntry = PaxakosEntry,
            Yea = Duration,
            Nay = Infallible,
            Abstain = Duration,
        >,
{
    type Node = PeerNode;
    type RoundNum = u64;
    type CoordNum = u32;
    type LogEntry = PaxakosEntry;
    type Error = C::Error;
    type SendPrepare = C::SendPrepare;
    type Abstain = Duration;
    type SendProposal =
        futures::future::BoxFuture<'static, Result<AcceptanceFor<Self>, Self::Error>>;
    type Yea = Duration;
    type Nay = Infallible;
    type SendCommit = C::SendCommit;
    type SendCommitById = C::SendCommitById;

    fn send_prepare<'a>(
        &mut self,
        receivers: &'a [PeerNode],
        round: u64,
        coord: u32,
    ) -> Vec<(&'a PeerNode, Self::SendPrepare)> {
        self.inner.send_prepare(receivers, round, coord)
    }

    fn send_proposal<'a>(
        &mut self,
        receivers: &'a [PeerNode],
        round: u64,
        coord: u32,
        entry: Arc<PaxakosEntry>,
    ) -> Vec<(&'a PeerNode, Self::SendProposal)> {
        let sent = instant::Instant::now();
        self.inner
            .send_proposal(receivers, round, coord, entry)
            .into_iter()
            .map(|(receiver, reply)| {
                let book = self.book.clone();
                let lessor = receiver.id();
                let reply = reply.map(move |answer| {
                    if let Ok(Acceptance::Given(lease)) = &answer
                        && !lease.is_zero()
                    {
                        book.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .record(lessor, sent + *lease);
                    }
                    answer
                });
                (receiver, reply.boxed())
            })
            .collect()
    }

    fn send_commit<'a>(
        &mut self,
        receivers: &'a [PeerNode],
        round: u64,
        coord: u32,
        entry: Arc<PaxakosEntry>,
    ) -> Vec<(&'a PeerNode, Self::SendCommit)> {
        self.inner.send_commit(receivers, round, coord, entry)
    }

    fn send_commit_by_id<'a>(
        &mut self,
        receivers: &'a [PeerNode],
        round: u64,
        coord: u32,
        id: <PaxakosEntry as LogEntry>::Id,
    ) -> Vec<(&'a PeerNode, Self::SendCommitById)> {
        self.inner.send_commit_by_id(receivers, round, coord, id)
    }
}

#[cfg(test)]
mod tests {
    use netabase_core::PeerId;
    use netabase_core::consensus::{Entry, EntryId};

    use super::*;

    fn entry() -> PaxakosEntry {
        PaxakosEntry(Entry {
            id: EntryId {
                proposer: PeerId::from_seed(1),
                seq: 1,
            },
            command: Vec::new(),
        })
    }

    fn granted(d: Decision<Duration, Infallible, Infallible>) -> Duration {
        match d {
            Decision::Yea(lease) => lease,
            _ => panic!("a proposal is always accepted"),
        }
    }

    #[test]
    fn a_voter_grants_the_committed_leader_a_lease_and_abstains_from_others_while_it_lasts() {
        let config = LeaseConfig {
            duration: Duration::from_millis(40),
            drift_ppm: 10_000,
            margin: Duration::from_millis(5),
        };
        let (me, leader, other) = (
            PeerNode(libp2p_identity::PeerId::random()),
            PeerNode(libp2p_identity::PeerId::random()),
            PeerNode(libp2p_identity::PeerId::random()),
        );
        let book = LeaseBook::new(me.0, Some(config));
        let mut voter = LeaseVoter::new(book.clone());
        // Just started: it may have granted a lease before a restart, so it grants none
        // until the lease's duration has passed.
        voter.observe_commit(1, 3, &entry(), Some(&leader));
        assert_eq!(
            granted(voter.contemplate_proposal(2, 3, &entry(), Some(&leader), None)),
            Duration::ZERO
        );
        std::thread::sleep(config.duration);
        // A proposal of a leader it has not seen commit: no lease either.
        assert_eq!(
            granted(voter.contemplate_proposal(2, 4, &entry(), Some(&other), None)),
            Duration::ZERO
        );
        // The committed leader's: a lease, and the voter is bound to that leader.
        assert_eq!(
            granted(voter.contemplate_proposal(2, 3, &entry(), Some(&leader), None)),
            config.duration
        );
        assert!(
            matches!(voter.contemplate_candidate(3, 5, Some(&other), None), Decision::Abstain(d) if d <= config.acceptor_wait())
        );
        assert!(matches!(
            voter.contemplate_candidate(3, 5, Some(&leader), None),
            Decision::Yea(())
        ));
        std::thread::sleep(config.acceptor_wait());
        assert!(matches!(
            voter.contemplate_candidate(3, 5, Some(&other), None),
            Decision::Yea(())
        ));
    }

    #[test]
    fn a_node_is_master_with_its_own_lease_and_a_majority_until_the_margin_before_their_end() {
        let config = LeaseConfig {
            duration: Duration::from_millis(60),
            drift_ppm: 100_000,
            margin: Duration::from_millis(10),
        };
        let members: Vec<_> = (0..3).map(|_| libp2p_identity::PeerId::random()).collect();
        let book = LeaseBook::new(members[0], Some(config));
        let mut b = book.lock().unwrap();
        assert_eq!(b.dilation_margin(), Duration::from_millis(16));
        let end = instant::Instant::now() + config.duration;
        b.record(members[1], end);
        assert!(!b.is_master(&members), "not without its own lease");
        b.record(members[0], end);
        assert!(b.is_master(&members), "its own and one other of three");
        let left = end - b.dilation_margin();
        drop(b);
        std::thread::sleep(left.saturating_duration_since(instant::Instant::now()));
        assert!(
            !book.lock().unwrap().is_master(&members),
            "given up a margin before the end"
        );
        let none = LeaseBook::new(members[0], None);
        assert!(!none.lock().unwrap().is_master(&members[..1]));
    }
}
