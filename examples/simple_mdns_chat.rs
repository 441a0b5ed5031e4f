//! A chat on the local network: peers find each other with mDNS, every line typed is put
//! as a typed `Message` record on the DHT, and the other peers show it as it arrives.
//!
//! Run it in two terminals (or on two machines of one network):
//!
//! ```sh
//! cargo run --example simple_mdns_chat
//! ```
//!
//! It runs on tokio, async-std or smol, whichever `--runtime` names (among those whose
//! features of the `netabase` crate are on; the default is tokio), and chats on different
//! runtimes talk to each other:
//!
//! ```sh
//! cargo run --example simple_mdns_chat --features async-std -- --runtime async-std
//! cargo run --example simple_mdns_chat --features smol -- --runtime smol
//! ```
//!
//! The chat itself is written once, generic over the runtime: standard input is read on a
//! thread of its own and fed to the chat through a futures channel, beside the node's event
//! stream.
//!
//! Type a line to send it; `/history` lists the messages this peer has seen, `/peers` the
//! peers it knows, `/help` the commands, and `quit` (or end of input) leaves.
//!
//! Flags (and environment variables): `--runtime` (`NETABASE_CHAT_RUNTIME`), `--name`
//! (`NETABASE_CHAT_NAME`), `--listen`
//! (`NETABASE_CHAT_LISTEN`, comma-separated multiaddrs, default `/ip4/0.0.0.0/tcp/0`),
//! `--data-dir` (`NETABASE_CHAT_DATA_DIR`; default: a temporary directory removed on exit,
//! so the history lasts one session), `--mdns true|false` (`NETABASE_CHAT_MDNS`, default
//! on), `--peer /ip4/…/tcp/…/p2p/<peer id>` (`NETABASE_CHAT_PEERS`) to join a peer
//! directly, without mDNS.

// An interactive example talks to its user on standard output.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures::StreamExt;
use futures::channel::mpsc;
use netabase::core::model::Envelope;
use netabase::swarm::Runtime;
use netabase::swarm::libp2p::multiaddr::Protocol;
use netabase::{
    EventError, Multiaddr, NetabaseConfig, NetabaseEvent, PeerId, RecordKey,
    netabase_definition_module,
};

/// The chat's records.
// The macro generates public key types without documentation of their own.
#[allow(missing_docs)]
#[netabase_definition_module(ChatDefinition, ChatKeys)]
pub mod chat {
    use netabase::NetabaseModel;

    /// One chat message.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        /// Microseconds since the Unix epoch times 1000, plus a number of its writer: unique
        /// per writer and ordered by time, so the store lists messages in the order sent.
        #[primary_key]
        pub id: u64,
        /// Who wrote it (indexed).
        #[secondary_key]
        pub author: String,
        /// What was written.
        pub text: String,
    }
}
use chat::{ChatDefinition, Message};

/// A chat node on runtime `R`.
type Node<R> = netabase::swarm::Netabase<ChatDefinition, R>;

/// The async runtimes the chat can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeName {
    /// tokio (feature `tokio`, the default).
    Tokio,
    /// async-std (feature `async-std`).
    AsyncStd,
    /// smol (feature `smol`).
    Smol,
}

impl RuntimeName {
    /// Its name on the command line and as a cargo feature.
    fn name(self) -> &'static str {
        match self {
            RuntimeName::Tokio => "tokio",
            RuntimeName::AsyncStd => "async-std",
            RuntimeName::Smol => "smol",
        }
    }

    /// The runtime used without `--runtime`: tokio if this build has it, else async-std,
    /// else smol.
    fn default_built() -> Option<RuntimeName> {
        [
            (cfg!(feature = "tokio"), RuntimeName::Tokio),
            (cfg!(feature = "async-std"), RuntimeName::AsyncStd),
            (cfg!(feature = "smol"), RuntimeName::Smol),
        ]
        .into_iter()
        .find_map(|(built, name)| built.then_some(name))
    }
}

