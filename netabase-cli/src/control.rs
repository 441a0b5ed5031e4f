//! The control endpoints of `netabase node`: the JSON-lines protocol of [`protocol`]
//! over a Unix domain socket in the data directory (always), and over TCP when asked for.
//!
//! # The Unix socket
//!
//! The socket is `DATA_DIR/control/socket`. The node refuses a data directory that is
//! writable by its group or by others, or owned by another user; it creates `control/`
//! with mode 0700 (never widening it later: an existing `control/` open to anyone else is
//! refused) and binds the socket inside, so only this user can reach it. Each connection's
//! peer user id is read from the kernel (`SO_PEERCRED`) and must be this process's
//! effective user id. The node holds an exclusive lock on `DATA_DIR/node.lock` while it
//! runs; a socket left behind by a node that died is removed only under that lock. A
//! socket path longer than a Unix socket address holds (107 bytes on Linux) is bound and
//! reached through `/proc/self/fd` of the opened directory.
//!
//! # The TCP endpoint
//!
//! `--control HOST:PORT` opens it. At each start the node draws a fresh token of
//! [`TOKEN_BYTES`] bytes from the operating system's random source and writes it in hex
//! to a new file of mode 0600 (`DATA_DIR/control/token` unless `--control-token-file`
//! says otherwise). The first line on every connection must be that token, within
//! [`TOKEN_DEADLINE`]; it is compared in constant time and gets no reply.
//!
//! # Refusals
//!
//! On either endpoint, a line that starts with an HTTP method (what a web page's request
//! looks like), a line that is not a valid request, a wrong or late token, a peer of
//! another user, and a connection over [`MAX_CONNECTIONS`] get one refusal line
//! (`{"type":"reply","req":null,"ok":false,"error":"..."}`) and the connection closes
//! (after the replies to the requests read before). Each refusal is counted by reason in
//! `netabase_control_refusals_total`. At most [`MAX_IN_FLIGHT`] requests of one
//! connection run at once; the node reads no further line of that connection until one
//! of them is answered.
//!
//! [`protocol`]: crate::protocol

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use netabase::swarm::prometheus_client::metrics::counter::Counter;
use netabase::swarm::prometheus_client::metrics::family::Family;
use netabase::swarm::prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, mpsc};

pub use netabase_control::session::{
    Line, MAX_CONNECTIONS, Refusal, Session, Step, TOKEN_BYTES, TOKEN_DEADLINE, Token,
    parse_request, starts_with_http_method,
};

use crate::exec::{Context, execute};
use crate::lines::read_line_async;
use crate::protocol::MAX_LINE;

