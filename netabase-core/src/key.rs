//! The 256-bit Kademlia key space: keys, XOR distance and record keys.

use alloc::sync::Arc;
use core::fmt;

use sha2::{Digest, Sha256};

use crate::peer::PeerId;

/// Longest record key accepted, in bytes.
pub const MAX_RECORD_KEY_LEN: usize = 1024;

/// A point in the 256-bit key space: the SHA-256 hash of a peer id or record key.
///
/// Held as four big-endian 64-bit words, so that XOR and comparison are word operations.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key([u64; 4]);

/// Only the first word is hashed: a key is a SHA-256 digest, so that word is already
/// uniform, and the sets of keys on hot paths (a node's connected peers, the peers a
/// lookup asked) are probed for nearly every message. Equal keys still hash equally.
impl core::hash::Hash for Key {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
    }
}

fn words(bytes: &[u8; 32]) -> [u64; 4] {
    let mut w = [0u64; 4];
    for (i, word) in w.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        *word = u64::from_be_bytes(b);
    }
    w
}

fn bytes(words: &[u64; 4]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, w) in words.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&w.to_be_bytes());
    }
    out
}

impl Key {
    /// The first 64 bits: a cheap tag that tells most keys apart.
    pub(crate) fn tag(&self) -> u64 {
        self.0[0]
    }

    /// The key of arbitrary preimage bytes (SHA-256).
    pub fn hash(preimage: &[u8]) -> Self {
        Key(words(&Sha256::digest(preimage).into()))
    }

    /// The key of a peer: SHA-256 of its multihash bytes, as libp2p computes it. Computed
    /// once when the peer id is made, so this is a copy.
    pub fn from_peer(peer: &PeerId) -> Self {
        *peer.kad_key()
    }

    /// A key given directly by its 32 bytes (no hashing).
    pub fn from_raw(raw: [u8; 32]) -> Self {
        Key(words(&raw))
    }

    /// The 32 bytes of the key.
    pub fn to_bytes(&self) -> [u8; 32] {
        bytes(&self.0)
    }

    /// XOR distance to another key.
    pub fn distance(&self, other: &Key) -> Distance {
        Distance([
            self.0[0] ^ other.0[0],
            self.0[1] ^ other.0[1],
            self.0[2] ^ other.0[2],
            self.0[3] ^ other.0[3],
        ])
    }

    /// A key at a distance from `self` whose bucket index is `bucket`, with the lower bits
    /// taken from `random`. Used to refresh a bucket with a lookup that lands in it.
    pub fn in_bucket(&self, bucket: u8, random: [u8; 32]) -> Key {
        let mut d = words(&random);
        // Distance with its highest set bit at `bucket` (counted from the least significant
        // bit), lower bits random.
        let word = 3 - usize::from(bucket) / 64;
        let bit = u32::from(bucket) % 64;
        for w in d.iter_mut().take(word) {
            *w = 0;
        }
        let mask = if bit == 63 {
            u64::MAX
        } else {
            (1u64 << (bit + 1)) - 1
        };
        d[word] = (d[word] & mask) | (1u64 << bit);
        Key([
            self.0[0] ^ d[0],
            self.0[1] ^ d[1],
            self.0[2] ^ d[2],
            self.0[3] ^ d[3],
        ])
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:012x}..)", self.0[0] >> 16)
    }
}

/// The XOR distance between two keys, ordered as a 256-bit big-endian number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Distance([u64; 4]);

impl Distance {
    /// The zero distance (a key to itself).
    pub const ZERO: Distance = Distance([0; 4]);

    /// The k-bucket this distance falls into: the index of its highest set bit (0..=255),
    /// or `None` for the zero distance.
    pub fn bucket_index(&self) -> Option<u8> {
        for (i, w) in self.0.iter().enumerate() {
            if *w != 0 {
                let bit = 63 - w.leading_zeros() as usize;
                return Some(((3 - i) * 64 + bit) as u8);
            }
        }
        None
    }

    /// Whether bit `i` (0 = least significant) is set.
    pub fn bit(&self, i: u8) -> bool {
        let word = 3 - usize::from(i) / 64;
        (self.0[word] >> (u32::from(i) % 64)) & 1 == 1
    }

    /// The 32 bytes of the distance, most significant first.
    pub fn to_bytes(&self) -> [u8; 32] {
        bytes(&self.0)
    }
}

impl fmt::Debug for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bucket_index() {
            Some(i) => write!(f, "Distance(~2^{i})"),
            None => write!(f, "Distance(0)"),
        }
    }
}

/// The key of a record or provider record: opaque bytes, at most [`MAX_RECORD_KEY_LEN`].
///
/// Its position in the key space is [`RecordKey::key`], the SHA-256 of the bytes. Cloning is
/// cheap (shared bytes).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey(Arc<[u8]>);

/// Why bytes are not accepted as a record key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordKeyError {
    /// Longer than [`MAX_RECORD_KEY_LEN`].
    #[error("record key of {0} bytes exceeds the limit of {MAX_RECORD_KEY_LEN}")]
    TooLong(usize),
}

impl RecordKey {
    /// A record key from bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, RecordKeyError> {
        if bytes.len() > MAX_RECORD_KEY_LEN {
            return Err(RecordKeyError::TooLong(bytes.len()));
        }
        Ok(RecordKey(Arc::from(bytes)))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The position of this record in the key space.
    pub fn key(&self) -> Key {
        Key::hash(&self.0)
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match core::str::from_utf8(&self.0) {
            Ok(s) if s.len() <= 48 => write!(f, "RecordKey({s:?})"),
            _ => {
                write!(f, "RecordKey(")?;
                for b in self.0.iter().take(12) {
                    write!(f, "{b:02x}")?;
                }
                write!(f, "..{}B)", self.0.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_index_is_highest_set_bit() {
        let a = Key::from_raw([0; 32]);
        let mut b = [0u8; 32];
        b[31] = 1;
        assert_eq!(a.distance(&Key::from_raw(b)).bucket_index(), Some(0));
        b[0] = 0x80;
        assert_eq!(a.distance(&Key::from_raw(b)).bucket_index(), Some(255));
        assert_eq!(a.distance(&a).bucket_index(), None);
    }

    #[test]
    fn in_bucket_lands_in_the_bucket() {
        let k = Key::hash(b"local");
        for bucket in 0..=255u8 {
            let r = Key::hash(&[bucket]);
            let target = k.in_bucket(bucket, r.to_bytes());
            assert_eq!(k.distance(&target).bucket_index(), Some(bucket));
        }
    }
}
