//! The control protocol: JSON lines, the same on a node's standard input and on its
//! control socket.
//!
//! Every line sent to the node is one [`Request`]: a `cmd` naming the [`Command`], its
//! arguments, and an optional `req` (any JSON value) that the reply echoes. Every request
//! gets exactly one [`Output::Reply`] line, in completion order (requests run
//! concurrently):
//!
//! ```text
//! -> {"req":1,"cmd":"put","key":"greeting","value":"hello"}
//! <- {"type":"reply","req":1,"ok":true,"result":{"key":"greeting","dht_key":"2f6e62...","stored_at":["12D3..."],"quorum_error":null}}
//! -> {"req":2,"cmd":"get","key":"missing"}
//! <- {"type":"reply","req":2,"ok":true,"result":null}
//! -> {"cmd":"nonsense"}
//! <- {"type":"reply","req":null,"ok":false,"error":"invalid request: unknown variant `nonsense`, ..."}
//! ```
//!
//! A line longer than [`MAX_LINE`] bytes, an empty line, a line that is not UTF-8 and a
//! line that is not a request are refused (with `req: null`). On standard input the next
//! line is read as usual; on the control socket the connection closes after the refusal
//! (the [`session`](crate::session) module says how its lines are checked). The result of each
//! command is described on its variant.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest request line accepted, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// Most records `list` returns when no limit is given.
pub const DEFAULT_LIST_LIMIT: usize = 100;

fn default_list_limit() -> usize {
    DEFAULT_LIST_LIMIT
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Echoed in the reply (`null` if absent).
    #[serde(default)]
    pub req: Value,
    /// What to do.
    #[serde(flatten)]
    pub command: Command,
}

/// The DHT mode, as named on the command line and in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    /// Serves the DHT to peers.
    Server,
    /// Only queries the DHT; peers do not add it to their routing tables.
    Client,
}

impl std::fmt::Display for ModeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModeName::Server => "server",
            ModeName::Client => "client",
        })
    }
}

/// What a request asks. Keys are strings; `doc: true` names the key of a JSON document
/// instead of a raw record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// The node's identity, addresses and settings; replies [`InfoReply`].
    Info,
    /// Stores a raw record locally and publishes it; replies [`PutReply`]. Exactly one
    /// of `value` (UTF-8 text) and `value_hex` (bytes in hex) is given.
    Put {
        /// The key.
        key: String,
        /// The value as text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        /// The value as hex bytes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value_hex: Option<String>,
    },
    /// Finds a raw record, locally first, then on the network; replies
    /// `Option<`[`RawRecord`]`>` (`null`: not found).
    Get {
        /// The key.
        key: String,
    },
    /// Removes a raw record from this node (copies elsewhere expire); replies
    /// [`Removed`].
    Remove {
        /// The key.
        key: String,
    },
    /// Stores a JSON document locally and publishes it; replies [`PutReply`].
    PutDoc {
        /// The key.
        key: String,
        /// The document (any JSON value).
        doc: Value,
    },
    /// Finds a JSON document; replies `Option<`[`DocRecord`]`>`.
    GetDoc {
        /// The key.
        key: String,
    },
    /// Removes a JSON document from this node; replies [`Removed`].
    RemoveDoc {
        /// The key.
        key: String,
    },
    /// The records in this node's own store, in key order; replies
    /// `Vec<`[`LocalRecord`]`>`.
    List {
        /// Documents instead of raw records.
        #[serde(default)]
        doc: bool,
        /// Most records returned.
        #[serde(default = "default_list_limit")]
        limit: usize,
    },
    /// Announces this node as a provider of a key; replies [`ProvideReply`].
    Provide {
        /// The key.
        key: String,
        /// A document key.
        #[serde(default)]
        doc: bool,
    },
    /// Stops providing a key; replies `null`.
    StopProviding {
        /// The key.
        key: String,
        /// A document key.
        #[serde(default)]
        doc: bool,
    },
    /// The providers of a key; replies `Vec<`[`ProviderEntry`]`>`.
    Providers {
        /// The key.
        key: String,
        /// A document key.
        #[serde(default)]
        doc: bool,
    },
    /// Adds a peer's address to the routing table; replies `null`. The address ends in
    /// `/p2p/<peer id>`, or `peer` names the peer.
    AddAddress {
        /// The address.
        address: String,
        /// The peer, if the address does not name it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    /// Removes a peer from the routing table; replies [`Removed`].
    RemovePeer {
        /// The peer id.
        peer: String,
    },
    /// Joins or refreshes the DHT through the known peers; replies [`BootstrapReply`].
    Bootstrap,
    /// The peers with an open connection; replies `Vec<String>` (peer ids).
    Peers,
    /// The peers in the routing table; replies `Vec<String>` (peer ids).
    RoutingTable,
    /// The DHT mode; replies a [`ModeName`].
    Mode,
    /// Switches the DHT mode; replies the new [`ModeName`].
    SetMode {
        /// The mode.
        mode: ModeName,
    },
    /// The node's counters; replies [`StatsReply`].
    Stats,
    /// Stops the node gracefully (as SIGTERM does); replies `null` before it stops.
    Shutdown,
}

