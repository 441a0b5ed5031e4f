//! The node suite of Netabase, one test binary:
//!
//! - [`in_process`]: nodes in this process on 127.0.0.1 (mDNS off), every scenario an
//!   `async fn` generic over the runtime, run on tokio, async-std and smol;
//! - [`multiprocess`]: networks of `netabase-test-node` processes, every scenario a
//!   function of the runtime its nodes run on, run on each runtime, plus mixed networks
//!   and mDNS in network namespaces the tests create.
//!
//! Either half names its tests `<module>::<scenario>::<runtime>`, so
//! `cargo nextest run -p netabase-testnode ::smol` runs everything on smol.

mod in_process;
mod multiprocess;
mod stock;
