//! A Netabase node driven over standard input and output, for tests that run networks of
//! separate processes.
//!
//! The binary `netabase-test-node` starts one node for the small chat definition in
//! [`chat`], prints one [`Output::Ready`] line, then reads one [`Request`] per line on
//! standard input and writes one [`Output`] per line on standard output: a
//! [`Output::Reply`] for every request (in completion order, matched by `req`) and an
//! [`Output::Event`] for every event of the node. Logs go to standard error only.
//!
//! The consensus commands ([`Command::CreateCluster`], [`Command::ConsensusPut`], ...)
//! answer a [`ConsensusReply`]: the result with its log position, or the kind of failure
//! (indeterminate, refused, failed), which tells a caller whether a write may have taken
//! effect.
//!
//! ```text
//! -> {"req":1,"cmd":"put","message":{"id":7,"author":"ada","text":"hello"}}
//! <- {"type":"event","event":{"kind":"query_started","id":0,"query":"put_record"}}
//! <- {"type":"reply","req":1,"ok":true,"result":{"key":"2f6e62...","stored_at":["12D3..."],"quorum_error":null}}
//! ```
//!
//! This library holds the definition and the line formats, shared by the binary and the
//! tests that drive it; [`in_process`]: nodes of any runtime in a test's own process, the
//! support of the in-process suite here and of the runtime crates' own tests; and
//! [`netns`]: the network namespaces in which tests that multicast (mDNS) run their nodes,
//! here and in the root package's example tests.

use netabase::{NetabaseEvent, QueryKind};
use serde::{Deserialize, Serialize};

pub mod in_process;
pub mod netns;
pub mod source_tcp;

/// The chat definition the test node stores and publishes.
// The macro generates public items without docs of their own; they are documented here.
#[allow(missing_docs)]
#[netabase::netabase_definition_module(ChatDefinition, ChatKeys)]
pub mod chat {
    use netabase::NetabaseModel;

    /// A chat message.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        /// Its id (the primary key).
        #[primary_key]
        pub id: u64,
        /// Who wrote it (indexed).
        #[secondary_key]
        pub author: String,
        /// Its text.
        pub text: String,
    }

    /// A chat user.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct User {
        /// The user name (the primary key).
        #[primary_key]
        pub name: String,
        /// A short description.
        pub bio: String,
    }
}

pub use chat::{ChatDefinition, Message, MessagePrimaryKey, User, UserPrimaryKey};

/// The DHT mode, as named on the command line and in the line formats (the `netabase`
/// command's own type).
pub use netabase_cli::protocol::ModeName;

/// One command line on standard input: a request number chosen by the caller (echoed in
/// the reply as `req`) and the command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the reply.
    pub req: u64,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

