//! The routing table: k-buckets over the XOR distance to the local key.
//!
//! Each bucket keeps at most `k` entries, each stamped with when it was last seen (ties
//! broken by a sequence number, so "least recently seen" is always one entry). Entries are
//! updated in place; the least recently seen one is found by a scan of the bucket only when
//! the bucket is full. When a new peer arrives at a full bucket it becomes the bucket's
//! single *pending* entry and the node probes the least recently seen entry; when the pending entry's deadline passes, it
//! replaces that entry if the entry is still disconnected, otherwise it is dropped. Live,
//! long-known peers are therefore never evicted by newcomers (the Kademlia paper's
//! preference for old contacts), and dead ones are replaced.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::time::Duration;

use crate::key::{Distance, Key};
use crate::peer::{Address, Addresses, PeerId};
use crate::time::Instant;

/// Most addresses kept per routing-table entry (newest kept).
pub const MAX_ADDRS_PER_ENTRY: usize = 8;

/// Whether the node currently has a working connection to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Connected, or answered recently.
    Connected,
    /// Not connected, or failed to answer.
    Disconnected,
}

/// A routing-table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The peer (its Kademlia key is `peer.kad_key()`).
    pub peer: PeerId,
    /// Its known addresses, newest last.
    pub addrs: Addresses,
    /// Its connection status.
    pub status: Status,
    /// When the peer was last seen alive (or added).
    pub last_seen: Instant,
    /// Order of that sighting within the table, breaking ties between equal times.
    seen_seq: u64,
}

impl Entry {
    fn recency(&self) -> (Instant, u64) {
        (self.last_seen, self.seen_seq)
    }
}

#[derive(Clone, Debug)]
struct Pending {
    entry: Entry,
    deadline: Instant,
}

#[derive(Clone, Debug, Default)]
struct Bucket {
    /// In no particular order.
    entries: Vec<Entry>,
    /// `entries[i].peer.kad_key().tag()`: finding a peer scans these eight bytes per entry
    /// instead of the entries themselves, which matters when a large network's tables do
    /// not fit in cache.
    tags: Vec<u64>,
    pending: Option<Pending>,
}

impl Bucket {
    fn position(&self, peer: &PeerId) -> Option<usize> {
        let tag = peer.kad_key().tag();
        self.tags
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == tag)
            .map(|(i, _)| i)
            .find(|&i| self.entries[i].peer == *peer)
    }

    fn push(&mut self, entry: Entry) {
        self.tags.push(entry.peer.kad_key().tag());
        self.entries.push(entry);
    }

    fn swap_remove(&mut self, pos: usize) -> Entry {
        self.tags.swap_remove(pos);
        self.entries.swap_remove(pos)
    }
}

/// What [`RoutingTable::update`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The peer was added to a bucket with room.
    Inserted {
        /// The bucket index.
        bucket: u8,
    },
    /// The peer was already present; its addresses and status were updated.
    Updated {
        /// The bucket index.
        bucket: u8,
    },
    /// The bucket is full: the peer is now pending, and `probe` (the least recently seen
    /// entry) should be checked for liveness before the pending deadline.
    Pending {
        /// The bucket index.
        bucket: u8,
        /// The entry to probe.
        probe: PeerId,
    },
    /// The bucket is full and already has a pending entry: the peer was not added.
    Full {
        /// The bucket index.
        bucket: u8,
    },
    /// The peer is the local node.
    SelfEntry,
}

/// A pending entry that replaced a stale one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// The bucket index.
    pub bucket: u8,
    /// The peer added.
    pub inserted: PeerId,
    /// The peer evicted.
    pub evicted: PeerId,
}

/// The Kademlia routing table.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    local: Key,
    k: usize,
    pending_timeout: Duration,
    /// Non-empty buckets only: a node in a network of N peers has about log2(N).
    buckets: BTreeMap<u8, Bucket>,
    /// (deadline, bucket) of every pending entry, for cheap timeout handling.
    pending_deadlines: BTreeSet<(Instant, u8)>,
    len: usize,
    /// Source of [`Entry`] sighting sequence numbers.
    seen_seq: u64,
}

impl RoutingTable {
    /// An empty table around `local` with bucket size `k`.
    pub fn new(local: Key, k: usize, pending_timeout: Duration) -> Self {
        RoutingTable {
            local,
            k: k.max(1),
            pending_timeout,
            buckets: BTreeMap::new(),
            pending_deadlines: BTreeSet::new(),
            len: 0,
            seen_seq: 0,
        }
    }

