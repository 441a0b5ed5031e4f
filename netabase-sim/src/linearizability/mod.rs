//! A linearizability checker for client histories of a replicated store.
//!
//! A history is a list of [`Operation`]s: what each client asked ([`Operation::input`]),
//! when it asked ([`Operation::call`]), and when and with what it was answered
//! ([`Operation::ret`], [`Operation::output`]). It is linearizable when every operation can
//! be given a single instant between its call and its return such that, taken in the order of
//! those instants, the outputs are what a sequential [`Model`] of the store would have
//! produced. [`check`] decides this with Wing & Gong's backtracking search and Lowe's
//! memoization of visited configurations, after splitting the history into independent
//! partitions ([`Model::partition`]; for [`KvModel`], one per key), which keeps each search
//! small.
//!
//! # Unknown outcomes
//!
//! An operation whose output is `None` has an unknown outcome (a client timed out, crashed,
//! or lost the connection): it may not have taken effect at all, or it may have taken effect
//! at any instant after its call, even after the client gave up. The checker accepts both;
//! its [`Operation::ret`] is ignored. An operation with an output but no return time
//! (`ret: None`, `output: Some`) did take effect, at some instant after its call.
//!
//! # Time
//!
//! Times are integers on any one clock (virtual or real nanoseconds). Operation A precedes B
//! in real time only when A returned strictly before B was called: an operation returning at
//! the instant another is called overlaps it.
//!
//! # Budget
//!
//! The search is exponential in the worst case, so [`check`] takes a [`Budget`]: a number of
//! steps (deterministic: the same history and budget always give the same verdict), a
//! wall-clock deadline, or both. [`Verdict::OutOfBudget`] means the checker could not decide;
//! callers must treat it as a failure, not as a pass.
//!
//! ```
//! use netabase_sim::linearizability::{check, Budget, KvInput, KvModel, KvOutput, Operation, Verdict};
//!
//! let history: Vec<Operation<KvInput, KvOutput>> = vec![
//!     // Client 1 puts x=1 during [0, 10]; client 2 reads x during [5, 15] and sees 1.
//!     Operation::completed(1, KvInput::put("x", "1"), 0, 10, KvOutput::Ok),
//!     Operation::completed(2, KvInput::get("x"), 5, 15, KvOutput::found("1")),
//!     // Client 2 then reads x again and finds nothing: the write was lost.
//!     Operation::completed(2, KvInput::get("x"), 20, 30, KvOutput::absent()),
//! ];
//! let verdict = check(&KvModel::new(), &history, Budget::steps(10_000));
//! assert!(matches!(verdict, Verdict::NotLinearizable(_)), "{verdict}");
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Debug, Write as _};
use std::hash::Hash;
use std::time::{Duration, Instant};

mod kv;
mod minimize;
mod search;
#[cfg(test)]
mod tests;

pub use kv::{KvInput, KvModel, KvOutput, KvState};

use search::{Meter, Op, Outcome};

