//! mDNS discovery on async-io.

use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId, mdns};
use netabase_swarm::BuildError;

/// The mDNS service of this runtime.
#[derive(Debug)]
pub enum MdnsBehaviour {}

impl MdnsBehaviour {
    /// Starts the service for `local`.
    pub fn new(_local: PeerId, _config: mdns::Config) -> Result<Self, BuildError> {
        Err(BuildError("mDNS is not available on async-io yet".into()))
    }
}

impl NetworkBehaviour for MdnsBehaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = mdns::Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        match *self {}
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        match *self {}
    }

    fn on_swarm_event(&mut self, _: FromSwarm<'_>) {
        match *self {}
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let _: Infallible = event;
        match *self {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match *self {}
    }
}
