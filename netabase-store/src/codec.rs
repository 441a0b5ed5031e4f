//! How values and index entries are laid out in the backend's tables.
//!
//! # Values
//!
//! Every stored value starts with an 11-byte header (integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 2 | magic `NS` |
//! | 1 | value format ([`VALUE_FORMAT`]) |
//! | 4 | schema version of the definition that wrote the value |
//! | 4 | checksum: the low 32 bits of XXH3-64 of the payload, seeded with format and version |
//! | rest | the payload: the model value, bincode 2 ([`netabase_core::model::bincode_config`]) |
//!
//! A reader checks magic, format, checksum and schema version before it decodes the
//! payload, so truncated or damaged bytes and values of another schema version are reported
//! as such instead of being decoded into something else. A later value format can change
//! everything after the format byte.
//!
//! # Secondary-index entries
//!
//! One index table per model; an entry's key is
//! `index (u16) ++ value bytes ++ primary-key bytes ++ primary-key length (u32)` and its
//! value is empty. Value and primary-key bytes are the order-preserving key encoding, so a
//! lookup is a prefix scan over `index ++ value bytes` and returns records in primary-key
//! order; the trailing length lets a reader check that an entry holds exactly the value
//! looked up and recover the primary key.

use netabase_core::model::bincode_config;
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The value format this code writes and reads.
pub const VALUE_FORMAT: u8 = 1;

const MAGIC: [u8; 2] = *b"NS";

/// Length of the value header.
pub const HEADER_LEN: usize = 11;

#[inline]
fn checksum(version: u32, payload: &[u8]) -> u32 {
    let seed = (u64::from(VALUE_FORMAT) << 32) | u64::from(version);
    xxh3_64_with_seed(payload, seed) as u32
}

/// Appends bincode output to a vector.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

fn header(version: u32, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + capacity);
    out.extend_from_slice(&MAGIC);
    out.push(VALUE_FORMAT);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out
}

fn finish(mut out: Vec<u8>, version: u32) -> Vec<u8> {
    let sum = checksum(version, &out[HEADER_LEN..]);
    out[7..HEADER_LEN].copy_from_slice(&sum.to_be_bytes());
    out
}

/// Encodes `value` with bincode 2 behind a header for schema version `version`.
pub fn seal<T: Serialize + ?Sized>(version: u32, value: &T) -> Result<Vec<u8>, String> {
    // Measure first, so that the value is written into one allocation of the right size.
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, bincode_config())
        .map_err(|e| e.to_string())?;
    let mut out = header(version, size.bytes_written);
    bincode::serde::encode_into_writer(value, VecWriter(&mut out), bincode_config())
        .map_err(|e| e.to_string())?;
    Ok(finish(out, version))
}

/// Puts a header for schema version `version` in front of an already encoded payload.
pub fn seal_payload(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = header(version, payload.len());
    out.extend_from_slice(payload);
    finish(out, version)
}

/// Checks a value's header and checksum; returns the schema version it was written with
/// and the payload. The error says what is wrong.
#[inline]
pub fn open(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(truncated(bytes.len()));
    };
    if header[..3] != [MAGIC[0], MAGIC[1], VALUE_FORMAT] {
        return Err(bad_start(header));
    }
    let version = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    let stored = u32::from_be_bytes([header[7], header[8], header[9], header[10]]);
    if checksum(version, payload) != stored {
        return Err(damaged());
    }
    Ok((version, payload))
}

#[cold]
fn truncated(len: usize) -> String {
    format!("value truncated: {len} bytes, shorter than the {HEADER_LEN}-byte header")
}

#[cold]
fn bad_start(header: &[u8; HEADER_LEN]) -> String {
    if header[..2] != MAGIC {
        "value does not start with the value header magic".into()
    } else {
        format!(
            "value format {} is not supported (this build reads format {VALUE_FORMAT})",
            header[2]
        )
    }
}

#[cold]
fn damaged() -> String {
    "checksum mismatch: the value is damaged or truncated".into()
}

/// Checks a value's header for schema version `expected` and returns its payload.
#[inline]
pub fn open_version(bytes: &[u8], expected: u32) -> Result<&[u8], String> {
    let (version, payload) = open(bytes)?;
    if version != expected {
        return Err(other_version(version, expected));
    }
    Ok(payload)
}

#[cold]
fn other_version(version: u32, expected: u32) -> String {
    format!("value was written with schema version {version}, the store is at {expected}")
}

/// `index ++ value` : the prefix of all index entries of one secondary-key value.
#[cfg(test)]
pub(crate) fn index_prefix(index: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + value.len() + 16);
    write_index_prefix(&mut out, index, value);
    out
}

/// Appends [`index_prefix`] to `out`.
pub(crate) fn write_index_prefix(out: &mut Vec<u8>, index: u16, value: &[u8]) {
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(value);
}

/// The key of the index entry of secondary key (`index`, `value`) of record `pk`.
pub(crate) fn index_key(index: u16, value: &[u8], pk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + value.len() + pk.len() + 4);
    write_index_key(&mut out, index, value, pk);
    out
}

/// Appends [`index_key`] to `out`.
pub(crate) fn write_index_key(out: &mut Vec<u8>, index: u16, value: &[u8], pk: &[u8]) {
    write_index_prefix(out, index, value);
    out.extend_from_slice(pk);
    // Primary keys longer than 4 GiB cannot be stored by any backend anyway.
    out.extend_from_slice(&(pk.len() as u32).to_be_bytes());
}

/// The primary key of an index entry, if the entry is well formed.
pub(crate) fn index_entry_pk(key: &[u8]) -> Option<&[u8]> {
    let split = key.len().checked_sub(4)?;
    let len = u32::from_be_bytes(key[split..].try_into().ok()?) as usize;
    let start = split.checked_sub(len)?;
    (start >= 2).then(|| &key[start..split])
}

/// The primary key of an index entry found under `prefix`, if the entry holds exactly the
/// value of the prefix (and not a longer value that happens to start with it).
pub(crate) fn index_entry_pk_exact<'k>(prefix: &[u8], key: &'k [u8]) -> Option<&'k [u8]> {
    let pk = index_entry_pk(key)?;
    (key.len() == prefix.len() + pk.len() + 4).then_some(pk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_damage_is_detected() {
        let sealed = seal(3, &(7u64, "hello")).unwrap();
        let (version, payload) = open(&sealed).unwrap();
        assert_eq!(version, 3);
        assert_eq!(seal_payload(3, payload), sealed);
        assert!(open_version(&sealed, 4).unwrap_err().contains("version 3"));
        for cut in 0..sealed.len() {
            assert!(open(&sealed[..cut]).is_err(), "truncated at {cut}");
        }
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(open_version(&bad, 3).is_err(), "flipped byte {i}");
        }
    }

    #[test]
    fn index_entries_give_back_their_primary_key() {
        let key = index_key(1, b"alice\0\0", b"\0\0\0\x07");
        assert_eq!(index_entry_pk(&key), Some(&b"\0\0\0\x07"[..]));
        let prefix = index_prefix(1, b"alice\0\0");
        assert!(key.starts_with(&prefix));
        assert_eq!(
            index_entry_pk_exact(&prefix, &key),
            Some(&b"\0\0\0\x07"[..])
        );
        assert_eq!(index_entry_pk_exact(&index_prefix(1, b"ali"), &key), None);
        assert_eq!(index_entry_pk(b"\0"), None);
        assert_eq!(index_entry_pk(b"\0\0\0\0\0\x09"), None);
    }
}
