//! The node's composed network behaviour.

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{connection_limits, identify, mdns, ping};

use crate::carrier::KadCarrier;
use crate::paxos::PaxosCodec;

/// Everything the node runs on one swarm: connection limits first (so refused connections
/// never reach the others), the Kademlia carrier, identify, ping, consensus (`/paxos/1.0.0`) and (optionally) mDNS.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub(crate) struct NodeBehaviour<M>
where
    M: NetworkBehaviour<ToSwarm = mdns::Event> + Send + 'static,
{
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) kad: KadCarrier,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) paxos: libp2p::request_response::Behaviour<PaxosCodec>,
    /// The paxakos engine's messages (`/netabase/paxakos/1.0.0`), on only when it is the
    /// node's engine.
    pub(crate) paxakos: Toggle<libp2p::request_response::Behaviour<PaxosCodec>>,
    pub(crate) mdns: Toggle<M>,
}
