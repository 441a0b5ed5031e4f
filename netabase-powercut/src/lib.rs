//! The power-loss fault model of Netabase's tests.
//!
//! A process killed with `SIGKILL` leaves the kernel's page cache intact, so a store that
//! forgets an `fdatasync` passes every kill test. A power cut does not: what was written
//! but not synced is gone, in part. This crate models a file whose writes are volatile
//! until it is synced:
//!
//! - [`Disk`] holds two images of one file: the *volatile* one that reads see (the page
//!   cache) and the *durable* one that survives a cut, plus the writes between them, in
//!   order. A sync makes the volatile image durable.
//! - A cut ([`Disk::schedule_cut`], [`Disk::cut_now`]) builds the image that survives:
//!   the durable one with a seeded subset of the unsynced writes applied, each write split
//!   into its 4 KiB blocks, every block kept or dropped on its own (so a later write can
//!   survive an earlier one: reordering) and a kept block sometimes only in part, by
//!   512-byte sectors (a torn write). Dropping everything is one case of many (the benign
//!   one); [`Retention`] says how much is kept.
//! - After the cut every operation of the disk fails: the process lost its power, nothing
//!   it does afterwards reaches the disk or is acknowledged.
//! - [`RedbDisk`] is a redb [`StorageBackend`](redb::StorageBackend) on a [`Disk`], for
//!   `redb::Builder::create_with_backend`.
//!
//! Everything is decided by a seed ([`Rng`]), so a failing cut replays exactly. This crate
//! is test support: no production crate depends on it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

#[cfg(target_os = "linux")]
pub mod fs;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The block size: a write is split at multiples of it, and each block of it survives a cut
/// or not on its own.
pub const BLOCK: u64 = 4096;

/// The sector size: a torn block keeps some of its sectors only.
pub const SECTOR: u64 = 512;

/// A seeded random source (ChaCha8), with the few draws the model and the tests need.
#[derive(Debug, Clone)]
pub struct Rng(ChaCha8Rng);

impl Rng {
    /// The source for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.0.next_u64() % n }
    }

    /// `true` with probability `p` (0 to 1).
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits make a uniform number in [0, 1).
        let x = (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.0.fill_bytes(&mut out);
        out
    }

    /// A random 64-bit number.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

/// How much of the unsynced writes a cut keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// The probability that one unsynced block (or length change) survives.
    pub keep: f64,
    /// The probability that a surviving block is torn: only some of its sectors survive.
    pub tear: f64,
}

impl Retention {
    /// Every unsynced write is lost (the benign case).
    pub const NONE: Retention = Retention {
        keep: 0.0,
        tear: 0.0,
    };

    /// Every unsynced write survives, whole.
    pub const ALL: Retention = Retention {
        keep: 1.0,
        tear: 0.0,
    };

    /// A retention drawn from `rng`: one cut in eight keeps nothing, one in eight keeps
    /// everything, the others keep each block with a random probability and tear some.
    pub fn draw(rng: &mut Rng) -> Retention {
        match rng.below(8) {
            0 => Retention::NONE,
            1 => Retention::ALL,
            _ => Retention {
                keep: rng.below(1001) as f64 / 1000.0,
                tear: rng.below(501) as f64 / 1000.0,
            },
        }
    }
}

/// What a sync does: the honest thing, or (for the positive controls) something worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// A sync makes every write before it durable.
    #[default]
    Honest,
    /// A sync returns success and makes nothing durable: a store on such a disk must be
    /// caught losing acknowledged data.
    Ignored,
}

/// The error of every operation after a cut.
pub fn power_lost() -> std::io::Error {
    std::io::Error::other("power cut: the disk is gone")
}

/// One unsynced change, in the order it was made.
#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct State {
    durable: Vec<u8>,
    volatile: Vec<u8>,
    pending: Vec<Op>,
    /// Writes, length changes and syncs so far.
    ops: u64,
    /// The cut to make before operation number `.0`, with the seed of what it keeps.
    scheduled: Option<(u64, u64, Retention)>,
    /// The image that survived the cut, once it happened.
    survivor: Option<Vec<u8>>,
    sync_mode: SyncMode,
    /// Syncs that still fail with `EIO` before the next one that works.
    failing_syncs: u32,
    syncs: u64,
}

impl State {
    /// Counts an operation; makes the scheduled cut when its time has come. Fails when the
    /// power is gone.
    fn step(&mut self) -> std::io::Result<()> {
        if self.survivor.is_some() {
            return Err(power_lost());
        }
        if let Some((at, seed, retention)) = self.scheduled
            && self.ops >= at
        {
            self.cut(seed, retention);
            return Err(power_lost());
        }
        self.ops += 1;
        Ok(())
    }

    fn cut(&mut self, seed: u64, retention: Retention) -> Vec<u8> {
        let image = survivor(&self.durable, &self.pending, seed, retention);
        self.survivor = Some(image.clone());
        self.pending.clear();
        image
    }
}

