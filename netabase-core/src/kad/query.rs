//! The iterative closest-peers lookup, free of I/O: it says which peers to contact next and
//! is told how each contact went.
//!
//! Peers are kept ordered by distance to the target. At most `parallelism` requests are in
//! flight while the lookup makes progress; when a round of answers brings no peer closer
//! than the closest already known, the lookup is *stalled* and widens to `num_results`
//! requests in flight, so that it cannot end before the `num_results` closest peers it
//! knows have all answered. It finishes when the `num_results` closest peers that did not
//! fail have all answered, or when no candidate is left (and, if none answered yet, no answer is outstanding).

use alloc::vec::Vec;

use hashbrown::HashSet;
use rustc_hash::FxBuildHasher;

use crate::key::{Distance, Key};
use crate::peer::{Address, Addresses, PeerId};

/// State of one peer within a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Known, not yet asked.
    NotContacted,
    /// Asked, answer pending.
    Waiting,
    /// Asked, and slower to answer than the lookup's patience: it no longer occupies a slot
    /// or holds the lookup back, but a late answer is still used.
    Unresponsive,
    /// Answered.
    Succeeded,
    /// Failed or timed out.
    Failed,
}

/// A candidate's place in the distance order: small, so that scanning the order (which
/// every step of a lookup does) reads few cache lines.
#[derive(Clone, Copy, Debug)]
struct Slot {
    distance: Distance,
    /// Where its peer and addresses are in [`ClosestPeersIter::peers`].
    index: u16,
    state: PeerState,
    /// Number of sequential request rounds needed to learn of this peer (1 for the
    /// peers the lookup started with).
    depth: u32,
}

/// What the lookup wants next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Ask this peer (at these addresses).
    Contact(PeerId, Addresses),
    /// Nothing to send now; wait for answers in flight.
    Waiting,
    /// The lookup is over.
    Finished,
}

/// An iterative lookup of the peers closest to a key.
#[derive(Clone, Debug)]
pub struct ClosestPeersIter {
    target: Key,
    /// Candidates, closest first.
    order: Vec<Slot>,
    /// Peer and addresses of each candidate, by [`Slot::index`]; a slot freed by an
    /// eviction is reused at once by the candidate that caused it.
    peers: Vec<(PeerId, Addresses)>,
    num_results: usize,
    parallelism: usize,
    max_candidates: usize,
    stalled: bool,
    no_progress: usize,
    finished: bool,
    in_flight: usize,
    /// Keys of the peers asked so far. An answer naming one of them changes nothing (it
    /// is not contacted twice), so it is passed over without searching the candidates:
    /// most peers in the answers of a converging lookup were asked already.
    asked: HashSet<Key, FxBuildHasher>,
}

impl ClosestPeersIter {
    /// A lookup of `target` seeded with `known` peers (typically the routing table's
    /// closest). `local` is never contacted.
    pub fn new(
        target: Key,
        local: &PeerId,
        known: impl IntoIterator<Item = (PeerId, Addresses)>,
        num_results: usize,
        parallelism: usize,
    ) -> Self {
        let num_results = num_results.max(1);
        let mut iter = ClosestPeersIter {
            target,
            order: Vec::new(),
            peers: Vec::new(),
            num_results,
            parallelism: parallelism.max(1),
            // Bounded memory: candidates beyond this rank are never needed while the
            // closer ones answer.
            max_candidates: num_results * 8,
            stalled: false,
            no_progress: 0,
            finished: false,
            in_flight: 0,
            asked: HashSet::with_hasher(FxBuildHasher),
        };
        for (peer, addrs) in known {
            iter.insert(local, peer, addrs, 1);
        }
        iter
    }

    /// The target key.
    pub fn target(&self) -> &Key {
        &self.target
    }

    /// Where `peer` is (`Ok`) or would go (`Err`) in the distance order.
    fn find(&self, peer: &PeerId) -> Result<usize, usize> {
        let d = peer.kad_key().distance(&self.target);
        self.order.binary_search_by(|s| s.distance.cmp(&d))
    }

    fn insert(&mut self, local: &PeerId, peer: PeerId, addrs: Addresses, depth: u32) -> bool {
        let distance = peer.kad_key().distance(&self.target);
        self.insert_from(local, &peer, &addrs, depth, distance, 0).0
    }

