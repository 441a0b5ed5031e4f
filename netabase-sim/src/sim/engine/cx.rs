//! The processing of one event of one node: handing it its input, carrying out its
//! outputs, holding them for its disk's sync, and re-arming its timer.

use netabase_core::{
    Event, InboundId, Instant, Output, QueryResult, RecordKey, RecordStore, Request,
    RequestFailure, Response, Version,
};

use super::super::network::{Mail, Msg, Net};
use super::super::node::{NodeState, Queued, SimNode};
use super::super::workload::{Done, Finished, forge, sign_forgery};
use super::super::{ms, unit, version_of};
use super::{Ev, Shard};

/// A shard at work on its nodes at one instant.
pub(in crate::sim) struct Cx<'a> {
    pub(in crate::sim) shard: &'a mut Shard,
    pub(super) nodes: &'a mut [SimNode],
    pub(in crate::sim) net: &'a Net,
    pub(in crate::sim) now: Instant,
}

impl Cx<'_> {
    pub(in crate::sim) fn node(&mut self, i: usize) -> &mut SimNode {
        &mut self.nodes[i - self.shard.lo]
    }

    pub(in crate::sim) fn local_now(&mut self, i: usize) -> Instant {
        let now = self.now;
        now + self.node(i).skew
    }

    pub(in crate::sim) fn owns(&self, i: usize) -> bool {
        i >= self.shard.lo && i < self.shard.lo + self.nodes.len()
    }

    /// Schedules the delivery of a message from `from` to `to` at `at`; `origin`, a node
    /// of this shard, is the node whose event causes it.
    pub(in crate::sim) fn send(
        &mut self,
        origin: u32,
        at: Instant,
        to: u32,
        to_inc: Option<u32>,
        from: u32,
        msg: Msg,
    ) {
        let order = self.node(origin as usize).next_order(origin as usize);
        let mail = Mail {
            at,
            order,
            to,
            to_inc,
            from,
            msg,
        };
        if self.owns(to as usize) {
            self.shard.deliver(mail);
        } else {
            let shard = to as usize / self.shard.part_len;
            self.shard.outbox[shard].push(mail);
        }
    }

    /// Tells node `i` its wall clock before it handles an input; returns its `now`.
    pub(in crate::sim) fn input_now(&mut self, i: usize) -> Instant {
        let t = self.now;
        let local = self.local_now(i);
        let node = self.node(i);
        let wall = node.wall_clock(t);
        if let Some(core) = node.core_mut() {
            core.set_wall_clock(local, wall);
        }
        local
    }

    pub(in crate::sim) fn syncing(&mut self, i: usize) -> bool {
        self.node(i).sync.is_some()
    }

    pub(in crate::sim) fn process(&mut self, at: Instant, ev: Ev) {
        match ev {
            Ev::Deliver {
                to,
                to_inc,
                from,
                msg,
            } => {
                let (t, f) = (to as usize, from as usize);
                let msg = self.shard.take_msg(msg);
                if !self.node(t).is_up() {
                    if let Msg::Request { id, from_inc, .. } = msg {
                        // Arrived at a crashed node: the sender's stream breaks.
                        if self.net.status[f].incarnation == from_inc {
                            self.notify(
                                to,
                                from,
                                Msg::Failed {
                                    id,
                                    failure: RequestFailure::Io,
                                },
                            );
                        }
                    }
                    return;
                }
                if to_inc.is_some_and(|inc| inc != self.node(t).incarnation) {
                    return;
                }
                if self.syncing(t) {
                    self.node(t).queued.push_back(Queued::Msg { from, msg });
                    return;
                }
                self.handle_msg(t, from, msg);
            }
            Ev::Timer { node } => {
                let i = node as usize;
                if self.node(i).timer_at != Some(at) {
                    return;
                }
                self.node(i).timer_at = None;
                if self.syncing(i) {
                    self.node(i).queued.push_back(Queued::Timer);
                    return;
                }
                self.handle_timer(i);
            }
            Ev::Op(start) => {
                let i = start.node as usize;
                if self.syncing(i) {
                    self.node(i).queued.push_back(Queued::Op(start));
                    return;
                }
                self.start_op(*start);
            }
            Ev::SyncDone { node, seq } => self.sync_done(node as usize, seq),
        }
    }

    /// A message reaches node `t`, which is up and not syncing.
    pub(in crate::sim) fn handle_msg(&mut self, t: usize, from: u32, msg: Msg) {
        let f = from as usize;
        self.shard.events += 1;
        let local = self.input_now(t);
        let peer = self.net.peers[f];
        match msg {
            Msg::Request {
                id,
                from_inc,
                request,
            } => {
                self.trace(t, 1, id.0);
                self.connected(t, f);
                let node = self.node(t);
                let inbound = node.next_inbound;
                node.next_inbound += 1;
                if request.expects_response() {
                    node.inbound.push((inbound, from, from_inc, id));
                }
                if let Some(n) = node.core_mut() {
                    n.handle_request(local, peer, InboundId(inbound), request);
                }
            }
            Msg::Response { id, response } => {
                self.trace(t, 2, id.0);
                // The requester's side of the connection: open since its request
                // got through.
                self.connected(t, f);
                if let Some(n) = self.node(t).core_mut() {
                    n.handle_response(local, id, response);
                }
            }
            Msg::Sent { id } => {
                self.trace(t, 3, id.0);
                self.connected(t, f);
                if let Some(n) = self.node(t).core_mut() {
                    n.handle_request_sent(local, id);
                }
            }
            Msg::Failed { id, failure } => {
                self.trace(t, 4, id.0);
                if failure == RequestFailure::UnsupportedProtocol {
                    self.connected(t, f);
                }
                if let Some(n) = self.node(t).core_mut() {
                    n.handle_request_failed(local, id, failure);
                }
            }
            Msg::Closed => {
                self.trace(t, 16, u64::from(from));
                let node = self.node(t);
                if node.conns.remove(from)
                    && let Some(n) = node.core_mut()
                {
                    n.handle_connection_closed(local, peer);
                }
            }
        }
        self.drain(t);
    }

    /// Node `i`'s timer fires (it is up and not syncing).
    pub(in crate::sim) fn handle_timer(&mut self, i: usize) {
        self.shard.events += 1;
        self.trace(i, 5, 0);
        let local = self.input_now(i);
        if let Some(n) = self.node(i).core_mut() {
            n.handle_timeout(local);
        }
        self.drain(i);
    }

    /// Node `i`'s disk finished sync `seq`: the writes are durable, the outputs that
    /// waited for them are carried out, then the inputs that waited are handled in order
    /// (until one of them starts another sync).
    pub(in crate::sim) fn sync_done(&mut self, i: usize, seq: u64) {
        if self.node(i).sync != Some(seq) {
            return;
        }
        self.shard.events += 1;
        self.trace(i, 17, seq);
        let node = self.node(i);
        node.sync = None;
        if let NodeState::Up(core) = &mut node.state {
            core.store_mut().sync();
            core.synced();
        }
        let held = std::mem::take(&mut self.node(i).held);
        for out in held {
            self.carry_out(i, out);
        }
        while !self.syncing(i) {
            let Some(q) = self.node(i).queued.pop_front() else {
                break;
            };
            match q {
                Queued::Msg { from, msg } => self.handle_msg(i, from, msg),
                Queued::Timer => self.handle_timer(i),
                Queued::Op(start) => self.start_op(*start),
            }
        }
        if !self.syncing(i) {
            self.rearm(i);
        }
    }

    /// Carries out everything node `i` wants done, then re-arms its timer. With a disk
    /// model, writes the input made are synced first: requests leave at once, every other
    /// output waits for the sync (the group-commit rule, [`Output::waits_for_sync`]).
    pub(in crate::sim) fn drain(&mut self, i: usize) {
        let dirty = self.net.sync_latency_ms.is_some()
            && self.node(i).node().is_some_and(|n| n.store().is_dirty());
        let hold = dirty && !self.net.acks_before_sync;
        while let Some((out, waits)) = self.node(i).core_mut().and_then(|n| {
            let out = n.poll_output()?;
            let waits = n.output_waits_for_sync(&out);
            Some((out, waits))
        }) {
            if hold && waits {
                self.node(i).held.push(out);
            } else {
                self.carry_out(i, out);
            }
        }
        if dirty {
            let (lo, hi) = self.net.sync_latency_ms.unwrap_or((0.0, 0.0));
            let node = self.node(i);
            let latency = ms(lo + unit(&mut node.disk_rng) * (hi - lo));
            node.sync_seq += 1;
            let seq = node.sync_seq;
            node.sync = Some(seq);
            let order = node.next_order(i);
            let at = self.now + latency;
            self.shard.queue.push(
                at,
                order,
                Ev::SyncDone {
                    node: i as u32,
                    seq,
                },
            );
        }
        self.rearm(i);
    }

    /// With a disk model, remembers that node `i` acknowledged holding `value` under
    /// `key` (checked against what survives its next crash).
    pub(in crate::sim) fn note_ack(&mut self, i: usize, key: &RecordKey, version: Version) {
        if self.net.sync_latency_ms.is_none() {
            return;
        }
        let node = self.node(i);
        let expires = node
            .node()
            .and_then(|n| n.store().get(key).ok().flatten())
            .and_then(|r| r.expires);
        let e = node.acked.entry(key.clone()).or_insert((version, expires));
        if version >= e.0 {
            *e = (version, expires);
        }
    }

    /// Carries out one output of node `i`.
    pub(in crate::sim) fn carry_out(&mut self, i: usize, mut out: Output) {
        if i >= self.net.first_forger {
            let own = self.net.peers[i];
            let record = match &mut out {
                Output::SendRequest {
                    request: Request::PutValue { record },
                    ..
                } => Some(record),
                Output::SendResponse {
                    response:
                        Response::GetValue {
                            record: Some(record),
                            ..
                        },
                    ..
                } => Some(record),
                _ => None,
            };
            if let Some(record) = record
                && forge(&mut record.value, own)
                && self.net.forgeries_signed
            {
                sign_forgery(self.net, &record.key, &mut record.value);
            }
        }
        if self.net.corrupt_every_third
            && let Output::SendResponse {
                response:
                    Response::GetValue {
                        record: Some(record),
                        ..
                    },
                ..
            } = &mut out
        {
            let node = self.node(i);
            node.served_values += 1;
            if node.served_values.is_multiple_of(3) {
                record.value.push(0xEE);
            }
        }
        match out {
            Output::SendRequest {
                id,
                peer,
                addrs,
                request,
            } => {
                let one_way = !request.expects_response();
                let from_inc = self.node(i).incarnation;
                match self.net.resolve(&peer, &addrs) {
                    Some(j) if self.net.status[j].up => {
                        let request = Msg::Request {
                            id,
                            from_inc,
                            request,
                        };
                        // A partitioned peer is silent: the request times out.
                        if !self.transmit(i as u32, j as u32, None, request) {
                            return;
                        }
                        if one_way {
                            self.notify_self(i as u32, j as u32, Msg::Sent { id });
                        }
                    }
                    Some(j) => {
                        // Down or not started: the dial is refused.
                        self.shard.messages += 1;
                        self.notify_self(
                            i as u32,
                            j as u32,
                            Msg::Failed {
                                id,
                                failure: RequestFailure::Dial,
                            },
                        );
                    }
                    None => {
                        self.shard.messages += 1;
                        self.notify_self(
                            i as u32,
                            i as u32,
                            Msg::Failed {
                                id,
                                failure: RequestFailure::Dial,
                            },
                        );
                    }
                }
            }
            Output::SendResponse { id, response, .. } => {
                if let Response::PutValue { key, value } = &response
                    && let Some((version, _)) = version_of(value)
                {
                    self.note_ack(i, key, version);
                }
                if let Some((j, inc, rid)) = self.node(i).take_inbound(id) {
                    self.transmit(i as u32, j, Some(inc), Msg::Response { id: rid, response });
                }
            }
            Output::RejectInbound { id, .. } => {
                // A client does not speak the protocol at all; a server that refuses one
                // request (a forged record, a version too far ahead) closes its stream.
                let failure = if self.net.servers {
                    RequestFailure::Io
                } else {
                    RequestFailure::UnsupportedProtocol
                };
                if let Some((j, inc, rid)) = self.node(i).take_inbound(id) {
                    self.transmit(i as u32, j, Some(inc), Msg::Failed { id: rid, failure });
                }
            }
            Output::Event(Event::QueryFinished { id, result, stats }) => {
                let at = self.now;
                let node = self.node(i);
                if let Some(run) = node.ops.remove(&id) {
                    if let (QueryResult::PutRecord(Ok(_)), Some((key, version))) =
                        (&result, &run.written)
                    {
                        self.note_ack(i, key, *version);
                    }
                    let node = self.node(i);
                    let order = node.next_order(i);
                    self.shard.done.push(Done {
                        at,
                        order,
                        op: run.op,
                        how: Finished::Query(result, stats.hops, run.local, run.superseded),
                    });
                }
            }
            Output::Event(Event::RecordSuperseded { id: Some(id), .. }) => {
                if let Some(run) = self.node(i).ops.get_mut(&id) {
                    run.superseded = true;
                }
            }
            Output::Event(_) => {}
        }
    }

    pub(in crate::sim) fn rearm(&mut self, i: usize) {
        let now = self.now;
        let node = self.node(i);
        let skew = node.skew;
        let Some(t) = node.core_mut().and_then(|n| n.poll_timeout()) else {
            return;
        };
        let global = t.saturating_sub(skew).max(now);
        if node.timer_at.is_none_or(|s| global < s) {
            node.timer_at = Some(global);
            let order = node.next_order(i);
            self.shard
                .queue
                .push(global, order, Ev::Timer { node: i as u32 });
        }
    }
}
