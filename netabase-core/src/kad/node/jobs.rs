//! Timers and the periodic jobs: expiry sweeps, replication and republication walks, the outbox, bootstraps, and the bounded job queue they feed.

use super::*;

impl<S: RecordStore> Node<S> {
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

    pub(super) fn run_periodic_jobs(&mut self, now: Instant) {
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
    pub(super) fn retry_outbox(&mut self, now: Instant) {
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
    pub(super) fn start_walk(&mut self, now: Instant, kind: WalkKind) {
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
    pub(super) fn feed_jobs(&mut self, now: Instant) {
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
    pub(super) fn queue_publication(&mut self, record: Record, outbox: bool) {
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

    pub(super) fn start_jobs(&mut self, now: Instant) {
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

    pub(super) fn run_jobs(&mut self, now: Instant) {
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
}
