//! How values and index entries are laid out in the backend's tables.
//!
//! # Values
//!
//! Every stored value starts with a header of 6 bytes (for schema versions below 128;
//! integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | value format ([`VALUE_FORMAT`], 2) |
//! | 1–5 | schema version of the definition that wrote the value, LEB128 (one byte below 128) |
//! | 4 | checksum: XXH3-64 of the payload (low 32 bits) xor the version times `0x9E3779B1` |
//! | rest | the payload: the model value, bincode 2 ([`netabase_core::model::bincode_config`]) |
//!
//! A reader checks format, checksum and schema version before it decodes the payload, so
//! truncated or damaged bytes and values of another schema version are reported as such
//! instead of being decoded into something else: a damaged version changes the expected
//! checksum (multiplying by an odd constant is a bijection of `u32`), a damaged format byte
//! is refused or moves where the checksum and payload start, and a damaged payload or
//! checksum changes the comparison. A later value format can change everything after the
//! format byte.
//!
//! Values of format 1 (written before format 2) are read as well; they had an 11-byte
//! header:
//!
//! | bytes | field |
//! |---|---|
//! | 2 | magic `NS` |
//! | 1 | value format 1 |
//! | 4 | schema version |
//! | 4 | checksum: the low 32 bits of XXH3-64 of the payload, seeded with format and version |
//!
//! The two cannot be confused: a format-2 value starts with `0x02`, a format-1 value with
//! `N`.
//!
//! # Secondary-index entries
//!
//! One index table per model; an entry's key is
//! `index tag ++ value bytes ++ primary-key bytes ++ primary-key length` and its value is
//! empty ([`INDEX_FORMAT`] 2). The index tag is the secondary key's position, one byte
//! below `0x80` (else `0x80` and the position as a big-endian `u16`); the length is one
//! byte below `0xFF` (else the length as a big-endian `u32` and `0xFF`). Value and
//! primary-key bytes are the order-preserving key encoding, so a lookup is a prefix scan
//! over `index tag ++ value bytes` and returns records in primary-key order; the trailing
//! length lets a reader check that an entry holds exactly the value looked up and recover
//! the primary key. An entry is then 2 bytes longer than its value and primary-key bytes
//! for the first 128 secondary keys of a model and primary keys below 255 bytes (index
//! format 1 had a two-byte index and a four-byte length: 6).

use netabase_core::model::bincode_config;
use serde::Serialize;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The value format this code writes. It reads this one and format 1.
pub const VALUE_FORMAT: u8 = 2;

/// The value formats this code reads.
pub const READABLE_VALUE_FORMATS: [u8; 2] = [1, 2];

/// The magic of format-1 values.
const MAGIC_1: [u8; 2] = *b"NS";

/// Length of a format-1 value header.
const HEADER_LEN_1: usize = 11;

/// The longest header of a value written by this code (format 2 with a schema version of
/// five LEB128 bytes).
pub const MAX_HEADER_LEN: usize = 1 + 5 + 4;

/// The checksum of format 1: XXH3-64 of the payload seeded with format and version.
fn checksum_1(version: u32, payload: &[u8]) -> u32 {
    let seed = (1u64 << 32) | u64::from(version);
    xxh3_64_with_seed(payload, seed) as u32
}

/// The checksum of format 2: the low 32 bits of XXH3-64 of the payload, xored with the
/// schema version times an odd constant. Multiplying by an odd number is a bijection of
/// `u32`, so a damaged version always changes the expected checksum (and a damaged format
/// byte is refused or read as another layout), while the payload is hashed with XXH3's
/// unseeded (cheaper) variant.
#[inline]
fn checksum(version: u32, payload: &[u8]) -> u32 {
    (xxh3_64(payload) as u32) ^ version.wrapping_mul(0x9E37_79B1)
}

/// Appends bincode output to a vector.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl bincode::enc::write::Writer for VecWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// A format-2 header with a zero checksum; returns it and its length.
#[inline]
fn header(version: u32, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_HEADER_LEN + capacity);
    out.push(VALUE_FORMAT);
    let mut v = version;
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out.extend_from_slice(&[0; 4]);
    out
}

