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

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::time::Duration;

use crate::deadlines::Deadlines;
use crate::key::Key;
use crate::peer::{Address, Addresses, PeerId};
use crate::time::Instant;

/// Most addresses kept per routing-table entry (newest kept).
pub const MAX_ADDRS_PER_ENTRY: usize = 8;

/// The bits of a candidate word ([`RoutingTable::closest_excluding`]) that hold the top of
/// its distance to the target; the low 24 hold where its entry is.
const TOP_40: u64 = !0xFF_FFFF;

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

#[derive(Clone, Debug)]
struct Bucket {
    /// The bucket's index (the highest bit of the distance of its entries).
    index: u8,
    /// The first word of `entries[i].peer.kad_key()`, side by side: finding a peer scans
    /// these eight bytes per entry instead of the entries, and so does ordering a bucket's
    /// entries by distance, which matters when a large network's tables do not fit in
    /// cache.
    tags: Vec<u64>,
    /// In no particular order.
    entries: Vec<Entry>,
    /// Rare (only while the bucket is full and a newcomer waits), so kept out of line.
    pending: Option<Box<Pending>>,
}

impl Bucket {
    fn new(index: u8) -> Self {
        Bucket {
            index,
            tags: Vec::new(),
            entries: Vec::new(),
            pending: None,
        }
    }

