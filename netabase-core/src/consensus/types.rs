//! The vocabulary of the replicated log: slots, ballots, entry ids, entries and values.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::PeerId;

/// A position in the replicated log. Slot 0 is never used: the first entry is slot 1, so
/// "applied through 0" means nothing is applied.
pub type Slot = u64;

/// A Paxos ballot: a round number made unique by the peer that leads it. Ballots order by
/// round, then by leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// The round; every new election uses one above every round its candidate has seen.
    pub round: u64,
    /// The member that leads this ballot.
    pub leader: PeerId,
}

/// The id of a log entry: its proposer and a sequence number that proposer never reuses
/// (its persisted incarnation in the high 32 bits). A retried proposal keeps its id, so
/// the state applies it at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryId {
    /// The member that proposed the entry.
    pub proposer: PeerId,
    /// The proposer's sequence number.
    pub seq: u64,
}

/// One client command in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's id.
    pub id: EntryId,
    /// The command, opaque to the log and interpreted by the [`State`](super::State).
    pub command: Vec<u8>,
}

impl Entry {
    /// The bytes this entry counts against batch and message limits.
    pub fn size(&self) -> usize {
        self.command.len() + 64
    }
}

/// What one slot decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Nothing: a new leader's first slot in its ballot, and the filling of gaps.
    Noop,
    /// A batch of client entries, applied in order.
    Batch(Vec<Entry>),
    /// A membership change (one per slot, one in flight at a time).
    Reconfigure(alloc::boxed::Box<Reconfiguration>),
}

impl Value {
    /// The bytes this value counts against batch and message limits.
    pub fn size(&self) -> usize {
        match self {
            Value::Noop => 8,
            Value::Batch(entries) => 8 + entries.iter().map(Entry::size).sum::<usize>(),
            Value::Reconfigure(r) => match &r.outcome {
                Ok(c) => 128 + 48 * (c.voters.len() + c.learners.len()),
                Err(_) => 128,
            },
        }
    }
}

/// Where an entry landed: its slot and its index in that slot's batch. For consensus
/// models this pair is the record's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The slot.
    pub slot: Slot,
    /// The index in the slot's batch.
    pub index: u32,
}

/// A cluster's id, minted by `create_cluster` from the driver's randomness and carried by
/// every message, so that two clusters sharing members never mix their logs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub [u8; 16]);

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl core::str::FromStr for ClusterId {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err("a cluster id is 32 hexadecimal digits");
        }
        let mut id = [0u8; 16];
        for (i, pair) in s.chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16).ok_or("not a hexadecimal digit");
            id[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(ClusterId(id))
    }
}

/// A member's instance: a random number minted when its log is created, so that a member
/// whose data was wiped (and who therefore forgot its promises) is told apart from the
/// member it was. 0 means "not bound yet" in a [`Configuration`].
pub type Instance = u64;

/// The members of a cluster from some slot on: the voters, whose votes decide, and the
/// learners, which receive the log but do not vote (new members catch up as learners
/// before they are promoted).
///
/// Each voter is bound to its [`Instance`] (0 until the leader learns it): a peer whose
/// instance differs from its binding lost its data, and neither votes nor is counted
/// until it is removed and added again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// The voters, with their bound instances.
    pub voters: BTreeMap<PeerId, Instance>,
    /// The learners, each with the voter it will replace when promoted, if any.
    pub learners: BTreeMap<PeerId, Option<PeerId>>,
}

impl Configuration {
    /// A configuration whose voters are `members` (instances not bound yet), no learners.
    pub fn new(members: impl IntoIterator<Item = PeerId>) -> Self {
        Configuration {
            voters: members.into_iter().map(|p| (p, 0)).collect(),
            learners: BTreeMap::new(),
        }
    }

    /// How many votes decide: a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `peer` is a voter.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.voters.contains_key(peer)
    }

    /// Whether `peer`, at `instance`, votes: it is a voter and its binding is `instance`
    /// or not made yet.
    pub fn votes(&self, peer: &PeerId, instance: Instance) -> bool {
        self.voters
            .get(peer)
            .is_some_and(|bound| *bound == 0 || *bound == instance)
    }

    /// Whether `peer` is a voter or a learner.
    pub fn includes(&self, peer: &PeerId) -> bool {
        self.voters.contains_key(peer) || self.learners.contains_key(peer)
    }

    /// Voters and learners.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.voters.keys().chain(self.learners.keys())
    }

    /// The configuration after `change`, or why it cannot be made. A change that is
    /// already in effect (adding a member twice, removing an absent one) leaves the
    /// configuration as it is, so that a retried change is harmless.
    pub fn changed(&self, change: &MembershipChange) -> Result<Configuration, ChangeError> {
        let mut next = self.clone();
        match *change {
            MembershipChange::Add(peer) => {
                if !next.includes(&peer) {
                    next.learners.insert(peer, None);
                }
            }
            MembershipChange::Remove(peer) => {
                if next.voters.contains_key(&peer) && next.voters.len() == 1 {
                    return Err(ChangeError::LastVoter);
                }
                next.voters.remove(&peer);
                next.learners.remove(&peer);
                next.learners.retain(|_, replaces| *replaces != Some(peer));
            }
            MembershipChange::Replace { old, new } => {
                if !next.voters.contains_key(&old) {
                    if next.voters.contains_key(&new) {
                        return Ok(next);
                    }
                    return Err(ChangeError::NotVoter(old));
                }
                if next.voters.contains_key(&new) {
                    return Err(ChangeError::AlreadyVoter(new));
                }
                next.learners.insert(new, Some(old));
            }
            MembershipChange::Promote { peer, instance } => {
                if let Some(bound) = next.voters.get_mut(&peer) {
                    // A voter: bind its instance if it was not bound yet.
                    if *bound == 0 {
                        *bound = instance;
                    }
                    return Ok(next);
                }
                let Some(replaces) = next.learners.remove(&peer) else {
                    return Err(ChangeError::NotLearner(peer));
                };
                next.voters.insert(peer, instance);
                if let Some(old) = replaces {
                    next.voters.remove(&old);
                }
            }
        }
        Ok(next)
    }
}