#[inline]
fn finish(mut out: Vec<u8>, version: u32) -> Vec<u8> {
    let header_len = header_len(version);
    let sum = checksum(version, &out[header_len..]);
    out[header_len - 4..header_len].copy_from_slice(&sum.to_be_bytes());
    out
}

/// The length of the format-2 header of a value of schema version `version`.
#[inline]
fn header_len(version: u32) -> usize {
    let varint = match version {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        0x4000..0x20_0000 => 3,
        0x20_0000..0x1000_0000 => 4,
        _ => 5,
    };
    1 + varint + 4
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
    // The common case: format 2, a one-byte schema version.
    if let Some((&[VALUE_FORMAT, version, s0, s1, s2, s3], payload)) = bytes.split_first_chunk()
        && version < 0x80
    {
        let version = u32::from(version);
        if checksum(version, payload) != u32::from_be_bytes([s0, s1, s2, s3]) {
            return Err(damaged());
        }
        return Ok((version, payload));
    }
    open_other(bytes)
}

/// [`open`] of everything but a format-2 value with a one-byte version.
#[cold]
fn open_other(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    match bytes.first() {
        None => Err(truncated(0)),
        Some(&VALUE_FORMAT) => open_2(bytes),
        Some(&b) if b == MAGIC_1[0] => open_1(bytes),
        Some(&b) => Err(format!(
            "value format {b} is not supported (this build reads formats \
             {READABLE_VALUE_FORMATS:?})"
        )),
    }
}

/// Format 2, any version.
fn open_2(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    let mut version = 0u32;
    let mut at = 1;
    loop {
        let Some(&b) = bytes.get(at) else {
            return Err(truncated(bytes.len()));
        };
        let shift = 7 * (at - 1);
        // At most five bytes; the fifth holds the top four bits.
        if shift > 28 || (shift == 28 && b > 0x0F) {
            return Err("value header: schema version out of range".into());
        }
        version |= u32::from(b & 0x7F) << shift;
        at += 1;
        if b < 0x80 {
            // Only the shortest encoding is valid, so that each version has one header.
            if b == 0 && at > 2 {
                return Err("value header: schema version not in its shortest form".into());
            }
            break;
        }
    }
    let Some((stored, payload)) = bytes[at..].split_first_chunk::<4>() else {
        return Err(truncated(bytes.len()));
    };
    if checksum(version, payload) != u32::from_be_bytes(*stored) {
        return Err(damaged());
    }
    Ok((version, payload))
}

/// Format 1.
fn open_1(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN_1>() else {
        return Err(truncated(bytes.len()));
    };
    if header[..2] != MAGIC_1 {
        return Err("value does not start with a value header".into());
    }
    if header[2] != 1 {
        return Err(format!(
            "value format {} is not supported (this build reads formats \
             {READABLE_VALUE_FORMATS:?})",
            header[2]
        ));
    }
    let version = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    let stored = u32::from_be_bytes([header[7], header[8], header[9], header[10]]);
    if checksum_1(version, payload) != stored {
        return Err(damaged());
    }
    Ok((version, payload))
}

#[cold]
fn truncated(len: usize) -> String {
    format!("value truncated: {len} bytes, shorter than its header")
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

/// The index-entry layout this code writes and reads. Stores of layout 1 (a `u16` index in
/// front and a `u32` length behind) have their indexes rebuilt when they are opened.
pub const INDEX_FORMAT: u8 = 2;

/// The index tag of secondary key `index`: one byte below `0x80`, else `0x80` and the
/// index as a big-endian `u16` (no tag is a prefix of another, and tags sort like indexes).
#[inline]
fn write_index_tag(out: &mut Vec<u8>, index: u16) {
    if index < 0x80 {
        out.push(index as u8);
    } else {
        out.push(0x80);
        out.extend_from_slice(&index.to_be_bytes());
    }
}

/// `index tag ++ value`: the prefix of all index entries of one secondary-key value.
#[cfg(test)]
pub(crate) fn index_prefix(index: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + value.len() + 16);
    write_index_prefix(&mut out, index, value);
    out
}

