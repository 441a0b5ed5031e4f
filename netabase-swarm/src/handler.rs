//! The connection handler of the Kademlia carrier: one stream per request, in both
//! directions.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::{BoxFuture, Either};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionHandler, ConnectionHandlerEvent, StreamUpgradeError, SubstreamProtocol,
};
use libp2p::{Stream, StreamProtocol};
use netabase_core::{Codec, Request, RequestFailure, Response};

use crate::protocol::{self, KadUpgrade, StreamError};
use crate::runtime::Sleep;

/// Settings shared by the carrier and all its handlers.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) protocol: StreamProtocol,
    pub(crate) codec: Codec,
    /// Whether inbound streams of the protocol are accepted (server mode).
    pub(crate) serving: Arc<AtomicBool>,
    /// Inbound request ids, unique across connections.
    pub(crate) next_inbound: Arc<AtomicU64>,
    /// Longest time one stream may take (negotiation, request and answer).
    pub(crate) stream_timeout: Duration,
    /// Most streams of the protocol per connection and direction.
    pub(crate) max_streams: usize,
    pub(crate) sleep: Sleep,
}

/// What the carrier asks a handler to do.
#[derive(Debug)]
pub(crate) enum HandlerIn {
    /// Open a stream and send a request.
    Send { id: u64, request: Request },
    /// Answer (or, with `None`, close without an answer) inbound request `id`.
    Respond { id: u64, response: Option<Response> },
    /// The mode changed: wake the connection so that it notices the changed inbound
    /// protocols (and identify tells the peer).
    Refresh,
}

/// What a handler tells the carrier.
#[derive(Debug)]
pub(crate) enum HandlerOut {
    /// A request of `bytes` arrived.
    Request {
        id: u64,
        request: Request,
        bytes: usize,
    },
    /// Outbound request `id` ended: its answer (`None` for one-way requests) or failure.
    Outcome {
        id: u64,
        result: Result<Option<Response>, RequestFailure>,
    },
    /// An inbound stream failed before a request could be handed over.
    InboundFailed { error: StreamError },
}

type Outbound = BoxFuture<'static, (u64, Result<Option<Response>, StreamError>)>;
type Inbound = BoxFuture<'static, Result<(u64, Request, usize, Stream), StreamError>>;
type Answer = BoxFuture<'static, Result<(), StreamError>>;

/// Runs `future` for at most `timeout`.
fn bounded<T: Send + 'static>(
    sleep: &Sleep,
    timeout: Duration,
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> BoxFuture<'static, Option<T>> {
    let timer = sleep(timeout);
    async move {
        match futures::future::select(Box::pin(future), timer).await {
            Either::Left((out, _)) => Some(out),
            Either::Right(((), _)) => None,
        }
    }
    .boxed()
}

pub(crate) struct Handler {
    shared: Shared,
    /// Requests waiting for a stream.
    queued: VecDeque<(u64, Request)>,
    /// Requests whose stream is being negotiated.
    negotiating: usize,
    outbound: FuturesUnordered<Outbound>,
    inbound: FuturesUnordered<Inbound>,
    /// Inbound streams waiting for the node's answer.
    awaiting: HashMap<u64, Stream>,
    answers: FuturesUnordered<Answer>,
    events: VecDeque<HandlerOut>,
    waker: Option<Waker>,
}