/// A change of a cluster's members, decided through the log like any entry and in force
/// `alpha` slots after the slot that decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a learner, promoted to voter by the leader once it has caught up.
    Add(PeerId),
    /// Removes a voter or a learner.
    Remove(PeerId),
    /// Adds `new` as a learner which, once caught up, replaces the voter `old` in one
    /// step.
    Replace {
        /// The voter to replace.
        old: PeerId,
        /// Its replacement.
        new: PeerId,
    },
    /// Makes a caught-up learner a voter bound to `instance` (or binds a voter's instance
    /// that was not bound yet). Proposed by the leader itself.
    Promote {
        /// The learner.
        peer: PeerId,
        /// Its instance, as its own messages name it.
        instance: Instance,
    },
}

/// Why a membership change cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChangeError {
    /// A cluster keeps at least one voter.
    #[error("the last voter cannot be removed")]
    LastVoter,
    /// The peer to replace is not a voter.
    #[error("{0} is not a voter")]
    NotVoter(PeerId),
    /// The replacement is a voter already.
    #[error("{0} is a voter already")]
    AlreadyVoter(PeerId),
    /// Only learners are promoted.
    #[error("{0} is not a learner")]
    NotLearner(PeerId),
}

/// A membership change decided at a slot, with the configuration it makes, computed by
/// the leader that proposed it (every member records that configuration as it is, so all
/// agree on it, also a member that never saw the configurations before).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconfiguration {
    /// The change's id: the requester learns the outcome by it, like an entry's.
    pub id: EntryId,
    /// The change asked for.
    pub change: MembershipChange,
    /// The configuration from `alpha` slots on, or why the change was refused.
    pub outcome: Result<Configuration, ChangeError>,
}

/// What a member sends to one whose missing slots it compacted away (the seed's frozen
/// state): the state's image as applied through `slot`, with the configurations in force
/// from `slot + 1` through `slot + alpha` (every change decided at or before `slot`).
/// The state's dedup table is part of its image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotImage {
    /// The slot the state is applied through.
    pub slot: Slot,
    /// The configurations, each with the first slot it is in force for.
    pub configurations: Vec<(Slot, Configuration)>,
    /// The state's image ([`State::freeze`](super::State::freeze)).
    pub state: Vec<u8>,
}

impl SnapshotImage {
    /// Encodes the image.
    pub fn encode(&self) -> Vec<u8> {
        crate::model::encode_value(self).unwrap_or_default()
    }

    /// Decodes an image; `None` for bytes that are not one (trailing bytes included).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        crate::model::decode_value("snapshot image", bytes).ok()
    }

    /// The digest a snapshot transfer names for encoded image `bytes`: their SHA-256.
    pub fn digest(bytes: &[u8]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(bytes).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;

    #[test]
    fn cluster_id_round_trips_through_text() {
        let id = ClusterId([0xab; 16]);
        let text = alloc::format!("{id}");
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<ClusterId>().unwrap(), id);
        assert!("xyz".parse::<ClusterId>().is_err());
        assert!("zz".repeat(16).parse::<ClusterId>().is_err());
    }

    #[test]
    fn quorum_is_a_majority() {
        let c = |n: u64| Configuration::new((0..n).map(PeerId::from_seed));
        assert_eq!(c(1).quorum(), 1);
        assert_eq!(c(3).quorum(), 2);
        assert_eq!(c(4).quorum(), 3);
        assert_eq!(c(5).quorum(), 3);
    }

    #[test]
    fn changes_are_idempotent_and_keep_a_voter() {
        let p = PeerId::from_seed;
        let one = Configuration::new([p(0)]);
        let added = one.changed(&MembershipChange::Add(p(1))).unwrap();
        assert!(added.learners.contains_key(&p(1)) && !added.contains(&p(1)));
        assert_eq!(added.changed(&MembershipChange::Add(p(1))).unwrap(), added);
        let promoted = added
            .changed(&MembershipChange::Promote {
                peer: p(1),
                instance: 9,
            })
            .unwrap();
        assert!(promoted.votes(&p(1), 9) && !promoted.votes(&p(1), 8));
        assert!(
            promoted.votes(&p(0), 5),
            "an unbound voter votes at any instance"
        );
        assert_eq!(
            one.changed(&MembershipChange::Remove(p(0))),
            Err(ChangeError::LastVoter)
        );
        let replacing = promoted
            .changed(&MembershipChange::Replace {
                old: p(0),
                new: p(2),
            })
            .unwrap();
        let replaced = replacing
            .changed(&MembershipChange::Promote {
                peer: p(2),
                instance: 3,
            })
            .unwrap();
        assert_eq!(
            replaced.voters.keys().copied().collect::<Vec<_>>(),
            [p(1), p(2)]
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        // A retried replace after it took effect changes nothing.
        assert_eq!(
            replaced.changed(&MembershipChange::Replace {
                old: p(0),
                new: p(2)
            }),
            Ok(replaced.clone())
        );
    }
}