/// Appends [`index_prefix`] to `out`.
#[inline]
pub(crate) fn write_index_prefix(out: &mut Vec<u8>, index: u16, value: &[u8]) {
    write_index_tag(out, index);
    out.extend_from_slice(value);
}

/// The key of the index entry of secondary key (`index`, `value`) of record `pk`.
pub(crate) fn index_key(index: u16, value: &[u8], pk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + value.len() + pk.len() + 5);
    write_index_key(&mut out, index, value, pk);
    out
}

/// Appends [`index_key`] to `out`: `index tag ++ value ++ pk ++ pk length`, the length one
/// byte when it is below `0xFF`, else the length as a big-endian `u32` followed by `0xFF`.
#[inline]
pub(crate) fn write_index_key(out: &mut Vec<u8>, index: u16, value: &[u8], pk: &[u8]) {
    write_index_prefix(out, index, value);
    out.extend_from_slice(pk);
    match u8::try_from(pk.len()) {
        Ok(len) if len < 0xFF => out.push(len),
        // Primary keys longer than 4 GiB cannot be stored by any backend anyway.
        _ => {
            out.extend_from_slice(&(pk.len() as u32).to_be_bytes());
            out.push(0xFF);
        }
    }
}

/// The primary key of an index entry and the length of the entry's trailer, if the entry is
/// well formed.
#[inline]
fn index_entry_parts(key: &[u8]) -> Option<(&[u8], usize)> {
    let (&last, rest) = key.split_last()?;
    let (len, rest) = if last < 0xFF {
        (usize::from(last), rest)
    } else {
        let (rest, len) = rest.split_last_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if len < 0xFF {
            return None;
        }
        (len, rest)
    };
    let start = rest.len().checked_sub(len)?;
    // At least the one-byte index tag in front.
    (start >= 1).then(|| (&rest[start..], key.len() - rest.len()))
}

/// The primary key of an index entry, if the entry is well formed.
pub(crate) fn index_entry_pk(key: &[u8]) -> Option<&[u8]> {
    index_entry_parts(key).map(|(pk, _)| pk)
}

