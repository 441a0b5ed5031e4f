//! The vocabulary of the replicated log: slots, ballots, entry ids, entries and values.

use alloc::collections::BTreeSet;
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
}

impl Value {
    /// The bytes this value counts against batch and message limits.
    pub fn size(&self) -> usize {
        match self {
            Value::Noop => 8,
            Value::Batch(entries) => 8 + entries.iter().map(Entry::size).sum::<usize>(),
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

/// The voting members of a cluster. Membership is static for a cluster's lifetime today:
/// every member starts with the same list (changes through the log are planned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// The voters.
    pub members: BTreeSet<PeerId>,
}

impl Configuration {
    /// A configuration of `members`.
    pub fn new(members: impl IntoIterator<Item = PeerId>) -> Self {
        Configuration {
            members: members.into_iter().collect(),
        }
    }

    /// How many votes decide: a majority of the members.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// Whether `peer` is a voter.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.members.contains(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
