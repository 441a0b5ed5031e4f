//! The versioned, signed envelope around typed records on the DHT.
//!
//! Format 2 (all integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 3 | magic `NBE` |
//! | 1 | format version ([`ENVELOPE_FORMAT`], 2) |
//! | 1 | flags: bit 0 = tombstone; the other bits must be zero |
//! | 2 | model id |
//! | 4 | schema version of the writer's definition |
//! | 8 | hybrid logical clock timestamp (microseconds) |
//! | 1 + n | origin peer id: length, then the multihash bytes |
//! | rest − 64 | the model value, bincode 2 (empty for a tombstone) |
//! | 64 | Ed25519 signature by the origin's identity key |
//!
//! The signature covers a domain tag, the record key the envelope is stored under and
//! every byte of the envelope before the signature, so it binds the key, the version
//! (timestamp, origin), the flags and the payload: nobody but the origin can write a
//! record in its name, or move one to another key. The version of a record is its
//! (timestamp, origin); no field of libp2p's `dht.proto` carries it, so stock peers store
//! and forward it untouched.
//!
//! Format 1 (no flags, no signature) is still parsed by [`Envelope::decode`], so that data
//! written by earlier releases can be read and migrated, but [`Envelope::open`] refuses it:
//! an unsigned envelope proves nothing about who wrote it.
//!
//! The layout is fixed by hand rather than derived so that a reader can check the magic,
//! format and model before it trusts anything else, and so that a later format version
//! can change the tail without breaking the head.

use alloc::vec::Vec;

use crate::identity::{self, Keypair, SIGNATURE_LEN, SignatureError};
use crate::key::RecordKey;
use crate::model::{ModelError, ModelId, NetabaseDefinition};
use crate::peer::PeerId;
use crate::version::Version;

/// The envelope format this code writes.
pub const ENVELOPE_FORMAT: u8 = 2;

/// The format written by earlier releases: unsigned, read for migration only.
pub const LEGACY_ENVELOPE_FORMAT: u8 = 1;

/// Flag bit: the envelope is a tombstone (the record was removed at this version).
pub const FLAG_TOMBSTONE: u8 = 0x01;

const MAGIC: &[u8; 3] = b"NBE";
/// Domain separation of envelope signatures from anything else the key signs.
const SIGNING_DOMAIN: &[u8] = b"netabase/envelope/2\0";
/// Magic, format, model, schema, timestamp, origin length (format 1).
const HEAD_V1: usize = 3 + 1 + 2 + 4 + 8 + 1;
/// Format 2 adds the flags byte.
const HEAD_V2: usize = HEAD_V1 + 1;

/// A typed record's value on the DHT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The format the envelope was written in.
    pub format: u8,
    /// Which model of the definition the payload holds.
    pub model: ModelId,
    /// The schema version of the definition that wrote the record.
    pub schema_version: u32,
    /// The writer's hybrid logical clock timestamp.
    pub timestamp: u64,
    /// The peer that wrote the record.
    pub origin: PeerId,
    /// Whether the record is a tombstone: removed at this version.
    pub tombstone: bool,
    /// The model value, bincode 2 (empty for a tombstone).
    pub payload: Vec<u8>,
    /// The origin's signature (format 2); `None` for a format-1 envelope.
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

/// Why bytes are not a valid typed record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than the fixed head, or the origin runs past the end.
    #[error("envelope truncated")]
    Truncated,
    /// Does not start with the envelope magic.
    #[error("not a netabase record envelope")]
    BadMagic,
    /// Written in a format version this code does not read. A later format's record is
    /// still checked, ranked, stored and forwarded as bytes; only its payload is not read.
    #[error("envelope format {0} is not supported (this build reads format {ENVELOPE_FORMAT})")]
    UnsupportedFormat(u8),
    /// Flag bits this code does not know are set.
    #[error("envelope flags {0:#04x} are not supported")]
    UnsupportedFlags(u8),
    /// A format-1 envelope: unsigned, so its origin is unproven.
    #[error("unsigned (format 1) envelopes are not accepted")]
    Unsigned,
    /// The signature does not verify for the origin, key and content.
    #[error("envelope signature: {0}")]
    Signature(#[from] SignatureError),
    /// The origin is not a valid peer id.
    #[error("envelope origin is not a valid peer id")]
    BadOrigin,
    /// Written under a newer schema than the local definition's.
    #[error("record of schema version {record} is newer than the local schema version {local}")]
    NewerSchema {
        /// The record's schema version.
        record: u32,
        /// The local definition's schema version.
        local: u32,
    },
    /// The payload is not a valid value of the model, or the model is unknown.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The value decodes, but belongs under a different key than the one it came with.
    #[error("record value does not belong under its key")]
    KeyMismatch,
    /// The envelope is a tombstone: the record was removed.
    #[error("the record was removed")]
    Tombstone,
}

