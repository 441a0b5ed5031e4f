//! Shrinking a partition that is not linearizable to a small witness.
//!
//! Two transformations keep a history's failure genuine:
//!
//! * Relaxing an operation (treating its outcome as unknown) only allows more
//!   linearizations: if the relaxed history is not linearizable, neither is the original.
//! * Cutting at a time `t` (keeping the operations called by `t`, relaxing those that had not
//!   returned by `t`): any linearization of the original, stopped before its first
//!   operation called after `t`, linearizes the cut, so a cut that is not linearizable
//!   proves the original is not.
//!
//! The shrinking first finds the earliest cut (return time) that still fails, by bisection
//! (a cut of a cut is a cut, so failing is monotonic in `t`), and then relaxes as many of the
//! remaining known outcomes as it can, in halving chunks. Every probe is a bounded search; a
//! probe that runs out of steps counts as passing, so the result is always a witness.

use super::Model;
use super::search::{Meter, Op, Outcome, search};

/// The most steps the shrinking spends in all.
const SHRINK_STEPS: u64 = 1_000_000;

/// The most steps one probe spends.
const PROBE_STEPS: u64 = 100_000;

/// Shrinks `ops` (a partition known not to be linearizable). Returns the positions of the
/// core (operations whose outputs are kept) and of the other operations of the witness
/// (relaxed), both sorted.
pub(super) fn minimize<M: Model>(
    model: &M,
    ops: &[Op<'_, M::Input, M::Output>],
    meter: &mut Meter,
) -> (Vec<usize>, Vec<usize>) {
    let mut pool = meter.sub(SHRINK_STEPS);
    let mut probe = |keep: &[bool], cut: Option<u64>| -> bool {
        let witness: Vec<Op<'_, M::Input, M::Output>> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| cut.is_none_or(|cut| op.call <= cut))
            .map(|(position, &op)| {
                let returned = cut.is_none_or(|cut| op.ret.is_some_and(|ret| ret <= cut));
                if keep[position] && returned {
                    op
                } else {
                    op.relaxed()
                }
            })
            .collect();
        let mut steps = pool.sub(PROBE_STEPS);
        let failed = matches!(
            search(model, &witness, &mut steps),
            Outcome::NotLinearizable(_)
        );
        pool.absorb(&steps);
        failed
    };

    // The earliest failing cut.
    let all: Vec<bool> = ops.iter().map(|op| op.output.is_some()).collect();
    let mut cuts: Vec<u64> = ops
        .iter()
        .filter(|op| op.output.is_some())
        .filter_map(|op| op.ret)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let (mut low, mut high) = (0, cuts.len());
    while low < high {
        let middle = low + (high - low) / 2;
        if probe(&all, Some(cuts[middle])) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    let cut = cuts.get(high).copied();

    // The known outcomes within the cut, relaxed chunk by chunk.
    let mut keep: Vec<bool> = ops
        .iter()
        .map(|op| op.output.is_some() && cut.is_none_or(|cut| op.ret.is_some_and(|ret| ret <= cut)))
        .collect();
    let mut kept: Vec<usize> = (0..ops.len()).filter(|&p| keep[p]).collect();
    let mut chunk = kept.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < kept.len() && kept.len() > 1 {
            let end = (start + chunk).min(kept.len());
            for &p in &kept[start..end] {
                keep[p] = false;
            }
            if end - start < kept.len() && probe(&keep, cut) {
                kept.drain(start..end);
            } else {
                for &p in &kept[start..end] {
                    keep[p] = true;
                }
                start = end;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    meter.absorb(&pool);

    // Operations called after the core's last return add nothing: they are all relaxed.
    let last_return = kept
        .iter()
        .map(|&p| ops[p].ret)
        .try_fold(0, |last, ret| ret.map(|ret| last.max(ret)));
    let relaxed = (0..ops.len())
        .filter(|&p| !keep[p])
        .filter(|&p| last_return.is_none_or(|last| ops[p].call <= last))
        .collect();
    (kept, relaxed)
}
