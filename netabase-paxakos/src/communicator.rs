//! paxakos's `Communicator` over any request-response transport, and the serving side.
//!
//! [`NetCommunicator`] encodes each paxakos message as a [`Request`],
//! hands the bytes to a [`Transport`] (libp2p's request-response in the swarm, memory in
//! tests and the simulator), and decodes the answer into paxakos's vote types;
//! [`serve`] answers a request's bytes with the local node's
//! [`RequestHandler`].

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use paxakos::communicator::{AcceptanceFor, Committed, Communicator, Vote, VoteFor};
use paxakos::invocation::Invocation;
use paxakos::{
    AcceptError, CommitError, Condition, Conflict, NodeHandle, PrepareError, RequestHandler,
};

use crate::wire::{
    Accepted, Request, Response, Unavailable, WireError, decode_snapshot, encode_snapshot,
};
use crate::{KvInvocation, KvSnapshot, PaxakosEntry, PeerNode};

/// One request and its answer to a peer, as bytes.
pub trait Transport: Clone + Send + Sync + 'static {
    /// Why an exchange failed (the peer unreachable, the stream reset, a timeout).
    type Error: fmt::Debug + Send + Sync + 'static;

    /// Sends `request` to `to` and resolves to its answer.
    fn request(
        &self,
        to: libp2p_identity::PeerId,
        request: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, Self::Error>>;
}

/// Why a message to a peer brought no vote.
#[derive(Debug, thiserror::Error)]
pub enum CommunicatorError<E: fmt::Debug> {
    /// The exchange failed.
    #[error("the exchange failed: {0:?}")]
    Transport(E),
    /// The request or its answer is not a message.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The peer could not answer.
    #[error("the peer could not answer: {0}")]
    Unavailable(Unavailable),
    /// The peer abstains from promising: a lease it granted another leader binds it for
    /// this long. (Reported as a failed exchange rather than as paxakos's abstention:
    /// paxakos 0.13 panics when abstentions leave a prepare short of a quorum.)
    #[error("the peer is bound by a lease for {0:?}")]
    Abstained(Duration),
    /// The peer answered with a message that does not answer this request.
    #[error("the peer answered {0:?}, which does not answer the request")]
    Unexpected(Box<Response>),
}

/// The invocation of the key-value state over transport `T`.
pub type NetInvocation<T> = KvInvocation<CommunicatorError<<T as Transport>::Error>>;

/// A forwarded entry's round, answer and whether it was a duplicate.
pub type Forwarded = (u64, Vec<u8>, bool);

/// One peer's answer to one message, on its way.
type Reply<R, E> = BoxFuture<'static, Result<R, CommunicatorError<E>>>;

/// paxakos's `Communicator` over a [`Transport`].
#[derive(Clone, Debug)]
pub struct NetCommunicator<T> {
    transport: T,
}

impl<T: Transport> NetCommunicator<T> {
    /// A communicator sending over `transport`.
    pub fn new(transport: T) -> Self {
        NetCommunicator { transport }
    }

    /// Asks `to` to append `entry` (a follower forwarding a write to the leader) and
    /// resolves once it is applied there: with its round, its answer and whether it was a
    /// duplicate.
    pub fn forward(
        &self,
        to: libp2p_identity::PeerId,
        entry: PaxakosEntry,
    ) -> Reply<Forwarded, T::Error> {
        self.exchange(
            to,
            &Request::Append(entry).encode(),
            |answer| match answer {
                Response::Appended {
                    round,
                    response,
                    duplicate,
                } => Ok((round, response, duplicate)),
                other => Err(refusal(other)),
            },
        )
    }

    /// Asks `from` for a snapshot of its state.
    pub fn fetch_snapshot(&self, from: libp2p_identity::PeerId) -> Reply<KvSnapshot, T::Error> {
        self.exchange(from, &Request::Snapshot.encode(), |answer| match answer {
            Response::Snapshot(bytes) => Ok(decode_snapshot(&bytes)?),
            other => Err(refusal(other)),
        })
    }

