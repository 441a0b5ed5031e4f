//! Conversions between libp2p's identities and addresses and the core's encoded forms.

use libp2p::Multiaddr;
use netabase_core::{Address, PeerId};

/// The core's form of a libp2p peer id (`None` only for ids longer than libp2p makes).
pub(crate) fn to_core_peer(peer: &libp2p::PeerId) -> Option<PeerId> {
    PeerId::from_bytes(&peer.to_bytes()).ok()
}

/// The libp2p peer id behind a core peer id.
pub(crate) fn to_libp2p_peer(peer: &PeerId) -> Option<libp2p::PeerId> {
    libp2p::PeerId::from_bytes(peer.as_bytes()).ok()
}

/// The core's form of a multiaddr (`None` if it is too long).
pub(crate) fn to_address(addr: &Multiaddr) -> Option<Address> {
    Address::from_bytes(&addr.to_vec()).ok()
}

/// The multiaddr behind a core address (`None` if the bytes are not a multiaddr).
pub(crate) fn to_multiaddr(addr: &Address) -> Option<Multiaddr> {
    Multiaddr::try_from(addr.as_bytes().to_vec()).ok()
}
