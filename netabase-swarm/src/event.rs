//! The events a node broadcasts to its subscribers.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use libp2p::{Multiaddr, PeerId};
use netabase_core::{MessageKind, Mode, QueryStats, RecordKey};

/// The kind of a query the node ran for an API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// `get_record`.
    GetRecord,
    /// `put_record`.
    PutRecord,
    /// `start_providing`.
    StartProviding,
    /// `get_providers`.
    GetProviders,
    /// `bootstrap`.
    Bootstrap,
    /// A lookup of the closest peers or of one peer.
    Lookup,
}

/// Something that happened in a node, broadcast to every subscriber
/// ([`Netabase::subscribe_to_broadcasts`](crate::Netabase::subscribe_to_broadcasts)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetabaseEvent {
    /// The swarm started; its peer id.
    Started {
        /// The local peer id.
        peer: PeerId,
    },
    /// The swarm stopped.
    Stopped,
    /// A membership change of this node's cluster was applied here: from slot `from` on,
    /// `voters` decide and `learners` catch up.
    ConsensusConfiguration {
        /// The first slot of the configuration.
        from: u64,
        /// Its voters.
        voters: Vec<PeerId>,
        /// Its learners (new members not promoted yet).
        learners: Vec<PeerId>,
    },
    /// This node was behind slots the other members had compacted away and installed a
    /// snapshot of the replicated state: it is applied through `slot` now, and the entries
    /// before it are not in its applied-entry feed.
    ConsensusSnapshotInstalled {
        /// The slot the state is applied through.
        slot: u64,
    },
    /// The consensus leader this node follows changed (`None`: no leader is known, an
    /// election is under way).
    ConsensusLeader {
        /// The leader.
        leader: Option<PeerId>,
        /// Its ballot's round.
        round: u64,
    },
    /// The node listens on a new address.
    ListenAddressAdded {
        /// The address.
        address: Multiaddr,
    },
    /// The node no longer listens on an address.
    ListenAddressExpired {
        /// The address.
        address: Multiaddr,
    },
    /// mDNS found a peer on the local network.
    PeerDiscovered {
        /// The peer.
        peer: PeerId,
        /// Its address.
        address: Multiaddr,
    },
    /// An mDNS announcement expired.
    PeerExpired {
        /// The peer.
        peer: PeerId,
        /// Its address.
        address: Multiaddr,
    },
    /// The first connection to a peer opened.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// The remote address of the connection.
        address: Multiaddr,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// Identify told what a peer is.
    PeerIdentified {
        /// The peer.
        peer: PeerId,
        /// Whether it serves this node's DHT protocol.
        serves_dht: bool,
        /// The addresses it listens on.
        listen_addresses: Vec<Multiaddr>,
    },
    /// A peer entered the routing table.
    RoutingTablePeerAdded {
        /// The peer.
        peer: PeerId,
    },
    /// A peer left the routing table.
    RoutingTablePeerRemoved {
        /// The peer.
        peer: PeerId,
    },
    /// A remote peer stored a record here.
    RecordStored {
        /// The record's DHT key.
        key: RecordKey,
        /// The peer that sent it.
        from: PeerId,
    },
    /// A newer version of a record this node holds, learned from `from` (in a get's
    /// answer or a put's), replaced the local copy in the DHT store.
    RecordUpdated {
        /// The record's DHT key.
        key: RecordKey,
        /// The peer whose copy was newer.
        from: PeerId,
    },
    /// The expiry sweep removed records or provider records that had expired (tombstones
    /// past their horizon among them).
    Expired {
        /// How many it removed.
        count: usize,
    },
    /// A remote peer announced itself here as provider of a key.
    ProviderAdded {
        /// The key.
        key: RecordKey,
        /// The provider.
        provider: PeerId,
    },
    /// A query started for an API call.
    QueryStarted {
        /// The query's id.
        id: u64,
        /// What it does.
        kind: QueryKind,
    },
    /// A query's request was answered or failed and the query goes on.
    QueryProgress {
        /// The query's id.
        id: u64,
        /// What it does.
        kind: QueryKind,
        /// Its counters so far (`finished` is the time of this step).
        stats: QueryStats,
    },
    /// A query finished.
    QueryFinished {
        /// The query's id.
        id: u64,
        /// What it did.
        kind: QueryKind,
        /// Whether it succeeded.
        success: bool,
        /// Its counters (requests, answers, failures, hops, start and end).
        stats: QueryStats,
    },
    /// The DHT mode changed.
    ModeChanged {
        /// The new mode.
        mode: Mode,
    },
    /// The node refused a peer's request (client mode, an invalid or oversized record,
    /// a foreign provider, a failing store).
    InboundRejected {
        /// The peer.
        peer: PeerId,
        /// The request's kind.
        kind: MessageKind,
        /// Why.
        reason: String,
    },
    /// A record in a peer's answer failed validation and was dropped.
    InvalidRecord {
        /// The peer.
        peer: PeerId,
        /// The record's key.
        key: RecordKey,
        /// Why it was refused.
        reason: String,
    },
    /// A peer's stream failed before it delivered a request: a malformed or oversized
    /// message, a timeout, too many streams.
    InboundStreamFailed {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        error: String,
    },
}

/// Why [`EventSubscriber::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The subscriber fell behind and this many of the oldest events were dropped for it;
    /// the next call returns the oldest event still kept.
    #[error("the subscriber lagged behind and missed {0} events")]
    Lagged(u64),
    /// The node was dropped: no more events will come.
    #[error("the node is gone")]
    Closed,
}

/// A subscription to a node's events. Every subscriber sees every event from the moment
/// it subscribed; one that falls more than the configured capacity behind loses the
/// oldest events and is told so with [`EventError::Lagged`]. A slow subscriber never
/// slows the node down.
///
/// It is also a [`Stream`] of `Result<NetabaseEvent, EventError>`.
#[derive(Debug)]
pub struct EventSubscriber {
    pub(crate) rx: async_broadcast::Receiver<NetabaseEvent>,
}

impl EventSubscriber {
    /// The next event.
    pub async fn recv(&mut self) -> Result<NetabaseEvent, EventError> {
        map(self.rx.recv_direct().await)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Result<NetabaseEvent, EventError>> {
        match self.rx.try_recv() {
            Ok(e) => Some(Ok(e)),
            Err(async_broadcast::TryRecvError::Overflowed(n)) => Some(Err(EventError::Lagged(n))),
            Err(async_broadcast::TryRecvError::Closed) => Some(Err(EventError::Closed)),
            Err(async_broadcast::TryRecvError::Empty) => None,
        }
    }

    /// How many events wait for this subscriber.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no event waits for this subscriber.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

fn map(r: Result<NetabaseEvent, async_broadcast::RecvError>) -> Result<NetabaseEvent, EventError> {
    r.map_err(|e| match e {
        async_broadcast::RecvError::Overflowed(n) => EventError::Lagged(n),
        async_broadcast::RecvError::Closed => EventError::Closed,
    })
}

impl Stream for EventSubscriber {
    type Item = Result<NetabaseEvent, EventError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // async-broadcast's own stream skips overflow notices; this one reports them.
        match Pin::new(&mut self.rx).poll_recv(cx) {
            Poll::Ready(None) | Poll::Ready(Some(Err(async_broadcast::RecvError::Closed))) => {
                Poll::Ready(None)
            }
            Poll::Ready(Some(r)) => Poll::Ready(Some(map(r))),
            Poll::Pending => Poll::Pending,
        }
    }
}
