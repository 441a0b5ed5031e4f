//! Record versions and the one conflict function every write path goes through.
//!
//! A record's version is its envelope's (hybrid logical clock timestamp, origin peer),
//! compared in that order. [`resolve`] decides between the copy a store holds and an
//! incoming one, and every write of a record goes through it: the local put, an inbound
//! PUT_VALUE, replication, republication, caching and read repair. Today it keeps the newer
//! version (last writer wins); merge policies come through the same function.
//!
//! The order is total, so every replica that saw the same copies keeps the same one,
//! whatever order they arrived in:
//! 1. a value that is not a signed (format-2) envelope ranks below any that is;
//! 2. signed envelopes compare by version;
//! 3. equal versions with different bytes (and two unversioned values) compare by the
//!    SHA-256 of their exact bytes; records are stored and forwarded as their original
//!    bytes, never re-encoded, so this digest is the same everywhere.
//!
//! [`rank`] does not check signatures: the node verifies every record that arrives from
//! the network before it reaches a store, and the node's own records are signed by itself.

use core::cmp::Ordering;

use sha2::Digest;

use crate::model::Envelope;
use crate::peer::PeerId;

/// The version of a record: who wrote it, and when on its hybrid logical clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    /// The writer's hybrid logical clock timestamp (microseconds).
    pub timestamp: u64,
    /// The writer.
    pub origin: PeerId,
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.timestamp
            .cmp(&other.timestamp)
            .then_with(|| self.origin.cmp(&other.origin))
    }
}

/// Where a value stands in the order of [`resolve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rank {
    /// The version, for a signed envelope; `None` ranks below every version.
    pub version: Option<Version>,
    /// Whether the value is a tombstone.
    pub tombstone: bool,
    /// SHA-256 of the exact bytes: the tie-break.
    pub digest: [u8; 32],
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        self.version
            .cmp(&other.version)
            .then_with(|| self.digest.cmp(&other.digest))
    }
}

/// The rank of a record value.
pub fn rank(value: &[u8]) -> Rank {
    let (version, tombstone) = match Envelope::version_of(value) {
        Some((v, t)) => (Some(v), t),
        None => (None, false),
    };
    Rank {
        version,
        tombstone,
        digest: sha2::Sha256::digest(value).into(),
    }
}

/// The version of a record value, if it is a signed envelope.
pub fn version_of(value: &[u8]) -> Option<Version> {
    Envelope::version_of(value).map(|(v, _)| v)
}

/// What a store does with an incoming copy of a record it already holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Keep the stored copy (it is the same or newer).
    Keep,
    /// Replace it with the incoming copy (newer).
    Take,
    /// Replace it with these bytes, merged from both (produced by merge policies; last
    /// writer wins, the only policy today, never merges).
    Merged(alloc::vec::Vec<u8>),
}

/// Decides between the stored copy `existing` and an `incoming` one: the winner under the
/// order described in the [module documentation](self). Equal bytes keep the stored copy.
pub fn resolve(existing: &[u8], incoming: &[u8]) -> Resolution {
    if existing == incoming {
        return Resolution::Keep;
    }
    if rank(incoming) > rank(existing) {
        Resolution::Take
    } else {
        Resolution::Keep
    }
}

/// The winner of two copies under [`resolve`] (the first on equal bytes).
pub fn newer<'a>(a: &'a [u8], b: &'a [u8]) -> &'a [u8] {
    match resolve(a, b) {
        Resolution::Take => b,
        _ => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::key::RecordKey;
    use crate::model::SealParts;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn key() -> RecordKey {
        RecordKey::new(b"k").unwrap()
    }

    fn sealed(writer: u64, timestamp: u64, payload: u8, tombstone: bool) -> Vec<u8> {
        let payload = [payload];
        Envelope::seal_parts(
            &key(),
            SealParts {
                model: 0,
                schema_version: 1,
                timestamp,
                tombstone,
                payload: if tombstone { &[] } else { &payload },
            },
            &Keypair::from_seed(writer),
        )
    }

    #[test]
    fn newer_versions_win_and_unversioned_values_lose() {
        let old = sealed(1, 10, 1, false);
        let new = sealed(1, 11, 2, false);
        let tomb = sealed(2, 12, 0, true);
        assert_eq!(resolve(&old, &new), Resolution::Take);
        assert_eq!(resolve(&new, &old), Resolution::Keep);
        assert_eq!(resolve(&new, &new), Resolution::Keep);
        assert_eq!(resolve(&new, &tomb), Resolution::Take);
        assert_eq!(resolve(&tomb, &new), Resolution::Keep);
        assert_eq!(resolve(b"raw", &old), Resolution::Take);
        assert_eq!(resolve(&old, b"raw"), Resolution::Keep);
        assert!(rank(&tomb).tombstone);
    }

    #[test]
    fn equal_timestamps_break_by_origin_then_digest() {
        let a = sealed(1, 10, 1, false);
        let b = sealed(2, 10, 1, false);
        let va = version_of(&a).unwrap();
        let vb = version_of(&b).unwrap();
        let (lo, hi) = if va < vb { (&a, &b) } else { (&b, &a) };
        assert_eq!(resolve(lo, hi), Resolution::Take);
        // Same version, different bytes: the digest decides, the same way both ways.
        let c = sealed(1, 10, 2, false);
        assert_ne!(resolve(&a, &c), resolve(&c, &a));
    }

    fn copy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (0u64..3, 0u64..4, 0u8..3, any::<bool>()).prop_map(|(w, t, p, d)| sealed(w, t, p, d)),
            proptest::collection::vec(any::<u8>(), 0..4),
        ]
    }

    proptest! {
        /// `resolve` picks the maximum of a total order: the merge of two copies is
        /// commutative, associative and idempotent.
        #[test]
        fn resolve_is_a_semilattice(a in copy(), b in copy(), c in copy()) {
            prop_assert_eq!(newer(&a, &b), newer(&b, &a));
            prop_assert_eq!(newer(newer(&a, &b), &c), newer(&a, newer(&b, &c)));
            prop_assert_eq!(newer(&a, &a), &a[..]);
        }

        /// The winning copy does not depend on the order copies arrive in.
        #[test]
        fn the_winner_is_independent_of_delivery_order(
            copies in proptest::collection::vec(copy(), 1..8),
            shuffle in any::<u64>(),
        ) {
            let fold = |order: &[Vec<u8>]| {
                let mut held = order[0].clone();
                for c in &order[1..] {
                    if resolve(&held, c) == Resolution::Take {
                        held = c.clone();
                    }
                }
                held
            };
            let mut shuffled = copies.clone();
            let mut s = shuffle;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(fold(&copies), fold(&shuffled));
        }
    }
}
