//! The typed operations, written once over the backend's transactions.

use std::ops::{Bound, ControlFlow, RangeBounds};

use netabase_core::model::{
    ModelError, ModelId, NetabaseDefinition, NetabaseModel, PrimaryKey, SecondaryKey, decode_value,
    encode_key_prefix, encode_secondary_keys,
};
use netabase_core::{PeerId, Version};
use serde::Serialize;

use crate::backend::{
    Backend, FULL_RANGE, KeyRange, ReadTransaction, WriteTransaction, prefix_end,
};
use crate::codec;
use crate::error::{Result, StoreError};

/// The name of the table of definition facts (name, schema version, value format).
pub const META_TABLE: &str = "meta";

/// The name of the table of record versions: the version of each typed row as a node last
/// wrote or learned it (key: model id, big-endian, then the primary-key bytes; value: the
/// timestamp, big-endian, then the origin peer id's bytes).
pub const VERSIONS_TABLE: &str = "versions";

/// The key of a row's entry in [`VERSIONS_TABLE`].
fn version_key(model: ModelId, pk: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + pk.len());
    key.extend_from_slice(&model.to_be_bytes());
    key.extend_from_slice(pk);
    key
}

fn encode_version(version: &Version) -> Vec<u8> {
    let origin = version.origin.as_bytes();
    let mut out = Vec::with_capacity(8 + origin.len());
    out.extend_from_slice(&version.timestamp.to_be_bytes());
    out.extend_from_slice(origin);
    out
}

fn decode_version(key: &[u8], bytes: &[u8]) -> Result<Version> {
    let corrupt = |reason: &str| StoreError::corrupt(VERSIONS_TABLE, key, reason);
    let (timestamp, origin) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("shorter than a timestamp"))?;
    Ok(Version {
        timestamp: u64::from_be_bytes(*timestamp),
        origin: PeerId::from_bytes(origin).map_err(|_| corrupt("not a peer id"))?,
    })
}

/// Writes the version of row `pk` of model `model`.
pub(crate) fn set_version<T: WriteTransaction + ?Sized>(
    tx: &mut T,
    model: ModelId,
    pk: &[u8],
    version: &Version,
) -> Result<()> {
    tx.put(
        VERSIONS_TABLE,
        &version_key(model, pk),
        &encode_version(version),
    )
}

/// Removes the version of row `pk` of model `model`.
pub(crate) fn remove_version<T: WriteTransaction + ?Sized>(
    tx: &mut T,
    model: ModelId,
    pk: &[u8],
) -> Result<()> {
    tx.delete(VERSIONS_TABLE, &version_key(model, pk)).map(drop)
}

/// The version of row `pk` of model `model`, if one is recorded.
pub(crate) fn read_version<T: ReadTransaction + ?Sized>(
    tx: &T,
    model: ModelId,
    pk: &[u8],
) -> Result<Option<Version>> {
    let key = version_key(model, pk);
    match tx.get(VERSIONS_TABLE, &key)? {
        Some(bytes) => decode_version(&key, &bytes).map(Some),
        None => Ok(None),
    }
}

/// The name of the table holding the records of model `model`.
pub fn records_table(model: &str) -> String {
    format!("m/{model}")
}

/// The name of the table holding the secondary-index entries of model `model`.
pub fn index_table(model: &str) -> String {
    format!("i/{model}")
}

/// The tables of one model.
#[derive(Debug)]
pub(crate) struct ModelTables {
    pub(crate) name: &'static str,
    pub(crate) records: String,
    pub(crate) index: String,
}

/// The tables of every model of a definition, by model id.
#[derive(Debug)]
pub(crate) struct Tables(Vec<ModelTables>);

impl Tables {
    pub(crate) fn of<D: NetabaseDefinition>() -> Self {
        let mut tables: Vec<ModelTables> = Vec::with_capacity(D::MODELS.len());
        for (i, info) in D::MODELS.iter().enumerate() {
            debug_assert_eq!(usize::from(info.id), i, "MODELS is indexed by model id");
            tables.push(ModelTables {
                name: info.name,
                records: records_table(info.name),
                index: index_table(info.name),
            });
        }
        Tables(tables)
    }

