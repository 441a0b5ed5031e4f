//! The Kademlia node: a deterministic state machine driven by its caller.

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

    // ----- driving ---------------------------------------------------------------------

    /// The next command for the driver, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](Node::handle_timeout) should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = Some(self.next_sweep);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.next_request_deadline);
        consider(self.patience_deadlines.first_deadline());
        consider(self.query_deadlines.first_deadline());
        consider(self.table.next_pending_deadline());
        consider(self.next_replication);
        consider(self.next_publication);
        consider(self.next_reprovide);
        consider(self.next_bootstrap);
        consider(self.next_outbox);
        consider(self.resume_jobs);
        next
    }

    /// Acts on every deadline that has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Requests that timed out.
        while self.next_request_deadline.is_some_and(|t| t <= now) {
            let Some(id) = self.requests.first_id() else {
                break;
            };
            let Some(req) = self.take_request(RequestId(id)) else {
                break;
            };
            self.stats.requests_timed_out += 1;
            self.request_failed(now, req);
        }
        // Lookup requests that ran out of patience.
        while self
            .patience_deadlines
            .first_deadline()
            .is_some_and(|t| t <= now)
        {
            let Some((_, id)) = self.patience_deadlines.pop_first() else {
                break;
            };
            let Some(req) = self.requests.get_mut(id.0) else {
                continue;
            };
            req.patience = None;
            let (peer, query) = (req.peer, req.query);
            if let Some(qid) = query
                && let Some(q) = self.queries.get_mut(&qid)
                && q.iter.on_unresponsive(&peer)
            {
                self.advance(now, qid);
            }
        }
        // Queries that ran out of time.
        while self
            .query_deadlines
            .first_deadline()
            .is_some_and(|t| t <= now)
        {
            let Some((_, id)) = self.query_deadlines.pop_first() else {
                break;
            };
            self.finish_query(now, id, true);
        }
        for r in self.table.apply_pending(now) {
            self.outputs
                .push_back(Output::Event(Event::PeerRemoved { peer: r.evicted }));
            self.outputs.push_back(Output::Event(Event::PeerAdded {
                peer: r.inserted,
                bucket: r.bucket,
            }));
        }
        self.run_periodic_jobs(now);
    }

    fn run_periodic_jobs(&mut self, now: Instant) {
        if now >= self.next_sweep {
            self.next_sweep = now + self.config.expiry_sweep_interval;
            // A failing backend is retried at the next sweep; nothing is lost by waiting.
            if let Ok(count @ 1..) = self.store.remove_expired(now) {
                self.outputs
                    .push_back(Output::Event(Event::Expired { count }));
            }
        }
        if self.next_replication.is_some_and(|t| now >= t) {
            self.next_replication = self.config.replication_interval.map(|d| now + d);
            self.start_walk(now, WalkKind::Replication);
        }
        if self.next_publication.is_some_and(|t| now >= t) {
            self.next_publication = self.config.publication_interval.map(|d| now + d);
            self.start_walk(now, WalkKind::Republication);
        }
        if self.next_reprovide.is_some_and(|t| now >= t) {
            self.next_reprovide = self.config.provider_publication_interval.map(|d| now + d);
            if let Ok(provided) = self.store.provided() {
                for mut p in provided {
                    p.expires = self.config.provider_record_ttl.map(|d| now + d);
                    p.addresses = self.local_addrs.to_vec();
                    let key = p.key.clone();
                    if self.store.add_provider(p).is_ok() {
                        self.jobs.push_back(Job::Reprovide(key));
                    }
                }
            }
        }
        if self.next_outbox.is_some_and(|t| now >= t) {
            self.next_outbox = self.config.outbox_interval.map(|d| now + d);
            self.retry_outbox(now);
        }
        if self.next_bootstrap.is_some_and(|t| now >= t) {
            self.next_bootstrap = self.config.bootstrap_interval.map(|d| now + d);
            if !self.table.is_empty() {
                let _ = self.start_bootstrap(now, true);
            }
        }
        self.start_jobs(now);
    }

    /// Queues a publication of each record in the outbox that is not being published
    /// already (at most [`Config::max_job_queries`] per round); keys whose record is gone
    /// leave the outbox.
    fn retry_outbox(&mut self, now: Instant) {
        if self.table.is_empty() {
            return;
        }
        let Ok(keys) = self.store.outbox(self.config.max_job_queries) else {
            return;
        };
        for key in keys {
            let publishing = self.queries.values().any(
                |q| matches!(&q.kind, QueryKind::PutRecord { record, .. } if record.key == key),
            );
            if publishing {
                continue;
            }
            match self.store.get(&key) {
                Ok(Some(record)) if !record.is_expired(now) => {
                    if self.jobs.len() < self.config.max_queued_jobs {
                        self.queue_publication(record, true);
                    }
                }
                Ok(_) => {
                    let _ = self.store.outbox_remove(&key);
                }
                Err(_) => {}
            }
        }
    }

    /// Starts walking the store for replication or republication, unless the previous
    /// walk of that kind is still going (then it goes on, and the overrun is counted).
    fn start_walk(&mut self, now: Instant, kind: WalkKind) {
        let slot = match kind {
            WalkKind::Replication => &mut self.replication_walk,
            WalkKind::Republication => &mut self.publication_walk,
        };
        if slot.is_some() {
            self.stats.walks_overrun += 1;
            return;
        }
        *slot = Some(Walk {
            after: None,
            started: now,
        });
    }

    /// Fills the job queue from the store walks in progress, one bounded batch of records
    /// at a time, while the queue has room: replication queues the records held for
    /// others, republication the node's own (with a fresh expiry; tombstones keep their
    /// own). A walk ends when it reaches the end of the store.
    fn feed_jobs(&mut self, now: Instant) {
        for kind in [WalkKind::Republication, WalkKind::Replication] {
            // One batch at a time, when the queue runs low: a republication writes each
            // record's new expiry as it queues it, so the work per input stays bounded.
            while self.jobs.len() < WALK_BATCH {
                let room = self.config.max_queued_jobs.saturating_sub(self.jobs.len());
                if room == 0 {
                    break;
                }
                let walk = match kind {
                    WalkKind::Replication => &mut self.replication_walk,
                    WalkKind::Republication => &mut self.publication_walk,
                };
                let Some(current) = walk else {
                    break;
                };
                // A failing backend is retried when the queue next drains.
                let limit = room.min(WALK_BATCH);
                let Ok(batch) = self.store.records_after(current.after.as_ref(), limit) else {
                    break;
                };
                match batch.last() {
                    Some(last) if batch.len() == limit => current.after = Some(last.key.clone()),
                    // Fewer than asked for: the end of the store.
                    _ => *walk = None,
                }
                for mut r in batch {
                    let own = r.publisher == Some(self.local);
                    match kind {
                        WalkKind::Replication if !own && !r.is_expired(now) => {
                            self.queue_publication(r, false);
                        }
                        // An own record that expired here was not republished for a whole
                        // record lifetime: the node was down. It may have been overwritten
                        // or removed meanwhile, so it is not sent out again (the expiry
                        // sweep drops it); the typed row stays until the next local write.
                        WalkKind::Republication if own && !r.is_expired(now) => {
                            // A tombstone keeps its own horizon; a value gets a fresh
                            // lifetime, written only when the one it has would not last
                            // two more publication intervals (so a walk soon after the
                            // last one, or over a store loaded with long lifetimes, writes
                            // nothing).
                            let fresh = self
                                .tombstone_expiry(&r.value)
                                .or_else(|| self.config.record_ttl.map(|d| now + d));
                            let interval = self.config.publication_interval.unwrap_or_default();
                            let stale = match (r.expires, fresh) {
                                (Some(old), Some(new)) => {
                                    old < new.min(now.saturating_add(interval * 2))
                                }
                                (old, new) => old != new,
                            };
                            if !stale {
                                self.queue_publication(r, false);
                                continue;
                            }
                            r.expires = fresh;
                            if matches!(
                                self.store.put_resolved(r.clone()),
                                Ok(PutOutcome::Stored | PutOutcome::Refreshed)
                            ) {
                                self.queue_publication(r, false);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Queues a publication of `record` unless one of its key is queued already.
    fn queue_publication(&mut self, record: Record, outbox: bool) {
        if self.queued_keys.insert(record.key.clone()) {
            self.jobs.push_back(Job::Republish { record, outbox });
        }
    }

    /// How long the oldest store walk in progress has been going (`None`: none is). A
    /// walk that takes longer than its interval means the node cannot keep up with its
    /// replication or republication.
    pub fn background_lag(&self, now: Instant) -> Option<Duration> {
        [&self.replication_walk, &self.publication_walk]
            .into_iter()
            .flatten()
            .map(|w| now.saturating_duration_since(w.started))
            .max()
    }

    fn start_jobs(&mut self, now: Instant) {
        // A job's query can finish while it starts (nobody to ask), and a finished query
        // starts the next jobs: the outer call's loop does that, so that the stack does not
        // grow with the queue.
        if self.starting_jobs {
            return;
        }
        self.starting_jobs = true;
        self.run_jobs(now);
        self.starting_jobs = false;
    }

    fn run_jobs(&mut self, now: Instant) {
        self.feed_jobs(now);
        self.resume_jobs = None;
        let mut budget = JOB_STARTS_PER_INPUT;
        while self.job_queries < self.config.max_job_queries
            && self.queries.len() < self.config.max_queries
        {
            if budget == 0 {
                // Jobs that finish as they start (nobody to ask) would otherwise run the
                // whole queue in one input: the rest waits for the next timeout, at once.
                let walking = self.replication_walk.is_some() || self.publication_walk.is_some();
                if !self.jobs.is_empty() || walking {
                    self.resume_jobs = Some(now + JOB_PACE);
                }
                break;
            }
            budget -= 1;
            let Some(job) = self.jobs.pop_front() else {
                break;
            };
            match job {
                Job::Republish { record, outbox } => {
                    self.queued_keys.remove(&record.key);
                    let target = record.key.clone();
                    let kind = QueryKind::PutRecord {
                        record,
                        quorum: 1,
                        outbox: if outbox {
                            Outbox::RemoveOnSuccess
                        } else {
                            Outbox::Untouched
                        },
                    };
                    self.start_query(now, target, kind, true);
                }
                Job::Reprovide(key) => {
                    let kind = QueryKind::AddProvider { key: key.clone() };
                    self.start_query(now, key, kind, true);
                }
            }
            if self.jobs.is_empty() {
                self.feed_jobs(now);
            }
        }
    }

    // ----- connection news -------------------------------------------------------------

    /// The driver established a connection to `peer`.
    pub fn handle_connection_established(&mut self, now: Instant, peer: PeerId) {
        self.connected.insert(*peer.kad_key());
        self.table.mark_connected(now, &peer);
    }

    /// The driver's last connection to `peer` closed.
    pub fn handle_connection_closed(&mut self, _now: Instant, peer: PeerId) {
        self.connected.remove(peer.kad_key());
        self.table.mark_disconnected(&peer);
    }

    /// The driver learnt (through identify) `peer`'s listen addresses and whether it serves
    /// the Kademlia protocol. Servers enter the routing table, others leave it.
    pub fn handle_peer_identified(
        &mut self,
        now: Instant,
        peer: PeerId,
        listen_addrs: &[Address],
        serves_kad: bool,
    ) {
        if serves_kad {
            let status = if self.connected.contains(peer.kad_key()) {
                Status::Connected
            } else {
                Status::Disconnected
            };
            self.table_update(now, peer, listen_addrs, status);
        } else if self.table.remove(now, &peer).is_some() {
            self.outputs
                .push_back(Output::Event(Event::PeerRemoved { peer }));
        }
    }

    fn table_update(&mut self, now: Instant, peer: PeerId, addrs: &[Address], status: Status) {
        match self.table.update(now, peer, addrs, status) {
            UpdateOutcome::Inserted { bucket } => {
                self.outputs
                    .push_back(Output::Event(Event::PeerAdded { peer, bucket }));
            }
            UpdateOutcome::Pending { probe, .. } => self.send_probe(now, probe),
            UpdateOutcome::Updated { .. }
            | UpdateOutcome::Full { .. }
            | UpdateOutcome::SelfEntry => {}
        }
    }

    fn send_probe(&mut self, now: Instant, peer: PeerId) {
        let Some(entry) = self.table.entry(&peer) else {
            return;
        };
        let addrs = entry.addrs.clone();
        let key =
            RecordKey::new(self.local.as_bytes()).expect("peer ids are shorter than record keys");
        self.send_request(
            now,
            peer,
            addrs,
            Request::FindNode { key },
            None,
            Purpose::Probe,
        );
    }

    // ----- routing-table API -----------------------------------------------------------

    /// Adds a known address of a DHT server `peer` to the routing table (as libp2p's
    /// `add_address`). Returns what the table did.
    pub fn add_address(&mut self, now: Instant, peer: PeerId, addr: Address) -> UpdateOutcome {
        let status = if self.connected.contains(peer.kad_key()) {
            Status::Connected
        } else {
            Status::Disconnected
        };
        let outcome = self
            .table
            .update(now, peer, core::slice::from_ref(&addr), status);
        match &outcome {
            UpdateOutcome::Inserted { bucket } => {
                self.outputs.push_back(Output::Event(Event::PeerAdded {
                    peer,
                    bucket: *bucket,
                }))
            }
            UpdateOutcome::Pending { probe, .. } => self.send_probe(now, *probe),
            _ => {}
        }
        outcome
    }

    /// Removes one address of `peer`; the peer leaves the table when it has none left.
    pub fn remove_address(&mut self, now: Instant, peer: &PeerId, addr: &Address) {
        if self.table.remove_address(now, peer, addr) {
            self.outputs
                .push_back(Output::Event(Event::PeerRemoved { peer: *peer }));
        }
    }

    /// Removes `peer` from the routing table.
    pub fn remove_peer(&mut self, now: Instant, peer: &PeerId) -> bool {
        let removed = self.table.remove(now, peer).is_some();
        if removed {
            self.outputs
                .push_back(Output::Event(Event::PeerRemoved { peer: *peer }));
        }
        removed
    }

    /// Sets the addresses this node announces as a provider.
    pub fn set_local_addresses(&mut self, addrs: Vec<Address>) {
        self.local_addrs = addrs.into();
    }

    /// Switches between server and client mode.
    pub fn set_mode(&mut self, mode: Mode) {
        if self.mode != mode {
            self.mode = mode;
            self.outputs
                .push_back(Output::Event(Event::ModeChanged { mode }));
        }
    }

    // ----- queries API -----------------------------------------------------------------

    fn check_capacity(&self) -> Result<(), ApiError> {
        if self.queries.len() >= self.config.max_queries {
            return Err(ApiError::TooManyQueries(self.config.max_queries));
        }
        Ok(())
    }

    /// Looks up the K peers closest to `key` (a preimage: peer id bytes or record key).
    pub fn get_closest_peers(&mut self, now: Instant, key: RecordKey) -> Result<QueryId, ApiError> {
        self.check_capacity()?;
        Ok(self.start_query(now, key, QueryKind::GetClosestPeers, false))
    }

    /// Looks up the addresses of `peer`.
    pub fn find_peer(&mut self, now: Instant, peer: PeerId) -> Result<QueryId, ApiError> {
        self.check_capacity()?;
        let key = RecordKey::new(peer.as_bytes()).expect("peer ids are shorter than record keys");
        if let Some(entry) = self.table.entry(&peer) {
            let info = PeerInfo {
                id: peer,
                addrs: entry.addrs.clone(),
                connection: ConnectionType::NotConnected,
            };
            let id = self.alloc_query_id();
            let stats = QueryStats {
                started: now,
                finished: now,
                ..QueryStats::default()
            };
            self.emit_finished(id, QueryResult::FindPeer(Ok(Box::new(info))), stats);
            return Ok(id);
        }
        Ok(self.start_query(now, key, QueryKind::FindPeer { peer }, false))
    }

    /// Looks up the record under `key` until `quorum` peers returned it. A record in the
    /// local store counts as one.
    pub fn get_record(
        &mut self,
        now: Instant,
        key: RecordKey,
        quorum: Quorum,
    ) -> Result<QueryId, ApiError> {
        self.check_capacity()?;
        let quorum = quorum.eval(self.config.k);
        let mut records = Vec::new();
        if let Ok(Some(r)) = self.store.get(&key) {
            if r.is_expired(now) {
                let _ = self.store.remove(&key);
            } else {
                records.push(PeerRecord {
                    peer: None,
                    record: r,
                });
            }
        }
        if records.len() >= quorum {
            let id = self.alloc_query_id();
            let stats = QueryStats {
                started: now,
                finished: now,
                ..QueryStats::default()
            };
            self.emit_finished(id, QueryResult::GetRecord(Ok(records)), stats);
            return Ok(id);
        }
        let kind = QueryKind::GetRecord {
            key: key.clone(),
            quorum,
            records,
            without_record: Vec::new(),
        };
        Ok(self.start_query(now, key, kind, false))
    }

    /// Stores `record` locally, then at the K closest peers; succeeds once `quorum` of
    /// them confirmed. The publisher defaults to this node and the expiry to
    /// [`Config::record_ttl`] from `now`.
    pub fn put_record(
        &mut self,
        now: Instant,
        mut record: Record,
        quorum: Quorum,
    ) -> Result<QueryId, ApiError> {
        self.check_capacity()?;
        if record.value.len() > self.config.max_record_size {
            return Err(ApiError::RecordTooLarge {
                size: record.value.len(),
                max: self.config.max_record_size,
            });
        }
        record.publisher.get_or_insert(self.local);
        if let Some(expiry) = self.tombstone_expiry(&record.value) {
            record.expires = Some(expiry);
        } else if record.expires.is_none() {
            record.expires = self.config.record_ttl.map(|d| now + d);
        }
        if let PutOutcome::Kept(current) = self.store.put_resolved(record.clone())? {
            return Err(ApiError::Superseded {
                current: Box::new(current),
            });
        }
        // A publication that misses its quorum goes to the outbox, which survives a restart:
        // a node that is offline now publishes it when it is back.
        let quorum = quorum.eval(self.config.k);
        let target = record.key.clone();
        let kind = QueryKind::PutRecord {
            record,
            quorum,
            outbox: Outbox::AddOnFailure,
        };
        Ok(self.start_query(now, target, kind, false))
    }

    /// A new version of the record under `key`, signed by this node: an envelope of
    /// `model` at schema `schema_version` holding `payload` (or a tombstone when
    /// `tombstone`; its payload should be empty), timestamped by the node's hybrid logical
    /// clock above the version stored for `key`, published by this node with
    /// [`Config::record_ttl`]. Pass it to [`put_record`](Node::put_record). When the clock
    /// passes its ceiling, the new ceiling is written to the store first.
    pub fn seal_record(
        &mut self,
        now: Instant,
        key: RecordKey,
        model: ModelId,
        schema_version: u32,
        tombstone: bool,
        payload: &[u8],
    ) -> Result<Record, ApiError> {
        let Some(keypair) = &self.keypair else {
            return Err(ApiError::NoIdentity);
        };
        let wall = self.wall_clock(now);
        let parts = SealParts {
            model,
            schema_version,
            timestamp: 0,
            tombstone,
            payload,
        };
        let ceiling = self.hlc.ceiling();
        let value = seal_version(&mut self.store, &mut self.hlc, keypair, wall, &key, parts)?;
        if self.hlc.ceiling() != ceiling {
            self.ceiling_unsynced = true;
        }
        Ok(Record {
            key,
            value,
            publisher: Some(self.local),
            expires: self.config.record_ttl.map(|d| now + d),
        })
    }

    /// Removes the record under `key` from the local store (records at other peers expire).
    pub fn remove_record(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        self.store.remove(key)
    }

    /// Records locally that this node provides `key`, then announces it to the K closest
    /// peers.
    pub fn start_providing(&mut self, now: Instant, key: RecordKey) -> Result<QueryId, ApiError> {
        self.check_capacity()?;
        self.store.add_provider(ProviderRecord {
            key: key.clone(),
            provider: self.local,
            addresses: self.local_addrs.to_vec(),
            expires: self.config.provider_record_ttl.map(|d| now + d),
        })?;
        Ok(self.start_query(now, key.clone(), QueryKind::AddProvider { key }, false))
    }

    /// Stops providing `key` locally (announcements at other peers expire).
    pub fn stop_providing(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        let local = self.local;
        self.store.remove_provider(key, &local)
    }

    /// Looks up the providers of `key`; local provider records are included.
    pub fn get_providers(&mut self, now: Instant, key: RecordKey) -> Result<QueryId, ApiError> {
        self.check_capacity()?;
        let mut providers = BTreeMap::new();
        if let Ok(local) = self.store.providers(&key) {
            for p in local.into_iter().filter(|p| !p.is_expired(now)) {
                providers.insert(
                    p.provider,
                    PeerInfo {
                        id: p.provider,
                        addrs: p.addresses.into(),
                        connection: ConnectionType::NotConnected,
                    },
                );
            }
        }
        let kind = QueryKind::GetProviders { providers };
        Ok(self.start_query(now, key, kind, false))
    }

    /// Joins or refreshes the network: a lookup of the local id, then one lookup in each
    /// bucket farther than the closest neighbour's, to fill the routing table.
    pub fn bootstrap(&mut self, now: Instant) -> Result<QueryId, ApiError> {
        self.check_capacity()?;
        Ok(self.start_bootstrap(now, false))
    }

    fn start_bootstrap(&mut self, now: Instant, internal: bool) -> QueryId {
        let target =
            RecordKey::new(self.local.as_bytes()).expect("peer ids are shorter than record keys");
        let kind = QueryKind::Bootstrap {
            remaining: Vec::new(),
            started_refresh: false,
        };
        self.start_query(now, target, kind, internal)
    }

    /// Cancels a query; its pending requests' answers are ignored and no event is emitted.
    pub fn cancel_query(&mut self, id: QueryId) -> bool {
        match self.queries.remove(&id) {
            Some(q) => {
                self.query_deadlines.remove(q.deadline, id);
                if q.internal {
                    self.job_queries -= 1;
                }
                true
            }
            None => false,
        }
    }

    // ----- query machinery ---------------------------------------------------------------

    fn alloc_query_id(&mut self) -> QueryId {
        let id = QueryId(self.next_query);
        self.next_query += 1;
        id
    }

    fn new_iter(&self, target: &RecordKey) -> ClosestPeersIter {
        let key = target.key();
        let known = self
            .table
            .closest(&key, self.config.k)
            .into_iter()
            .map(|e| (e.peer, e.addrs.clone()))
            .collect::<Vec<_>>();
        ClosestPeersIter::new(key, &self.local, known, self.config.k, self.config.alpha)
    }

    fn start_query(
        &mut self,
        now: Instant,
        target: RecordKey,
        kind: QueryKind,
        internal: bool,
    ) -> QueryId {
        let id = self.alloc_query_id();
        let iter = self.new_iter(&target);
        let deadline = now + self.config.query_timeout;
        let query = Query {
            kind,
            target,
            iter,
            phase: Phase::Lookup,
            stats: QueryStats {
                started: now,
                ..QueryStats::default()
            },
            deadline,
            internal,
        };
        if internal {
            self.job_queries += 1;
        }
        self.queries.insert(id, query);
        self.query_deadlines.insert(deadline, id);
        self.advance(now, id);
        id
    }

    fn lookup_request(kind: &QueryKind, target: &RecordKey) -> Request {
        match kind {
            QueryKind::GetRecord { .. } => Request::GetValue {
                key: target.clone(),
            },
            QueryKind::GetProviders { .. } => Request::GetProviders {
                key: target.clone(),
            },
            _ => Request::FindNode {
                key: target.clone(),
            },
        }
    }

    fn send_request(
        &mut self,
        now: Instant,
        peer: PeerId,
        addrs: Addresses,
        request: Request,
        query: Option<QueryId>,
        purpose: Purpose,
    ) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        // Never before an earlier request's deadline (even if `now` went backwards), so
        // that the first request waiting is always the first to time out.
        let deadline = (now + self.config.request_timeout).max(self.last_request_deadline);
        self.last_request_deadline = deadline;
        if self.next_request_deadline.is_none() {
            self.next_request_deadline = Some(deadline);
        }
        let patience = match purpose {
            Purpose::Lookup => self.patience().map(|p| now + p),
            _ => None,
        };
        self.requests.insert(
            id.0,
            PendingRequest {
                peer,
                kind: request.kind(),
                one_way: !request.expects_response(),
                query,
                purpose,
                deadline,
                patience,
                sent: now,
            },
        );
        if let Some(p) = patience {
            self.patience_deadlines.insert(p, id);
        }
        self.stats.requests_sent += 1;
        if let Some(q) = query.and_then(|q| self.queries.get_mut(&q)) {
            q.stats.requests += 1;
        }
        self.outputs.push_back(Output::SendRequest {
            id,
            peer,
            addrs,
            request,
        });
    }

    /// How long a lookup waits for one answer before going on without it.
    fn patience(&self) -> Option<Duration> {
        let cap = self
            .config
            .lookup_patience?
            .min(self.config.request_timeout);
        Some(match self.rtt {
            Some((srtt, rttvar)) => (srtt + 4 * rttvar)
                .max(4 * srtt)
                .max(Duration::from_millis(250))
                .min(cap),
            None => cap,
        })
    }

    /// Folds one measured round trip into the smoothed estimate (RFC 6298's gains).
    fn sample_rtt(&mut self, rtt: Duration) {
        self.rtt = Some(match self.rtt {
            None => (rtt, rtt / 2),
            Some((srtt, rttvar)) => {
                let err = srtt.abs_diff(rtt);
                ((srtt * 7 + rtt) / 8, (rttvar * 3 + err) / 4)
            }
        });
    }

    /// The smoothed round-trip time and its variation, once measured.
    pub fn round_trip_estimate(&self) -> Option<(Duration, Duration)> {
        self.rtt
    }

    /// Removes outbound request `id` and its deadlines.
    fn take_request(&mut self, id: RequestId) -> Option<PendingRequest> {
        let front = self.requests.first_id() == Some(id.0);
        let req = self.requests.remove(id.0)?;
        if front {
            self.next_request_deadline = self.requests.first().map(|(_, r)| r.deadline);
        }
        if let Some(p) = req.patience {
            self.patience_deadlines.remove(p, id);
        }
        Some(req)
    }

    /// Moves query `id` forward: sends what its lookup wants, switches phase, or finishes.
    fn advance(&mut self, now: Instant, id: QueryId) {
        loop {
            let Some(q) = self.queries.get_mut(&id) else {
                return;
            };
            match &mut q.phase {
                Phase::Fanout { waiting, .. } => {
                    if waiting.is_empty() {
                        self.finish_query(now, id, false);
                    }
                    return;
                }
                Phase::Lookup => {}
            }
            match q.iter.poll_next() {
                Next::Contact(peer, addrs) => {
                    let request = Self::lookup_request(&q.kind, &q.target);
                    self.send_request(now, peer, addrs, request, Some(id), Purpose::Lookup);
                }
                Next::Waiting => return,
                Next::Finished => {
                    self.lookup_finished(now, id);
                    // Either finished, started the fan-out, or began the next bootstrap step.
                    match self.queries.get(&id) {
                        Some(q) if matches!(q.phase, Phase::Lookup) && !q.iter.is_finished() => {
                            continue;
                        }
                        _ => return,
                    }
                }
            }
        }
    }

    /// The lookup phase of query `id` ended.
    fn lookup_finished(&mut self, now: Instant, id: QueryId) {
        let local = self.local;
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        match &mut q.kind {
            QueryKind::PutRecord { record, .. } => {
                let request = Request::PutValue {
                    record: Box::new(to_wire(record, now)),
                };
                self.start_fanout(now, id, request);
            }
            QueryKind::AddProvider { key } => {
                let request = Request::AddProvider {
                    key: key.clone(),
                    provider: Box::new(PeerInfo {
                        id: local,
                        addrs: self.local_addrs.clone(),
                        connection: ConnectionType::Connected,
                    }),
                };
                self.start_fanout(now, id, request);
            }
            QueryKind::Bootstrap {
                remaining,
                started_refresh,
            } => {
                if !*started_refresh {
                    *started_refresh = true;
                    // Refresh the buckets farther than the closest neighbour's, nearest first.
                    if let Some(&(min, _)) = self.table.bucket_sizes().first() {
                        *remaining = (min.saturating_add(1)..=255).rev().collect();
                    }
                }
                // A bucket that filled up meanwhile (the earlier lookups and the connections
                // they opened taught the node enough peers) needs no lookup of its own.
                while remaining
                    .last()
                    .is_some_and(|b| self.table.bucket_len(*b) >= self.config.k)
                {
                    remaining.pop();
                }
                if let Some(bucket) = remaining.pop() {
                    let preimage = refresh_preimage(&mut self.rng, &self.local_key, bucket);
                    let target = RecordKey::new(&preimage).expect("refresh targets are 32 bytes");
                    let key = target.key();
                    let known = self
                        .table
                        .closest(&key, self.config.k)
                        .into_iter()
                        .map(|e| (e.peer, e.addrs.clone()))
                        .collect::<Vec<_>>();
                    q.iter =
                        ClosestPeersIter::new(key, &local, known, self.config.k, self.config.alpha);
                    q.target = target;
                } else {
                    self.finish_query(now, id, false);
                }
            }
            _ => self.finish_query(now, id, false),
        }
    }

    /// Sends `request` to the closest peers the lookup of query `id` found, and waits for
    /// their confirmations.
    fn start_fanout(&mut self, now: Instant, id: QueryId, request: Request) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let sends: Vec<(PeerId, Addresses)> = q
            .iter
            .succeeded()
            .take(self.config.k)
            .map(|(p, _)| (p, q.iter.addresses(&p).cloned().unwrap_or_default()))
            .collect();
        q.phase = Phase::Fanout {
            waiting: sends.iter().map(|(p, _)| *p).collect(),
            succeeded: Vec::new(),
        };
        for (peer, addrs) in sends {
            self.send_request(now, peer, addrs, request.clone(), Some(id), Purpose::Fanout);
        }
        self.advance(now, id);
    }

    fn emit_finished(&mut self, id: QueryId, result: QueryResult, stats: QueryStats) {
        self.stats.queries_finished += 1;
        self.outputs
            .push_back(Output::Event(Event::QueryFinished { id, result, stats }));
    }

    /// Ends query `id` and reports its result (`timed_out`: it ran out of time).
    fn finish_query(&mut self, now: Instant, id: QueryId, timed_out: bool) {
        let Some(mut q) = self.queries.remove(&id) else {
            return;
        };
        self.query_deadlines.remove(q.deadline, id);
        if q.internal {
            self.job_queries -= 1;
        }
        q.iter.finish();
        q.stats.finished = now;
        q.stats.hops = q.iter.succeeded().next().map_or(0, |(_, d)| d);
        let closest: Vec<PeerId> = q
            .iter
            .succeeded()
            .map(|(p, _)| p)
            .take(self.config.k)
            .collect();
        let result = match q.kind {
            QueryKind::GetClosestPeers => QueryResult::GetClosestPeers(if timed_out {
                Err(QueryError::Timeout)
            } else if closest.is_empty() && self.table.is_empty() {
                Err(QueryError::NoKnownPeers)
            } else {
                Ok(closest)
            }),
            QueryKind::FindPeer { .. } => QueryResult::FindPeer(Err(if timed_out {
                QueryError::Timeout
            } else {
                QueryError::NotFound
            })),
            QueryKind::GetRecord {
                key,
                quorum,
                records,
                without_record,
            } => {
                if records.len() >= quorum {
                    if let Some(hop) = records
                        .iter()
                        .find_map(|r| r.peer)
                        .and_then(|p| q.iter.succeeded().find(|(x, _)| *x == p).map(|(_, d)| d))
                    {
                        q.stats.hops = hop;
                    }
                    let records = self.resolve_found(now, &key, records, &without_record);
                    QueryResult::GetRecord(Ok(records))
                } else if timed_out {
                    QueryResult::GetRecord(Err(QueryError::Timeout))
                } else if records.is_empty() {
                    QueryResult::GetRecord(Err(QueryError::NotFound))
                } else {
                    QueryResult::GetRecord(Err(QueryError::QuorumFailed {
                        succeeded: records.len(),
                        required: quorum,
                    }))
                }
            }
            QueryKind::PutRecord {
                quorum,
                outbox,
                record,
            } => {
                let stored = match q.phase {
                    Phase::Fanout { succeeded, waiting } => {
                        if !waiting.is_empty() {
                            self.late_puts.insert(
                                id,
                                LatePut {
                                    record: record.clone(),
                                    internal: q.internal,
                                    outstanding: waiting.len(),
                                },
                            );
                        }
                        succeeded
                    }
                    Phase::Lookup => Vec::new(),
                };
                // A failing backend leaves the outbox as it was: one publication more or less
                // (republication covers the node's records anyway).
                match outbox {
                    Outbox::RemoveOnSuccess if stored.len() >= quorum => {
                        let _ = self.store.outbox_remove(&record.key);
                    }
                    Outbox::AddOnFailure if stored.len() < quorum => {
                        let _ = self.store.outbox_add(&record.key);
                    }
                    _ => {}
                }
                QueryResult::PutRecord(if stored.len() >= quorum {
                    Ok(stored)
                } else if timed_out {
                    Err(QueryError::Timeout)
                } else {
                    Err(QueryError::QuorumFailed {
                        succeeded: stored.len(),
                        required: quorum,
                    })
                })
            }
            QueryKind::AddProvider { .. } => {
                let sent = match q.phase {
                    Phase::Fanout { succeeded, .. } => succeeded,
                    Phase::Lookup => Vec::new(),
                };
                QueryResult::StartProviding(if !sent.is_empty() {
                    Ok(sent)
                } else if timed_out {
                    Err(QueryError::Timeout)
                } else {
                    Err(QueryError::QuorumFailed {
                        succeeded: 0,
                        required: 1,
                    })
                })
            }
            QueryKind::GetProviders { providers, .. } => {
                QueryResult::GetProviders(if providers.is_empty() && timed_out {
                    Err(QueryError::Timeout)
                } else if providers.is_empty() {
                    Err(QueryError::NotFound)
                } else {
                    Ok(providers.into_values().collect())
                })
            }
            QueryKind::Bootstrap { .. } => QueryResult::Bootstrap(if timed_out {
                Err(QueryError::Timeout)
            } else if self.table.is_empty() {
                Err(QueryError::NoKnownPeers)
            } else {
                Ok(self.table.len())
            }),
        };
        if !q.internal {
            self.emit_finished(id, result, q.stats);
        }
        self.start_jobs(now);
    }

    /// The copies a successful get found, newest first (the order of [`resolve`]). The
    /// newest replaces an older local copy; it is written back to the peers that answered
    /// with an older copy (read repair) and cached at the closest peers that had none.
    fn resolve_found(
        &mut self,
        now: Instant,
        key: &RecordKey,
        records: Vec<PeerRecord>,
        without: &[PeerId],
    ) -> Vec<PeerRecord> {
        let mut ranked: Vec<(Rank, PeerRecord)> = records
            .into_iter()
            .map(|r| (rank(&r.record.value), r))
            .collect();
        // Stable: among equal copies the first found stays first.
        ranked.sort_by_key(|(r, _)| core::cmp::Reverse(*r));
        let Some((best, winner)) = ranked.first() else {
            return Vec::new();
        };
        let (best, winner) = (*best, winner.clone());
        let holds_older = ranked.iter().any(|(r, c)| c.peer.is_none() && *r != best);
        if let (true, Some(from)) = (holds_older, winner.peer) {
            let mut learned = winner.record.clone();
            if learned.publisher == Some(self.local) {
                learned.publisher = None;
            }
            learned.expires = self.inbound_expiry(now, &learned.value, learned.expires);
            if let Ok(PutOutcome::Stored) = self.store.put_resolved(learned) {
                self.outputs.push_back(Output::Event(Event::RecordUpdated {
                    key: key.clone(),
                    from,
                }));
            }
        }
        let outdated: Vec<PeerId> = ranked
            .iter()
            .filter(|(r, _)| *r != best)
            .filter_map(|(_, c)| c.peer)
            .collect();
        self.write_back(now, key, &winner.record, &outdated, without);
        ranked.into_iter().map(|(_, r)| r).collect()
    }

    /// After a successful get, sends the newest record to the peers that answered with an
    /// older copy, and to the closest [`Config::cache_peers`] peers that had none.
    fn write_back(
        &mut self,
        now: Instant,
        key: &RecordKey,
        newest: &Record,
        outdated: &[PeerId],
        without: &[PeerId],
    ) {
        let target = key.key();
        let mut candidates: Vec<PeerId> = without.to_vec();
        candidates.sort_by_key(|p| Key::from_peer(p).distance(&target));
        candidates.truncate(self.config.cache_peers);
        let outdated = if !outdated.is_empty() && self.may_repair(now, key) {
            self.stats.read_repairs += 1;
            outdated
        } else {
            self.stats.read_repairs_skipped += u64::from(!outdated.is_empty());
            &[]
        };
        if candidates.is_empty() && outdated.is_empty() {
            return;
        }
        let wire = to_wire(newest, now);
        for &peer in outdated.iter().chain(candidates.iter()) {
            let addrs = self
                .table
                .entry(&peer)
                .map(|e| e.addrs.clone())
                .unwrap_or_else(|| Addresses::from([]));
            let request = Request::PutValue {
                record: Box::new(wire.clone()),
            };
            self.send_request(now, peer, addrs, request, None, Purpose::Cache);
        }
    }

    /// Whether a read repair of `key` may go out now; if so, remembers it. Keys repaired
    /// longer than [`Config::read_repair_interval`] ago are forgotten first.
    fn may_repair(&mut self, now: Instant, key: &RecordKey) -> bool {
        let interval = self.config.read_repair_interval;
        while let Some((at, _)) = self.repaired.front()
            && now.saturating_duration_since(*at) >= interval
        {
            if let Some((_, old)) = self.repaired.pop_front() {
                self.repaired_keys.remove(&old);
            }
        }
        if self.repaired_keys.contains(key) || self.repaired.len() >= READ_REPAIR_KEYS {
            return false;
        }
        self.repaired_keys.insert(key.clone());
        self.repaired.push_back((now, key.clone()));
        true
    }

    // ----- network input -----------------------------------------------------------------

    /// The answer to outbound request `id`. Answers to unknown, finished or timed-out
    /// requests are counted and otherwise ignored.
    pub fn handle_response(&mut self, now: Instant, id: RequestId, response: Response) {
        let Some(req) = self.take_request(id) else {
            self.stats.unexpected_responses += 1;
            return;
        };
        if response.kind() != req.kind {
            self.stats.mismatched_responses += 1;
            self.request_failed(now, req);
            return;
        }
        self.stats.responses_received += 1;
        self.sample_rtt(now.saturating_duration_since(req.sent));
        let response = self.drop_invalid_record(now, req.peer, response);
        let superseded = req.purpose == Purpose::Fanout
            && req
                .query
                .is_some_and(|qid| self.take_superseding_answer(now, qid, req.peer, &response));
        self.settle_late_put(&req);
        // An answer proves the peer is a live DHT server.
        let addrs = self.known_addrs(&req);
        self.table_update(now, req.peer, &addrs, Status::Connected);
        let Some(qid) = req.query else {
            return;
        };
        let local = self.local;
        let Some(q) = self.queries.get_mut(&qid) else {
            return;
        };
        q.stats.successes += 1;
        if self.config.query_progress {
            let stats = QueryStats {
                finished: now,
                ..q.stats
            };
            self.outputs
                .push_back(Output::Event(Event::QueryProgress { id: qid, stats }));
        }
        match req.purpose {
            Purpose::Fanout => {
                if let Phase::Fanout { waiting, succeeded } = &mut q.phase {
                    let ok = match (&q.kind, &response) {
                        (QueryKind::PutRecord { record, .. }, Response::PutValue { key, .. }) => {
                            *key == record.key && !superseded
                        }
                        _ => false,
                    };
                    if waiting.remove(&req.peer) && ok {
                        succeeded.push(req.peer);
                    }
                    if let QueryKind::PutRecord { quorum, .. } = q.kind
                        && succeeded.len() >= quorum
                    {
                        self.finish_query(now, qid, false);
                        return;
                    }
                }
            }
            Purpose::Lookup => {
                let closer = match response {
                    Response::FindNode { closer_peers } => closer_peers,
                    Response::GetValue {
                        record,
                        closer_peers,
                    } => {
                        if let QueryKind::GetRecord {
                            key,
                            records,
                            without_record,
                            quorum,
                        } = &mut q.kind
                        {
                            match record.filter(|r| r.key == *key) {
                                Some(r) => {
                                    records.push(PeerRecord {
                                        peer: Some(req.peer),
                                        record: from_wire(*r, now),
                                    });
                                    if records.len() >= *quorum {
                                        q.iter.on_success(&local, &req.peer, []);
                                        self.finish_query(now, qid, false);
                                        return;
                                    }
                                }
                                None => without_record.push(req.peer),
                            }
                        }
                        closer_peers
                    }
                    Response::GetProviders {
                        closer_peers,
                        provider_peers,
                    } => {
                        if let QueryKind::GetProviders { providers, .. } = &mut q.kind {
                            for p in provider_peers.into_iter().take(self.config.k) {
                                providers.entry(p.id).or_insert(p);
                            }
                        }
                        closer_peers
                    }
                    Response::PutValue { .. } | Response::Pong => Vec::new(),
                };
                if let QueryKind::FindPeer { peer } = &q.kind {
                    let target = *peer;
                    let found = if req.peer == target {
                        Some(PeerInfo {
                            id: target,
                            addrs: addrs.clone(),
                            connection: ConnectionType::Connected,
                        })
                    } else {
                        closer
                            .iter()
                            .find(|p| p.id == target && !p.addrs.is_empty())
                            .cloned()
                    };
                    if let Some(info) = found {
                        q.iter.on_success(&local, &req.peer, []);
                        self.finish_found_peer(now, qid, info);
                        return;
                    }
                }
                let closer = closer.iter().take(self.config.k).map(|p| (&p.id, &p.addrs));
                q.iter.on_success(&local, &req.peer, closer);
            }
            Purpose::Cache | Purpose::Probe => {}
        }
        self.advance(now, qid);
    }

    /// Whether a fan-out answer to put query `qid` fails to confirm the put: a confirmation
    /// echoes the record put. An answer with a newer, valid version of the record (the
    /// peer kept its newer copy) supersedes the put: the newer version replaces the local
    /// copy and [`Event::RecordSuperseded`] reports it.
    fn take_superseding_answer(
        &mut self,
        now: Instant,
        qid: QueryId,
        peer: PeerId,
        response: &Response,
    ) -> bool {
        let Response::PutValue { key, value } = response else {
            return false;
        };
        let (record, internal) = match self.queries.get(&qid) {
            Some(Query {
                kind: QueryKind::PutRecord { record, .. },
                internal,
                ..
            }) => (record, *internal),
            Some(_) => return false,
            None => match self.late_puts.get(&qid) {
                Some(late) => (&late.record, late.internal),
                None => return false,
            },
        };
        if *key != record.key || *value == record.value {
            return false;
        }
        let newer = resolve(&record.value, value) == Resolution::Take;
        let id = (!internal).then_some(qid);
        if newer && self.check_incoming(now, key, value).is_ok() {
            let learned = Record {
                key: key.clone(),
                value: value.clone(),
                publisher: None,
                expires: self.inbound_expiry(now, value, None),
            };
            if self.store.put_resolved(learned.clone()).is_ok() {
                self.outputs
                    .push_back(Output::Event(Event::RecordSuperseded {
                        id,
                        key: key.clone(),
                        record: Box::new(learned),
                        from: peer,
                    }));
            }
        }
        true
    }

    /// A fan-out request of a finished put completed: the put is forgotten with its last.
    fn settle_late_put(&mut self, req: &PendingRequest) {
        if req.purpose != Purpose::Fanout {
            return;
        }
        let Some(qid) = req.query else {
            return;
        };
        if let Some(late) = self.late_puts.get_mut(&qid) {
            late.outstanding = late.outstanding.saturating_sub(1);
            if late.outstanding == 0 {
                self.late_puts.remove(&qid);
            }
        }
    }

    fn finish_found_peer(&mut self, now: Instant, id: QueryId, info: PeerInfo) {
        let Some(mut q) = self.queries.remove(&id) else {
            return;
        };
        self.query_deadlines.remove(q.deadline, id);
        q.stats.finished = now;
        q.stats.hops = q.iter.succeeded().map(|(_, d)| d).max().unwrap_or(0);
        self.emit_finished(id, QueryResult::FindPeer(Ok(Box::new(info))), q.stats);
    }

    fn known_addrs(&self, req: &PendingRequest) -> Addresses {
        req.query
            .and_then(|q| self.queries.get(&q))
            .and_then(|q| q.iter.addresses(&req.peer))
            .cloned()
            .unwrap_or_else(|| Addresses::from([]))
    }

    /// Outbound request `id` failed.
    pub fn handle_request_failed(&mut self, now: Instant, id: RequestId, failure: RequestFailure) {
        let Some(req) = self.take_request(id) else {
            self.stats.unexpected_responses += 1;
            return;
        };
        if failure == RequestFailure::UnsupportedProtocol
            && self.table.remove(now, &req.peer).is_some()
        {
            self.outputs
                .push_back(Output::Event(Event::PeerRemoved { peer: req.peer }));
        }
        self.request_failed(now, req);
    }

    fn request_failed(&mut self, now: Instant, req: PendingRequest) {
        self.stats.requests_failed += 1;
        self.settle_late_put(&req);
        self.table.mark_disconnected(&req.peer);
        let Some(qid) = req.query else {
            return;
        };
        let Some(q) = self.queries.get_mut(&qid) else {
            return;
        };
        q.stats.failures += 1;
        if self.config.query_progress {
            let stats = QueryStats {
                finished: now,
                ..q.stats
            };
            self.outputs
                .push_back(Output::Event(Event::QueryProgress { id: qid, stats }));
        }
        match (&mut q.phase, req.purpose) {
            (Phase::Fanout { waiting, .. }, Purpose::Fanout) => {
                waiting.remove(&req.peer);
            }
            (_, Purpose::Lookup) => {
                q.iter.on_failure(&req.peer);
            }
            _ => {}
        }
        self.advance(now, qid);
    }

    /// A request without a response (ADD_PROVIDER) was written to the peer. Calls for
    /// requests that expect an answer are ignored: those complete with their answer.
    pub fn handle_request_sent(&mut self, now: Instant, id: RequestId) {
        match self.requests.get(id.0) {
            Some(req) if req.one_way => {}
            Some(_) => return,
            None => {
                self.stats.unexpected_responses += 1;
                return;
            }
        }
        let Some(req) = self.take_request(id) else {
            return;
        };
        let Some(q) = req.query.and_then(|qid| self.queries.get_mut(&qid)) else {
            return;
        };
        q.stats.successes += 1;
        if let Phase::Fanout { waiting, succeeded } = &mut q.phase
            && waiting.remove(&req.peer)
        {
            succeeded.push(req.peer);
        }
        if let Some(qid) = req.query {
            self.advance(now, qid);
        }
    }

    /// An inbound request `id` from `peer`. The node answers with exactly one
    /// [`Output::SendResponse`] or [`Output::RejectInbound`] for requests that expect an
    /// answer, and with nothing for ADD_PROVIDER.
    pub fn handle_request(&mut self, now: Instant, peer: PeerId, id: InboundId, request: Request) {
        self.stats.inbound_requests += 1;
        let kind = request.kind();
        if self.mode == Mode::Client {
            self.reject(
                id,
                peer,
                kind,
                request.expects_response(),
                Rejection::ClientMode,
            );
            return;
        }
        match request {
            Request::FindNode { key } => {
                let closer_peers = self.closer_peers(&key.key(), &peer);
                self.respond(id, peer, Response::FindNode { closer_peers });
            }
            Request::GetValue { key } => {
                let record = match self.store.get(&key) {
                    Ok(Some(r)) if r.is_expired(now) => {
                        let _ = self.store.remove(&key);
                        None
                    }
                    Ok(r) => r.map(|r| Box::new(to_wire(&r, now))),
                    Err(_) => None,
                };
                let closer_peers = self.closer_peers(&key.key(), &peer);
                self.respond(
                    id,
                    peer,
                    Response::GetValue {
                        record,
                        closer_peers,
                    },
                );
            }
            Request::PutValue { record } => {
                if record.value.len() > self.config.max_record_size {
                    let size = record.value.len();
                    self.reject(id, peer, kind, true, Rejection::RecordTooLarge { size });
                    return;
                }
                if let Err(reason) = self.check_incoming(now, &record.key, &record.value) {
                    self.reject(id, peer, kind, true, reason);
                    return;
                }
                let mut stored = from_wire(*record, now);
                // Never keep a record longer than this node's own record lifetime; a
                // tombstone lives until its own horizon.
                stored.expires = self.inbound_expiry(now, &stored.value, stored.expires);
                // The publisher is an untrusted hint: nobody else may claim this node's
                // name for it (this node would republish the record as its own).
                if stored.publisher == Some(self.local) {
                    stored.publisher = None;
                }
                let key = stored.key.clone();
                let value = stored.value.clone();
                match self.store.put_resolved(stored) {
                    Ok(PutOutcome::Stored | PutOutcome::Refreshed) => {
                        self.outputs.push_back(Output::Event(Event::RecordStored {
                            key: key.clone(),
                            from: peer,
                        }));
                        self.respond(id, peer, Response::PutValue { key, value });
                    }
                    Ok(PutOutcome::Kept(current)) => {
                        // Older than the stored copy: answered with the newer one, which a
                        // Netabase writer takes; stock peers count any answer as success.
                        self.stats.stale_records += 1;
                        let value = current.value;
                        self.respond(id, peer, Response::PutValue { key, value });
                    }
                    Err(e) => self.reject(id, peer, kind, true, Rejection::Store(e)),
                }
            }
            Request::GetProviders { key } => {
                let provider_peers = match self.store.providers(&key) {
                    Ok(list) => list
                        .into_iter()
                        .filter(|p| !p.is_expired(now))
                        .take(self.config.k)
                        .map(|p| PeerInfo {
                            id: p.provider,
                            connection: if self.connected.contains(p.provider.kad_key()) {
                                ConnectionType::Connected
                            } else {
                                ConnectionType::NotConnected
                            },
                            addrs: if p.provider == self.local {
                                self.local_addrs.clone()
                            } else {
                                p.addresses.into()
                            },
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let closer_peers = self.closer_peers(&key.key(), &peer);
                self.respond(
                    id,
                    peer,
                    Response::GetProviders {
                        closer_peers,
                        provider_peers,
                    },
                );
            }
            Request::AddProvider { key, provider } => {
                if provider.id != peer {
                    self.reject(id, peer, kind, false, Rejection::ForeignProvider);
                    return;
                }
                let record = ProviderRecord {
                    key: key.clone(),
                    provider: peer,
                    addresses: provider.addrs.to_vec(),
                    expires: self.config.provider_record_ttl.map(|d| now + d),
                };
                match self.store.add_provider(record) {
                    Ok(()) => self.outputs.push_back(Output::Event(Event::ProviderAdded {
                        key,
                        provider: peer,
                    })),
                    Err(e) => self.reject(id, peer, kind, false, Rejection::Store(e)),
                }
            }
            Request::Ping => self.respond(id, peer, Response::Pong),
        }
    }

    fn respond(&mut self, id: InboundId, peer: PeerId, response: Response) {
        self.outputs
            .push_back(Output::SendResponse { id, peer, response });
    }

    /// Checks a record from the network before it is stored, cached, merged or returned:
    /// an envelope must be signed by its origin for this key and its version must not lie
    /// too far ahead of the local clock (a close one is merged into the clock); then the
    /// store validates it. Each refusal is counted.
    fn check_incoming(
        &mut self,
        now: Instant,
        key: &RecordKey,
        value: &[u8],
    ) -> Result<(), Rejection> {
        if value.starts_with(b"NBE") {
            let keys = &mut self.keys;
            let checked = Envelope::decode(value)
                .and_then(|envelope| envelope.verify_cached(key, value, keys).map(|()| envelope));
            self.stats.signatures_verified = self.keys.verified();
            let envelope = match checked {
                Ok(envelope) => envelope,
                Err(e) => {
                    self.stats.forged_records += 1;
                    return Err(Rejection::Envelope(e));
                }
            };
            let wall = self.wall_clock(now);
            if let Err(e) = self.hlc.observe(envelope.timestamp, wall) {
                self.stats.clock_refused += 1;
                return Err(Rejection::ClockAhead(e));
            }
        }
        self.store.validate(key, value).map_err(|e| {
            self.stats.invalid_records += 1;
            Rejection::Store(e)
        })
    }

    /// A GET_VALUE answer without its record when [`Node::check_incoming`] refuses it.
    fn drop_invalid_record(&mut self, now: Instant, peer: PeerId, response: Response) -> Response {
        let Response::GetValue {
            record: Some(record),
            closer_peers,
        } = response
        else {
            return response;
        };
        match self.check_incoming(now, &record.key, &record.value) {
            Ok(()) => Response::GetValue {
                record: Some(record),
                closer_peers,
            },
            Err(reason) => {
                let error = match reason {
                    Rejection::Store(e) => e,
                    other => StoreError::Rejected(alloc::format!("{other}")),
                };
                self.outputs.push_back(Output::Event(Event::InvalidRecord {
                    peer,
                    key: record.key,
                    error,
                }));
                Response::GetValue {
                    record: None,
                    closer_peers,
                }
            }
        }
    }

    fn reject(
        &mut self,
        id: InboundId,
        peer: PeerId,
        kind: MessageKind,
        answer: bool,
        reason: Rejection,
    ) {
        self.stats.inbound_rejected += 1;
        if answer {
            self.outputs.push_back(Output::RejectInbound { id, peer });
        }
        self.outputs
            .push_back(Output::Event(Event::InboundRejected { peer, kind, reason }));
    }

    /// The K closest peers to `target` from the routing table, without the requester.
    fn closer_peers(&self, target: &Key, requester: &PeerId) -> Vec<PeerInfo> {
        self.table
            .closest_excluding(target, self.config.k, Some(requester))
            .into_iter()
            .map(|e| PeerInfo {
                id: e.peer,
                addrs: e.addrs.clone(),
                connection: match e.status {
                    Status::Connected => ConnectionType::Connected,
                    Status::Disconnected => ConnectionType::NotConnected,
                },
            })
            .collect()
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
