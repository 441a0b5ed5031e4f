//! A client of a node's control socket: JSON lines over TCP.

use std::io::{BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
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
}

impl ClientError {
    /// Whether the node could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

/// A connection to a node's control socket. Requests may be pipelined: [`Client::send`]
/// several, then [`Client::receive`] their replies (in completion order).
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_req: u64,
}

impl Client {
    /// Connects to `address`, retrying while the connection is refused for up to `wait`
    /// (a node that is still starting), and waits at most `timeout` for each reply.
    pub fn connect(address: &str, wait: Duration, timeout: Duration) -> Result<Self, ClientError> {
        let connect_error = |source| ClientError::Connect {
            address: address.to_string(),
            source,
        };
        let addrs: Vec<_> = address.to_socket_addrs().map_err(connect_error)?.collect();
        let deadline = Instant::now() + wait;
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
            if e.kind() == std::io::ErrorKind::ConnectionRefused && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            return Err(connect_error(e));
        };
        stream.set_read_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            next_req: 0,
        })
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
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        Ok(req)
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
                let req = req.as_u64().ok_or_else(|| {
                    ClientError::Protocol(format!(
                        "reply without a request number: {}",
                        error.clone().unwrap_or_default()
                    ))
                })?;
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
