//! The Kademlia node: a deterministic state machine driven by its caller.
//!
//! The node is one type whose methods are split by concern: [`jobs`] (timers and
//! periodic work), [`peers`] (connections and the routing table), [`api`] (starting
//! queries), [`queries`] (running and finishing them), [`responses`] (answers to its own
//! requests) and [`inbound`] (requests from peers).

mod api;
mod inbound;
mod jobs;
mod peers;
mod queries;
mod responses;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::time::Duration;

use hashbrown::HashSet;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use rustc_hash::FxBuildHasher;

use crate::deadlines::Deadlines;
use crate::hlc::{ClockError, Hlc, HlcConfig};
use crate::identity::Keypair;
use crate::kbucket::{RoutingTable, Status, UpdateOutcome};
use crate::key::{Key, RecordKey};
use crate::message::{ConnectionType, MessageKind, PeerInfo, Request, Response, WireRecord};
use crate::model::{Envelope, EnvelopeError, ModelId, SealParts};
use crate::peer::{Address, Addresses, PeerId};
use crate::query::{ClosestPeersIter, Next};
use crate::record::{ProviderRecord, Record};
use crate::requests::RequestTable;
use crate::store::{PutOutcome, RecordStore, StoreError};
use crate::time::Instant;
use crate::version::{Rank, Resolution, rank, resolve};

/// Whether the node serves the DHT or only uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Answers DHT requests; other nodes add it to their routing tables.
    Server,
    /// Only sends requests; answers none and is never added to others' tables.
    Client,
}

/// How many peers must confirm an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// One peer.
    One,
    /// A majority of `k`.
    Majority,
    /// All `k` closest peers.
    All,
    /// This many peers (at least one).
    N(usize),
}

impl Quorum {
    /// The number of peers this quorum needs with bucket size `k`.
    pub fn eval(self, k: usize) -> usize {
        match self {
            Quorum::One => 1,
            Quorum::Majority => k / 2 + 1,
            Quorum::All => k,
            Quorum::N(n) => n.clamp(1, k.max(1)),
        }
    }
}

/// Configuration of a [`Node`]. Every bound the node keeps is here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bucket size and replication factor (K).
    pub k: usize,
    /// Requests in flight per lookup while it makes progress (alpha).
    pub alpha: usize,
    /// How long to wait for one answer.
    pub request_timeout: Duration,
    /// The longest a lookup waits for one peer before going on without it (its answer is
    /// still used if it comes before [`Config::request_timeout`]), so that one lost message
    /// or slow peer does not stall a lookup for the whole timeout. The node adapts the
    /// actual patience to the round-trip times it measures, as TCP adapts its
    /// retransmission timeout: `max(srtt + 4 * rttvar, 4 * srtt, 250 ms)`, capped here.
    /// The estimate is node-wide, so the margin is wide enough for peers farther away than
    /// the average one.
    /// `None`: always wait for the timeout (lookups then never finish before an answer that
    /// is merely slow).
    pub lookup_patience: Option<Duration>,
    /// How long a whole query may run.
    pub query_timeout: Duration,
    /// How long a pending routing-table entry waits before it may replace a stale one.
    pub pending_timeout: Duration,
    /// Lifetime of records this node publishes; `None` never expires.
    pub record_ttl: Option<Duration>,
    /// How often every stored record is re-stored at the K closest peers.
    pub replication_interval: Option<Duration>,
    /// How often records this node published are published again with a fresh lifetime.
    pub publication_interval: Option<Duration>,
    /// Lifetime of provider records.
    pub provider_record_ttl: Option<Duration>,
    /// How often this node announces the keys it provides again.
    pub provider_publication_interval: Option<Duration>,
    /// How often expired records and provider records are removed.
    pub expiry_sweep_interval: Duration,
    /// How often the node bootstraps again on its own; `None` only on request.
    pub bootstrap_interval: Option<Duration>,
    /// Largest record value accepted from peers or the API, in bytes.
    pub max_record_size: usize,
    /// Most queries running at once (API calls beyond it fail).
    pub max_queries: usize,
    /// Most queries the background jobs run at once.
    pub max_job_queries: usize,
    /// Most background jobs queued at once. Replication and republication walk the store
    /// in batches and queue more only as queued jobs start, so neither memory nor the
    /// queue grows with the store.
    pub max_queued_jobs: usize,
    /// After a successful get, store the record at this many of the closest peers that did
    /// not have it (0 disables caching).
    pub cache_peers: usize,
    /// Read repair (a get writing the newest copy back to the peers that answered with an
    /// older one) happens at most once per key in this interval, so that a key read in a
    /// loop, or peers that keep answering with an old copy, cost one round of writes per
    /// interval. At most [`READ_REPAIR_KEYS`] keys are remembered at once; a repair that
    /// finds them all taken within the interval is skipped and counted
    /// ([`NodeStats::read_repairs_skipped`]): the next replication repairs those copies.
    pub read_repair_interval: Duration,
    /// Emit [`Event::QueryProgress`] after every answer or failure of a query's requests
    /// (off by default: drivers that show progress switch it on).
    pub query_progress: bool,
    /// Whether the node starts as server or client.
    pub mode: Mode,
    /// Limits of the hybrid logical clock that versions records, and how far ahead of the
    /// local wall clock a received version may be.
    pub hlc: HlcConfig,
    /// How often the node retries publishing the records of its outbox (its own records
    /// whose latest version has not reached its quorum yet, kept across restarts), at most
    /// [`max_job_queries`](Config::max_job_queries) at a time; the first retry comes one
    /// interval after start. `None` leaves them to the republication job.
    pub outbox_interval: Option<Duration>,
    /// How long a tombstone (a removal) is kept, counted from its own version's timestamp
    /// (not from when it arrived), so every replica drops it at the same time. It must
    /// exceed [`record_ttl`](Config::record_ttl) plus the longest downtime of a node that
    /// may still hold an older copy: by then every older copy has expired and cannot come
    /// back. Tombstones are exempt from the `record_ttl` cap on inbound records.
    pub tombstone_horizon: Duration,
}

