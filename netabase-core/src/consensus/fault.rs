//! Planted bugs (feature `fault-injection`, never in a production build): each one breaks
//! a rule the consensus member relies on, so that the checkers of the cluster harness and
//! of the simulator can be shown to catch it.

/// A bug planted in a [`Member`](super::Member) with [`Member::inject`](super::Member::inject).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutant {
    /// An acceptor promises without writing the promise.
    PromiseNotPersisted,
    /// A follower serves a linearizable read from its own state.
    FollowerReadsLocally,
    /// A new leader serves reads before its no-op is applied.
    ReadBeforeNoop,
    /// A restarted member promises at once, without waiting out its leases.
    NoLeaseWaitAfterRestart,
    /// The leader's lease runs `D·(1 + ε)` (the acceptors' bound) on its own clock
    /// instead of `D·(1 − ε) − margin`.
    LeaseIgnoresDrift,
    /// A membership change decided at slot `k` is in force from `k + 1` instead of
    /// `k + alpha`.
    ConfigActiveEarly,
    /// An acceptor's promise reports no truncation point, so the slots it compacted
    /// away look empty to the candidate.
    TruncatedReportedEmpty,
}

impl Mutant {
    /// Every planted bug.
    pub const ALL: [Mutant; 7] = [
        Mutant::PromiseNotPersisted,
        Mutant::FollowerReadsLocally,
        Mutant::ReadBeforeNoop,
        Mutant::NoLeaseWaitAfterRestart,
        Mutant::LeaseIgnoresDrift,
        Mutant::ConfigActiveEarly,
        Mutant::TruncatedReportedEmpty,
    ];

    /// The bug's name in scenario files, in kebab case.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::PromiseNotPersisted => "promise-not-persisted",
            Mutant::FollowerReadsLocally => "follower-reads-locally",
            Mutant::ReadBeforeNoop => "read-before-noop",
            Mutant::NoLeaseWaitAfterRestart => "no-lease-wait-after-restart",
            Mutant::LeaseIgnoresDrift => "lease-ignores-drift",
            Mutant::ConfigActiveEarly => "config-active-early",
            Mutant::TruncatedReportedEmpty => "truncated-reported-empty",
        }
    }

    /// The bug named `name`.
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }
}