impl Handler {
    pub(crate) fn new(shared: Shared) -> Self {
        Handler {
            shared,
            queued: VecDeque::new(),
            negotiating: 0,
            outbound: FuturesUnordered::new(),
            inbound: FuturesUnordered::new(),
            awaiting: HashMap::new(),
            answers: FuturesUnordered::new(),
            events: VecDeque::new(),
            waker: None,
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn fail(&mut self, id: u64, failure: RequestFailure) {
        self.events.push_back(HandlerOut::Outcome {
            id,
            result: Err(failure),
        });
    }

    fn on_outbound_stream(&mut self, stream: Stream, (id, request): (u64, Request)) {
        self.negotiating = self.negotiating.saturating_sub(1);
        let codec = self.shared.codec;
        let future = bounded(
            &self.shared.sleep,
            self.shared.stream_timeout,
            protocol::send_request(stream, codec, request),
        );
        self.outbound.push(
            future
                .map(move |out| (id, out.unwrap_or(Err(StreamError::Timeout))))
                .boxed(),
        );
    }

    fn on_inbound_stream(&mut self, mut stream: Stream) {
        if self.inbound.len() + self.awaiting.len() >= self.shared.max_streams {
            self.events.push_back(HandlerOut::InboundFailed {
                error: StreamError::TooManyStreams,
            });
            // Dropping the stream resets it.
            return;
        }
        let codec = self.shared.codec;
        let next = Arc::clone(&self.shared.next_inbound);
        let future = bounded(&self.shared.sleep, self.shared.stream_timeout, async move {
            let (request, bytes) = protocol::read_request(&mut stream, &codec).await?;
            Ok((next.fetch_add(1, Ordering::Relaxed), request, bytes, stream))
        });
        self.inbound.push(
            future
                .map(|out| out.unwrap_or(Err(StreamError::Timeout)))
                .boxed(),
        );
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = HandlerIn;
    type ToBehaviour = HandlerOut;
    type InboundProtocol = KadUpgrade;
    type OutboundProtocol = KadUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = (u64, Request);

    fn listen_protocol(&self) -> SubstreamProtocol<KadUpgrade, ()> {
        let offered = self
            .shared
            .serving
            .load(Ordering::Relaxed)
            .then(|| self.shared.protocol.clone());
        SubstreamProtocol::new(KadUpgrade(offered), ()).with_timeout(self.shared.stream_timeout)
    }

    fn connection_keep_alive(&self) -> bool {
        !self.queued.is_empty()
            || self.negotiating > 0
            || !self.outbound.is_empty()
            || !self.inbound.is_empty()
            || !self.awaiting.is_empty()
            || !self.answers.is_empty()
    }

    fn on_behaviour_event(&mut self, event: HandlerIn) {
        match event {
            HandlerIn::Send { id, request } => self.queued.push_back((id, request)),
            HandlerIn::Respond { id, response } => {
                if let Some(stream) = self.awaiting.remove(&id) {
                    let codec = self.shared.codec;
                    let future = bounded(
                        &self.shared.sleep,
                        self.shared.stream_timeout,
                        protocol::send_response(stream, codec, response),
                    );
                    self.answers.push(
                        future
                            .map(|out| out.unwrap_or(Err(StreamError::Timeout)))
                            .boxed(),
                    );
                }
            }
            HandlerIn::Refresh => {}
        }
        self.wake();
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, KadUpgrade, KadUpgrade, (), (u64, Request)>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info,
            }) => self.on_outbound_stream(stream, info),
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => self.on_inbound_stream(stream),
            ConnectionEvent::DialUpgradeError(DialUpgradeError {
                info: (id, _),
                error,
            }) => {
                self.negotiating = self.negotiating.saturating_sub(1);
                let failure = match error {
                    StreamUpgradeError::NegotiationFailed => RequestFailure::UnsupportedProtocol,
                    StreamUpgradeError::Timeout | StreamUpgradeError::Io(_) => RequestFailure::Io,
                    StreamUpgradeError::Apply(never) => match never {},
                };
                self.fail(id, failure);
            }
            _ => {}
        }
        self.wake();
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<KadUpgrade, (u64, Request), HandlerOut>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
            }
            if let Poll::Ready(Some((id, result))) = self.outbound.poll_next_unpin(cx) {
                // The node only needs to know that the request failed; a malformed
                // answer and a broken stream are the same to it.
                let event = HandlerOut::Outcome {
                    id,
                    result: result.map_err(|_| RequestFailure::Io),
                };
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
            }
            if let Poll::Ready(Some(result)) = self.inbound.poll_next_unpin(cx) {
                match result {
                    Ok((id, request, bytes, stream)) => {
                        if request.expects_response() {
                            self.awaiting.insert(id, stream);
                        } else {
                            // One-way: close our side cleanly, which is the sender's
                            // acknowledgement.
                            self.answers.push(
                                protocol::send_response(stream, self.shared.codec, None).boxed(),
                            );
                        }
                        return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                            HandlerOut::Request { id, request, bytes },
                        ));
                    }
                    Err(StreamError::NoMessage) => continue,
                    Err(error) => {
                        return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                            HandlerOut::InboundFailed { error },
                        ));
                    }
                }
            }
            // Answers are fire-and-forget; a failed one is the requester's problem.
            if let Poll::Ready(Some(_)) = self.answers.poll_next_unpin(cx) {
                continue;
            }
            if self.negotiating + self.outbound.len() < self.shared.max_streams
                && let Some(info) = self.queued.pop_front()
            {
                self.negotiating += 1;
                let upgrade = KadUpgrade(Some(self.shared.protocol.clone()));
                return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(upgrade, info)
                        .with_timeout(self.shared.stream_timeout),
                });
            }
            self.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
    }
}
