//! Refuses a second transaction on a backend from a thread that already holds one, which
//! would block forever on redb and sled (and on the memory backend's locks).
//!
//! Every store operation passes through here, so the common case (a few backends with a
//! transaction open on this thread) is a handful of loads and stores on thread-local cells
//! that need no destructor; only a thread with more than [`SLOTS`] transactions open at once
//! on different backends touches the overflow list.

use std::cell::{Cell, RefCell};

use crate::error::{Result, StoreError};

/// Backends tracked without allocating.
const SLOTS: usize = 4;

thread_local! {
    /// Addresses of the backends with a transaction open on this thread (`0`: free slot).
    static SLOT: [Cell<usize>; SLOTS] = const { [const { Cell::new(0) }; SLOTS] };
    /// How many entries [`OVERFLOW`] holds, so that it is only looked at when it has any.
    static OVERFLOWING: Cell<usize> = const { Cell::new(0) };
    /// Backends beyond the first [`SLOTS`].
    static OVERFLOW: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Marks a backend (by address) as having a transaction open on this thread until dropped.
#[derive(Debug)]
pub(crate) struct TxGuard {
    backend: usize,
    /// The slot it occupies, or `SLOTS` when it is in the overflow list.
    slot: usize,
}

impl TxGuard {
    #[inline]
    pub(crate) fn enter(backend: usize) -> Result<TxGuard> {
        debug_assert_ne!(backend, 0, "backends are never at address 0");
        SLOT.with(|slots| {
            let mut free = SLOTS;
            for (i, slot) in slots.iter().enumerate().rev() {
                let held = slot.get();
                if held == backend {
                    return Err(StoreError::NestedTransaction);
                }
                if held == 0 {
                    free = i;
                }
            }
            if OVERFLOWING.get() > 0 && Self::in_overflow(backend) {
                return Err(StoreError::NestedTransaction);
            }
            match slots.get(free) {
                Some(slot) => slot.set(backend),
                None => Self::push_overflow(backend),
            }
            Ok(TxGuard {
                backend,
                slot: free,
            })
        })
    }

    #[cold]
    fn push_overflow(backend: usize) {
        OVERFLOW.with(|list| list.borrow_mut().push(backend));
        OVERFLOWING.set(OVERFLOWING.get() + 1);
    }

    #[cold]
    fn in_overflow(backend: usize) -> bool {
        OVERFLOW.with(|list| list.borrow().contains(&backend))
    }
}

impl Drop for TxGuard {
    #[inline]
    fn drop(&mut self) {
        if self.slot < SLOTS {
            // `try_with`: during thread teardown the cells may already be gone.
            let _ = SLOT.try_with(|slots| slots[self.slot].set(0));
            return;
        }
        let _ = OVERFLOW.try_with(|list| {
            let mut list = list.borrow_mut();
            if let Some(i) = list.iter().rposition(|&b| b == self.backend) {
                list.swap_remove(i);
                OVERFLOWING.set(OVERFLOWING.get() - 1);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_refused_per_backend_beyond_the_slots_too() {
        let backends: Vec<usize> = (1..=SLOTS + 3).map(|i| i * 64).collect();
        let mut guards = Vec::new();
        for &b in &backends {
            guards.push(TxGuard::enter(b).unwrap());
        }
        for &b in &backends {
            assert!(matches!(
                TxGuard::enter(b),
                Err(StoreError::NestedTransaction)
            ));
        }
        // Free a slot: a backend held in the overflow list is still refused.
        let first = guards.remove(0);
        drop(first);
        assert!(TxGuard::enter(backends[SLOTS + 1]).is_err());
        let again = TxGuard::enter(backends[0]).unwrap();
        drop(again);
        drop(guards);
        for &b in &backends {
            drop(TxGuard::enter(b).unwrap());
        }
        assert_eq!(OVERFLOWING.get(), 0);
    }
}
