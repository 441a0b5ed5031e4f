//! Ed25519 identities: the key a node signs its records with, and the check of a record's
//! signature against the peer id that claims to have written it.
//!
//! A libp2p peer id of an Ed25519 key is the identity multihash of the key's protobuf
//! encoding, so the public key can be read back from the id itself: verifying a record
//! needs nothing but the record. Ids of other key types (SHA-256 multihashes of RSA or
//! secp256k1 keys) cannot be verified this way; records claiming such an origin are
//! refused. Signatures are checked with `verify_strict`, which refuses non-canonical
//! encodings, so nobody but the key holder can produce a second valid byte string for
//! the same signed content.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::peer::PeerId;

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The protobuf head of a libp2p `PublicKey { Type: Ed25519, Data: <32 bytes> }`.
const PROTOBUF_HEAD: [u8; 4] = [0x08, 0x01, 0x12, 0x20];

/// A node's signing identity: an Ed25519 key pair and the peer id it gives.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
    peer: PeerId,
}

impl core::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keypair")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The peer id does not embed an Ed25519 public key.
    #[error("the origin's peer id does not embed an Ed25519 public key")]
    NotEd25519,
    /// The embedded key is not a valid curve point.
    #[error("the origin's public key is malformed")]
    BadKey,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    Invalid,
}

impl Keypair {
    /// The key pair of a 32-byte Ed25519 secret key (libp2p's
    /// `ed25519::SecretKey`/`Keypair::to_bytes()[..32]`).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&secret);
        let peer = PeerId::from_ed25519_public(signing.verifying_key().as_bytes());
        Keypair { signing, peer }
    }

    /// A deterministic key pair derived from a number (the secret is the SHA-256 of its
    /// big-endian bytes). For simulations and tests only: anyone can derive it.
    pub fn from_seed(seed: u64) -> Self {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"netabase/keypair-from-seed");
        hasher.update(seed.to_be_bytes());
        Self::from_secret(hasher.finalize().into())
    }

    /// The peer id of this key.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The 32-byte public key.
    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }
}

impl PeerId {
    /// The peer id of an Ed25519 public key: the identity multihash of its libp2p protobuf
    /// encoding (38 bytes), as libp2p computes it.
    pub fn from_ed25519_public(public: &[u8; 32]) -> Self {
        let mut bytes = [0u8; 38];
        bytes[0] = 0x00; // identity multihash
        bytes[1] = 36; // digest length
        bytes[2..6].copy_from_slice(&PROTOBUF_HEAD);
        bytes[6..].copy_from_slice(public);
        PeerId::from_bytes(&bytes).expect("an identity multihash of 36 bytes is a valid id")
    }

    /// The Ed25519 public key this id embeds, if it is the identity multihash of one.
    pub fn ed25519_public(&self) -> Option<[u8; 32]> {
        let bytes = self.as_bytes();
        if bytes.len() != 38 || bytes[0] != 0x00 || bytes[1] != 36 || bytes[2..6] != PROTOBUF_HEAD {
            return None;
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes[6..]);
        Some(out)
    }
}

/// Checks that `signature` over `message` was made by the key `origin` embeds.
pub fn verify(
    origin: &PeerId,
    message: &[u8],
    signature: &[u8; SIGNATURE_LEN],
) -> Result<(), SignatureError> {
    let public = origin.ed25519_public().ok_or(SignatureError::NotEd25519)?;
    let key = VerifyingKey::from_bytes(&public).map_err(|_| SignatureError::BadKey)?;
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(message, &signature)
        .map_err(|_| SignatureError::Invalid)
}

/// The decompressed public keys of the origins a node met last, so that checking another
/// record of the same origin skips decompressing its key. Bounded (oldest out first) and
/// deterministic.
#[derive(Debug, Clone)]
pub struct KeyCache {
    keys: alloc::collections::BTreeMap<PeerId, VerifyingKey>,
    order: alloc::collections::VecDeque<PeerId>,
    capacity: usize,
    verified: u64,
}

impl KeyCache {
    /// A cache of at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        KeyCache {
            keys: alloc::collections::BTreeMap::new(),
            order: alloc::collections::VecDeque::new(),
            capacity,
            verified: 0,
        }
    }

    /// [`verify`], with the origin's key taken from the cache when it is there.
    pub fn verify(
        &mut self,
        origin: &PeerId,
        message: &[u8],
        signature: &[u8; SIGNATURE_LEN],
    ) -> Result<(), SignatureError> {
        let key = match self.keys.get(origin) {
            Some(key) => *key,
            None => {
                let public = origin.ed25519_public().ok_or(SignatureError::NotEd25519)?;
                let key = VerifyingKey::from_bytes(&public).map_err(|_| SignatureError::BadKey)?;
                if self.capacity > 0 {
                    if self.keys.len() >= self.capacity
                        && let Some(oldest) = self.order.pop_front()
                    {
                        self.keys.remove(&oldest);
                    }
                    self.keys.insert(*origin, key);
                    self.order.push_back(*origin);
                }
                key
            }
        };
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.verified += 1;
        key.verify_strict(message, &signature)
            .map_err(|_| SignatureError::Invalid)
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Signatures verified (each one Ed25519 verification), valid or not.
    pub fn verified(&self) -> u64 {
        self.verified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_key_and_message() {
        let a = Keypair::from_seed(1);
        let b = Keypair::from_seed(2);
        let sig = a.sign(b"hello");
        assert_eq!(verify(&a.peer_id(), b"hello", &sig), Ok(()));
        assert_eq!(
            verify(&a.peer_id(), b"hellO", &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(&b.peer_id(), b"hello", &sig),
            Err(SignatureError::Invalid)
        );
        let mut bad = sig;
        bad[10] ^= 1;
        assert_eq!(
            verify(&a.peer_id(), b"hello", &bad),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(&PeerId::from_seed(3), b"hello", &sig),
            Err(SignatureError::NotEd25519)
        );
    }

    #[test]
    fn the_key_cache_verifies_alike_and_stays_bounded() {
        let mut cache = KeyCache::new(2);
        let keys: alloc::vec::Vec<Keypair> = (0..3).map(Keypair::from_seed).collect();
        for kp in keys.iter().chain(keys.iter()) {
            let sig = kp.sign(b"m");
            assert_eq!(cache.verify(&kp.peer_id(), b"m", &sig), Ok(()));
            assert_eq!(
                cache.verify(&kp.peer_id(), b"x", &sig),
                Err(SignatureError::Invalid)
            );
            assert!(cache.len() <= 2);
        }
        assert_eq!(cache.verified(), 12);
        assert_eq!(
            cache.verify(&PeerId::from_seed(1), b"m", &[0; 64]),
            Err(SignatureError::NotEd25519)
        );
    }

    #[test]
    fn ids_embed_their_public_key() {
        let a = Keypair::from_seed(7);
        assert_eq!(a.peer_id().ed25519_public(), Some(a.public()));
        assert_eq!(a.peer_id().as_bytes().len(), 38);
        assert_eq!(PeerId::from_seed(7).ed25519_public(), None);
    }
}