    /// One exchange with `to` of the encoded request `bytes`, its answer turned into a
    /// result by `answer`.
    fn exchange<R: Send + 'static>(
        &self,
        to: libp2p_identity::PeerId,
        bytes: &Result<Vec<u8>, WireError>,
        answer: impl FnOnce(Response) -> Result<R, CommunicatorError<T::Error>> + Send + 'static,
    ) -> Reply<R, T::Error> {
        match bytes {
            Ok(bytes) => {
                let sent = self.transport.request(to, bytes.clone());
                async move {
                    let reply = sent.await.map_err(CommunicatorError::Transport)?;
                    answer(Response::decode(&reply)?)
                }
                .boxed()
            }
            Err(e) => futures::future::ready(Err(e.clone().into())).boxed(),
        }
    }

    /// One exchange with each receiver, its answer turned into a result by `answer`.
    fn each<'a, R: Send + 'static>(
        &self,
        receivers: &'a [PeerNode],
        request: &Request,
        answer: fn(Response) -> Result<R, CommunicatorError<T::Error>>,
    ) -> Vec<(&'a PeerNode, Reply<R, T::Error>)> {
        let bytes = request.encode();
        receivers
            .iter()
            .map(|r| (r, self.exchange(r.0, &bytes, answer)))
            .collect()
    }
}

fn conflict(response: Response) -> Result<Conflict<u32, PaxakosEntry>, Response> {
    match response {
        Response::Supplanted { coord } => Ok(Conflict::Supplanted { coord_num: coord }),
        Response::Converged { coord, entry } => Ok(Conflict::Converged {
            coord_num: coord,
            log_entry: entry.map(|(c, e)| (c, Arc::new(e))),
        }),
        other => Err(other),
    }
}

fn refusal<E: fmt::Debug>(response: Response) -> CommunicatorError<E> {
    match response {
        Response::Unavailable(u) => CommunicatorError::Unavailable(u),
        other => CommunicatorError::Unexpected(Box::new(other)),
    }
}

/// A vote on a prepare.
type PrepareVote = Vote<u64, u32, PaxakosEntry, Duration>;

fn to_vote<E: fmt::Debug>(response: Response) -> Result<PrepareVote, CommunicatorError<E>> {
    match response {
        Response::Abstained { bound_for } => Err(CommunicatorError::Abstained(bound_for)),
        Response::Promise(accepted) => Ok(Vote::Given(
            accepted
                .into_iter()
                .map(|a| Condition {
                    round_num: a.round,
                    coord_num: a.coord,
                    log_entry: Arc::new(a.entry),
                })
                .collect::<Vec<_>>()
                .into(),
        )),
        other => conflict(other).map(Vote::Conflicted).map_err(refusal),
    }
}

fn to_poll_answer<E: fmt::Debug>(response: Response) -> Result<PrepareVote, CommunicatorError<E>> {
    match response {
        promise @ Response::Promise(_) => Err(CommunicatorError::Unexpected(Box::new(promise))),
        other => to_vote(other),
    }
}

fn to_acceptance<E: fmt::Debug>(
    response: Response,
) -> Result<
    paxakos::communicator::Acceptance<u32, PaxakosEntry, Duration, Infallible>,
    CommunicatorError<E>,
> {
    use paxakos::communicator::Acceptance;
    match response {
        Response::Accepted { lease } => Ok(Acceptance::Given(lease)),
        other => conflict(other).map(Acceptance::Conflicted).map_err(refusal),
    }
}

fn to_committed<E: fmt::Debug>(response: Response) -> Result<Committed, CommunicatorError<E>> {
    match response {
        Response::Committed => Ok(Committed),
        other => Err(refusal(other)),
    }
}

impl<T: Transport> Communicator for NetCommunicator<T> {
    type Node = PeerNode;
    type RoundNum = u64;
    type CoordNum = u32;
    type LogEntry = PaxakosEntry;
    type Error = CommunicatorError<T::Error>;
    type SendPrepare = BoxFuture<'static, Result<VoteFor<Self>, Self::Error>>;
    type Abstain = Duration;
    type SendProposal = BoxFuture<'static, Result<AcceptanceFor<Self>, Self::Error>>;
    type Yea = Duration;
    type Nay = Infallible;
    type SendCommit = BoxFuture<'static, Result<Committed, Self::Error>>;
    type SendCommitById = BoxFuture<'static, Result<Committed, Self::Error>>;

