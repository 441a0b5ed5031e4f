//! Child processes: the test binary re-runs itself with `child::entry` as the only test and
//! the mode in an environment variable, and reports on stdout line by line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use netabase_store::{BackendKind, Durability, Store, StoreError};

use crate::config;
use crate::support::*;

const MODE: &str = "NETABASE_STORE_CHILD";
const BACKEND: &str = "NETABASE_STORE_CHILD_BACKEND";
const PATH: &str = "NETABASE_STORE_CHILD_PATH";

/// What the child does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Writes transactions forever, printing `ACK <n>` after each commit returns.
    Crash,
    /// Writes transactions forever with deferred durability and syncs after every third
    /// (group commit), printing `ACK <n>` for each transaction once the sync returned.
    CrashGrouped,
    /// Tries to open the store and prints `OPEN ok`, `OPEN already-open` or `OPEN error ..`.
    OpenProbe,
    /// Writes large records until the store reports an error (`ACK <id>` per write, then
    /// `ERR <error>`).
    Fill,
    /// Writes to sled 0.34 directly, without this crate's backend: syncs the directories
    /// once after opening, then writes key `n` (8 bytes, big-endian) forever, printing
    /// `ACK <n>` after each `flush()` returns.
    SledAlone,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Crash => "crash",
            Mode::CrashGrouped => "crash-grouped",
            Mode::OpenProbe => "open-probe",
            Mode::Fill => "fill",
            Mode::SledAlone => "sled-alone",
        }
    }
}

fn kind_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Redb => "redb",
        BackendKind::Sled => "sled",
        BackendKind::Memory => "memory",
    }
}

/// A child process to start.
pub(crate) struct Child {
    mode: Mode,
    kind: BackendKind,
    path: PathBuf,
    file_size_limit_kib: Option<u64>,
}

/// What a child printed, and how it ended.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) success: bool,
    pub(crate) lines: Vec<String>,
    pub(crate) stderr: String,
}

impl Output {
    /// The numbers of the `ACK` lines.
    pub(crate) fn acks(&self) -> Vec<u64> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("ACK ")?.parse().ok())
            .collect()
    }
}

/// A started child.
pub(crate) struct Running {
    child: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
    pub(crate) lines: Vec<String>,
}

impl Running {
    /// Reads the next line; `None` at the end of the output.
    pub(crate) fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                let line = line.trim_end().to_owned();
                self.lines.push(line.clone());
                Some(line)
            }
        }
    }

    /// Kills the child with SIGKILL, then collects everything it printed before dying.
    pub(crate) fn kill(mut self) -> Output {
        let _ = self.child.kill();
        self.finish()
    }

    /// Waits for the child to end by itself.
    pub(crate) fn finish(mut self) -> Output {
        while self.next_line().is_some() {}
        let status = self.child.wait().expect("wait for the child");
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
        }
        Output {
            success: status.success(),
            lines: self.lines,
            stderr,
        }
    }
}

impl Child {
    pub(crate) fn new(mode: Mode, kind: BackendKind, path: &Path) -> Self {
        Child {
            mode,
            kind,
            path: path.to_path_buf(),
            file_size_limit_kib: None,
        }
    }

    /// Runs the child with a limit on the size of the files it writes.
    pub(crate) fn file_size_limit_kib(mut self, kib: u64) -> Self {
        self.file_size_limit_kib = Some(kib);
        self
    }

