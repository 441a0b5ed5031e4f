//! Running test-node processes: spawning, JSON-lines requests with deadlines, events, and
//! networks joined through one bootstrap node. Every node listens on 127.0.0.1 with mDNS
//! off unless a test puts it in a network namespace of its own.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as Process, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use netabase_testnode::{
    BootstrapReply, Command, Event, Found, LocalRecord, Message, Output, StatsReply,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tempfile::TempDir;

/// How long any single wait may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// The test node binary.
pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_netabase-test-node")
}

pub(crate) fn message(id: u64, text: &str) -> Message {
    Message {
        id,
        author: format!("author-{id}"),
        text: text.to_string(),
    }
}

/// The async runtimes a node process can run on (its `--runtime` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rt {
    Tokio,
    AsyncStd,
    Smol,
}

impl Rt {
    /// Every runtime.
    pub(crate) const ALL: [Rt; 3] = [Rt::Tokio, Rt::AsyncStd, Rt::Smol];

    /// The value of the `--runtime` flag (and of the ready line's `runtime`).
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Rt::Tokio => "tokio",
            Rt::AsyncStd => "async-std",
            Rt::Smol => "smol",
        }
    }

    /// The runtime a per-runtime test is named after (`tokio`, `async_std`, `smol`).
    pub(crate) fn from_test_name(name: &str) -> Rt {
        Rt::ALL
            .into_iter()
            .find(|rt| rt.flag().replace('-', "_") == name)
            .unwrap_or_else(|| panic!("no runtime {name}"))
    }
}

/// What the reader thread passes on: a parsed line, or a line that is not one.
type Line = Result<Output, String>;

/// How to start a node process.
pub(crate) struct Spawn {
    name: String,
    args: Vec<String>,
    data_dir: Option<PathBuf>,
    netns: Option<String>,
    listen_set: bool,
    runtime: Rt,
}

impl Spawn {
    /// A server node named `name` (in logs), on 127.0.0.1, mDNS off, short timeouts.
    ///
    /// Lookups wait for every answer up to the request timeout: with the node's adaptive
    /// patience (250 ms on a fast link), a loaded 2-core machine can delay an answer long
    /// enough for a lookup whose only peer is that one to end with no peer at all.
    pub(crate) fn new(name: &str, runtime: Rt) -> Self {
        let args = [
            "--request-timeout-ms",
            "3000",
            "--query-timeout-ms",
            "8000",
            "--stream-timeout-ms",
            "3000",
            "--lookup-patience-ms",
            "0",
        ];
        Spawn {
            name: name.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            data_dir: None,
            netns: None,
            listen_set: false,
            runtime,
        }
    }

    pub(crate) fn arg(mut self, flag: &str, value: &str) -> Self {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }

    pub(crate) fn client(self) -> Self {
        self.arg("--mode", "client")
    }

    /// Joins through `node` (its first address).
    pub(crate) fn bootstrap(self, node: &NodeProc) -> Self {
        let addr = node.p2p_addr();
        self.arg("--bootstrap", &addr)
    }

    /// Keeps the data in `dir` (which outlives the process).
    pub(crate) fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub(crate) fn listen(mut self, addr: &str) -> Self {
        self.listen_set = true;
        self.arg("--listen", addr)
    }