/// An opened envelope: a value of the definition, or a tombstone of one of its models.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened<D> {
    /// A live value.
    Value(D, Envelope),
    /// A removal at the envelope's version.
    Removed(Envelope),
}

/// The fields of an envelope that [`Envelope::seal_parts`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealParts<'a> {
    /// The model.
    pub model: ModelId,
    /// The writer's schema version.
    pub schema_version: u32,
    /// The timestamp of the version.
    pub timestamp: u64,
    /// Whether this is a tombstone.
    pub tombstone: bool,
    /// The payload (empty for a tombstone).
    pub payload: &'a [u8],
}

impl Envelope {
    /// Wraps a definition value, signed by `keypair` at `timestamp`; returns the DHT key it
    /// belongs under and the envelope bytes.
    pub fn seal<D: NetabaseDefinition>(
        value: &D,
        timestamp: u64,
        keypair: &Keypair,
    ) -> Result<(RecordKey, Vec<u8>), ModelError> {
        let key = value.record_key()?;
        let payload = value.encode_model()?;
        let bytes = Envelope::seal_parts(
            &key,
            SealParts {
                model: value.model_id(),
                schema_version: D::SCHEMA_VERSION,
                timestamp,
                tombstone: false,
                payload: &payload,
            },
            keypair,
        );
        Ok((key, bytes))
    }

    /// Writes and signs a format-2 envelope for `key`.
    pub fn seal_parts(key: &RecordKey, parts: SealParts<'_>, keypair: &Keypair) -> Vec<u8> {
        let origin = keypair.peer_id();
        let origin = origin.as_bytes();
        let mut out =
            Vec::with_capacity(HEAD_V2 + origin.len() + parts.payload.len() + SIGNATURE_LEN);
        out.extend_from_slice(MAGIC);
        out.push(ENVELOPE_FORMAT);
        out.push(if parts.tombstone { FLAG_TOMBSTONE } else { 0 });
        out.extend_from_slice(&parts.model.to_be_bytes());
        out.extend_from_slice(&parts.schema_version.to_be_bytes());
        out.extend_from_slice(&parts.timestamp.to_be_bytes());
        // Peer ids are at most 44 bytes, so the length fits a byte.
        out.push(origin.len() as u8);
        out.extend_from_slice(origin);
        out.extend_from_slice(parts.payload);
        let signature = keypair.sign(&signed_message(key, &out));
        out.extend_from_slice(&signature);
        out
    }

    /// Decodes envelope bytes received under `key`, checks the origin's signature and
    /// validates the payload against definition `D`: it must decode as the named model, and
    /// that value's derived key must be `key`. A tombstone opens as [`Opened::Removed`].
    pub fn open_any<D: NetabaseDefinition>(
        key: &RecordKey,
        bytes: &[u8],
    ) -> Result<Opened<D>, EnvelopeError> {
        let envelope = Envelope::decode(bytes)?;
        envelope.verify(key, bytes)?;
        Envelope::validate::<D>(key, envelope)
    }

    /// Like [`open_any`](Envelope::open_any), but without checking the signature: for
    /// bytes whose signature the caller already checked (the core verifies every record
    /// that arrives from the network before its store validates it).
    pub fn open_verified<D: NetabaseDefinition>(
        key: &RecordKey,
        bytes: &[u8],
    ) -> Result<Opened<D>, EnvelopeError> {
        let envelope = Envelope::decode(bytes)?;
        if envelope.signature.is_none() {
            return Err(EnvelopeError::Unsigned);
        }
        Envelope::validate::<D>(key, envelope)
    }

