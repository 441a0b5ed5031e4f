//! Records and provider records.

use alloc::vec::Vec;

use crate::key::RecordKey;
use crate::peer::{Address, PeerId};
use crate::time::Instant;

/// A value stored in the DHT under a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key the record is stored under.
    pub key: RecordKey,
    /// The value.
    pub value: Vec<u8>,
    /// The peer that first published the record, if known.
    pub publisher: Option<PeerId>,
    /// When the record expires, on the driver's clock; `None` never expires.
    pub expires: Option<Instant>,
}

impl Record {
    /// A record with no publisher and no expiry (both are filled in on publication).
    pub fn new(key: RecordKey, value: Vec<u8>) -> Self {
        Record {
            key,
            value,
            publisher: None,
            expires: None,
        }
    }

    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| now >= t)
    }
}

/// A statement that a peer can provide the content behind a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The key being provided.
    pub key: RecordKey,
    /// The providing peer.
    pub provider: PeerId,
    /// Addresses of the provider, as it announced them.
    pub addresses: Vec<Address>,
    /// When the provider record expires; `None` never expires.
    pub expires: Option<Instant>,
}

impl ProviderRecord {
    /// Whether the provider record has expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| now >= t)
    }
}