/// The image a cut leaves: `durable` with the writes of `pending` that survive.
fn survivor(durable: &[u8], pending: &[Op], seed: u64, retention: Retention) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut image = durable.to_vec();
    for op in pending {
        match op {
            Op::SetLen(len) => {
                if rng.chance(retention.keep) {
                    image.resize(to_usize(*len), 0);
                }
            }
            Op::Write { offset, data } => {
                let end = offset + data.len() as u64;
                let mut start = *offset;
                while start < end {
                    let block_end = ((start / BLOCK) + 1) * BLOCK;
                    let piece_end = block_end.min(end);
                    if rng.chance(retention.keep) {
                        if rng.chance(retention.tear) {
                            // Sector by sector, each kept or not.
                            let mut s = start;
                            while s < piece_end {
                                let sector_end = (((s / SECTOR) + 1) * SECTOR).min(piece_end);
                                if rng.chance(0.5) {
                                    apply(&mut image, s, &data[range(*offset, s, sector_end)]);
                                }
                                s = sector_end;
                            }
                        } else {
                            apply(&mut image, start, &data[range(*offset, start, piece_end)]);
                        }
                    }
                    start = piece_end;
                }
            }
        }
    }
    image
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The range of `data` (written at `base`) that covers file bytes `from..to`.
fn range(base: u64, from: u64, to: u64) -> std::ops::Range<usize> {
    to_usize(from - base)..to_usize(to - base)
}

/// Writes `data` at `offset` into `image`, growing it with zeros as needed.
fn apply(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let offset = to_usize(offset);
    let end = offset + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset..end].copy_from_slice(data);
}

/// One file whose writes are volatile until it is synced; see the crate documentation.
///
/// Clones share the file.
#[derive(Debug, Clone, Default)]
pub struct Disk(Arc<Mutex<State>>);

impl Disk {
    /// An empty file.
    pub fn new() -> Self {
        Disk::default()
    }

    /// A file whose durable (and volatile) contents are `image`: what a cut left, for the
    /// next run.
    pub fn from_image(image: Vec<u8>) -> Self {
        let disk = Disk::default();
        {
            let mut state = disk.lock();
            state.volatile = image.clone();
            state.durable = image;
        }
        disk
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cut the power before operation number `at` (writes, length changes and syncs count
    /// from 0); what survives is drawn from `seed` with `retention`. Operation `at` and all
    /// later ones fail.
    pub fn schedule_cut(&self, at: u64, seed: u64, retention: Retention) {
        self.lock().scheduled = Some((at, seed, retention));
    }

    /// Cuts the power now and returns the image that survives; every later operation
    /// fails.
    pub fn cut_now(&self, seed: u64, retention: Retention) -> Vec<u8> {
        let mut state = self.lock();
        match &state.survivor {
            Some(image) => image.clone(),
            None => state.cut(seed, retention),
        }
    }

    /// The image that survived the cut, once there was one.
    pub fn survivor(&self) -> Option<Vec<u8>> {
        self.lock().survivor.clone()
    }

    /// Whether the power was cut.
    pub fn is_cut(&self) -> bool {
        self.lock().survivor.is_some()
    }

    /// The writes, length changes and syncs made so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// The syncs made so far (honest or not).
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Sets what syncs do.
    pub fn set_sync_mode(&self, mode: SyncMode) {
        self.lock().sync_mode = mode;
    }

    /// Makes the next `n` syncs fail with `EIO` (and make nothing durable).
    pub fn fail_next_syncs(&self, n: u32) {
        self.lock().failing_syncs = n;
    }

    /// The file's length as reads see it.
    pub fn len(&self) -> std::io::Result<u64> {
        let state = self.lock();
        if state.survivor.is_some() {
            return Err(power_lost());
        }
        Ok(state.volatile.len() as u64)
    }

    /// Whether the file is empty as reads see it.
    pub fn is_empty(&self) -> std::io::Result<bool> {
        self.len().map(|len| len == 0)
    }

    /// Reads `out.len()` bytes at `offset`; fails past the end.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let state = self.lock();
        if state.survivor.is_some() {
            return Err(power_lost());
        }
        let start = to_usize(offset);
        let end = start.saturating_add(out.len());
        if end > state.volatile.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {}..{end} past the end ({})",
                    start,
                    state.volatile.len()
                ),
            ));
        }
        out.copy_from_slice(&state.volatile[start..end]);
        Ok(())
    }

    /// Reads up to `out.len()` bytes at `offset`, fewer at the end; returns how many.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> std::io::Result<usize> {
        let state = self.lock();
        if state.survivor.is_some() {
            return Err(power_lost());
        }
        let len = state.volatile.len();
        let start = to_usize(offset).min(len);
        let end = start.saturating_add(out.len()).min(len);
        out[..end - start].copy_from_slice(&state.volatile[start..end]);
        Ok(end - start)
    }

    /// Writes `data` at `offset` (volatile until the next sync).
    pub fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        apply(&mut state.volatile, offset, data);
        state.pending.push(Op::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    /// Sets the length (volatile until the next sync); new bytes are zero.
    pub fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        state.volatile.resize(to_usize(len), 0);
        state.pending.push(Op::SetLen(len));
        Ok(())
    }

    /// Makes every write so far durable (`fdatasync`), unless told otherwise
    /// ([`SyncMode`], [`Disk::fail_next_syncs`]).
    pub fn sync(&self) -> std::io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        state.syncs += 1;
        if state.failing_syncs > 0 {
            state.failing_syncs -= 1;
            return Err(std::io::Error::from_raw_os_error(5));
        }
        if state.sync_mode == SyncMode::Honest {
            state.durable = state.volatile.clone();
            state.pending.clear();
        }
        Ok(())
    }

    /// The volatile contents (what reads see).
    pub fn contents(&self) -> Vec<u8> {
        self.lock().volatile.clone()
    }

    /// The durable contents (what an honest cut that keeps nothing leaves).
    pub fn durable(&self) -> Vec<u8> {
        self.lock().durable.clone()
    }
}

