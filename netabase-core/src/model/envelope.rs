//! The versioned envelope around typed records on the DHT.
//!
//! Layout (all integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 3 | magic `NBE` |
//! | 1 | format version ([`ENVELOPE_FORMAT`]) |
//! | 2 | model id |
//! | 4 | schema version of the writer's definition |
//! | 8 | hybrid logical clock timestamp |
//! | 1 + n | origin peer id: length, then the multihash bytes |
//! | rest | the model value, bincode 2 |
//!
//! The layout is fixed by hand rather than derived so that a reader can check the magic,
//! format and model before it trusts anything else, and so that a later format version
//! can change the tail without breaking the head.

use alloc::vec::Vec;

use crate::key::RecordKey;
use crate::model::{ModelError, ModelId, NetabaseDefinition};
use crate::peer::PeerId;

/// The envelope format this code writes and reads.
pub const ENVELOPE_FORMAT: u8 = 1;

const MAGIC: &[u8; 3] = b"NBE";
const HEAD: usize = 3 + 1 + 2 + 4 + 8 + 1;

/// A typed record's value on the DHT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Which model of the definition the payload holds.
    pub model: ModelId,
    /// The schema version of the definition that wrote the record.
    pub schema_version: u32,
    /// The writer's hybrid logical clock timestamp.
    pub timestamp: u64,
    /// The peer that wrote the record.
    pub origin: PeerId,
    /// The model value, bincode 2.
    pub payload: Vec<u8>,
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
    /// Written in a format version this code does not read.
    #[error("envelope format {0} is not supported (this build reads format {ENVELOPE_FORMAT})")]
    UnsupportedFormat(u8),
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
}

impl Envelope {
    /// Wraps a definition value; returns the DHT key it belongs under and the envelope bytes.
    pub fn seal<D: NetabaseDefinition>(
        value: &D,
        timestamp: u64,
        origin: PeerId,
    ) -> Result<(RecordKey, Vec<u8>), ModelError> {
        let key = value.record_key()?;
        let envelope = Envelope {
            model: value.model_id(),
            schema_version: D::SCHEMA_VERSION,
            timestamp,
            origin,
            payload: value.encode_model()?,
        };
        Ok((key, envelope.encode()))
    }

    /// Decodes and validates envelope bytes received under `key` against definition `D`:
    /// the payload must decode as the named model, and that value's derived key must be
    /// `key`. Returns the value and its envelope.
    pub fn open<D: NetabaseDefinition>(
        key: &RecordKey,
        bytes: &[u8],
    ) -> Result<(D, Envelope), EnvelopeError> {
        let envelope = Envelope::decode(bytes)?;
        if envelope.schema_version > D::SCHEMA_VERSION {
            return Err(EnvelopeError::NewerSchema {
                record: envelope.schema_version,
                local: D::SCHEMA_VERSION,
            });
        }
        let value = D::decode_model(envelope.model, &envelope.payload)?;
        if value.record_key()? != *key {
            return Err(EnvelopeError::KeyMismatch);
        }
        Ok((value, envelope))
    }

    /// The envelope's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let origin = self.origin.as_bytes();
        let mut out = Vec::with_capacity(HEAD + origin.len() + self.payload.len());
        out.extend_from_slice(MAGIC);
        out.push(ENVELOPE_FORMAT);
        out.extend_from_slice(&self.model.to_be_bytes());
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        // Peer ids are at most 44 bytes, so the length fits a byte.
        out.push(origin.len() as u8);
        out.extend_from_slice(origin);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses envelope bytes without interpreting the payload.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        if bytes.len() < 4 {
            return Err(EnvelopeError::Truncated);
        }
        if &bytes[..3] != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        if bytes[3] != ENVELOPE_FORMAT {
            return Err(EnvelopeError::UnsupportedFormat(bytes[3]));
        }
        if bytes.len() < HEAD {
            return Err(EnvelopeError::Truncated);
        }
        let be = |range: core::ops::Range<usize>| {
            bytes[range]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        };
        let model = be(4..6) as ModelId;
        let schema_version = be(6..10) as u32;
        let timestamp = be(10..18);
        let origin_len = usize::from(bytes[18]);
        let origin_end = HEAD + origin_len;
        let origin = bytes
            .get(HEAD..origin_end)
            .ok_or(EnvelopeError::Truncated)?;
        let origin = PeerId::from_bytes(origin).map_err(|_| EnvelopeError::BadOrigin)?;
        Ok(Envelope {
            model,
            schema_version,
            timestamp,
            origin,
            payload: bytes[origin_end..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let envelope = Envelope {
            model: 3,
            schema_version: 7,
            timestamp: 0x0102_0304_0506_0708,
            origin: PeerId::from_seed(9),
            payload: alloc::vec![1, 2, 3],
        };
        assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
    }

    #[test]
    fn typed_errors() {
        assert_eq!(Envelope::decode(b""), Err(EnvelopeError::Truncated));
        assert_eq!(Envelope::decode(b"XYZ\x01"), Err(EnvelopeError::BadMagic));
        assert_eq!(
            Envelope::decode(b"NBE\x09"),
            Err(EnvelopeError::UnsupportedFormat(9))
        );
        assert_eq!(
            Envelope::decode(b"NBE\x01\0\0"),
            Err(EnvelopeError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Envelope::decode(&bytes);
            let mut framed = b"NBE\x01".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = Envelope::decode(&framed);
        }
    }
}
