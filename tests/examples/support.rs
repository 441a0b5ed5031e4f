//! Running example programs: finding their executables, reading their output line by line
//! with deadlines, writing their standard input, and network namespaces (those of
//! `netabase-testnode`) for the programs that multicast.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub(crate) use netabase_testnode::netns::Namespaces;

/// How long any single wait may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// The directory of the build profile the tests were built with (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable inside target/<profile>/deps")
        .to_path_buf()
}

/// The executable of example `name`.
///
/// `cargo test` and `cargo nextest run` build every example of the package along with the
/// tests (with the same features), unless a target filter such as `--test examples`
/// leaves them out; then `cargo build --examples` builds them. An executable older than
/// its source file fails the test rather than testing old code.
pub(crate) fn example(name: &str) -> PathBuf {
    let path = profile_dir().join("examples").join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let built = modified(&path).unwrap_or_else(|| {
        panic!(
            "{} is missing: run the package's tests without a target filter \
             (`cargo nextest run -p netabase`) or `cargo build --examples`",
            path.display()
        )
    });
    let written = modified(&source).expect("the example's source file");
    assert!(
        built >= written,
        "{} is older than {}: rebuild it (`cargo build --examples`)",
        path.display(),
        source.display()
    );
    path
}

/// A running program, its output read line by line. Dropping it kills the program.
pub(crate) struct Program {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line of standard output so far.
    pub(crate) transcript: Vec<String>,
    /// Lines taken in but not yet consumed by an `expect_line`.
    seen: usize,
}

impl Program {
    /// Starts `command` (its standard streams are replaced); `name` prefixes its standard
    /// error in the test output.
    pub(crate) fn start(name: &str, mut command: Command) -> Program {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {command:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let prefix = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("[{prefix} stderr] {line}");
            }
        });
        Program {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
            transcript: Vec::new(),
            seen: 0,
        }
    }

    fn fail(&self, why: &str) -> ! {
        let from = self.transcript.len().saturating_sub(80);
        for line in &self.transcript[from..] {
            eprintln!("[{}] {line}", self.name);
        }
        panic!("{}: {why}", self.name)
    }

    /// Takes in one more line before `deadline`; `None` when the output ended.
    fn next_line(&mut self, deadline: Instant, what: &str) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                self.transcript.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout) => self.fail(&format!("timed out waiting for {what}")),
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The first line after the last one consumed that `pick` accepts, waiting up to
    /// [`DEADLINE`]; lines before it are consumed too.
    pub(crate) fn expect_line<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            while self.seen < self.transcript.len() {
                let line = &self.transcript[self.seen];
                self.seen += 1;
                if let Some(t) = pick(line) {
                    return t;
                }
            }
            if self.next_line(deadline, what).is_none() {
                let status = self.child.wait().ok();
                self.fail(&format!("exited ({status:?}) while waiting for {what}"));
            }
        }
    }

    /// Waits for a line containing `text`; returns the line.
    pub(crate) fn expect_containing(&mut self, text: &str) -> String {
        self.expect_line(&format!("a line containing {text:?}"), |l| {
            l.contains(text).then(|| l.to_string())
        })
    }

    /// Writes one line to the program's standard input.
    pub(crate) fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("the program reads its input");
        stdin.flush().expect("the program reads its input");
    }

    /// Waits for the program to end (its output first); returns its exit status.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        while self.next_line(deadline, "the program to exit").is_some() {}
        // Its standard output is closed: the program is exiting.
        self.child.wait().expect("wait for the program")
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if std::thread::panicking() {
            while let Ok(line) = self.lines.try_recv() {
                self.transcript.push(line);
            }
            let from = self.transcript.len().saturating_sub(80);
            for line in &self.transcript[from..] {
                eprintln!("[{}] {line}", self.name);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two network namespaces joined by a veth pair carrying `10.214.0.0/24` (side 0 is
/// `10.214.0.1`, side 1 `10.214.0.2`), removed again when dropped (see
/// [`netabase_testnode::netns`]); the test fails, saying why, where namespaces cannot be
/// made.
pub(crate) fn namespaces() -> Namespaces {
    Namespaces::create_on([10, 214, 0]).unwrap_or_else(|e| panic!("{e}"))
}
