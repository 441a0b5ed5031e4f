//! In-process tests of the real node: several nodes in one process on 127.0.0.1 (mDNS
//! off), real TCP and QUIC sockets.

mod bad_input;
mod defaults;
mod dht;
mod interop;
mod lifecycle;
mod modes;
mod support;