impl Command {
    /// The command's name (its `cmd`).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Info => "info",
            Command::Put { .. } => "put",
            Command::Get { .. } => "get",
            Command::Remove { .. } => "remove",
            Command::PutDoc { .. } => "put_doc",
            Command::GetDoc { .. } => "get_doc",
            Command::RemoveDoc { .. } => "remove_doc",
            Command::List { .. } => "list",
            Command::Provide { .. } => "provide",
            Command::StopProviding { .. } => "stop_providing",
            Command::Providers { .. } => "providers",
            Command::AddAddress { .. } => "add_address",
            Command::RemovePeer { .. } => "remove_peer",
            Command::Bootstrap => "bootstrap",
            Command::Peers => "peers",
            Command::RoutingTable => "routing_table",
            Command::Mode => "mode",
            Command::SetMode { .. } => "set_mode",
            Command::Stats => "stats",
            Command::Shutdown => "shutdown",
        }
    }
}

/// A line the node writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    /// The node is up (first line on standard output with `--json`).
    Ready(InfoReply),
    /// The answer to one request.
    Reply {
        /// The request's `req`.
        req: Value,
        /// Whether the command succeeded.
        ok: bool,
        /// Its result (when `ok`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// Why it failed (when not `ok`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The node stopped (last line on standard output with `--json`).
    Stopped {
        /// Its peer id.
        peer_id: String,
    },
}

impl Output {
    /// The reply to request `req`.
    pub fn reply(req: Value, result: Result<Value, String>) -> Output {
        match result {
            Ok(result) => Output::Reply {
                req,
                ok: true,
                result: Some(result),
                error: None,
            },
            Err(error) => Output::Reply {
                req,
                ok: false,
                result: None,
                error: Some(error),
            },
        }
    }

    /// The line, without its newline.
    pub fn to_line(&self) -> String {
        // These types hold only strings, numbers and JSON values: they always serialise.
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"reply","req":null,"ok":false,"error":"cannot encode: {e}"}}"#)
        })
    }
}

/// Who and where a node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoReply {
    /// Its peer id.
    pub peer_id: String,
    /// The addresses it listens on (without the `/p2p/` suffix).
    pub listen_addresses: Vec<String>,
    /// The Kademlia protocol name.
    pub protocol: String,
    /// The DHT mode.
    pub mode: ModeName,
    /// The data directory.
    pub data_dir: String,
    /// The storage engine (`redb` or `sled`).
    pub backend: String,
    /// The path of the control socket (a Unix domain socket).
    pub control: Option<String>,
    /// The address of the TCP control endpoint, if it has one.
    #[serde(default)]
    pub control_tcp: Option<String>,
    /// The file holding the TCP control endpoint's token, if it has one.
    #[serde(default)]
    pub control_token_file: Option<String>,
    /// The metrics endpoint's address, if it has one.
    pub metrics: Option<String>,
    /// The program's version.
    pub version: String,
}

impl InfoReply {
    /// The human-readable form: peer id, listen addresses, control and metrics endpoints,
    /// data directory and DHT settings, one per line (`mdns`: whether mDNS is on, when
    /// known).
    pub fn describe(&self, mdns: Option<bool>) -> String {
        let mut s = format!("peer id    {}\n", self.peer_id);
        for (i, addr) in self.listen_addresses.iter().enumerate() {
            let label = if i == 0 { "listening" } else { "" };
            s.push_str(&format!("{label:<10} {addr}/p2p/{}\n", self.peer_id));
        }
        if let Some(c) = &self.control {
            s.push_str(&format!("control    {c}\n"));
        }
        if let Some(c) = &self.control_tcp {
            s.push_str(&format!("control    {c} (TCP"));
            if let Some(f) = &self.control_token_file {
                s.push_str(&format!(", token in {f}"));
            }
            s.push_str(")\n");
        }
        if let Some(m) = &self.metrics {
            s.push_str(&format!("metrics    http://{m}/metrics\n"));
        }
        s.push_str(&format!(
            "data dir   {} ({})\n",
            self.data_dir, self.backend
        ));
        s.push_str(&format!(
            "dht        {} mode, protocol {}",
            self.mode, self.protocol
        ));
        if let Some(on) = mdns {
            s.push_str(if on { ", mDNS on" } else { ", mDNS off" });
        }
        s
    }
}

