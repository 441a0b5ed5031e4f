//! The trace: every event folded into the run's trace hash (the whole network's in one
//! stream, each node's in its own), and optionally written to a trace file.

use std::io::Write as _;

use netabase_core::Instant;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::Simulation;
use super::engine::Cx;
use super::node::ORDER_BITS;

/// Bytes of trace gathered before they are hashed.
pub(super) const TRACE_CHUNK: usize = 16 * 1024;

/// One line of the trace file, written in (time, node, order) order.
pub(super) struct Line {
    pub(super) at: Instant,
    pub(super) order: u64,
    pub(super) text: String,
}

/// The trace file's line for one event.
fn trace_line(at: Instant, code: u8, node: u32, extra: u64) -> String {
    const KINDS: [&str; 19] = [
        "?",
        "request",
        "response",
        "sent",
        "failed",
        "timer",
        "join",
        "crash",
        "restart",
        "partition-start",
        "partition-end",
        "clog",
        "unclog",
        "heal-all",
        "op-start",
        "op-end",
        "closed",
        "sync",
        "final-reads",
    ];
    let kind = KINDS.get(usize::from(code)).copied().unwrap_or("?");
    format!("{:>14} {kind:<15} {node:>6} {extra}", at.as_micros())
}

impl Cx<'_> {
    /// Folds one event of node `i` into its trace hash (and the trace file).
    pub(super) fn trace(&mut self, i: usize, code: u8, extra: u64) {
        let at = self.now;
        let tracing = self.net.tracing;
        let node = self.node(i);
        node.count += 1;
        let order = node.count;
        let mut buf = [0u8; 17];
        buf[..8].copy_from_slice(&at.as_micros().to_le_bytes());
        buf[8] = code;
        buf[9..].copy_from_slice(&extra.to_le_bytes());
        node.trace = xxh3_64_with_seed(&buf, node.trace);
        if tracing {
            self.shard.lines.push(Line {
                at,
                order: ((i as u64 + 1) << ORDER_BITS) | order,
                text: trace_line(at, code, i as u32, extra),
            });
        }
    }
}

impl Simulation {
    /// Folds an event of the whole network into the trace.
    pub(super) fn trace_event(&mut self, at: Instant, code: u8, node: u32, extra: u64) {
        let mut buf = [0u8; 21];
        buf[..8].copy_from_slice(&at.as_micros().to_le_bytes());
        buf[8] = code;
        buf[9..13].copy_from_slice(&node.to_le_bytes());
        buf[13..].copy_from_slice(&extra.to_le_bytes());
        self.trace_buf.extend_from_slice(&buf);
        if self.trace_buf.len() >= TRACE_CHUNK {
            self.trace.update(&self.trace_buf);
            self.trace_buf.clear();
        }
        if let Some(w) = self.trace_out.as_mut() {
            // A failing trace writer must not change the run; the hash is what counts.
            let _ = writeln!(w, "{}", trace_line(at, code, node, extra));
        }
    }
}
