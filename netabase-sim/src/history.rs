//! The record of every client operation, and of every fault window, that checkers read.

use netabase_core::{Instant, Version};
use serde::Serialize;

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Put a value: a fresh key, or an overwrite of a key written before.
    Put,
    /// Get a key whose put completed.
    Get,
    /// Announce a fresh key as provided.
    Provide,
    /// Find the providers of an announced key.
    GetProviders,
    /// Find the closest peers of a random key.
    Lookup,
    /// Remove a key written before: put a tombstone.
    Remove,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished (yet).
    Pending,
    /// Succeeded.
    Ok,
    /// Failed, with the reason.
    Failed(String),
}

/// One client operation: its invocation, completion and result.
#[derive(Clone, Debug)]
pub struct OpRecord {
    /// Sequence number.
    pub id: usize,
    /// Index of the node it was issued at.
    pub node: usize,
    /// What it was.
    pub kind: OpKind,
    /// The record or provider key.
    pub key: Vec<u8>,
    /// Put or remove: the record value written (a signed envelope). Get: the value read
    /// (the winning copy; empty if none).
    pub value: Vec<u8>,
    /// The version of `value`, if it is a signed envelope.
    pub version: Option<Version>,
    /// Whether `value` is a tombstone.
    pub tombstone: bool,
    /// Get: the version of the node's own copy of the key when the get started.
    pub local_version: Option<Version>,
    /// The incarnation of the node it ran on (bumped at every restart).
    pub incarnation: u32,
    /// The op this one reads (a get's put, a provider lookup's announcement).
    pub reads: Option<usize>,
    /// When it was invoked (virtual time).
    pub invoked: Instant,
    /// When it completed.
    pub completed: Option<Instant>,
    /// Its result.
    pub outcome: Outcome,
    /// Lookup rounds it needed.
    pub hops: u32,
}

impl OpRecord {
    /// Whether it completed successfully (for a put or removal: acknowledged, its quorum
    /// met).
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// Whether it writes a record (a put or a removal).
    pub fn is_write(&self) -> bool {
        matches!(self.kind, OpKind::Put | OpKind::Remove)
    }

    /// Completion latency, if completed.
    pub fn latency_ms(&self) -> Option<f64> {
        self.completed
            .map(|c| c.saturating_duration_since(self.invoked).as_secs_f64() * 1000.0)
    }
}

/// Every operation of a run, in invocation order.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The operations; `ops[i].id == i`.
    pub ops: Vec<OpRecord>,
}

/// Who a fault affects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Possibly every node (a partition).
    All,
    /// One node (a crash or a clog).
    Node(usize),
}

/// Intervals during which faults were active, for deciding which operations a checker may
/// hold to account.
#[derive(Clone, Debug, Default)]
pub struct FaultLog {
    intervals: Vec<(Instant, Option<Instant>, Scope)>,
}

impl FaultLog {
    /// A fault starts; returns its handle for [`FaultLog::end`].
    pub fn start(&mut self, at: Instant, scope: Scope) -> usize {
        self.intervals.push((at, None, scope));
        self.intervals.len() - 1
    }

    /// A fault ends.
    pub fn end(&mut self, handle: usize, at: Instant) {
        if let Some(i) = self.intervals.get_mut(handle) {
            i.1.get_or_insert(at);
        }
    }

    /// Whether any fault touching one of `nodes` (or all nodes) overlapped `[from, to]`.
    pub fn disturbed(&self, nodes: &[usize], from: Instant, to: Instant) -> bool {
        self.intervals.iter().any(|(s, e, scope)| {
            let overlaps = *s <= to && e.is_none_or(|e| e >= from);
            overlaps
                && match scope {
                    Scope::All => true,
                    Scope::Node(n) => nodes.contains(n),
                }
        })
    }

    /// Whether any fault at all overlapped `[from, to]`.
    pub fn any(&self, from: Instant, to: Instant) -> bool {
        self.intervals
            .iter()
            .any(|(s, e, _)| *s <= to && e.is_none_or(|e| e >= from))
    }

    /// The last time any fault ended, if all have ended.
    pub fn all_ended_at(&self) -> Option<Instant> {
        self.intervals
            .iter()
            .try_fold(Instant::ZERO, |acc, (_, e, _)| e.map(|e| acc.max(e)))
    }
}