/// Why a configuration cannot run a node: each names the field (and the field it
/// contradicts), as [`Config`] (or the adapter's configuration around it) calls it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A number lies outside what the node can work with.
    #[error("`{field}` is {value}, outside {min}..={max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A duration or interval is zero (an interval of zero would run its job without end).
    #[error("`{field}` is zero")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// Two fields contradict each other.
    #[error("`{field}` contradicts `{other}`: {reason}")]
    Contradiction {
        /// The field.
        field: &'static str,
        /// The field it contradicts.
        other: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Config {
    /// The largest bucket size and replication factor (K): a lookup keeps up to 8·K
    /// candidates, indexed by 16 bits.
    pub const MAX_K: usize = (u16::MAX as usize + 1) / 8 - 1;

    /// Checks every field and the relations between them; [`Node::new`] refuses a
    /// configuration that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |field, value: usize, min: usize, max: usize| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    field,
                    value: value as u64,
                    min: min as u64,
                    max: max as u64,
                })
            }
        };
        let nonzero = |field, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::Zero { field })
            } else {
                Ok(())
            }
        };
        let nonzero_opt = |field, d: Option<Duration>| d.map_or(Ok(()), |d| nonzero(field, d));
        let contradiction = |field, other, reason| ConfigError::Contradiction {
            field,
            other,
            reason,
        };
        range("k", self.k, 1, Config::MAX_K)?;
        range("alpha", self.alpha, 1, Config::MAX_K)?;
        range("max_queries", self.max_queries, 1, usize::MAX)?;
        range("max_job_queries", self.max_job_queries, 1, usize::MAX)?;
        range("max_queued_jobs", self.max_queued_jobs, 1, usize::MAX)?;
        range("max_record_size", self.max_record_size, 1, usize::MAX)?;
        range("cache_peers", self.cache_peers, 0, self.k)?;
        nonzero("request_timeout", self.request_timeout)?;
        nonzero("query_timeout", self.query_timeout)?;
        nonzero("expiry_sweep_interval", self.expiry_sweep_interval)?;
        nonzero("tombstone_horizon", self.tombstone_horizon)?;
        nonzero_opt("lookup_patience", self.lookup_patience)?;
        nonzero_opt("record_ttl", self.record_ttl)?;
        nonzero_opt("replication_interval", self.replication_interval)?;
        nonzero_opt("publication_interval", self.publication_interval)?;
        nonzero_opt("provider_record_ttl", self.provider_record_ttl)?;
        nonzero_opt(
            "provider_publication_interval",
            self.provider_publication_interval,
        )?;
        nonzero_opt("bootstrap_interval", self.bootstrap_interval)?;
        nonzero_opt("outbox_interval", self.outbox_interval)?;
        nonzero("hlc.ceiling_step", self.hlc.ceiling_step)?;
        if self.request_timeout > self.query_timeout {
            return Err(contradiction(
                "request_timeout",
                "query_timeout",
                "a query would end before its first answer could come",
            ));
        }
        if let Some(ttl) = self.record_ttl
            && self.tombstone_horizon < ttl
        {
            return Err(contradiction(
                "tombstone_horizon",
                "record_ttl",
                "a removal would be forgotten while older copies may still live",
            ));
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        const HOUR: u64 = 3600;
        Config {
            k: 20,
            alpha: 3,
            request_timeout: Duration::from_secs(10),
            lookup_patience: Some(Duration::from_secs(2)),
            query_timeout: Duration::from_secs(60),
            pending_timeout: Duration::from_secs(60),
            record_ttl: Some(Duration::from_secs(48 * HOUR)),
            replication_interval: Some(Duration::from_secs(HOUR)),
            publication_interval: Some(Duration::from_secs(22 * HOUR)),
            provider_record_ttl: Some(Duration::from_secs(48 * HOUR)),
            provider_publication_interval: Some(Duration::from_secs(12 * HOUR)),
            expiry_sweep_interval: Duration::from_secs(60),
            bootstrap_interval: Some(Duration::from_secs(5 * 60)),
            max_record_size: 65 * 1024,
            max_queries: 1024,
            max_job_queries: 16,
            max_queued_jobs: 1024,
            cache_peers: 1,
            read_repair_interval: Duration::from_secs(60),
            query_progress: false,
            mode: Mode::Server,
            hlc: HlcConfig::default(),
            tombstone_horizon: Duration::from_secs(30 * 24 * HOUR),
            outbox_interval: Some(Duration::from_secs(10)),
        }
    }
}

/// Identifies a query started by an API call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u64);

/// Identifies an outbound request; chosen by the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Identifies an inbound request; chosen by the driver, echoed in the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboundId(pub u64);