/// A redb storage backend on a [`Disk`]: `sync_data` is the disk's sync, and after a cut
/// every call fails.
#[derive(Debug, Clone)]
pub struct RedbDisk(pub Disk);

impl redb::StorageBackend for RedbDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synced_write_survives_every_cut() {
        for seed in 0..200 {
            let disk = Disk::new();
            disk.write(0, &[7; 10_000]).unwrap();
            disk.sync().unwrap();
            disk.write(10_000, &[9; 5000]).unwrap();
            let mut rng = Rng::new(seed);
            let image = disk.cut_now(seed, Retention::draw(&mut rng));
            assert_eq!(&image[..10_000], &[7; 10_000][..], "seed {seed}");
        }
    }

    /// Positive control of the model: an unsynced write is lost when a cut keeps nothing,
    /// and some cuts keep it in part, torn or by blocks.
    #[test]
    fn an_unsynced_write_is_lost_and_sometimes_torn() {
        let disk = Disk::new();
        disk.write(0, &[1; 8192]).unwrap();
        assert!(disk.cut_now(1, Retention::NONE).is_empty());
        assert!(disk.write(0, b"x").is_err(), "the disk is gone after a cut");

        let (mut lost, mut whole, mut partial) = (0, 0, 0);
        for seed in 0..500 {
            let disk = Disk::from_image(vec![0; 3 * BLOCK as usize]);
            disk.write(100, &[1; 2 * BLOCK as usize]).unwrap();
            let image = disk.cut_now(
                seed,
                Retention {
                    keep: 0.5,
                    tear: 0.5,
                },
            );
            let ones = image.iter().filter(|&&b| b == 1).count();
            match ones {
                0 => lost += 1,
                n if n == 2 * BLOCK as usize => whole += 1,
                _ => partial += 1,
            }
        }
        assert!(
            lost > 0 && whole > 0 && partial > 0,
            "{lost} {whole} {partial}"
        );
    }

    #[test]
    fn a_later_write_can_survive_an_earlier_one() {
        let mut reordered = false;
        for seed in 0..200 {
            let disk = Disk::from_image(vec![0; 2 * BLOCK as usize]);
            disk.write(0, &[1; BLOCK as usize]).unwrap();
            disk.write(BLOCK, &[2; BLOCK as usize]).unwrap();
            let image = disk.cut_now(
                seed,
                Retention {
                    keep: 0.5,
                    tear: 0.0,
                },
            );
            reordered |= image[0] == 0 && image[BLOCK as usize] == 2;
        }
        assert!(reordered);
    }

    #[test]
    fn a_scheduled_cut_stops_every_later_operation() {
        let disk = Disk::new();
        disk.schedule_cut(2, 0, Retention::ALL);
        disk.write(0, b"ab").unwrap();
        disk.sync().unwrap();
        assert!(disk.write(2, b"cd").is_err());
        assert!(disk.sync().is_err());
        assert_eq!(disk.survivor().unwrap(), b"ab");
    }

    #[test]
    fn an_ignored_sync_makes_nothing_durable() {
        let disk = Disk::new();
        disk.set_sync_mode(SyncMode::Ignored);
        disk.write(0, b"ab").unwrap();
        disk.sync().unwrap();
        assert!(disk.cut_now(0, Retention::NONE).is_empty());
    }

    #[test]
    fn a_failed_sync_reports_eio() {
        let disk = Disk::new();
        disk.fail_next_syncs(1);
        disk.write(0, b"ab").unwrap();
        assert_eq!(disk.sync().unwrap_err().raw_os_error(), Some(5));
        assert!(disk.durable().is_empty());
        disk.sync().unwrap();
        assert_eq!(disk.durable(), b"ab");
    }
}