    pub(crate) fn spawn(self) -> Running {
        let exe = std::env::current_exe().expect("test binary path");
        let mut command = match self.file_size_limit_kib {
            Some(kib) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""))
                    .arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        command
            .args([
                "--exact",
                "child::entry",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(MODE, self.mode.name())
            .env(BACKEND, kind_name(self.kind))
            .env(PATH, &self.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the child");
        let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        Running {
            child,
            stdout,
            lines: Vec::new(),
        }
    }

    pub(crate) fn run_to_end(self) -> Output {
        self.spawn().finish()
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // Written straight to the process's stdout (not the test harness's capture), one
    // flushed line per event, so that the parent sees each line as soon as it happens. The
    // leading newline ends the harness's unterminated "test child::entry ... " line.
    let _ = writeln!(out, "\n{line}");
    let _ = out.flush();
}

/// The child's entry point. In the normal test run (no mode in the environment) it has
/// nothing to do.
#[test]
fn entry() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let kind = match std::env::var(BACKEND).as_deref() {
        Ok("redb") => BackendKind::Redb,
        Ok("sled") => BackendKind::Sled,
        other => panic!("unknown backend {other:?}"),
    };
    let path = PathBuf::from(std::env::var_os(PATH).expect("store path"));
    match mode.as_str() {
        "crash" => crash_writer(kind, &path, false),
        "crash-grouped" => crash_writer(kind, &path, true),
        "open-probe" => open_probe(kind, &path),
        "fill" => fill(kind, &path),
        "sled-alone" => sled_alone(&path),
        other => panic!("unknown child mode {other}"),
    }
}

fn sled_alone(path: &Path) {
    let db = sled::open(path).expect("open sled");
    // The names of sled's files are made durable here, so that what a power cut takes is
    // only what sled's own flush left unsynced.
    db.flush().expect("flush");
    for dir in [path, path.parent().expect("a parent")] {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .expect("sync the directory");
    }
    for n in 0u64.. {
        db.insert(n.to_be_bytes(), &b"sled alone"[..])
            .expect("insert");
        db.flush().expect("flush");
        say(&format!("ACK {n}"));
    }
}

fn open_probe(kind: BackendKind, path: &Path) {
    match Store::<ChatDefinition>::open_with(path, config(kind, false)) {
        Ok(_) => say("OPEN ok"),
        Err(StoreError::AlreadyOpen { .. }) => say("OPEN already-open"),
        Err(e) => say(&format!("OPEN error {e}")),
    }
}

fn fill(kind: BackendKind, path: &Path) {
    let store = match Store::<ChatDefinition>::open_with(path, config(kind, false)) {
        Ok(store) => store,
        Err(e) => return say(&format!("ERR {e} / {e:?}")),
    };
    let text = "x".repeat(16 * 1024);
    for id in 0..10_000u64 {
        match store.put(&message(id, "filler", 0, &text)) {
            Ok(_) => say(&format!("ACK {id}")),
            Err(e) => return say(&format!("ERR {e} / {e:?}")),
        }
    }
    say("NOERR");
}

/// The counter record of the crash workload: the number of the last committed transaction.
pub(crate) fn counter_key() -> SettingPrimaryKey {
    SettingPrimaryKey((0, "last-transaction".into()))
}

/// Part `part` (0..3) of crash-workload transaction `txn` as that transaction writes it.
pub(crate) fn written(txn: u64, part: u64) -> Message {
    let padding = "p".repeat(((txn * 37 + part * 11) % 300) as usize);
    message(
        3 * txn + part,
        &format!("w{}", txn % 4),
        (txn % 3) as u32,
        &format!("txn {txn} part {part} {padding}"),
    )
}

/// Part 0 of transaction `txn` as transaction `txn + 1` rewrites it.
pub(crate) fn revisited(txn: u64) -> Message {
    message(3 * txn, "r", 9, &format!("txn {} revisits", txn + 1))
}

fn crash_writer(kind: BackendKind, path: &Path, grouped: bool) {
    let store = Store::<ChatDefinition>::open_with(path, config(kind, false)).expect("open");
    let start = match store.get(&counter_key()).expect("read the counter") {
        Some(setting) => u64::from_be_bytes(setting.value.try_into().expect("8 bytes")) + 1,
        None => 0,
    };
    let durability = if grouped {
        Durability::Deferred
    } else {
        Durability::Immediate
    };
    let mut unacknowledged = Vec::new();
    for txn in start.. {
        store
            .write_with(durability, |tx| {
                for part in 0..3 {
                    tx.put(&written(txn, part))?;
                }
                if txn > 0 {
                    tx.put(&revisited(txn - 1))?;
                }
                tx.put(&Setting {
                    key: counter_key().0,
                    value: txn.to_be_bytes().to_vec(),
                })?;
                Ok(())
            })
            .expect("write");
        unacknowledged.push(txn);
        if !grouped || txn % 3 == 2 {
            store.sync().expect("sync");
            for txn in unacknowledged.drain(..) {
                say(&format!("ACK {txn}"));
            }
        }
    }
}
