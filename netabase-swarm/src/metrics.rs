//! Prometheus metrics of a node: what the driver counts and measures, and libp2p's own.
//!
//! [`NodeMetrics::register`] adds the metrics to a [`prometheus_client`] registry;
//! [`NetabaseConfig::with_metrics`](crate::NetabaseConfig::with_metrics) hands them to a
//! node, whose driver updates them. Encode the registry (for instance with
//! `prometheus_client::encoding::text::encode`) to serve them.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `netabase_operations_total` | counter | `operation`, `outcome` | API operations the node carried out |
//! | `netabase_query_duration_seconds` | histogram | `operation`, `outcome` | how long each DHT query took, start to answer |
//! | `netabase_messages_total` | counter | `direction`, `protocol`, `kind`, `role` | protocol messages sent (`out`) and received (`in`) |
//! | `netabase_rejected_inputs_total` | counter | `input`, `reason` | inputs from peers the node refused (`input="limit"`: connections and requests over the [inbound limits](crate::InboundLimits), `reason` one of [`Refusal::label`](crate::Refusal::label)) |
//! | `netabase_request_failures_total` | counter | `reason` | outbound DHT requests that failed |
//! | `netabase_routing_table_peers` | gauge | | peers in the Kademlia routing table |
//! | `netabase_connected_peers` | gauge | | peers with an open connection |
//! | `netabase_queries_running` | gauge | | API queries in flight |
//! | `netabase_store_records` | gauge | | records in the node's DHT store |
//! | `netabase_store_provider_records` | gauge | | provider records held, over all keys |
//! | `netabase_store_provided_keys` | gauge | | keys this node provides |
//! | `netabase_consensus_role` | gauge | | this node's consensus role: 0 in no cluster, 1 follower, 2 candidate, 3 leader |
//! | `netabase_consensus_round` | gauge | | the highest ballot round seen |
//! | `netabase_consensus_committed_slot` | gauge | | every log slot up to here is known chosen |
//! | `netabase_consensus_applied_slot` | gauge | | every log slot up to here is applied |
//! | `netabase_consensus_pending_proposals` | gauge | | entries this node proposed that are not applied yet |
//! | `netabase_consensus_follower_lag_slots` | gauge | `peer` | on the leader: how many slots each other member's chosen prefix is behind the leader's (from its heartbeat acknowledgements) |
//! | `netabase_consensus_batch_entries` | histogram | | entries per applied slot (0: no-ops and membership changes) |
//! | `netabase_consensus_events_total` | counter | `event` | consensus events: `election` (started), `term_led`, `slot_committed` and `entry_committed` (as leader), `dedup_hit`, `read_linearizable`, `read_lease`, `read_local`, `lease_read` (answered from the lease), `catch_up` (answers sent), `sync`, `refused` (messages from non-members, other clusters, malformed), `sticky_refusal` (promises refused while a live leader is heard), `config_change` (membership changes applied), `stale_instance` (votes not counted: the sender's data was wiped), `compaction` (log truncations), `snapshot_frozen` (snapshots frozen to send), `snapshot_chunk_sent`, `snapshot_install`, `snapshot_refused` (chunks or images refused: too large, out of bounds, digest mismatch), `behind_compaction` (elections given up to catch up from a member that compacted slots this node lacks) |
//! | `libp2p_bandwidth_bytes_total` | counter | `protocols`, `direction` | bytes the node's connections carried, by transport protocol stack (e.g. `/ip4/tcp`) and direction (libp2p's own bandwidth transport) |
//! | `libp2p_*` | | | libp2p's own metrics ([`libp2p::metrics`]): connections, dial and listen errors, identify, ping round trips |
//!
//! Label values:
//!
//! - `operation`: `put_record`, `get_record`, `remove_record`, `start_providing`,
//!   `stop_providing`, `get_providers`, `bootstrap`, `add_address`, `remove_address`,
//!   `remove_peer`, `set_mode`.
//! - `outcome`: `success`, `not_found`, `timeout`, `quorum_failed`, `no_known_peers`
//!   (the query ran and did not succeed for that reason), `refused` (the node would not
//!   start it: too many queries, a record too large, a failing store, a bad address),
//!   `stopped` (the node stopped first).
//! - `direction`: `in`, `out`; `protocol`: the protocol name (the configured Kademlia
//!   protocol, `/ipfs/id/1.0.0`, `/ipfs/id/push/1.0.0`, `/ipfs/ping/1.0.0`, and
//!   `/paxos/1.0.0` for consensus messages sent, whose `kind` is the message's:
//!   `prepare`, `promise`, `accept`, `accepted`, `commit`, `heartbeat`, ...); `kind`:
//!   `find_node`, `get_value`, `put_value`, `get_providers`, `add_provider`, `ping`
//!   (Kademlia), `identify`, `ping` (the others); `role`: `request`, `response`.
//! - `input` and `reason`: `request` refused (`client_mode`, `record_too_large`,
//!   `foreign_provider`, `store`), `record` in an answer failing validation
//!   (`invalid_record`), `stream` failing before it delivered a request (`io`,
//!   `truncated`, `no_message`, `malformed`, `timeout`, `too_many_streams`,
//!   `connection_closed`, `unexpected_data`).
//! - `netabase_request_failures_total` `reason`: `dial`, `unsupported_protocol`, `io`.
//!
//! Histogram buckets of `netabase_query_duration_seconds`: 1 ms doubling up to about
//! 33 s. The gauges of the store are refreshed once a second while the node runs (and
//! whenever its stats are read); the others are exact.
//!
//! One [`NodeMetrics`] serves one node: to run several nodes in one process, register each
//! in a sub-registry with a label of its own
//! (`registry.sub_registry_with_label(("node".into(), name.into()))`).