/// Most requests of one connection running at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// How long a refused connection's further input is read (and dropped) before it closes.
const LINGER: Duration = Duration::from_millis(500);
/// How much of a refused connection's further input is read before it closes.
const LINGER_BYTES: u64 = 1 << 20;
/// The longest first line read from a TCP connection (the token line).
const MAX_TOKEN_LINE: usize = 256;
/// The directory of the socket and the token, inside the data directory.
pub const CONTROL_DIR: &str = "control";
/// The socket's name inside [`CONTROL_DIR`].
pub const SOCKET_NAME: &str = "socket";
/// The token file's name inside [`CONTROL_DIR`] (unless `--control-token-file` is given).
pub const TOKEN_NAME: &str = "token";
/// The lock file of the data directory, held while a node runs on it.
pub const LOCK_NAME: &str = "node.lock";
/// The longest path a Unix socket address holds on Linux (108 bytes with the final NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Why a control endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A directory others may write to.
    #[error(
        "{path} is writable by its group or by others (mode {mode:o}); the node keeps its identity key and control socket there: `chmod go-w` it"
    )]
    WritableByOthers {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A directory that should be private and is not.
    #[error("{path} is open to its group or others (mode {mode:o}); it must be 0700")]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file or directory of another user.
    #[error("{path} is owned by user {owner}, not by this user ({own})")]
    NotOwned {
        /// The path.
        path: PathBuf,
        /// Its owner's user id.
        owner: u32,
        /// This process's effective user id.
        own: u32,
    },
    /// Something other than a directory where the control directory goes.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// Another node holds the data directory's lock.
    #[error("another node runs on the data directory {0} (it holds node.lock)")]
    Locked(PathBuf),
    /// Something other than a socket where the socket goes.
    #[error("{0} exists and is not a socket; remove it")]
    NotASocket(PathBuf),
    /// A socket path too long for a socket address, with no way around it.
    #[error(
        "the control socket path {path} is {len} bytes, over the {MAX_SOCKET_PATH}-byte limit of Unix socket addresses, and /proc/self/fd is not available to shorten it; use a shorter --data-dir"
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The operating system's random source failed.
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// This process's effective user id.
pub fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Checks that `dir` is a directory owned by `uid` that neither its group nor others may
/// write to.
pub fn check_data_dir(dir: &Path, uid: u32) -> Result<(), SetupError> {
    let meta = std::fs::metadata(dir).map_err(io_error(dir))?;
    let mode = owned_dir_mode(dir, &meta, uid)?;
    if mode & 0o022 != 0 {
        return Err(SetupError::WritableByOthers {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Checks that `dir` is a directory (not a link to one) owned by `uid` with no
/// permission for its group or others.
pub fn check_private_dir(dir: &Path, uid: u32) -> Result<(), SetupError> {
    let meta = std::fs::symlink_metadata(dir).map_err(io_error(dir))?;
    let mode = owned_dir_mode(dir, &meta, uid)?;
    if mode & 0o077 != 0 {
        return Err(SetupError::NotPrivate {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// The permission bits of `dir` (whose metadata is `meta`), once it is known to be a
/// directory owned by `uid`.
fn owned_dir_mode(dir: &Path, meta: &std::fs::Metadata, uid: u32) -> Result<u32, SetupError> {
    if !meta.is_dir() {
        return Err(SetupError::NotADirectory(dir.to_path_buf()));
    }
    if meta.uid() != uid {
        return Err(SetupError::NotOwned {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            own: uid,
        });
    }
    Ok(meta.mode() & 0o7777)
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<(), SetupError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))
}

/// The exclusive lock of a data directory, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (`node.lock`), or fails at once if another process
    /// holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, SetupError> {
        let path = data_dir.join(LOCK_NAME);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(SetupError::Locked(data_dir.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(source)) => Err(SetupError::Io { path, source }),
        }
    }
}

/// A path to reach `path` by (a socket's), short enough for a socket address: `path`
/// itself, or `/proc/self/fd/N/NAME` through its directory opened as `N` (the returned
/// file, to keep open while the path is used).
pub fn short_socket_path(path: &Path) -> Result<(PathBuf, Option<File>), SetupError> {
    let len = path.as_os_str().len();
    if len <= MAX_SOCKET_PATH {
        return Ok((path.to_path_buf(), None));
    }
    let too_long = || SetupError::PathTooLong {
        path: path.to_path_buf(),
        len,
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(too_long());
    };
    let dir = File::open(dir).map_err(io_error(dir))?;
    use std::os::fd::AsRawFd;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    if short.as_os_str().len() > MAX_SOCKET_PATH || !short.parent().is_some_and(Path::is_dir) {
        return Err(too_long());
    }
    Ok((short, Some(dir)))
}

/// The Unix socket endpoint: its listener and where it is.
#[derive(Debug)]
pub struct UnixEndpoint {
    /// The listener.
    pub listener: UnixListener,
    /// The socket's path.
    pub path: PathBuf,
}

/// Opens the control socket in `data_dir` (already checked with [`check_data_dir`]) while
/// `_lock` is held: creates `control/` with mode 0700, removes a socket left there by a
/// node that died, and binds.
pub fn open_unix(
    data_dir: &Path,
    uid: u32,
    _lock: &DataDirLock,
) -> Result<UnixEndpoint, SetupError> {
    let dir = data_dir.join(CONTROL_DIR);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error(&dir)(e)),
    }
    check_private_dir(&dir, uid)?;
    let path = dir.join(SOCKET_NAME);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // The lock is held: no live node serves this socket.
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(_) => return Err(SetupError::NotASocket(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&path)(e)),
    }
    let (bind_path, _dir) = short_socket_path(&path)?;
    let listener = UnixListener::bind(&bind_path).map_err(io_error(&path))?;
    Ok(UnixEndpoint { listener, path })
}

/// A fresh token from the operating system's random source.
pub fn generate_token() -> Result<Token, SetupError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| SetupError::Random(e.to_string()))?;
    Ok(Token::from_bytes(&bytes))
}

