//! Log compaction and snapshot transfer of a [`Member`].
//!
//! A member compacts by truncating its log through a slot its state applied: the state
//! written with the same sync is the snapshot of every removed slot. A member that asks
//! for slots at or below the truncation point receives the sender's state instead, frozen
//! once ([`State::freeze`]) and cut into chunks the receiver asks for one after the other,
//! so that a transfer resumes where it stopped. The receiver checks the whole image
//! against its SHA-256 before it installs it, and installs only a snapshot ahead of its
//! own state: the state, the truncation and the configurations it carries become durable
//! together at the next sync.

use alloc::vec::Vec;

use super::{Event, Member, Phase};
use crate::Instant;
use crate::PeerId;
use crate::consensus::message::{Message, SnapshotChunk};
use crate::consensus::store::{LogStore, State};
use crate::consensus::types::{Slot, SnapshotImage};

/// The snapshot a member sends: its state frozen at `slot`, encoded.
pub(super) struct Serving {
    slot: Slot,
    bytes: Vec<u8>,
    digest: [u8; 32],
    /// When a member last asked for a chunk of it.
    asked: Instant,
}

/// A snapshot being received.
pub(super) struct Receiving {
    /// The member sending it.
    pub(super) from: PeerId,
    /// The slot it is applied through.
    pub(super) slot: Slot,
    total: u64,
    /// The image's SHA-256.
    pub(super) digest: [u8; 32],
    /// The bytes so far.
    pub(super) bytes: Vec<u8>,
    /// Requests for the next chunk that went unanswered.
    pub(super) retries: u32,
}

impl<L: LogStore, S: State> Member<L, S> {
    /// Truncates the log through the applied slots the compaction policy lets go.
    ///
    /// While a snapshot is being sent (a chunk was asked for within an election timeout),
    /// the log keeps every slot after it, so that its receiver goes on by entries once it
    /// installed it instead of chasing ever newer snapshots.
    pub(super) fn maybe_compact(&mut self, now: Instant) {
        let Some(c) = self.config.compaction else {
            return;
        };
        let applied = self.state.applied();
        let held = applied.saturating_sub(self.log.truncated());
        if held <= c.keep {
            return;
        }
        if held - c.keep < c.entries && self.log_bytes < c.bytes {
            return;
        }
        let mut upto = applied - c.keep;
        if let Some(s) = &self.serving
            && now < s.asked + self.config.election_timeout
        {
            upto = upto.min(s.slot);
        }
        if let Phase::Leader(l) = &self.phase {
            // Never a slot the leader still proposes in (its own slots are above its
            // applied prefix; a peer's catch-up may have run it ahead).
            let open = l.inflight.keys().next().copied().unwrap_or(l.next_slot);
            upto = upto.min(open.saturating_sub(1));
        }
        if upto <= self.log.truncated() {
            return;
        }
        self.log.truncate(upto);
        self.log_bytes = 0;
        self.stats.compactions += 1;
    }

    /// Sends `to` the chunk from `offset` of the snapshot `wanted` names (slot and
    /// digest), or the start of this member's snapshot if it holds no such one.
    pub(super) fn serve_snapshot(
        &mut self,
        now: Instant,
        to: PeerId,
        wanted: Option<(Slot, [u8; 32])>,
        offset: u64,
    ) {
        // One snapshot is kept to serve, frozen again only once it no longer covers every
        // slot compacted away (so requests cannot make this member freeze at will).
        let applied = self.state.applied();
        if applied == 0 {
            return;
        }
        if self
            .serving
            .as_ref()
            .is_none_or(|s| s.slot < self.log.truncated())
        {
            let alpha = self.config.alpha;
            let first = self
                .configs
                .range(..=applied + 1)
                .next_back()
                .map_or(0, |(s, _)| *s);
            let configurations = self
                .configs
                .range(first..=applied + alpha)
                .map(|(s, c)| (*s, c.clone()))
                .collect();
            let bytes = SnapshotImage {
                slot: applied,
                configurations,
                state: self.state.freeze(),
            }
            .encode();
            let digest = SnapshotImage::digest(&bytes);
            self.serving = Some(Serving {
                slot: applied,
                bytes,
                digest,
                asked: now,
            });
            self.stats.snapshots_frozen += 1;
        }
        let Some(s) = self.serving.as_mut() else {
            return;
        };
        s.asked = now;
        let total = s.bytes.len() as u64;
        let offset = if wanted == Some((s.slot, s.digest)) {
            offset
        } else {
            0
        };
        if offset >= total {
            return;
        }
        let start = offset as usize;
        let end = (start + self.config.snapshot_chunk_bytes).min(s.bytes.len());
        let message = Message::Snapshot(SnapshotChunk {
            slot: s.slot,
            total,
            digest: s.digest,
            offset,
            chunk: s.bytes[start..end].to_vec(),
        });
        self.stats.snapshot_chunks_sent += 1;
        self.send(to, message);
    }