    /// Like [`open_any`](Envelope::open_any), for a live value: a tombstone is
    /// [`EnvelopeError::Tombstone`].
    pub fn open<D: NetabaseDefinition>(
        key: &RecordKey,
        bytes: &[u8],
    ) -> Result<(D, Envelope), EnvelopeError> {
        match Envelope::open_any::<D>(key, bytes)? {
            Opened::Value(value, envelope) => Ok((value, envelope)),
            Opened::Removed(_) => Err(EnvelopeError::Tombstone),
        }
    }

    fn validate<D: NetabaseDefinition>(
        key: &RecordKey,
        envelope: Envelope,
    ) -> Result<Opened<D>, EnvelopeError> {
        if envelope.format > ENVELOPE_FORMAT {
            return Err(EnvelopeError::UnsupportedFormat(envelope.format));
        }
        if envelope.schema_version > D::SCHEMA_VERSION {
            return Err(EnvelopeError::NewerSchema {
                record: envelope.schema_version,
                local: D::SCHEMA_VERSION,
            });
        }
        if envelope.tombstone {
            if usize::from(envelope.model) >= D::MODELS.len() {
                return Err(ModelError::UnknownModel(envelope.model).into());
            }
            return Ok(Opened::Removed(envelope));
        }
        let value = D::decode_model(envelope.model, &envelope.payload)?;
        if value.record_key()? != *key {
            return Err(EnvelopeError::KeyMismatch);
        }
        Ok(Opened::Value(value, envelope))
    }

    /// Checks the signature of this envelope, decoded from `bytes`, as stored under `key`.
    pub fn verify(&self, key: &RecordKey, bytes: &[u8]) -> Result<(), EnvelopeError> {
        let signature = self.signature.as_ref().ok_or(EnvelopeError::Unsigned)?;
        let end = bytes
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(EnvelopeError::Truncated)?;
        let signed = &bytes[..end];
        identity::verify(&self.origin, &signed_message(key, signed), signature)?;
        Ok(())
    }

    /// [`verify`](Envelope::verify) with the origin's key from (and into) `cache`.
    pub fn verify_cached(
        &self,
        key: &RecordKey,
        bytes: &[u8],
        cache: &mut identity::KeyCache,
    ) -> Result<(), EnvelopeError> {
        let signature = self.signature.as_ref().ok_or(EnvelopeError::Unsigned)?;
        let end = bytes
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(EnvelopeError::Truncated)?;
        cache.verify(&self.origin, &signed_message(key, &bytes[..end]), signature)?;
        Ok(())
    }

    /// The version of the record: (timestamp, origin).
    pub fn version(&self) -> Version {
        Version {
            timestamp: self.timestamp,
            origin: self.origin,
        }
    }

