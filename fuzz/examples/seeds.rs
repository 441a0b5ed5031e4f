//! Writes the seed inputs of every fuzz target to `corpus/<target>/seed-*` under the
//! directory given (default `corpus`, from the `fuzz/` directory):
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/corpus
//! ```
//!
//! Each seed is a meaningful input: well-formed messages, values and request lines of every
//! kind, and a few damaged ones, so that a run starts from the decoders' real paths.

use std::path::{Path, PathBuf};

use netabase_core::model::Envelope;
use netabase_core::wire::Codec;
use netabase_core::{
    Address, ConnectionType, Keypair, PeerId, PeerInfo, RecordKey, Request, Response, WireRecord,
};
use netabase_store::NetabaseDefinition;
use netabase_store::codec;

mod typed {
    use netabase_macros::netabase_definition_module;
    include!("../models/typed_record.rs");
}

mod store {
    use netabase_store::netabase_definition_module;
    include!("../models/store_value.rs");
}

struct Out {
    dir: PathBuf,
    count: usize,
}

impl Out {
    fn new(root: &Path, target: &str) -> Out {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("the corpus directory is created");
        Out { dir, count: 0 }
    }

    fn put(&mut self, name: &str, bytes: &[u8]) {
        self.count += 1;
        let path = self.dir.join(format!("seed-{:02}-{name}", self.count));
        std::fs::write(&path, bytes).expect("a seed is written");
    }
}

fn key(text: &str) -> RecordKey {
    RecordKey::new(text.as_bytes()).expect("a short key")
}

/// `/ip4/A.B.C.D/tcp/PORT` in multiaddr bytes.
fn tcp4(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut bytes = vec![0x04];
    bytes.extend_from_slice(&ip);
    bytes.push(0x06);
    bytes.extend_from_slice(&port.to_be_bytes());
    bytes
}

/// `/ip6/::1/tcp/PORT` in multiaddr bytes.
fn tcp6_loopback(port: u16) -> Vec<u8> {
    let mut bytes = vec![0x29];
    bytes.extend_from_slice(&[0; 15]);
    bytes.push(1);
    bytes.push(0x06);
    bytes.extend_from_slice(&port.to_be_bytes());
    bytes
}

fn peer_info(seed: u64, addrs: &[Vec<u8>]) -> PeerInfo {
    let addrs: Vec<Address> = addrs
        .iter()
        .map(|a| Address::from_bytes(a).expect("a valid address"))
        .collect();
    PeerInfo {
        id: PeerId::from_seed(seed),
        addrs: addrs.into(),
        connection: ConnectionType::Connected,
    }
}

fn wire_decode(root: &Path) {
    let mut out = Out::new(root, "wire_decode");
    let codec = Codec::new(64 * 1024);
    let record = WireRecord {
        key: key("greeting"),
        value: b"hello".to_vec(),
        publisher: Some(PeerId::from_seed(1)),
        ttl_secs: Some(3600),
    };
    let requests = [
        ("find-node", Request::FindNode { key: key("k") }),
        (
            "get-value",
            Request::GetValue {
                key: key("greeting"),
            },
        ),
        (
            "put-value",
            Request::PutValue {
                record: Box::new(record.clone()),
            },
        ),
        ("get-providers", Request::GetProviders { key: key("file") }),
        (
            "add-provider",
            Request::AddProvider {
                key: key("file"),
                provider: Box::new(peer_info(2, &[tcp4([127, 0, 0, 1], 4001)])),
            },
        ),
        ("ping", Request::Ping),
    ];
    for (name, request) in &requests {
        let frame = codec.encode_request(request);
        out.put(&format!("request-{name}"), &frame);
        // The payload without its length prefix, as the target also decodes.
        if let Ok(netabase_core::wire::Frame::Complete { payload, .. }) = codec.read_frame(&frame) {
            out.put(&format!("request-{name}-payload"), payload);
        }
    }
    let peers = vec![
        peer_info(3, &[tcp4([127, 0, 0, 1], 4002)]),
        peer_info(4, &[tcp4([10, 0, 0, 1], 4003), tcp6_loopback(4004)]),
    ];
    let responses = [
        (
            "find-node",
            Response::FindNode {
                closer_peers: peers.clone(),
            },
        ),
        (
            "get-value",
            Response::GetValue {
                record: Some(Box::new(record)),
                closer_peers: peers.clone(),
            },
        ),
        (
            "get-value-none",
            Response::GetValue {
                record: None,
                closer_peers: vec![],
            },
        ),
        (
            "put-value",
            Response::PutValue {
                key: key("greeting"),
                value: b"hello".to_vec(),
            },
        ),
        (
            "get-providers",
            Response::GetProviders {
                closer_peers: peers.clone(),
                provider_peers: peers,
            },
        ),
        ("pong", Response::Pong),
    ];
    for (name, response) in &responses {
        let frame = codec.encode_response(response);
        out.put(&format!("response-{name}"), &frame);
    }
    // A truncated frame and an oversized length prefix.
    let frame = codec.encode_request(&requests[2].1);
    out.put("truncated", &frame[..frame.len() / 2]);
    out.put("oversized", &[0xff, 0xff, 0xff, 0xff, 0x0f]);
}

