//! Peer identities and addresses, as the wire carries them.

use alloc::sync::Arc;
use core::fmt;

use crate::key::Key;

/// Longest encoded peer id accepted, in bytes.
///
/// libp2p peer ids are multihashes: the identity hash of a public key of at most 42 bytes
/// (38 bytes in all for Ed25519), or the SHA-256 hash of a larger key (34 bytes); so no
/// valid id is longer than 44 bytes.
pub const MAX_PEER_ID_LEN: usize = 44;

/// Longest encoded multiaddr accepted, in bytes.
pub const MAX_ADDRESS_LEN: usize = 1024;

/// The identity of a peer: the multihash bytes of a libp2p `PeerId`.
///
/// The core keeps the encoded form (what the Kademlia wire format carries) so that it stays
/// free of key-handling crates; the adapters convert losslessly with libp2p's
/// `PeerId::to_bytes` and `PeerId::from_bytes`. It is `Copy` and ordered, so it can key
/// deterministic maps. `Display` prints base58btc, as libp2p does.
///
/// Its Kademlia key (SHA-256 of the bytes) is computed once when the id is made, since
/// lookups compare distances to peers far more often than they parse them.
///
/// Equality, order and hashing look at the key first: two different ids almost always
/// differ in its first word, so comparisons stay cheap. The order is therefore the order of
/// the keys, a fixed total order.
#[derive(Clone, Copy)]
pub struct PeerId {
    len: u8,
    bytes: [u8; MAX_PEER_ID_LEN],
    key: Key,
}

impl PartialEq for PeerId {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.as_bytes() == other.as_bytes()
    }
}

impl Eq for PeerId {}

impl PartialOrd for PeerId {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PeerId {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.key
            .cmp(&other.key)
            .then_with(|| self.as_bytes().cmp(other.as_bytes()))
    }
}

impl core::hash::Hash for PeerId {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// Why bytes are not a valid peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdError {
    /// Empty or longer than [`MAX_PEER_ID_LEN`].
    #[error("peer id length {0} is outside 1..={MAX_PEER_ID_LEN}")]
    Length(usize),
    /// Not a multihash: bad varint header, or the digest length disagrees with the header.
    #[error("peer id is not a well-formed multihash")]
    Multihash,
    /// A multihash with a hash function libp2p does not use for peer ids.
    #[error("peer id uses multihash code {0:#x}; expected identity (0x00) or sha2-256 (0x12)")]
    HashCode(u64),
}

/// Reads an unsigned LEB128 varint of at most 9 bytes (the multiformats limit).
fn read_uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().enumerate().take(9) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

impl PeerId {
    /// Parses the multihash bytes of a peer id, as found on the wire.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PeerIdError> {
        if bytes.is_empty() || bytes.len() > MAX_PEER_ID_LEN {
            return Err(PeerIdError::Length(bytes.len()));
        }
        let (code, a) = read_uvarint(bytes).ok_or(PeerIdError::Multihash)?;
        let (len, b) = read_uvarint(&bytes[a..]).ok_or(PeerIdError::Multihash)?;
        if len != (bytes.len() - a - b) as u64 {
            return Err(PeerIdError::Multihash);
        }
        match code {
            0x00 => {}
            0x12 if len == 32 => {}
            0x12 => return Err(PeerIdError::Multihash),
            other => return Err(PeerIdError::HashCode(other)),
        }
        let mut out = [0u8; MAX_PEER_ID_LEN];
        out[..bytes.len()].copy_from_slice(bytes);
        Ok(PeerId {
            len: bytes.len() as u8,
            bytes: out,
            key: Key::hash(bytes),
        })
    }

    /// A peer id that is the SHA-256 multihash with the given digest.
    ///
    /// Useful for simulations and tests, which need many distinct, valid ids without keys.
    pub fn from_sha256_digest(digest: [u8; 32]) -> Self {
        let mut bytes = [0u8; MAX_PEER_ID_LEN];
        bytes[0] = 0x12;
        bytes[1] = 32;
        bytes[2..34].copy_from_slice(&digest);
        PeerId {
            len: 34,
            bytes,
            key: Key::hash(&bytes[..34]),
        }
    }

    /// A deterministic peer id derived from a number (SHA-256 of its big-endian bytes).
    pub fn from_seed(seed: u64) -> Self {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(seed.to_be_bytes()).into();
        Self::from_sha256_digest(digest)
    }

    /// The peer's position in the Kademlia key space (SHA-256 of its bytes).
    pub fn kad_key(&self) -> &Key {
        &self.key
    }

    /// The multihash bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The multihash bytes, owned.
    pub fn to_bytes(&self) -> alloc::vec::Vec<u8> {
        self.as_bytes().to_vec()
    }

    /// The base58btc text form, as libp2p prints peer ids.
    pub fn to_base58(&self) -> alloc::string::String {
        bs58::encode(self.as_bytes()).into_string()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base58())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.to_base58();
        // The tail of a base58 id is what differs between peers; keep debug output short.
        let tail = &s[s.len().saturating_sub(8)..];
        write!(f, "PeerId(..{tail})")
    }
}

