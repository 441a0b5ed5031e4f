//! Carrying out control commands on the node.

use std::sync::Arc;
use std::time::Instant;

use netabase::{Multiaddr, Netabase, NetabaseError, PeerId};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::models::{CliDefinition, Document, DocumentPrimaryKey, Raw, RawPrimaryKey};
use crate::protocol::{
    BootstrapReply, Command, DocRecord, HexError, InfoReply, LocalRecord, Output, ProvideReply,
    ProviderEntry, PutReply, RawRecord, Removed, Request, StatsReply, hex, mode_name, mode_of,
    node_counters, unhex,
};

/// Why a command's arguments were refused before anything was done.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    /// `put` needs exactly one of `value` and `value_hex`.
    #[error("put needs exactly one of \"value\" and \"value_hex\"")]
    ValueChoice,
    /// `value_hex` is not hex.
    #[error("value_hex: {0}")]
    Hex(#[from] HexError),
    /// A peer id that does not parse.
    #[error("peer id {text:?}: {reason}")]
    PeerId {
        /// The text.
        text: String,
        /// Why.
        reason: String,
    },
    /// An address that does not parse.
    #[error("address {text:?}: {reason}")]
    Address {
        /// The text.
        text: String,
        /// Why.
        reason: String,
    },
    /// An address without a peer id, and no peer given.
    #[error("address {0:?} does not end in /p2p/<peer id> and no peer was given")]
    NoPeer(String),
    /// A stored document that is no longer valid JSON.
    #[error("stored document {key:?} is not valid JSON: {reason}")]
    StoredDocument {
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    /// Bad arguments.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The node refused or failed.
    #[error(transparent)]
    Node(#[from] NetabaseError),
    /// A result that does not encode as JSON.
    #[error("cannot encode the result: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What commands act on: the node, what it tells about itself, and where a shutdown
/// request goes.
pub(crate) struct Context {
    pub(crate) node: Netabase<CliDefinition>,
    pub(crate) info: InfoReply,
    pub(crate) shutdown: mpsc::Sender<()>,
}

/// Parses one request line and carries it out; the reply line to send back.
pub(crate) async fn handle_line(ctx: Arc<Context>, line: &str) -> Output {
    match serde_json::from_str::<Request>(line) {
        Ok(request) => execute(&ctx, request).await,
        Err(e) => Output::reply(Value::Null, Err(format!("invalid request: {e}"))),
    }
}

/// Carries out one request in a span of its own; logs how it ended.
pub(crate) async fn execute(ctx: &Context, request: Request) -> Output {
    let name = request.command.name();
    let span = tracing::info_span!("operation", op = name, req = %request.req);
    async move {
        let started = Instant::now();
        let result = run(ctx, request.command).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => tracing::debug!(micros, "done"),
            Err(e) => tracing::info!(micros, error = %e, "failed"),
        }
        Output::reply(request.req, result.map_err(|e| e.to_string()))
    }
    .instrument(span)
    .await
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn peer(text: &str) -> Result<PeerId, InputError> {
    text.parse().map_err(|e| InputError::PeerId {
        text: text.to_string(),
        reason: format!("{e}"),
    })
}

/// The peer and address of `address` (ending in `/p2p/<peer>`) or of `address` and
/// `peer`.
pub(crate) fn peer_address(
    address: &str,
    peer_text: Option<&str>,
) -> Result<(PeerId, Multiaddr), InputError> {
    let mut addr: Multiaddr = address.parse().map_err(|e| InputError::Address {
        text: address.to_string(),
        reason: format!("{e}"),
    })?;
    let named = match addr.iter().last() {
        Some(netabase::swarm::libp2p::multiaddr::Protocol::P2p(p)) => {
            addr.pop();
            Some(p)
        }
        _ => None,
    };
    match (named, peer_text) {
        (Some(p), None) => Ok((p, addr)),
        (named, Some(text)) => {
            let given = peer(text)?;
            match named {
                Some(p) if p != given => Err(InputError::Address {
                    text: address.to_string(),
                    reason: format!("names peer {p}, not {given}"),
                }),
                _ => Ok((given, addr)),
            }
        }
        (None, None) => Err(InputError::NoPeer(address.to_string())),
    }
}

fn raw_value(value: Option<String>, value_hex: Option<String>) -> Result<Vec<u8>, InputError> {
    match (value, value_hex) {
        (Some(text), None) => Ok(text.into_bytes()),
        (None, Some(h)) => Ok(unhex(&h)?),
        _ => Err(InputError::ValueChoice),
    }
}

fn put_reply(key: String, put: netabase::PutRecordResult) -> PutReply {
    PutReply {
        key,
        dht_key: hex(put.key.as_bytes()),
        stored_at: strings(&put.stored_at),
        quorum_error: put.quorum_error.map(|e| e.to_string()),
    }
}

fn raw_record(raw: Raw) -> LocalRecord {
    LocalRecord {
        value: String::from_utf8(raw.value.clone()).ok(),
        value_hex: Some(hex(&raw.value)),
        key: raw.key,
        doc: None,
    }
}

fn parse_doc(doc: Document) -> Result<(String, Value), InputError> {
    let value = serde_json::from_str(&doc.json).map_err(|e| InputError::StoredDocument {
        key: doc.key.clone(),
        reason: e.to_string(),
    })?;
    Ok((doc.key, value))
}

fn provide_reply(key: String, result: netabase::ProvidingResult) -> ProvideReply {
    ProvideReply {
        key,
        dht_key: hex(result.key.as_bytes()),
        announced_to: strings(&result.announced_to),
        error: result.error.map(|e| e.to_string()),
    }
}

fn providers(list: Vec<netabase::ProviderInfo>) -> Vec<ProviderEntry> {
    list.into_iter()
        .map(|p| ProviderEntry {
            peer: p.peer.to_string(),
            addresses: strings(&p.addresses),
        })
        .collect()
}

async fn run(ctx: &Context, command: Command) -> Result<Value, ExecError> {
    let node = &ctx.node;
    let value = match command {
        Command::Info => {
            let mut info = ctx.info.clone();
            info.listen_addresses = strings(&node.listen_addresses().await?);
            info.mode = mode_name(node.get_mode().await?);
            serde_json::to_value(info)?
        }
        Command::Put {
            key,
            value,
            value_hex,
        } => {
            let value = raw_value(value, value_hex)?;
            let put = node
                .put_record(Raw {
                    key: key.clone(),
                    value,
                })
                .await?;
            serde_json::to_value(put_reply(key, put))?
        }
        Command::Get { key } => {
            let found = node.get_record(&RawPrimaryKey(key.clone())).await?;
            serde_json::to_value(found.map(|f| RawRecord {
                key,
                value: String::from_utf8(f.record.value.clone()).ok(),
                value_hex: hex(&f.record.value),
                source: f.source.map(|p| p.to_string()),
                origin: f.origin.to_string(),
                timestamp: f.timestamp,
            }))?
        }
        Command::Remove { key } => {
            let removed = node.remove_record(&RawPrimaryKey(key)).await?;
            serde_json::to_value(Removed {
                removed: removed.is_some(),
            })?
        }
        Command::PutDoc { key, doc } => {
            let json = serde_json::to_string(&doc)?;
            let put = node
                .put_record(Document {
                    key: key.clone(),
                    json,
                })
                .await?;
            serde_json::to_value(put_reply(key, put))?
        }
        Command::GetDoc { key } => match node.get_record(&DocumentPrimaryKey(key.clone())).await? {
            Some(f) => {
                let (key, doc) = parse_doc(f.record)?;
                serde_json::to_value(DocRecord {
                    key,
                    doc,
                    source: f.source.map(|p| p.to_string()),
                    origin: f.origin.to_string(),
                    timestamp: f.timestamp,
                })?
            }
            None => Value::Null,
        },
        Command::RemoveDoc { key } => {
            let removed = node.remove_record(&DocumentPrimaryKey(key)).await?;
            serde_json::to_value(Removed {
                removed: removed.is_some(),
            })?
        }
        Command::List { doc: false, limit } => {
            let records = node.query_local_records::<Raw>(limit).await?;
            serde_json::to_value(records.into_iter().map(raw_record).collect::<Vec<_>>())?
        }
        Command::List { doc: true, limit } => {
            let docs = node.query_local_records::<Document>(limit).await?;
            let mut out = Vec::with_capacity(docs.len());
            for d in docs {
                let (key, doc) = parse_doc(d)?;
                out.push(LocalRecord {
                    key,
                    value: None,
                    value_hex: None,
                    doc: Some(doc),
                });
            }
            serde_json::to_value(out)?
        }
        Command::Provide { key, doc } => {
            let result = if doc {
                node.start_providing(&DocumentPrimaryKey(key.clone()))
                    .await?
            } else {
                node.start_providing(&RawPrimaryKey(key.clone())).await?
            };
            serde_json::to_value(provide_reply(key, result))?
        }
        Command::StopProviding { key, doc } => {
            if doc {
                node.stop_providing(&DocumentPrimaryKey(key)).await?;
            } else {
                node.stop_providing(&RawPrimaryKey(key)).await?;
            }
            Value::Null
        }
        Command::Providers { key, doc } => {
            let list = if doc {
                node.get_providers(&DocumentPrimaryKey(key)).await?
            } else {
                node.get_providers(&RawPrimaryKey(key)).await?
            };
            serde_json::to_value(providers(list))?
        }
        Command::AddAddress { address, peer } => {
            let (peer, addr) = peer_address(&address, peer.as_deref())?;
            node.add_address(peer, addr).await?;
            Value::Null
        }
        Command::RemovePeer { peer: text } => serde_json::to_value(Removed {
            removed: node.remove_peer(peer(&text)?).await?,
        })?,
        Command::Bootstrap => {
            let result = node.bootstrap().await?;
            serde_json::to_value(BootstrapReply {
                routing_table_size: result.routing_table_size,
                requests: result.stats.requests,
            })?
        }
        Command::Peers => serde_json::to_value(strings(&node.connected_peers().await?))?,
        Command::RoutingTable => serde_json::to_value(strings(&node.routing_table_peers().await?))?,
        Command::Mode => serde_json::to_value(mode_name(node.get_mode().await?))?,
        Command::SetMode { mode } => {
            node.set_mode(mode_of(mode)).await?;
            serde_json::to_value(mode)?
        }
        Command::Stats => {
            let stats = node.stats().await?;
            let store = node.local_store()?;
            serde_json::to_value(StatsReply {
                counters: node_counters(&stats),
                connected_peers: node.connected_peers().await?.len(),
                routing_table_peers: node.routing_table_peers().await?.len(),
                local_raw_records: store.count::<Raw>().map_err(NetabaseError::from)?,
                local_documents: store.count::<Document>().map_err(NetabaseError::from)?,
            })?
        }
        Command::Shutdown => {
            // A full channel means a shutdown is already under way.
            let _ = ctx.shutdown.try_send(());
            Value::Null
        }
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    #[test]
    fn addresses_name_their_peer_or_take_it_from_the_argument() {
        let with = format!("/ip4/127.0.0.1/tcp/4001/p2p/{PEER}");
        let (p, a) = peer_address(&with, None).unwrap();
        assert_eq!(p.to_string(), PEER);
        assert_eq!(a.to_string(), "/ip4/127.0.0.1/tcp/4001");
        let (p, a) = peer_address("/ip4/127.0.0.1/tcp/4001", Some(PEER)).unwrap();
        assert_eq!(p.to_string(), PEER);
        assert_eq!(a.to_string(), "/ip4/127.0.0.1/tcp/4001");
        assert!(peer_address(&with, Some(PEER)).is_ok());
    }

    #[test]
    fn bad_addresses_and_peers_are_refused() {
        assert!(matches!(
            peer_address("/ip4/127.0.0.1/tcp/4001", None),
            Err(InputError::NoPeer(_))
        ));
        assert!(matches!(
            peer_address("not an address", None),
            Err(InputError::Address { .. })
        ));
        assert!(matches!(
            peer_address("/ip4/127.0.0.1/tcp/4001", Some("not a peer")),
            Err(InputError::PeerId { .. })
        ));
        let other = netabase::Keypair::generate_ed25519().public().to_peer_id();
        assert!(matches!(
            peer_address(
                &format!("/ip4/127.0.0.1/tcp/1/p2p/{PEER}"),
                Some(&other.to_string())
            ),
            Err(InputError::Address { .. })
        ));
    }

    #[test]
    fn a_raw_value_is_text_or_hex_never_both_nor_neither() {
        assert_eq!(raw_value(Some("hi".into()), None).unwrap(), b"hi");
        assert_eq!(raw_value(None, Some("00ff".into())).unwrap(), [0, 255]);
        assert!(matches!(
            raw_value(None, None),
            Err(InputError::ValueChoice)
        ));
        assert!(matches!(
            raw_value(Some("a".into()), Some("00".into())),
            Err(InputError::ValueChoice)
        ));
        assert!(matches!(
            raw_value(None, Some("0".into())),
            Err(InputError::Hex(_))
        ));
    }

    #[test]
    fn a_stored_document_that_is_not_json_is_an_error() {
        let bad = Document {
            key: "k".into(),
            json: "{not json".into(),
        };
        assert!(matches!(
            parse_doc(bad),
            Err(InputError::StoredDocument { .. })
        ));
        let good = Document {
            key: "k".into(),
            json: r#"{"a":1}"#.into(),
        };
        assert_eq!(parse_doc(good).unwrap().1, serde_json::json!({"a": 1}));
    }
}