/// Why an outbound request failed, as the driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestFailure {
    /// The peer could not be reached.
    Dial,
    /// The peer does not speak the Kademlia protocol (or not in server mode).
    UnsupportedProtocol,
    /// The stream failed, or the answer did not decode.
    Io,
}

/// Why the node refused an inbound request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The node is in client mode.
    ClientMode,
    /// The record value exceeds [`Config::max_record_size`].
    RecordTooLarge {
        /// Its size.
        size: usize,
    },
    /// An ADD_PROVIDER named a provider other than the sender.
    ForeignProvider,
    /// The store refused the write.
    Store(StoreError),
    /// The record is an envelope that does not decode, is unsigned, or whose signature
    /// does not verify for its origin and key.
    Envelope(EnvelopeError),
    /// The record's version lies too far ahead of the local clock.
    ClockAhead(ClockError),
}

impl core::fmt::Display for Rejection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Rejection::ClientMode => f.write_str("the node is in client mode"),
            Rejection::RecordTooLarge { size } => write!(f, "record of {size} bytes is too large"),
            Rejection::ForeignProvider => f.write_str("the provider is not the sender"),
            Rejection::Store(e) => write!(f, "{e}"),
            Rejection::Envelope(e) => write!(f, "{e}"),
            Rejection::ClockAhead(e) => write!(f, "{e}"),
        }
    }
}

/// A record found by a get, with the peer it came from (`None`: the local store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    /// The peer that returned it.
    pub peer: Option<PeerId>,
    /// The record.
    pub record: Record,
}

/// Why a query did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The query ran past [`Config::query_timeout`].
    #[error("the query timed out")]
    Timeout,
    /// The lookup ended without finding what it looked for.
    #[error("not found")]
    NotFound,
    /// Fewer peers than the quorum confirmed.
    #[error("quorum failed: {succeeded} of {required} peers")]
    QuorumFailed {
        /// Peers that confirmed.
        succeeded: usize,
        /// Peers required.
        required: usize,
    },
    /// The routing table is empty: there is nobody to ask.
    #[error("no known peers")]
    NoKnownPeers,
}

/// Why an API call could not start a query.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// [`Config::max_queries`] queries are already running.
    #[error("too many queries running ({0})")]
    TooManyQueries(usize),
    /// The record value exceeds [`Config::max_record_size`].
    #[error("record value of {size} bytes exceeds the limit of {max}")]
    RecordTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The local store refused the write.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node has no signing identity ([`Node::with_identity`]), so it cannot version
    /// records.
    #[error("the node has no signing identity")]
    NoIdentity,
    /// The local store holds a newer version of the record; it stays.
    #[error("the local store holds a newer version of the record")]
    Superseded {
        /// The stored record.
        current: Box<Record>,
    },
}

/// The outcome of a finished query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryResult {
    /// Closest peers to a key, closest first.
    GetClosestPeers(Result<Vec<PeerId>, QueryError>),
    /// The addresses of a peer.
    FindPeer(Result<Box<PeerInfo>, QueryError>),
    /// Records found under a key.
    GetRecord(Result<Vec<PeerRecord>, QueryError>),
    /// Peers that stored a record.
    PutRecord(Result<Vec<PeerId>, QueryError>),
    /// Peers the provider announcement was sent to.
    StartProviding(Result<Vec<PeerId>, QueryError>),
    /// Providers of a key.
    GetProviders(Result<Vec<PeerInfo>, QueryError>),
    /// The routing table size after bootstrapping.
    Bootstrap(Result<usize, QueryError>),
}

/// Counters of one query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    /// Requests sent.
    pub requests: u32,
    /// Answers received.
    pub successes: u32,
    /// Failures and timeouts.
    pub failures: u32,
    /// Sequential request rounds the lookup needed to reach its result (the depth of the
    /// closest answering peer, or of the peer that returned the record).
    pub hops: u32,
    /// When the query started.
    pub started: Instant,
    /// When it finished.
    pub finished: Instant,
}

/// Something the driver should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A query's request was answered or failed, and the query goes on (only with
    /// [`Config::query_progress`]).
    QueryProgress {
        /// The query.
        id: QueryId,
        /// Its counters so far (`finished` is the time of this step).
        stats: QueryStats,
    },
    /// A query finished.
    QueryFinished {
        /// The query.
        id: QueryId,
        /// Its outcome.
        result: QueryResult,
        /// Its counters.
        stats: QueryStats,
    },
    /// A peer entered the routing table.
    PeerAdded {
        /// The peer.
        peer: PeerId,
        /// Its bucket.
        bucket: u8,
    },
    /// A peer left the routing table.
    PeerRemoved {
        /// The peer.
        peer: PeerId,
    },
    /// A remote peer stored a record here.
    RecordStored {
        /// The record key.
        key: RecordKey,
        /// The sender.
        from: PeerId,
    },
    /// A newer version of a record this node holds, learned from `from` (in a GET_VALUE
    /// answer), replaced the local copy.
    RecordUpdated {
        /// The record key.
        key: RecordKey,
        /// The peer whose copy won.
        from: PeerId,
    },
    /// A peer answered a put with a newer version of the record than the one put: the
    /// put is superseded, and the newer version replaced the local copy.
    RecordSuperseded {
        /// The put's query (`None`: a background republication).
        id: Option<QueryId>,
        /// The record key.
        key: RecordKey,
        /// The newer record.
        record: Box<Record>,
        /// The peer that answered with it.
        from: PeerId,
    },
    /// The expiry sweep removed records or provider records that had expired.
    Expired {
        /// How many it removed.
        count: usize,
    },
    /// A remote peer announced itself as provider of a key.
    ProviderAdded {
        /// The key.
        key: RecordKey,
        /// The provider.
        provider: PeerId,
    },
    /// An inbound request was refused.
    InboundRejected {
        /// The sender.
        peer: PeerId,
        /// The request kind.
        kind: MessageKind,
        /// Why.
        reason: Rejection,
    },
    /// A record in a GET_VALUE answer failed validation and was dropped: it neither
    /// counts toward the get's quorum nor is cached. (Invalid records in PUT_VALUE
    /// requests are reported as [`Event::InboundRejected`].)
    InvalidRecord {
        /// The peer that sent it.
        peer: PeerId,
        /// Its key.
        key: RecordKey,
        /// Why it was refused.
        error: StoreError,
    },
    /// The DHT mode changed.
    ModeChanged {
        /// The new mode.
        mode: Mode,
    },
}

