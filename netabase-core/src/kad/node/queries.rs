//! Query machinery: lookups, fan-outs, their completion, and what a finished get does with the copies it found (read repair, caching).

use super::*;

impl<S: RecordStore> Node<S> {
    // ----- query machinery ---------------------------------------------------------------

    pub(super) fn alloc_query_id(&mut self) -> QueryId {
        let id = QueryId(self.next_query);
        self.next_query += 1;
        id
    }

    pub(super) fn new_iter(&self, target: &RecordKey) -> ClosestPeersIter {
        let key = target.key();
        let known = self
            .table
            .closest(&key, self.config.k)
            .into_iter()
            .map(|e| (e.peer, e.addrs.clone()))
            .collect::<Vec<_>>();
        ClosestPeersIter::new(key, &self.local, known, self.config.k, self.config.alpha)
    }

    pub(super) fn start_query(
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

    pub(super) fn lookup_request(kind: &QueryKind, target: &RecordKey) -> Request {
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

    pub(super) fn send_request(
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
    pub(super) fn patience(&self) -> Option<Duration> {
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
    pub(super) fn sample_rtt(&mut self, rtt: Duration) {
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
    pub(super) fn take_request(&mut self, id: RequestId) -> Option<PendingRequest> {
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
    pub(super) fn advance(&mut self, now: Instant, id: QueryId) {
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
    pub(super) fn lookup_finished(&mut self, now: Instant, id: QueryId) {
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
    pub(super) fn start_fanout(&mut self, now: Instant, id: QueryId, request: Request) {
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

    pub(super) fn emit_finished(&mut self, id: QueryId, result: QueryResult, stats: QueryStats) {
        self.stats.queries_finished += 1;
        self.outputs
            .push_back(Output::Event(Event::QueryFinished { id, result, stats }));
    }

    /// Ends query `id` and reports its result (`timed_out`: it ran out of time).
    pub(super) fn finish_query(&mut self, now: Instant, id: QueryId, timed_out: bool) {
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
    pub(super) fn resolve_found(
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
    pub(super) fn write_back(
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
    pub(super) fn may_repair(&mut self, now: Instant, key: &RecordKey) -> bool {
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
}