    /// Adds `peer`, at `distance` from the target, as a candidate (or merges its
    /// addresses into a known one). Every candidate before position `from` must be closer
    /// than `distance`, so the search starts there. Returns whether it was added, and its
    /// position (where it is or would have gone).
    fn insert_from(
        &mut self,
        local: &PeerId,
        peer: &PeerId,
        addrs: &Addresses,
        depth: u32,
        distance: Distance,
        from: usize,
    ) -> (bool, usize) {
        if peer == local {
            return (false, from);
        }
        if self.order.len() >= self.max_candidates
            && self.order.last().is_some_and(|s| distance > s.distance)
        {
            // Full, and farther than every candidate: it cannot get in.
            return (false, self.order.len());
        }
        let found = self.order[from..]
            .binary_search_by(|s| s.distance.cmp(&distance))
            .map(|p| p + from)
            .map_err(|p| p + from);
        let pos = match found {
            Ok(pos) => {
                let slot = self.order[pos];
                let known = &mut self.peers[usize::from(slot.index)].1;
                if slot.state == PeerState::NotContacted && !addrs.iter().all(|a| known.contains(a))
                {
                    let mut list: Vec<Address> = known.to_vec();
                    for a in addrs.iter() {
                        if !list.contains(a) && list.len() < crate::kbucket::MAX_ADDRS_PER_ENTRY {
                            list.push(a.clone());
                        }
                    }
                    *known = list.into();
                }
                return (false, pos);
            }
            Err(pos) => pos,
        };
        let index = if self.order.len() >= self.max_candidates {
            // Full: only a peer closer than the farthest candidate gets in, and the farthest
            // candidate that is not awaiting an answer makes room (at most `num_results`
            // are awaited, so the search is short). Dropping a far candidate that already
            // answered or failed cannot change the result: it ranks beyond the candidates
            // kept.
            let Some(far) = self
                .order
                .iter()
                .rposition(|s| s.state != PeerState::Waiting)
            else {
                return (false, pos);
            };
            if pos > far {
                return (false, pos);
            }
            let freed = self.order.remove(far).index;
            self.peers[usize::from(freed)] = (*peer, addrs.clone());
            freed
        } else {
            self.peers.push((*peer, addrs.clone()));
            u16::try_from(self.peers.len() - 1).expect("candidates are bounded")
        };
        self.order.insert(
            pos,
            Slot {
                distance,
                index,
                state: PeerState::NotContacted,
                depth,
            },
        );
        (true, pos)
    }

    fn closest_succeeded(&self) -> Option<Distance> {
        self.order
            .iter()
            .find(|s| s.state == PeerState::Succeeded)
            .map(|s| s.distance)
    }

