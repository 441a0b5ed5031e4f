//! The search for a linearization of one partition's operations.
//!
//! This is Wing & Gong's backtracking search with Lowe's memoization. The operations' call
//! and return events are sorted by time into a doubly linked list. Walking the list from its
//! head, the search tries to linearize each operation whose call it meets: if the model
//! accepts the operation in the current state, and the resulting configuration (the set of
//! linearized operations and the model state) was never reached before, the operation's
//! events are unlinked, a frame is pushed, and the walk restarts from the head. Meeting a
//! return event means an operation that must precede everything after it could not be
//! placed: the search backtracks by popping the last frame and relinking its events. The
//! history is linearizable when every operation with a known outcome is linearized, and not
//! linearizable when a return is met with an empty stack. [`Visited`] describes the
//! memoization, extended to operations with unknown outcomes.
//!
//! An operation with an unknown outcome has no return event: nothing forces it into the
//! linearization, and it may be placed anywhere after its call.

use std::time::Instant;

use rustc_hash::FxHashMap;

use super::{Budget, Model};

/// One operation as the search sees it.
pub(super) struct Op<'a, I, O> {
    /// Index of the operation in the caller's history.
    pub(super) index: usize,
    pub(super) input: &'a I,
    /// `None`: the outcome is unknown; the operation may be left out.
    pub(super) output: Option<&'a O>,
    pub(super) call: u64,
    /// `None`: returned at +infinity. Ignored when `output` is `None`.
    pub(super) ret: Option<u64>,
}

// Manual impls: a derive would require `I: Clone` and `O: Clone`.
impl<I, O> Clone for Op<'_, I, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I, O> Copy for Op<'_, I, O> {}

impl<I, O> Op<'_, I, O> {
    /// The same operation with its outcome treated as unknown.
    pub(super) fn relaxed(self) -> Self {
        Self {
            output: None,
            ..self
        }
    }
}

/// Counts search steps against a [`Budget`].
#[derive(Debug)]
pub(super) struct Meter {
    /// Steps taken so far.
    pub(super) used: u64,
    limit: Option<u64>,
    deadline: Option<Instant>,
    spent: bool,
}

/// How often (in steps) the wall clock is read when the budget has a deadline.
const CLOCK_EVERY: u64 = 1024;

impl Meter {
    pub(super) fn new(budget: &Budget) -> Self {
        Self {
            used: 0,
            limit: budget.max_steps,
            deadline: budget.deadline,
            spent: false,
        }
    }

    /// A meter that allows at most `steps` more steps of this one, and the same deadline.
    pub(super) fn sub(&self, steps: u64) -> Self {
        let left = self.remaining().map_or(steps, |left| left.min(steps));
        Self {
            used: 0,
            limit: Some(left),
            deadline: self.deadline,
            spent: self.spent,
        }
    }

    /// Steps left before the step limit, if there is one.
    pub(super) fn remaining(&self) -> Option<u64> {
        self.limit.map(|limit| limit.saturating_sub(self.used))
    }

    /// Adds the steps another meter took to this one.
    pub(super) fn absorb(&mut self, other: &Meter) {
        self.used = self.used.saturating_add(other.used);
        if self.limit.is_some_and(|limit| self.used >= limit) {
            self.spent = true;
        }
    }

    /// Takes one step; false once the budget is spent.
    pub(super) fn tick(&mut self) -> bool {
        if self.spent {
            return false;
        }
        if self.limit.is_some_and(|limit| self.used >= limit) {
            self.spent = true;
            return false;
        }
        if let Some(deadline) = self.deadline
            && self.used.is_multiple_of(CLOCK_EVERY)
            && Instant::now() >= deadline
        {
            self.spent = true;
            return false;
        }
        self.used += 1;
        true
    }
}

/// What the search found.
pub(super) enum Outcome<S> {
    Linearizable,
    NotLinearizable(Stuck<S>),
    OutOfBudget,
}

/// The deepest point the search reached before failing.
pub(super) struct Stuck<S> {
    /// The longest partial linearization found, as positions in the search's op slice.
    pub(super) linearized: Vec<usize>,
    /// The model state after it.
    pub(super) state: S,
    /// The operations that were called, but not linearized, before the first return that
    /// could not be passed: none of them could come next.
    pub(super) unplaced: Vec<usize>,
}