use std::borrow::Cow;
use std::sync::Arc;

use libp2p::metrics::{Metrics as Libp2pMetrics, Recorder};
use netabase_core::{MessageKind, QueryError, Rejection, RequestFailure, StoreError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::bandwidth::{Bandwidth, NodeTransport};
use crate::protocol::StreamError;

/// Labels of `netabase_operations_total` and `netabase_query_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
    outcome: &'static str,
}

/// Labels of `netabase_messages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    direction: &'static str,
    protocol: Cow<'static, str>,
    kind: &'static str,
    role: &'static str,
}

/// Labels of `netabase_rejected_inputs_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    input: &'static str,
    reason: &'static str,
}

/// Labels of `netabase_request_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn query_histogram() -> Histogram {
    // 1 ms, 2 ms, ... 16.4 s, 32.8 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// What the consensus metrics read from a member.
pub(crate) struct ConsensusView<'a> {
    pub(crate) role: netabase_core::consensus::Role,
    pub(crate) round: u64,
    pub(crate) committed: u64,
    pub(crate) applied: u64,
    pub(crate) pending: usize,
    pub(crate) stats: &'a netabase_core::consensus::ConsensusStats,
    /// On a leader: each other member and how many slots it is behind.
    pub(crate) lag: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsensusLabels {
    event: &'static str,
}

struct Inner {
    operations: Family<OperationLabels, Counter>,
    query_duration: HistogramFamily<OperationLabels>,
    messages: Family<MessageLabels, Counter>,
    rejected: Family<RejectedLabels, Counter>,
    request_failures: Family<FailureLabels, Counter>,
    routing_table_peers: Gauge,
    connected_peers: Gauge,
    queries_running: Gauge,
    store_records: Gauge,
    store_provider_records: Gauge,
    store_provided_keys: Gauge,
    background_lag: Gauge,
    background_jobs: Gauge,
    consensus_role: Gauge,
    consensus_round: Gauge,
    consensus_committed: Gauge,
    consensus_applied: Gauge,
    consensus_pending: Gauge,
    consensus_events: Family<ConsensusLabels, Counter>,
    consensus_lag: Family<PeerLabels, Gauge>,
    consensus_batch: Histogram,
    /// The member's counters at the last update (they restart with the member).
    consensus_seen: std::sync::Mutex<netabase_core::consensus::ConsensusStats>,
    libp2p: Libp2pMetrics,
    bandwidth: Bandwidth,
}