/// A command for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `request` to `peer` (dialling `addrs` if not connected). Report the outcome
    /// with [`Node::handle_response`], [`Node::handle_request_failed`], or, for requests
    /// without a response (ADD_PROVIDER), [`Node::handle_request_sent`].
    SendRequest {
        /// The request id.
        id: RequestId,
        /// The peer.
        peer: PeerId,
        /// Its known addresses.
        addrs: Addresses,
        /// The request.
        request: Request,
    },
    /// Answer the inbound request `id` from `peer`.
    SendResponse {
        /// The inbound request.
        id: InboundId,
        /// The requester.
        peer: PeerId,
        /// The answer.
        response: Response,
    },
    /// Close the inbound request `id` without an answer.
    RejectInbound {
        /// The inbound request.
        id: InboundId,
        /// The requester.
        peer: PeerId,
    },
    /// An event for the application.
    Event(Event),
}

impl Output {
    /// The output rule of group commit, which every driver follows (the real node's and
    /// the simulator's): whether this output must wait until every store write made
    /// before it is durable (the driver syncs first). A request acknowledges nothing, so
    /// it may leave before the sync (and stays sent if the sync then fails); answers,
    /// refusals and events report writes, so they wait. No input is handled during a
    /// sync.
    pub fn waits_for_sync(&self) -> bool {
        !matches!(self, Output::SendRequest { .. })
    }
}

/// Node-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Outbound requests sent.
    pub requests_sent: u64,
    /// Answers received for live requests.
    pub responses_received: u64,
    /// Outbound requests that failed or timed out.
    pub requests_failed: u64,
    /// Of which timed out.
    pub requests_timed_out: u64,
    /// Answers or failures for unknown or finished requests (late or duplicate).
    pub unexpected_responses: u64,
    /// Answers of the wrong kind (say, a PING answer to FIND_NODE); counted as failures.
    pub mismatched_responses: u64,
    /// Inbound requests handled.
    pub inbound_requests: u64,
    /// Inbound requests refused.
    pub inbound_rejected: u64,
    /// Records from the network (in PUT_VALUE requests or GET_VALUE answers) that the
    /// store's [`RecordStore::validate`] refused; none of them was stored or returned.
    pub invalid_records: u64,
    /// Queries finished.
    pub queries_finished: u64,
    /// Inbound records older than the stored copy (answered with the stored copy).
    pub stale_records: u64,
    /// Inbound records whose envelope was unsigned or whose signature did not verify.
    pub forged_records: u64,
    /// Inbound records whose version lay too far ahead of the local clock.
    pub clock_refused: u64,
    /// Replication or republication intervals that came while the previous walk of the
    /// store was still going (it goes on; a new one is not started).
    pub walks_overrun: u64,
    /// Read repairs sent: newest copies written back to peers that answered a get with an
    /// older one.
    pub read_repairs: u64,
    /// Read repairs not sent because the key was repaired within
    /// [`Config::read_repair_interval`], or too many keys were.
    pub read_repairs_skipped: u64,
    /// Ed25519 signatures of records verified, valid or not.
    pub signatures_verified: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// A lookup step of the query's iterator.
    Lookup,
    /// A store or announcement sent to a closest peer after the lookup.
    Fanout,
    /// Caching a found record; the answer is not awaited by any query.
    Cache,
    /// Liveness probe of a routing-table entry.
    Probe,
}

#[derive(Clone, Debug)]
struct PendingRequest {
    peer: PeerId,
    /// What was asked; the answer must be of the same kind.
    kind: MessageKind,
    /// Completes when written ([`Node::handle_request_sent`]), not with an answer.
    one_way: bool,
    query: Option<QueryId>,
    purpose: Purpose,
    deadline: Instant,
    /// When a lookup goes on without this peer's answer.
    patience: Option<Instant>,
    /// When it was sent.
    sent: Instant,
}

#[derive(Clone, Debug)]
enum Phase {
    Lookup,
    /// Requests sent to the closest peers; `waiting` still outstanding.
    Fanout {
        waiting: BTreeSet<PeerId>,
        succeeded: Vec<PeerId>,
    },
}

