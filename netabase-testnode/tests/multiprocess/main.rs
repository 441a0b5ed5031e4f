//! Multi-process tests: networks of `netabase-test-node` processes on 127.0.0.1 (mDNS off),
//! driven over JSON lines; mDNS between processes in network namespaces the test creates;
//! a raw libp2p peer sending bad input to a node process.

mod bad_input;
mod chat;
mod dht;
mod mdns;
mod modes;
mod node_program;
mod restart;
mod support;