fn typed_record(root: &Path) {
    use typed::models::{FuzzDefinition, Message, User};
    let mut out = Out::new(root, "typed_record");
    let writer = Keypair::from_seed(7);
    let values = [
        (
            "message",
            FuzzDefinition::Message(Message {
                id: 1,
                author: "ada".into(),
                text: "hello".into(),
                tags: vec!["greeting".into(), "first".into()],
            }),
        ),
        (
            "user",
            FuzzDefinition::User(User {
                name: "grace".into(),
                age: Some(85),
            }),
        ),
        (
            "user-no-age",
            FuzzDefinition::User(User {
                name: String::new(),
                age: None,
            }),
        ),
    ];
    for (name, value) in &values {
        let (key, sealed) =
            Envelope::seal(value, 1_700_000_000_000_000, &writer).expect("a value seals");
        let key = key.as_bytes().to_vec();
        let mut input = vec![u8::try_from(key.len()).expect("a short key")];
        input.extend_from_slice(&key);
        input.extend_from_slice(&sealed);
        out.put(name, &input);
        // The same value under another key, and with a damaged byte.
        let mut wrong = vec![1, b'x'];
        wrong.extend_from_slice(&sealed);
        out.put(&format!("{name}-other-key"), &wrong);
        let mut damaged = input.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        out.put(&format!("{name}-damaged"), &damaged);
        // The model payload alone, as the model decoder sees it.
        let mut payload = vec![0];
        payload.extend_from_slice(
            &netabase_store::core::model::NetabaseDefinition::encode_model(value)
                .expect("a model encodes"),
        );
        out.put(&format!("{name}-payload"), &payload);
    }
}

fn store_value(root: &Path) {
    use store::models::{FuzzDefinition, Message, User};
    let mut out = Out::new(root, "store_value");
    let message = Message {
        id: 7,
        author: "ada".into(),
        text: "hello, world".into(),
        tags: vec!["a".into(), "b".into()],
        reply_to: Some(6),
    };
    let user = User {
        name: "ada".into(),
        age: Some(36),
        flags: (true, -1),
    };
    let version = FuzzDefinition::SCHEMA_VERSION;
    // The first byte picks the model: even a message, odd a user.
    let mut put = |name: &str, pick: u8, bytes: &[u8]| {
        let mut input = vec![pick];
        input.extend_from_slice(bytes);
        out.put(name, &input);
    };
    let sealed_message = codec::seal(version, &message).expect("a message encodes");
    let sealed_user = codec::seal(version, &user).expect("a user encodes");
    put("message", 0, &sealed_message);
    put("user", 1, &sealed_user);
    put("message-as-user", 1, &sealed_message);
    // Other schema versions, one to five LEB128 bytes.
    for v in [version + 1, 200, 20_000, 3_000_000, u32::MAX] {
        put(
            &format!("message-version-{v}"),
            0,
            &codec::seal(v, &message).expect("encodes"),
        );
    }
    // Damage: payload, checksum, version, format byte, truncation.
    let mut damaged = sealed_message.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    put("message-damaged-payload", 0, &damaged);
    let mut damaged = sealed_message.clone();
    damaged[3] ^= 0x80;
    put("message-damaged-checksum", 0, &damaged);
    let mut damaged = sealed_message.clone();
    damaged[1] ^= 1;
    put("message-damaged-version", 0, &damaged);
    let mut damaged = sealed_message.clone();
    damaged[0] = 3;
    put("message-format-3", 0, &damaged);
    put("message-truncated", 0, &sealed_message[..4]);
    put("empty", 0, &[]);
    // A version in a longer form than needed (refused).
    let mut long = vec![codec::VALUE_FORMAT, 0x81, 0x00];
    long.extend_from_slice(&[0; 4]);
    put("version-not-shortest", 0, &long);
    // Format 1: magic, format, version and checksum of four bytes each.
    let payload = &sealed_user[6..];
    let seed = (1u64 << 32) | u64::from(version);
    let sum = xxhash_rust::xxh3::xxh3_64_with_seed(payload, seed) as u32;
    let mut format_1 = b"NS\x01".to_vec();
    format_1.extend_from_slice(&version.to_be_bytes());
    format_1.extend_from_slice(&sum.to_be_bytes());
    format_1.extend_from_slice(payload);
    put("user-format-1", 1, &format_1);
    // A valid header around a payload that is not a model.
    put(
        "header-around-garbage",
        0,
        &codec::seal_payload(version, &[0xff; 9]),
    );
    put(
        "header-around-nothing",
        1,
        &codec::seal_payload(version, &[]),
    );
}

