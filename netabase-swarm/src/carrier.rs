//! The network behaviour that carries the core's Kademlia messages over libp2p streams.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, DialError, DialFailure, FromSwarm,
    NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use netabase_core::{Request, RequestFailure, Response};

use crate::guard::{Guard, InboundLimits, Refusal, Source, Verdict};
use crate::handler::{Handler, HandlerIn, HandlerOut, Shared};
use crate::protocol::StreamError;

/// What the carrier reports to the driver.
#[derive(Debug)]
pub(crate) enum CarrierEvent {
    /// A peer sent a request; answer it with [`KadCarrier::respond`].
    Request {
        /// The sender.
        peer: PeerId,
        /// The inbound request's id.
        id: u64,
        /// The request.
        request: Request,
    },
    /// Outbound request `id` ended.
    Outcome {
        /// The request's id.
        id: u64,
        /// The answer (`None` for a one-way request that was delivered) or the failure.
        result: Result<Option<Response>, RequestFailure>,
    },
    /// An inbound stream of `peer` failed before it delivered a request (malformed or
    /// oversized message, timeout, too many streams).
    InboundFailed {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        error: StreamError,
    },
    /// The [inbound limits](crate::InboundLimits) refused a connection (`peer` unknown
    /// before the handshake) or a request, which was closed without an answer.
    Refused {
        /// The peer, when known.
        peer: Option<PeerId>,
        /// Why.
        refusal: Refusal,
    },
}

/// Carries Kademlia requests and answers: one stream per request, negotiated under the
/// configured protocol name, framed and bounded by the core's codec. In client mode it
/// offers no inbound protocol, so peers (and their identify) see that this node does not
/// serve the DHT.
pub(crate) struct KadCarrier {
    shared: Shared,
    /// Established connections per peer.
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Requests waiting for a connection to their peer.
    waiting: HashMap<PeerId, Vec<(u64, Request)>>,
    /// Outbound requests handed to a connection.
    in_flight: HashMap<u64, (PeerId, ConnectionId)>,
    /// Inbound requests awaiting the node's answer, with the source address they count
    /// against.
    inbound: HashMap<u64, (PeerId, ConnectionId, Option<Source>)>,
    guard: Guard,
    events: VecDeque<ToSwarm<CarrierEvent, HandlerIn>>,
    waker: Option<Waker>,
}

impl KadCarrier {
    pub(crate) fn new(shared: Shared, limits: InboundLimits) -> Self {
        KadCarrier {
            shared,
            guard: Guard::new(limits),
            connections: HashMap::new(),
            waiting: HashMap::new(),
            in_flight: HashMap::new(),
            inbound: HashMap::new(),
            events: VecDeque::new(),
            waker: None,
        }
    }