#[derive(Clone, Debug)]
enum QueryKind {
    GetClosestPeers,
    FindPeer {
        peer: PeerId,
    },
    GetRecord {
        key: RecordKey,
        quorum: usize,
        records: Vec<PeerRecord>,
        without_record: Vec<PeerId>,
    },
    PutRecord {
        record: Record,
        quorum: usize,
        /// What the outcome means for the store's outbox.
        outbox: Outbox,
    },
    AddProvider {
        key: RecordKey,
    },
    GetProviders {
        providers: BTreeMap<PeerId, PeerInfo>,
    },
    Bootstrap {
        /// Buckets still to refresh after the current step, the next one last.
        remaining: Vec<u8>,
        started_refresh: bool,
    },
}

#[derive(Clone, Debug)]
struct Query {
    kind: QueryKind,
    /// The preimage of the lookup target (what FIND_NODE / GET_* carry).
    target: RecordKey,
    iter: ClosestPeersIter,
    phase: Phase,
    stats: QueryStats,
    deadline: Instant,
    /// Started by a background job: finishes without an event.
    internal: bool,
}

/// What a put's outcome does to the store's outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outbox {
    /// Nothing (replication, republication).
    Untouched,
    /// A fresh put: into the outbox if it misses its quorum.
    AddOnFailure,
    /// A retry from the outbox: out of it once the quorum is met.
    RemoveOnSuccess,
}

/// A finished put whose fan-out requests are still out.
#[derive(Clone, Debug)]
struct LatePut {
    record: Record,
    internal: bool,
    outstanding: usize,
}

/// Origins whose decompressed public keys a node keeps.
const KEY_CACHE: usize = 256;

/// The most keys whose last read repair a node remembers (see
/// [`Config::read_repair_interval`]).
pub const READ_REPAIR_KEYS: usize = 4096;

/// Most background jobs one input starts.
const JOB_STARTS_PER_INPUT: usize = 64;

/// How long background jobs that finish as they start (a node without peers) wait after
/// an input started its share, so that they take a bounded share of the node's time.
const JOB_PACE: Duration = Duration::from_millis(10);

/// Records a store walk reads at a time.
const WALK_BATCH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WalkKind {
    /// Records held for others, every replication interval.
    Replication,
    /// The node's own records, every publication interval.
    Republication,
}

/// A walk through the store in key order, one batch at a time.
#[derive(Clone, Debug)]
struct Walk {
    /// The last key read.
    after: Option<RecordKey>,
    started: Instant,
}

#[derive(Clone, Debug)]
enum Job {
    /// Publish a record again: replication of one held for others, republication of one of
    /// this node's, or a retry from the outbox (`outbox`: remove it from there once the
    /// quorum is met).
    Republish {
        record: Record,
        outbox: bool,
    },
    Reprovide(RecordKey),
}