fn control_request(root: &Path) {
    let mut out = Out::new(root, "control_request");
    // The first byte: even a Unix session, odd a TCP one; 3 sends the right token first.
    let lines: &[(&str, &str)] = &[
        ("info", r#"{"req":1,"cmd":"info"}"#),
        (
            "put",
            r#"{"req":2,"cmd":"put","key":"greeting","value":"hello"}"#,
        ),
        (
            "put-hex",
            r#"{"req":"x","cmd":"put","key":"k","value_hex":"00ff"}"#,
        ),
        ("get", r#"{"cmd":"get","key":"greeting"}"#),
        ("remove", r#"{"cmd":"remove","key":"greeting"}"#),
        (
            "put-doc",
            r#"{"req":[1,2],"cmd":"put_doc","key":"d","doc":{"a":[1,2.5,null,true]}}"#,
        ),
        ("get-doc", r#"{"cmd":"get_doc","key":"d"}"#),
        ("remove-doc", r#"{"cmd":"remove_doc","key":"d"}"#),
        ("list", r#"{"cmd":"list","doc":true,"limit":3}"#),
        ("provide", r#"{"cmd":"provide","key":"f","doc":false}"#),
        ("stop-providing", r#"{"cmd":"stop_providing","key":"f"}"#),
        ("providers", r#"{"cmd":"providers","key":"f","doc":true}"#),
        (
            "add-address",
            r#"{"cmd":"add_address","address":"/ip4/127.0.0.1/tcp/1","peer":"p"}"#,
        ),
        ("remove-peer", r#"{"cmd":"remove_peer","peer":"p"}"#),
        ("bootstrap", r#"{"cmd":"bootstrap"}"#),
        ("peers", r#"{"cmd":"peers"}"#),
        ("routing-table", r#"{"cmd":"routing_table"}"#),
        ("mode", r#"{"cmd":"mode"}"#),
        (
            "set-mode",
            r#"{"req":{"n":1},"cmd":"set_mode","mode":"client"}"#,
        ),
        ("stats", r#"{"cmd":"stats"}"#),
        ("shutdown", r#"{"req":9,"cmd":"shutdown"}"#),
        ("escapes", r#"{"cmd":"get","key":"\u00e9\n\"\\"}"#),
    ];
    for (name, line) in lines {
        for (kind, label) in [(0u8, "unix"), (3, "tcp-token")] {
            let mut input = vec![kind];
            input.extend_from_slice(line.as_bytes());
            input.push(b'\n');
            out.put(&format!("{label}-{name}"), &input);
        }
    }
    let several = format!("\x00{}\r\n{}\n{}\n", lines[0].1, lines[3].1, lines[18].1);
    out.put("unix-several", several.as_bytes());
    let refused: &[(&str, &[u8])] = &[
        ("http-post", b"\x00POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n{\"cmd\":\"shutdown\"}\n"),
        ("http-get-tcp", b"\x01GET /metrics HTTP/1.1\r\n"),
        ("http-pri", b"\x00PRI * HTTP/2.0\r\n"),
        ("wrong-token", b"\x010000000000000000000000000000000000000000000000000000000000000000\n{\"cmd\":\"info\"}\n"),
        ("no-token", b"\x01{\"cmd\":\"shutdown\"}\n"),
        ("not-utf8", b"\x00{\"cmd\":\"get\",\"key\":\"\xff\"}\n"),
        ("empty-line", b"\x00\n{\"cmd\":\"info\"}\n"),
        ("unknown-command", b"\x00{\"cmd\":\"format_disk\"}\n"),
        ("missing-key", b"\x00{\"cmd\":\"get\"}\n"),
        ("bad-mode", b"\x00{\"cmd\":\"set_mode\",\"mode\":\"sideways\"}\n"),
        ("array", b"\x00[1,2]\n"),
        ("after-refusal", b"\x00nonsense\n{\"cmd\":\"shutdown\"}\n"),
    ];
    for (name, input) in refused {
        out.put(name, input);
    }
}

fn node_events(root: &Path) {
    // The target reads a sequence of operations with `arbitrary`: any bytes are one. These
    // are deterministic byte strings of a few lengths; coverage-guided runs grow them.
    let mut out = Out::new(root, "node_events");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for len in [8usize, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        out.put(&format!("random-{len}"), &bytes);
    }
    for op in 0u8..19 {
        out.put(&format!("repeat-{op}"), &[op; 64]);
    }
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    wire_decode(&root);
    typed_record(&root);
    store_value(&root);
    control_request(&root);
    node_events(&root);
}
