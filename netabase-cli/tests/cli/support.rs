//! Running `netabase` processes: nodes (stdout read on a thread, waited on with deadlines)
//! and one-shot subcommands.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a node may take to start, and a command to answer.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_netabase")
}

/// A `netabase node` process. Dropping it kills the process.
pub(crate) struct NodeProcess {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The ready line's fields.
    pub(crate) info: Value,
}

impl NodeProcess {
    /// Starts a node on `dir` on 127.0.0.1 (OS-assigned ports for everything, mDNS off;
    /// controlled through the Unix socket in `dir`; metrics on 127.0.0.1 unless `extra`
    /// says where), with `extra` flags, and waits for its ready line.
    pub(crate) fn start(dir: &Path, extra: &[&str]) -> NodeProcess {
        let mut node = NodeProcess::spawn(dir, extra);
        let ready = node.next_line();
        let ready: Value = serde_json::from_str(&ready).unwrap_or_else(|e| {
            panic!(
                "the first line is JSON ({e}): {ready}; logs:\n{}",
                node.logs()
            )
        });
        assert_eq!(ready["type"], "ready", "{ready}");
        node.info = ready;
        node
    }

    /// Starts a node as [`start`](NodeProcess::start) does, without waiting for it.
    pub(crate) fn spawn(dir: &Path, extra: &[&str]) -> NodeProcess {
        let mut child = Command::new(bin())
            .arg("node")
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-mdns",
                "--json",
                "--stop-on-eof",
                "--lookup-patience-ms",
                "0",
            ])
            .args(extra)
            .args(if extra.contains(&"--metrics") {
                &[][..]
            } else {
                &["--metrics", "127.0.0.1:0"][..]
            })
            .env("RUST_LOG", "info,netabase_swarm=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the netabase binary starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take();
        NodeProcess {
            child: Some(child),
            stdin,
            lines,
            stderr,
            info: Value::Null,
        }
    }

    pub(crate) fn peer_id(&self) -> String {
        self.info["peer_id"]
            .as_str()
            .expect("a peer id")
            .to_string()
    }

    /// The path of the node's control socket.
    pub(crate) fn control(&self) -> String {
        self.info["control"]
            .as_str()
            .expect("a control socket")
            .to_string()
    }

    /// The address of the node's TCP control endpoint (started with `--control`).
    pub(crate) fn control_tcp(&self) -> String {
        self.info["control_tcp"]
            .as_str()
            .expect("a TCP control endpoint")
            .to_string()
    }

    /// The file holding the TCP control endpoint's token.
    pub(crate) fn token_file(&self) -> String {
        self.info["control_token_file"]
            .as_str()
            .expect("a token file")
            .to_string()
    }

    pub(crate) fn metrics(&self) -> String {
        self.info["metrics"]
            .as_str()
            .expect("a metrics address")
            .to_string()
    }

    /// The node's first listen address with its peer id, to bootstrap others through.
    pub(crate) fn address(&self) -> String {
        format!(
            "{}/p2p/{}",
            self.info["listen_addresses"][0]
                .as_str()
                .expect("an address"),
            self.peer_id()
        )
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the node logged so far.
    pub(crate) fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next line on the node's standard output.
    pub(crate) fn next_line(&self) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "no line from the node in {DEADLINE:?}; logs:\n{}",
                    self.logs()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the node closed its output; logs:\n{}", self.logs())
            }
        }
    }

    /// Writes raw bytes to the node's standard input.
    pub(crate) fn write_stdin(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(bytes).expect("the node reads its input");
        stdin.flush().expect("flushes");
    }

    /// Closes the node's standard input (which stops it: nodes run with --stop-on-eof).
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `signal` (`TERM`, `INT`) to the node.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{signal} {}", self.pid()))
            .status()
            .expect("sh runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit, then checks what it logged with `check`; its status
    /// and the rest of its output.
    pub(crate) fn wait_exit_with_logs(self, check: impl FnOnce(&str)) -> (ExitStatus, Vec<String>) {
        let stderr = Arc::clone(&self.stderr);
        let exit = self.wait_exit();
        // The exit closed standard error: wait until its reader has everything.
        let deadline = Instant::now() + DEADLINE;
        let logs = loop {
            let logs = stderr.lock().unwrap().clone();
            if Arc::strong_count(&stderr) == 1 {
                break logs;
            }
            assert!(
                Instant::now() < deadline,
                "standard error stays open: {logs}"
            );
            std::thread::yield_now();
        };
        check(&logs);
        exit
    }

    /// Waits for the process to exit; its status and the rest of its output.
    pub(crate) fn wait_exit(mut self) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().expect("running");
        let pid = child.id();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(status) => {
                let status = status.expect("waits");
                let rest: Vec<String> = self.lines.iter().collect();
                (status, rest)
            }
            Err(_) => {
                let _ = Command::new("sh")
                    .arg("-c")
                    .arg(format!("kill -KILL {pid}"))
                    .status();
                panic!(
                    "the node did not exit in {DEADLINE:?}; logs:\n{}",
                    self.logs()
                );
            }
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `netabase ARGS --node CONTROL`.
pub(crate) fn ctl(node: &NodeProcess, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--node")
        .arg(node.control())
        .stdin(Stdio::null())
        .output()
        .expect("the netabase binary runs")
}

/// Runs `netabase ARGS --node TCP-CONTROL --token-file TOKEN-FILE`.
pub(crate) fn ctl_tcp(node: &NodeProcess, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--node")
        .arg(node.control_tcp())
        .arg("--token-file")
        .arg(node.token_file())
        .stdin(Stdio::null())
        .output()
        .expect("the netabase binary runs")
}

/// Runs `netabase ARGS`.
pub(crate) fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the netabase binary runs")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns standard output.
#[track_caller]
pub(crate) fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// The body of `http://ADDR/metrics`.
pub(crate) fn scrape(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("the metrics endpoint answers");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1."), "{head}");
    assert!(head.contains(" 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.to_string()
}

/// The value of the sample `series` (a metric name with its labels, exactly as printed),
/// or the sum over every sample of metric `series` if it has no labels given and the
/// metric has labelled samples.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let matches =
            name == series || (!series.contains('{') && name.split('{').next() == Some(series));
        if matches {
            let v: f64 = value.parse().expect("a number");
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// Polls `check` until it holds or the deadline passes.
#[track_caller]
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reply line's fields, parsed.
pub(crate) fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}
