//! A client of a node's control endpoint: JSON lines over its Unix socket, or over TCP
//! after the token.

use std::io::{BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lines::{Line, read_line};
use crate::protocol::{Command, Output, Request};

/// The longest reply line a client accepts, in bytes.
const MAX_REPLY: usize = 64 << 20;

/// Why a call to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached.
    #[error("cannot reach the node's control socket at {address}: {source}")]
    Connect {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The connection failed after it was made.
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
    /// The node sent something that is not a reply, or closed the connection early.
    #[error("control connection: {0}")]
    Protocol(String),
    /// The node carried out the command and it failed.
    #[error("{0}")]
    Failed(String),
    /// The node refused the connection (and closed it).
    #[error("the node refused the connection: {0}")]
    Refused(String),
    /// A TCP endpoint was named without a token file.
    #[error(
        "{0} is a TCP control endpoint: give its token file with --token-file (the node's --control-token-file, by default DATA_DIR/control/token)"
    )]
    NoToken(String),
    /// The token file cannot be read.
    #[error("the token file {path}: {reason}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// Whether the node could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

/// Where a node's control endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix domain socket (the node's `DATA_DIR/control/socket`).
    Unix(PathBuf),
    /// A TCP endpoint (the node's `--control`) and the file holding its token.
    Tcp {
        /// `HOST:PORT`.
        address: String,
        /// The token file (the node's `--control-token-file`).
        token_file: PathBuf,
    },
}

impl Endpoint {
    /// The endpoint `node` names: `HOST:PORT` (TCP, which needs `token_file`), or a path:
    /// a node's data directory (its socket inside) or the socket itself. `unix:PATH`
    /// forces a path.
    pub fn parse(node: &str, token_file: Option<&Path>) -> Result<Endpoint, ClientError> {
        let path = match node.strip_prefix("unix:") {
            Some(path) => Some(PathBuf::from(path)),
            None if is_tcp_address(node) => None,
            None => Some(PathBuf::from(node)),
        };
        match path {
            Some(path) => Ok(Endpoint::Unix(socket_of(&path))),
            None => match token_file {
                Some(file) => Ok(Endpoint::Tcp {
                    address: node.to_string(),
                    token_file: file.to_path_buf(),
                }),
                None => Err(ClientError::NoToken(node.to_string())),
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Endpoint::Unix(path) => path.display().to_string(),
            Endpoint::Tcp { address, .. } => address.clone(),
        }
    }
}

/// The socket `path` names: the one in it if it is a data directory, else itself.
fn socket_of(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(crate::control::CONTROL_DIR)
            .join(crate::control::SOCKET_NAME)
    } else {
        path.to_path_buf()
    }
}

/// Whether `node` reads as `HOST:PORT` (a port number after the last colon, no slash).
fn is_tcp_address(node: &str) -> bool {
    !node.contains('/')
        && node
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Whether connecting again may succeed: nothing listens yet (a node that is starting).
fn worth_retrying(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
    )
}

/// A connection to a node's control endpoint. Requests may be pipelined:
/// [`Client::send`] several, then [`Client::receive`] their replies (in completion order).
pub struct Client {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
    next_req: u64,
}