    fn send_prepare<'a>(
        &mut self,
        receivers: &'a [PeerNode],
        round: u64,
        coord: u32,
    ) -> Vec<(&'a PeerNode, Self::SendPrepare)> {
        // Coordination number 0 is paxakos's catch-up poll, which no one may promise: a
        // peer that promises anyway is refused here (paxakos 0.13 would panic on it).
        let answer = if coord == 0 { to_poll_answer } else { to_vote };
        self.each(receivers, &Request::Prepare { round, coord }, answer)
    }

    fn send_proposal<'a>(
        &mut self,
        receivers: &'a [PeerNode],
        round: u64,
        coord: u32,
        entry: Arc<PaxakosEntry>,
    ) -> Vec<(&'a PeerNode, Self::SendProposal)> {
        let request = Request::Proposal {
            round,
            coord,
            entry: PaxakosEntry::clone(&entry),
        };
        self.each(receivers, &request, to_acceptance)
    }

    fn send_commit<'a>(
        &mut self,
        receivers: &'a [PeerNode],
        round: u64,
        coord: u32,
        entry: Arc<PaxakosEntry>,
    ) -> Vec<(&'a PeerNode, Self::SendCommit)> {
        let request = Request::Commit {
            round,
            coord,
            entry: PaxakosEntry::clone(&entry),
        };
        self.each(receivers, &request, to_committed)
    }

    fn send_commit_by_id<'a>(
        &mut self,
        receivers: &'a [PeerNode],
        round: u64,
        coord: u32,
        id: netabase_core::consensus::EntryId,
    ) -> Vec<(&'a PeerNode, Self::SendCommitById)> {
        self.each(
            receivers,
            &Request::CommitById { round, coord, id },
            to_committed,
        )
    }
}

fn converged(coord: u32, entry: Option<(u32, Arc<PaxakosEntry>)>) -> Response {
    Response::Converged {
        coord,
        entry: entry.map(|(c, e)| (c, PaxakosEntry::clone(&e))),
    }
}

/// Answers the request in `request` with the local node's `handler` (and its `node`, for
/// snapshots): the answer's bytes, or why the request is not one.
pub async fn serve<E: fmt::Debug + Send + Sync + 'static>(
    handler: &RequestHandler<KvInvocation<E>>,
    node: &NodeHandle<KvInvocation<E>>,
    request: &[u8],
) -> Result<Vec<u8>, WireError> {
    let response = match Request::decode(request)? {
        Request::Prepare { round, coord } => match handler.handle_prepare(round, coord).await {
            Ok(p) => {
                let conditions: Vec<Condition<u64, u32, PaxakosEntry>> = p.into();
                Response::Promise(
                    conditions
                        .into_iter()
                        .map(|c| Accepted {
                            round: c.round_num,
                            coord: c.coord_num,
                            entry: PaxakosEntry::clone(&c.log_entry),
                        })
                        .collect(),
                )
            }
            Err(PrepareError::Supplanted(coord)) => Response::Supplanted { coord },
            Err(PrepareError::Converged(coord, entry)) => converged(coord, entry),
            Err(PrepareError::Abstained(bound_for)) => Response::Abstained { bound_for },
            Err(PrepareError::Passive) => Response::Unavailable(Unavailable::Passive),
            Err(PrepareError::ShutDown) => Response::Unavailable(Unavailable::ShutDown),
        },
        Request::Proposal {
            round,
            coord,
            entry,
        } => match handler.handle_proposal(round, coord, Arc::new(entry)).await {
            Ok(lease) => Response::Accepted { lease },
            Err(AcceptError::Supplanted(coord)) => Response::Supplanted { coord },
            Err(AcceptError::Converged(coord, entry)) => converged(coord, entry),
            Err(AcceptError::Rejected(never)) => match never {},
            Err(AcceptError::Passive) => Response::Unavailable(Unavailable::Passive),
            Err(AcceptError::ShutDown) => Response::Unavailable(Unavailable::ShutDown),
        },
        Request::Commit {
            round,
            coord,
            entry,
        } => committed(handler.handle_commit(round, coord, Arc::new(entry)).await),
        Request::CommitById { round, coord, id } => {
            committed(handler.handle_commit_by_id(round, coord, id).await)
        }
        Request::Append(entry) => {
            let appended = node.append(entry, paxakos::retry::DoNotRetry::new()).await;
            match appended {
                Ok(commit) => {
                    let round = commit.round_num();
                    match commit.await {
                        Ok(applied) => Response::Appended {
                            round,
                            response: applied.response,
                            duplicate: applied.duplicate,
                        },
                        Err(_) => Response::Unavailable(Unavailable::ShutDown),
                    }
                }
                Err(_) => Response::Unavailable(Unavailable::NotAppended),
            }
        }
        Request::Snapshot => match node.prepare_snapshot().await {
            Ok(snapshot) => match encode_snapshot(&snapshot) {
                Ok(bytes) => Response::Snapshot(bytes),
                // Too large for one message: the asking node tries another peer.
                Err(_) => Response::Unavailable(Unavailable::TooLarge),
            },
            Err(_) => Response::Unavailable(Unavailable::ShutDown),
        },
    };
    response.encode()
}