/// The primary key of an index entry found under `prefix`, if the entry holds exactly the
/// value of the prefix (and not a longer value that happens to start with it).
#[inline]
pub(crate) fn index_entry_pk_exact<'k>(prefix: &[u8], key: &'k [u8]) -> Option<&'k [u8]> {
    let (pk, trailer) = index_entry_parts(key)?;
    (key.len() == prefix.len() + pk.len() + trailer).then_some(pk)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of damage to `sealed` (a value of schema version `version`) is an error.
    fn damage_is_detected(sealed: &[u8], version: u32) {
        assert_eq!(open(sealed).map(|(v, _)| v), Ok(version));
        for cut in 0..sealed.len() {
            assert!(open(&sealed[..cut]).is_err(), "truncated at {cut}");
        }
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.to_vec();
                bad[i] ^= 1 << bit;
                assert!(
                    open_version(&bad, version).is_err(),
                    "flipped bit {bit} of byte {i}"
                );
            }
        }
        let mut longer = sealed.to_vec();
        longer.push(0);
        assert!(open(&longer).is_err(), "a byte appended");
    }

    #[test]
    fn values_round_trip_and_damage_is_detected() {
        let sealed = seal(3, &(7u64, "hello")).unwrap();
        assert_eq!(sealed[0], VALUE_FORMAT);
        assert_eq!(sealed.len(), 6 + 1 + 6);
        let (version, payload) = open(&sealed).unwrap();
        assert_eq!(version, 3);
        assert_eq!(seal_payload(3, payload), sealed);
        assert!(open_version(&sealed, 4).unwrap_err().contains("version 3"));
        damage_is_detected(&sealed, 3);
    }

    #[test]
    fn every_schema_version_has_one_header() {
        for version in [
            0,
            1,
            0x7F,
            0x80,
            0x3FFF,
            0x4000,
            0x1F_FFFF,
            0x20_0000,
            0x0FFF_FFFF,
            0x1000_0000,
            u32::MAX,
        ] {
            let sealed = seal_payload(version, b"payload");
            assert_eq!(sealed.len(), header_len(version) + 7);
            assert_eq!(
                open(&sealed),
                Ok((version, &b"payload"[..])),
                "{version:#x}"
            );
            damage_is_detected(&sealed, version);
        }
        // The same version in a longer form is refused.
        let long_zero = [VALUE_FORMAT, 0x80, 0x00, 0, 0, 0, 0];
        assert!(open(&long_zero).unwrap_err().contains("shortest"));
        let too_big = [VALUE_FORMAT, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0, 0, 0, 0];
        assert!(open(&too_big).unwrap_err().contains("range"));
        assert!(open(&[7, 1, 2, 3, 4, 5]).unwrap_err().contains("format 7"));
        assert!(open(&[]).unwrap_err().contains("truncated"));
    }

    /// `(7u64, "hello")` at schema version 3 and `"x"` at schema version 1, as format 1
    /// wrote them (bytes from the build that wrote format 1).
    const FORMAT_1: [&[u8]; 2] = [
        &[
            78, 83, 1, 0, 0, 0, 3, 189, 3, 247, 206, 7, 5, 104, 101, 108, 108, 111,
        ],
        &[78, 83, 1, 0, 0, 0, 1, 93, 33, 226, 78, 1, 120],
    ];

    #[test]
    fn format_1_values_still_read() {
        let (version, payload) = open(FORMAT_1[0]).unwrap();
        assert_eq!(version, 3);
        let value: (u64, String) = netabase_core::model::decode_value("T", payload).unwrap();
        assert_eq!(value, (7, "hello".to_owned()));
        assert_eq!(open_version(FORMAT_1[1], 1), Ok(&[1, b'x'][..]));
        damage_is_detected(FORMAT_1[0], 3);
        damage_is_detected(FORMAT_1[1], 1);
        let mut other_format = FORMAT_1[1].to_vec();
        other_format[2] = 9;
        assert!(open(&other_format).unwrap_err().contains("format 9"));
    }

    #[test]
    fn index_entries_give_back_their_primary_key() {
        let key = index_key(1, b"alice\0\0", b"\0\0\0\x07");
        assert_eq!(key, b"\x01alice\0\0\0\0\0\x07\x04");
        assert_eq!(index_entry_pk(&key), Some(&b"\0\0\0\x07"[..]));
        let prefix = index_prefix(1, b"alice\0\0");
        assert!(key.starts_with(&prefix));
        assert_eq!(
            index_entry_pk_exact(&prefix, &key),
            Some(&b"\0\0\0\x07"[..])
        );
        assert_eq!(index_entry_pk_exact(&index_prefix(1, b"ali"), &key), None);
        assert_eq!(index_entry_pk(b"\0"), None);
        assert_eq!(index_entry_pk(b"\x05"), None);
        assert_eq!(index_entry_pk(b"\x01ab\x09"), None);
        // A long length that would fit the short form is malformed.
        assert_eq!(index_entry_pk(b"\x01abcd\0\0\0\x04\xFF"), None);
        assert_eq!(index_entry_pk(b"\0\0\xFF"), None);
    }

    #[test]
    fn index_entries_of_every_size_round_trip_and_sort_by_index() {
        let mut keys = Vec::new();
        for index in [0u16, 1, 0x7F, 0x80, 0x81, 0x100, 0x7FFF, 0xFFFF] {
            for pk_len in [0usize, 1, 8, 0xFE, 0xFF, 0x100, 1000] {
                let pk: Vec<u8> = (0..pk_len).map(|i| (i * 7) as u8).collect();
                for value in [&b""[..], b"v\0\0", b"\xFF\xFF"] {
                    let key = index_key(index, value, &pk);
                    let prefix = index_prefix(index, value);
                    assert!(key.starts_with(&prefix));
                    assert_eq!(index_entry_pk(&key), Some(&pk[..]), "{index} {pk_len}");
                    assert_eq!(index_entry_pk_exact(&prefix, &key), Some(&pk[..]));
                    keys.push((index, key));
                }
            }
        }
        // Entries of a lower index sort before every entry of a higher one.
        keys.sort_by(|a, b| a.1.cmp(&b.1));
        assert!(keys.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