impl core::str::FromStr for PeerId {
    type Err = PeerIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|_| PeerIdError::Multihash)?;
        PeerId::from_bytes(&bytes)
    }
}

/// Serialized as its multihash bytes (what libp2p calls `PeerId::to_bytes`).
impl serde::Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.as_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for PeerId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PeerId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the bytes of a peer id")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<PeerId, E> {
                PeerId::from_bytes(v).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<PeerId, A::Error> {
                let mut bytes = [0u8; MAX_PEER_ID_LEN];
                let mut len = 0;
                while let Some(b) = seq.next_element::<u8>()? {
                    if len == MAX_PEER_ID_LEN {
                        return Err(serde::de::Error::custom("peer id too long"));
                    }
                    bytes[len] = b;
                    len += 1;
                }
                PeerId::from_bytes(&bytes[..len]).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// Addresses up to this many bytes are kept inline (`/ip4/../tcp/..` is 8 bytes, with a
/// `/p2p/` suffix about 48; `/ip6/../udp/../quic-v1` is 22).
const INLINE_ADDRESS_LEN: usize = 30;

/// A network address of a peer: the bytes of a multiaddr, kept opaque by the core.
///
/// The core stores, compares and forwards addresses but never interprets them; the adapters
/// parse them with the `multiaddr` crate, the simulator uses its own small encoding.
/// Short addresses (the common case) are stored inline and longer ones are shared, so a
/// clone never allocates. Inline storage matters: every lookup answer copies twenty peers
/// with their addresses, and a shared reference count on a cold cache line costs more than
/// copying thirty bytes.
#[derive(Clone)]
pub struct Address(AddressRepr);

#[derive(Clone)]
enum AddressRepr {
    Inline {
        len: u8,
        bytes: [u8; INLINE_ADDRESS_LEN],
    },
    Shared(Arc<[u8]>),
}

impl PartialEq for Address {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Address {}

impl PartialOrd for Address {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Address {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl core::hash::Hash for Address {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

/// Why bytes are not accepted as an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Empty or longer than [`MAX_ADDRESS_LEN`].
    #[error("address length {0} is outside 1..={MAX_ADDRESS_LEN}")]
    Length(usize),
}

impl Address {
    /// Wraps multiaddr bytes, checking only their length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AddressError> {
        if bytes.is_empty() || bytes.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::Length(bytes.len()));
        }
        if bytes.len() <= INLINE_ADDRESS_LEN {
            let mut inline = [0u8; INLINE_ADDRESS_LEN];
            inline[..bytes.len()].copy_from_slice(bytes);
            return Ok(Address(AddressRepr::Inline {
                len: bytes.len() as u8,
                bytes: inline,
            }));
        }
        Ok(Address(AddressRepr::Shared(Arc::from(bytes))))
    }

    /// The multiaddr bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            AddressRepr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            AddressRepr::Shared(bytes) => bytes,
        }
    }
}