/// No entry.
const NONE: usize = usize::MAX;

/// One call or return event in the linked list. Entry 0 is the head sentinel.
struct Entry {
    /// Position of the operation in the search's op slice.
    op: usize,
    is_call: bool,
    /// For a call: its return entry, or [`NONE`] when the outcome is unknown.
    ret: usize,
    prev: usize,
    next: usize,
}

/// The events of a history as a doubly linked list, unlinked and relinked in LIFO order.
struct Events {
    entries: Vec<Entry>,
}

impl Events {
    fn new<I, O>(ops: &[Op<'_, I, O>]) -> Self {
        // (time, 0 for a call and 1 for a return, op): calls sort before returns at equal
        // times, so an operation returning at the instant another is called overlaps it.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, 0, i));
            if op.output.is_some() {
                events.push((op.ret.unwrap_or(u64::MAX), 1, i));
            }
        }
        events.sort_unstable();
        let mut entries = Vec::with_capacity(events.len() + 1);
        entries.push(Entry {
            op: NONE,
            is_call: false,
            ret: NONE,
            prev: NONE,
            next: if events.is_empty() { NONE } else { 1 },
        });
        let mut call_entry = vec![NONE; ops.len()];
        for (position, &(_, kind, op)) in events.iter().enumerate() {
            let index = position + 1;
            if kind == 0 {
                call_entry[op] = index;
            } else if let Some(call) = call_entry.get(op).copied().filter(|&c| c != NONE) {
                entries[call].ret = index;
            }
            entries.push(Entry {
                op,
                is_call: kind == 0,
                ret: NONE,
                prev: position,
                next: if index == events.len() {
                    NONE
                } else {
                    index + 1
                },
            });
        }
        Self { entries }
    }

    fn first(&self) -> usize {
        self.entries[0].next
    }

    fn unlink(&mut self, index: usize) {
        let (prev, next) = (self.entries[index].prev, self.entries[index].next);
        self.entries[prev].next = next;
        if next != NONE {
            self.entries[next].prev = prev;
        }
    }

    fn relink(&mut self, index: usize) {
        let (prev, next) = (self.entries[index].prev, self.entries[index].next);
        self.entries[prev].next = index;
        if next != NONE {
            self.entries[next].prev = index;
        }
    }

    /// Removes a call and its return (if any).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.entries[call].ret;
        if ret != NONE {
            self.unlink(ret);
        }
    }

    /// Undoes the last [`Events::lift`] of `call`.
    fn unlift(&mut self, call: usize) {
        let ret = self.entries[call].ret;
        if ret != NONE {
            self.relink(ret);
        }
        self.relink(call);
    }

    /// The operations whose calls come before `stop` in the list.
    fn calls_before(&self, stop: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = self.first();
        while at != NONE && at != stop {
            if self.entries[at].is_call {
                out.push(self.entries[at].op);
            }
            at = self.entries[at].next;
        }
        out
    }
}

/// A fixed-size set of operation positions.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)].into_boxed_slice())
    }

    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }

    fn is_subset(&self, other: &Bits) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }
}

/// The configurations the search has visited: a configuration is the set of linearized
/// operations with known outcomes, the set of linearized operations with unknown outcomes,
/// and the state.
///
/// A configuration is dominated by a visited one with the same known set and state and a
/// subset of its unknown set: the visited one can make every move it can (an operation
/// with an unknown outcome left unlinearized never has to be placed), so it cannot lead
/// anywhere the visited one cannot. With no unknown outcomes this is Lowe's memoization of
/// equal configurations.
struct Visited<S> {
    seen: FxHashMap<(Bits, S), Vec<Bits>>,
}

impl<S: Eq + std::hash::Hash> Visited<S> {
    /// Records a configuration; false if it is dominated by one visited before.
    fn visit(&mut self, known: &Bits, unknown: &Bits, state: S) -> bool {
        let unknowns = self.seen.entry((known.clone(), state)).or_default();
        if unknowns.iter().any(|seen| seen.is_subset(unknown)) {
            return false;
        }
        unknowns.retain(|seen| !unknown.is_subset(seen));
        unknowns.push(unknown.clone());
        true
    }
}