    /// Parses envelope bytes of format 1 or 2 without checking the signature or
    /// interpreting the payload.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let (mut envelope, payload) = Envelope::decode_head(bytes)?;
        envelope.payload = bytes[payload].to_vec();
        Ok(envelope)
    }

    /// Parses everything but the payload (left empty): the head of an envelope, cheaply.
    pub fn peek(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        Envelope::decode_head(bytes).map(|(envelope, _)| envelope)
    }

    /// The version and tombstone flag of format-2 envelope bytes, without copying the
    /// payload or checking the signature; `None` for anything else (format 1 included).
    pub fn version_of(bytes: &[u8]) -> Option<(Version, bool)> {
        let (envelope, _) = Envelope::decode_head(bytes).ok()?;
        envelope
            .signature
            .is_some()
            .then(|| (envelope.version(), envelope.tombstone))
    }

    /// Parses everything but the payload, which it returns as a range of `bytes`.
    fn decode_head(bytes: &[u8]) -> Result<(Envelope, core::ops::Range<usize>), EnvelopeError> {
        if bytes.len() < 4 {
            return Err(EnvelopeError::Truncated);
        }
        if &bytes[..3] != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        let format = bytes[3];
        let (head, flags) = match format {
            0 => return Err(EnvelopeError::UnsupportedFormat(0)),
            LEGACY_ENVELOPE_FORMAT => (HEAD_V1, 0),
            // Format 2 and every later one: later formats keep this head and the signature
            // at the end (over everything before it), so that this release can check and
            // rank their records and store and forward them as bytes, even where it
            // cannot read their payload (a rolling upgrade converges).
            _ => (HEAD_V2, bytes.get(4).copied().unwrap_or(0)),
        };
        if bytes.len() < head {
            return Err(EnvelopeError::Truncated);
        }
        if format == ENVELOPE_FORMAT && flags & !FLAG_TOMBSTONE != 0 {
            return Err(EnvelopeError::UnsupportedFlags(flags));
        }
        // Fields after the format byte (and the flags byte of format 2).
        let at = head - HEAD_V1;
        let be = |range: core::ops::Range<usize>| {
            bytes[at + range.start..at + range.end]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        };
        let model = be(4..6) as ModelId;
        let schema_version = be(6..10) as u32;
        let timestamp = be(10..18);
        let origin_len = usize::from(bytes[head - 1]);
        let origin_end = head + origin_len;
        let origin = bytes
            .get(head..origin_end)
            .ok_or(EnvelopeError::Truncated)?;
        let origin = PeerId::from_bytes(origin).map_err(|_| EnvelopeError::BadOrigin)?;
        let (payload, signature) = if format != LEGACY_ENVELOPE_FORMAT {
            let end = bytes
                .len()
                .checked_sub(SIGNATURE_LEN)
                .filter(|&end| end >= origin_end)
                .ok_or(EnvelopeError::Truncated)?;
            let mut signature = [0u8; SIGNATURE_LEN];
            signature.copy_from_slice(&bytes[end..]);
            (origin_end..end, Some(signature))
        } else {
            (origin_end..bytes.len(), None)
        };
        let envelope = Envelope {
            format,
            model,
            schema_version,
            timestamp,
            origin,
            tombstone: flags & FLAG_TOMBSTONE != 0,
            payload: Vec::new(),
            signature,
        };
        Ok((envelope, payload))
    }

    /// The envelope's bytes in its own [`format`](Envelope::format): what
    /// [`decode`](Envelope::decode) read, byte for byte. Format 1 is what earlier releases
    /// wrote (for tests of migration and of the refusal of unsigned records); a format-2
    /// envelope without a signature gets 64 zero bytes in its place, which never verify.
    /// New records are written with [`seal`](Envelope::seal), which signs them.
    pub fn encode(&self) -> Vec<u8> {
        let origin = self.origin.as_bytes();
        let mut out =
            Vec::with_capacity(HEAD_V2 + origin.len() + self.payload.len() + SIGNATURE_LEN);
        out.extend_from_slice(MAGIC);
        out.push(self.format);
        if self.format != LEGACY_ENVELOPE_FORMAT {
            out.push(if self.tombstone { FLAG_TOMBSTONE } else { 0 });
        }
        out.extend_from_slice(&self.model.to_be_bytes());
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        // Peer ids are at most 44 bytes, so the length fits a byte.
        out.push(origin.len() as u8);
        out.extend_from_slice(origin);
        out.extend_from_slice(&self.payload);
        if self.format != LEGACY_ENVELOPE_FORMAT {
            out.extend_from_slice(&self.signature.unwrap_or([0; SIGNATURE_LEN]));
        }
        out
    }
}