    #[inline]
    pub(crate) fn get(&self, model: ModelId) -> Result<&ModelTables> {
        // Not `ok_or`: building (and dropping) the error on every lookup is measurable.
        match self.0.get(usize::from(model)) {
            Some(tables) => Ok(tables),
            None => Err(StoreError::Model(ModelError::UnknownModel(model))),
        }
    }

    pub(crate) fn all(&self) -> &[ModelTables] {
        &self.0
    }
}

/// The records a scan read, and the errors of the records it could not read.
///
/// Scans skip records that fail to decode and report each of them in [`errors`] as a
/// [`StoreError::Corrupt`] naming its key ("skip with error"): a damaged record does not
/// hide the others. [`strict`](Scan::strict) turns the first error into the result, which
/// is what [`Store::range`](crate::Store::range) and the other scans that return a plain
/// `Vec` do.
///
/// [`errors`]: Scan::errors
#[derive(Debug)]
pub struct Scan<M> {
    /// The records that decoded, in primary-key order.
    pub records: Vec<M>,
    /// One error per record that did not decode, in primary-key order.
    pub errors: Vec<StoreError>,
}

impl<M> Scan<M> {
    /// The records, or the first error if any record did not decode.
    pub fn strict(self) -> Result<Vec<M>> {
        match self.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(self.records),
        }
    }

    /// Whether every record decoded.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

pub(crate) fn tables_of<M: NetabaseModel>(tables: &Tables) -> Result<&ModelTables> {
    tables.get(M::ID)
}

/// Decodes a stored value of model `M` found under `key`.
#[inline]
pub(crate) fn decode_stored<M: NetabaseModel>(key: &[u8], bytes: &[u8]) -> Result<M> {
    let version = <M::Definition as NetabaseDefinition>::SCHEMA_VERSION;
    let payload =
        codec::open_version(bytes, version).map_err(|r| StoreError::corrupt(M::NAME, key, r))?;
    decode_value::<M>(M::NAME, payload)
        .map_err(|e| StoreError::corrupt(M::NAME, key, model_reason(e)))
}

/// Decodes a stored value of model `model` of definition `D` found under `key`.
pub(crate) fn decode_stored_definition<D: NetabaseDefinition>(
    name: &'static str,
    model: ModelId,
    key: &[u8],
    bytes: &[u8],
) -> Result<D> {
    let payload = codec::open_version(bytes, D::SCHEMA_VERSION)
        .map_err(|r| StoreError::corrupt(name, key, r))?;
    D::decode_model(model, payload).map_err(|e| StoreError::corrupt(name, key, model_reason(e)))
}

fn model_reason(e: ModelError) -> String {
    match e {
        ModelError::Decode { reason, .. } => format!("does not decode: {reason}"),
        other => other.to_string(),
    }
}

fn encode_error(e: String) -> StoreError {
    StoreError::Model(ModelError::Encode(e))
}

