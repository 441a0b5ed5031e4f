//! The messages members exchange over `/paxos/1.0.0`, and their bounded codec.
//!
//! Every message travels in an [`Envelope`] that names the cluster; the transport
//! authenticates the sender (libp2p's Noise handshake binds the connection to a
//! `PeerId`), so the envelope does not repeat it. The encoding is a format byte
//! ([`WIRE_FORMAT`]) followed by bincode 2 (serde, standard configuration) with a decoding
//! limit, so hostile bytes fail with a typed [`WireError`] and never allocate more than
//! the limit. New message kinds are appended to [`Message`], so a member decodes every
//! message an older member of the same format sends; a kind it does not know is
//! [`WireError::Malformed`].

use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::types::{Ballot, ClusterId, Entry, EntryId, Instance, MembershipChange, Slot, Value};

/// The largest encoded message a member sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The format byte of the current encoding.
pub const WIRE_FORMAT: u8 = 2;

/// One accepted value reported in a promise or sent in catch-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotValue {
    /// The slot.
    pub slot: Slot,
    /// The ballot the value was accepted in.
    pub ballot: Ballot,
    /// The value.
    pub value: Value,
    /// Whether the sender knows this value is chosen.
    pub chosen: bool,
}

/// A piece of a snapshot: of the encoded [`SnapshotImage`](super::SnapshotImage) of the
/// state applied through `slot`, `total` bytes with SHA-256 `digest`, the bytes `chunk`
/// from `offset` on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The slot the snapshot is applied through.
    pub slot: Slot,
    /// The image's length.
    pub total: u64,
    /// The SHA-256 of the whole image.
    pub digest: [u8; 32],
    /// Where `chunk` starts in the image.
    pub offset: u64,
    /// The bytes.
    pub chunk: Vec<u8>,
}

/// A consensus message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a: a candidate asks for promises on every slot from `from`.
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// The first slot the promise covers (and whose accepted values it reports).
        from: Slot,
    },
    /// Phase 1b: the acceptor promised `ballot` and reports what it accepted from the
    /// prepare's `from`, in chunks: `next` names the slot the following chunk starts at.
    Promise {
        /// The promised ballot.
        ballot: Ballot,
        /// Accepted values in this chunk, by slot.
        accepted: Vec<SlotValue>,
        /// More accepted values follow from this slot (the candidate asks again).
        next: Option<Slot>,
        /// The acceptor's log is empty at or below this slot because it was compacted
        /// into its state (every such slot is chosen and applied there).
        truncated: Slot,
    },
    /// The acceptor refused: it promised `promised`, or it follows a live leader.
    Nack {
        /// The ballot refused.
        ballot: Ballot,
        /// The acceptor's promise.
        promised: Option<Ballot>,
        /// The acceptor hears a live leader and keeps following it (leader stickiness).
        leader_alive: bool,
    },
    /// Phase 2a: accept `value` at `slot` in `ballot`.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
        /// The value.
        value: Value,
        /// Every slot up to here is chosen (the leader's commit index).
        committed: Slot,
    },
    /// Phase 2b: the acceptor durably accepted `slot` in `ballot`.
    Accepted {
        /// The ballot.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
    },
    /// The value accepted at `slot` in `ballot` is chosen (commit by id: the value itself
    /// is not repeated).
    Commit {
        /// The ballot of the chosen value.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
    },
    /// The leader is alive; `seq` numbers the round for read-index and lease confirmation.
    Heartbeat {
        /// The leader's ballot.
        ballot: Ballot,
        /// Every slot up to here is chosen.
        committed: Slot,
        /// The round's number.
        seq: u64,
    },
    /// Answer to a heartbeat in the acceptor's current ballot.
    HeartbeatAck {
        /// The ballot acknowledged.
        ballot: Ballot,
        /// The round acknowledged.
        seq: u64,
        /// Every slot up to here is chosen at the acceptor (the leader promotes a learner
        /// once it has caught up).
        committed: Slot,
    },
    /// A member asks for the chosen values from `from`.
    CatchUp {
        /// The first slot wanted.
        from: Slot,
    },
    /// Chosen values, in slot order.
    Entries {
        /// The values.
        entries: Vec<SlotValue>,
    },
    /// A member that is not the leader hands client entries to the leader.
    Forward {
        /// The entries, ids kept.
        entries: Vec<Entry>,
    },
    /// A member asks the leader for a read index.
    ReadIndex {
        /// The asker's request number.
        request: u64,
        /// Whether a lease answer is enough.
        lease: bool,
    },
    /// The leader's answer: reads at or after `index` are linearizable; `None` means the
    /// asked member cannot answer as leader now.
    ReadIndexReply {
        /// The asker's request number.
        request: u64,
        /// The read index.
        index: Option<Slot>,
    },
    /// The leader of `ballot` gave up leading (leader transfer): its followers stop
    /// refusing other candidates on its account. It dropped its lease before sending.
    Relinquish {
        /// The ballot given up.
        ballot: Ballot,
    },
    /// The leader of `ballot` hands leadership to the receiver, which starts an election
    /// at once.
    TimeoutNow {
        /// The ballot handing over.
        ballot: Ballot,
    },
    /// A member hands a membership change to the leader.
    ChangeMembership {
        /// The change's id (its requester and sequence number).
        id: EntryId,
        /// The change.
        change: alloc::boxed::Box<MembershipChange>,
    },
    /// A piece of a snapshot, the answer to a catch-up from a slot the sender compacted
    /// away.
    Snapshot(SnapshotChunk),
    /// The receiver of a snapshot asks for its bytes from `offset` on (a transfer resumes
    /// where it stopped). A sender that holds no snapshot with this slot and digest sends
    /// its own from the start.
    SnapshotNext {
        /// The snapshot's slot.
        slot: Slot,
        /// The snapshot's digest.
        digest: [u8; 32],
        /// The first byte wanted.
        offset: u64,
    },
}

