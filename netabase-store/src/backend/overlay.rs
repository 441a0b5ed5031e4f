//! Transactions for flat ordered key-value stores without their own multi-key transactions
//! (sled, the memory maps), written once for both.
//!
//! # Layout
//!
//! Tables are key prefixes. Each table name gets a small number, its id, the first time a
//! transaction writes to it; the id is recorded in the same commit, and its encoding is the
//! prefix of every key of the table: one byte (`0x01..=0x7F`) for the first 127 tables, two
//! bytes (`0x80 | high`, `low`) for the others, so that no table's prefix is a prefix of
//! another's and keys cost one byte more than they would in a store of their own.
//! Keys that start with `0x00` belong to the layout itself:
//!
//! | key | value |
//! |---|---|
//! | `00 'v'` | the layout version ([`LAYOUT_VERSION`]) |
//! | `00 't'` ++ table name | the table's id (`u16`, big-endian) |
//!
//! A table that was never written has no id and reads as empty.
//!
//! # Transactions
//!
//! Writers are serialised by a mutex; a write transaction buffers its changes in an overlay
//! that its own reads consult, and at commit applies them in one atomic step under the
//! write side of a reader-writer lock. Read transactions hold the read side for their whole
//! life, so every read of one transaction sees the same committed state.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::{Bound, ControlFlow, RangeBounds};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard};

use super::{KeyRange, ValueReader, Visitor, prefix_end};
use crate::error::{Result, StoreError};

/// The version of the layout above.
pub(crate) const LAYOUT_VERSION: u8 = 1;

/// The key of the layout version.
pub(crate) const LAYOUT_KEY: &[u8] = b"\x00v";

/// The prefix of the table-id entries.
pub(crate) const TABLE_ID_PREFIX: &[u8] = b"\x00t";

/// The changes of a write transaction: `None` removes the key. Keys and values are the
/// store's own bytes (sled keeps short ones inline, without allocating).
///
/// A hash map: a batch of writes looks every key up before it changes it, and hashing a key
/// costs much less than the comparisons of an ordered map. Scans inside a write
/// transaction sort the changes that fall in their range.
pub(crate) type Changes<B> = HashMap<B, Option<B>, KeyHashing>;

/// A flat ordered key-value store.
pub(crate) trait FlatKv: Send + Sync + 'static {
    /// Keys and values as the store keeps them, so that a commit hands them over without
    /// copying them again.
    type Bytes: AsRef<[u8]>
        + Borrow<[u8]>
        + Hash
        + Eq
        + for<'b> From<&'b [u8]>
        + std::fmt::Debug
        + Send
        + Sync;
    /// Calls `read` with the value under `key`, if any; returns whether there was one.
    fn get_with(&self, key: &[u8], read: &mut ValueReader<'_>) -> Result<bool>;
    /// Calls `read` with the value under `key`, if any, and returns what it returns.
    fn get_one<R>(&self, key: &[u8], read: impl FnOnce(&[u8]) -> Result<R>) -> Result<Option<R>>
    where
        Self: Sized,
    {
        let mut read = Some(read);
        let mut out = None;
        self.get_with(key, &mut |value| {
            if let Some(read) = read.take() {
                out = Some(read(value)?);
            }
            Ok(())
        })?;
        Ok(out)
    }
    /// Visits the entries within the (non-empty) range in key order.
    fn scan(&self, range: KeyRange<'_>, visit: &mut Visitor<'_>) -> Result<()>;
    /// Applies all changes atomically.
    fn apply(&mut self, changes: Changes<Self::Bytes>) -> Result<()>;
    /// Makes applied changes durable (as far as the store can).
    fn sync(&self) -> Result<()>;
}

/// A table's id (`1..=0x7FFF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TableId(u16);

impl TableId {
    const MAX: u16 = 0x7FFF;

    /// The key prefix of the table (the first `len` bytes of the array).
    #[inline]
    fn prefix(self) -> ([u8; 2], usize) {
        if self.0 < 0x80 {
            ([self.0 as u8, 0], 1)
        } else {
            ([0x80 | (self.0 >> 8) as u8, self.0 as u8], 2)
        }
    }
}