impl Client {
    /// Connects to `endpoint`, retrying while nothing listens there for up to `wait` (a
    /// node that is still starting), and waits at most `timeout` for each reply. Over TCP
    /// the token is sent first.
    pub fn connect(
        endpoint: &Endpoint,
        wait: Duration,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let connect_error = |source| ClientError::Connect {
            address: endpoint.describe(),
            source,
        };
        let deadline = Instant::now() + wait;
        match endpoint {
            Endpoint::Unix(path) => {
                let stream = loop {
                    // A data directory that a starting node has not created yet names
                    // its socket once it exists.
                    let attempt = crate::control::short_socket_path(&socket_of(path))
                        .map_err(|e| match e {
                            crate::control::SetupError::Io { source, .. } => source,
                            other => std::io::Error::other(other.to_string()),
                        })
                        .and_then(|(short, _dir)| UnixStream::connect(short));
                    match attempt {
                        Ok(stream) => break stream,
                        Err(e) if worth_retrying(&e) && Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Err(e) => return Err(connect_error(e)),
                    }
                };
                stream.set_read_timeout(Some(timeout))?;
                let writer = stream.try_clone()?;
                Ok(Client {
                    reader: BufReader::new(Box::new(stream)),
                    writer: Box::new(writer),
                    next_req: 0,
                })
            }
            Endpoint::Tcp {
                address,
                token_file,
            } => {
                // A node that is starting may not have written its token yet.
                let read = || loop {
                    match std::fs::read_to_string(token_file) {
                        Err(e) if worth_retrying(&e) && Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        read => return read,
                    }
                };
                let token = read()
                    .map_err(|source| ClientError::TokenFile {
                        path: token_file.clone(),
                        reason: source.to_string(),
                    })
                    .and_then(|text| {
                        crate::control::Token::from_hex(&text).ok_or_else(|| {
                            ClientError::TokenFile {
                                path: token_file.clone(),
                                reason: "not a control token".into(),
                            }
                        })
                    })?;
                let addrs: Vec<_> = address.to_socket_addrs().map_err(connect_error)?.collect();
                let stream = loop {
                    let mut error = None;
                    let mut connected = None;
                    for addr in &addrs {
                        match TcpStream::connect_timeout(addr, Duration::from_secs(5)) {
                            Ok(s) => {
                                connected = Some(s);
                                break;
                            }
                            Err(e) => error = Some(e),
                        }
                    }
                    if let Some(stream) = connected {
                        break stream;
                    }
                    let e = error.unwrap_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "the address resolves to nothing",
                        )
                    });
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && Instant::now() < deadline
                    {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    return Err(connect_error(e));
                };
                stream.set_read_timeout(Some(timeout))?;
                stream.set_nodelay(true)?;
                let mut writer = stream.try_clone()?;
                writer.write_all(token.to_hex().as_bytes())?;
                writer.write_all(b"\n")?;
                Ok(Client {
                    reader: BufReader::new(Box::new(stream)),
                    writer: Box::new(writer),
                    next_req: 0,
                })
            }
        }
    }

    /// Sends one request without waiting; returns its request number.
    pub fn send(&mut self, command: Command) -> Result<u64, ClientError> {
        let req = self.next_req;
        self.next_req += 1;
        let line = serde_json::to_string(&Request {
            req: Value::from(req),
            command,
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let written = self
            .writer
            .write_all(line.as_bytes())
            .and_then(|()| self.writer.write_all(b"\n"));
        match written {
            Ok(()) => Ok(req),
            Err(e) => Err(self.refusal_or(e)),
        }
    }

    /// The node's refusal, if it sent one before it closed the connection (a write failed
    /// with `e`), else `e`.
    fn refusal_or(&mut self, e: std::io::Error) -> ClientError {
        match self.receive() {
            Err(refused @ ClientError::Refused(_)) => refused,
            _ => ClientError::Io(e),
        }
    }

    /// The next reply: its request number and its result or error.
    pub fn receive(&mut self) -> Result<(u64, Result<Value, String>), ClientError> {
        let line = match read_line(&mut self.reader, MAX_REPLY)? {
            Line::Text(line) => line,
            Line::Eof => {
                return Err(ClientError::Protocol(
                    "the node closed the connection".into(),
                ));
            }
            Line::NotUtf8 | Line::TooLong => {
                return Err(ClientError::Protocol("unreadable reply".into()));
            }
        };
        match serde_json::from_str::<Output>(&line) {
            Ok(Output::Reply {
                req,
                ok,
                result,
                error,
            }) => {
                let req = match (req.as_u64(), ok) {
                    (Some(req), _) => req,
                    (None, false) => {
                        return Err(ClientError::Refused(
                            error.unwrap_or_else(|| "no reason given".into()),
                        ));
                    }
                    (None, true) => {
                        return Err(ClientError::Protocol(
                            "reply without a request number".into(),
                        ));
                    }
                };
                Ok((
                    req,
                    if ok {
                        Ok(result.unwrap_or(Value::Null))
                    } else {
                        Err(error.unwrap_or_else(|| "failed".into()))
                    },
                ))
            }
            Ok(other) => Err(ClientError::Protocol(format!(
                "unexpected line: {}",
                other.to_line()
            ))),
            Err(e) => Err(ClientError::Protocol(format!("bad reply {line:?}: {e}"))),
        }
    }

    /// Sends one command and waits for its result.
    pub fn call(&mut self, command: Command) -> Result<Value, ClientError> {
        let req = self.send(command)?;
        loop {
            let (got, result) = self.receive()?;
            if got == req {
                return result.map_err(ClientError::Failed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_addresses_data_directories_or_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        assert_eq!(
            Endpoint::parse("127.0.0.1:7001", Some(&token)).unwrap(),
            Endpoint::Tcp {
                address: "127.0.0.1:7001".into(),
                token_file: token.clone()
            }
        );
        assert!(matches!(
            Endpoint::parse("localhost:7001", None),
            Err(ClientError::NoToken(_))
        ));
        let data = dir.path().to_str().unwrap();
        assert_eq!(
            Endpoint::parse(data, None).unwrap(),
            Endpoint::Unix(dir.path().join("control").join("socket"))
        );
        assert_eq!(
            Endpoint::parse("run/node.sock", Some(&token)).unwrap(),
            Endpoint::Unix("run/node.sock".into())
        );
        assert_eq!(
            Endpoint::parse("unix:odd:1", None).unwrap(),
            Endpoint::Unix("odd:1".into())
        );
        assert_eq!(
            Endpoint::parse("netabase-data", None).unwrap(),
            Endpoint::Unix("netabase-data".into())
        );
    }
}
