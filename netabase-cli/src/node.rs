//! `netabase node`: one long-lived node, controlled over standard input and a control
//! socket, with its metrics served over HTTP.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use netabase::store::RecordStoreConfig;
use netabase::swarm::NodeMetrics;
use netabase::swarm::prometheus_client::registry::Registry;
use netabase::{
    DEFAULT_DATA_DIR, DEFAULT_PROTOCOL_NAME, EventError, Multiaddr, Netabase, NetabaseConfig,
    NetabaseError, StorageBackend,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::control::{
    CONTROL_DIR, DataDirLock, Refusals, SetupError, Shared, TOKEN_NAME, check_data_dir,
    create_private_dir, generate_token, open_unix, own_uid, write_token_file,
};
use crate::exec::{Context, handle_line, peer_address};
use crate::lines::{Line, read_line};
use crate::models::CliDefinition;
use crate::protocol::{InfoReply, MAX_LINE, ModeName, Output, mode_name, mode_of};

/// The storage engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendName {
    /// A write is durable (fdatasync) when it is acknowledged.
    Redb,
    /// Writes are flushed before they are acknowledged.
    Sled,
}

/// The flags of `netabase node`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Where the database and the identity key live (created if missing). The peer id is
    /// kept across restarts on the same directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// An address to listen on, as a multiaddr (repeatable). Default: every interface,
    /// TCP and QUIC, on ports the system picks.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// The storage engine.
    #[arg(long, value_enum, default_value_t = BackendName::Redb)]
    pub backend: BackendName,
    /// The Kademlia protocol name (`/ipfs/kad/1.0.0` joins stock libp2p peers).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_PROTOCOL_NAME)]
    pub protocol: String,
    /// The DHT mode to start in.
    #[arg(long, value_enum, default_value_t = ModeName::Server)]
    pub mode: ModeName,
    /// A peer to join through, as a multiaddr ending in `/p2p/<peer id>` (repeatable). The
    /// node bootstraps through them when it starts.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS (multicast on every interface).
    /// Off by default.
    #[arg(long, overrides_with = "no_mdns")]
    pub mdns: bool,
    /// Do not use mDNS (the default).
    #[arg(long, overrides_with = "mdns")]
    pub no_mdns: bool,
    /// Serve Prometheus metrics over HTTP at `http://ADDR/metrics`: `PORT` (on
    /// 127.0.0.1) or `HOST:PORT` (port 0 picks one). The node warns when HOST is not a
    /// loopback address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// A host name the metrics endpoint answers to besides IP addresses and `localhost`
    /// (repeatable). Requests naming any other host are refused, so that a web page
    /// cannot read the metrics through a name it controls (DNS rebinding).
    #[arg(long = "metrics-host", value_name = "NAME", requires = "metrics")]
    pub metrics_hosts: Vec<String>,
    /// Also accept control commands on this TCP address, e.g. `127.0.0.1:7001` (port 0
    /// picks one). Every connection must first send the token the node writes to
    /// `--control-token-file`. The Unix socket `DATA_DIR/control/socket` is always open.
    #[arg(long, value_name = "HOST:PORT")]
    pub control: Option<String>,
    /// Where to write the TCP control endpoint's token (a new file of mode 0600, replaced
    /// at every start). Default: `DATA_DIR/control/token`.
    #[arg(long, value_name = "FILE", requires = "control")]
    pub control_token_file: Option<PathBuf>,
    /// Do not read commands from standard input.
    #[arg(long, conflicts_with = "stop_on_eof")]
    pub no_stdin: bool,
    /// Stop the node when standard input ends (for a supervisor that holds the node's
    /// standard input). Without it, the node keeps running.
    #[arg(long)]
    pub stop_on_eof: bool,
    /// Print the start-up and stop lines as JSON (`{"type":"ready",...}`).
    #[arg(long)]
    pub json: bool,
    /// The longest a lookup waits for one peer before going on without it, in
    /// milliseconds; 0 waits for every answer up to the request timeout. Default: adaptive,
    /// at most 2 s.
    #[arg(long, value_name = "MS")]
    pub lookup_patience_ms: Option<u64>,
    /// How long one DHT query may take, in milliseconds (default 60 s).
    #[arg(long, value_name = "MS")]
    pub query_timeout_ms: Option<u64>,
    /// Most records the node's DHT store holds (its own and other peers'); a put beyond
    /// it is refused.
    #[arg(long, value_name = "N", default_value_t = RecordStoreConfig::default().max_records)]
    pub max_records: usize,
    /// Most keys the node provides.
    #[arg(long, value_name = "N", default_value_t = RecordStoreConfig::default().max_provided_keys)]
    pub max_provided_keys: usize,
}

