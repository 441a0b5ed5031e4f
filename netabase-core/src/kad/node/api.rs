//! The query API: starting lookups, gets, puts, removals, providers and bootstraps.

use super::*;

impl<S: RecordStore> Node<S> {
    // ----- queries API -----------------------------------------------------------------

    pub(super) fn check_capacity(&self) -> Result<(), ApiError> {
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

    pub(super) fn start_bootstrap(&mut self, now: Instant, internal: bool) -> QueryId {
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
}