impl Message {
    /// A short name, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Prepare { .. } => "prepare",
            Message::Promise { .. } => "promise",
            Message::Nack { .. } => "nack",
            Message::Accept { .. } => "accept",
            Message::Accepted { .. } => "accepted",
            Message::Commit { .. } => "commit",
            Message::Heartbeat { .. } => "heartbeat",
            Message::HeartbeatAck { .. } => "heartbeat_ack",
            Message::CatchUp { .. } => "catch_up",
            Message::Entries { .. } => "entries",
            Message::Forward { .. } => "forward",
            Message::ReadIndex { .. } => "read_index",
            Message::ReadIndexReply { .. } => "read_index_reply",
            Message::Relinquish { .. } => "relinquish",
            Message::TimeoutNow { .. } => "timeout_now",
            Message::ChangeMembership { .. } => "change_membership",
            Message::Snapshot(_) => "snapshot",
            Message::SnapshotNext { .. } => "snapshot_next",
        }
    }
}

/// A message with the cluster it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The cluster.
    pub cluster: ClusterId,
    /// The sender's instance (see [`Instance`]): votes count only from the instance a
    /// configuration binds.
    pub instance: Instance,
    /// The message.
    pub message: Message,
}

/// Why bytes are not a consensus message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// No bytes at all.
    #[error("empty consensus message")]
    Empty,
    /// A format this build does not know.
    #[error("unknown consensus message format {0}")]
    UnknownFormat(u8),
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("consensus message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The bytes do not decode.
    #[error("malformed consensus message: {0}")]
    Malformed(alloc::string::String),
    /// The message cannot be encoded.
    #[error("cannot encode consensus message: {0}")]
    Encode(alloc::string::String),
}

impl Envelope {
    /// Encodes the envelope; fails if it would exceed [`MAX_MESSAGE_BYTES`].
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = alloc::vec![WIRE_FORMAT];
        let body = bincode::serde::encode_to_vec(self, crate::model::bincode_config())
            .map_err(|e| WireError::Encode(alloc::format!("{e}")))?;
        out.extend_from_slice(&body);
        if out.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// Decodes an envelope; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let (&format, body) = bytes.split_first().ok_or(WireError::Empty)?;
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge(bytes.len()));
        }
        if format != WIRE_FORMAT {
            return Err(WireError::UnknownFormat(format));
        }
        let (envelope, read) = crate::model::decode_limited::<Envelope>(body)
            .map_err(|e| WireError::Malformed(alloc::format!("{e}")))?;
        if read != body.len() {
            return Err(WireError::Malformed(alloc::format!(
                "{} trailing bytes",
                body.len() - read
            )));
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeerId;

    fn sample() -> Envelope {
        let ballot = Ballot {
            round: 7,
            leader: PeerId::from_seed(3),
        };
        Envelope {
            cluster: ClusterId([9; 16]),
            instance: 42,
            message: Message::Accept {
                ballot,
                slot: 12,
                value: Value::Batch(alloc::vec![Entry {
                    id: EntryId {
                        proposer: PeerId::from_seed(1),
                        seq: 5,
                    },
                    command: b"put".to_vec(),
                }]),
                committed: 11,
            },
        }
    }

    #[test]
    fn round_trip() {
        let e = sample();
        let bytes = e.encode().unwrap();
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn hostile_bytes_are_typed_errors() {
        assert_eq!(Envelope::decode(&[]), Err(WireError::Empty));
        assert_eq!(Envelope::decode(&[1, 0]), Err(WireError::UnknownFormat(1)));
        let mut bytes = sample().encode().unwrap();
        bytes.push(0);
        assert!(matches!(
            Envelope::decode(&bytes),
            Err(WireError::Malformed(_))
        ));
        // Every truncation fails cleanly.
        let bytes = sample().encode().unwrap();
        for n in 1..bytes.len() {
            assert!(Envelope::decode(&bytes[..n]).is_err());
        }
        // A length prefix claiming a huge vector does not allocate it.
        let mut huge = alloc::vec![WIRE_FORMAT];
        huge.extend_from_slice(&[9; 16]);
        huge.extend_from_slice(&[13, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(Envelope::decode(&huge).is_err());
    }
}