/// The metrics one node updates: counters and histograms of its operations, messages and
/// refusals, gauges of its routing table and store, and libp2p's own metrics. Cheap to
/// clone (clones share the metrics). See the [module documentation](self) for the names.
#[derive(Clone)]
pub struct NodeMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl NodeMetrics {
    /// Registers the node's metrics in `registry`: Netabase's under the prefix
    /// `netabase`, libp2p's under `libp2p`.
    pub fn register(registry: &mut Registry) -> Self {
        let libp2p = Libp2pMetrics::new(registry);
        let bandwidth = Bandwidth::register(registry);
        let r = registry.sub_registry_with_prefix("netabase");
        let operations = Family::default();
        r.register(
            "operations",
            "API operations the node carried out, by operation and outcome",
            operations.clone(),
        );
        let query_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(query_histogram);
        r.register(
            "query_duration_seconds",
            "How long DHT queries took, by operation and outcome",
            query_duration.clone(),
        );
        let messages = Family::default();
        r.register(
            "messages",
            "Protocol messages sent (out) and received (in), by protocol, kind and role",
            messages.clone(),
        );
        let rejected = Family::default();
        r.register(
            "rejected_inputs",
            "Inputs from peers the node refused: requests, records in answers, inbound streams",
            rejected.clone(),
        );
        let request_failures = Family::default();
        r.register(
            "request_failures",
            "Outbound DHT requests that failed, by reason",
            request_failures.clone(),
        );
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        let routing_table_peers = gauge(
            r,
            "routing_table_peers",
            "Peers in the Kademlia routing table",
        );
        let connected_peers = gauge(r, "connected_peers", "Peers with an open connection");
        let queries_running = gauge(r, "queries_running", "API queries in flight");
        let store_records = gauge(r, "store_records", "Records in the node's DHT store");
        let store_provider_records = gauge(
            r,
            "store_provider_records",
            "Provider records held, over all keys",
        );
        let store_provided_keys = gauge(r, "store_provided_keys", "Keys this node provides");
        let background_lag = gauge(
            r,
            "background_lag_seconds",
            "How long the oldest replication or republication walk of the store has been going (0: none is)",
        );
        let background_jobs = gauge(
            r,
            "background_jobs_queued",
            "Background jobs (publications, announcements) waiting to start",
        );
        let consensus_role = gauge(
            r,
            "consensus_role",
            "Consensus role: 0 in no cluster, 1 follower, 2 candidate, 3 leader",
        );
        let consensus_round = gauge(r, "consensus_round", "The highest ballot round seen");
        let consensus_committed = gauge(
            r,
            "consensus_committed_slot",
            "Every log slot up to here is known chosen",
        );
        let consensus_applied = gauge(
            r,
            "consensus_applied_slot",
            "Every log slot up to here is applied",
        );
        let consensus_pending = gauge(
            r,
            "consensus_pending_proposals",
            "Entries this node proposed that are not applied yet",
        );
        let consensus_events = Family::default();
        r.register(
            "consensus_events",
            "Consensus events: elections, terms led, commits, dedup hits, reads by level, catch-ups, syncs, refusals",
            consensus_events.clone(),
        );
        let consensus_lag = Family::default();
        r.register(
            "consensus_follower_lag_slots",
            "On the leader: how many slots each other member's chosen prefix is behind its own",
            consensus_lag.clone(),
        );
        // 0 (no-ops and membership changes), 1, 2, 4, ... 1024 entries.
        let consensus_batch =
            Histogram::new(std::iter::once(0.0).chain(exponential_buckets(1.0, 2.0, 11)));
        r.register(
            "consensus_batch_entries",
            "Entries per applied slot",
            consensus_batch.clone(),
        );
        NodeMetrics {
            inner: Arc::new(Inner {
                consensus_lag,
                consensus_batch,
                consensus_role,
                consensus_round,
                consensus_committed,
                consensus_applied,
                consensus_pending,
                consensus_events,
                consensus_seen: Default::default(),
                operations,
                query_duration,
                messages,
                rejected,
                request_failures,
                routing_table_peers,
                connected_peers,
                queries_running,
                store_records,
                store_provider_records,
                store_provided_keys,
                background_lag,
                background_jobs,
                libp2p,
                bandwidth,
            }),
        }
    }

    /// `transport`, with the bytes its connections carry counted in
    /// `libp2p_bandwidth_bytes_total`. A [`Runtime`](crate::Runtime) calls this on the
    /// transport it builds for a node with these metrics (see
    /// [`TransportSettings::measure`](crate::TransportSettings::measure)).
    pub fn measure_transport(&self, transport: NodeTransport) -> NodeTransport {
        self.inner.bandwidth.measure(transport)
    }

    pub(crate) fn operation(&self, operation: &'static str, outcome: &'static str) {
        self.inner
            .operations
            .get_or_create(&OperationLabels { operation, outcome })
            .inc();
    }

