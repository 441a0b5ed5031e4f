//! The paxakos engine's messages on the wire: one request and its answer per exchange.
//!
//! The protocol is [`PAXAKOS_PROTOCOL`], not the product description's `/paxos/1.0.0`,
//! which the core engine speaks: the two engines' messages differ, and a node must never
//! hand one engine's message to the other. Requests and answers are bincode 2 with a
//! version byte in front, at most [`MAX_MESSAGE_BYTES`] each (the core engine's limit);
//! anything else decodes to a typed [`WireError`], never a panic.

use std::time::Duration;

use netabase_core::consensus::EntryId;
use serde::{Deserialize, Serialize};

use crate::{KvSnapshot, PaxakosEntry};

/// The libp2p protocol the paxakos engine's messages travel on.
pub const PAXAKOS_PROTOCOL: &str = "/netabase/paxakos/1.0.0";

/// The largest request or answer, encoded (the core engine's limit).
pub const MAX_MESSAGE_BYTES: usize = netabase_core::consensus::MAX_MESSAGE_BYTES;

/// The format version, the first byte of every message.
const VERSION: u8 = 1;

/// A paxakos request from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Phase 1: asks for a promise for `round` and the rounds after it.
    Prepare {
        /// The round.
        round: u64,
        /// The coordination number.
        coord: u32,
    },
    /// Phase 2: asks to accept `entry` at `round`.
    Proposal {
        /// The round.
        round: u64,
        /// The coordination number.
        coord: u32,
        /// The proposed entry.
        entry: PaxakosEntry,
    },
    /// `entry` was chosen at `round`.
    Commit {
        /// The round.
        round: u64,
        /// The coordination number.
        coord: u32,
        /// The chosen entry.
        entry: PaxakosEntry,
    },
    /// The entry with id `id`, which the receiver accepted, was chosen at `round`.
    CommitById {
        /// The round.
        round: u64,
        /// The coordination number.
        coord: u32,
        /// The chosen entry's id.
        id: EntryId,
    },
    /// Asks for a snapshot of the receiver's state (a node that restarted without its
    /// state installs one before it can take part again).
    Snapshot,
    /// Asks the receiver (the leader, as the sender believes) to append `entry` and
    /// answer once it is applied there: a follower's write goes to the leader instead of
    /// contending for leadership.
    Append(PaxakosEntry),
}

/// A round the receiver had already accepted an entry in, reported with its promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The round.
    pub round: u64,
    /// The coordination number the entry was accepted under.
    pub coord: u32,
    /// The entry.
    pub entry: PaxakosEntry,
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The promise asked for, with the entries accepted in the rounds it covers.
    Promise(Vec<Accepted>),
    /// Another coordinator was promised a higher coordination number.
    Supplanted {
        /// That coordination number.
        coord: u32,
    },
    /// The round is settled already.
    Converged {
        /// The highest coordination number the receiver saw.
        coord: u32,
        /// The coordination number and entry it settled with, if the receiver still
        /// holds them.
        entry: Option<(u32, PaxakosEntry)>,
    },
    /// The proposal was accepted, granting the proposer a master lease of `lease` (zero:
    /// none).
    Accepted {
        /// The lease granted.
        lease: Duration,
    },
    /// The receiver abstains from promising: it granted another leader a master lease
    /// that lasts `bound_for` longer.
    Abstained {
        /// How long the lease it granted lasts.
        bound_for: Duration,
    },
    /// A snapshot of the receiver's state, as [`encode_snapshot`] gives it.
    Snapshot(Vec<u8>),
    /// The entry forwarded by [`Request::Append`] was applied.
    Appended {
        /// The round it was applied in.
        round: u64,
        /// Its encoded [`KvResponse`](netabase_core::consensus::KvResponse).
        response: Vec<u8>,
        /// Whether it was applied before (answered from the dedup table).
        duplicate: bool,
    },
    /// The commit was applied (or will be, in round order).
    Committed,
    /// The receiver cannot answer now.
    Unavailable(Unavailable),
}

/// Why a node could not answer a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Unavailable {
    /// It is passive: recovering, it takes no part until the rounds it may have voted in
    /// are settled.
    #[error("the node is passive")]
    Passive,
    /// It is shutting down.
    #[error("the node is shutting down")]
    ShutDown,
    /// It does not know where the log stands (it must catch up first).
    #[error("the node is disoriented")]
    Disoriented,
    /// A commit by id named an entry it never accepted in that round.
    #[error("the node holds no entry with that id for that round")]
    UnknownEntry,
    /// The snapshot asked for exceeds the message size limit.
    #[error("the snapshot exceeds the message size limit")]
    TooLarge,
    /// The forwarded entry could not be appended here (no quorum, leadership lost).
    #[error("the entry could not be appended")]
    NotAppended,
}

/// Why bytes are not a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Longer than [`MAX_MESSAGE_BYTES`].
    #[error("a message of {0} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// Empty, or of a format version this node does not know.
    #[error("unknown message format version {0:?}")]
    Version(Option<u8>),
    /// Not a message of this format (or bytes left over after one).
    #[error("malformed message: {0}")]
    Malformed(String),
}

fn config() -> impl bincode::config::Config {
    netabase_core::model::bincode_config().with_limit::<MAX_MESSAGE_BYTES>()
}

fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let body = bincode::serde::encode_to_vec(message, config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(VERSION);
    out.extend(body);
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(out.len()));
    }
    Ok(out)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    match bytes.first() {
        Some(&VERSION) => {}
        other => return Err(WireError::Version(other.copied())),
    }
    let (message, read) = bincode::serde::decode_from_slice(&bytes[1..], config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if read != bytes.len() - 1 {
        return Err(WireError::Malformed(format!(
            "{} bytes after the message",
            bytes.len() - 1 - read
        )));
    }
    Ok(message)
}

/// A snapshot's bytes (too large if the state's are).
pub fn encode_snapshot(snapshot: &KvSnapshot) -> Result<Vec<u8>, WireError> {
    encode(snapshot)
}

/// The snapshot in `bytes`.
pub fn decode_snapshot(bytes: &[u8]) -> Result<KvSnapshot, WireError> {
    decode(bytes)
}

impl Request {
    /// The request's bytes (too large only if its entry is).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode(self)
    }

    /// The request in `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode(bytes)
    }
}

impl Response {
    /// The answer's bytes (too large only if an entry it carries is).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode(self)
    }

    /// The answer in `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use netabase_core::PeerId;
    use netabase_core::consensus::Entry;
    use proptest::prelude::*;

    use super::*;

    fn entry() -> impl Strategy<Value = PaxakosEntry> {
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(proposer, seq, command)| {
                PaxakosEntry(Entry {
                    id: EntryId {
                        proposer: PeerId::from_seed(proposer),
                        seq,
                    },
                    command,
                })
            })
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u64>(), any::<u32>())
                .prop_map(|(round, coord)| Request::Prepare { round, coord }),
            (any::<u64>(), any::<u32>(), entry()).prop_map(|(round, coord, entry)| {
                Request::Proposal {
                    round,
                    coord,
                    entry,
                }
            }),
            (any::<u64>(), any::<u32>(), entry()).prop_map(|(round, coord, entry)| {
                Request::Commit {
                    round,
                    coord,
                    entry,
                }
            }),
            (any::<u64>(), any::<u32>(), entry()).prop_map(|(round, coord, e)| {
                Request::CommitById {
                    round,
                    coord,
                    id: e.0.id,
                }
            }),
            Just(Request::Snapshot),
            entry().prop_map(Request::Append),
        ]
    }

    fn response() -> impl Strategy<Value = Response> {
        let unavailable = prop_oneof![
            Just(Unavailable::Passive),
            Just(Unavailable::ShutDown),
            Just(Unavailable::Disoriented),
            Just(Unavailable::UnknownEntry),
            Just(Unavailable::TooLarge),
            Just(Unavailable::NotAppended),
        ];
        prop_oneof![
            prop::collection::vec(
                (any::<u64>(), any::<u32>(), entry()).prop_map(|(round, coord, entry)| Accepted {
                    round,
                    coord,
                    entry
                }),
                0..4
            )
            .prop_map(Response::Promise),
            any::<u32>().prop_map(|coord| Response::Supplanted { coord }),
            (any::<u32>(), prop::option::of((any::<u32>(), entry())))
                .prop_map(|(coord, entry)| Response::Converged { coord, entry }),
            any::<u64>().prop_map(|n| Response::Accepted {
                lease: Duration::from_nanos(n)
            }),
            any::<u64>().prop_map(|n| Response::Abstained {
                bound_for: Duration::from_nanos(n)
            }),
            prop::collection::vec(any::<u8>(), 0..64).prop_map(Response::Snapshot),
            (
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..16),
                any::<bool>()
            )
                .prop_map(|(round, response, duplicate)| Response::Appended {
                    round,
                    response,
                    duplicate
                }),
            Just(Response::Committed),
            unavailable.prop_map(Response::Unavailable),
        ]
    }

    proptest! {
        #[test]
        fn requests_and_answers_round_trip(req in request(), resp in response()) {
            prop_assert_eq!(Request::decode(&req.encode().unwrap()).unwrap(), req);
            prop_assert_eq!(Response::decode(&resp.encode().unwrap()).unwrap(), resp);
        }

        #[test]
        fn any_bytes_decode_to_a_message_or_a_typed_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            // Never a panic, and what decodes is a message that encodes again.
            if let Ok(req) = Request::decode(&bytes) {
                prop_assert!(req.encode().is_ok());
            }
            if let Ok(resp) = Response::decode(&bytes) {
                prop_assert!(resp.encode().is_ok());
            }
        }

        #[test]
        fn a_cut_message_is_refused(req in request(), cut in any::<prop::sample::Index>()) {
            let bytes = req.encode().unwrap();
            let cut = cut.index(bytes.len());
            prop_assert!(Request::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn bad_versions_trailing_bytes_and_oversized_messages_get_typed_errors() {
        let bytes = Request::Prepare { round: 1, coord: 2 }.encode().unwrap();
        assert_eq!(Request::decode(&[]), Err(WireError::Version(None)));
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(Request::decode(&other), Err(WireError::Version(Some(2))));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Request::decode(&longer),
            Err(WireError::Malformed(_))
        ));
        let huge = vec![VERSION; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            Request::decode(&huge),
            Err(WireError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
        let big = Request::Commit {
            round: 1,
            coord: 1,
            entry: PaxakosEntry(Entry {
                id: EntryId {
                    proposer: PeerId::from_seed(1),
                    seq: 1,
                },
                command: vec![0; MAX_MESSAGE_BYTES],
            }),
        };
        assert!(
            big.encode().is_err(),
            "a message over the limit is not sent"
        );
    }
}
