//! Invariant checkers. Each lives in its own file and is registered in [`all`]; adding one
//! is a new file and one line here.

use netabase_core::{Key, PeerId};

use crate::history::{OpKind, OpRecord};
use crate::report::Violation;
use crate::scenario::Scenario;
use crate::sim::World;

mod acked_writes;
mod bounded_memory;
mod convergence;
mod durable_acks;
mod get_after_put;
mod job_queues;
mod liveness;
mod lookup_results;
mod monotonic_reads;
mod no_resurrection;
mod own_versions;

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

    /// Called at `checks.convergence_s`, when the network should have converged.
    fn on_converged(&mut self, _world: &World, _out: &mut Vec<Violation>) {}
}

/// Whether get `get` read the value written by `write` or a newer one: by version, or by
/// the exact bytes for values without one.
pub fn reads_at_least(get: &OpRecord, write: &OpRecord) -> bool {
    match (get.version, write.version) {
        (Some(g), Some(w)) => g >= w,
        (_, None) => get.value == write.value,
        (None, Some(_)) => false,
    }
}

/// The write a get's value comes from: the put whose payload names it (the workload's
/// payloads start with their operation's number), or the removal with the same bytes.
pub(crate) fn source_of<'a>(world: &'a World, get: &OpRecord) -> Option<&'a OpRecord> {
    let ops = &world.history.ops;
    let same = |w: &OpRecord| w.is_write() && w.key == get.key && w.value == get.value;
    if get.tombstone {
        return ops
            .iter()
            .rev()
            .find(|w| w.kind == OpKind::Remove && same(w));
    }
    let payload = match netabase_core::model::Envelope::decode(&get.value) {
        Ok(envelope) => envelope.payload,
        Err(_) => get.value.clone(),
    };
    let id = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    ops.get(usize::try_from(id).ok()?).filter(|w| same(w))
}

/// A key for messages.
pub(crate) fn show_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
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
        Box::new(monotonic_reads::MonotonicReads::default()),
        Box::new(acked_writes::AckedWrites::default()),
        Box::new(no_resurrection::NoResurrection::new(scenario)),
        Box::new(convergence::Convergence::new(scenario)),
        Box::new(durable_acks::DurableAcks::default()),
        Box::new(own_versions::OwnVersions::default()),
        Box::new(job_queues::JobQueues::default()),
    ]
}