/// Why the node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A flag's value is invalid.
    #[error("{0}")]
    Config(String),
    /// An endpoint could not be opened.
    #[error("cannot listen for {what} on {address}: {source}")]
    Bind {
        /// Which endpoint.
        what: &'static str,
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory or a control endpoint could not be set up.
    #[error(transparent)]
    Control(#[from] SetupError),
    /// The node failed.
    #[error(transparent)]
    Node(#[from] NetabaseError),
    /// The runtime or the signal handlers could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The node's configuration from its flags.
pub fn config(args: &NodeArgs) -> Result<NetabaseConfig, NodeError> {
    let mut config = NetabaseConfig::default()
        .with_data_dir(&args.data_dir)
        .with_mdns(args.mdns && !args.no_mdns)
        .with_mode(mode_of(args.mode))
        .with_protocol_name(args.protocol.clone())
        .with_backend(match args.backend {
            BackendName::Redb => StorageBackend::Redb,
            BackendName::Sled => StorageBackend::Sled,
        });
    if !args.listen.is_empty() {
        config = config.with_listen_addresses(args.listen.iter().cloned());
    }
    for addr in &args.bootstrap {
        let (peer, addr) = peer_address(&addr.to_string(), None)
            .map_err(|e| NodeError::Config(format!("--bootstrap: {e}")))?;
        config = config.with_bootstrap_peer(peer, addr);
    }
    match args.lookup_patience_ms {
        Some(0) => config.kad.lookup_patience = None,
        Some(ms) => config.kad.lookup_patience = Some(Duration::from_millis(ms)),
        None => {}
    }
    if args.max_records == 0 || args.max_provided_keys == 0 {
        return Err(NodeError::Config(
            "--max-records and --max-provided-keys must be positive".into(),
        ));
    }
    config.record_store.max_records = args.max_records;
    config.record_store.max_provided_keys = args.max_provided_keys;
    if let Some(ms) = args.query_timeout_ms {
        if ms == 0 {
            return Err(NodeError::Config(
                "--query-timeout-ms must be positive".into(),
            ));
        }
        config.kad.query_timeout = Duration::from_millis(ms);
    }
    Ok(config)
}

/// Runs `netabase node` until SIGINT, SIGTERM, a `shutdown` command, or (with
/// `--stop-on-eof`) the end of standard input. Exit code 0 after a clean stop.
pub fn run(args: NodeArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(serve(args)),
        Err(e) => Err(NodeError::Io(e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netabase node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Standard output, written by one thread so that lines from concurrent commands never
/// interleave and a slow reader never blocks the node. Cheap to clone (clones write to the
/// same thread).
#[derive(Clone, Debug)]
pub struct Out(std::sync::mpsc::Sender<Option<String>>);

impl Out {
    /// Starts the writer thread; it ends at [`close`](Out::close) (once every line sent
    /// before is written) or when standard output fails (nobody reads it any more: the
    /// node goes on, and lines sent after that are dropped).
    pub fn start() -> (Out, std::thread::JoinHandle<()>) {
        let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
        let writer = std::thread::spawn(move || {
            let stdout = std::io::stdout();
            let mut stdout = stdout.lock();
            while let Ok(Some(line)) = rx.recv() {
                let written = stdout
                    .write_all(line.as_bytes())
                    .and_then(|()| stdout.write_all(b"\n"))
                    .and_then(|()| stdout.flush());
                if written.is_err() {
                    return;
                }
            }
        });
        (Out(tx), writer)
    }

    /// Writes `line` and a newline, and flushes.
    pub fn line(&self, line: String) {
        let _ = self.0.send(Some(line));
    }

    /// Ends the writer thread after the lines sent so far.
    pub fn close(&self) {
        let _ = self.0.send(None);
    }
}

fn backend_name(backend: BackendName) -> &'static str {
    match backend {
        BackendName::Redb => "redb",
        BackendName::Sled => "sled",
    }
}

async fn bind(what: &'static str, address: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| NodeError::Bind {
            what,
            address: address.to_string(),
            source,
        })
}

/// Why the node stops.
enum StopReason {
    Signal(&'static str),
    Command,
    EndOfInput,
}

/// The metrics address of `--metrics`: a port alone is on 127.0.0.1.
pub fn metrics_address(flag: &str) -> String {
    match flag.parse::<u16>() {
        Ok(port) => format!("127.0.0.1:{port}"),
        Err(_) => flag.to_string(),
    }
}

async fn serve(args: NodeArgs) -> Result<(), NodeError> {
    let mut config = config(&args)?;
    // The data directory holds the identity key and the control socket: it is created
    // private, must not be open to others, and is locked while the node runs.
    let uid = own_uid();
    create_private_dir(&args.data_dir)?;
    check_data_dir(&args.data_dir, uid)?;
    let lock = DataDirLock::acquire(&args.data_dir)?;
    let data_dir = std::fs::canonicalize(&args.data_dir).map_err(|source| SetupError::Io {
        path: args.data_dir.clone(),
        source,
    })?;
    // The endpoints are opened first, so a busy port fails before the database opens.
    let unix = open_unix(&data_dir, uid, &lock)?;
    // The token is written before the TCP endpoint listens, so a client that reaches the
    // endpoint reads this start's token, not one a previous run left behind.
    let token = match &args.control {
        Some(_) => {
            let token = generate_token()?;
            let path = args
                .control_token_file
                .clone()
                .unwrap_or_else(|| data_dir.join(CONTROL_DIR).join(TOKEN_NAME));
            write_token_file(&token, &path)?;
            Some((token, path))
        }
        None => None,
    };
    let control_tcp = match &args.control {
        Some(address) => Some(bind("control commands", address).await?),
        None => None,
    };
    let mut registry = args.metrics.as_ref().map(|_| Registry::default());
    let refusals = Refusals::new(registry.as_mut());
    let metrics = match (&args.metrics, registry) {
        (Some(flag), Some(mut registry)) => {
            let address = metrics_address(flag);
            let listener = bind("metrics", &address).await?;
            config = config.with_metrics(NodeMetrics::register(&mut registry));
            let endpoint = crate::http::MetricsEndpoint::new(&mut registry, &args.metrics_hosts);
            Some((listener, Arc::new(registry), endpoint))
        }
        _ => None,
    };
    let control_addr = match &control_tcp {
        Some(l) => Some(l.local_addr()?.to_string()),
        None => None,
    };
    let metrics_addr = match &metrics {
        Some((l, _, _)) => Some(l.local_addr()?.to_string()),
        None => None,
    };
    if let Some(l) = &control_tcp
        && !l.local_addr()?.ip().is_loopback()
    {
        tracing::warn!(
            address = control_addr.as_deref().unwrap_or_default(),
            "the TCP control endpoint is not on a loopback address; anyone who can reach it and learns its token controls the node"
        );
    }
    if let Some((l, _, _)) = &metrics
        && !l.local_addr()?.ip().is_loopback()
    {
        tracing::warn!(
            address = metrics_addr.as_deref().unwrap_or_default(),
            "the metrics endpoint is not on a loopback address; anyone who can reach it reads the node's metrics"
        );
    }

    let bootstrap = !config.bootstrap_peers.is_empty();
    let node = Netabase::<CliDefinition>::new_with_config(config)?;
    let mut events = node.subscribe_to_broadcasts();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => tracing::debug!(?event, "event"),
                Err(EventError::Lagged(missed)) => {
                    tracing::debug!(missed, "the event log fell behind");
                }
                Err(EventError::Closed) => return,
            }
        }
    });
    node.start_swarm().await?;
    let peer_id = node.local_peer_id();
    let listen_addresses = node.listen_addresses().await?;
    let info = InfoReply {
        peer_id: peer_id.to_string(),
        listen_addresses: listen_addresses.iter().map(ToString::to_string).collect(),
        protocol: args.protocol.clone(),
        mode: mode_name(node.get_mode().await?),
        data_dir: args.data_dir.display().to_string(),
        backend: backend_name(args.backend).to_string(),
        control: Some(unix.path.display().to_string()),
        control_tcp: control_addr.clone(),
        control_token_file: token.as_ref().map(|(_, p)| p.display().to_string()),
        metrics: metrics_addr.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    tracing::info!(
        peer = %peer_id,
        addresses = ?info.listen_addresses,
        control = %unix.path.display(),
        control_tcp = ?control_addr,
        metrics = ?metrics_addr,
        "node started"
    );

    let (out, writer) = Out::start();
    if args.json {
        out.line(Output::Ready(info.clone()).to_line());
    } else {
        out.line(human_ready(&info, args.mdns && !args.no_mdns));
    }

    let (shutdown_tx, mut shutdown_rx) = mpsc::channel(1);
    let ctx = Arc::new(Context {
        node: node.clone(),
        info,
        shutdown: shutdown_tx,
    });
    if let Some((listener, registry, endpoint)) = metrics {
        tokio::spawn(crate::http::serve_metrics(listener, registry, endpoint));
    }
    let shared = Shared::new(Arc::clone(&ctx), refusals);
    let socket_path = unix.path.clone();
    tokio::spawn(crate::control::serve_unix(
        unix.listener,
        uid,
        shared.clone(),
    ));
    if let (Some(listener), Some((token, _))) = (control_tcp, &token) {
        tokio::spawn(crate::control::serve_tcp(listener, token.clone(), shared));
    } else {
        drop(shared);
    }
    if bootstrap {
        let node = node.clone();
        tokio::spawn(async move {
            match node.bootstrap().await {
                Ok(r) => tracing::info!(
                    routing_table = r.routing_table_size,
                    "bootstrapped through the configured peers"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "bootstrap through the configured peers failed")
                }
            }
        });
    }
    let (eof_tx, mut eof_rx) = mpsc::channel::<()>(1);
    if !args.no_stdin {
        serve_stdin(Arc::clone(&ctx), out.clone(), eof_tx);
    } else {
        drop(eof_tx);
    }

    let reason = wait_for_stop(&mut shutdown_rx, &mut eof_rx, args.stop_on_eof).await?;
    let why = match reason {
        StopReason::Signal(name) => name,
        StopReason::Command => "the shutdown command",
        StopReason::EndOfInput => "the end of standard input",
    };
    tracing::info!(peer = %peer_id, "stopping on {why}");
    // A second signal while stopping ends the process at once.
    tokio::spawn(async {
        if wait_for_signal().await.is_ok() {
            eprintln!("netabase node: stopping again; exiting without waiting");
            std::process::exit(130);
        }
    });
    node.stop_swarm().await?;
    // Still under the data directory's lock: the socket and the token go.
    let _ = std::fs::remove_file(&socket_path);
    if let Some((_, path)) = &token {
        let _ = std::fs::remove_file(path);
    }
    drop(lock);
    drop(ctx);
    tracing::info!(peer = %peer_id, "node stopped");
    if args.json {
        out.line(
            Output::Stopped {
                peer_id: peer_id.to_string(),
            }
            .to_line(),
        );
    } else {
        out.line(format!("stopped {peer_id}"));
    }
    out.close();
    let _ = writer.join();
    Ok(())
}