/// A chat on the local network over Netabase (mDNS discovery, messages as DHT records).
#[derive(Debug, Parser)]
#[command(name = "simple_mdns_chat")]
struct Args {
    /// The async runtime to run on (default: tokio, or the first of async-std and smol
    /// this build has).
    #[arg(long, env = "NETABASE_CHAT_RUNTIME", value_enum)]
    runtime: Option<RuntimeName>,
    /// The name shown with your messages (default: the end of your peer id).
    #[arg(long, env = "NETABASE_CHAT_NAME")]
    name: Option<String>,
    /// Addresses to listen on.
    #[arg(
        long = "listen",
        env = "NETABASE_CHAT_LISTEN",
        value_delimiter = ',',
        default_value = "/ip4/0.0.0.0/tcp/0"
    )]
    listen: Vec<Multiaddr>,
    /// Where the messages and the identity key are kept (default: a temporary directory,
    /// removed on exit).
    #[arg(long, env = "NETABASE_CHAT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Discover peers on the local network with mDNS.
    #[arg(long, env = "NETABASE_CHAT_MDNS", default_value_t = true, action = clap::ArgAction::Set)]
    mdns: bool,
    /// A peer to join directly, as `<multiaddr>/p2p/<peer id>`.
    #[arg(long = "peer", env = "NETABASE_CHAT_PEERS", value_delimiter = ',')]
    peers: Vec<Multiaddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.runtime.or_else(RuntimeName::default_built) {
        Some(runtime) => run_on(runtime, args),
        None => Err(
            "this build has no runtime: build it with the feature tokio, async-std \
                     or smol of the netabase crate"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simple_mdns_chat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chat on `runtime`.
fn run_on(runtime: RuntimeName, args: Args) -> Result<(), String> {
    match runtime {
        #[cfg(feature = "tokio")]
        RuntimeName::Tokio => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the tokio runtime: {e}"))?
            .block_on(run::<netabase::TokioRuntime>(args)),
        #[cfg(feature = "async-std")]
        RuntimeName::AsyncStd => async_std::task::block_on(run::<netabase::AsyncStdRuntime>(args)),
        #[cfg(feature = "smol")]
        RuntimeName::Smol => smol::block_on(run::<netabase::SmolRuntime>(args)),
        // Only reachable in a build without every runtime feature.
        #[allow(unreachable_patterns)]
        other => Err(format!(
            "this build has no {0} runtime: build it with `--features {0}`",
            other.name()
        )),
    }
}

/// `/p2p/<peer>` split off a multiaddr.
fn split_peer(addr: &Multiaddr) -> Result<(PeerId, Multiaddr), String> {
    let mut addr = addr.clone();
    match addr.pop() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(format!("{addr}: a peer address must end in /p2p/<peer id>")),
    }
}

/// The last characters of a peer id, enough to tell peers apart on one network.
fn short(peer: &PeerId) -> String {
    let s = peer.to_string();
    s[s.len().saturating_sub(6)..].to_string()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `hh:mm:ss` (UTC) of a message id.
fn clock(id: u64) -> String {
    let secs = id / 1000 / 1_000_000;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

fn show(message: &Message) -> String {
    format!(
        "[{}] {}: {}",
        clock(message.id),
        message.author,
        message.text
    )
}

const HELP: &str = "\
commands:
  <text>     send a message to every peer
  /history   list the messages this peer has seen, oldest first
  /peers     list the peers in the routing table
  /help      show this list
  quit       leave (also /quit, or end of input)";

/// What the chat loop reacts to: a typed line, the end of input, or a node event.
enum Input {
    Line(String),
    End,
    Event(Result<NetabaseEvent, EventError>),
}

/// The running chat: the node, who we are, and what we have shown.
struct Chat<R: Runtime> {
    node: Node<R>,
    name: String,
    /// A number of this writer mixed into message ids.
    writer: u64,
    /// The last id used, so ids strictly increase.
    last_id: u64,
    announced: HashSet<PeerId>,
    /// Messages received from other peers in this session, by id (this peer's own are in
    /// its typed store).
    received: BTreeMap<u64, Message>,
}

/// The chat on runtime `R`, until `quit` or the end of input.
async fn run<R: Runtime>(args: Args) -> Result<(), String> {
    // Without --data-dir, a directory of this session only (two chats on one machine then
    // never share one).
    let (data_dir, _session_dir) = match &args.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("netabase-chat-")
                .tempdir()
                .map_err(|e| format!("temporary directory: {e}"))?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    let mut config = NetabaseConfig::default()
        .with_data_dir(&data_dir)
        .with_listen_addresses(args.listen.iter().cloned())
        .with_mdns(args.mdns);
    for addr in &args.peers {
        let (peer, addr) = split_peer(addr)?;
        config = config.with_bootstrap_peer(peer, addr);
    }
    let node = Node::<R>::new_with_config(config).map_err(|e| e.to_string())?;
    let events = node.subscribe_to_broadcasts();
    node.start_swarm().await.map_err(|e| e.to_string())?;
    let me = node.local_peer_id();
    let name = args.name.unwrap_or_else(|| format!("peer-{}", short(&me)));
    println!("Netabase chat: you are {name:?} (peer {me})");
    println!("runtime: {}", R::NAME);
    for addr in node.listen_addresses().await.map_err(|e| e.to_string())? {
        println!("listening on {addr}/p2p/{me}");
    }
    if args.mdns {
        println!("mDNS is on: chats on this network join by themselves.");
    } else {
        println!("mDNS is off: peers join with --peer <address>/p2p/<peer id>.");
    }
    println!("Type a message and press enter; /help lists the commands.");
    if !args.peers.is_empty() {
        // Errors here only mean nobody answered yet; mDNS or later joins fill the table.
        let _ = node.bootstrap().await;
    }

    let writer = me
        .to_bytes()
        .iter()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
        % 1000;
    let mut chat = Chat {
        node: node.clone(),
        name,
        writer,
        last_id: 0,
        announced: HashSet::new(),
        received: BTreeMap::new(),
    };

    // Standard input is read on a thread of its own (any runtime can wait on the channel);
    // the channel closes at the end of input.
    let (lines_tx, lines) = mpsc::unbounded::<String>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if lines_tx
                        .unbounded_send(line.trim_end().to_string())
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let lines = lines
        .map(Input::Line)
        .chain(futures::stream::once(async { Input::End }));
    let mut inputs = std::pin::pin!(futures::stream::select(lines, events.map(Input::Event)));

    while let Some(input) = inputs.next().await {
        match input {
            Input::Line(line) => {
                if !chat.on_line(line.trim()).await? {
                    break;
                }
            }
            Input::End | Input::Event(Err(EventError::Closed)) => break,
            Input::Event(Err(EventError::Lagged(n))) => println!("* missed {n} network events"),
            Input::Event(Ok(event)) => chat.on_event(event),
        }
    }
    node.stop_swarm().await.map_err(|e| e.to_string())?;
    println!("bye");
    Ok(())
}

impl<R: Runtime> Chat<R> {
    /// Handles one typed line; `false` to leave.
    async fn on_line(&mut self, line: &str) -> Result<bool, String> {
        match line {
            "" => {}
            "quit" | "/quit" | "/exit" => return Ok(false),
            "/help" => println!("{HELP}"),
            "/history" => self.history()?,
            "/peers" => {
                let peers = self
                    .node
                    .routing_table_peers()
                    .await
                    .map_err(|e| e.to_string())?;
                println!("{} peer(s):", peers.len());
                for peer in peers {
                    println!("  {peer}");
                }
            }
            command if command.starts_with('/') => {
                println!("unknown command {command}; /help lists the commands");
            }
            text => self.send(text).await?,
        }
        Ok(true)
    }

    fn history(&self) -> Result<(), String> {
        let store = self.node.local_store().map_err(|e| e.to_string())?;
        let mut messages: BTreeMap<u64, Message> = store
            .query::<Message>(usize::MAX)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|m| (m.id, m))
            .collect();
        messages.extend(self.received.iter().map(|(id, m)| (*id, m.clone())));
        let messages: Vec<Message> = messages.into_values().collect();
        println!("history: {} message(s)", messages.len());
        for message in &messages {
            println!("  {}", show(message));
        }
        Ok(())
    }

    async fn send(&mut self, text: &str) -> Result<(), String> {
        let id = (now_micros().saturating_mul(1000) + self.writer).max(self.last_id + 1);
        self.last_id = id;
        let message = Message {
            id,
            author: self.name.clone(),
            text: text.to_string(),
        };
        // Stored in this peer's database first, then published to its closest peers.
        match self.node.put_record(message).await {
            Ok(put) if put.peer_count() > 0 => {
                println!("(delivered to {} peer(s))", put.peer_count());
            }
            Ok(_) => println!("(saved here; no peer reached yet)"),
            Err(e) => println!("(not sent: {e})"),
        }
        Ok(())
    }

    fn on_event(&mut self, event: NetabaseEvent) {
        match event {
            NetabaseEvent::PeerDiscovered { peer, address } if self.announced.insert(peer) => {
                println!("* discovered peer {} at {address}", short(&peer));
            }
            NetabaseEvent::RoutingTablePeerAdded { peer } => {
                println!("* peer {} joined the chat", short(&peer));
            }
            NetabaseEvent::RoutingTablePeerRemoved { peer } => {
                println!("* peer {} left the chat", short(&peer));
            }
            NetabaseEvent::RecordStored { key, from } => self.received(&key, from),
            _ => {}
        }
    }

    /// A peer stored a record here: if it is a message not seen before, keep it (for
    /// `/history`) and show it.
    fn received(&mut self, key: &RecordKey, from: PeerId) {
        match self.open(key) {
            Ok(Some(message)) => println!("{}", show(&message)),
            Ok(None) => {}
            Err(e) => println!("* an unreadable record from {}: {e}", short(&from)),
        }
    }

    /// The new message stored under `key` in this node's DHT store, if there is one.
    fn open(&mut self, key: &RecordKey) -> Result<Option<Message>, String> {
        let Some(record) = self.node.local_record(key).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let (value, _envelope) =
            Envelope::open::<ChatDefinition>(key, &record.value).map_err(|e| e.to_string())?;
        let Ok(message) = Message::try_from(value) else {
            return Ok(None);
        };
        if self.received.contains_key(&message.id) {
            return Ok(None);
        }
        self.received.insert(message.id, message.clone());
        Ok(Some(message))
    }
}
