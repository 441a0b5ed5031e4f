//! In-process tests of what only the tokio runtime has: nodes on 127.0.0.1 (mDNS off)
//! over QUIC, and the node's driver on a thread of its own. Every other in-process
//! scenario is written once for all runtimes and runs on tokio in `netabase-testnode`'s
//! suite (`cargo nextest run -p netabase-testnode ::tokio`).

mod held_workers;
mod quic;
