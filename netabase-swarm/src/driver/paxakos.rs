//! The driver's side of the paxakos engine ([`Engine::Paxakos`], the `paxakos` feature):
//! the API's consensus calls into the engine's task, its messages on
//! `/netabase/paxakos/1.0.0`, and what it keeps in the node's database (its cluster and
//! the snapshot a clean stop leaves).
//!
//! Without the feature the slot is empty and never ready.

use libp2p::request_response;

use crate::config::Engine;
use crate::paxos::PaxosCodec;

/// The request-response behaviour of the paxakos engine, when it is the node's engine.
pub(crate) fn paxakos_behaviour(engine: Engine) -> Option<request_response::Behaviour<PaxosCodec>> {
    match engine {
        Engine::Core => None,
        #[cfg(feature = "paxakos")]
        Engine::Paxakos => Some(crate::paxos::behaviour_for(libp2p::StreamProtocol::new(
            netabase_paxakos::wire::PAXAKOS_PROTOCOL,
        ))),
    }
}

#[cfg(not(feature = "paxakos"))]
mod off {
    use libp2p::request_response;

    use crate::driver::Driver;
    use crate::runtime::Runtime;

    /// No paxakos engine: nothing to drive.
    #[derive(Default)]
    pub(crate) struct PaxakosSlot {
        _none: (),
    }

    /// Never happens.
    pub(crate) enum PaxakosStep {}

    /// Never ready.
    pub(crate) async fn next_step(_slot: &mut PaxakosSlot) -> PaxakosStep {
        futures::future::pending().await
    }

    impl<R: Runtime> Driver<R> {
        pub(crate) fn on_paxakos_step(&mut self, step: PaxakosStep) {
            match step {}
        }

        /// The behaviour is never on without the feature.
        pub(crate) fn on_paxakos_event(
            &mut self,
            _event: request_response::Event<Vec<u8>, Vec<u8>>,
        ) {
        }

        pub(crate) fn stop_paxakos(&mut self) {}
    }
}

#[cfg(not(feature = "paxakos"))]
pub(crate) use off::{PaxakosSlot, PaxakosStep, next_step};

#[cfg(feature = "paxakos")]
mod on;

#[cfg(feature = "paxakos")]
pub(crate) use on::{PaxakosSlot, PaxakosStep, next_step};