/// What a test can ask the node. Peer ids and addresses are strings (base58 peer ids,
/// multiaddrs); message ids name `Message` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// `put_record(message)`; replies [`PutReply`].
    Put {
        /// The message.
        message: Message,
    },
    /// `put_record(user)`; replies [`PutReply`].
    PutUser {
        /// The user.
        user: User,
    },
    /// `get_record(MessagePrimaryKey(id))`; replies `Option<`[`Found<Message>`]`>`.
    Get {
        /// The message id.
        id: u64,
    },
    /// `get_record(UserPrimaryKey(name))`; replies `Option<`[`Found<User>`]`>`.
    GetUser {
        /// The user name.
        name: String,
    },
    /// `remove_record(MessagePrimaryKey(id))`; replies the removed `Option<Message>`.
    Remove {
        /// The message id.
        id: u64,
    },
    /// The DHT record this node holds for `Message` `id` (`local_record`, no network);
    /// replies `Option<`[`LocalRecord`]`>`.
    Local {
        /// The message id.
        id: u64,
    },
    /// `query_local_records::<Message>(limit)`; replies `Vec<Message>`.
    LocalMessages {
        /// Most messages returned.
        limit: usize,
    },
    /// `start_providing(MessagePrimaryKey(id))`; replies [`ProvidingReply`].
    StartProviding {
        /// The message id.
        id: u64,
    },
    /// `stop_providing(MessagePrimaryKey(id))`; replies `null`.
    StopProviding {
        /// The message id.
        id: u64,
    },
    /// `get_providers(MessagePrimaryKey(id))`; replies `Vec<`[`ProviderReply`]`>`.
    GetProviders {
        /// The message id.
        id: u64,
    },
    /// `bootstrap()`; replies [`BootstrapReply`].
    Bootstrap,
    /// `add_address(peer, address)`; replies `null`.
    AddAddress {
        /// The peer id.
        peer: String,
        /// Its address.
        address: String,
    },
    /// `remove_address(peer, address)`; replies `null`.
    RemoveAddress {
        /// The peer id.
        peer: String,
        /// The address.
        address: String,
    },
    /// `remove_peer(peer)`; replies whether it was in the routing table.
    RemovePeer {
        /// The peer id.
        peer: String,
    },
    /// `set_mode(mode)`; replies `null`.
    SetMode {
        /// The new mode.
        mode: ModeName,
    },
    /// `get_mode()`; replies a [`ModeName`].
    GetMode,
    /// Connected peers and routing-table peers; replies [`PeersReply`].
    Peers,
    /// The node's counters; replies [`StatsReply`].
    Stats,
    /// `create_cluster(members)` (peer ids; this node is added if missing); replies the new
    /// cluster's id, 32 hex digits.
    CreateCluster {
        /// The voters.
        members: Vec<String>,
    },
    /// `join_cluster(cluster, members)`; replies `null` (a node the list does not name
    /// replies once a member has added it).
    JoinCluster {
        /// The cluster's id, 32 hex digits.
        cluster: String,
        /// The first voters, as every first member was given them, or the current members
        /// for a node that joins later.
        members: Vec<String>,
    },
    /// `add_member(peer)`; replies [`ConsensusReply`]`<u64>` (the first slot of the
    /// configuration with it).
    AddMember {
        /// The new member's peer id.
        peer: String,
    },
    /// `remove_member(peer)`; replies [`ConsensusReply`]`<u64>`.
    RemoveMember {
        /// The member's peer id.
        peer: String,
    },
    /// `replace_member(old, new)`; replies [`ConsensusReply`]`<u64>`.
    ReplaceMember {
        /// The voter to replace.
        old: String,
        /// Its replacement.
        new: String,
    },
    /// `cluster_status()`; replies `Option<`[`ClusterStatusReply`]`>`.
    ClusterStatus,
    /// `put_record_consensus(message)`; replies [`ConsensusReply`]`<`[`ConsensusWriteReply`]`>`.
    ConsensusPut {
        /// The message.
        message: Message,
    },
    /// `remove_record_consensus(MessagePrimaryKey(id))`; replies
    /// [`ConsensusReply`]`<`[`ConsensusWriteReply`]`>`.
    ConsensusRemove {
        /// The message id.
        id: u64,
    },
    /// `compare_and_set_consensus(MessagePrimaryKey(id), expected, new)`; replies
    /// [`ConsensusReply`]`<`[`CasReply`]`>`.
    ConsensusCas {
        /// The message id.
        id: u64,
        /// The message the record must hold (`None`: absent).
        expected: Option<Message>,
        /// The message to set (`None`: remove).
        new: Option<Message>,
    },
    /// `get_record_consensus(MessagePrimaryKey(id), level)`; replies
    /// [`ConsensusReply`]`<Option<`[`ConsensusFound`]`>>`.
    ConsensusGet {
        /// The message id.
        id: u64,
        /// How fresh the read must be.
        level: ReadLevelName,
    },
    /// `consensus_entry_status(entry)`; replies [`ConsensusReply`]`<`[`EntryStatusReply`]`>`.
    ConsensusEntryStatus {
        /// The entry, as a write's reply or an indeterminate outcome named it.
        entry: EntryRef,
    },
    /// `stop_swarm()`; replies `null` once stopped (after the `stopped` event), then the
    /// process exits. The end of standard input does the same without a reply.
    Shutdown,
}

/// One line on standard output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    /// The node started; always the first line of the process that is not an event.
    Ready {
        /// The node's peer id.
        peer_id: String,
        /// The addresses it listens on.
        listen_addresses: Vec<String>,
        /// The Kademlia protocol names it speaks.
        protocol_names: Vec<String>,
        /// The async runtime it runs on.
        runtime: String,
    },
    /// The answer to request `req`.
    Reply {
        /// The request's number.
        req: u64,
        /// Whether the operation succeeded.
        ok: bool,
        /// The operation's result (when `ok`).
        #[serde(default)]
        result: serde_json::Value,
        /// The error, displayed (when not `ok`).
        #[serde(default)]
        error: Option<String>,
    },
    /// A line on standard input that is not a valid request.
    Invalid {
        /// Why.
        error: String,
    },
    /// An event of the node.
    Event {
        /// The event.
        event: Event,
    },
}