    /// The slot of `peer`, if it is a candidate.
    fn slot_mut<'a>(order: &'a mut [Slot], target: &Key, peer: &PeerId) -> Option<&'a mut Slot> {
        let d = peer.kad_key().distance(target);
        let pos = order.binary_search_by(|s| s.distance.cmp(&d)).ok()?;
        Some(&mut order[pos])
    }

    /// Records the answer of `peer` and the closer peers it named. Returns `false` if the
    /// peer was not waiting in this lookup (unknown, already answered, or already failed):
    /// such answers change nothing.
    pub fn on_success<'a>(
        &mut self,
        local: &PeerId,
        peer: &PeerId,
        closer: impl IntoIterator<Item = (&'a PeerId, &'a Addresses)>,
    ) -> bool {
        if self.finished {
            return false;
        }
        let d = Key::from_peer(peer).distance(&self.target);
        let depth = match Self::slot_mut(&mut self.order, &self.target, peer) {
            Some(c) if c.state == PeerState::Waiting => {
                c.state = PeerState::Succeeded;
                self.in_flight -= 1;
                c.depth
            }
            Some(c) if c.state == PeerState::Unresponsive => {
                c.state = PeerState::Succeeded;
                c.depth
            }
            _ => return false,
        };
        let before = self.closest_succeeded();
        let mut closer_found = false;
        // Answers list peers closest first: each search starts where the previous peer
        // went, as long as the list is in order.
        let mut previous: Option<(Distance, usize)> = None;
        for (p, addrs) in closer {
            if self.asked.contains(p.kad_key()) {
                continue;
            }
            let pd = p.kad_key().distance(&self.target);
            let from = match previous {
                Some((d, pos)) if d < pd => pos,
                _ => 0,
            };
            let (added, pos) = self.insert_from(local, p, addrs, depth + 1, pd, from);
            previous = Some((pd, pos));
            if added && before.is_none_or(|b| pd < b) {
                closer_found = true;
            }
        }
        // Progress: this answer brought a peer closer than every peer that had answered
        // before it, or it is itself the closest answer so far.
        let progress = closer_found || before.is_none_or(|b| d <= b);
        if progress {
            self.no_progress = 0;
            self.stalled = false;
        } else {
            self.no_progress += 1;
            if self.no_progress >= self.parallelism {
                self.stalled = true;
            }
        }
        true
    }

    /// Records that `peer` failed or timed out. Returns `false` if it was not waiting.
    pub fn on_failure(&mut self, peer: &PeerId) -> bool {
        if self.finished {
            return false;
        }
        match Self::slot_mut(&mut self.order, &self.target, peer) {
            Some(c) if c.state == PeerState::Waiting => {
                c.state = PeerState::Failed;
                self.in_flight -= 1;
                true
            }
            Some(c) if c.state == PeerState::Unresponsive => {
                c.state = PeerState::Failed;
                true
            }
            _ => false,
        }
    }

    /// Records that `peer` has not answered within the lookup's patience. Returns `false`
    /// if it was not waiting.
    pub fn on_unresponsive(&mut self, peer: &PeerId) -> bool {
        if self.finished {
            return false;
        }
        match Self::slot_mut(&mut self.order, &self.target, peer) {
            Some(c) if c.state == PeerState::Waiting => {
                c.state = PeerState::Unresponsive;
                self.in_flight -= 1;
                true
            }
            _ => false,
        }
    }

    /// What to do next. Call repeatedly until it returns something other than
    /// [`Next::Contact`]; each `Contact` marks that peer as waiting.
    pub fn poll_next(&mut self) -> Next {
        if self.finished {
            return Next::Finished;
        }
        let capacity = if self.stalled {
            self.num_results
        } else {
            self.parallelism
        };
        let mut succeeded = 0;
        let mut waiting_ahead = false;
        let mut contact = None;
        for (pos, c) in self.order.iter().enumerate() {
            match c.state {
                PeerState::Succeeded => {
                    succeeded += 1;
                    if succeeded >= self.num_results {
                        break;
                    }
                }
                PeerState::Waiting => waiting_ahead = true,
                PeerState::NotContacted => {
                    if self.in_flight < capacity {
                        contact = Some(pos);
                    } else {
                        waiting_ahead = true;
                    }
                    break;
                }
                PeerState::Failed | PeerState::Unresponsive => {}
            }
        }
        if let Some(pos) = contact {
            let c = &mut self.order[pos];
            c.state = PeerState::Waiting;
            self.in_flight += 1;
            let (peer, addrs) = &self.peers[usize::from(c.index)];
            self.asked.insert(*peer.kad_key());
            return Next::Contact(*peer, addrs.clone());
        }
        if succeeded >= self.num_results && !waiting_ahead {
            // The closest `num_results` live peers have answered and no closer peer is still
            // being asked; answers in flight from farther peers cannot change the result.
            self.finished = true;
            return Next::Finished;
        }
        if waiting_ahead || self.in_flight > 0 {
            return Next::Waiting;
        }
        // Nothing left to ask. Peers past their patience no longer hold the lookup back,
        // but when none has answered at all, their late answers are the only result the
        // lookup can still get: wait for them (each ends by answering, failing or timing
        // out) rather than end empty while answers are on their way. With some answers in
        // hand the lookup ends, so that a lost request does not cost a full timeout.
        if self.order.iter().all(|c| c.state != PeerState::Succeeded)
            && self
                .order
                .iter()
                .any(|c| c.state == PeerState::Unresponsive)
        {
            return Next::Waiting;
        }
        self.finished = true;
        Next::Finished
    }

    /// Ends the lookup early (quorum reached, timeout, cancellation).
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Whether the lookup is over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The peers that answered, closest first, at most `num_results`.
    pub fn into_result(self) -> Vec<PeerId> {
        self.succeeded()
            .take(self.num_results)
            .map(|(p, _)| p)
            .collect()
    }

    /// The peers that answered, closest first, with the depth at which each was learnt.
    pub fn succeeded(&self) -> impl Iterator<Item = (PeerId, u32)> + '_ {
        self.order
            .iter()
            .filter(|c| c.state == PeerState::Succeeded)
            .map(|c| (self.peers[usize::from(c.index)].0, c.depth))
    }

    /// The addresses the lookup knows for `peer`.
    pub fn addresses(&self, peer: &PeerId) -> Option<&Addresses> {
        let pos = self.find(peer).ok()?;
        Some(&self.peers[usize::from(self.order[pos].index)].1)
    }

    /// The state of `peer` in this lookup.
    pub fn state(&self, peer: &PeerId) -> Option<PeerState> {
        let pos = self.find(peer).ok()?;
        Some(self.order[pos].state)
    }

    /// Number of candidates held (bounded).
    pub fn candidate_count(&self) -> usize {
        self.order.len()
    }

    /// Number of requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}