    pub(crate) fn query_finished(
        &self,
        operation: &'static str,
        outcome: &'static str,
        seconds: f64,
    ) {
        self.operation(operation, outcome);
        self.inner
            .query_duration
            .get_or_create(&OperationLabels { operation, outcome })
            .observe(seconds);
    }

    /// The counter of one kind of message, to keep and increment without a lookup.
    pub(crate) fn message_counter(
        &self,
        direction: &'static str,
        protocol: Cow<'static, str>,
        kind: &'static str,
        role: &'static str,
    ) -> Counter {
        self.inner.messages.get_or_create_owned(&MessageLabels {
            direction,
            protocol,
            kind,
            role,
        })
    }

    pub(crate) fn rejected(&self, input: &'static str, reason: &'static str) {
        self.inner
            .rejected
            .get_or_create(&RejectedLabels { input, reason })
            .inc();
    }

    pub(crate) fn request_failed(&self, failure: &RequestFailure) {
        let reason = match failure {
            RequestFailure::Dial => "dial",
            RequestFailure::UnsupportedProtocol => "unsupported_protocol",
            RequestFailure::Io => "io",
        };
        self.inner
            .request_failures
            .get_or_create(&FailureLabels { reason })
            .inc();
    }

    pub(crate) fn set_routing_table_peers(&self, n: usize) {
        self.inner.routing_table_peers.set(saturate(n as u64));
    }

    pub(crate) fn set_connected_peers(&self, n: usize) {
        self.inner.connected_peers.set(saturate(n as u64));
    }

    pub(crate) fn set_queries_running(&self, n: usize) {
        self.inner.queries_running.set(saturate(n as u64));
    }

    pub(crate) fn set_store(&self, records: u64, provider_records: u64, provided_keys: u64) {
        self.inner.store_records.set(saturate(records));
        self.inner
            .store_provider_records
            .set(saturate(provider_records));
        self.inner.store_provided_keys.set(saturate(provided_keys));
    }

    /// Sets the background-work gauges: the lag of the store walks and the queued jobs.
    pub(crate) fn set_background(&self, lag: std::time::Duration, queued: usize) {
        self.inner
            .background_lag
            .set(i64::try_from(lag.as_secs()).unwrap_or(i64::MAX));
        self.inner.background_jobs.set(saturate(queued as u64));
    }

    /// Sets the consensus gauges and advances its counters from a member's view (`None`:
    /// the node is in no cluster).
    pub(crate) fn set_consensus(&self, view: Option<ConsensusView<'_>>) {
        let i = &self.inner;
        let Some(view) = view else {
            i.consensus_role.set(0);
            i.consensus_lag.clear();
            return;
        };
        // The lag is the leader's view: another leader's followers replace it.
        i.consensus_lag.clear();
        for (peer, lag) in &view.lag {
            i.consensus_lag
                .get_or_create(&PeerLabels { peer: peer.clone() })
                .set(saturate(*lag));
        }
        i.consensus_role.set(match view.role {
            netabase_core::consensus::Role::Follower => 1,
            netabase_core::consensus::Role::Candidate => 2,
            netabase_core::consensus::Role::Leader => 3,
        });
        i.consensus_round.set(saturate(view.round));
        i.consensus_committed.set(saturate(view.committed));
        i.consensus_applied.set(saturate(view.applied));
        i.consensus_pending.set(saturate(view.pending as u64));
        let mut seen = i
            .consensus_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (now, before) = (view.stats, &*seen);
        let pairs = [
            ("election", now.elections, before.elections),
            ("term_led", now.terms_led, before.terms_led),
            (
                "slot_committed",
                now.slots_committed,
                before.slots_committed,
            ),
            (
                "entry_committed",
                now.entries_committed,
                before.entries_committed,
            ),
            ("dedup_hit", now.dedup_hits, before.dedup_hits),
            ("read_linearizable", now.reads[0], before.reads[0]),
            ("read_lease", now.reads[1], before.reads[1]),
            ("read_local", now.reads[2], before.reads[2]),
            ("lease_read", now.lease_reads, before.lease_reads),
            ("catch_up", now.catch_ups, before.catch_ups),
            ("sync", now.syncs, before.syncs),
            ("refused", now.refused, before.refused),
            (
                "sticky_refusal",
                now.sticky_refusals,
                before.sticky_refusals,
            ),
            ("config_change", now.config_changes, before.config_changes),
            (
                "stale_instance",
                now.stale_instances,
                before.stale_instances,
            ),
            ("compaction", now.compactions, before.compactions),
            (
                "snapshot_frozen",
                now.snapshots_frozen,
                before.snapshots_frozen,
            ),
            (
                "snapshot_chunk_sent",
                now.snapshot_chunks_sent,
                before.snapshot_chunks_sent,
            ),
            (
                "snapshot_install",
                now.snapshot_installs,
                before.snapshot_installs,
            ),
            (
                "snapshot_refused",
                now.snapshots_refused,
                before.snapshots_refused,
            ),
            (
                "behind_compaction",
                now.behind_compaction,
                before.behind_compaction,
            ),
        ];
        for (event, now, before) in pairs {
            // A restarted member counts from zero again: its new counts all add.
            let delta = if now >= before { now - before } else { now };
            if delta > 0 {
                i.consensus_events
                    .get_or_create(&ConsensusLabels { event })
                    .inc_by(delta);
            }
        }
        *seen = now.clone();
    }