/// Writes `token` to `path` as a new file of mode 0600: to a fresh file beside it (created
/// with that mode, so no other user could ever open it), synced, then renamed over `path`.
pub fn write_token_file(token: &Token, path: &Path) -> Result<(), SetupError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let fresh = dir.join(name);
    match std::fs::remove_file(&fresh) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&fresh)(e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&fresh)
        .map_err(io_error(&fresh))?;
    file.write_all(token.to_hex().as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(io_error(&fresh))?;
    std::fs::rename(&fresh, path).map_err(io_error(path))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(&dir))
}

/// The refusals of the control endpoints, by reason
/// (`netabase_control_refusals_total{reason}`).
#[derive(Clone, Debug, Default)]
pub struct Refusals {
    counts: Family<[(&'static str, &'static str); 1], Counter>,
}

impl Refusals {
    /// Counters registered in `registry`, if the node serves metrics.
    pub fn new(registry: Option<&mut Registry>) -> Refusals {
        let refusals = Refusals::default();
        if let Some(registry) = registry {
            registry.register(
                "netabase_control_refusals",
                "Control connections and lines the node refused, by reason",
                refusals.counts.clone(),
            );
        }
        refusals
    }

    /// Counts one refusal.
    pub fn count(&self, refusal: &Refusal) {
        self.counts
            .get_or_create(&[("reason", refusal.reason())])
            .inc();
        tracing::debug!(reason = refusal.reason(), "control connection refused");
    }

    /// How many refusals of `reason` were counted.
    pub fn get(&self, reason: &'static str) -> u64 {
        self.counts.get_or_create(&[("reason", reason)]).get()
    }
}

/// What the control endpoints share.
#[derive(Clone)]
pub struct Shared {
    pub(crate) ctx: Arc<Context>,
    /// The refusal counters.
    pub refusals: Refusals,
    connections: Arc<Semaphore>,
}

impl Shared {
    /// Endpoints carrying out requests on `ctx`.
    pub(crate) fn new(ctx: Arc<Context>, refusals: Refusals) -> Shared {
        Shared {
            ctx,
            refusals,
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

/// Refuses a connection before reading from it: one line, written without waiting (the
/// socket's buffer is empty), then the stream is dropped.
fn refuse_now<S>(stream: &S, refusal: &Refusal, shared: &Shared, try_write: impl Fn(&S, &[u8])) {
    shared.refusals.count(refusal);
    let mut line = refusal.to_line();
    line.push('\n');
    try_write(stream, line.as_bytes());
}

/// Accepts connections on the Unix socket until the process ends; each peer must run as
/// `uid`.
pub(crate) async fn serve_unix(listener: UnixListener, uid: u32, shared: Shared) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a control connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let write = |s: &tokio::net::UnixStream, b: &[u8]| {
            let _ = s.try_write(b);
        };
        match stream.peer_cred() {
            Ok(cred) if peer_allowed(cred.uid(), uid) => {}
            Ok(cred) => {
                tracing::warn!(
                    peer_uid = cred.uid(),
                    "refused a control connection of another user"
                );
                refuse_now(&stream, &Refusal::PeerUser, &shared, write);
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a control connection's peer");
                refuse_now(&stream, &Refusal::PeerUser, &shared, write);
                continue;
            }
        }
        let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
            refuse_now(&stream, &Refusal::Connections, &shared, write);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            connection(stream, None, &shared).await;
            drop(permit);
        });
    }
}

/// Whether a Unix socket peer of user `peer` may use the socket of a node running as
/// `own`: only the same user.
pub fn peer_allowed(peer: u32, own: u32) -> bool {
    peer == own
}

/// Accepts connections on the TCP endpoint until the process ends; each must send
/// `token` first.
pub(crate) async fn serve_tcp(listener: TcpListener, token: Token, shared: Shared) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a control connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tracing::debug!(%from, "control connection");
        let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
            refuse_now(
                &stream,
                &Refusal::Connections,
                &shared,
                |s: &tokio::net::TcpStream, b: &[u8]| {
                    let _ = s.try_write(b);
                },
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (shared, token) = (shared.clone(), token.clone());
        tokio::spawn(async move {
            connection(stream, Some(token), &shared).await;
            drop(permit);
        });
    }
}