/// A Kademlia DHT node as a deterministic, sans-IO state machine.
///
/// # Driving contract
///
/// The node never performs I/O, reads a clock, spawns work or draws on global randomness.
/// Its caller (a runtime adapter or the simulator) drives it:
///
/// 1. **Inputs** are `handle_*` calls and API calls, each taking `now`, the current time on
///    the driver's clock ([`Instant`]). `now` must not go backwards.
///    - network: [`handle_request`](Node::handle_request) for each inbound request,
///      [`handle_response`](Node::handle_response),
///      [`handle_request_failed`](Node::handle_request_failed) and
///      [`handle_request_sent`](Node::handle_request_sent) for the outcome of each
///      [`Output::SendRequest`]; connection and identify news with
///      [`handle_connection_established`](Node::handle_connection_established),
///      [`handle_connection_closed`](Node::handle_connection_closed) and
///      [`handle_peer_identified`](Node::handle_peer_identified);
///    - time: [`handle_timeout`](Node::handle_timeout);
///    - API: [`get_closest_peers`](Node::get_closest_peers),
///      [`get_record`](Node::get_record), [`put_record`](Node::put_record),
///      [`start_providing`](Node::start_providing), [`get_providers`](Node::get_providers),
///      [`bootstrap`](Node::bootstrap), [`find_peer`](Node::find_peer),
///      [`add_address`](Node::add_address) and the rest below.
/// 2. **Outputs** are drained after every input with [`poll_output`](Node::poll_output)
///    until it returns `None`: requests to send, answers to inbound requests, and
///    [`Event`]s such as [`Event::QueryFinished`].
/// 3. **Timers**: after draining, [`poll_timeout`](Node::poll_timeout) says when to call
///    [`handle_timeout`](Node::handle_timeout) next. Calling it earlier, later or more often
///    is harmless: the node acts on whatever deadlines have passed at `now`.
///
/// Randomness (bucket-refresh targets) comes from a ChaCha RNG seeded at construction, and
/// every internal collection iterates in a fixed order: the same inputs produce the same
/// outputs on every machine, wasm32 included.
///
/// Storage is the synchronous [`RecordStore`] given at construction; a write the node
/// acknowledges has returned from the store.
pub struct Node<S> {
    config: Config,
    local: PeerId,
    local_key: Key,
    local_addrs: Addresses,
    mode: Mode,
    table: RoutingTable,
    store: S,
    /// Used only for bucket refreshes: kept out of line, so that the node's hot fields
    /// share fewer cache lines.
    rng: Box<ChaCha8Rng>,
    queries: BTreeMap<QueryId, Query>,
    query_deadlines: Deadlines<QueryId>,
    next_query: u64,
    /// Outbound requests awaiting an outcome. Their deadlines never decrease in id order,
    /// so the first one is the next to time out.
    requests: RequestTable<PendingRequest>,
    /// Deadline of the request sent last.
    last_request_deadline: Instant,
    /// Deadline of the first request in `requests` (the next to time out), kept here so
    /// that [`Node::poll_timeout`] need not read the table.
    next_request_deadline: Option<Instant>,
    /// Lookup requests whose patience runs out (entries may be stale: the request may have
    /// completed already).
    patience_deadlines: Deadlines<RequestId>,
    /// Smoothed round-trip time and its mean deviation.
    rtt: Option<(Duration, Duration)>,
    next_request: u64,
    /// Peers with an open connection, by Kademlia key (the SHA-256 of the id, so one key
    /// is one peer): 32 bytes an entry instead of an 80-byte id. Only ever queried, never
    /// iterated, so a hash set with a fixed hasher keeps the node deterministic; it is
    /// touched on every connection change, where an ordered set cost several cache misses.
    connected: HashSet<Key, FxBuildHasher>,
    outputs: VecDeque<Output>,
    jobs: VecDeque<Job>,
    /// Puts that finished (quorum met, or timed out) while some of their fan-out requests
    /// were still out: a late answer may carry a newer version, which supersedes the put.
    /// Kept until the last of those requests completes.
    late_puts: BTreeMap<QueryId, LatePut>,
    /// Keys read-repaired within the last [`Config::read_repair_interval`], oldest first,
    /// with the time of their repair.
    repaired: VecDeque<(Instant, RecordKey)>,
    /// The keys of `repaired`.
    repaired_keys: BTreeSet<RecordKey>,
    /// Set while [`Node::start_jobs`] runs (it is not entered again from inside).
    starting_jobs: bool,
    /// When queued jobs go on, after an input started its share of them.
    resume_jobs: Option<Instant>,
    /// A raised clock ceiling was written but the driver has not said it is durable.
    ceiling_unsynced: bool,
    /// Public keys of the origins met last (boxed: cold, and large).
    keys: Box<crate::identity::KeyCache>,
    /// Keys of the queued publication jobs (each key is queued once).
    queued_keys: BTreeSet<RecordKey>,
    replication_walk: Option<Walk>,
    publication_walk: Option<Walk>,
    job_queries: usize,
    next_sweep: Instant,
    next_replication: Option<Instant>,
    next_publication: Option<Instant>,
    next_reprovide: Option<Instant>,
    next_bootstrap: Option<Instant>,
    next_outbox: Option<Instant>,
    stats: NodeStats,
    /// The key this node signs its records with (`None`: it cannot version records).
    keypair: Option<Keypair>,
    /// The hybrid logical clock of record versions.
    hlc: Hlc,
    /// The wall clock (microseconds since the Unix epoch) minus `now`, as the driver last
    /// reported it.
    wall_offset: i64,
}

impl<S: RecordStore> Node<S> {
    /// A node with identity `local`, backed by `store`, whose random choices derive from
    /// `seed`. `now` starts its periodic jobs. Fails when `config` does not
    /// [validate](Config::validate).
    pub fn new(
        config: Config,
        local: PeerId,
        store: S,
        seed: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let local_key = Key::from_peer(&local);
        let table = RoutingTable::new(local_key, config.k, config.pending_timeout);
        // A store that cannot say where the clock stopped starts it from the wall clock.
        let ceiling = store.clock_ceiling().ok().flatten();
        Ok(Node {
            keypair: None,
            hlc: Hlc::new(config.hlc, ceiling),
            wall_offset: 0,
            mode: config.mode,
            local,
            local_key,
            local_addrs: Addresses::from([]),
            table,
            store,
            rng: Box::new(ChaCha8Rng::seed_from_u64(seed)),
            queries: BTreeMap::new(),
            query_deadlines: Deadlines::new(),
            next_query: 0,
            requests: RequestTable::new(),
            last_request_deadline: Instant::ZERO,
            next_request_deadline: None,
            patience_deadlines: Deadlines::new(),
            rtt: None,
            next_request: 0,
            connected: HashSet::with_hasher(FxBuildHasher),
            outputs: VecDeque::new(),
            jobs: VecDeque::new(),
            queued_keys: BTreeSet::new(),
            late_puts: BTreeMap::new(),
            repaired: VecDeque::new(),
            repaired_keys: BTreeSet::new(),
            starting_jobs: false,
            resume_jobs: None,
            ceiling_unsynced: false,
            keys: Box::new(crate::identity::KeyCache::new(KEY_CACHE)),
            replication_walk: None,
            publication_walk: None,
            job_queries: 0,
            next_sweep: now + config.expiry_sweep_interval,
            next_replication: config.replication_interval.map(|d| now + d),
            next_publication: config.publication_interval.map(|d| now + d),
            next_reprovide: config.provider_publication_interval.map(|d| now + d),
            next_bootstrap: config.bootstrap_interval.map(|d| now + d),
            next_outbox: config.outbox_interval.map(|d| now + d),
            stats: NodeStats::default(),
            config,
        })
    }

