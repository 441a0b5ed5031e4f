//! Invariant checkers. Each lives in its own file and is registered in [`all`]; adding one
//! is a new file and one line here.

use netabase_core::{Key, PeerId};

use crate::history::OpRecord;
use crate::report::Violation;
use crate::scenario::Scenario;
use crate::sim::World;

mod bounded_memory;
mod get_after_put;
mod liveness;
mod lookup_results;

/// Extra facts about a completed operation that the history does not keep.
pub enum Detail<'a> {
    /// Nothing more.
    None,
    /// A closest-peers lookup: its target and result.
    Lookup {
        /// The target key.
        target: &'a Key,
        /// The peers returned, closest first.
        peers: &'a [PeerId],
    },
}

/// An invariant checked during and after a run.
pub trait Checker {
    /// Short name, shown with each violation.
    fn name(&self) -> &'static str;

    /// Called when a client operation completes.
    fn on_complete(
        &mut self,
        _world: &World,
        _op: &OpRecord,
        _detail: &Detail<'_>,
        _out: &mut Vec<Violation>,
    ) {
    }

    /// Called periodically during the run, and once at its end.
    fn on_tick(&mut self, _world: &World, _out: &mut Vec<Violation>) {}

    /// Called once after the run.
    fn finish(&mut self, _world: &World, _out: &mut Vec<Violation>) {}
}

/// A violation found by `checker` at the current virtual time.
pub(crate) fn violation(checker: &dyn Checker, world: &World, message: String) -> Violation {
    Violation {
        checker: checker.name().to_string(),
        at_ms: world.now.as_millis(),
        message,
    }
}

/// Every checker, configured for `scenario`.
pub fn all(scenario: &Scenario) -> Vec<Box<dyn Checker>> {
    vec![
        Box::new(get_after_put::GetAfterPut::new(scenario)),
        Box::new(lookup_results::LookupResults::new(scenario)),
        Box::new(bounded_memory::BoundedMemory),
        Box::new(liveness::Liveness::default()),
    ]
}