/// The hasher of the overlay's maps: keys of a write transaction (which may come from peers,
/// as DHT records do) and table names.
///
/// Each word of input is mixed into the state by a folded multiply (the high and low halves
/// of a 128-bit product, xored) with a secret drawn once per process, so that colliding keys
/// cannot be chosen without knowing it. It costs a fraction of std's SipHash on short keys.
#[derive(Clone, Copy)]
pub(crate) struct KeyHashing {
    secret: [u64; 2],
}

impl Default for KeyHashing {
    fn default() -> Self {
        static SECRET: OnceLock<[u64; 2]> = OnceLock::new();
        let secret = *SECRET.get_or_init(|| {
            let random = std::collections::hash_map::RandomState::new();
            [
                random.hash_one(0x5EC0_u64) | 1,
                random.hash_one(0x5EC1_u64) | 1,
            ]
        });
        KeyHashing { secret }
    }
}

impl BuildHasher for KeyHashing {
    type Hasher = KeyHasher;

    #[inline]
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            state: self.secret[0],
            secret: self.secret[1],
        }
    }
}

/// See [`KeyHashing`].
pub(crate) struct KeyHasher {
    state: u64,
    secret: u64,
}

/// The low and high halves of `a * b` folded together.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

impl KeyHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.state = folded_multiply(self.state ^ word, self.secret ^ 0x9E37_79B9_7F4A_7C15);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let word: [u8; 8] = word.try_into().unwrap_or_default();
            self.mix(u64::from_le_bytes(word));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let word = tail
                .iter()
                .rev()
                .fold(0u64, |word, &byte| (word << 8) | u64::from(byte));
            // The tail's length keeps tails that differ only in trailing zeros apart.
            self.mix(word ^ ((tail.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        self.mix(u64::from(byte));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        folded_multiply(self.state, self.secret)
    }
}

/// The ids of the tables that have one.
///
/// Every operation looks its table up here, so the first few tables (most stores have a
/// handful: a few per model) are kept in a list that is searched by comparing a summary of
/// each name (its length and its first and last eight bytes), which costs less than hashing
/// the name; the others are in a hash map.
#[derive(Debug, Default)]
struct TableIds {
    few: Vec<(NameTag, Box<str>, TableId)>,
    more: HashMap<Box<str>, TableId, KeyHashing>,
    /// The id the next new table gets.
    next: u16,
}

/// How many tables [`TableIds`] keeps in its list.
const FEW_TABLES: usize = 8;

/// A table name's length and its first and last eight bytes (all of a name of at most 16
/// bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameTag {
    len: usize,
    head: u64,
    tail: u64,
}

impl NameTag {
    #[inline]
    fn of(name: &str) -> Self {
        let bytes = name.as_bytes();
        let (head, tail) = match (bytes.first_chunk::<8>(), bytes.last_chunk::<8>()) {
            (Some(head), Some(tail)) => (u64::from_le_bytes(*head), u64::from_le_bytes(*tail)),
            _ => {
                let word = bytes
                    .iter()
                    .rev()
                    .fold(0u64, |word, &b| (word << 8) | u64::from(b));
                (word, word)
            }
        };
        NameTag {
            len: bytes.len(),
            head,
            tail,
        }
    }
}

