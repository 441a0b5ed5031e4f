//! The `netabase` command: run a Netabase node from the shell, control it, watch it, and
//! run the simulator.
//!
//! # Running a node
//!
//! ```text
//! netabase node --data-dir /tmp/nb/a --listen /ip4/127.0.0.1/tcp/4001 --metrics 9101
//! ```
//!
//! runs one node until SIGINT or SIGTERM, printing its peer id and listen addresses
//! (`--json` prints them as one `{"type":"ready",...}` line). The identity key and the
//! database live in the data directory, so a restart on the same directory keeps the peer
//! id and every record. On SIGINT or SIGTERM (or a `shutdown` command) the node stops
//! gracefully: operations still running fail, connections close, the database is closed,
//! and the process exits with 0; a second signal while stopping exits at once with 130.
//! Every record acknowledged to a client was written durably before its reply was sent.
//!
//! Flags (`netabase node --help` lists them all): `--listen` (repeatable; default every
//! interface, TCP and QUIC, ports picked by the system), `--data-dir`, `--backend
//! redb|sled`, `--protocol` (Kademlia protocol name; `/ipfs/kad/1.0.0` joins stock
//! libp2p peers), `--mode server|client`, `--bootstrap MULTIADDR/p2p/PEER` (repeatable; the
//! node bootstraps through them at start), `--mdns`/`--no-mdns`, `--metrics ADDR`,
//! `--metrics-host NAME`, `--control HOST:PORT`, `--control-token-file FILE`,
//! `--no-stdin`, `--stop-on-eof`, `--lookup-patience-ms`, `--query-timeout-ms`,
//! `--max-records` (1024 by default: raise it for bulk imports), `--max-provided-keys`.
//!
//! **mDNS is off by default.** A long-running node is usually joined through known
//! bootstrap peers, and mDNS multicasts the node's addresses on every network interface of
//! the machine; `--mdns` switches it on for local networks where that is wanted. (The
//! library's own default, for applications, is on.)
//!
//! `netabase id --data-dir DIR` prints the peer id a node on DIR has (creating its key if
//! needed), so scripts can build `--bootstrap` addresses before starting it.
//!
//! # Controlling a node
//!
//! The node reads commands as JSON lines on standard input and answers on standard output
//! (the [`protocol`] module describes the lines). It accepts the same lines on a Unix
//! domain socket in its data directory, `DATA_DIR/control/socket`, which only the user
//! running the node can reach; the subcommands use it, named by the data directory (or
//! the socket's path):
//!
//! ```text
//! netabase put --node /tmp/nb/a greeting hello
//! netabase get --node /tmp/nb/b greeting
//! netabase put --node /tmp/nb/a --doc profile '{"name":"ada","langs":["en","fr"]}'
//! netabase get --node /tmp/nb/c --doc profile
//! ```
//!
//! With `--control HOST:PORT` the node also accepts them over TCP. Every TCP connection
//! must first send a token, which the node draws from the operating system's random
//! source at each start and writes to a file of mode 0600 (`DATA_DIR/control/token`, or
//! `--control-token-file`); the subcommands send it given `--token-file`:
//!
//! ```text
//! netabase node --data-dir /tmp/nb/a --control 127.0.0.1:7001
//! netabase info --node 127.0.0.1:7001 --token-file /tmp/nb/a/control/token
//! ```
//!
//! The [`control`] module describes the checks: the data directory must not be writable
//! by others, the socket's peer must be the node's user, a line that starts with an HTTP
//! method or is not a request closes the connection, and requests and connections are
//! bounded. A web page can therefore neither reach the socket nor drive the TCP endpoint.
//!
//! Subcommands: `info`, `put`/`get`/`remove` (raw records; `--doc` for JSON documents,
//! `--hex` for binary values), `list`, `import FILE` (bulk put from JSON lines, with a
//! progress bar), `provide`, `stop-providing`, `providers`, `add-address`, `remove-peer`,
//! `bootstrap`, `peers`, `routing-table`, `mode [server|client]`, `stats`, `shutdown`.
//! Output is readable text; `--json` prints the command's result as one JSON value.
//! `--node` (default `./netabase-data`, the default data directory) may come from the
//! `NETABASE_NODE` environment variable, `--token-file` from `NETABASE_TOKEN_FILE`. Exit
//! codes: 0 success, 1 the command failed (or `get` found nothing), 2 bad usage, 3 the
//! node cannot be reached.
//!
//! Records are those of the built-in definition in [`models`]: a raw record
//! ([`models::Raw`]) or a JSON document ([`models::Document`]) under a string key.
//!
//! # Metrics
//!
//! With `--metrics ADDR` the node serves its metrics in the Prometheus (OpenMetrics) text
//! format at `http://ADDR/metrics`; `netabase metrics ADDR` prints them. A port alone
//! (`--metrics 9101`) binds 127.0.0.1; the node warns when ADDR is not a loopback
//! address. The endpoint answers only requests whose `Host` is an IP address, `localhost`
//! or a name given with `--metrics-host` (others get 403: a web page cannot read the
//! metrics through a name of its own pointed at the node), and it sends no CORS headers.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `netabase_operations_total` | counter | `operation`, `outcome` | API operations the node carried out |
//! | `netabase_query_duration_seconds` | histogram | `operation`, `outcome` | how long each DHT query took |
//! | `netabase_messages_total` | counter | `direction`, `protocol`, `kind`, `role` | protocol messages sent and received |
//! | `netabase_rejected_inputs_total` | counter | `input`, `reason` | requests, records and streams from peers the node refused |
//! | `netabase_request_failures_total` | counter | `reason` | outbound DHT requests that failed |
//! | `netabase_routing_table_peers` | gauge | | peers in the routing table |
//! | `netabase_connected_peers` | gauge | | peers with an open connection |
//! | `netabase_queries_running` | gauge | | API queries in flight |
//! | `netabase_store_records` | gauge | | records in the node's DHT store |
//! | `netabase_store_provider_records` | gauge | | provider records held |
//! | `netabase_store_provided_keys` | gauge | | keys this node provides |
//! | `netabase_control_refusals_total` | counter | `reason` | control connections and lines refused: `http`, `invalid_request`, `token`, `token_timeout`, `peer_user`, `connections` |
//! | `netabase_metrics_refusals_total` | counter | `reason` | metrics requests refused: `host` |
//! | `libp2p_swarm_*`, `libp2p_identify_*`, `libp2p_ping_*` | | | libp2p's own: connections, dial and listen errors, identify, ping round trips |
//!
//! [`netabase::swarm::metrics`] lists every label value.
//!
//! # Logs
//!
//! Logs go to standard error through `tracing`; `RUST_LOG` filters them
//! (`RUST_LOG=debug`, `RUST_LOG=netabase_swarm=debug,libp2p_swarm=debug`). Every control
//! command runs in an `operation` span naming the command and its request number, and
//! every node operation in a span of its own. Default: the node logs its start and stop
//! and warnings; the other subcommands log warnings only.
//!
//! # The simulator
//!
//! `netabase sim run SCENARIO` and `netabase sim sweep SCENARIO --seeds A..B` are the
//! commands of `netabase-sim` ([`netabase_sim::cli`]).

mod cli;
pub mod client;
pub mod control;
mod exec;
mod http;
mod lines;
mod logging;
pub mod models;
pub mod node;
pub mod protocol;

use cli::{Cli, Cmd, run};
pub use cli::{EXIT_FAILED, EXIT_UNREACHABLE};

/// The `netabase` program: parses the process's arguments, sets up logging and runs the
/// command.
pub fn main() -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().version(version()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    logging::init(matches!(cli.command, Cmd::Node(_)));
    run(cli)
}

/// What `netabase --version` prints: the version and the features this build has (its
/// runtimes and storage backends). Test-only code has no feature of its own to show up
/// here: the simulator's deliberate bugs live in the simulator, never in the core.
pub fn version() -> String {
    format!(
        "{} (features: {})",
        env!("CARGO_PKG_VERSION"),
        netabase::build_features().join(", ")
    )
}
