//! A node's outbound requests awaiting an outcome, by id.

use alloc::collections::VecDeque;

/// Values keyed by consecutive ids, kept in id order.
///
/// A node numbers its requests consecutively and gives each the same timeout, so the
/// oldest request still waiting is both the first in id order and the first to time out.
/// A ring of slots indexed by `id - base` finds a request with one subtraction, and the
/// front of the ring is the next deadline: no search tree and no separate deadline set.
/// Slots of finished requests are dropped as soon as no older request is waiting, so
/// the ring spans only the requests sent since the oldest one still waiting (bounded by
/// the request timeout).
#[derive(Clone, Debug)]
pub(crate) struct RequestTable<T> {
    /// Id of `slots[0]`.
    base: u64,
    slots: VecDeque<Option<T>>,
    len: usize,
}

impl<T> RequestTable<T> {
    pub(crate) fn new() -> Self {
        RequestTable {
            base: 0,
            slots: VecDeque::new(),
            len: 0,
        }
    }

    /// Number of values held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `value` under `id`, which must be greater than every id added before.
    pub(crate) fn insert(&mut self, id: u64, value: T) {
        if self.slots.is_empty() {
            self.base = id;
        }
        let end = self.base + self.slots.len() as u64;
        debug_assert!(id >= end, "request ids must increase");
        for _ in end..id {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(value));
        self.len += 1;
    }

    fn index(&self, id: u64) -> Option<usize> {
        let i = id.checked_sub(self.base)?;
        usize::try_from(i).ok().filter(|&i| i < self.slots.len())
    }

    pub(crate) fn get(&self, id: u64) -> Option<&T> {
        self.slots.get(self.index(id)?)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        let i = self.index(id)?;
        self.slots.get_mut(i)?.as_mut()
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let i = self.index(id)?;
        let value = self.slots.get_mut(i)?.take()?;
        self.len -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(value)
    }

    /// The lowest id held, read without touching the slots.
    pub(crate) fn first_id(&self) -> Option<u64> {
        (!self.slots.is_empty()).then_some(self.base)
    }

    /// The value with the lowest id.
    pub(crate) fn first(&self) -> Option<(u64, &T)> {
        // The front slot is always occupied: `remove` drops empty slots at the front.
        self.slots
            .front()
            .and_then(|s| s.as_ref())
            .map(|v| (self.base, v))
    }

    /// Every value, in id order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    /// Number of slots (values and the gaps between them).
    #[cfg(test)]
    pub(crate) fn span(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_removes_and_keeps_the_oldest_in_front() {
        let mut t = RequestTable::new();
        for id in 5..10u64 {
            t.insert(id, id * 10);
        }
        assert_eq!(t.len(), 5);
        assert_eq!(t.first(), Some((5, &50)));
        assert_eq!(t.first_id(), Some(5));
        assert_eq!(t.remove(7), Some(70));
        assert_eq!(t.remove(7), None);
        assert_eq!(t.get(8), Some(&80));
        assert_eq!(t.get(4), None);
        assert_eq!(t.get(10), None);
        assert_eq!(t.remove(5), Some(50));
        assert_eq!(t.first(), Some((6, &60)));
        assert_eq!(t.remove(6), Some(60));
        // 7 was removed before: the front moves past it.
        assert_eq!(t.first(), Some((8, &80)));
        assert_eq!(t.span(), 2);
        *t.get_mut(9).unwrap() += 1;
        assert_eq!(
            t.values().copied().collect::<alloc::vec::Vec<_>>(),
            [80, 91]
        );
        assert_eq!(t.remove(8), Some(80));
        assert_eq!(t.remove(9), Some(91));
        assert_eq!((t.len(), t.span(), t.first()), (0, 0, None));
        t.insert(20, 1);
        assert_eq!(t.first(), Some((20, &1)));
    }
}
