//! The event queue: events in order of (virtual time, sequence number).
//!
//! A calendar of one-millisecond buckets: the bucket being drained is a small binary heap,
//! the next second's buckets are plain vectors (appending is all a push costs), and
//! events further ahead wait in a binary heap until their second comes. Almost every event
//! of a simulation (messages, timeouts under a second) takes the cheap path, and the
//! heap being drained holds only the events of one millisecond, so it stays in cache. The
//! order is exactly that of one binary heap over (time, sequence).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use netabase_core::Instant;

/// Width of a bucket, in microseconds.
const BUCKET_US: u64 = 1_000;
/// Buckets in the calendar (the span it covers is `WHEEL * BUCKET_US`).
const WHEEL: u64 = 1_024;

struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> Entry<T> {
    fn bucket(&self) -> u64 {
        self.at.as_micros() / BUCKET_US
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    // Reversed: BinaryHeap is a max-heap, the earliest (time, sequence) must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Items ordered by `(at, seq)`; `seq` must be unique.
pub(crate) struct EventQueue<T> {
    /// The bucket being drained.
    cur: u64,
    /// Its events (and any pushed for an earlier time).
    current: BinaryHeap<Entry<T>>,
    /// Buckets `cur + 1 .. cur + WHEEL`, each at index `bucket % WHEEL`, unordered.
    wheel: Vec<Vec<Entry<T>>>,
    in_wheel: usize,
    /// Events of later buckets.
    far: BinaryHeap<Entry<T>>,
}

impl<T> EventQueue<T> {
    pub(crate) fn new() -> Self {
        EventQueue {
            cur: 0,
            current: BinaryHeap::new(),
            wheel: (0..WHEEL).map(|_| Vec::new()).collect(),
            in_wheel: 0,
            far: BinaryHeap::new(),
        }
    }

    pub(crate) fn push(&mut self, at: Instant, seq: u64, item: T) {
        let entry = Entry { at, seq, item };
        self.place(entry);
    }

    fn place(&mut self, entry: Entry<T>) {
        let b = entry.bucket();
        if b <= self.cur {
            self.current.push(entry);
        } else if b < self.cur + WHEEL {
            self.wheel[(b % WHEEL) as usize].push(entry);
            self.in_wheel += 1;
        } else {
            self.far.push(entry);
        }
    }

    /// Moves the earliest events into the heap being drained; `false` when there are none.
    fn fill(&mut self) -> bool {
        loop {
            if !self.current.is_empty() {
                return true;
            }
            if self.in_wheel == 0 {
                // Nothing within the calendar: jump to the first far event.
                match self.far.peek() {
                    Some(e) => self.cur = e.bucket(),
                    None => return false,
                }
            } else {
                self.cur += 1;
            }
            while self
                .far
                .peek()
                .is_some_and(|e| e.bucket() < self.cur + WHEEL)
            {
                let e = self.far.pop().expect("just peeked");
                self.place(e);
            }
            let slot = &mut self.wheel[(self.cur % WHEEL) as usize];
            if !slot.is_empty() {
                self.in_wheel -= slot.len();
                // Reuse buffers: the drained heap's becomes the slot's.
                let mut buffer = std::mem::take(&mut self.current).into_vec();
                std::mem::swap(&mut buffer, slot);
                self.current = BinaryHeap::from(buffer);
            }
        }
    }

    /// The time of the earliest item.
    pub(crate) fn peek_time(&mut self) -> Option<Instant> {
        if self.fill() {
            self.current.peek().map(|e| e.at)
        } else {
            None
        }
    }

    /// The earliest item, with its time and sequence number.
    pub(crate) fn pop(&mut self) -> Option<(Instant, u64, T)> {
        if !self.fill() {
            return None;
        }
        self.current.pop().map(|e| (e.at, e.seq, e.item))
    }

    /// The earliest item if it comes before `limit`.
    pub(crate) fn pop_before(&mut self, limit: Instant) -> Option<(Instant, u64, T)> {
        if !self.fill() || self.current.peek().is_none_or(|e| e.at >= limit) {
            return None;
        }
        self.current.pop().map(|e| (e.at, e.seq, e.item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    #[test]
    fn pops_in_the_order_of_one_heap_over_time_and_sequence() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut q = EventQueue::new();
        let mut reference: BinaryHeap<Entry<u64>> = BinaryHeap::new();
        let mut seq = 0;
        let mut now = 0u64;
        for round in 0..20_000u64 {
            // Pushes at the present, within the calendar and far beyond it; pops between.
            for _ in 0..rng.next_u64() % 4 {
                let ahead = match rng.next_u64() % 10 {
                    0 => 0,
                    1 => rng.next_u64() % 10,
                    2..=7 => rng.next_u64() % 200_000,
                    8 => rng.next_u64() % 5_000_000,
                    _ => rng.next_u64() % 100_000_000,
                };
                seq += 1;
                let at = Instant::from_micros(now + ahead);
                q.push(at, seq, round);
                reference.push(Entry {
                    at,
                    seq,
                    item: round,
                });
            }
            if rng.next_u64() % 5 == 0 {
                assert_eq!(q.peek_time(), reference.peek().map(|e| e.at));
            }
            if rng.next_u64() % 7 == 0 {
                // Only an item due before the limit comes out.
                let limit = Instant::from_micros(now + rng.next_u64() % 2_000);
                let due = reference.peek().is_some_and(|e| e.at < limit);
                let want = if due {
                    reference.pop().map(|e| (e.at, e.seq, e.item))
                } else {
                    None
                };
                assert_eq!(q.pop_before(limit), want);
            }
            if rng.next_u64() % 3 != 0 {
                let got = q.pop();
                let want = reference.pop().map(|e| (e.at, e.seq, e.item));
                assert_eq!(got, want);
                if let Some((at, _, _)) = got {
                    now = at.as_micros();
                }
            }
        }
        while let Some(want) = reference.pop() {
            assert_eq!(q.pop(), Some((want.at, want.seq, want.item)));
        }
        assert_eq!(q.pop(), None);
    }
}