    /// Serves (server mode) or refuses (client mode) inbound streams, on existing
    /// connections too.
    pub(crate) fn set_serving(&mut self, serving: bool) {
        if self.shared.serving.swap(serving, Ordering::Relaxed) == serving {
            return;
        }
        // Connections recompute their protocols only when polled: wake every one.
        let all: Vec<(PeerId, ConnectionId)> = self
            .connections
            .iter()
            .flat_map(|(peer, conns)| conns.iter().map(move |c| (*peer, *c)))
            .collect();
        for (peer, conn) in all {
            self.push(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(conn),
                event: HandlerIn::Refresh,
            });
        }
    }

    fn push(&mut self, event: ToSwarm<CarrierEvent, HandlerIn>) {
        self.events.push_back(event);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Sends `request` to `peer`, dialling `addrs` if there is no connection.
    pub(crate) fn send_request(
        &mut self,
        id: u64,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: Request,
    ) {
        if let Some(&conn) = self.connections.get(&peer).and_then(|c| c.last()) {
            self.in_flight.insert(id, (peer, conn));
            self.push(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(conn),
                event: HandlerIn::Send { id, request },
            });
            return;
        }
        self.waiting.entry(peer).or_default().push((id, request));
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        self.push(ToSwarm::Dial { opts });
    }

    /// Answers inbound request `id`; `None` closes it without an answer.
    pub(crate) fn respond(&mut self, id: u64, response: Option<Response>) {
        if let Some((peer, conn, source)) = self.inbound.remove(&id) {
            self.guard.answered(source);
            self.push(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(conn),
                event: HandlerIn::Respond { id, response },
            });
        }
    }

    fn fail_waiting(&mut self, peer: &PeerId, failure: RequestFailure) {
        for (id, _) in self.waiting.remove(peer).unwrap_or_default() {
            self.push(ToSwarm::GenerateEvent(CarrierEvent::Outcome {
                id,
                result: Err(failure.clone()),
            }));
        }
    }

    fn on_established(&mut self, peer: PeerId, conn: ConnectionId) {
        self.connections.entry(peer).or_default().push(conn);
        for (id, request) in self.waiting.remove(&peer).unwrap_or_default() {
            self.in_flight.insert(id, (peer, conn));
            self.push(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(conn),
                event: HandlerIn::Send { id, request },
            });
        }
    }

    fn on_closed(&mut self, closed: ConnectionClosed<'_>) {
        let (peer, conn) = (closed.peer_id, closed.connection_id);
        if let Some(list) = self.connections.get_mut(&peer) {
            list.retain(|c| *c != conn);
            if list.is_empty() {
                self.connections.remove(&peer);
            }
        }
        let lost: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (_, c))| *c == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.in_flight.remove(&id);
            self.push(ToSwarm::GenerateEvent(CarrierEvent::Outcome {
                id,
                result: Err(RequestFailure::Io),
            }));
        }
        let guard = &mut self.guard;
        self.inbound.retain(|_, (_, c, source)| {
            let keep = *c != conn;
            if !keep {
                guard.answered(*source);
            }
            keep
        });
        self.guard.release(conn);
    }

    fn refuse(&mut self, peer: Option<PeerId>, refusal: Refusal) -> ConnectionDenied {
        self.push(ToSwarm::GenerateEvent(CarrierEvent::Refused {
            peer,
            refusal,
        }));
        ConnectionDenied::new(refusal)
    }

    fn on_dial_failure(&mut self, failure: DialFailure<'_>) {
        let Some(peer) = failure.peer_id else {
            return;
        };
        if matches!(failure.error, DialError::DialPeerConditionFalse(_))
            || self.connections.contains_key(&peer)
        {
            // Another dial is under way (its outcome decides), or a connection exists.
            return;
        }
        self.fail_waiting(&peer, RequestFailure::Dial);
    }

    fn handler(&self) -> Handler {
        Handler::new(self.shared.clone())
    }
}

impl NetworkBehaviour for KadCarrier {
    type ConnectionHandler = Handler;
    type ToSwarm = CarrierEvent;

    fn handle_pending_inbound_connection(
        &mut self,
        conn: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.guard
            .admit_pending(conn, remote, Instant::now())
            .map_err(|refusal| self.refuse(None, refusal))
    }

    fn handle_established_inbound_connection(
        &mut self,
        conn: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.guard
            .admit_established(conn, remote)
            .map_err(|refusal| self.refuse(Some(peer), refusal))?;
        Ok(self.handler())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(e) => self.on_established(e.peer_id, e.connection_id),
            FromSwarm::ConnectionClosed(e) => self.on_closed(e),
            FromSwarm::DialFailure(e) => self.on_dial_failure(e),
            FromSwarm::ListenFailure(e) => self.guard.release(e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let event = match event {
            HandlerOut::Request { id, request, bytes } => {
                let answer = request.expects_response();
                match self
                    .guard
                    .admit_request(peer, conn, bytes, answer, Instant::now())
                {
                    Ok(source) => {
                        if answer {
                            self.inbound.insert(id, (peer, conn, source));
                        }
                        CarrierEvent::Request { peer, id, request }
                    }
                    Err(verdict) => {
                        let refusal = match verdict {
                            Verdict::Refuse(refusal) => refusal,
                            Verdict::Close(refusal) => {
                                self.push(ToSwarm::CloseConnection {
                                    peer_id: peer,
                                    connection: libp2p::swarm::CloseConnection::One(conn),
                                });
                                refusal
                            }
                        };
                        if answer {
                            // Closed without an answer, as a refused request is.
                            self.push(ToSwarm::NotifyHandler {
                                peer_id: peer,
                                handler: NotifyHandler::One(conn),
                                event: HandlerIn::Respond { id, response: None },
                            });
                        }
                        CarrierEvent::Refused {
                            peer: Some(peer),
                            refusal,
                        }
                    }
                }
            }
            HandlerOut::Outcome { id, result, .. } => {
                if self.in_flight.remove(&id).is_none() {
                    return;
                }
                CarrierEvent::Outcome { id, result }
            }
            HandlerOut::InboundFailed { error } => CarrierEvent::InboundFailed { peer, error },
        };
        self.push(ToSwarm::GenerateEvent(event));
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<CarrierEvent, THandlerInEvent<Self>>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
