//! The report of one run.

use serde::Serialize;

/// An invariant that did not hold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// The checker that found it.
    pub checker: String,
    /// Virtual time, in milliseconds.
    pub at_ms: u64,
    /// What went wrong.
    pub message: String,
}

/// Counts per operation kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OpCounts {
    /// Issued.
    pub issued: u64,
    /// Succeeded.
    pub ok: u64,
    /// Failed or unfinished.
    pub failed: u64,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Number of nodes.
    pub nodes: usize,
    /// Threads the nodes' events ran on (the results do not depend on it).
    pub threads: usize,
    /// Virtual time simulated, ms.
    pub virtual_ms: u64,
    /// Wall-clock time taken, ms.
    pub wall_ms: u64,
    /// Events processed.
    pub events: u64,
    /// Events per wall-clock second.
    pub events_per_sec: f64,
    /// Client operations issued.
    pub ops: u64,
    /// Of which succeeded.
    pub ops_ok: u64,
    /// Of which failed or did not finish.
    pub ops_failed: u64,
    /// Puts.
    pub puts: OpCounts,
    /// Gets.
    pub gets: OpCounts,
    /// Provider announcements.
    pub provides: OpCounts,
    /// Provider lookups.
    pub get_providers: OpCounts,
    /// Closest-peer lookups.
    pub lookups: OpCounts,
    /// Removals.
    pub removes: OpCounts,
    /// Fraction of gets, issued after a put of their key was acknowledged, that found that
    /// value or a newer one.
    pub get_after_put_success: f64,
    /// Median lookup rounds (lookups and gets).
    pub lookup_hops_p50: u32,
    /// 99th percentile lookup rounds.
    pub lookup_hops_p99: u32,
    /// Median operation latency, ms.
    pub latency_ms_p50: f64,
    /// 99th percentile operation latency, ms.
    pub latency_ms_p99: f64,
    /// Messages sent (requests and responses).
    pub messages: u64,
    /// Records the running nodes refused at the end: forged or tampered signatures.
    pub forged_refused: u64,
    /// Records the running nodes refused at the end: versions too far ahead of their clocks.
    pub clock_refused: u64,
    /// Hash of the whole event trace: equal seeds give equal hashes.
    pub trace_hash: String,
    /// Invariants that did not hold (empty when all held).
    pub violations: Vec<Violation>,
}

/// The `p`-th percentile (0..=100) of sorted values, nearest rank.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Report {
    /// A human-readable summary.
    pub fn human(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {} (seed {}, {} nodes)",
            self.scenario, self.seed, self.nodes
        );
        let _ = writeln!(
            s,
            "  simulated {:.1} s in {:.2} s wall on {} thread{}: {} events ({:.0}/s), {} messages",
            self.virtual_ms as f64 / 1000.0,
            self.wall_ms as f64 / 1000.0,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.events,
            self.events_per_sec,
            self.messages
        );
        let _ = writeln!(
            s,
            "  operations: {} issued, {} ok, {} failed",
            self.ops, self.ops_ok, self.ops_failed
        );
        for (name, c) in [
            ("put", &self.puts),
            ("get", &self.gets),
            ("provide", &self.provides),
            ("get_providers", &self.get_providers),
            ("lookup", &self.lookups),
            ("remove", &self.removes),
        ] {
            if c.issued > 0 {
                let _ = writeln!(
                    s,
                    "    {name:<14} {:>7} issued {:>7} ok {:>6} failed",
                    c.issued, c.ok, c.failed
                );
            }
        }
        let _ = writeln!(
            s,
            "  gets after a completed put that found the value: {:.2}%",
            self.get_after_put_success * 100.0
        );
        let _ = writeln!(
            s,
            "  lookup rounds p50 {} p99 {}",
            self.lookup_hops_p50, self.lookup_hops_p99
        );
        let _ = writeln!(
            s,
            "  latency p50 {:.1} ms p99 {:.1} ms",
            self.latency_ms_p50, self.latency_ms_p99
        );
        if self.forged_refused + self.clock_refused > 0 {
            let _ = writeln!(
                s,
                "  records refused: {} forged, {} too far ahead of the clock",
                self.forged_refused, self.clock_refused
            );
        }
        let _ = writeln!(s, "  trace hash {}", self.trace_hash);
        if self.violations.is_empty() {
            let _ = writeln!(s, "  all invariants held");
        } else {
            let _ = writeln!(s, "  {} VIOLATIONS:", self.violations.len());
            for v in self.violations.iter().take(20) {
                let _ = writeln!(s, "    [{}] at {} ms: {}", v.checker, v.at_ms, v.message);
            }
        }
        s
    }
}