impl TableIds {
    /// Reads the ids recorded in `kv`, after checking that `kv` has this layout. `kv` must
    /// be empty or written by this layout.
    #[cfg(feature = "sled")]
    fn load<K: FlatKv>(kv: &K) -> Result<Self> {
        let mut version = None;
        kv.get_with(LAYOUT_KEY, &mut |v| {
            version = Some(v.to_vec());
            Ok(())
        })?;
        let mut tables = TableIds::empty();
        match version.as_deref() {
            Some([LAYOUT_VERSION]) => {}
            Some(other) => {
                return Err(StoreError::Backend(format!(
                    "the store's key layout is version {other:?}, this build reads version \
                     {LAYOUT_VERSION}"
                )));
            }
            None => {
                let mut empty = true;
                kv.scan((Bound::Unbounded, Bound::Unbounded), &mut |_, _| {
                    empty = false;
                    Ok(ControlFlow::Break(()))
                })?;
                if !empty {
                    return Err(StoreError::Backend(
                        "the store has entries but no key layout version: it was written by \
                         an older version of netabase-store (tables named in every key), \
                         which this build does not read"
                            .into(),
                    ));
                }
                return Ok(tables);
            }
        }
        let end = prefix_end(TABLE_ID_PREFIX);
        let range = (
            Bound::Included(TABLE_ID_PREFIX),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        kv.scan(range, &mut |k, v| {
            let name = std::str::from_utf8(&k[TABLE_ID_PREFIX.len()..]);
            let id = <[u8; 2]>::try_from(v).map(u16::from_be_bytes);
            match (name, id) {
                (Ok(name), Ok(id)) if (1..=TableId::MAX).contains(&id) => {
                    tables.insert(name.into(), TableId(id));
                    tables.next = tables.next.max(id + 1);
                    Ok(ControlFlow::Continue(()))
                }
                _ => Err(StoreError::Backend(format!(
                    "damaged table-id entry {k:02x?} = {v:02x?}"
                ))),
            }
        })?;
        Ok(tables)
    }

    fn empty() -> Self {
        TableIds {
            next: 1,
            ..TableIds::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.few.is_empty()
    }

    fn insert(&mut self, name: Box<str>, id: TableId) {
        if self.few.len() < FEW_TABLES {
            self.few.push((NameTag::of(&name), name, id));
        } else {
            self.more.insert(name, id);
        }
    }

    #[inline]
    fn get(&self, table: &str) -> Option<TableId> {
        let tag = NameTag::of(table);
        for (other, name, id) in &self.few {
            if *other == tag && (tag.len <= 16 || **name == *table) {
                return Some(*id);
            }
        }
        if self.more.is_empty() {
            return None;
        }
        self.more.get(table).copied()
    }
}

/// The committed state: the store and its table ids.
#[derive(Debug)]
pub(crate) struct Flat<K> {
    pub(crate) kv: K,
    tables: TableIds,
}

/// A flat store with its locks.
#[derive(Debug)]
pub(crate) struct Locked<K> {
    writer: Mutex<()>,
    data: RwLock<Flat<K>>,
}

impl<K: FlatKv> Locked<K> {
    /// Wraps `kv`, which must be empty or written by this layout.
    #[cfg(feature = "sled")]
    pub(crate) fn open(kv: K) -> Result<Self> {
        let tables = TableIds::load(&kv)?;
        Ok(Self::with_tables(kv, tables))
    }

    /// Wraps `kv`, which is empty.
    pub(crate) fn empty(kv: K) -> Self {
        Self::with_tables(kv, TableIds::empty())
    }

    fn with_tables(kv: K, tables: TableIds) -> Self {
        Locked {
            writer: Mutex::new(()),
            data: RwLock::new(Flat { kv, tables }),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Flat<K>> {
        self.data.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn begin_read(&self) -> OverlayRead<'_, K> {
        OverlayRead { data: self.read() }
    }

    /// [`Backend::read_one`](super::Backend::read_one): under the read lock, without a
    /// transaction.
    #[inline]
    pub(crate) fn read_one<R>(
        &self,
        table: &str,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<Option<R>> {
        let data = self.read();
        match data.tables.get(table) {
            Some(id) => with_key(id, key, |k| data.kv.get_one(k, read)),
            None => Ok(None),
        }
    }

    pub(crate) fn begin_write(&self, sync: bool) -> OverlayWrite<'_, K> {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        OverlayWrite {
            locked: self,
            committed: self.read(),
            _writer: writer,
            // Room for a record and a few index entries without growing.
            changes: Changes::with_capacity_and_hasher(8, KeyHashing::default()),
            new_tables: Vec::new(),
            sync,
        }
    }
}

/// Calls `f` with `prefix ++ key`, built on the stack when it is short.
#[inline]
fn with_key<R>(table: TableId, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    const INLINE: usize = 32;
    let (prefix, n) = table.prefix();
    let len = n + key.len();
    if len > INLINE {
        return f(&key_vec(table, key));
    }
    let mut buf = [0u8; INLINE];
    // Both prefix bytes: the key overwrites the second one of a one-byte prefix.
    buf[..2].copy_from_slice(&prefix);
    buf[n..len].copy_from_slice(key);
    f(&buf[..len])
}

/// `prefix ++ key` as a vector.
fn key_vec(table: TableId, key: &[u8]) -> Vec<u8> {
    let (prefix, n) = table.prefix();
    let mut out = Vec::with_capacity(n + key.len());
    out.extend_from_slice(&prefix[..n]);
    out.extend_from_slice(key);
    out
}

/// `prefix ++ key`, owned.
#[inline]
fn owned_key<B: for<'b> From<&'b [u8]>>(table: TableId, key: &[u8]) -> B {
    with_key(table, key, |k| B::from(k))
}

/// The flat bounds of `range` inside `table`.
fn flat_range(table: TableId, range: KeyRange<'_>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (prefix, n) = table.prefix();
    let prefix = &prefix[..n];
    let flat = |k: &[u8]| [prefix, k].concat();
    let lo = match range.0 {
        Bound::Included(k) => Bound::Included(flat(k)),
        Bound::Excluded(k) => Bound::Excluded(flat(k)),
        Bound::Unbounded => Bound::Included(prefix.to_vec()),
    };
    let hi = match range.1 {
        Bound::Included(k) => Bound::Included(flat(k)),
        Bound::Excluded(k) => Bound::Excluded(flat(k)),
        Bound::Unbounded => prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded),
    };
    (lo, hi)
}

fn as_slices(range: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> KeyRange<'_> {
    (
        range.0.as_ref().map(Vec::as_slice),
        range.1.as_ref().map(Vec::as_slice),
    )
}

/// Whether a range holds no key at all (such ranges make ordered maps panic).
pub(crate) fn is_empty_range(range: &KeyRange<'_>) -> bool {
    match (range.0, range.1) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

/// A read transaction: holds the read lock for its life.
pub(crate) struct OverlayRead<'a, K> {
    data: RwLockReadGuard<'a, Flat<K>>,
}

impl<K: FlatKv> OverlayRead<'_, K> {
    #[inline]
    pub(crate) fn get_with(
        &self,
        table: &str,
        key: &[u8],
        read: &mut ValueReader<'_>,
    ) -> Result<bool> {
        match self.data.tables.get(table) {
            Some(id) => with_key(id, key, |k| self.data.kv.get_with(k, read)),
            None => Ok(false),
        }
    }

    /// [`get_with`](Self::get_with) of every key, with one table lookup.
    pub(crate) fn get_many_with(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let Some(id) = self.data.tables.get(table) else {
            return Ok(());
        };
        for (i, key) in keys.iter().enumerate() {
            with_key(id, key, |k| self.data.kv.get_with(k, &mut |v| read(i, v)))?;
        }
        Ok(())
    }

    pub(crate) fn scan(
        &self,
        table: &str,
        range: KeyRange<'_>,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let Some(id) = self.data.tables.get(table) else {
            return Ok(());
        };
        if is_empty_range(&range) {
            return Ok(());
        }
        let skip = id.prefix().1;
        let flat = flat_range(id, range);
        self.data
            .kv
            .scan(as_slices(&flat), &mut |k, v| visit(&k[skip..], v))
    }
}