/// An immutable list of addresses. A single address (the common case) is kept inline;
/// longer lists are shared, so cloning never allocates. Dereferences to `[Address]`.
#[derive(Clone, Default)]
pub struct Addresses(AddressesRepr);

#[derive(Clone, Default)]
enum AddressesRepr {
    #[default]
    Empty,
    One(Address),
    Many(Arc<[Address]>),
}

impl core::ops::Deref for Addresses {
    type Target = [Address];
    fn deref(&self) -> &[Address] {
        match &self.0 {
            AddressesRepr::Empty => &[],
            AddressesRepr::One(a) => core::slice::from_ref(a),
            AddressesRepr::Many(list) => list,
        }
    }
}

impl PartialEq for Addresses {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Addresses {}

impl fmt::Debug for Addresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<alloc::vec::Vec<Address>> for Addresses {
    fn from(mut list: alloc::vec::Vec<Address>) -> Self {
        match list.len() {
            0 => Addresses(AddressesRepr::Empty),
            1 => Addresses(AddressesRepr::One(list.remove(0))),
            _ => Addresses(AddressesRepr::Many(list.into())),
        }
    }
}

impl<const N: usize> From<[Address; N]> for Addresses {
    fn from(list: [Address; N]) -> Self {
        alloc::vec::Vec::from(list).into()
    }
}

impl From<&[Address]> for Addresses {
    fn from(list: &[Address]) -> Self {
        list.to_vec().into()
    }
}

impl FromIterator<Address> for Addresses {
    fn from_iter<I: IntoIterator<Item = Address>>(iter: I) -> Self {
        iter.into_iter().collect::<alloc::vec::Vec<_>>().into()
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address(")?;
        for b in self.as_bytes().iter().take(16) {
            write!(f, "{b:02x}")?;
        }
        if self.as_bytes().len() > 16 {
            write!(f, "..")?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_compare_by_bytes_whatever_their_length() {
        let short = Address::from_bytes(&[4, 127, 0, 0, 1]).unwrap();
        let long = Address::from_bytes(&[9u8; 100]).unwrap();
        assert_eq!(short.as_bytes(), &[4, 127, 0, 0, 1]);
        assert_eq!(long.as_bytes(), &[9u8; 100][..]);
        assert!(short < long);
        assert_eq!(long.clone(), long);
        let list: Addresses = alloc::vec![short.clone(), long.clone()].into();
        assert_eq!(&*list, &[short.clone(), long][..]);
        let one: Addresses = [short.clone()].into();
        assert_eq!(&*one, &[short][..]);
        assert!(Addresses::from([]).is_empty());
        assert!(Address::from_bytes(&[]).is_err());
        assert!(Address::from_bytes(&[1u8; MAX_ADDRESS_LEN + 1]).is_err());
    }

    #[test]
    fn seeded_ids_round_trip_through_bytes_and_text() {
        let id = PeerId::from_seed(7);
        assert_eq!(PeerId::from_bytes(id.as_bytes()), Ok(id));
        assert_eq!(id.to_base58().parse::<PeerId>(), Ok(id));
        assert!(id.to_base58().starts_with("Qm"));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        assert_eq!(PeerId::from_bytes(&[]), Err(PeerIdError::Length(0)));
        assert_eq!(
            PeerId::from_bytes(&[0x12, 0x20, 1]),
            Err(PeerIdError::Multihash)
        );
        assert_eq!(
            PeerId::from_bytes(&[0x13, 0x01, 1]),
            Err(PeerIdError::HashCode(0x13))
        );
        assert_eq!(PeerId::from_bytes(&[0xff; 10]), Err(PeerIdError::Multihash));
        let ed25519_like = [&[0x00, 0x24][..], &[7u8; 36][..]].concat();
        assert!(PeerId::from_bytes(&ed25519_like).is_ok());
    }
}