    /// A node that signs its records with `keypair` (its peer id is the key's), so that it
    /// can version them ([`Node::seal_record`]).
    pub fn with_identity(
        config: Config,
        keypair: Keypair,
        store: S,
        seed: u64,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let mut node = Node::new(config, keypair.peer_id(), store, seed, now)?;
        node.keypair = Some(keypair);
        Ok(node)
    }

    /// Tells the node the wall clock (microseconds since the Unix epoch) at `now`. Record
    /// versions follow it; timers never do (they run on `now`). Until it is called, the
    /// wall clock is taken to be `now` itself. Drivers call it whenever they read their
    /// clocks; a wall clock that steps (backwards too) is fine.
    pub fn set_wall_clock(&mut self, now: Instant, wall_micros: u64) {
        self.wall_offset = (i128::from(wall_micros) - i128::from(now.as_micros()))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    }

    /// Whether `output` must wait until every store write made before it is durable: the
    /// group-commit rule of [`Output::waits_for_sync`], and also every request while a
    /// newly raised clock ceiling is not yet durable (such a request may carry a timestamp
    /// above the persisted ceiling, which a node that crashed before the sync and came
    /// back with its wall clock behind could issue again). Drivers call it for every
    /// output and [`synced`](Node::synced) after every completed sync.
    pub fn output_waits_for_sync(&self, output: &Output) -> bool {
        output.waits_for_sync() || self.ceiling_unsynced
    }

    /// Tells the node that every store write it made so far is durable.
    pub fn synced(&mut self) {
        self.ceiling_unsynced = false;
    }

    /// The wall clock at `now`, in microseconds since the Unix epoch.
    pub fn wall_clock(&self, now: Instant) -> u64 {
        now.as_micros().saturating_add_signed(self.wall_offset)
    }

    /// The hybrid logical clock of record versions.
    pub fn clock(&self) -> &Hlc {
        &self.hlc
    }

