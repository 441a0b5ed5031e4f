//! The command line: `netabase node`, the control subcommands, `netabase metrics`,
//! `netabase id` and `netabase sim`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::Value;

use crate::client::{Client, ClientError, Endpoint};
use crate::node::NodeArgs;
use crate::protocol::{
    BootstrapReply, Command, DocRecord, InfoReply, LocalRecord, ModeName, ProvideReply,
    ProviderEntry, PutReply, RawRecord, Removed, StatsReply,
};

/// Exit code of a command that failed, or of a `get` that found nothing.
pub const EXIT_FAILED: u8 = 1;
/// Exit code when the node's control endpoint cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// Run a Netabase node, control it, read its metrics, or run the simulator.
#[derive(Debug, Parser)]
#[command(name = "netabase", version, about, long_about = None)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Run a node until SIGINT or SIGTERM. Commands are read as JSON lines on standard
    /// input (replies go to standard output) and on the control socket in the data
    /// directory (and on TCP with --control).
    Node(NodeArgs),
    /// Print the peer id of the node keeping its data in DIR (creating its identity key
    /// if there is none yet), without starting it.
    Id {
        /// The node's data directory.
        #[arg(long, value_name = "DIR", default_value = netabase::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    },
    /// Who and where the node is: peer id, addresses, mode, endpoints.
    Info(Conn),
    /// Store a record (raw by default, a JSON document with --doc) and publish it.
    Put {
        #[command(flatten)]
        conn: Conn,
        /// VALUE is a JSON document.
        #[arg(long, conflicts_with = "hex")]
        doc: bool,
        /// VALUE is bytes in hex.
        #[arg(long)]
        hex: bool,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Find a record, on this node first, then on the network. Exit code 1 if not found.
    Get {
        #[command(flatten)]
        conn: Conn,
        /// A JSON document.
        #[arg(long)]
        doc: bool,
        /// The key.
        key: String,
    },
    /// Remove a record from the node (copies at other peers expire).
    Remove {
        #[command(flatten)]
        conn: Conn,
        /// A JSON document.
        #[arg(long)]
        doc: bool,
        /// The key.
        key: String,
    },
    /// List the records in the node's own store, in key order.
    List {
        #[command(flatten)]
        conn: Conn,
        /// Documents instead of raw records.
        #[arg(long)]
        doc: bool,
        /// Most records listed.
        #[arg(long, default_value_t = crate::protocol::DEFAULT_LIST_LIMIT)]
        limit: usize,
    },
    /// Put many records from a file of JSON lines, each {"key":..,"value":..},
    /// {"key":..,"value_hex":..} or {"key":..,"doc":..}; `-` reads standard input.
    Import {
        #[command(flatten)]
        conn: Conn,
        /// The file.
        file: PathBuf,
        /// Records in flight at once.
        #[arg(long, default_value_t = 32)]
        window: usize,
    },
    /// Announce the node as a provider of a key.
    Provide {
        #[command(flatten)]
        conn: Conn,
        /// A document key.
        #[arg(long)]
        doc: bool,
        /// The key.
        key: String,
    },
    /// Stop providing a key.
    StopProviding {
        #[command(flatten)]
        conn: Conn,
        /// A document key.
        #[arg(long)]
        doc: bool,
        /// The key.
        key: String,
    },
    /// Find the providers of a key.
    Providers {
        #[command(flatten)]
        conn: Conn,
        /// A document key.
        #[arg(long)]
        doc: bool,
        /// The key.
        key: String,
    },
    /// Add a peer's address to the routing table.
    AddAddress {
        #[command(flatten)]
        conn: Conn,
        /// The address, ending in /p2p/<peer id> unless --peer is given.
        address: String,
        /// The peer id.
        #[arg(long)]
        peer: Option<String>,
    },
    /// Remove a peer from the routing table.
    RemovePeer {
        #[command(flatten)]
        conn: Conn,
        /// The peer id.
        peer: String,
    },
    /// Join or refresh the DHT through the peers the node knows.
    Bootstrap(Conn),
    /// The peers the node has a connection to.
    Peers(Conn),
    /// The peers in the node's routing table.
    RoutingTable(Conn),
    /// Print the DHT mode, or switch it.
    Mode {
        #[command(flatten)]
        conn: Conn,
        /// The new mode.
        #[arg(value_enum)]
        set: Option<ModeName>,
    },
    /// The node's counters.
    Stats(Conn),
    /// Stop the node gracefully.
    Shutdown(Conn),
    /// Print a node's metrics (what Prometheus scrapes from http://ADDR/metrics).
    Metrics {
        /// The node's metrics address (its --metrics).
        address: String,
        /// Only the lines of metrics whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Run the deterministic simulator (the same commands as `netabase-sim`).
    Sim(netabase_sim::cli::Cli),
}

/// How to reach a running node.
#[derive(Debug, Clone, Args)]
pub(crate) struct Conn {
    /// The node: its data directory (the control socket inside it), the socket's path,
    /// or HOST:PORT of its TCP control endpoint (with --token-file).
    #[arg(long, env = "NETABASE_NODE", value_name = "DIR|SOCKET|HOST:PORT", default_value = netabase::DEFAULT_DATA_DIR)]
    pub(crate) node: String,
    /// The token file of a TCP control endpoint (the node's --control-token-file).
    #[arg(long, env = "NETABASE_TOKEN_FILE", value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// How long to keep trying while the node refuses connections (it may be starting),
    /// in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub(crate) wait: u64,
    /// How long to wait for an answer, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub(crate) timeout: u64,
}

impl Conn {
    fn connect(&self) -> Result<Client, ClientError> {
        Client::connect(
            &Endpoint::parse(&self.node, self.token_file.as_deref())?,
            Duration::from_secs(self.wait),
            Duration::from_secs(self.timeout.max(1)),
        )
    }
}

/// Runs one parsed command line; the process's exit code.
pub(crate) fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Cmd::Node(args) => crate::node::run(args),
        Cmd::Id { data_dir } => id(&data_dir),
        Cmd::Metrics { address, prefix } => metrics(&address, prefix.as_deref()),
        Cmd::Sim(sim) => netabase_sim::cli::run(sim),
        Cmd::Import { conn, file, window } => finish(&conn, import(&conn, &file, window)),
        other => control(other),
    }
}

