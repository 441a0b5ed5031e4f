//! Inbound requests: answering, checking records from the network, refusing.

use super::*;

impl<S: RecordStore> Node<S> {
    /// An inbound request `id` from `peer`. The node answers with exactly one
    /// [`Output::SendResponse`] or [`Output::RejectInbound`] for requests that expect an
    /// answer, and with nothing for ADD_PROVIDER.
    pub fn handle_request(&mut self, now: Instant, peer: PeerId, id: InboundId, request: Request) {
        self.stats.inbound_requests += 1;
        let kind = request.kind();
        if self.mode == Mode::Client {
            self.reject(
                id,
                peer,
                kind,
                request.expects_response(),
                Rejection::ClientMode,
            );
            return;
        }
        match request {
            Request::FindNode { key } => {
                let closer_peers = self.closer_peers(&key.key(), &peer);
                self.respond(id, peer, Response::FindNode { closer_peers });
            }
            Request::GetValue { key } => {
                let record = match self.store.get(&key) {
                    Ok(Some(r)) if r.is_expired(now) => {
                        let _ = self.store.remove(&key);
                        None
                    }
                    Ok(r) => r.map(|r| Box::new(to_wire(&r, now))),
                    Err(_) => None,
                };
                let closer_peers = self.closer_peers(&key.key(), &peer);
                self.respond(
                    id,
                    peer,
                    Response::GetValue {
                        record,
                        closer_peers,
                    },
                );
            }
            Request::PutValue { record } => {
                if record.value.len() > self.config.max_record_size {
                    let size = record.value.len();
                    self.reject(id, peer, kind, true, Rejection::RecordTooLarge { size });
                    return;
                }
                if let Err(reason) = self.check_incoming(now, &record.key, &record.value) {
                    self.reject(id, peer, kind, true, reason);
                    return;
                }
                let mut stored = from_wire(*record, now);
                // Never keep a record longer than this node's own record lifetime; a
                // tombstone lives until its own horizon.
                stored.expires = self.inbound_expiry(now, &stored.value, stored.expires);
                // The publisher is an untrusted hint: nobody else may claim this node's
                // name for it (this node would republish the record as its own).
                if stored.publisher == Some(self.local) {
                    stored.publisher = None;
                }
                let key = stored.key.clone();
                let value = stored.value.clone();
                match self.store.put_resolved(stored) {
                    Ok(PutOutcome::Stored | PutOutcome::Refreshed) => {
                        self.outputs.push_back(Output::Event(Event::RecordStored {
                            key: key.clone(),
                            from: peer,
                        }));
                        self.respond(id, peer, Response::PutValue { key, value });
                    }
                    Ok(PutOutcome::Kept(current)) => {
                        // Older than the stored copy: answered with the newer one, which a
                        // Netabase writer takes; stock peers count any answer as success.
                        self.stats.stale_records += 1;
                        let value = current.value;
                        self.respond(id, peer, Response::PutValue { key, value });
                    }
                    Err(e) => self.reject(id, peer, kind, true, Rejection::Store(e)),
                }
            }
            Request::GetProviders { key } => {
                let provider_peers = match self.store.providers(&key) {
                    Ok(list) => list
                        .into_iter()
                        .filter(|p| !p.is_expired(now))
                        .take(self.config.k)
                        .map(|p| PeerInfo {
                            id: p.provider,
                            connection: if self.connected.contains(p.provider.kad_key()) {
                                ConnectionType::Connected
                            } else {
                                ConnectionType::NotConnected
                            },
                            addrs: if p.provider == self.local {
                                self.local_addrs.clone()
                            } else {
                                p.addresses.into()
                            },
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let closer_peers = self.closer_peers(&key.key(), &peer);
                self.respond(
                    id,
                    peer,
                    Response::GetProviders {
                        closer_peers,
                        provider_peers,
                    },
                );
            }
            Request::AddProvider { key, provider } => {
                if provider.id != peer {
                    self.reject(id, peer, kind, false, Rejection::ForeignProvider);
                    return;
                }
                let record = ProviderRecord {
                    key: key.clone(),
                    provider: peer,
                    addresses: provider.addrs.to_vec(),
                    expires: self.config.provider_record_ttl.map(|d| now + d),
                };
                match self.store.add_provider(record) {
                    Ok(()) => self.outputs.push_back(Output::Event(Event::ProviderAdded {
                        key,
                        provider: peer,
                    })),
                    Err(e) => self.reject(id, peer, kind, false, Rejection::Store(e)),
                }
            }
            Request::Ping => self.respond(id, peer, Response::Pong),
        }
    }

    pub(super) fn respond(&mut self, id: InboundId, peer: PeerId, response: Response) {
        self.outputs
            .push_back(Output::SendResponse { id, peer, response });
    }

    /// Checks a record from the network before it is stored, cached, merged or returned:
    /// an envelope must be signed by its origin for this key and its version must not lie
    /// too far ahead of the local clock (a close one is merged into the clock); then the
    /// store validates it. Each refusal is counted.
    pub(super) fn check_incoming(
        &mut self,
        now: Instant,
        key: &RecordKey,
        value: &[u8],
    ) -> Result<(), Rejection> {
        if value.starts_with(b"NBE") {
            let keys = &mut self.keys;
            let checked = Envelope::decode(value)
                .and_then(|envelope| envelope.verify_cached(key, value, keys).map(|()| envelope));
            self.stats.signatures_verified = self.keys.verified();
            let envelope = match checked {
                Ok(envelope) => envelope,
                Err(e) => {
                    self.stats.forged_records += 1;
                    return Err(Rejection::Envelope(e));
                }
            };
            let wall = self.wall_clock(now);
            if let Err(e) = self.hlc.observe(envelope.timestamp, wall) {
                self.stats.clock_refused += 1;
                return Err(Rejection::ClockAhead(e));
            }
        }
        self.store.validate(key, value).map_err(|e| {
            self.stats.invalid_records += 1;
            Rejection::Store(e)
        })
    }

    /// A GET_VALUE answer without its record when [`Node::check_incoming`] refuses it.
    pub(super) fn drop_invalid_record(
        &mut self,
        now: Instant,
        peer: PeerId,
        response: Response,
    ) -> Response {
        let Response::GetValue {
            record: Some(record),
            closer_peers,
        } = response
        else {
            return response;
        };
        match self.check_incoming(now, &record.key, &record.value) {
            Ok(()) => Response::GetValue {
                record: Some(record),
                closer_peers,
            },
            Err(reason) => {
                let error = match reason {
                    Rejection::Store(e) => e,
                    other => StoreError::Rejected(alloc::format!("{other}")),
                };
                self.outputs.push_back(Output::Event(Event::InvalidRecord {
                    peer,
                    key: record.key,
                    error,
                }));
                Response::GetValue {
                    record: None,
                    closer_peers,
                }
            }
        }
    }

    pub(super) fn reject(
        &mut self,
        id: InboundId,
        peer: PeerId,
        kind: MessageKind,
        answer: bool,
        reason: Rejection,
    ) {
        self.stats.inbound_rejected += 1;
        if answer {
            self.outputs.push_back(Output::RejectInbound { id, peer });
        }
        self.outputs
            .push_back(Output::Event(Event::InboundRejected { peer, kind, reason }));
    }

    /// The K closest peers to `target` from the routing table, without the requester.
    pub(super) fn closer_peers(&self, target: &Key, requester: &PeerId) -> Vec<PeerInfo> {
        self.table
            .closest_excluding(target, self.config.k, Some(requester))
            .into_iter()
            .map(|e| PeerInfo {
                id: e.peer,
                addrs: e.addrs.clone(),
                connection: match e.status {
                    Status::Connected => ConnectionType::Connected,
                    Status::Disconnected => ConnectionType::NotConnected,
                },
            })
            .collect()
    }
}