    /// The instant on the driver's clock at which the wall clock reads `wall`.
    fn instant_of_wall(&self, wall: u64) -> Instant {
        let micros = i128::from(wall) - i128::from(self.wall_offset);
        Instant::from_micros(micros.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// When a tombstone `value` expires: its version's timestamp plus
    /// [`Config::tombstone_horizon`], on the driver's clock. `None` when `value` is no
    /// tombstone.
    fn tombstone_expiry(&self, value: &[u8]) -> Option<Instant> {
        match Envelope::version_of(value) {
            Some((version, true)) => {
                let horizon =
                    u64::try_from(self.config.tombstone_horizon.as_micros()).unwrap_or(u64::MAX);
                Some(self.instant_of_wall(version.timestamp.saturating_add(horizon)))
            }
            _ => None,
        }
    }

    /// The expiry of a record this node stores from the network: a tombstone's own
    /// ([`Config::tombstone_horizon`]), otherwise the sender's, capped by this node's
    /// [`Config::record_ttl`].
    fn inbound_expiry(&self, now: Instant, value: &[u8], sent: Option<Instant>) -> Option<Instant> {
        if let Some(expiry) = self.tombstone_expiry(value) {
            return Some(expiry);
        }
        match self.config.record_ttl {
            Some(ttl) => {
                let cap = now + ttl;
                Some(sent.map_or(cap, |e| e.min(cap)))
            }
            None => sent,
        }
    }

    // ----- accessors -------------------------------------------------------------------

    /// The local peer id.
    pub fn local_peer_id(&self) -> &PeerId {
        &self.local
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The routing table.
    pub fn routing_table(&self) -> &RoutingTable {
        &self.table
    }

    /// The record store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The record store, mutably (for local reads and writes that bypass the DHT).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives up the node and returns its store.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Node-wide counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Number of queries running.
    pub fn query_count(&self) -> usize {
        self.queries.len()
    }

    /// Number of outbound requests awaiting an outcome.
    pub fn pending_request_count(&self) -> usize {
        self.requests.len()
    }

    /// Number of queued background jobs.
    pub fn queued_job_count(&self) -> usize {
        self.jobs.len()
    }

    /// The addresses this node announces for itself.
    pub fn local_addresses(&self) -> &[Address] {
        &self.local_addrs
    }

    /// Checks the node's internal invariants and bounds; returns the first violation.
    /// Used by tests and the simulator's checkers.
    pub fn check_invariants(&self) -> Result<(), alloc::string::String> {
        use alloc::format;
        self.table.check_invariants()?;
        if self.queries.len() > self.config.max_queries {
            return Err(format!("{} queries exceed max_queries", self.queries.len()));
        }
        if self.requests.values().count() != self.requests.len() {
            return Err(format!(
                "{} requests counted but {} held",
                self.requests.len(),
                self.requests.values().count()
            ));
        }
        if self.next_request_deadline != self.requests.first().map(|(_, r)| r.deadline) {
            return Err("the next request deadline is out of date".into());
        }
        let deadlines: Vec<Instant> = self.requests.values().map(|r| r.deadline).collect();
        if deadlines.windows(2).any(|w| w[0] > w[1]) {
            return Err("request deadlines decrease in id order".into());
        }
        let patient = self
            .requests
            .values()
            .filter(|r| r.patience.is_some())
            .count();
        if patient != self.patience_deadlines.len() {
            return Err(format!(
                "{patient} requests with patience but {} patience deadlines",
                self.patience_deadlines.len()
            ));
        }
        if !self.patience_deadlines.is_consistent() || !self.query_deadlines.is_consistent() {
            return Err("an earliest deadline is out of date".into());
        }
        if self.queries.len() != self.query_deadlines.len() {
            return Err(format!(
                "{} queries but {} query deadlines",
                self.queries.len(),
                self.query_deadlines.len()
            ));
        }
        // Per query: at most K lookup requests (stalled width) plus K fan-out requests.
        let bound = self.queries.len() * 2 * self.config.k
            + self.table.len()
            + 64 * self.config.cache_peers.max(1);
        if self.requests.len() > bound {
            return Err(format!(
                "{} pending requests exceed the bound {bound}",
                self.requests.len()
            ));
        }
        for (id, q) in &self.queries {
            if q.iter.candidate_count() > self.config.k * 8 {
                return Err(format!(
                    "query {id:?} holds {} candidates",
                    q.iter.candidate_count()
                ));
            }
        }
        if self.repaired.len() != self.repaired_keys.len() || self.repaired.len() > READ_REPAIR_KEYS
        {
            return Err(format!(
                "{} read repairs remembered for {} keys (at most {READ_REPAIR_KEYS})",
                self.repaired.len(),
                self.repaired_keys.len()
            ));
        }
        let late: usize = self.late_puts.values().map(|l| l.outstanding).sum();
        if late > self.requests.len() {
            return Err(format!(
                "{late} late put answers awaited but {} requests out",
                self.requests.len()
            ));
        }
        let publications = self
            .jobs
            .iter()
            .filter(|j| matches!(j, Job::Republish { .. }))
            .count();
        if publications > self.config.max_queued_jobs {
            return Err(format!(
                "{publications} queued publications exceed max_queued_jobs"
            ));
        }
        if publications != self.queued_keys.len() {
            return Err(format!(
                "{publications} queued publications but {} queued keys",
                self.queued_keys.len()
            ));
        }
        let jobs = self.queries.values().filter(|q| q.internal).count();
        if jobs != self.job_queries {
            return Err(format!(
                "{jobs} job queries but counter says {}",
                self.job_queries
            ));
        }
        Ok(())
    }
}

/// Versions and signs a record for `key`: the envelope of `parts` (whose `timestamp` is
/// ignored) at a timestamp from `hlc` at wall-clock time `wall`, above the version `store`
/// holds for `key`. When the clock passes its ceiling, the new ceiling is written to
/// `store` first; if that write fails, `hlc` restarts from the persisted ceiling and the
/// error is returned. [`Node::seal_record`] uses it; a driver whose node is not running
/// can use it with a clock made from the store's persisted ceiling
/// (`Hlc::new(config, store.clock_ceiling()?)`).
pub fn seal_version<S: RecordStore>(
    store: &mut S,
    hlc: &mut Hlc,
    keypair: &Keypair,
    wall: u64,
    key: &RecordKey,
    parts: SealParts<'_>,
) -> Result<Vec<u8>, StoreError> {
    let floor = match store.get(key)? {
        Some(stored) => {
            crate::version::version_of(&stored.value).map_or(0, |v| v.timestamp.saturating_add(1))
        }
        None => 0,
    };
    let issued = hlc.issue(wall, floor);
    if let Some(ceiling) = issued.persist_ceiling
        && let Err(e) = store.set_clock_ceiling(ceiling)
    {
        // Not persisted: the clock must not get ahead of what a restart would see.
        *hlc = Hlc::new(*hlc.config(), store.clock_ceiling().ok().flatten());
        return Err(e);
    }
    Ok(Envelope::seal_parts(
        key,
        SealParts {
            timestamp: issued.timestamp,
            ..parts
        },
        keypair,
    ))
}

/// A record as sent to peers: its remaining lifetime in whole seconds (at least one).
fn to_wire(r: &Record, now: Instant) -> WireRecord {
    WireRecord {
        key: r.key.clone(),
        value: r.value.clone(),
        publisher: r.publisher,
        ttl_secs: r.expires.map(|e| {
            let secs = e.saturating_duration_since(now).as_secs().max(1);
            u32::try_from(secs).unwrap_or(u32::MAX)
        }),
    }
}

/// A record received from a peer, with its expiry on the local clock.
fn from_wire(r: WireRecord, now: Instant) -> Record {
    Record {
        key: r.key,
        value: r.value,
        publisher: r.publisher,
        expires: r.ttl_secs.map(|s| now + Duration::from_secs(u64::from(s))),
    }
}

/// A random lookup preimage whose key falls in (or near) `bucket` of `local`.
///
/// A FIND_NODE carries a preimage that the receiver hashes, so a target cannot be chosen
/// directly; random preimages are drawn until one lands in the bucket, and the closest try
/// is kept when none does within the budget (deep buckets are hit with probability
/// 2^(bucket-255), so they are approximated, as other Kademlia implementations do).
fn refresh_preimage(rng: &mut ChaCha8Rng, local: &Key, bucket: u8) -> Vec<u8> {
    let mut best: Option<(u8, [u8; 32])> = None;
    for _ in 0..64 {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let b = local
            .distance(&Key::hash(&bytes))
            .bucket_index()
            .unwrap_or(0);
        if b == bucket {
            return bytes.to_vec();
        }
        let gap = b.abs_diff(bucket);
        if best.is_none_or(|(g, _)| gap < g) {
            best = Some((gap, bytes));
        }
    }
    best.map(|(_, b)| b.to_vec()).unwrap_or_default()
}