std::thread_local! {
    /// A reusable buffer for the encoded keys of lookups.
    static KEY_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// A reusable buffer for the index keys of a write.
    static INDEX_KEY_BUFFER: std::cell::RefCell<Vec<u8>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A per-thread buffer.
type Buffer = std::thread::LocalKey<std::cell::RefCell<Vec<u8>>>;

/// Calls `f` with `buffer`, emptied (a fresh vector if this thread's buffer is in use further
/// up the stack).
#[inline]
fn with_buffer<R>(buffer: &'static Buffer, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    buffer.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            if buffer.capacity() > 4096 {
                buffer.shrink_to(256);
            }
            f(&mut buffer)
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// Appends to `buf` the smallest key greater than every key that starts with `buf` (what
/// [`prefix_end`] returns); returns `false`, appending nothing, when there is none.
fn write_prefix_end(buf: &mut Vec<u8>) -> bool {
    let Some(last) = buf.iter().rposition(|&b| b < 0xFF) else {
        return false;
    };
    buf.extend_from_within(..=last);
    if let Some(b) = buf.last_mut() {
        *b += 1;
    }
    true
}

/// Calls `f` with the encoded `key`, built on the stack when it is short
/// ([`PrimaryKey::with_key_bytes`]).
#[inline]
fn with_key_bytes<K: PrimaryKey, R>(key: &K, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
    key.with_key_bytes(f)?
}

fn bound_bytes<K: PrimaryKey>(bound: Bound<&K>) -> Result<Bound<Vec<u8>>> {
    Ok(match bound {
        Bound::Included(k) => Bound::Included(k.key_bytes()?),
        Bound::Excluded(k) => Bound::Excluded(k.key_bytes()?),
        Bound::Unbounded => Bound::Unbounded,
    })
}

/// The record of the key's model under `key`, in a read transaction of its own
/// ([`Backend::read_one`]), decoded straight from the backend's bytes.
#[inline]
pub(crate) fn get_one<K: PrimaryKey, B: Backend>(
    backend: &B,
    tables: &Tables,
    key: &K,
) -> Result<Option<K::Model>> {
    let t = tables_of::<K::Model>(tables)?;
    with_key_bytes(key, |pk| {
        backend.read_one(&t.records, pk, |bytes| decode_stored::<K::Model>(pk, bytes))
    })
}

/// Reads of typed records, over any read transaction.
pub(crate) struct Reader<'a, T: ?Sized> {
    pub(crate) tx: &'a T,
    pub(crate) tables: &'a Tables,
}