/// The outcome of `put` and `put_doc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReply {
    /// The key.
    pub key: String,
    /// The record's DHT key, in hex.
    pub dht_key: String,
    /// The peers that confirmed storing it by the time the quorum was met.
    pub stored_at: Vec<String>,
    /// Why the network part fell short, if it did (the local write stands).
    pub quorum_error: Option<String>,
}

/// A raw record found by `get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// The key.
    pub key: String,
    /// The value as text, when it is UTF-8.
    pub value: Option<String>,
    /// The value in hex.
    pub value_hex: String,
    /// The peer that returned it; `null`: this node's own store.
    pub source: Option<String>,
    /// The peer that wrote it.
    pub origin: String,
    /// The writer's timestamp (microseconds since the Unix epoch).
    pub timestamp: u64,
}

/// A document found by `get_doc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocRecord {
    /// The key.
    pub key: String,
    /// The document.
    pub doc: Value,
    /// The peer that returned it; `null`: this node's own store.
    pub source: Option<String>,
    /// The peer that wrote it.
    pub origin: String,
    /// The writer's timestamp (microseconds since the Unix epoch).
    pub timestamp: u64,
}

/// Whether something was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// Whether it was there.
    pub removed: bool,
}

/// A record of this node's own store, listed by `list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalRecord {
    /// The key.
    pub key: String,
    /// A raw record's value as text, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A raw record's value in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hex: Option<String>,
    /// A document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<Value>,
}

/// The outcome of `provide`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvideReply {
    /// The key.
    pub key: String,
    /// Its DHT key, in hex.
    pub dht_key: String,
    /// The peers the announcement reached.
    pub announced_to: Vec<String>,
    /// Why no peer was reached, if none was (the node announces it again later).
    pub error: Option<String>,
}

/// A provider found by `providers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEntry {
    /// The providing peer.
    pub peer: String,
    /// Its announced addresses.
    pub addresses: Vec<String>,
}

/// The outcome of `bootstrap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapReply {
    /// Peers in the routing table afterwards.
    pub routing_table_size: usize,
    /// Requests the bootstrap sent.
    pub requests: u32,
}

/// The Kademlia core's and the carrier's counters of a node (part of [`StatsReply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeCounters {
    /// Outbound DHT requests sent.
    pub requests_sent: u64,
    /// Answers received for live requests.
    pub responses_received: u64,
    /// Outbound requests that failed or timed out.
    pub requests_failed: u64,
    /// Of which timed out.
    pub requests_timed_out: u64,
    /// Answers for unknown or finished requests (late or duplicate).
    pub unexpected_responses: u64,
    /// Answers of the wrong kind.
    pub mismatched_responses: u64,
    /// Inbound requests handled.
    pub inbound_requests: u64,
    /// Inbound requests refused.
    pub inbound_rejected: u64,
    /// Records from peers that failed validation.
    pub invalid_records: u64,
    /// Inbound streams that failed before delivering a request.
    pub inbound_stream_failures: u64,
    /// Inbound connections and requests refused by the inbound limits.
    #[serde(default)]
    pub inbound_refused: u64,
    /// Queries finished.
    pub queries_finished: u64,
}

/// The node's counters and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    /// The protocol counters (flattened: one JSON object with the fields below).
    #[serde(flatten)]
    pub counters: NodeCounters,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Peers in the routing table.
    pub routing_table_peers: usize,
    /// Raw records in the local store.
    pub local_raw_records: u64,
    /// Documents in the local store.
    pub local_documents: u64,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Why a hex string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// An odd number of digits.
    #[error("hex has an odd number of digits ({0})")]
    OddLength(usize),
    /// A character that is not a hex digit.
    #[error("not a hex digit at position {position}: {found:?}")]
    BadDigit {
        /// Its position.
        position: usize,
        /// The character.
        found: char,
    },
}