fn id(data_dir: &std::path::Path) -> ExitCode {
    let result = crate::control::create_private_dir(data_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            netabase::swarm::load_or_create_identity(data_dir).map_err(|e| e.to_string())
        });
    match result {
        Ok(key) => {
            say(&key.public().to_peer_id().to_string());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netabase id: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn metrics(address: &str, prefix: Option<&str>) -> ExitCode {
    match crate::http::fetch(address, "/metrics", Duration::from_secs(10)) {
        Ok(body) => {
            let mut out = String::new();
            for line in body.lines() {
                let name = line
                    .strip_prefix("# HELP ")
                    .or_else(|| line.strip_prefix("# TYPE "))
                    .or_else(|| line.strip_prefix("# UNIT "))
                    .unwrap_or(line);
                if prefix.is_none_or(|p| name.starts_with(p)) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            print_raw(&out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netabase metrics: {e}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// Writes `text` to standard output (ignoring a closed pipe, as `head` leaves it).
fn print_raw(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Writes one line to standard output.
fn say(line: &str) {
    print_raw(&format!("{line}\n"));
}

/// What a finished control command tells the user.
enum Done {
    /// Success: print this (human) or the JSON value.
    Ok(Value, String),
    /// A `get` that found nothing.
    NotFound(String),
}

fn finish(conn: &Conn, result: Result<Done, ClientError>) -> ExitCode {
    match result {
        Ok(Done::Ok(value, human)) => {
            if conn.json {
                say(&value.to_string());
            } else if !human.is_empty() {
                say(&human);
            }
            ExitCode::SUCCESS
        }
        Ok(Done::NotFound(what)) => {
            if conn.json {
                say("null");
            } else {
                eprintln!("not found: {what}");
            }
            ExitCode::from(EXIT_FAILED)
        }
        Err(e) => {
            eprintln!("netabase: {e}");
            ExitCode::from(if e.is_unreachable() {
                EXIT_UNREACHABLE
            } else {
                EXIT_FAILED
            })
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, ClientError> {
    T::deserialize(value).map_err(|e| ClientError::Protocol(format!("unexpected result: {e}")))
}

/// A spinner on standard error while a long operation runs (only on a terminal, and not
/// with `--json`).
fn spinner(conn: &Conn, message: &str) -> ProgressBar {
    if conn.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn control(cmd: Cmd) -> ExitCode {
    let (conn, command, long) = match cmd {
        Cmd::Info(conn) => (conn, Command::Info, None),
        Cmd::Put {
            conn,
            doc,
            hex,
            key,
            value,
        } => {
            let command = if doc {
                match serde_json::from_str::<Value>(&value) {
                    Ok(doc) => Command::PutDoc { key, doc },
                    Err(e) => {
                        eprintln!("netabase put: the value is not a JSON document: {e}");
                        return ExitCode::from(EXIT_FAILED);
                    }
                }
            } else if hex {
                Command::Put {
                    key,
                    value: None,
                    value_hex: Some(value),
                }
            } else {
                Command::Put {
                    key,
                    value: Some(value),
                    value_hex: None,
                }
            };
            (conn, command, Some("publishing"))
        }
        Cmd::Get { conn, doc, key } => {
            let command = if doc {
                Command::GetDoc { key }
            } else {
                Command::Get { key }
            };
            (conn, command, Some("looking up"))
        }
        Cmd::Remove { conn, doc, key } => {
            let command = if doc {
                Command::RemoveDoc { key }
            } else {
                Command::Remove { key }
            };
            (conn, command, None)
        }
        Cmd::List { conn, doc, limit } => (conn, Command::List { doc, limit }, None),
        Cmd::Provide { conn, doc, key } => {
            (conn, Command::Provide { key, doc }, Some("announcing"))
        }
        Cmd::StopProviding { conn, doc, key } => (conn, Command::StopProviding { key, doc }, None),
        Cmd::Providers { conn, doc, key } => (
            conn,
            Command::Providers { key, doc },
            Some("looking up providers"),
        ),
        Cmd::AddAddress {
            conn,
            address,
            peer,
        } => (conn, Command::AddAddress { address, peer }, None),
        Cmd::RemovePeer { conn, peer } => (conn, Command::RemovePeer { peer }, None),
        Cmd::Bootstrap(conn) => (conn, Command::Bootstrap, Some("bootstrapping")),
        Cmd::Peers(conn) => (conn, Command::Peers, None),
        Cmd::RoutingTable(conn) => (conn, Command::RoutingTable, None),
        Cmd::Mode { conn, set } => match set {
            Some(mode) => (conn, Command::SetMode { mode }, None),
            None => (conn, Command::Mode, None),
        },
        Cmd::Stats(conn) => (conn, Command::Stats, None),
        Cmd::Shutdown(conn) => (conn, Command::Shutdown, None),
        Cmd::Node(_) | Cmd::Id { .. } | Cmd::Metrics { .. } | Cmd::Sim(_) | Cmd::Import { .. } => {
            // Dispatched by `run`.
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = conn.connect().and_then(|mut client| {
        let bar = long.map(|message| spinner(&conn, message));
        let result = client.call(command.clone());
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        describe(&command, result?)
    });
    finish(&conn, result)
}

fn display_value(text: Option<&str>, hex: &str) -> String {
    match text {
        Some(t) => t.to_string(),
        None => format!("0x{hex}"),
    }
}

fn peers_list(peers: &[String], none: &str) -> String {
    if peers.is_empty() {
        none.to_string()
    } else {
        peers.join("\n")
    }
}

/// The human-readable form of a command's result.
fn describe(command: &Command, value: Value) -> Result<Done, ClientError> {
    let human = match command {
        Command::Info => {
            let info: InfoReply = decode(&value)?;
            info.describe(None)
        }
        Command::Put { .. } | Command::PutDoc { .. } => {
            let put: PutReply = decode(&value)?;
            match &put.quorum_error {
                None => format!(
                    "stored {:?} here and at {} peer(s)",
                    put.key,
                    put.stored_at.len()
                ),
                Some(e) => format!(
                    "stored {:?} here; the network part fell short ({e}); the node publishes it again later",
                    put.key
                ),
            }
        }
        Command::Get { key } => {
            if value.is_null() {
                return Ok(Done::NotFound(key.clone()));
            }
            let r: RawRecord = decode(&value)?;
            display_value(r.value.as_deref(), &r.value_hex)
        }
        Command::GetDoc { key } => {
            if value.is_null() {
                return Ok(Done::NotFound(key.clone()));
            }
            let r: DocRecord = decode(&value)?;
            serde_json::to_string_pretty(&r.doc)
                .map_err(|e| ClientError::Protocol(e.to_string()))?
        }
        Command::Remove { key } | Command::RemoveDoc { key } => {
            let r: Removed = decode(&value)?;
            if r.removed {
                format!("removed {key:?}")
            } else {
                format!("{key:?} was not stored here")
            }
        }
        Command::List { .. } => {
            let records: Vec<LocalRecord> = decode(&value)?;
            records
                .iter()
                .map(|r| match &r.doc {
                    Some(doc) => format!("{}\t{doc}", r.key),
                    None => format!(
                        "{}\t{}",
                        r.key,
                        display_value(r.value.as_deref(), r.value_hex.as_deref().unwrap_or(""))
                    ),
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        Command::Provide { .. } => {
            let r: ProvideReply = decode(&value)?;
            match &r.error {
                None => format!(
                    "providing {:?}; announced to {} peer(s)",
                    r.key,
                    r.announced_to.len()
                ),
                Some(e) => format!(
                    "providing {:?}; no peer reached yet ({e}); the node announces it again later",
                    r.key
                ),
            }
        }
        Command::StopProviding { key, .. } => format!("no longer providing {key:?}"),
        Command::Providers { key, .. } => {
            let providers: Vec<ProviderEntry> = decode(&value)?;
            if providers.is_empty() {
                format!("no providers of {key:?} found")
            } else {
                providers
                    .iter()
                    .map(|p| format!("{} {}", p.peer, p.addresses.join(" ")))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
        Command::AddAddress { .. } => "added".to_string(),
        Command::RemovePeer { peer } => {
            let r: Removed = decode(&value)?;
            if r.removed {
                format!("removed {peer}")
            } else {
                format!("{peer} was not in the routing table")
            }
        }
        Command::Bootstrap => {
            let r: BootstrapReply = decode(&value)?;
            format!(
                "bootstrapped: {} peer(s) in the routing table ({} requests)",
                r.routing_table_size, r.requests
            )
        }
        Command::Peers => peers_list(&decode::<Vec<String>>(&value)?, "no connected peers"),
        Command::RoutingTable => peers_list(
            &decode::<Vec<String>>(&value)?,
            "the routing table is empty",
        ),
        Command::Mode | Command::SetMode { .. } => decode::<ModeName>(&value)?.to_string(),
        Command::Stats => {
            let StatsReply {
                counters: c,
                connected_peers,
                routing_table_peers,
                local_raw_records,
                local_documents,
            } = decode(&value)?;
            [
                ("local raw records", local_raw_records),
                ("local documents", local_documents),
                ("connected peers", connected_peers as u64),
                ("routing table peers", routing_table_peers as u64),
                ("requests sent", c.requests_sent),
                ("responses received", c.responses_received),
                ("requests failed", c.requests_failed),
                ("requests timed out", c.requests_timed_out),
                ("unexpected responses", c.unexpected_responses),
                ("mismatched responses", c.mismatched_responses),
                ("inbound requests", c.inbound_requests),
                ("inbound rejected", c.inbound_rejected),
                ("invalid records", c.invalid_records),
                ("inbound stream failures", c.inbound_stream_failures),
                ("queries finished", c.queries_finished),
            ]
            .iter()
            .map(|(name, v)| format!("{name:<24} {v}"))
            .collect::<Vec<_>>()
            .join("\n")
        }
        Command::Shutdown => "the node is stopping".to_string(),
    };
    Ok(Done::Ok(value, human))
}

/// One line of an import file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportLine {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_hex: Option<String>,
    #[serde(default)]
    doc: Option<Value>,
}

impl ImportLine {
    fn command(self) -> Result<Command, String> {
        match (self.value, self.value_hex, self.doc) {
            (Some(value), None, None) => Ok(Command::Put {
                key: self.key,
                value: Some(value),
                value_hex: None,
            }),
            (None, Some(value_hex), None) => Ok(Command::Put {
                key: self.key,
                value: None,
                value_hex: Some(value_hex),
            }),
            (None, None, Some(doc)) => Ok(Command::PutDoc { key: self.key, doc }),
            _ => Err("needs exactly one of \"value\", \"value_hex\" and \"doc\"".into()),
        }
    }
}

/// The commands of an import file, or for each bad line its number and why.
fn import_commands(reader: impl BufRead) -> Result<Vec<Result<Command, String>>, ClientError> {
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str::<ImportLine>(&line)
                .map_err(|e| e.to_string())
                .and_then(ImportLine::command),
        );
    }
    Ok(out)
}

fn import(conn: &Conn, file: &std::path::Path, window: usize) -> Result<Done, ClientError> {
    let commands = if file == std::path::Path::new("-") {
        import_commands(std::io::stdin().lock())?
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| ClientError::Failed(format!("{}: {e}", file.display())))?;
        import_commands(std::io::BufReader::new(f))?
    };
    let mut client = conn.connect()?;
    let bar = if conn.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(commands.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} records [{elapsed}, {per_sec}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let started = Instant::now();
    let mut errors: Vec<String> = Vec::new();
    let mut lines_of = std::collections::HashMap::new();
    let mut in_flight = 0usize;
    let mut stored = 0u64;
    let receive = |client: &mut Client,
                   lines_of: &mut std::collections::HashMap<u64, usize>,
                   errors: &mut Vec<String>,
                   stored: &mut u64|
     -> Result<(), ClientError> {
        let (req, result) = client.receive()?;
        let line = lines_of.remove(&req).unwrap_or(0);
        match result {
            Ok(_) => *stored += 1,
            Err(e) => errors.push(format!("line {line}: {e}")),
        }
        bar.inc(1);
        Ok(())
    };
    for (i, command) in commands.into_iter().enumerate() {
        match command {
            Ok(command) => {
                while in_flight >= window.max(1) {
                    receive(&mut client, &mut lines_of, &mut errors, &mut stored)?;
                    in_flight -= 1;
                }
                let req = client.send(command)?;
                lines_of.insert(req, i + 1);
                in_flight += 1;
            }
            Err(e) => {
                errors.push(format!("line {}: {e}", i + 1));
                bar.inc(1);
            }
        }
    }
    while in_flight > 0 {
        receive(&mut client, &mut lines_of, &mut errors, &mut stored)?;
        in_flight -= 1;
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let value = serde_json::json!({
        "stored": stored,
        "failed": errors.len(),
        "errors": errors,
        "seconds": seconds,
    });
    let mut human = format!(
        "stored {stored} record(s) in {seconds:.2} s; {} failed",
        errors.len()
    );
    for e in errors.iter().take(10) {
        human.push_str(&format!("\n  {e}"));
    }
    if errors.is_empty() {
        Ok(Done::Ok(value, human))
    } else {
        if conn.json {
            say(&value.to_string());
        } else {
            say(&human);
        }
        Err(ClientError::Failed(format!(
            "{} record(s) were not stored",
            errors.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn import_lines_name_exactly_one_value() {
        let input = concat!(
            "{\"key\":\"a\",\"value\":\"x\"}\n",
            "\n",
            "{\"key\":\"b\",\"value_hex\":\"00ff\"}\n",
            "{\"key\":\"c\",\"doc\":{\"n\":1}}\n",
            "{\"key\":\"d\"}\n",
            "{\"key\":\"e\",\"value\":\"x\",\"doc\":1}\n",
            "{\"key\":\"f\",\"valeu\":\"typo\"}\n",
            "not json\n",
        );
        let commands = import_commands(input.as_bytes()).unwrap();
        assert_eq!(commands.len(), 7);
        assert_eq!(
            commands[0],
            Ok(Command::Put {
                key: "a".into(),
                value: Some("x".into()),
                value_hex: None
            })
        );
        assert!(matches!(&commands[1], Ok(Command::Put { value_hex: Some(h), .. }) if h == "00ff"));
        assert!(matches!(&commands[2], Ok(Command::PutDoc { key, .. }) if key == "c"));
        for bad in &commands[3..] {
            assert!(bad.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn results_are_described_for_people() {
        let found = serde_json::json!({
            "key": "k", "value": null, "value_hex": "00ff", "source": null,
            "origin": "p", "timestamp": 1
        });
        match describe(&Command::Get { key: "k".into() }, found).unwrap() {
            Done::Ok(_, human) => assert_eq!(human, "0x00ff"),
            Done::NotFound(_) => panic!("found"),
        }
        assert!(matches!(
            describe(&Command::Get { key: "k".into() }, Value::Null).unwrap(),
            Done::NotFound(k) if k == "k"
        ));
        assert!(describe(&Command::Stats, serde_json::json!({"nonsense": 1})).is_err());
    }
}