/// A sequential specification of the object a history is checked against.
pub trait Model {
    /// The object's state. Hashed to remember which configurations the search has visited.
    type State: Clone + Eq + Hash + Debug;
    /// An operation's request.
    type Input: Debug;
    /// An operation's result.
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` takes effect in `state`, if `output` is a legal result of it
    /// there; `None` if it is not.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// The states `input` may lead to from `state` when its output is unknown: one for
    /// each output it could legally produce there (usually one state).
    ///
    /// States equal to `state` may be left out: an operation with an unknown outcome may
    /// always be left out of a linearization, and an operation that does not change the
    /// state adds nothing by being in it. Leaving them out (a read returns an empty list)
    /// makes the search faster.
    fn step_unknown(&self, state: &Self::State, input: &Self::Input) -> Vec<Self::State>;

    /// The label of the independent part of the state `input` touches.
    ///
    /// Operations with equal labels are checked together, each label's operations from
    /// [`Model::init`] on their own; a history is linearizable when every label's
    /// sub-history is. This is sound only when operations with different labels never
    /// affect each other's outputs (the keys of a key-value store). The default puts every
    /// operation under the empty label: one search over the whole history. The label is
    /// also how a [`Counterexample`] names its part of the history.
    fn partition(&self, input: &Self::Input) -> String {
        let _ = input;
        String::new()
    }
}

/// One client operation in a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client (process, thread, connection) that issued it; used only in explanations.
    pub client: u64,
    /// The request.
    pub input: I,
    /// When the request was issued.
    pub call: u64,
    /// When the result arrived; `None`: never, or not recorded. Must not be before `call`.
    pub ret: Option<u64>,
    /// The result; `None`: unknown (the operation may or may not have taken effect, at any
    /// time after its call).
    pub output: Option<O>,
}

impl<I, O> Operation<I, O> {
    /// An operation called at `call` that returned `output` at `ret`.
    pub fn completed(client: u64, input: I, call: u64, ret: u64, output: O) -> Self {
        Self {
            client,
            input,
            call,
            ret: Some(ret),
            output: Some(output),
        }
    }

    /// An operation called at `call` whose outcome is unknown.
    pub fn unknown(client: u64, input: I, call: u64) -> Self {
        Self {
            client,
            input,
            call,
            ret: None,
            output: None,
        }
    }
}

/// How much work [`check`] may do before giving up with [`Verdict::OutOfBudget`].
///
/// Both limits apply when both are set. A step is one visit of a call or return event by
/// the search; a history of `n` operations with `c` concurrent clients needs about `n * c`
/// steps when no backtracking is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The most search steps, over all partitions; `None`: no limit.
    pub max_steps: Option<u64>,
    /// The wall-clock instant to give up at; `None`: no deadline. Makes the verdict depend
    /// on the machine's speed.
    pub deadline: Option<Instant>,
}

impl Budget {
    /// No limit at all: a pathological history may then take exponential time.
    pub const UNLIMITED: Budget = Budget {
        max_steps: None,
        deadline: None,
    };

    /// At most `steps` search steps (deterministic).
    pub const fn steps(steps: u64) -> Self {
        Self {
            max_steps: Some(steps),
            deadline: None,
        }
    }

    /// Until the wall clock reaches `deadline`.
    pub const fn deadline(deadline: Instant) -> Self {
        Self {
            max_steps: None,
            deadline: Some(deadline),
        }
    }

    /// For `duration` of wall-clock time from now.
    pub fn time(duration: Duration) -> Self {
        Self::deadline(Instant::now() + duration)
    }

    /// This budget with a deadline as well.
    pub const fn with_deadline(self, deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
            ..self
        }
    }
}

/// A malformed history.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// An operation returned before it was called.
    #[error("operation #{index} returned at {ret}, before its call at {call}")]
    ReturnBeforeCall {
        /// Its index in the history.
        index: usize,
        /// Its call time.
        call: u64,
        /// Its return time.
        ret: u64,
    },
}

/// Why a history is not linearizable.
///
/// Operation references are indices into the checked history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    /// The partition that is not linearizable ([`Model::partition`]; for [`KvModel`],
    /// `key "…"`). Empty when the model does not partition.
    pub partition: String,
    /// The smallest set of operations found whose recorded outputs cannot all be explained,
    /// even when every other operation of [`Counterexample::relaxed`] is taken to have an
    /// unknown outcome. A genuine witness: the history with only these outputs kept is not
    /// linearizable.
    pub core: Vec<usize>,
    /// The other operations of the failing stretch of the partition (those called before
    /// the last return of the core), with their outcomes treated as unknown in the witness.
    pub relaxed: Vec<usize>,
    /// The longest linearization found of a prefix of the partition, in order.
    pub linearized: Vec<usize>,
    /// The operations that were pending after [`Counterexample::linearized`], none of which
    /// could come next.
    pub unplaced: Vec<usize>,
    /// All of the above as text, with the operations written out.
    pub explanation: String,
}

/// The result of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The history is linearizable.
    Linearizable,
    /// The history is not linearizable.
    NotLinearizable(Box<Counterexample>),
    /// The budget ran out before the checker could decide: treat this as a failure.
    OutOfBudget {
        /// The partition being searched when the budget ran out.
        partition: String,
        /// Steps taken in all.
        steps: u64,
    },
    /// The history is malformed.
    InvalidHistory(HistoryError),
}

impl Verdict {
    /// Whether the history was found linearizable. False for every other verdict,
    /// including [`Verdict::OutOfBudget`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable(counterexample) => f.write_str(&counterexample.explanation),
            Verdict::OutOfBudget { partition, steps } => write!(
                f,
                "undecided: the budget ran out after {steps} steps, in partition {partition:?}"
            ),
            Verdict::InvalidHistory(error) => write!(f, "invalid history: {error}"),
        }
    }
}

/// Checks whether `history` is linearizable with respect to `model`, within `budget`.
///
/// Partitions are checked in the order of their labels, all against one budget; the first
/// that is not linearizable is reported. When it is found, part of what is left of the
/// budget (at most a fixed number of steps) is spent finding a small
/// [`Counterexample::core`]. The shrinking is best effort: when it runs out of steps (a
/// failure late in a long partition), the core holds more operations than needed, but it
/// is always a genuine witness.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: Budget,
) -> Verdict {
    for (index, op) in history.iter().enumerate() {
        if let Some(ret) = op.ret
            && ret < op.call
        {
            return Verdict::InvalidHistory(HistoryError::ReturnBeforeCall {
                index,
                call: op.call,
                ret,
            });
        }
    }

    let mut partitions: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        partitions
            .entry(model.partition(&op.input))
            .or_default()
            .push(index);
    }

    let mut meter = Meter::new(&budget);
    for (label, indices) in partitions {
        let ops: Vec<Op<'_, M::Input, M::Output>> = indices
            .iter()
            .map(|&index| {
                let op = &history[index];
                Op {
                    index,
                    input: &op.input,
                    output: op.output.as_ref(),
                    call: op.call,
                    ret: op.ret,
                }
            })
            .collect();
        match search::search(model, &ops, &mut meter) {
            Outcome::Linearizable => {}
            Outcome::OutOfBudget => {
                return Verdict::OutOfBudget {
                    partition: label,
                    steps: meter.used,
                };
            }
            Outcome::NotLinearizable(stuck) => {
                let (core, relaxed) = minimize::minimize(model, &ops, &mut meter);
                let to_history = |positions: &[usize]| -> Vec<usize> {
                    positions.iter().map(|&p| ops[p].index).collect()
                };
                let mut counterexample = Counterexample {
                    partition: label,
                    core: to_history(&core),
                    relaxed: to_history(&relaxed),
                    linearized: to_history(&stuck.linearized),
                    unplaced: to_history(&stuck.unplaced),
                    explanation: String::new(),
                };
                counterexample.explanation = explain(history, &counterexample, &stuck.state);
                return Verdict::NotLinearizable(Box::new(counterexample));
            }
        }
    }
    Verdict::Linearizable
}

/// How many operations of a long list an explanation shows.
const SHOWN: usize = 20;

/// Writes a counterexample out as text.
fn explain<I: Debug, O: Debug, S: Debug>(
    history: &[Operation<I, O>],
    counterexample: &Counterexample,
    state: &S,
) -> String {
    let mut out = String::new();
    let Counterexample {
        partition,
        core,
        relaxed,
        linearized,
        unplaced,
        ..
    } = counterexample;
    let name = if partition.is_empty() {
        "the history"
    } else {
        partition.as_str()
    };
    let _ = writeln!(out, "not linearizable: {name}");
    let _ = writeln!(
        out,
        "these {} operations' outputs cannot all be explained, even when the {} other \
         operations called before the last of them returned may or may not have taken effect:",
        core.len(),
        relaxed.len()
    );
    if core.len() > SHOWN {
        let _ = writeln!(out, "  (the last {SHOWN})");
    }
    for &index in &core[core.len().saturating_sub(SHOWN)..] {
        let _ = writeln!(out, "  {}", describe(history, index));
    }
    let _ = writeln!(
        out,
        "the longest linearization found has {} operations{}",
        linearized.len(),
        if linearized.len() > SHOWN {
            format!("; the last {SHOWN}:")
        } else if linearized.is_empty() {
            String::new()
        } else {
            ":".to_owned()
        }
    );
    for &index in &linearized[linearized.len().saturating_sub(SHOWN)..] {
        let _ = writeln!(out, "  {}", describe(history, index));
    }
    let _ = writeln!(
        out,
        "leaving the state {state:?}, after which none of these fits:"
    );
    for &index in unplaced {
        let _ = writeln!(out, "  {}", describe(history, index));
    }
    out
}

/// One operation as a line of text.
fn describe<I: Debug, O: Debug>(history: &[Operation<I, O>], index: usize) -> String {
    let Some(op) = history.get(index) else {
        return format!("#{index} (not in the history)");
    };
    let ret = op.ret.map_or_else(|| "?".to_owned(), |ret| ret.to_string());
    let output = op
        .output
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), |output| format!("{output:?}"));
    format!(
        "#{index} client {} [{}, {ret}] {:?} -> {output}",
        op.client, op.call, op.input
    )
}