/// The reply to [`Command::Put`] and [`Command::PutUser`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReply {
    /// The record's DHT key, hex.
    pub key: String,
    /// The peers that stored it.
    pub stored_at: Vec<String>,
    /// Why the put fell short of its quorum, if it did.
    pub quorum_error: Option<String>,
    /// The newer version a peer answered with, if the put lost to one.
    #[serde(default)]
    pub superseded_by: Option<Version>,
}

/// A record version: its writer, its timestamp, whether it is a removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The peer that wrote it.
    pub origin: String,
    /// The writer's hybrid logical clock timestamp.
    pub timestamp: u64,
    /// Whether it is a tombstone (a removal).
    pub removed: bool,
}

/// The reply to [`Command::Local`]: the DHT record as this node stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRecord {
    /// Its version.
    pub version: Version,
    /// The typed value (`None` for a tombstone).
    pub record: Option<Message>,
    /// The peer that publishes it (`None`: held for another peer).
    pub publisher: Option<String>,
    /// When it expires, in microseconds since the Unix epoch (`None`: never).
    pub expires: Option<u64>,
}

/// A record found by [`Command::Get`] or [`Command::GetUser`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found<M> {
    /// The typed value.
    pub record: M,
    /// The peer it came from; `None`: the node's own DHT store.
    pub source: Option<String>,
    /// The peer that wrote it.
    pub origin: String,
    /// The writer's timestamp.
    pub timestamp: u64,
}

/// The reply to [`Command::StartProviding`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvidingReply {
    /// The key, hex.
    pub key: String,
    /// The peers the announcement reached.
    pub announced_to: Vec<String>,
    /// Why no peer was reached, if none was.
    pub error: Option<String>,
}

/// One provider in the reply to [`Command::GetProviders`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderReply {
    /// The providing peer.
    pub peer: String,
    /// Its announced addresses.
    pub addresses: Vec<String>,
}

/// The reply to [`Command::Bootstrap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapReply {
    /// Peers in the routing table afterwards.
    pub routing_table_size: usize,
}

/// The reply to [`Command::Peers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersReply {
    /// Peers with an open connection.
    pub connected: Vec<String>,
    /// Peers in the routing table.
    pub routing_table: Vec<String>,
}

/// How fresh a consensus read must be (`ReadLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadLevelName {
    /// Sees every write acknowledged before the read began.
    Linearizable,
    /// Linearizable through the leader's lease.
    Lease,
    /// This member's applied state, possibly stale.
    Local,
}

/// A consensus member's role (`Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    /// Follows a leader or waits for one.
    Follower,
    /// Gathers promises.
    Candidate,
    /// Leads.
    Leader,
}

/// A log position: the slot and the index in its batch (a consensus record's version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    /// The slot.
    pub slot: u64,
    /// The index in the slot's batch.
    pub index: u32,
}

/// A log entry's id: its proposer and the proposer's sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntryRef {
    /// The proposing member's peer id.
    pub proposer: String,
    /// Its sequence number.
    pub seq: u64,
}

/// The outcome of a consensus command, by kind: what a caller does next differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsensusReply<T> {
    /// Done, with the result.
    Done(T),
    /// A write's entry was not applied in time: it may still be applied, or never
    /// (`ConsensusError::Indeterminate`).
    Indeterminate(EntryRef),
    /// Refused before anything was written or read: no cluster, a full queue, an entry too
    /// large, a read no leader confirmed in time (`ConsensusError` other than
    /// `Indeterminate`). The text says why.
    Refused(String),
    /// Any other error (the node stopping, a decoding failure): the outcome of a write is
    /// unknown. The text says what.
    Failed(String),
}

impl<T> ConsensusReply<T> {
    /// The result, if done.
    pub fn done(self) -> Option<T> {
        match self {
            ConsensusReply::Done(t) => Some(t),
            _ => None,
        }
    }
}

/// The result of [`Command::ConsensusPut`] and [`Command::ConsensusRemove`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusWriteReply {
    /// The entry's id.
    pub entry: EntryRef,
    /// Where it landed: the record's version.
    pub position: LogPosition,
}