    fn position(&self, key: &Key, peer: &PeerId) -> Option<usize> {
        let tag = key.tag();
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
    /// Non-empty buckets only, by increasing index: a node in a network of N peers has
    /// about log2(N).
    buckets: Vec<Bucket>,
    /// Bit `i` is set when bucket `i` is in `buckets`; its position there is the number
    /// of set bits below `i`. Finding a bucket is then one look at this bitmap.
    present: [u64; 4],
    /// (deadline, bucket) of every pending entry, for cheap timeout handling.
    pending_deadlines: Deadlines<u8>,
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
            buckets: Vec::new(),
            present: [0; 4],
            pending_deadlines: Deadlines::new(),
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

    /// Where bucket `b` is (or would go) in `buckets`, and whether it is there.
    fn slot(&self, b: u8) -> (usize, bool) {
        let word = usize::from(b / 64);
        let bit = u32::from(b % 64);
        let below: u32 = self.present[..word]
            .iter()
            .map(|w| w.count_ones())
            .sum::<u32>()
            + (self.present[word] & ((1u64 << bit) - 1)).count_ones();
        (below as usize, self.present[word] >> bit & 1 == 1)
    }

    fn bucket(&self, b: u8) -> Option<&Bucket> {
        match self.slot(b) {
            (pos, true) => Some(&self.buckets[pos]),
            _ => None,
        }
    }

    fn bucket_mut(&mut self, b: u8) -> Option<&mut Bucket> {
        match self.slot(b) {
            (pos, true) => Some(&mut self.buckets[pos]),
            _ => None,
        }
    }

    /// Bucket `b`, created empty if absent.
    fn bucket_or_insert(&mut self, b: u8) -> &mut Bucket {
        let (pos, there) = self.slot(b);
        if !there {
            self.buckets.insert(pos, Bucket::new(b));
            self.present[usize::from(b / 64)] |= 1u64 << (b % 64);
        }
        &mut self.buckets[pos]
    }

    /// Drops bucket `b` if it has no entries left.
    fn drop_if_empty(&mut self, b: u8) {
        if let (pos, true) = self.slot(b)
            && self.buckets[pos].entries.is_empty()
        {
            self.buckets.remove(pos);
            self.present[usize::from(b / 64)] &= !(1u64 << (b % 64));
        }
    }

    /// (bucket position in `buckets`, entry position) of `peer`.
    fn locate(&self, peer: &PeerId) -> Option<(usize, usize)> {
        let key = peer.kad_key();
        let (b, true) = self.slot(self.bucket_index(key)?) else {
            return None;
        };
        let pos = self.buckets[b].position(key, peer)?;
        Some((b, pos))
    }

    /// The entry of `peer`, if present.
    pub fn entry(&self, peer: &PeerId) -> Option<&Entry> {
        let (b, pos) = self.locate(peer)?;
        Some(&self.buckets[b].entries[pos])
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
        let pending_timeout = self.pending_timeout;
        let bucket = self.bucket_or_insert(b);
        if let Some(entry) = bucket
            .position(&key, &peer)
            .map(|pos| &mut bucket.entries[pos])
        {
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
        let deadline = now + pending_timeout;
        bucket.pending = Some(Box::new(Pending { entry, deadline }));
        let probe = bucket
            .entries
            .iter()
            .min_by_key(|e| e.recency())
            .map(|e| e.peer)
            .expect("a full bucket has entries");
        self.pending_deadlines.insert(deadline, b);
        UpdateOutcome::Pending { bucket: b, probe }
    }

    /// Marks `peer` connected and seen at `now`, if present. Returns whether it was present.
    pub fn mark_connected(&mut self, now: Instant, peer: &PeerId) -> bool {
        let Some((b, pos)) = self.locate(peer) else {
            return false;
        };
        self.seen_seq += 1;
        let entry = &mut self.buckets[b].entries[pos];
        entry.status = Status::Connected;
        entry.last_seen = now;
        entry.seen_seq = self.seen_seq;
        true
    }

    /// Marks `peer` disconnected, if present. Returns whether it was present.
    pub fn mark_disconnected(&mut self, peer: &PeerId) -> bool {
        match self.locate(peer) {
            Some((b, pos)) => {
                self.buckets[b].entries[pos].status = Status::Disconnected;
                true
            }
            None => false,
        }
    }

    /// Removes `peer` and returns its entry. A pending entry of that bucket takes its place.
    pub fn remove(&mut self, now: Instant, peer: &PeerId) -> Option<Entry> {
        let key = Key::from_peer(peer);
        let b = self.bucket_index(&key)?;
        let (at, true) = self.slot(b) else {
            return None;
        };
        let bucket = &mut self.buckets[at];
        if bucket
            .pending
            .as_ref()
            .is_some_and(|p| p.entry.peer == *peer)
        {
            let p = bucket.pending.take()?;
            self.pending_deadlines.remove(p.deadline, b);
            return None;
        }
        let pos = bucket.position(&key, peer)?;
        let removed = bucket.swap_remove(pos);
        self.len -= 1;
        if let Some(p) = bucket.pending.take() {
            self.pending_deadlines.remove(p.deadline, b);
            self.seen_seq += 1;
            let mut entry = p.entry;
            entry.last_seen = now;
            entry.seen_seq = self.seen_seq;
            bucket.push(entry);
            self.len += 1;
        }
        self.drop_if_empty(b);
        Some(removed)
    }

    /// Removes one address of `peer`; removes the peer when none is left. Returns whether
    /// the peer was removed.
    pub fn remove_address(&mut self, now: Instant, peer: &PeerId, addr: &Address) -> bool {
        let Some((b, pos)) = self.locate(peer) else {
            return false;
        };
        let entry = &mut self.buckets[b].entries[pos];
        entry.addrs = entry.addrs.iter().filter(|a| *a != addr).cloned().collect();
        if entry.addrs.is_empty() {
            self.remove(now, peer);
            return true;
        }
        false
    }

    /// The earliest pending-entry deadline, if any.
    pub fn next_pending_deadline(&self) -> Option<Instant> {
        self.pending_deadlines.first_deadline()
    }

    /// Resolves every pending entry whose deadline is at or before `now`: it replaces the
    /// least recently seen entry if that one is disconnected, otherwise it is dropped.
    pub fn apply_pending(&mut self, now: Instant) -> Vec<Replacement> {
        let mut out = Vec::new();
        while self
            .pending_deadlines
            .first_deadline()
            .is_some_and(|t| t <= now)
        {
            let Some((_, b)) = self.pending_deadlines.pop_first() else {
                break;
            };
            let Some(bucket) = self.bucket_mut(b) else {
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
                let bucket = self.bucket_mut(b).expect("the bucket was just found");
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
        if n == 0 {
            return Vec::new();
        }
        // Candidates as one word: the distance's top 40 bits, then the bucket position (8
        // bits: there are at most 256 buckets) and the entry position (16 bits). Sorting
        // words is cheap, and distances that share their top 40 bits (almost never) are put
        // in order afterwards. Each bucket's entries are all closer to the target than the
        // next bucket's in this order, so buckets are sorted one at a time, and of the last
        // one only the entries still needed are kept.
        let mut found: Vec<u64> = Vec::with_capacity(n + self.k);
        let d = self.local.distance(target);
        match d.bucket_index() {
            Some(i) => {
                let (at, there) = self.slot(i);
                if there && self.take_closest(at, target, n, exclude, &mut found) {
                    return self.entries_of(found);
                }
                for pos in (0..at).rev() {
                    if d.bit(self.buckets[pos].index)
                        && self.take_closest(pos, target, n, exclude, &mut found)
                    {
                        return self.entries_of(found);
                    }
                }
                for pos in 0..at {
                    if !d.bit(self.buckets[pos].index)
                        && self.take_closest(pos, target, n, exclude, &mut found)
                    {
                        return self.entries_of(found);
                    }
                }
                let above = if there { at + 1 } else { at };
                for pos in above..self.buckets.len() {
                    if self.take_closest(pos, target, n, exclude, &mut found) {
                        return self.entries_of(found);
                    }
                }
            }
            None => {
                for pos in 0..self.buckets.len() {
                    if self.take_closest(pos, target, n, exclude, &mut found) {
                        return self.entries_of(found);
                    }
                }
            }
        }
        self.entries_of(found)
    }

    fn entry_at(&self, candidate: u64) -> &Entry {
        let pos = (candidate >> 16 & 0xFF) as usize;
        &self.buckets[pos].entries[candidate as usize & 0xFFFF]
    }

    fn entries_of(&self, found: Vec<u64>) -> Vec<&Entry> {
        found.into_iter().map(|c| self.entry_at(c)).collect()
    }

    /// Appends the entries of the bucket at `pos` (but `exclude`) to `found`, closest to
    /// `target` first, keeping no more than make `n` in all. Returns whether `found` is
    /// complete.
    fn take_closest(
        &self,
        pos: usize,
        target: &Key,
        n: usize,
        exclude: Option<&PeerId>,
        found: &mut Vec<u64>,
    ) -> bool {
        let start = found.len();
        if start >= n {
            return true;
        }
        self.candidates(pos, target, exclude, found);
        let need = n - start;
        let full_distance = |c: &u64| self.entry_at(*c).peer.kad_key().distance(target);
        let got = &mut found[start..];
        if need == 1 && got.len() > 1 {
            // One more entry needed (say, after leaving out the requester): the closest.
            let best = (0..got.len())
                .min_by(|&a, &b| {
                    (got[a] & TOP_40)
                        .cmp(&(got[b] & TOP_40))
                        .then_with(|| full_distance(&got[a]).cmp(&full_distance(&got[b])))
                })
                .expect("not empty");
            got.swap(0, best);
        } else {
            got.sort_unstable();
            // Runs of equal top bits (almost never, so first a cheap look for any): order
            // them by the whole distance.
            if got.windows(2).any(|w| (w[0] ^ w[1]) & TOP_40 == 0) {
                let mut i = 0;
                while i < got.len() {
                    let hi = got[i] & TOP_40;
                    let mut j = i + 1;
                    while j < got.len() && got[j] & TOP_40 == hi {
                        j += 1;
                    }
                    if j - i > 1 {
                        got[i..j].sort_unstable_by_key(full_distance);
                    }
                    i = j;
                }
            }
        }
        found.truncate(start + need.min(found.len() - start));
        found.len() >= n
    }

    /// Adds the entries of the bucket at `pos` (but `exclude`) to `found`, as sort keys for
    /// [`RoutingTable::closest_excluding`].
    fn candidates(&self, pos: usize, target: &Key, exclude: Option<&PeerId>, found: &mut Vec<u64>) {
        // The first words of the keys sit side by side in `tags`: the entries themselves
        // are read only for the ones chosen (and to tell the excluded peer from another
        // with the same first word).
        let bucket = &self.buckets[pos];
        let target_tag = target.tag();
        let exclude_tag = exclude.map(|p| p.kad_key().tag());
        for (e, &tag) in bucket.tags.iter().enumerate() {
            if exclude_tag == Some(tag) && exclude == Some(&bucket.entries[e].peer) {
                continue;
            }
            let hi = tag ^ target_tag;
            found.push(hi & TOP_40 | (pos as u64) << 16 | e as u64);
        }
    }

    /// Every entry, bucket by bucket from the closest bucket outwards.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// Number of entries in bucket `bucket`.
    pub fn bucket_len(&self, bucket: u8) -> usize {
        self.bucket(bucket).map_or(0, |b| b.entries.len())
    }

    /// `(bucket index, number of entries)` of every non-empty bucket, closest first.
    pub fn bucket_sizes(&self) -> Vec<(u8, usize)> {
        self.buckets
            .iter()
            .map(|b| (b.index, b.entries.len()))
            .collect()
    }

    /// Checks the table's structural invariants; returns a description of the first one
    /// that fails. Used by tests and the simulator's checkers.
    pub fn check_invariants(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        let mut total = 0;
        let mut seen = BTreeSet::new();
        let mut previous = None;
        for (pos, b) in self.buckets.iter().enumerate() {
            let i = b.index;
            if previous.is_some_and(|p| p >= i) {
                return Err(format!("bucket {i} is out of order"));
            }
            previous = Some(i);
            if self.slot(i) != (pos, true) {
                return Err(format!("bucket {i} is not where the bitmap says"));
            }
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
                if !self.pending_deadlines.contains(p.deadline, i) {
                    return Err(format!("bucket {i} pending deadline is not tracked"));
                }
            }
            total += b.entries.len();
        }
        if total != self.len {
            return Err(format!("len {} but {} entries", self.len, total));
        }
        let present: u32 = self.present.iter().map(|w| w.count_ones()).sum();
        if present as usize != self.buckets.len() {
            return Err(format!(
                "{} buckets but {present} bits set",
                self.buckets.len()
            ));
        }
        let pendings = self.buckets.iter().filter(|b| b.pending.is_some()).count();
        if !self.pending_deadlines.is_consistent() {
            return Err("the earliest pending deadline is out of date".into());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    /// Candidates whose distances share their top bits (which keys almost never do, so
    /// the tags are forced equal here) are still returned in order of the whole distance.
    #[test]
    fn candidates_tied_on_their_top_bits_come_in_order_of_the_whole_distance() {
        let local = PeerId::from_seed(1);
        let mut table = RoutingTable::new(Key::from_peer(&local), 20, Duration::from_secs(60));
        let addr = Address::from_bytes(b"a").expect("short");
        for i in 2..400 {
            table.update(
                Instant::ZERO,
                PeerId::from_seed(i),
                core::slice::from_ref(&addr),
                Status::Connected,
            );
        }
        for bucket in &mut table.buckets {
            for tag in &mut bucket.tags {
                *tag = 0;
            }
        }
        for seed in 0..20 {
            let target = Key::from_peer(&PeerId::from_seed(10_000 + seed));
            let mut all: Vec<PeerId> = table.entries().map(|e| e.peer).collect();
            all.sort_by_key(|p| Key::from_peer(p).distance(&target));
            for n in [1, 2, 7, 20, 45] {
                let got: Vec<PeerId> = table.closest(&target, n).iter().map(|e| e.peer).collect();
                assert_eq!(got, all[..n.min(all.len())], "target {seed}, n {n}");
            }
        }
    }
}
