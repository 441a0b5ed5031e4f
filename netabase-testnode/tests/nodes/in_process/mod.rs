//! In-process tests: nodes in this process on 127.0.0.1 (mDNS off) over real TCP sockets,
//! with the support of `netabase_testnode::in_process`.
//!
//! Every scenario is an `async fn scenario<R: TestRuntime>()`, written once; `per_runtime!`
//! makes the tests `<scenario>::tokio`, `<scenario>::async_std` and `<scenario>::smol` of
//! it, each running the scenario with its runtime's `block_on`. Peers that are not
//! Netabase nodes (a stock rust-libp2p Kademlia node, a raw libp2p peer sending hand-made
//! messages) run on a tokio runtime of their own (`crate::stock`), whatever runtime
//! the node under test is on. What only one runtime has is tested in that runtime's crate:
//! QUIC and the tokio driver's own thread in `netabase-tokio`, the async-io TCP transport
//! and the smol driver's own thread in `netabase-async-std`.

/// Declares tests `$scenario::tokio`, `$scenario::async_std` and `$scenario::smol`, each
/// running `async fn $scenario<R>()` on its runtime `R`.
macro_rules! per_runtime {
    ($scenario:ident) => {
        mod $scenario {
            use netabase_testnode::in_process::TestRuntime as _;

            #[test]
            fn tokio() {
                netabase::TokioRuntime::block_on(super::$scenario::<netabase::TokioRuntime>());
            }

            #[test]
            fn async_std() {
                netabase::AsyncStdRuntime::block_on(
                    super::$scenario::<netabase::AsyncStdRuntime>(),
                );
            }

            #[test]
            fn smol() {
                netabase::SmolRuntime::block_on(super::$scenario::<netabase::SmolRuntime>());
            }
        }
    };
}

mod bad_input;
mod consensus;
mod defaults;
mod dht;
mod interop;
mod lifecycle;
mod mixed;
mod modes;
mod paxakos;
mod typed_versions;