    /// Runs the node inside network namespace `ns` with mDNS on.
    pub(crate) fn in_namespace_with_mdns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_string());
        self.args.push("--mdns".to_string());
        self
    }

    /// Starts the process; [`Launched::ready`] waits for it to come up.
    pub(crate) fn launch(self) -> Launched {
        assert!(
            self.netns.is_some() || !self.args.iter().any(|a| a == "--mdns"),
            "mDNS only inside a network namespace"
        );
        let (dir, owned) = match self.data_dir {
            Some(dir) => (dir, None),
            None => {
                let tmp = tempfile::tempdir().expect("temporary directory");
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let mut args = vec!["--data-dir".to_string(), dir.display().to_string()];
        if !self.listen_set {
            args.extend(["--listen".to_string(), "/ip4/127.0.0.1/tcp/0".to_string()]);
        }
        args.extend(["--runtime".to_string(), self.runtime.flag().to_string()]);
        args.extend(self.args);
        let mut process = match &self.netns {
            Some(ns) => {
                let mut p = Process::new("ip");
                p.args(["netns", "exec", ns, binary()]);
                p
            }
            None => Process::new(binary()),
        };
        let mut child = process
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel::<Line>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let parsed = serde_json::from_str::<Output>(&line).map_err(|_| line);
                if tx.send(parsed).is_err() {
                    return;
                }
            }
        });
        let name = self.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("[{name}] {line}");
            }
        });
        Launched {
            runtime: self.runtime,
            node: NodeProc {
                name: self.name,
                stdin: child.stdin.take(),
                child,
                lines: rx,
                events: Vec::new(),
                replies: HashMap::new(),
                refused_lines: Vec::new(),
                next_req: 1,
                peer_id: String::new(),
                addrs: Vec::new(),
                _dir: owned,
            },
        }
    }

    /// Starts the process and waits until it is ready.
    pub(crate) fn start(self) -> NodeProc {
        self.launch().ready()
    }
}

/// A started process that has not reported ready yet.
pub(crate) struct Launched {
    node: NodeProc,
    runtime: Rt,
}

impl Launched {
    /// Waits for the node's ready line.
    pub(crate) fn ready(mut self) -> NodeProc {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.node.next_line(deadline, "its ready line") {
                Output::Ready {
                    peer_id,
                    listen_addresses,
                    runtime,
                    ..
                } => {
                    assert_eq!(runtime, self.runtime.flag(), "{}", self.node.name);
                    self.node.peer_id = peer_id;
                    self.node.addrs = listen_addresses;
                    return self.node;
                }
                other => self.node.absorb(other),
            }
        }
    }
}