fn committed<I: Invocation>(result: Result<(), CommitError<I>>) -> Response {
    match result {
        Ok(()) => Response::Committed,
        Err(CommitError::Disoriented) => Response::Unavailable(Unavailable::Disoriented),
        Err(CommitError::InvalidEntryId(_)) => Response::Unavailable(Unavailable::UnknownEntry),
        Err(CommitError::ShutDown) => Response::Unavailable(Unavailable::ShutDown),
        // A failure paxakos adds in a later release: the commit did not happen.
        Err(_) => Response::Unavailable(Unavailable::Disoriented),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that answers everything with `answer`.
    #[derive(Clone)]
    struct Answers(Response);

    impl Transport for Answers {
        type Error = Infallible;

        fn request(
            &self,
            _to: libp2p_identity::PeerId,
            _request: Vec<u8>,
        ) -> BoxFuture<'static, Result<Vec<u8>, Infallible>> {
            let bytes = self.0.encode().expect("encodes");
            futures::future::ready(Ok(bytes)).boxed()
        }
    }

    fn prepare(answer: Response, coord: u32) -> Result<VoteFor<NetCommunicator<Answers>>, String> {
        let peers = [PeerNode(libp2p_identity::PeerId::random())];
        let mut c = NetCommunicator::new(Answers(answer));
        let (_, reply) = c
            .send_prepare(&peers, 1, coord)
            .pop()
            .expect("one receiver");
        futures::executor::block_on(reply).map_err(|e| e.to_string())
    }

    #[test]
    fn a_promise_to_a_catch_up_poll_is_refused_and_other_answers_map_to_votes() {
        let promise = Response::Promise(Vec::new());
        assert!(matches!(prepare(promise.clone(), 3), Ok(Vote::Given(_))));
        let refused = prepare(promise, 0).expect_err("no promise to a poll");
        assert!(refused.contains("does not answer"), "{refused}");
        assert!(matches!(
            prepare(Response::Supplanted { coord: 9 }, 0),
            Ok(Vote::Conflicted(Conflict::Supplanted { coord_num: 9 }))
        ));
        let unavailable = prepare(Response::Unavailable(Unavailable::Passive), 3)
            .expect_err("a passive peer gives no vote");
        assert!(unavailable.contains("passive"), "{unavailable}");
        // An abstention (a lease binds the peer) is a failed exchange, with its duration:
        // paxakos 0.13 panics when abstentions leave a prepare without a quorum.
        let bound = prepare(
            Response::Abstained {
                bound_for: Duration::from_millis(5),
            },
            3,
        )
        .expect_err("an abstention is no vote");
        assert!(bound.contains("bound by a lease"), "{bound}");
        let wrong = prepare(Response::Committed, 3).expect_err("not an answer to a prepare");
        assert!(wrong.contains("does not answer"), "{wrong}");
    }
}
