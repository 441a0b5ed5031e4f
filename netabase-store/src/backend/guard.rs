//! Refuses a second transaction on a backend from a thread that already holds one, which
//! would block forever on redb and sled (and on the memory backend's locks).

use std::cell::RefCell;

use crate::error::{Result, StoreError};

thread_local! {
    static OPEN: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Marks a backend (by address) as having a transaction open on this thread until dropped.
#[derive(Debug)]
pub(crate) struct TxGuard(usize);

impl TxGuard {
    pub(crate) fn enter(backend: usize) -> Result<TxGuard> {
        OPEN.with(|open| {
            let mut open = open.borrow_mut();
            if open.contains(&backend) {
                return Err(StoreError::NestedTransaction);
            }
            open.push(backend);
            Ok(TxGuard(backend))
        })
    }
}

impl Drop for TxGuard {
    fn drop(&mut self) {
        // `try_with`: during thread teardown the list may already be gone.
        let _ = OPEN.try_with(|open| {
            let mut open = open.borrow_mut();
            if let Some(i) = open.iter().rposition(|&b| b == self.0) {
                open.swap_remove(i);
            }
        });
    }
}