/// A running test node process. Dropping it kills the process.
pub(crate) struct NodeProc {
    pub(crate) name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    /// Every event the node reported, in order.
    events: Vec<Event>,
    replies: HashMap<u64, Result<Value, String>>,
    /// Why the node refused input lines, in order.
    refused_lines: Vec<String>,
    next_req: u64,
    /// The node's peer id.
    pub(crate) peer_id: String,
    /// Its listen addresses.
    pub(crate) addrs: Vec<String>,
    _dir: Option<TempDir>,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the node saw, for the failure report.
            self.drain();
            let from = self.events.len().saturating_sub(60);
            for event in &self.events[from..] {
                eprintln!("[{}] event: {event:?}", self.name);
            }
        }
        // Already exited, or killed here: either way it is reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeProc {
    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its first listen address with `/p2p/<id>`.
    pub(crate) fn p2p_addr(&self) -> String {
        format!("{}/p2p/{}", self.addrs[0], self.peer_id)
    }

    fn next_line(&mut self, deadline: Instant, what: &str) -> Output {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(Ok(output)) => output,
            Ok(Err(line)) => panic!("{}: not a JSON line on stdout: {line:?}", self.name),
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: timed out waiting for {what}", self.name)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                panic!(
                    "{}: exited ({status:?}) while waiting for {what}",
                    self.name
                )
            }
        }
    }

    /// Files a line away (an event or a reply).
    fn absorb(&mut self, output: Output) {
        match output {
            Output::Event { event } => self.events.push(event),
            Output::Reply {
                req,
                ok,
                result,
                error,
            } => {
                let outcome = if ok {
                    Ok(result)
                } else {
                    Err(error.unwrap_or_default())
                };
                self.replies.insert(req, outcome);
            }
            Output::Invalid { error } => self.refused_lines.push(error),
            Output::Ready { .. } => panic!("{}: a second ready line", self.name),
        }
    }

    /// Takes in every line that has arrived, without waiting.
    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            match line {
                Ok(output) => self.absorb(output),
                Err(line) => panic!("{}: not a JSON line on stdout: {line:?}", self.name),
            }
        }
    }

    /// Writes a raw line to the node's stdin.
    pub(crate) fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("node reads stdin");
        stdin.flush().expect("node reads stdin");
    }

    /// Sends a command without waiting; returns its request number.
    pub(crate) fn send(&mut self, command: Command) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        let line = serde_json::to_string(&netabase_testnode::Request { req, command })
            .expect("request encodes");
        self.write_line(&line);
        req
    }

    /// Waits for the reply to request `req`.
    pub(crate) fn reply(&mut self, req: u64) -> Result<Value, String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(outcome) = self.replies.remove(&req) {
                return outcome;
            }
            let line = self.next_line(deadline, &format!("the reply to request {req}"));
            self.absorb(line);
        }
    }

    /// Sends `command` unless the node's standard input is closed (the process died);
    /// returns its request number.
    pub(crate) fn try_send(&mut self, command: Command) -> Option<u64> {
        let req = self.next_req;
        self.next_req += 1;
        let line = serde_json::to_string(&netabase_testnode::Request { req, command })
            .expect("request encodes");
        let stdin = self.stdin.as_mut()?;
        writeln!(stdin, "{line}").ok()?;
        stdin.flush().ok()?;
        Some(req)
    }

    /// Waits up to `deadline` for the reply to request `req`; `None` if the node's output
    /// ended first (the process died or exited).
    pub(crate) fn reply_unless_gone(
        &mut self,
        req: u64,
        deadline: Instant,
    ) -> Option<Result<Value, String>> {
        loop {
            if let Some(outcome) = self.replies.remove(&req) {
                return Some(outcome);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Ok(output)) => self.absorb(output),
                Ok(Err(line)) => panic!("{}: not a JSON line on stdout: {line:?}", self.name),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: timed out waiting for the reply to {req}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Waits for the reply to `req` and decodes it; fails the test on an error reply.
    pub(crate) fn reply_as<T: DeserializeOwned>(&mut self, req: u64) -> T {
        let value = self
            .reply(req)
            .unwrap_or_else(|e| panic!("{}: request {req} failed: {e}", self.name));
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{}: unexpected reply {value}: {e}", self.name))
    }

    /// Sends `command` and returns its outcome.
    pub(crate) fn try_call(&mut self, command: Command) -> Result<Value, String> {
        let req = self.send(command);
        self.reply(req)
    }

    /// Sends `command` and decodes its successful result.
    pub(crate) fn call<T: DeserializeOwned>(&mut self, command: Command) -> T {
        let req = self.send(command);
        self.reply_as(req)
    }

    /// Waits for the node to refuse an input line; returns why.
    pub(crate) fn expect_refused_line(&mut self) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if !self.refused_lines.is_empty() {
                return self.refused_lines.remove(0);
            }
            let line = self.next_line(deadline, "a refused line");
            self.absorb(line);
        }
    }

    /// Closes the node's standard input.
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the process to exit (its output ends first).
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Ok(output)) => self.absorb(output),
                Ok(Err(line)) => panic!("{}: not a JSON line on stdout: {line:?}", self.name),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("{}: did not exit", self.name),
            }
        }
        self.child.wait().expect("node reaped")
    }

    /// A position in the event history, for [`NodeProc::expect_event_since`].
    pub(crate) fn mark(&mut self) -> usize {
        self.drain();
        self.events.len()
    }

    /// The first event (since the node started) that `pick` accepts, waiting up to
    /// [`DEADLINE`] for it.
    pub(crate) fn expect_event<T>(
        &mut self,
        what: &str,
        pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        self.expect_event_since(0, what, pick)
    }

    /// The first event from position `mark` on that `pick` accepts, waiting up to
    /// [`DEADLINE`] for it.
    pub(crate) fn expect_event_since<T>(
        &mut self,
        mark: usize,
        what: &str,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        let mut checked = mark;
        loop {
            while checked < self.events.len() {
                if let Some(t) = pick(&self.events[checked]) {
                    return t;
                }
                checked += 1;
            }
            let line = self.next_line(deadline, what);
            self.absorb(line);
        }
    }

    /// Waits until `count` events from position `mark` on match `accept`, then asks the
    /// node for its stats and counts again: fails the test if fewer arrive within
    /// [`DEADLINE`], or if more have arrived by the time the node answers (every event it
    /// emitted before that answer is in).
    pub(crate) fn expect_event_count(
        &mut self,
        mark: usize,
        count: usize,
        what: &str,
        mut accept: impl FnMut(&Event) -> bool,
    ) {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = 0;
        let mut checked = mark;
        loop {
            while checked < self.events.len() {
                if accept(&self.events[checked]) {
                    seen += 1;
                }
                checked += 1;
            }
            if seen >= count {
                break;
            }
            let line = self.next_line(deadline, &format!("{count} x {what} (seen {seen})"));
            self.absorb(line);
        }
        // A barrier: events the node emitted before this answer come before it.
        self.stats();
        let seen = self.events[mark..].iter().filter(|e| accept(e)).count();
        assert_eq!(seen, count, "{}: {what}", self.name);
    }

    /// Every event seen so far that `pick` accepts (takes in waiting lines first).
    pub(crate) fn events_matching<T>(&mut self, pick: impl FnMut(&Event) -> Option<T>) -> Vec<T> {
        self.drain();
        self.events.iter().filter_map(pick).collect()
    }

    pub(crate) fn get(&mut self, id: u64) -> Option<Found<Message>> {
        self.call(Command::Get { id })
    }

    /// The DHT record the node holds for message `id` (no network).
    pub(crate) fn local(&mut self, id: u64) -> Option<LocalRecord> {
        self.call(Command::Local { id })
    }

    pub(crate) fn stats(&mut self) -> StatsReply {
        self.call(Command::Stats)
    }

    pub(crate) fn routing_table(&mut self) -> Vec<String> {
        self.call::<netabase_testnode::PeersReply>(Command::Peers)
            .routing_table
    }

    /// Asks the node to stop, and waits for its acknowledgement and its exit.
    pub(crate) fn shutdown(mut self) -> ExitStatus {
        let req = self.send(Command::Shutdown);
        assert_eq!(self.reply(req), Ok(Value::Null), "{}", self.name);
        self.wait_exit()
    }
}

