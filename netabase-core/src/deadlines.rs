//! Ordered sets of deadlines whose earliest one is read without touching the set.

use alloc::collections::BTreeSet;

use crate::time::Instant;

/// A set of `(deadline, id)` pairs, earliest first, that keeps a copy of its earliest
/// deadline inline.
///
/// A driver asks a node for its next deadline after every input. With the earliest
/// deadline of each set cached in the node itself, that question reads the node and none
/// of the sets' tree nodes, which are cold in a simulation of thousands of nodes. The
/// copy is refreshed whenever the set changes, when its tree is being touched anyway.
#[derive(Clone, Debug)]
pub(crate) struct Deadlines<I> {
    set: BTreeSet<(Instant, I)>,
    first: Option<Instant>,
}

impl<I: Ord + Copy> Deadlines<I> {
    pub(crate) fn new() -> Self {
        Deadlines {
            set: BTreeSet::new(),
            first: None,
        }
    }

    /// The earliest deadline.
    pub(crate) fn first_deadline(&self) -> Option<Instant> {
        self.first
    }

    pub(crate) fn insert(&mut self, deadline: Instant, id: I) -> bool {
        self.first = Some(self.first.map_or(deadline, |f| f.min(deadline)));
        self.set.insert((deadline, id))
    }

    pub(crate) fn remove(&mut self, deadline: Instant, id: I) -> bool {
        let removed = self.set.remove(&(deadline, id));
        if removed && self.first == Some(deadline) {
            self.first = self.set.first().map(|(t, _)| *t);
        }
        removed
    }

    pub(crate) fn pop_first(&mut self) -> Option<(Instant, I)> {
        let popped = self.set.pop_first();
        self.first = self.set.first().map(|(t, _)| *t);
        popped
    }

    pub(crate) fn contains(&self, deadline: Instant, id: I) -> bool {
        self.set.contains(&(deadline, id))
    }

    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether the cached earliest deadline is the set's.
    pub(crate) fn is_consistent(&self) -> bool {
        self.first == self.set.first().map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn the_cached_first_deadline_follows_every_change() {
        let t = |s| Instant::ZERO + Duration::from_secs(s);
        let mut d = Deadlines::new();
        assert_eq!(d.first_deadline(), None);
        d.insert(t(5), 1u8);
        d.insert(t(3), 2);
        d.insert(t(3), 3);
        d.insert(t(9), 4);
        assert_eq!(d.first_deadline(), Some(t(3)));
        assert!(d.remove(t(3), 2));
        assert_eq!(d.first_deadline(), Some(t(3)));
        assert!(!d.remove(t(3), 2));
        assert_eq!(d.pop_first(), Some((t(3), 3)));
        assert_eq!(d.first_deadline(), Some(t(5)));
        assert!(d.remove(t(5), 1));
        assert_eq!(d.first_deadline(), Some(t(9)));
        assert!(d.contains(t(9), 4) && d.is_consistent() && d.len() == 1);
        assert_eq!(d.pop_first(), Some((t(9), 4)));
        assert_eq!((d.first_deadline(), d.len()), (None, 0));
        assert!(d.is_consistent());
    }
}
