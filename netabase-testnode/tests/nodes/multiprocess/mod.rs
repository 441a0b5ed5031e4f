//! Multi-process tests: networks of `netabase-test-node` processes on 127.0.0.1 (mDNS off),
//! driven over JSON lines; mDNS between processes in network namespaces the test creates;
//! a raw libp2p peer sending bad input to a node process.
//!
//! Every scenario is a function of the runtime its nodes run on, written once; the
//! `per_runtime!` macro makes one test per runtime of it, named `<scenario>::<runtime>`
//! (tokio, async-std and smol by default), and mixed networks put nodes of every runtime
//! into one network.

/// Declares tests `$scenario::tokio`, `$scenario::async_std` and `$scenario::smol` (or the
/// runtimes listed after the scenario) that run the function `$scenario(rt: Rt)` with a
/// runtime each.
macro_rules! per_runtime {
    ($scenario:ident) => {
        per_runtime!($scenario: tokio, async_std, smol);
    };
    ($scenario:ident: $($runtime:ident),+) => {
        mod $scenario {
            $(
                #[test]
                fn $runtime() {
                    use crate::multiprocess::support::Rt;
                    super::$scenario(Rt::from_test_name(stringify!($runtime)));
                }
            )+
        }
    };
}

mod bad_input;
mod chat;
mod consensus;
mod dht;
mod flood;
mod mdns;
mod mixed;
mod modes;
mod node_program;
mod powercut;
mod restart;
mod support;
mod versions;