/// `n` server nodes on `rt` joined through the first (see [`network_of`]).
pub(crate) fn network(prefix: &str, n: usize, rt: Rt) -> Vec<NodeProc> {
    network_of(prefix, &vec![rt; n])
}

/// One server node per entry of `runtimes`, on that runtime, joined through the first: the
/// others start at once with it as their bootstrap peer, bootstrap twice (so that they
/// learn each other too), and the bootstrap node has every other one in its routing table
/// when this returns.
pub(crate) fn network_of(prefix: &str, runtimes: &[Rt]) -> Vec<NodeProc> {
    network_with(prefix, runtimes, |_, spawn| spawn)
}

/// [`network_of`], with every node's [`Spawn`] changed by `tweak` (given the node's index)
/// before it starts.
pub(crate) fn network_with(
    prefix: &str,
    runtimes: &[Rt],
    tweak: impl Fn(usize, Spawn) -> Spawn,
) -> Vec<NodeProc> {
    let mut first = tweak(0, Spawn::new(&format!("{prefix}0"), runtimes[0])).start();
    let launched: Vec<Launched> = (1..runtimes.len())
        .map(|i| {
            tweak(i, Spawn::new(&format!("{prefix}{i}"), runtimes[i]))
                .bootstrap(&first)
                .launch()
        })
        .collect();
    let mut others: Vec<NodeProc> = launched.into_iter().map(Launched::ready).collect();
    for _round in 0..2 {
        let reqs: Vec<u64> = others
            .iter_mut()
            .map(|node| node.send(Command::Bootstrap))
            .collect();
        for (node, req) in others.iter_mut().zip(reqs) {
            let joined: BootstrapReply = node.reply_as(req);
            assert!(joined.routing_table_size >= 1, "{}", node.name);
        }
    }
    for node in &others {
        let id = node.peer_id.clone();
        first.expect_event("the bootstrap node adds a newcomer", |e| {
            matches!(e, Event::RoutingTablePeerAdded { peer } if *peer == id).then_some(())
        });
    }
    let mut nodes = vec![first];
    nodes.extend(others);
    nodes
}

/// The record key (hex) of `Message` `id`, as the nodes report it.
pub(crate) fn message_key(id: u64) -> String {
    let key = netabase_core::model::record_key(&netabase_testnode::MessagePrimaryKey(id))
        .expect("key encodes");
    netabase_testnode::hex(key.as_bytes())
}