    /// Counts the entries of one applied slot.
    pub(crate) fn consensus_batch(&self, entries: usize) {
        self.inner.consensus_batch.observe(entries as f64);
    }

    /// Records an event in libp2p's own metrics.
    pub(crate) fn libp2p<E>(&self, event: &E)
    where
        Libp2pMetrics: Recorder<E>,
    {
        self.inner.libp2p.record(event);
    }
}

fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The label value of a Kademlia message kind.
pub(crate) fn kind_label(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::FindNode => "find_node",
        MessageKind::GetValue => "get_value",
        MessageKind::PutValue => "put_value",
        MessageKind::GetProviders => "get_providers",
        MessageKind::AddProvider => "add_provider",
        MessageKind::Ping => "ping",
    }
}

/// Every Kademlia message kind, in the order [`kind_index`] numbers them.
pub(crate) const KINDS: [MessageKind; 6] = [
    MessageKind::FindNode,
    MessageKind::GetValue,
    MessageKind::PutValue,
    MessageKind::GetProviders,
    MessageKind::AddProvider,
    MessageKind::Ping,
];

/// The position of `kind` in [`KINDS`].
pub(crate) fn kind_index(kind: MessageKind) -> usize {
    match kind {
        MessageKind::FindNode => 0,
        MessageKind::GetValue => 1,
        MessageKind::PutValue => 2,
        MessageKind::GetProviders => 3,
        MessageKind::AddProvider => 4,
        MessageKind::Ping => 5,
    }
}

/// The label value of a query outcome.
pub(crate) fn outcome_label(error: Option<&QueryError>) -> &'static str {
    match error {
        None => "success",
        Some(QueryError::NotFound) => "not_found",
        Some(QueryError::Timeout) => "timeout",
        Some(QueryError::QuorumFailed { .. }) => "quorum_failed",
        Some(QueryError::NoKnownPeers) => "no_known_peers",
    }
}

/// The label value of why an inbound request was refused.
pub(crate) fn rejection_label(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::ClientMode => "client_mode",
        Rejection::RecordTooLarge { .. } => "record_too_large",
        Rejection::ForeignProvider => "foreign_provider",
        Rejection::Store(StoreError::MaxRecords { .. }) => "store_full_records",
        Rejection::Store(StoreError::MaxHeldBytes { .. }) => "store_full_bytes",
        Rejection::Store(StoreError::ValueTooLarge { .. }) => "value_too_large",
        Rejection::Store(StoreError::Rejected(_)) => "invalid_record",
        Rejection::Store(_) => "store",
        Rejection::Envelope(_) => "bad_envelope",
        Rejection::ClockAhead(_) => "clock_ahead",
    }
}