fn human_ready(info: &InfoReply, mdns: bool) -> String {
    format!(
        "netabase node {}\n{}",
        info.version,
        info.describe(Some(mdns))
    )
}

#[cfg(unix)]
async fn wait_for_signal() -> Result<&'static str, NodeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[cfg(not(unix))]
async fn wait_for_signal() -> Result<&'static str, NodeError> {
    tokio::signal::ctrl_c().await?;
    Ok("Ctrl-C")
}

async fn wait_for_stop(
    shutdown: &mut mpsc::Receiver<()>,
    eof: &mut mpsc::Receiver<()>,
    stop_on_eof: bool,
) -> Result<StopReason, NodeError> {
    let end_of_input = async {
        if stop_on_eof {
            // The reader drops its sender at the end of input.
            let _ = eof.recv().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        signal = wait_for_signal() => Ok(StopReason::Signal(signal?)),
        _ = shutdown.recv() => Ok(StopReason::Command),
        () = end_of_input => Ok(StopReason::EndOfInput),
    }
}

/// Reads commands from standard input on a thread of its own; each runs on a task of its
/// own (at most [`MAX_IN_FLIGHT`](crate::control::MAX_IN_FLIGHT) at once: the next line is
/// read when one is answered) and its reply goes to standard output. At the end of input,
/// once every command read has been answered, `eof` is dropped.
fn serve_stdin(ctx: Arc<Context>, out: Out, eof: mpsc::Sender<()>) {
    let runtime = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        let mut running: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(crate::control::MAX_IN_FLIGHT));
        loop {
            let line = match read_line(&mut stdin, MAX_LINE) {
                Ok(Line::Eof) => break,
                Ok(line) => line,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read standard input");
                    break;
                }
            };
            let Ok(place) = runtime.block_on(Arc::clone(&in_flight).acquire_owned()) else {
                break;
            };
            let (ctx, out) = (Arc::clone(&ctx), out.clone());
            running.retain(|task| !task.is_finished());
            running.push(runtime.spawn(async move {
                out.line(reply_to(ctx, line).await.to_line());
                drop(place);
            }));
        }
        tracing::debug!("standard input ended");
        runtime.block_on(futures::future::join_all(running));
        drop(eof);
    });
}

/// The reply to one line read (a command, or a refusal of what could not be read).
async fn reply_to(ctx: Arc<Context>, line: Line) -> Output {
    match line {
        Line::Text(text) if text.trim().is_empty() => Output::reply(
            serde_json::Value::Null,
            Err("invalid request: empty line".into()),
        ),
        Line::Text(text) => handle_line(ctx, &text).await,
        Line::NotUtf8 => Output::reply(
            serde_json::Value::Null,
            Err("invalid request: the line is not UTF-8".into()),
        ),
        Line::TooLong => Output::reply(
            serde_json::Value::Null,
            Err(format!(
                "invalid request: the line is longer than {MAX_LINE} bytes"
            )),
        ),
        Line::Eof => Output::reply(serde_json::Value::Null, Err("end of input".into())),
    }
}