    /// Takes one chunk of a snapshot.
    pub(super) fn on_snapshot(&mut self, now: Instant, from: PeerId, piece: SnapshotChunk) {
        let SnapshotChunk {
            slot,
            total,
            digest,
            offset,
            chunk,
        } = piece;
        if slot <= self.state.applied() {
            // Not ahead of this member: a snapshot never moves it backwards. Catch-up
            // goes on by entries, unless a transfer from another member is under way
            // (a sender that has nothing newer than this member ends a transfer from
            // a member that went quiet).
            if self
                .receiving
                .as_ref()
                .is_some_and(|r| r.slot <= slot || r.from != from)
            {
                self.receiving = None;
                self.catch_up_sent = None;
                self.maybe_catch_up(now);
            }
            return;
        }
        let end = offset.checked_add(chunk.len() as u64);
        if total > self.config.max_snapshot_bytes
            || chunk.is_empty()
            || end.is_none_or(|e| e > total)
        {
            self.stats.snapshots_refused += 1;
            return;
        }
        let same = self
            .receiving
            .as_ref()
            .is_some_and(|r| r.slot == slot && r.digest == digest && r.total == total);
        if !same {
            // A transfer starts at its first byte, and the start of another snapshot
            // replaces the one in progress: its sender answers (the first one went
            // quiet, or restarted and holds another snapshot now).
            if offset != 0 {
                return;
            }
            self.receiving = Some(Receiving {
                from,
                slot,
                total,
                digest,
                bytes: Vec::new(),
                retries: 0,
            });
        }
        let Some(r) = self.receiving.as_mut() else {
            return;
        };
        // A repeated or reordered chunk only makes it ask again for the offset it wants.
        if offset == r.bytes.len() as u64 {
            r.bytes.extend_from_slice(&chunk);
            r.from = from;
            r.retries = 0;
            self.catch_up_sent = Some(now);
        }
        if (r.bytes.len() as u64) < total {
            let offset = r.bytes.len() as u64;
            self.send(
                from,
                Message::SnapshotNext {
                    slot,
                    digest,
                    offset,
                },
            );
            return;
        }
        let Some(r) = self.receiving.take() else {
            return;
        };
        self.catch_up_sent = None;
        let image = (SnapshotImage::digest(&r.bytes) == r.digest)
            .then(|| SnapshotImage::decode(&r.bytes))
            .flatten()
            .filter(|image| image.slot == r.slot);
        match image {
            Some(image) => self.install_snapshot(now, image),
            None => self.stats.snapshots_refused += 1,
        }
        self.maybe_catch_up(now);
    }

    /// Installs a snapshot ahead of this member's state.
    fn install_snapshot(&mut self, now: Instant, image: SnapshotImage) {
        if image.slot <= self.state.applied() {
            return;
        }
        if !matches!(self.phase, Phase::Follower) {
            // Its phase 1 or proposals were about slots the snapshot covers.
            self.step_down(now);
        }
        if self.state.install(image.slot, &image.state).is_err() {
            self.stats.snapshots_refused += 1;
            return;
        }
        self.log.truncate(image.slot);
        for (from, configuration) in image.configurations {
            if self.configs.get(&from) != Some(&configuration) {
                self.record_config(from, configuration.clone());
                self.emit(Event::Configuration {
                    from,
                    configuration,
                });
            }
        }
        self.committed = self.committed.max(image.slot);
        self.leader_committed = self.leader_committed.max(image.slot);
        self.log_bytes = 0;
        self.stats.snapshot_installs += 1;
        self.emit(Event::SnapshotInstalled { slot: image.slot });
        self.advance_committed();
        self.apply_committed(now);
    }
}