/// The label value of why an inbound stream failed.
pub(crate) fn stream_error_label(error: &StreamError) -> &'static str {
    match error {
        StreamError::Io(_) => "io",
        StreamError::Truncated => "truncated",
        StreamError::NoMessage => "no_message",
        StreamError::Decode(_) => "malformed",
        StreamError::Timeout => "timeout",
        StreamError::TooManyStreams => "too_many_streams",
        StreamError::ConnectionClosed => "connection_closed",
        StreamError::UnexpectedData => "unexpected_data",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encodes");
        out
    }

    #[test]
    fn metrics_are_registered_under_their_documented_names() {
        let mut registry = Registry::default();
        let metrics = NodeMetrics::register(&mut registry);
        metrics.query_finished("get_record", "not_found", 0.25);
        metrics.operation("add_address", "success");
        metrics
            .message_counter("in", "/netabase/kad/1.0.0".into(), "find_node", "request")
            .inc_by(3);
        metrics.rejected("stream", "malformed");
        metrics.request_failed(&RequestFailure::Dial);
        metrics.set_routing_table_peers(7);
        metrics.set_store(5, 2, 1);
        let text = encoded(&registry);
        for line in [
            r#"netabase_operations_total{operation="get_record",outcome="not_found"} 1"#,
            r#"netabase_operations_total{operation="add_address",outcome="success"} 1"#,
            r#"netabase_query_duration_seconds_count{operation="get_record",outcome="not_found"} 1"#,
            r#"netabase_query_duration_seconds_bucket{le="0.256",operation="get_record",outcome="not_found"} 1"#,
            r#"netabase_messages_total{direction="in",protocol="/netabase/kad/1.0.0",kind="find_node",role="request"} 3"#,
            r#"netabase_rejected_inputs_total{input="stream",reason="malformed"} 1"#,
            r#"netabase_request_failures_total{reason="dial"} 1"#,
            "netabase_routing_table_peers 7",
            "netabase_store_records 5",
            "netabase_store_provider_records 2",
            "netabase_store_provided_keys 1",
            "netabase_connected_peers 0",
            "netabase_queries_running 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("# TYPE libp2p_swarm_"), "{text}");
    }

    #[test]
    fn consensus_counters_advance_by_the_member_s_deltas() {
        use netabase_core::consensus::{ConsensusStats, Role};
        let mut registry = Registry::default();
        let metrics = NodeMetrics::register(&mut registry);
        let view = |stats: &ConsensusStats| {
            metrics.set_consensus(Some(ConsensusView {
                role: Role::Leader,
                round: 4,
                committed: 10,
                applied: 9,
                pending: 2,
                stats,
                lag: vec![("follower".into(), 3)],
            }))
        };
        let mut stats = ConsensusStats {
            elections: 2,
            slots_committed: 10,
            ..ConsensusStats::default()
        };
        view(&stats);
        stats.slots_committed = 15;
        view(&stats);
        // A restarted member counts from zero: its counts add on top.
        view(&ConsensusStats {
            slots_committed: 3,
            ..ConsensusStats::default()
        });
        let text = encoded(&registry);
        for line in [
            "netabase_consensus_role 3",
            "netabase_consensus_round 4",
            "netabase_consensus_committed_slot 10",
            "netabase_consensus_applied_slot 9",
            "netabase_consensus_pending_proposals 2",
            r#"netabase_consensus_events_total{event="election"} 2"#,
            r#"netabase_consensus_events_total{event="slot_committed"} 18"#,
            r#"netabase_consensus_follower_lag_slots{peer="follower"} 3"#,
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        metrics.consensus_batch(2);
        metrics.consensus_batch(0);
        let text = encoded(&registry);
        assert!(
            text.contains(r#"netabase_consensus_batch_entries_bucket{le="2.0"} 2"#),
            "{text}"
        );
        metrics.set_consensus(None);
        let text = encoded(&registry);
        assert!(text.contains("netabase_consensus_role 0"));
        assert!(
            !text.contains("netabase_consensus_follower_lag_slots{"),
            "{text}"
        );
    }

    #[test]
    fn label_values_cover_every_variant() {
        let kinds: Vec<_> = KINDS.iter().map(|k| kind_label(*k)).collect();
        assert_eq!(
            kinds,
            [
                "find_node",
                "get_value",
                "put_value",
                "get_providers",
                "add_provider",
                "ping"
            ]
        );
        for (i, kind) in KINDS.iter().enumerate() {
            assert_eq!(kind_index(*kind), i);
        }
        assert_eq!(outcome_label(None), "success");
        assert_eq!(
            outcome_label(Some(&QueryError::QuorumFailed {
                succeeded: 0,
                required: 1
            })),
            "quorum_failed"
        );
        assert_eq!(rejection_label(&Rejection::ClientMode), "client_mode");
        assert_eq!(stream_error_label(&StreamError::Timeout), "timeout");
    }
}