/// What an envelope's signature covers: a domain tag, the record key (length-prefixed) and
/// the envelope's bytes before the signature.
fn signed_message(key: &RecordKey, head_and_payload: &[u8]) -> Vec<u8> {
    let key = key.as_bytes();
    let mut message =
        Vec::with_capacity(SIGNING_DOMAIN.len() + 4 + key.len() + head_and_payload.len());
    message.extend_from_slice(SIGNING_DOMAIN);
    message.extend_from_slice(&(key.len() as u32).to_be_bytes());
    message.extend_from_slice(key);
    message.extend_from_slice(head_and_payload);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> RecordKey {
        RecordKey::new(b"/nb/test/key").unwrap()
    }

    fn sealed(tombstone: bool) -> Vec<u8> {
        Envelope::seal_parts(
            &key(),
            SealParts {
                model: 3,
                schema_version: 7,
                timestamp: 0x0102_0304_0506_0708,
                tombstone,
                payload: if tombstone { &[] } else { &[1, 2, 3] },
            },
            &Keypair::from_seed(9),
        )
    }

    #[test]
    fn round_trip_and_signature() {
        let bytes = sealed(false);
        let envelope = Envelope::decode(&bytes).unwrap();
        assert_eq!(envelope.encode(), bytes);
        assert_eq!(envelope.format, 2);
        assert_eq!(envelope.model, 3);
        assert_eq!(envelope.schema_version, 7);
        assert_eq!(envelope.timestamp, 0x0102_0304_0506_0708);
        assert_eq!(envelope.origin, Keypair::from_seed(9).peer_id());
        assert!(!envelope.tombstone);
        assert_eq!(envelope.payload, [1, 2, 3]);
        assert_eq!(envelope.verify(&key(), &bytes), Ok(()));
        // Another key: the signature binds the key.
        let other = RecordKey::new(b"/nb/test/other").unwrap();
        assert!(matches!(
            envelope.verify(&other, &bytes),
            Err(EnvelopeError::Signature(SignatureError::Invalid))
        ));
        let tomb = sealed(true);
        let decoded = Envelope::decode(&tomb).unwrap();
        assert!(decoded.tombstone);
        assert!(decoded.payload.is_empty());
        assert_eq!(decoded.verify(&key(), &tomb), Ok(()));
    }

    #[test]
    fn any_changed_byte_breaks_the_signature_or_the_decoding() {
        let bytes = sealed(false);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            let ok = Envelope::decode(&bad).and_then(|e| e.verify(&key(), &bad));
            assert!(ok.is_err(), "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn a_later_format_is_checked_and_ranked_but_its_payload_is_not_read() {
        // A format-3 envelope as a later release would write it: this head, a payload this
        // release does not know, unknown flags, the signature at the end.
        let keypair = Keypair::from_seed(9);
        let mut bytes = sealed(false);
        bytes.truncate(bytes.len() - SIGNATURE_LEN);
        bytes[3] = 3;
        bytes[4] = 0x80;
        let signature = keypair.sign(&signed_message(&key(), &bytes));
        bytes.extend_from_slice(&signature);
        let envelope = Envelope::decode(&bytes).unwrap();
        assert_eq!(
            (envelope.format, envelope.timestamp),
            (3, 0x0102_0304_0506_0708)
        );
        assert_eq!(envelope.verify(&key(), &bytes), Ok(()));
        assert!(Envelope::version_of(&bytes).is_some());
    }

    #[test]
    fn legacy_envelopes_decode_but_are_unsigned() {
        let mut envelope = Envelope::decode(&sealed(false)).unwrap();
        envelope.format = 1;
        envelope.signature = None;
        let legacy = envelope.encode();
        assert_eq!(Envelope::decode(&legacy), Ok(envelope.clone()));
        assert_eq!(
            envelope.verify(&key(), &legacy),
            Err(EnvelopeError::Unsigned)
        );
    }

    #[test]
    fn typed_errors() {
        assert_eq!(Envelope::decode(b""), Err(EnvelopeError::Truncated));
        assert_eq!(Envelope::decode(b"XYZ\x02"), Err(EnvelopeError::BadMagic));
        assert_eq!(
            Envelope::decode(b"NBE\x00"),
            Err(EnvelopeError::UnsupportedFormat(0))
        );
        assert_eq!(Envelope::decode(b"NBE\x09"), Err(EnvelopeError::Truncated));
        assert_eq!(
            Envelope::decode(b"NBE\x02\0\0"),
            Err(EnvelopeError::Truncated)
        );
        let mut flagged = sealed(false);
        flagged[4] = 0x80;
        assert_eq!(
            Envelope::decode(&flagged),
            Err(EnvelopeError::UnsupportedFlags(0x80))
        );
        // A signature cut short.
        let bytes = sealed(true);
        assert_eq!(
            Envelope::decode(&bytes[..bytes.len() - 1]),
            Err(EnvelopeError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            for head in [&b"NBE\x01"[..], b"NBE\x02", b"NBE\x02\x00", b"NBE\x02\x01"] {
                let mut framed = head.to_vec();
                framed.extend_from_slice(&bytes);
                if let Ok(e) = Envelope::decode(&framed) {
                    let _ = e.verify(&key(), &framed);
                }
            }
            let _ = Envelope::decode(&bytes);
        }
    }
}
