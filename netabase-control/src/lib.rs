//! The control protocol of the `netabase` command, without the node behind it.
//!
//! - [`protocol`]: the JSON lines a node reads ([`Request`](protocol::Request)) and writes
//!   ([`Output`](protocol::Output)), the same on its standard input and on its control
//!   endpoints, and the replies of each command.
//! - [`session`]: how the lines of one control connection are checked before anything
//!   runs: the TCP endpoint's token first, no HTTP request line, one refusal that closes
//!   the connection.
//!
//! This crate holds no I/O and no node: `netabase-cli` reads the lines from its sockets
//! and carries out the requests, and the fuzz targets feed it arbitrary bytes.
#![forbid(unsafe_code)]

pub mod protocol;
pub mod session;