/// The bytes of a hex string (either case).
pub fn unhex(s: &str) -> Result<Vec<u8>, HexError> {
    if !s.len().is_multiple_of(2) {
        return Err(HexError::OddLength(s.len()));
    }
    let digit = |position: usize, c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(HexError::BadDigit {
            position,
            found: s
                .get(position..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER),
        }),
    };
    let bytes = s.as_bytes();
    (0..bytes.len())
        .step_by(2)
        .map(|i| Ok(digit(i, bytes[i])? << 4 | digit(i + 1, bytes[i + 1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_and_without_a_request_number() {
        let r: Request = serde_json::from_str(r#"{"req":7,"cmd":"get","key":"k"}"#).unwrap();
        assert_eq!(r.req, Value::from(7));
        assert_eq!(r.command, Command::Get { key: "k".into() });
        let r: Request = serde_json::from_str(r#"{"cmd":"list"}"#).unwrap();
        assert_eq!(r.req, Value::Null);
        assert_eq!(
            r.command,
            Command::List {
                doc: false,
                limit: DEFAULT_LIST_LIMIT
            }
        );
        let r: Request =
            serde_json::from_str(r#"{"req":"a","cmd":"put_doc","key":"d","doc":{"x":[1,2]}}"#)
                .unwrap();
        assert_eq!(r.req, Value::from("a"));
        assert_eq!(
            r.command,
            Command::PutDoc {
                key: "d".into(),
                doc: serde_json::json!({"x": [1, 2]})
            }
        );
    }

    #[test]
    fn malformed_requests_are_errors() {
        for line in [
            "",
            "not json",
            "{}",
            r#"{"cmd":"nonsense"}"#,
            r#"{"cmd":"get"}"#,
            r#"{"cmd":"get","key":5}"#,
            r#"{"cmd":"set_mode","mode":"sideways"}"#,
            r#"[1,2]"#,
        ] {
            assert!(
                serde_json::from_str::<Request>(line).is_err(),
                "{line:?} parsed"
            );
        }
    }

    #[test]
    fn every_command_round_trips_and_is_named_by_its_tag() {
        let commands = [
            Command::Info,
            Command::Put {
                key: "k".into(),
                value: Some("v".into()),
                value_hex: None,
            },
            Command::Get { key: "k".into() },
            Command::Remove { key: "k".into() },
            Command::PutDoc {
                key: "k".into(),
                doc: Value::Bool(true),
            },
            Command::GetDoc { key: "k".into() },
            Command::RemoveDoc { key: "k".into() },
            Command::List {
                doc: true,
                limit: 3,
            },
            Command::Provide {
                key: "k".into(),
                doc: false,
            },
            Command::StopProviding {
                key: "k".into(),
                doc: true,
            },
            Command::Providers {
                key: "k".into(),
                doc: false,
            },
            Command::AddAddress {
                address: "/ip4/127.0.0.1/tcp/1".into(),
                peer: None,
            },
            Command::RemovePeer { peer: "p".into() },
            Command::Bootstrap,
            Command::Peers,
            Command::RoutingTable,
            Command::Mode,
            Command::SetMode {
                mode: ModeName::Client,
            },
            Command::Stats,
            Command::Shutdown,
        ];
        for command in commands {
            let request = Request {
                req: Value::from(1),
                command: command.clone(),
            };
            let line = serde_json::to_string(&request).unwrap();
            let tagged: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(tagged["cmd"], command.name(), "{line}");
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
        }
    }

    #[test]
    fn numbers_that_are_not_exact_integers_round_trip() {
        // Integers beyond u64 and i64 and decimals become f64; each parses to the closest
        // one, so re-encoding gives a line that parses to the same request.
        for req in [
            "1000000000000000000000000000000000000000000000000",
            "-98765432109876543210987654321",
            "0.1",
            "2.2250738585072011e-308",
            "123456789.123456789e-20",
        ] {
            let line = format!(r#"{{"req":{req},"cmd":"info"}}"#);
            let request: Request = serde_json::from_str(&line).unwrap();
            let again = serde_json::to_string(&request).unwrap();
            assert_eq!(
                serde_json::from_str::<Request>(&again).unwrap(),
                request,
                "{req}"
            );
        }
    }

    #[test]
    fn replies_carry_either_a_result_or_an_error() {
        let ok = Output::reply(Value::from(3), Ok(Value::Null)).to_line();
        assert_eq!(ok, r#"{"type":"reply","req":3,"ok":true,"result":null}"#);
        let err = Output::reply(Value::Null, Err("nope".into())).to_line();
        assert_eq!(
            err,
            r#"{"type":"reply","req":null,"ok":false,"error":"nope"}"#
        );
    }

    #[test]
    fn hex_round_trips_and_refuses_bad_input() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(unhex("ABcd").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(unhex("abc"), Err(HexError::OddLength(3)));
        assert_eq!(
            unhex("0g"),
            Err(HexError::BadDigit {
                position: 1,
                found: 'g'
            })
        );
        assert!(matches!(unhex("0é"), Err(HexError::OddLength(3))));
        // Multi-byte characters are refused without slicing inside them.
        assert!(matches!(
            unhex("éé"),
            Err(HexError::BadDigit {
                position: 0,
                found: 'é'
            })
        ));
        assert!(matches!(
            unhex("0aéé"),
            Err(HexError::BadDigit {
                position: 2,
                found: 'é'
            })
        ));
        assert!(matches!(
            unhex("0éa"),
            Err(HexError::BadDigit {
                position: 1,
                found: 'é'
            })
        ));
    }
}