impl<T: ReadTransaction + ?Sized> Reader<'_, T> {
    /// The record of model `M` under `pk`, decoded straight from the backend's bytes.
    #[inline]
    fn read<M: NetabaseModel>(&self, t: &ModelTables, pk: &[u8]) -> Result<Option<M>> {
        let mut out = None;
        self.tx.get_with(&t.records, pk, &mut |bytes| {
            out = Some(decode_stored::<M>(pk, bytes)?);
            Ok(())
        })?;
        Ok(out)
    }

    #[inline]
    pub(crate) fn get<K: PrimaryKey>(&self, key: &K) -> Result<Option<K::Model>> {
        let t = tables_of::<K::Model>(self.tables)?;
        with_key_bytes(key, |pk| self.read(t, pk))
    }

    /// The records whose secondary key is `key`. The index range, the primary keys found
    /// and the list of them live in per-thread buffers and on the stack: a lookup allocates
    /// nothing but its result (and the key's encoding).
    pub(crate) fn get_by_secondary<S: SecondaryKey>(&self, key: &S) -> Result<Vec<S::Model>> {
        let t = tables_of::<S::Model>(self.tables)?;
        let value = key.value_bytes()?;
        with_buffer(&KEY_BUFFER, |bounds| {
            // `bounds` holds the prefix of the entries, then the first key after them.
            codec::write_index_prefix(bounds, key.index(), &value);
            let split = bounds.len();
            let bounded = write_prefix_end(bounds);
            let (prefix, end) = bounds.split_at(split);
            let range: KeyRange<'_> = (
                Bound::Included(prefix),
                if bounded {
                    Bound::Excluded(end)
                } else {
                    Bound::Unbounded
                },
            );
            with_buffer(&INDEX_KEY_BUFFER, |pks| {
                // Each primary key found, behind its length (`u32`).
                let mut count = 0;
                self.tx.scan(&t.index, range, &mut |k, _| {
                    if let Some(pk) = codec::index_entry_pk_exact(prefix, k) {
                        pks.extend_from_slice(&(pk.len() as u32).to_ne_bytes());
                        pks.extend_from_slice(pk);
                        count += 1;
                    }
                    Ok(ControlFlow::Continue(()))
                })?;
                let mut rest = pks.as_slice();
                let mut next_key = || {
                    let (len, tail) = rest.split_first_chunk::<4>()?;
                    let (pk, tail) = tail.split_at(u32::from_ne_bytes(*len) as usize);
                    rest = tail;
                    Some(pk)
                };
                const STACK: usize = 16;
                let mut on_stack: [&[u8]; STACK] = [&[]; STACK];
                let on_heap: Vec<&[u8]>;
                let keys: &[&[u8]] = if count <= STACK {
                    for slot in &mut on_stack[..count] {
                        *slot = next_key().unwrap_or_default();
                    }
                    &on_stack[..count]
                } else {
                    on_heap = std::iter::from_fn(next_key).collect();
                    &on_heap
                };
                let mut out = Vec::with_capacity(count);
                self.tx.get_many_with(&t.records, keys, &mut |i, bytes| {
                    out.push(decode_stored::<S::Model>(keys[i], bytes)?);
                    Ok(())
                })?;
                Ok(out)
            })
        })
    }

    pub(crate) fn scan_bytes<M: NetabaseModel>(
        &self,
        range: KeyRange<'_>,
        limit: usize,
    ) -> Result<Scan<M>> {
        let t = tables_of::<M>(self.tables)?;
        let mut scan = Scan {
            records: Vec::new(),
            errors: Vec::new(),
        };
        if limit == 0 {
            return Ok(scan);
        }
        self.tx.scan(&t.records, range, &mut |k, v| {
            match decode_stored::<M>(k, v) {
                Ok(m) => scan.records.push(m),
                Err(e) => scan.errors.push(e),
            }
            Ok(if scan.records.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        Ok(scan)
    }

    pub(crate) fn scan<M: NetabaseModel>(
        &self,
        range: impl RangeBounds<M::PrimaryKey>,
        limit: usize,
    ) -> Result<Scan<M>> {
        let lo = bound_bytes(range.start_bound())?;
        let hi = bound_bytes(range.end_bound())?;
        self.scan_bytes(
            (
                lo.as_ref().map(Vec::as_slice),
                hi.as_ref().map(Vec::as_slice),
            ),
            limit,
        )
    }

    pub(crate) fn prefix<M: NetabaseModel, P: Serialize + ?Sized>(
        &self,
        prefix: &P,
    ) -> Result<Vec<M>> {
        let start = encode_key_prefix(prefix)?;
        let end = prefix_end(&start);
        let range: KeyRange<'_> = (
            Bound::Included(&start),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        self.scan_bytes(range, usize::MAX)?.strict()
    }

    pub(crate) fn count<M: NetabaseModel>(&self) -> Result<u64> {
        self.tx.len(&tables_of::<M>(self.tables)?.records)
    }

    pub(crate) fn version(&self, model: ModelId, key: &[u8]) -> Result<Option<Version>> {
        read_version(self.tx, model, key)
    }

    pub(crate) fn get_definition<D: NetabaseDefinition>(
        &self,
        model: ModelId,
        key: &[u8],
    ) -> Result<Option<D>> {
        let t = self.tables.get(model)?;
        let mut out = None;
        self.tx.get_with(&t.records, key, &mut |bytes| {
            out = Some(decode_stored_definition(t.name, model, key, bytes)?);
            Ok(())
        })?;
        Ok(out)
    }
}

/// Removes every index entry of record `pk` (used when its old value cannot be decoded,
/// so its secondary keys are unknown).
fn purge_index_entries<T: WriteTransaction + ?Sized>(
    tx: &mut T,
    t: &ModelTables,
    pk: &[u8],
) -> Result<()> {
    let mut doomed = Vec::new();
    tx.scan(&t.index, FULL_RANGE, &mut |k, _| {
        if codec::index_entry_pk(k) == Some(pk) {
            doomed.push(k.to_vec());
        }
        Ok(ControlFlow::Continue(()))
    })?;
    for k in doomed {
        tx.delete(&t.index, &k)?;
    }
    Ok(())
}

type IndexKeys = Vec<(u16, Vec<u8>)>;

/// Index changes in the order they were made: key, and `true` for a put, `false` for a
/// delete.
type IndexChanges = Vec<(Vec<u8>, bool)>;

/// Writes pending index changes in key order (the last change of a key wins) and empties
/// `changes`.
fn flush_index_changes<T: WriteTransaction + ?Sized>(
    tx: &mut T,
    t: &ModelTables,
    changes: &mut IndexChanges,
) -> Result<()> {
    // Stable: changes of one key stay in the order they were made.
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    let ops: Vec<(&[u8], Option<&[u8]>)> = changes
        .iter()
        .enumerate()
        .filter(|&(i, (key, _))| changes.get(i + 1).is_none_or(|(next, _)| next != key))
        .map(|(_, (key, present))| (key.as_slice(), present.then_some(&[][..])))
        .collect();
    tx.apply(&t.index, &ops)?;
    changes.clear();
    Ok(())
}

/// Replaces index entries `old` of record `pk` by `new`.
fn reindex<T: WriteTransaction + ?Sized>(
    tx: &mut T,
    t: &ModelTables,
    pk: &[u8],
    old: Option<&IndexKeys>,
    new: &IndexKeys,
) -> Result<()> {
    let empty = Vec::new();
    let old = old.unwrap_or(&empty);
    with_buffer(&INDEX_KEY_BUFFER, |key| {
        for (index, value) in old {
            if !new.iter().any(|(i, v)| i == index && v == value) {
                key.clear();
                codec::write_index_key(key, *index, value, pk);
                tx.delete(&t.index, key)?;
            }
        }
        for (index, value) in new {
            if !old.iter().any(|(i, v)| i == index && v == value) {
                key.clear();
                codec::write_index_key(key, *index, value, pk);
                tx.put(&t.index, key, &[])?;
            }
        }
        Ok(())
    })
}

/// Writes a record and keeps its index entries right; returns the replaced value decoded
/// by `decode_old` (`None` if there was none, or if it could not be decoded; the index
/// entries of an undecodable old value are found by a scan and removed).
fn put_record<T, O>(
    tx: &mut T,
    t: &ModelTables,
    pk: &[u8],
    value: &[u8],
    keys: &IndexKeys,
    decode_old: impl FnOnce(&[u8]) -> Option<(O, IndexKeys)>,
) -> Result<Option<O>>
where
    T: WriteTransaction + ?Sized,
{
    let old = match tx.replace(&t.records, pk, value)? {
        Some(bytes) => match decode_old(&bytes) {
            Some(old) => Some(old),
            None => {
                purge_index_entries(tx, t, pk)?;
                None
            }
        },
        None => None,
    };
    reindex(tx, t, pk, old.as_ref().map(|(_, keys)| keys), keys)?;
    Ok(old.map(|(value, _)| value))
}

/// Removes a record and its index entries; returns the removed value decoded by
/// `decode_old` (see [`put_record`]).
fn remove_record<T, O>(
    tx: &mut T,
    t: &ModelTables,
    pk: &[u8],
    decode_old: impl FnOnce(&[u8]) -> Option<(O, IndexKeys)>,
) -> Result<Option<O>>
where
    T: WriteTransaction + ?Sized,
{
    let Some(bytes) = tx.take(&t.records, pk)? else {
        return Ok(None);
    };
    match decode_old(&bytes) {
        Some((value, keys)) => {
            reindex(tx, t, pk, Some(&keys), &Vec::new())?;
            Ok(Some(value))
        }
        None => {
            purge_index_entries(tx, t, pk)?;
            Ok(None)
        }
    }
}

fn typed_old<M: NetabaseModel>(pk: &[u8], bytes: &[u8]) -> Option<(M, IndexKeys)> {
    let old: M = decode_stored(pk, bytes).ok()?;
    let keys = encode_secondary_keys(&old).ok()?;
    Some((old, keys))
}

fn definition_old<D: NetabaseDefinition>(
    t: &ModelTables,
    model: ModelId,
    pk: &[u8],
    bytes: &[u8],
) -> Option<(D, IndexKeys)> {
    let old: D = decode_stored_definition(t.name, model, pk, bytes).ok()?;
    let keys = old.secondary_key_bytes().ok()?;
    Some((old, keys))
}

/// Writes of typed records, over any write transaction.
pub(crate) struct Writer<'a, T: ?Sized> {
    pub(crate) tx: &'a mut T,
    pub(crate) tables: &'a Tables,
}

impl<T: WriteTransaction + ?Sized> Writer<'_, T> {
    pub(crate) fn put<M: NetabaseModel>(&mut self, model: &M) -> Result<Option<M>> {
        let t = tables_of::<M>(self.tables)?;
        let version = <M::Definition as NetabaseDefinition>::SCHEMA_VERSION;
        let value = codec::seal(version, model).map_err(encode_error)?;
        let keys = encode_secondary_keys(model)?;
        with_key_bytes(&model.primary_key(), |pk| {
            put_record(self.tx, t, pk, &value, &keys, |old| typed_old(pk, old))
        })
    }

    /// Writes all `models` with one access per table where the backend benefits: records
    /// first, then the index changes they cause.
    pub(crate) fn put_many<'m, M: NetabaseModel>(
        &mut self,
        models: impl IntoIterator<Item = &'m M>,
    ) -> Result<usize> {
        let t = tables_of::<M>(self.tables)?;
        let version = <M::Definition as NetabaseDefinition>::SCHEMA_VERSION;
        let mut prepared = Vec::new();
        for model in models {
            let pk = model.key_bytes()?;
            let value = codec::seal(version, model).map_err(encode_error)?;
            prepared.push((pk, value, encode_secondary_keys(model)?));
        }
        let entries: Vec<(&[u8], &[u8])> = prepared
            .iter()
            .map(|(pk, value, _)| (pk.as_slice(), value.as_slice()))
            .collect();
        let olds = self.tx.replace_all(&t.records, &entries)?;
        // The last change of each index key wins (a record may appear twice).
        let mut changes = IndexChanges::with_capacity(prepared.len());
        for ((pk, _, keys), old) in prepared.iter().zip(olds) {
            let old_keys = match old {
                Some(bytes) => match typed_old::<M>(pk, &bytes) {
                    Some((_, keys)) => keys,
                    None => {
                        // An undecodable old value: its entries are found by a scan, which
                        // must see the changes so far.
                        flush_index_changes(self.tx, t, &mut changes)?;
                        purge_index_entries(self.tx, t, pk)?;
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            for (index, value) in &old_keys {
                if !keys.iter().any(|(i, v)| i == index && v == value) {
                    changes.push((codec::index_key(*index, value, pk), false));
                }
            }
            for (index, value) in keys {
                if !old_keys.iter().any(|(i, v)| i == index && v == value) {
                    changes.push((codec::index_key(*index, value, pk), true));
                }
            }
        }
        flush_index_changes(self.tx, t, &mut changes)?;
        Ok(prepared.len())
    }

    pub(crate) fn remove<K: PrimaryKey>(&mut self, key: &K) -> Result<Option<K::Model>> {
        let t = tables_of::<K::Model>(self.tables)?;
        with_key_bytes(key, |pk| {
            remove_record(self.tx, t, pk, |old| typed_old(pk, old))
        })
    }

    pub(crate) fn put_definition<D: NetabaseDefinition>(&mut self, value: &D) -> Result<Option<D>> {
        let model = value.model_id();
        let t = self.tables.get(model)?;
        let pk = value.primary_key_bytes()?;
        let sealed = codec::seal_payload(D::SCHEMA_VERSION, &value.encode_model()?);
        let keys = value.secondary_key_bytes()?;
        put_record(self.tx, t, &pk, &sealed, &keys, |old| {
            definition_old(t, model, &pk, old)
        })
    }

    pub(crate) fn remove_definition<D: NetabaseDefinition>(
        &mut self,
        model: ModelId,
        key: &[u8],
    ) -> Result<Option<D>> {
        let t = self.tables.get(model)?;
        remove_record(self.tx, t, key, |old| definition_old(t, model, key, old))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_written_in_place_match_prefix_end() {
        for prefix in [
            &b""[..],
            b"\xFF",
            b"\xFF\xFF",
            b"a",
            b"a\xFF",
            b"\x00\x01\xFF\xFF",
            b"ab\x00",
        ] {
            let mut buf = prefix.to_vec();
            let bounded = write_prefix_end(&mut buf);
            let expected = prefix_end(prefix);
            assert_eq!(bounded, expected.is_some(), "{prefix:02x?}");
            assert_eq!(&buf[..prefix.len()], prefix);
            assert_eq!(
                &buf[prefix.len()..],
                expected.as_deref().unwrap_or_default()
            );
        }
    }
}
