//! In-process tests of what only the async-io runtimes have: the TCP transport on async-io
//! on its own, and the node's driver on a thread of its own while smol's executor is held.
//! Every other in-process scenario is written once for all runtimes and runs on async-std
//! and smol in `netabase-testnode`'s suite
//! (`cargo nextest run -p netabase-testnode ::async_std ::smol`).

mod held_executor;
mod transport;