/// One linearized operation on the search stack.
struct Frame<S> {
    call: usize,
    /// The state before the operation.
    before: S,
    /// Which of the operation's possible next states was taken (0 for a known outcome).
    alternative: usize,
}

/// Searches for a linearization of `ops` (all from one partition).
pub(super) fn search<M: Model>(
    model: &M,
    ops: &[Op<'_, M::Input, M::Output>],
    meter: &mut Meter,
) -> Outcome<M::State> {
    let mut events = Events::new(ops);
    let mut state = model.init();
    // The linearized operations with known and with unknown outcomes.
    let mut known = Bits::new(ops.len());
    let mut unknown = Bits::new(ops.len());
    let mut remaining = ops.iter().filter(|op| op.output.is_some()).count();
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut visited = Visited {
        seen: FxHashMap::default(),
    };
    let mut deepest: Option<Stuck<M::State>> = None;
    let mut at = events.first();
    // The first alternative to try at `at`: nonzero when returning to a call after
    // backtracking over it.
    let mut first_alternative = 0;
    // Each configuration's moves are tried in two passes over the calls before the first
    // return: operations with known outcomes first, then those with unknown outcomes.
    // Trying the latter last visits configurations with fewer of them linearized first, and
    // those dominate the others (see [`Visited`]).
    let any_unknown = ops.iter().any(|op| op.output.is_none());
    let mut unknown_pass = false;

    loop {
        if remaining == 0 {
            return Outcome::Linearizable;
        }
        if !meter.tick() {
            return Outcome::OutOfBudget;
        }
        // While an operation with a known outcome is unlinearized its return is in the list
        // after its call, so the walk meets a return before the end; `NONE` is handled as a
        // dead end all the same.
        let is_call = at != NONE && events.entries[at].is_call;
        if is_call {
            let position = events.entries[at].op;
            let op = ops[position];
            if op.output.is_none() != unknown_pass {
                at = events.entries[at].next;
                continue;
            }
            let mut taken = None;
            match op.output {
                Some(output) => {
                    known.flip(position);
                    if first_alternative == 0
                        && let Some(next) = model.step(&state, op.input, output)
                        && visited.visit(&known, &unknown, next.clone())
                    {
                        taken = Some((next, 0));
                    }
                    if taken.is_none() {
                        known.flip(position);
                    }
                }
                None => {
                    unknown.flip(position);
                    let nexts = model.step_unknown(&state, op.input);
                    for (alternative, next) in nexts.into_iter().enumerate().skip(first_alternative)
                    {
                        if visited.visit(&known, &unknown, next.clone()) {
                            taken = Some((next, alternative));
                            break;
                        }
                    }
                    if taken.is_none() {
                        unknown.flip(position);
                    }
                }
            }
            first_alternative = 0;
            match taken {
                Some((next, alternative)) => {
                    events.lift(at);
                    if op.output.is_some() {
                        remaining -= 1;
                    }
                    stack.push(Frame {
                        call: at,
                        before: std::mem::replace(&mut state, next),
                        alternative,
                    });
                    at = events.first();
                    unknown_pass = false;
                }
                None => at = events.entries[at].next,
            }
        } else if any_unknown && !unknown_pass {
            unknown_pass = true;
            at = events.first();
        } else {
            if deepest
                .as_ref()
                .is_none_or(|d| stack.len() > d.linearized.len())
            {
                deepest = Some(Stuck {
                    linearized: stack.iter().map(|f| events.entries[f.call].op).collect(),
                    state: state.clone(),
                    unplaced: events.calls_before(at),
                });
            }
            let Some(frame) = stack.pop() else {
                return match deepest {
                    Some(stuck) => Outcome::NotLinearizable(stuck),
                    None => Outcome::OutOfBudget,
                };
            };
            let position = events.entries[frame.call].op;
            events.unlift(frame.call);
            if ops[position].output.is_some() {
                known.flip(position);
                remaining += 1;
            } else {
                unknown.flip(position);
            }
            state = frame.before;
            at = frame.call;
            unknown_pass = ops[position].output.is_none();
            first_alternative = frame.alternative + 1;
        }
    }
}