/// The result of [`Command::ConsensusCas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasReply {
    /// Whether the record held the expected value and was set.
    pub swapped: bool,
    /// Where the entry landed.
    pub position: LogPosition,
}

/// A record found by [`Command::ConsensusGet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusFound {
    /// The message.
    pub record: Message,
    /// The position that wrote it.
    pub position: LogPosition,
}

/// The result of [`Command::ConsensusEntryStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatusReply {
    /// Applied, with the state's answer, hex (empty if forgotten).
    Applied(String),
    /// Proposed here and neither applied nor given up yet.
    Pending,
    /// Not known to be applied.
    Unknown,
}

/// The reply to [`Command::ClusterStatus`]: the node's view of its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusReply {
    /// The cluster's id, 32 hex digits.
    pub cluster: String,
    /// The voters.
    pub members: Vec<String>,
    /// The learners (added, not promoted yet).
    #[serde(default)]
    pub learners: Vec<String>,
    /// This node's role.
    pub role: RoleName,
    /// The leader it follows or is.
    pub leader: Option<String>,
    /// The highest ballot round seen.
    pub round: u64,
    /// Every slot up to here is known chosen.
    pub committed: u64,
    /// Every slot up to here is applied.
    pub applied: u64,
    /// Elections this member started.
    pub elections: u64,
    /// Elections it won.
    pub terms_led: u64,
    /// Entries applied that were duplicates of an earlier application.
    pub dedup_hits: u64,
    /// Catch-up answers it sent.
    pub catch_ups: u64,
}

/// The reply to [`Command::Stats`]: the Kademlia core's counters and the carrier's (the
/// counters of the `netabase` command's stats).
pub use netabase_cli::protocol::NodeCounters as StatsReply;

/// An event of the node ([`NetabaseEvent`] with peer ids, addresses and keys as strings;
/// keys are hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The swarm started.
    Started {
        /// The local peer id.
        peer: String,
    },
    /// The swarm stopped.
    Stopped,
    /// A new listen address.
    ListenAddressAdded {
        /// The address.
        address: String,
    },
    /// A listen address went away.
    ListenAddressExpired {
        /// The address.
        address: String,
    },
    /// mDNS found a peer.
    PeerDiscovered {
        /// The peer.
        peer: String,
        /// Its address.
        address: String,
    },
    /// An mDNS announcement expired.
    PeerExpired {
        /// The peer.
        peer: String,
        /// Its address.
        address: String,
    },
    /// The first connection to a peer opened.
    PeerConnected {
        /// The peer.
        peer: String,
        /// The connection's remote address.
        address: String,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: String,
    },
    /// Identify told what a peer is.
    PeerIdentified {
        /// The peer.
        peer: String,
        /// Whether it serves this node's DHT protocol.
        serves_dht: bool,
        /// Its listen addresses.
        listen_addresses: Vec<String>,
    },
    /// A peer entered the routing table.
    RoutingTablePeerAdded {
        /// The peer.
        peer: String,
    },
    /// A peer left the routing table.
    RoutingTablePeerRemoved {
        /// The peer.
        peer: String,
    },
    /// A remote peer stored a record here.
    RecordStored {
        /// The record's key, hex.
        key: String,
        /// The sender.
        from: String,
    },
    /// A newer version of a record this node holds, learned from a peer (in a get's or a
    /// put's answer), replaced the local copy.
    RecordUpdated {
        /// The record's key, hex.
        key: String,
        /// The peer whose copy was newer.
        from: String,
    },
    /// The expiry sweep removed this many expired records or provider records.
    Expired {
        /// How many.
        count: usize,
    },
    /// A remote peer announced itself as provider here.
    ProviderAdded {
        /// The key, hex.
        key: String,
        /// The provider.
        provider: String,
    },
    /// A query started.
    QueryStarted {
        /// Its id.
        id: u64,
        /// What it does (`get_record`, `put_record`, ...).
        query: String,
    },
    /// A query finished.
    QueryFinished {
        /// Its id.
        id: u64,
        /// What it did.
        query: String,
        /// Whether it succeeded.
        success: bool,
    },
    /// The DHT mode changed.
    ModeChanged {
        /// The new mode.
        mode: ModeName,
    },
    /// The node refused a peer's request.
    InboundRejected {
        /// The peer.
        peer: String,
        /// The request's kind (`PutValue`, `AddProvider`, ...).
        request: String,
        /// Why.
        reason: String,
    },
    /// A record in a peer's answer failed validation.
    InvalidRecord {
        /// The peer.
        peer: String,
        /// The key, hex.
        key: String,
        /// Why.
        reason: String,
    },
    /// A peer's stream failed before it delivered a request.
    InboundStreamFailed {
        /// The peer.
        peer: String,
        /// What went wrong.
        error: String,
    },
    /// The consensus leader this node follows changed (`None`: an election is under way).
    ConsensusLeader {
        /// The leader.
        leader: Option<String>,
        /// Its ballot's round.
        round: u64,
    },
    /// A membership change was applied: from slot `from` on, `voters` decide.
    ConsensusConfiguration {
        /// The first slot of the configuration.
        from: u64,
        /// Its voters.
        voters: Vec<String>,
        /// Its learners.
        learners: Vec<String>,
    },
    /// The test node's event subscription fell behind and missed events.
    Lagged {
        /// How many.
        missed: u64,
    },
    /// An event this format does not know yet (debug text).
    Other {
        /// The event, debug-formatted.
        debug: String,
    },
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn query_name(kind: QueryKind) -> String {
    match kind {
        QueryKind::GetRecord => "get_record",
        QueryKind::PutRecord => "put_record",
        QueryKind::StartProviding => "start_providing",
        QueryKind::GetProviders => "get_providers",
        QueryKind::Bootstrap => "bootstrap",
        QueryKind::Lookup => "lookup",
    }
    .to_string()
}

