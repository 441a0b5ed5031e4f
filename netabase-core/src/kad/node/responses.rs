//! Answers to the node's own requests, their failures and deliveries.

use super::*;

impl<S: RecordStore> Node<S> {
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
    pub(super) fn take_superseding_answer(
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
    pub(super) fn settle_late_put(&mut self, req: &PendingRequest) {
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

    pub(super) fn finish_found_peer(&mut self, now: Instant, id: QueryId, info: PeerInfo) {
        let Some(mut q) = self.queries.remove(&id) else {
            return;
        };
        self.query_deadlines.remove(q.deadline, id);
        q.stats.finished = now;
        q.stats.hops = q.iter.succeeded().map(|(_, d)| d).max().unwrap_or(0);
        self.emit_finished(id, QueryResult::FindPeer(Ok(Box::new(info))), q.stats);
    }

    pub(super) fn known_addrs(&self, req: &PendingRequest) -> Addresses {
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

    pub(super) fn request_failed(&mut self, now: Instant, req: PendingRequest) {
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
}