/// One control connection: the token line (TCP), then request lines in and reply lines
/// out (in completion order), at most [`MAX_IN_FLIGHT`] requests running at once. The
/// connection closes after a refusal, or once the client has finished sending, after the
/// replies to every request read.
async fn connection<S>(stream: S, token: Option<Token>, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(stream);
    // Every running request holds a place until its reply is queued, so the replies and
    // one refusal always fit.
    let (tx, mut rx) = mpsc::channel::<String>(MAX_IN_FLIGHT + 1);
    let writer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if write.write_all(line.as_bytes()).await.is_err()
                || write.write_all(b"\n").await.is_err()
            {
                return;
            }
        }
        let _ = write.shutdown().await;
    });
    let mut read = BufReader::new(read);
    let mut session = Session::new(token);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let step = if session.awaits_token() {
            match tokio::time::timeout(TOKEN_DEADLINE, read_line_async(&mut read, MAX_TOKEN_LINE))
                .await
            {
                Err(_) => Step::Refuse(Refusal::TokenTimeout),
                Ok(Ok(Line::Eof) | Err(_)) => break,
                Ok(Ok(line)) => session.on_read(line),
            }
        } else {
            match read_line_async(&mut read, MAX_LINE).await {
                Ok(Line::Eof) | Err(_) => break,
                Ok(line) => session.on_read(line),
            }
        };
        match step {
            Step::Authenticated => {}
            Step::Request(request) => {
                let Ok(place) = Arc::clone(&in_flight).acquire_owned().await else {
                    break;
                };
                let (ctx, tx) = (Arc::clone(&shared.ctx), tx.clone());
                tokio::spawn(async move {
                    let reply = execute(&ctx, request).await;
                    let _ = tx.send(reply.to_line()).await;
                    drop(place);
                });
            }
            Step::Refuse(refusal) => {
                shared.refusals.count(&refusal);
                let _ = tx.send(refusal.to_line()).await;
                drop(tx);
                let _ = writer.await;
                // What the client sent after the refused line is read and dropped for a
                // moment, so that closing with unread data (which resets the connection)
                // does not destroy the refusal before the client reads it.
                let mut rest = tokio::io::AsyncReadExt::take(read, LINGER_BYTES);
                let _ = tokio::time::timeout(
                    LINGER,
                    tokio::io::copy(&mut rest, &mut tokio::io::sink()),
                )
                .await;
                return;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn tokens_are_fresh_and_match_only_themselves() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_eq!(a.to_hex().len(), 2 * TOKEN_BYTES);
        assert_ne!(a.to_hex(), b.to_hex());
        assert!(a.matches(a.to_hex().as_bytes()));
        assert!(!a.matches(b.to_hex().as_bytes()));
        // One digit off, a prefix, the token with more after it, nothing.
        let mut off = a.to_hex().as_bytes().to_vec();
        off[2 * TOKEN_BYTES - 1] = if off[2 * TOKEN_BYTES - 1] == b'0' {
            b'1'
        } else {
            b'0'
        };
        assert!(!a.matches(&off));
        assert!(!a.matches(&a.to_hex().as_bytes()[..2 * TOKEN_BYTES - 1]));
        assert!(!a.matches(format!("{} ", a.to_hex()).as_bytes()));
        assert!(!a.matches(b""));
        assert_eq!(
            Token::from_hex(&format!(" {}\n", a.to_hex().to_uppercase()))
                .unwrap()
                .to_hex(),
            a.to_hex()
        );
        assert!(Token::from_hex("abcd").is_none());
        assert!(Token::from_hex(&"g".repeat(2 * TOKEN_BYTES)).is_none());
        assert_eq!(format!("{a:?}"), "Token(..)");
    }

    #[test]
    fn the_token_file_is_created_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old and readable\n").unwrap();
        mode(&path, 0o644);
        let token = generate_token().unwrap();
        write_token_file(&token, &path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(Token::from_hex(&text).unwrap().to_hex(), token.to_hex());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn data_directories_open_to_others_or_of_another_user_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let uid = own_uid();
        let dir = root.path().join("data");
        create_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777 & !0o700, 0);
        check_data_dir(&dir, uid).unwrap();
        mode(&dir, 0o755);
        check_data_dir(&dir, uid).unwrap();
        for open in [0o775, 0o757, 0o777, 0o720] {
            mode(&dir, open);
            assert!(
                matches!(
                    check_data_dir(&dir, uid),
                    Err(SetupError::WritableByOthers { mode, .. }) if mode == open
                ),
                "{open:o}"
            );
        }
        mode(&dir, 0o700);
        assert!(matches!(
            check_data_dir(&dir, uid.wrapping_add(1)),
            Err(SetupError::NotOwned { owner, .. }) if owner == uid
        ));
        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            check_data_dir(&file, uid),
            Err(SetupError::NotADirectory(_))
        ));

        // The control directory must be private: 0700, a real directory, this user's.
        let control = dir.join(CONTROL_DIR);
        create_private_dir(&control).unwrap();
        check_private_dir(&control, uid).unwrap();
        mode(&control, 0o750);
        assert!(matches!(
            check_private_dir(&control, uid),
            Err(SetupError::NotPrivate { mode: 0o750, .. })
        ));
        mode(&control, 0o700);
        assert!(matches!(
            check_private_dir(&control, uid.wrapping_add(1)),
            Err(SetupError::NotOwned { .. })
        ));
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&control, &link).unwrap();
        assert!(matches!(
            check_private_dir(&link, uid),
            Err(SetupError::NotADirectory(_))
        ));
    }

    #[tokio::test]
    async fn the_socket_is_private_and_a_stale_one_is_replaced_only_under_the_lock() {
        let root = tempfile::tempdir().unwrap();
        let uid = own_uid();
        let lock = DataDirLock::acquire(root.path()).unwrap();
        assert!(matches!(
            DataDirLock::acquire(root.path()),
            Err(SetupError::Locked(_))
        ));
        let endpoint = open_unix(root.path(), uid, &lock).unwrap();
        let dir = root.path().join(CONTROL_DIR);
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(endpoint.path, dir.join(SOCKET_NAME));
        // A socket left behind (its listener gone) is replaced.
        drop(endpoint);
        assert!(dir.join(SOCKET_NAME).exists());
        let endpoint = open_unix(root.path(), uid, &lock).unwrap();
        tokio::net::UnixStream::connect(&endpoint.path)
            .await
            .unwrap();
        drop(endpoint);
        drop(lock);
        // Something that is not a socket is left alone.
        std::fs::remove_file(dir.join(SOCKET_NAME)).unwrap();
        std::fs::write(dir.join(SOCKET_NAME), "data").unwrap();
        let lock = DataDirLock::acquire(root.path()).unwrap();
        assert!(matches!(
            open_unix(root.path(), uid, &lock),
            Err(SetupError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(dir.join(SOCKET_NAME)).unwrap(), b"data");
        // An existing control directory open to others is refused, not repaired.
        std::fs::remove_file(dir.join(SOCKET_NAME)).unwrap();
        mode(&dir, 0o711);
        assert!(matches!(
            open_unix(root.path(), uid, &lock),
            Err(SetupError::NotPrivate { .. })
        ));
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o711);
    }

    #[tokio::test]
    async fn a_socket_path_over_the_address_limit_is_reached_through_proc() {
        let root = tempfile::tempdir().unwrap();
        let mut deep = root.path().to_path_buf();
        while deep.as_os_str().len() <= MAX_SOCKET_PATH + 20 {
            deep.push("a-rather-long-directory-name");
        }
        create_private_dir(&deep).unwrap();
        let lock = DataDirLock::acquire(&deep).unwrap();
        let endpoint = open_unix(&deep, own_uid(), &lock).unwrap();
        assert!(endpoint.path.as_os_str().len() > MAX_SOCKET_PATH);
        assert!(
            std::fs::symlink_metadata(&endpoint.path)
                .unwrap()
                .file_type()
                .is_socket()
        );
        let (short, _dir) = short_socket_path(&endpoint.path).unwrap();
        assert!(short.as_os_str().len() <= MAX_SOCKET_PATH);
        tokio::net::UnixStream::connect(&short).await.unwrap();
    }

    #[tokio::test]
    async fn the_peer_user_is_read_from_the_kernel() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let peer = a.peer_cred().unwrap().uid();
        assert_eq!(peer, own_uid());
        assert!(peer_allowed(peer, own_uid()));
        assert!(!peer_allowed(peer, own_uid().wrapping_add(1)));
        assert!(!peer_allowed(peer.wrapping_add(1), own_uid()));
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let mut registry = Registry::default();
        let refusals = Refusals::new(Some(&mut registry));
        refusals.count(&Refusal::Http);
        refusals.count(&Refusal::Http);
        refusals.count(&Refusal::Token);
        assert_eq!(refusals.get("http"), 2);
        assert_eq!(refusals.get("token"), 1);
        let mut text = String::new();
        netabase::swarm::prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("netabase_control_refusals_total{reason=\"http\"} 2"),
            "{text}"
        );
        let line: Value = serde_json::from_str(&Refusal::Http.to_line()).unwrap();
        assert_eq!(line["ok"], false);
        assert_eq!(line["req"], Value::Null);
    }
}
