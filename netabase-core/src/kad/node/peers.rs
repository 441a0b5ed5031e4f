//! Connection news and the routing-table API.

use super::*;

impl<S: RecordStore> Node<S> {
    // ----- connection news -------------------------------------------------------------

    /// The driver established a connection to `peer`.
    pub fn handle_connection_established(&mut self, now: Instant, peer: PeerId) {
        self.connected.insert(*peer.kad_key());
        self.table.mark_connected(now, &peer);
    }

    /// The driver's last connection to `peer` closed.
    pub fn handle_connection_closed(&mut self, _now: Instant, peer: PeerId) {
        self.connected.remove(peer.kad_key());
        self.table.mark_disconnected(&peer);
    }

    /// The driver learnt (through identify) `peer`'s listen addresses and whether it serves
    /// the Kademlia protocol. Servers enter the routing table, others leave it.
    pub fn handle_peer_identified(
        &mut self,
        now: Instant,
        peer: PeerId,
        listen_addrs: &[Address],
        serves_kad: bool,
    ) {
        if serves_kad {
            let status = if self.connected.contains(peer.kad_key()) {
                Status::Connected
            } else {
                Status::Disconnected
            };
            self.table_update(now, peer, listen_addrs, status);
        } else if self.table.remove(now, &peer).is_some() {
            self.outputs
                .push_back(Output::Event(Event::PeerRemoved { peer }));
        }
    }

    pub(super) fn table_update(
        &mut self,
        now: Instant,
        peer: PeerId,
        addrs: &[Address],
        status: Status,
    ) {
        match self.table.update(now, peer, addrs, status) {
            UpdateOutcome::Inserted { bucket } => {
                self.outputs
                    .push_back(Output::Event(Event::PeerAdded { peer, bucket }));
            }
            UpdateOutcome::Pending { probe, .. } => self.send_probe(now, probe),
            UpdateOutcome::Updated { .. }
            | UpdateOutcome::Full { .. }
            | UpdateOutcome::SelfEntry => {}
        }
    }

    pub(super) fn send_probe(&mut self, now: Instant, peer: PeerId) {
        let Some(entry) = self.table.entry(&peer) else {
            return;
        };
        let addrs = entry.addrs.clone();
        let key =
            RecordKey::new(self.local.as_bytes()).expect("peer ids are shorter than record keys");
        self.send_request(
            now,
            peer,
            addrs,
            Request::FindNode { key },
            None,
            Purpose::Probe,
        );
    }

    // ----- routing-table API -----------------------------------------------------------

    /// Adds a known address of a DHT server `peer` to the routing table (as libp2p's
    /// `add_address`). Returns what the table did.
    pub fn add_address(&mut self, now: Instant, peer: PeerId, addr: Address) -> UpdateOutcome {
        let status = if self.connected.contains(peer.kad_key()) {
            Status::Connected
        } else {
            Status::Disconnected
        };
        let outcome = self
            .table
            .update(now, peer, core::slice::from_ref(&addr), status);
        match &outcome {
            UpdateOutcome::Inserted { bucket } => {
                self.outputs.push_back(Output::Event(Event::PeerAdded {
                    peer,
                    bucket: *bucket,
                }))
            }
            UpdateOutcome::Pending { probe, .. } => self.send_probe(now, *probe),
            _ => {}
        }
        outcome
    }

    /// Removes one address of `peer`; the peer leaves the table when it has none left.
    pub fn remove_address(&mut self, now: Instant, peer: &PeerId, addr: &Address) {
        if self.table.remove_address(now, peer, addr) {
            self.outputs
                .push_back(Output::Event(Event::PeerRemoved { peer: *peer }));
        }
    }

    /// Removes `peer` from the routing table.
    pub fn remove_peer(&mut self, now: Instant, peer: &PeerId) -> bool {
        let removed = self.table.remove(now, peer).is_some();
        if removed {
            self.outputs
                .push_back(Output::Event(Event::PeerRemoved { peer: *peer }));
        }
        removed
    }

    /// Sets the addresses this node announces as a provider.
    pub fn set_local_addresses(&mut self, addrs: Vec<Address>) {
        self.local_addrs = addrs.into();
    }

    /// Switches between server and client mode.
    pub fn set_mode(&mut self, mode: Mode) {
        if self.mode != mode {
            self.mode = mode;
            self.outputs
                .push_back(Output::Event(Event::ModeChanged { mode }));
        }
    }
}