/// A write transaction: holds the writer lock for its life and buffers its changes.
///
/// It also holds the read side of the data lock until it commits: only the holder of the
/// writer lock changes the committed state, so that state stays as it is meanwhile.
pub(crate) struct OverlayWrite<'a, K: FlatKv> {
    locked: &'a Locked<K>,
    committed: RwLockReadGuard<'a, Flat<K>>,
    _writer: MutexGuard<'a, ()>,
    changes: Changes<K::Bytes>,
    /// Tables this transaction gave an id (registered when it commits).
    new_tables: Vec<(Box<str>, TableId)>,
    sync: bool,
}

impl<K: FlatKv> OverlayWrite<'_, K> {
    /// The id of `table`, if it has one (committed or given by this transaction).
    #[inline]
    fn table(&self, table: &str) -> Option<TableId> {
        if let Some(id) = self.committed.tables.get(table) {
            return Some(id);
        }
        self.new_tables
            .iter()
            .find(|(name, _)| &**name == table)
            .map(|&(_, id)| id)
    }

    /// The id of `table`, given one now if it has none.
    #[inline]
    fn table_for_write(&mut self, table: &str) -> Result<TableId> {
        match self.table(table) {
            Some(id) => Ok(id),
            None => self.new_table(table),
        }
    }

    #[cold]
    fn new_table(&mut self, table: &str) -> Result<TableId> {
        let committed = &self.committed;
        let next = usize::from(committed.tables.next) + self.new_tables.len();
        let id = match u16::try_from(next) {
            Ok(id) if id <= TableId::MAX => TableId(id),
            _ => {
                return Err(StoreError::Backend(format!(
                    "too many tables: at most {} fit in one store",
                    TableId::MAX
                )));
            }
        };
        if committed.tables.is_empty() && self.new_tables.is_empty() {
            self.changes.insert(
                K::Bytes::from(LAYOUT_KEY),
                Some(K::Bytes::from(&[LAYOUT_VERSION][..])),
            );
        }
        let key = [TABLE_ID_PREFIX, table.as_bytes()].concat();
        self.changes.insert(
            K::Bytes::from(&key[..]),
            Some(K::Bytes::from(&id.0.to_be_bytes()[..])),
        );
        self.new_tables.push((table.into(), id));
        Ok(id)
    }

    /// The committed value of flat key `k`, or this transaction's change of it.
    fn read_flat(&self, k: &[u8], read: &mut ValueReader<'_>) -> Result<bool> {
        match self.changes.get(k) {
            Some(Some(value)) => read(value.as_ref()).map(|()| true),
            Some(None) => Ok(false),
            None => self.committed.kv.get_with(k, read),
        }
    }

    fn get_flat(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut out = None;
        self.read_flat(k, &mut |v| {
            out = Some(v.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    #[inline]
    pub(crate) fn get_with(
        &self,
        table: &str,
        key: &[u8],
        read: &mut ValueReader<'_>,
    ) -> Result<bool> {
        match self.table(table) {
            Some(id) => with_key(id, key, |k| self.read_flat(k, read)),
            None => Ok(false),
        }
    }

    /// [`get_with`](Self::get_with) of every key, with one table lookup.
    pub(crate) fn get_many_with(
        &self,
        table: &str,
        keys: &[&[u8]],
        read: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let Some(id) = self.table(table) else {
            return Ok(());
        };
        for (i, key) in keys.iter().enumerate() {
            with_key(id, key, |k| self.read_flat(k, &mut |v| read(i, v)))?;
        }
        Ok(())
    }

    pub(crate) fn scan(
        &self,
        table: &str,
        range: KeyRange<'_>,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let Some(id) = self.table(table) else {
            return Ok(());
        };
        if is_empty_range(&range) {
            return Ok(());
        }
        let skip = id.prefix().1;
        let flat = flat_range(id, range);
        let bounds = as_slices(&flat);
        let mut pending: Vec<(&[u8], &Option<K::Bytes>)> = self
            .changes
            .iter()
            .map(|(k, v)| (k.as_ref(), v))
            .filter(|(k, _)| RangeBounds::<[u8]>::contains(&bounds, *k))
            .collect();
        pending.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut pending = pending.into_iter().peekable();
        let mut stopped = false;
        self.committed.kv.scan(as_slices(&flat), &mut |k, v| {
            // Changes before this base entry come first.
            while let Some((ck, cv)) = pending.next_if(|(ck, _)| *ck < k) {
                if let Some(cv) = cv
                    && visit(&ck[skip..], cv.as_ref())?.is_break()
                {
                    stopped = true;
                    return Ok(ControlFlow::Break(()));
                }
            }
            // A change of this very key replaces (or removes) it.
            let flow = match pending.next_if(|(ck, _)| *ck == k) {
                Some((_, Some(cv))) => visit(&k[skip..], cv.as_ref())?,
                Some((_, None)) => ControlFlow::Continue(()),
                None => visit(&k[skip..], v)?,
            };
            stopped = flow.is_break();
            Ok(flow)
        })?;
        if !stopped {
            for (ck, cv) in pending {
                if let Some(cv) = cv
                    && visit(&ck[skip..], cv.as_ref())?.is_break()
                {
                    break;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn replace(
        &mut self,
        table: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let id = self.table_for_write(table)?;
        let k: K::Bytes = owned_key(id, key);
        let old = self.get_flat(k.as_ref())?;
        self.changes.insert(k, Some(K::Bytes::from(value)));
        Ok(old)
    }

    pub(crate) fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let id = self.table_for_write(table)?;
        self.changes
            .insert(owned_key(id, key), Some(K::Bytes::from(value)));
        Ok(())
    }

    /// [`replace`](Self::replace) of every entry, with one table lookup.
    pub(crate) fn replace_all(
        &mut self,
        table: &str,
        entries: &[(&[u8], &[u8])],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let id = self.table_for_write(table)?;
        // Room for all of them at once, rather than growing the map step by step.
        self.changes.reserve(entries.len());
        let mut olds = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let k: K::Bytes = owned_key(id, key);
            olds.push(self.get_flat(k.as_ref())?);
            self.changes.insert(k, Some(K::Bytes::from(value)));
        }
        Ok(olds)
    }

    /// Puts (`Some`) or deletes (`None`) every key of `changes`, with one table lookup.
    pub(crate) fn apply(&mut self, table: &str, changes: &[(&[u8], Option<&[u8]>)]) -> Result<()> {
        let id = if changes.iter().any(|(_, value)| value.is_some()) {
            self.table_for_write(table)?
        } else {
            match self.table(table) {
                Some(id) => id,
                // Only deletes, in a table that holds nothing.
                None => return Ok(()),
            }
        };
        self.changes.reserve(changes.len());
        for (key, value) in changes {
            self.changes
                .insert(owned_key(id, key), value.map(K::Bytes::from));
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(id) = self.table(table) else {
            return Ok(None);
        };
        let k: K::Bytes = owned_key(id, key);
        let old = self.get_flat(k.as_ref())?;
        if old.is_some() {
            self.changes.insert(k, None);
        }
        Ok(old)
    }

    pub(crate) fn delete(&mut self, table: &str, key: &[u8]) {
        if let Some(id) = self.table(table) {
            self.changes.insert(owned_key(id, key), None);
        }
    }

    pub(crate) fn clear(&mut self, table: &str) -> Result<()> {
        let Some(id) = self.table(table) else {
            return Ok(());
        };
        let flat = flat_range(id, super::FULL_RANGE);
        let mut doomed: Vec<K::Bytes> = Vec::new();
        self.committed.kv.scan(as_slices(&flat), &mut |k, _| {
            doomed.push(K::Bytes::from(k));
            Ok(ControlFlow::Continue(()))
        })?;
        let bounds = as_slices(&flat);
        for (_, change) in self
            .changes
            .iter_mut()
            .filter(|(k, _)| RangeBounds::<[u8]>::contains(&bounds, (*k).as_ref()))
        {
            *change = None;
        }
        for k in doomed {
            self.changes.insert(k, None);
        }
        Ok(())
    }

    pub(crate) fn commit(self) -> Result<()> {
        let OverlayWrite {
            locked,
            committed,
            _writer,
            changes,
            new_tables,
            sync,
        } = self;
        if changes.is_empty() {
            return Ok(());
        }
        drop(committed);
        let mut data = locked.data.write().unwrap_or_else(PoisonError::into_inner);
        data.kv.apply(changes)?;
        for (name, id) in new_tables {
            data.tables.next = data.tables.next.max(id.0 + 1);
            data.tables.insert(name, id);
        }
        drop(data);
        if sync {
            locked.read().kv.sync()?;
        }
        Ok(())
    }
}

/// Defines the public read and write transaction types of a backend built on this module
/// (`$read` wrapping [`OverlayRead`], `$write` wrapping [`OverlayWrite`] of store `$kv`)
/// and their [`ReadTransaction`](super::ReadTransaction) and
/// [`WriteTransaction`](super::WriteTransaction) implementations.
macro_rules! overlay_transactions {
    // The reads, the same on both transaction types.
    (@read $ty:ident) => {
        impl $crate::backend::ReadTransaction for $ty<'_> {
            fn get(&self, table: &str, key: &[u8]) -> $crate::Result<Option<Vec<u8>>> {
                $crate::backend::copied(self, table, key)
            }
            #[inline]
            fn get_with(
                &self,
                table: &str,
                key: &[u8],
                read: &mut $crate::backend::ValueReader<'_>,
            ) -> $crate::Result<bool> {
                self.0.get_with(table, key, read)
            }
            fn get_many_with(
                &self,
                table: &str,
                keys: &[&[u8]],
                read: &mut dyn FnMut(usize, &[u8]) -> $crate::Result<()>,
            ) -> $crate::Result<()> {
                self.0.get_many_with(table, keys, read)
            }
            fn scan(
                &self,
                table: &str,
                range: $crate::backend::KeyRange<'_>,
                visit: &mut $crate::backend::Visitor<'_>,
            ) -> $crate::Result<()> {
                self.0.scan(table, range, visit)
            }
        }
    };
    ($(#[$read_doc:meta])* $read:ident, $(#[$write_doc:meta])* $write:ident, $kv:ty) => {
        $(#[$read_doc])*
        pub struct $read<'a>(super::overlay::OverlayRead<'a, $kv>);

        $(#[$write_doc])*
        pub struct $write<'a>(super::overlay::OverlayWrite<'a, $kv>);

        super::overlay::overlay_transactions!(@read $read);
        super::overlay::overlay_transactions!(@read $write);

        impl $crate::backend::WriteTransaction for $write<'_> {
            fn replace(
                &mut self,
                table: &str,
                key: &[u8],
                value: &[u8],
            ) -> $crate::Result<Option<Vec<u8>>> {
                self.0.replace(table, key, value)
            }
            fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> $crate::Result<()> {
                self.0.put(table, key, value)
            }
            fn take(&mut self, table: &str, key: &[u8]) -> $crate::Result<Option<Vec<u8>>> {
                self.0.take(table, key)
            }
            fn delete(&mut self, table: &str, key: &[u8]) -> $crate::Result<()> {
                self.0.delete(table, key);
                Ok(())
            }
            fn clear(&mut self, table: &str) -> $crate::Result<()> {
                self.0.clear(table)
            }
            fn replace_all(
                &mut self,
                table: &str,
                entries: &[(&[u8], &[u8])],
            ) -> $crate::Result<Vec<Option<Vec<u8>>>> {
                self.0.replace_all(table, entries)
            }
            fn apply(
                &mut self,
                table: &str,
                changes: &[(&[u8], Option<&[u8]>)],
            ) -> $crate::Result<()> {
                self.0.apply(table, changes)
            }
            fn commit(self) -> $crate::Result<()> {
                self.0.commit()
            }
        }
    };
}

pub(crate) use overlay_transactions;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_are_found_by_name_only() {
        let mut ids = TableIds::empty();
        let names: Vec<String> = ["", "a", "meta", "m/Message", "i/Message", "m/Messagf"]
            .into_iter()
            .map(String::from)
            .chain((0..20).map(|i| format!("a fairly long table name {i} of the store")))
            .chain((0..20).map(|i| format!("i/{i}")))
            .collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(ids.get(name), None);
            ids.insert(name.as_str().into(), TableId(i as u16 + 1));
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(ids.get(name), Some(TableId(i as u16 + 1)), "{name}");
        }
        for absent in [
            "b",
            "meta\0",
            "m/Messagd",
            "a fairly long table name 1 of the stork",
        ] {
            assert_eq!(ids.get(absent), None, "{absent}");
        }
    }

    #[test]
    fn table_prefixes_are_prefix_free() {
        let prefixes: Vec<Vec<u8>> = [1u16, 2, 0x7F, 0x80, 0x81, 0xFF, 0x100, 0x7FFE, 0x7FFF]
            .into_iter()
            .map(|id| {
                let (p, n) = TableId(id).prefix();
                p[..n].to_vec()
            })
            .collect();
        for (i, a) in prefixes.iter().enumerate() {
            assert_ne!(a[0], 0, "0x00 starts the layout's own keys");
            for (j, b) in prefixes.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "{a:02x?} is a prefix of {b:02x?}");
                }
            }
        }
    }
}