    /// The local key.
    pub fn local_key(&self) -> &Key {
        &self.local
    }

    /// Bucket size.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of entries (pending entries excluded).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bucket index of `key`, or `None` for the local key.
    pub fn bucket_index(&self, key: &Key) -> Option<u8> {
        self.local.distance(key).bucket_index()
    }

    fn locate(&self, key: &Key, peer: &PeerId) -> Option<(u8, usize)> {
        let b = self.bucket_index(key)?;
        let pos = self.buckets.get(&b)?.position(peer)?;
        Some((b, pos))
    }

    /// The entry of `peer`, if present.
    pub fn entry(&self, peer: &PeerId) -> Option<&Entry> {
        let key = Key::from_peer(peer);
        let (b, pos) = self.locate(&key, peer)?;
        Some(&self.buckets[&b].entries[pos])
    }

    /// Whether `peer` is in the table.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.entry(peer).is_some()
    }

    /// Adds `addrs` as the newest addresses, keeping at most [`MAX_ADDRS_PER_ENTRY`].
    /// Addresses already known keep their place, so the common case allocates nothing.
    fn merge_addrs(into: &mut Addresses, addrs: &[Address]) {
        if addrs.iter().all(|a| into.contains(a)) {
            return;
        }
        let mut list: Vec<Address> = into
            .iter()
            .filter(|x| !addrs.contains(x))
            .cloned()
            .collect();
        for a in addrs {
            if !list.contains(a) {
                list.push(a.clone());
            }
        }
        if list.len() > MAX_ADDRS_PER_ENTRY {
            let excess = list.len() - MAX_ADDRS_PER_ENTRY;
            list.drain(..excess);
        }
        *into = list.into();
    }

    /// Adds or updates `peer`. A `Connected` status also marks it most recently seen.
    pub fn update(
        &mut self,
        now: Instant,
        peer: PeerId,
        addrs: &[Address],
        status: Status,
    ) -> UpdateOutcome {
        let key = Key::from_peer(&peer);
        let Some(b) = self.bucket_index(&key) else {
            return UpdateOutcome::SelfEntry;
        };
        let k = self.k;
        self.seen_seq += 1;
        let seq = self.seen_seq;
        let bucket = self.buckets.entry(b).or_default();
        if let Some(entry) = bucket.position(&peer).map(|pos| &mut bucket.entries[pos]) {
            Self::merge_addrs(&mut entry.addrs, addrs);
            entry.status = status;
            if status == Status::Connected {
                entry.last_seen = now;
                entry.seen_seq = seq;
            }
            return UpdateOutcome::Updated { bucket: b };
        }
        if let Some(p) = bucket.pending.as_mut().filter(|p| p.entry.peer == peer) {
            Self::merge_addrs(&mut p.entry.addrs, addrs);
            p.entry.status = status;
            return UpdateOutcome::Full { bucket: b };
        }
        let mut entry = Entry {
            peer,
            addrs: Addresses::from([]),
            status,
            last_seen: now,
            seen_seq: seq,
        };
        Self::merge_addrs(&mut entry.addrs, addrs);
        if bucket.entries.len() < k {
            bucket.push(entry);
            self.len += 1;
            return UpdateOutcome::Inserted { bucket: b };
        }
        if bucket.pending.is_some() {
            return UpdateOutcome::Full { bucket: b };
        }
        let deadline = now + self.pending_timeout;
        bucket.pending = Some(Pending { entry, deadline });
        self.pending_deadlines.insert((deadline, b));
        let probe = bucket
            .entries
            .iter()
            .min_by_key(|e| e.recency())
            .map(|e| e.peer)
            .expect("a full bucket has entries");
        UpdateOutcome::Pending { bucket: b, probe }
    }

    /// Marks `peer` connected and seen at `now`, if present. Returns whether it was present.
    pub fn mark_connected(&mut self, now: Instant, peer: &PeerId) -> bool {
        let key = Key::from_peer(peer);
        let Some((b, pos)) = self.locate(&key, peer) else {
            return false;
        };
        self.seen_seq += 1;
        if let Some(bucket) = self.buckets.get_mut(&b) {
            let entry = &mut bucket.entries[pos];
            entry.status = Status::Connected;
            entry.last_seen = now;
            entry.seen_seq = self.seen_seq;
        }
        true
    }

    /// Marks `peer` disconnected, if present. Returns whether it was present.
    pub fn mark_disconnected(&mut self, peer: &PeerId) -> bool {
        let key = Key::from_peer(peer);
        match self.locate(&key, peer) {
            Some((b, pos)) => {
                if let Some(bucket) = self.buckets.get_mut(&b) {
                    bucket.entries[pos].status = Status::Disconnected;
                }
                true
            }
            None => false,
        }
    }

    /// Removes `peer` and returns its entry. A pending entry of that bucket takes its place.
    pub fn remove(&mut self, now: Instant, peer: &PeerId) -> Option<Entry> {
        let key = Key::from_peer(peer);
        let b = self.bucket_index(&key)?;
        let bucket = self.buckets.get_mut(&b)?;
        if bucket
            .pending
            .as_ref()
            .is_some_and(|p| p.entry.peer == *peer)
        {
            let p = bucket.pending.take()?;
            self.pending_deadlines.remove(&(p.deadline, b));
            return None;
        }
        let pos = bucket.position(peer)?;
        let removed = bucket.swap_remove(pos);
        self.len -= 1;
        if let Some(p) = bucket.pending.take() {
            self.pending_deadlines.remove(&(p.deadline, b));
            self.seen_seq += 1;
            let mut entry = p.entry;
            entry.last_seen = now;
            entry.seen_seq = self.seen_seq;
            bucket.push(entry);
            self.len += 1;
        }
        if bucket.entries.is_empty() {
            self.buckets.remove(&b);
        }
        Some(removed)
    }

    /// Removes one address of `peer`; removes the peer when none is left. Returns whether
    /// the peer was removed.
    pub fn remove_address(&mut self, now: Instant, peer: &PeerId, addr: &Address) -> bool {
        let key = Key::from_peer(peer);
        let Some((b, pos)) = self.locate(&key, peer) else {
            return false;
        };
        let Some(entry) = self.buckets.get_mut(&b).map(|bk| &mut bk.entries[pos]) else {
            return false;
        };
        entry.addrs = entry.addrs.iter().filter(|a| *a != addr).cloned().collect();
        if entry.addrs.is_empty() {
            self.remove(now, peer);
            return true;
        }
        false
    }

    /// The earliest pending-entry deadline, if any.
    pub fn next_pending_deadline(&self) -> Option<Instant> {
        self.pending_deadlines.first().map(|(t, _)| *t)
    }

    /// Resolves every pending entry whose deadline is at or before `now`: it replaces the
    /// least recently seen entry if that one is disconnected, otherwise it is dropped.
    pub fn apply_pending(&mut self, now: Instant) -> Vec<Replacement> {
        let mut out = Vec::new();
        while let Some(&(deadline, b)) = self.pending_deadlines.first() {
            if deadline > now {
                break;
            }
            self.pending_deadlines.pop_first();
            let Some(bucket) = self.buckets.get_mut(&b) else {
                continue;
            };
            let Some(pending) = bucket.pending.take() else {
                continue;
            };
            // The least recently seen disconnected entry, if any, is replaced.
            let stale = bucket
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.status == Status::Disconnected)
                .min_by_key(|(_, e)| e.recency())
                .map(|(pos, _)| pos);
            if let Some(pos) = stale {
                let evicted = bucket.swap_remove(pos);
                self.seen_seq += 1;
                let mut entry = pending.entry;
                entry.last_seen = now;
                entry.seen_seq = self.seen_seq;
                let inserted = entry.peer;
                bucket.push(entry);
                out.push(Replacement {
                    bucket: b,
                    inserted,
                    evicted: evicted.peer,
                });
            }
        }
        out
    }

    /// Up to `n` entries closest to `target`, closest first.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<&Entry> {
        self.closest_excluding(target, n, None)
    }

    /// Up to `n` entries closest to `target`, closest first, leaving out `exclude`.
    ///
    /// Only the buckets that can hold the answer are read, in order of distance. With `D`
    /// the distance from the local key to the target and `i` its highest bit: bucket `i`
    /// holds the entries within 2^i of the target; then come the lower buckets `j < i`,
    /// first those where bit `j` of `D` is set (highest `j` first), then those where it is
    /// clear (lowest `j` first); then the higher buckets in increasing order. Whole buckets
    /// are taken in that order until `n` entries are found, then sorted.
    pub fn closest_excluding(
        &self,
        target: &Key,
        n: usize,
        exclude: Option<&PeerId>,
    ) -> Vec<&Entry> {
        use core::ops::Bound::{Excluded, Unbounded};
        let d = self.local.distance(target);
        let mut order: Vec<&Bucket> = Vec::with_capacity(self.buckets.len());
        match d.bucket_index() {
            Some(i) => {
                order.extend(self.buckets.get(&i));
                order.extend(
                    self.buckets
                        .range(..i)
                        .rev()
                        .filter(|(j, _)| d.bit(**j))
                        .map(|(_, b)| b),
                );
                order.extend(
                    self.buckets
                        .range(..i)
                        .filter(|(j, _)| !d.bit(**j))
                        .map(|(_, b)| b),
                );
                order.extend(self.buckets.range((Excluded(i), Unbounded)).map(|(_, b)| b));
            }
            None => order.extend(self.buckets.values()),
        }
        let mut out: Vec<(Distance, &Entry)> = Vec::with_capacity(n + self.k);
        for b in order {
            if out.len() >= n {
                break;
            }
            for e in &b.entries {
                if exclude != Some(&e.peer) {
                    out.push((e.peer.kad_key().distance(target), e));
                }
            }
        }
        out.sort_unstable_by_key(|a| a.0);
        out.truncate(n);
        out.into_iter().map(|(_, e)| e).collect()
    }

    /// Every entry, bucket by bucket from the closest bucket outwards.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.values().flat_map(|b| b.entries.iter())
    }

    /// Number of entries in bucket `bucket`.
    pub fn bucket_len(&self, bucket: u8) -> usize {
        self.buckets.get(&bucket).map_or(0, |b| b.entries.len())
    }

    /// `(bucket index, number of entries)` of every non-empty bucket, closest first.
    pub fn bucket_sizes(&self) -> Vec<(u8, usize)> {
        self.buckets
            .iter()
            .map(|(i, b)| (*i, b.entries.len()))
            .collect()
    }

    /// Checks the table's structural invariants; returns a description of the first one
    /// that fails. Used by tests and the simulator's checkers.
    pub fn check_invariants(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        let mut total = 0;
        let mut seen = BTreeSet::new();
        for (&i, b) in &self.buckets {
            if b.entries.is_empty() {
                return Err(format!("bucket {i} is kept although empty"));
            }
            if b.entries.len() > self.k {
                return Err(format!("bucket {i} holds {} > k entries", b.entries.len()));
            }
            let tags: Vec<u64> = b.entries.iter().map(|e| e.peer.kad_key().tag()).collect();
            if tags != b.tags {
                return Err(format!("bucket {i}'s tags do not match its entries"));
            }
            for e in &b.entries {
                if self.bucket_index(e.peer.kad_key()) != Some(i) {
                    return Err(format!("entry {:?} is in the wrong bucket {i}", e.peer));
                }
                if !seen.insert(e.peer) {
                    return Err(format!("entry {:?} appears twice", e.peer));
                }
                if e.addrs.len() > MAX_ADDRS_PER_ENTRY {
                    return Err(format!("entry {:?} has too many addresses", e.peer));
                }
            }
            let mut seqs: Vec<u64> = b.entries.iter().map(|e| e.seen_seq).collect();
            seqs.sort_unstable();
            if seqs.windows(2).any(|w| w[0] == w[1])
                || seqs.last().is_some_and(|s| *s > self.seen_seq)
            {
                return Err(format!(
                    "bucket {i} has duplicate or future sighting numbers"
                ));
            }
            if let Some(p) = &b.pending {
                if b.entries.len() < self.k {
                    return Err(format!("bucket {i} has a pending entry but room"));
                }
                if seen.contains(&p.entry.peer) {
                    return Err(format!("pending {:?} is also an entry", p.entry.peer));
                }
                if !self.pending_deadlines.contains(&(p.deadline, i)) {
                    return Err(format!("bucket {i} pending deadline is not tracked"));
                }
            }
            total += b.entries.len();
        }
        if total != self.len {
            return Err(format!("len {} but {} entries", self.len, total));
        }
        let pendings = self
            .buckets
            .values()
            .filter(|b| b.pending.is_some())
            .count();
        if pendings != self.pending_deadlines.len() {
            return Err(format!(
                "{} pending entries but {} deadlines",
                pendings,
                self.pending_deadlines.len()
            ));
        }
        Ok(())
    }
}
