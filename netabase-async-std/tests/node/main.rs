//! In-process tests of the node on async-std and smol: nodes in one process on 127.0.0.1
//! (mDNS off) over the async-io TCP transport. Each scenario is written once, generic over
//! the runtime, and run on both executors.

mod defaults;
mod dht;
mod support;
mod transport;