impl From<&NetabaseEvent> for Event {
    fn from(event: &NetabaseEvent) -> Self {
        match event {
            NetabaseEvent::Started { peer } => Event::Started {
                peer: peer.to_string(),
            },
            NetabaseEvent::Stopped => Event::Stopped,
            NetabaseEvent::ListenAddressAdded { address } => Event::ListenAddressAdded {
                address: address.to_string(),
            },
            NetabaseEvent::ListenAddressExpired { address } => Event::ListenAddressExpired {
                address: address.to_string(),
            },
            NetabaseEvent::PeerDiscovered { peer, address } => Event::PeerDiscovered {
                peer: peer.to_string(),
                address: address.to_string(),
            },
            NetabaseEvent::PeerExpired { peer, address } => Event::PeerExpired {
                peer: peer.to_string(),
                address: address.to_string(),
            },
            NetabaseEvent::PeerConnected { peer, address } => Event::PeerConnected {
                peer: peer.to_string(),
                address: address.to_string(),
            },
            NetabaseEvent::PeerDisconnected { peer } => Event::PeerDisconnected {
                peer: peer.to_string(),
            },
            NetabaseEvent::PeerIdentified {
                peer,
                serves_dht,
                listen_addresses,
            } => Event::PeerIdentified {
                peer: peer.to_string(),
                serves_dht: *serves_dht,
                listen_addresses: listen_addresses.iter().map(ToString::to_string).collect(),
            },
            NetabaseEvent::RoutingTablePeerAdded { peer } => Event::RoutingTablePeerAdded {
                peer: peer.to_string(),
            },
            NetabaseEvent::RoutingTablePeerRemoved { peer } => Event::RoutingTablePeerRemoved {
                peer: peer.to_string(),
            },
            NetabaseEvent::RecordStored { key, from } => Event::RecordStored {
                key: hex(key.as_bytes()),
                from: from.to_string(),
            },
            NetabaseEvent::RecordUpdated { key, from } => Event::RecordUpdated {
                key: hex(key.as_bytes()),
                from: from.to_string(),
            },
            NetabaseEvent::Expired { count } => Event::Expired { count: *count },
            NetabaseEvent::ProviderAdded { key, provider } => Event::ProviderAdded {
                key: hex(key.as_bytes()),
                provider: provider.to_string(),
            },
            NetabaseEvent::QueryStarted { id, kind } => Event::QueryStarted {
                id: *id,
                query: query_name(*kind),
            },
            NetabaseEvent::QueryFinished {
                id, kind, success, ..
            } => Event::QueryFinished {
                id: *id,
                query: query_name(*kind),
                success: *success,
            },
            NetabaseEvent::ConsensusLeader { leader, round } => Event::ConsensusLeader {
                leader: leader.map(|p| p.to_string()),
                round: *round,
            },
            NetabaseEvent::ConsensusConfiguration {
                from,
                voters,
                learners,
            } => Event::ConsensusConfiguration {
                from: *from,
                voters: voters.iter().map(ToString::to_string).collect(),
                learners: learners.iter().map(ToString::to_string).collect(),
            },
            NetabaseEvent::ModeChanged { mode } => Event::ModeChanged {
                mode: netabase_cli::protocol::mode_name(*mode),
            },
            NetabaseEvent::InboundRejected { peer, kind, reason } => Event::InboundRejected {
                peer: peer.to_string(),
                request: format!("{kind:?}"),
                reason: reason.clone(),
            },
            NetabaseEvent::InvalidRecord { peer, key, reason } => Event::InvalidRecord {
                peer: peer.to_string(),
                key: hex(key.as_bytes()),
                reason: reason.clone(),
            },
            NetabaseEvent::InboundStreamFailed { peer, error } => Event::InboundStreamFailed {
                peer: peer.to_string(),
                error: error.clone(),
            },
            other => Event::Other {
                debug: format!("{other:?}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_outputs_have_the_documented_shape() {
        let line = r#"{"req":1,"cmd":"put","message":{"id":7,"author":"ada","text":"hello"}}"#;
        let request: Request = serde_json::from_str(line).unwrap();
        assert_eq!(
            request,
            Request {
                req: 1,
                command: Command::Put {
                    message: Message {
                        id: 7,
                        author: "ada".into(),
                        text: "hello".into()
                    }
                }
            }
        );
        assert_eq!(serde_json::to_string(&request).unwrap(), line);
        let get: Request = serde_json::from_str(r#"{"req":2,"cmd":"get","id":9}"#).unwrap();
        assert_eq!(get.command, Command::Get { id: 9 });
        let bootstrap: Request = serde_json::from_str(r#"{"req":3,"cmd":"bootstrap"}"#).unwrap();
        assert_eq!(bootstrap.command, Command::Bootstrap);
        assert!(serde_json::from_str::<Request>(r#"{"req":3,"cmd":"fly"}"#).is_err());

        let event = Output::Event {
            event: Event::ModeChanged {
                mode: ModeName::Client,
            },
        };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(
            text,
            r#"{"type":"event","event":{"kind":"mode_changed","mode":"client"}}"#
        );
        assert_eq!(serde_json::from_str::<Output>(&text).unwrap(), event);
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }

    #[test]
    fn consensus_requests_and_replies_have_a_stable_shape() {
        let line = r#"{"req":4,"cmd":"consensus_get","id":3,"level":"linearizable"}"#;
        let request: Request = serde_json::from_str(line).unwrap();
        assert_eq!(
            request.command,
            Command::ConsensusGet {
                id: 3,
                level: ReadLevelName::Linearizable
            }
        );
        assert_eq!(serde_json::to_string(&request).unwrap(), line);
        let cas: Request = serde_json::from_str(
            r#"{"req":5,"cmd":"consensus_cas","id":1,"expected":null,"new":{"id":1,"author":"a","text":"t"}}"#,
        )
        .unwrap();
        assert!(matches!(
            cas.command,
            Command::ConsensusCas {
                expected: None,
                new: Some(_),
                ..
            }
        ));

        let done = ConsensusReply::Done(CasReply {
            swapped: true,
            position: LogPosition { slot: 4, index: 1 },
        });
        let text = serde_json::to_string(&done).unwrap();
        assert_eq!(
            text,
            r#"{"done":{"swapped":true,"position":{"slot":4,"index":1}}}"#
        );
        assert_eq!(
            serde_json::from_str::<ConsensusReply<CasReply>>(&text).unwrap(),
            done
        );
        let unknown: ConsensusReply<CasReply> = ConsensusReply::Indeterminate(EntryRef {
            proposer: "12D3".into(),
            seq: 9,
        });
        assert_eq!(
            serde_json::to_string(&unknown).unwrap(),
            r#"{"indeterminate":{"proposer":"12D3","seq":9}}"#
        );
        assert_eq!(unknown.done(), None);
        let refused: ConsensusReply<()> = ConsensusReply::Refused("busy".into());
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"refused":"busy"}"#
        );
    }
}
