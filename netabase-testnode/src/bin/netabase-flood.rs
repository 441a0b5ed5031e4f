//! `netabase-flood`: a hostile peer for the flood test. From one source address it starts
//! many identities (a libp2p swarm each), and each floods the target node with Kademlia
//! FIND_NODE requests on many streams at once (its connections leave from the source
//! address: [`netabase_testnode::source_tcp`]), and holds a few streams open sending one
//! byte and then nothing (slowloris). It prints `flooding` once its first connection is up,
//! and at the end one JSON line with what it achieved.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use netabase::core::{Codec, RecordKey, Request};
use netabase_testnode::source_tcp::swarm_from;

/// Flood a node from one source address.
#[derive(Debug, Parser)]
struct Args {
    /// The target's address, ending in `/p2p/<id>`.
    #[arg(long)]
    target: Multiaddr,
    /// The source address to dial from (the identities listen there, and TCP dials reuse
    /// their port).
    #[arg(long, default_value = "127.0.0.5")]
    source: Ipv4Addr,
    /// Identities, each with its own connection.
    #[arg(long, default_value_t = 40)]
    identities: usize,
    /// Request loops per identity, each one stream at a time.
    #[arg(long, default_value_t = 48)]
    streams: usize,
    /// Streams per identity that send one byte and then nothing.
    #[arg(long, default_value_t = 4)]
    slow: usize,
    /// How long to flood.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Flood {
    streams: libp2p_stream::Behaviour,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    connected: AtomicU64,
    refused_connections: AtomicU64,
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(flood(args));
}

async fn flood(args: Args) {
    let Some(libp2p::multiaddr::Protocol::P2p(target)) = args.target.iter().last() else {
        eprintln!("--target must end in /p2p/<id>");
        std::process::exit(2);
    };
    let protocol = StreamProtocol::new(netabase::swarm::DEFAULT_PROTOCOL_NAME);
    let codec = Codec::default();
    let key = RecordKey::new(b"flood").expect("a short key");
    let request = Arc::new(codec.encode_request(&Request::FindNode { key }));
    let counts = Arc::new(Counts::default());
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let (up_tx, mut up) = tokio::sync::mpsc::unbounded_channel::<()>();
    let plan = Arc::new(Plan {
        target_addr: args.target.clone(),
        source: args.source,
        target,
        protocol,
        request,
        counts: Arc::clone(&counts),
        up: up_tx.clone(),
        streams: args.streams,
        slow: args.slow,
        end,
    });
    let tasks: Vec<_> = (0..args.identities)
        .map(|_| tokio::spawn(identity(Arc::clone(&plan))))
        .collect();
    drop(plan);
    drop(up_tx);
    if up.recv().await.is_some() {
        report("flooding");
    }
    for task in tasks {
        let _ = task.await;
    }
    let seconds = args.seconds as f64;
    let sent = counts.sent.load(Ordering::Relaxed);
    report(
        &serde_json::json!({
            "requests_sent": sent,
            "answered": counts.answered.load(Ordering::Relaxed),
            "failed": counts.failed.load(Ordering::Relaxed),
            "connections": counts.connected.load(Ordering::Relaxed),
            "refused_connections": counts.refused_connections.load(Ordering::Relaxed),
            "requests_per_second": sent as f64 / seconds,
        })
        .to_string(),
    );
}

/// One line on standard output, flushed at once (the test reads it as it comes).
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// What every identity of the flood shares.
struct Plan {
    target_addr: Multiaddr,
    source: Ipv4Addr,
    target: PeerId,
    protocol: StreamProtocol,
    request: Arc<Vec<u8>>,
    counts: Arc<Counts>,
    up: tokio::sync::mpsc::UnboundedSender<()>,
    streams: usize,
    slow: usize,
    end: Instant,
}

/// One flooding slot: connects with a new identity, floods until the node closes the
/// connection, and does it again with another identity until the end.
async fn identity(plan: Arc<Plan>) {
    while Instant::now() < plan.end {
        flood_once(&plan).await;
    }
}

async fn flood_once(plan: &Plan) {
    let counts = &plan.counts;
    let Ok(mut swarm) = swarm_from(
        plan.source,
        |_| Flood {
            streams: libp2p_stream::Behaviour::new(),
        },
        Duration::from_secs(60),
    ) else {
        counts.refused_connections.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if swarm.dial(plan.target_addr.clone()).is_err() {
        counts.refused_connections.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let target = plan.target;
    let connected = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == target => {
                    return true;
                }
                SwarmEvent::OutgoingConnectionError { .. } => return false,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or(false);
    if !connected {
        counts.refused_connections.fetch_add(1, Ordering::Relaxed);
        return;
    }
    counts.connected.fetch_add(1, Ordering::Relaxed);
    let _ = plan.up.send(());
    let control = swarm.behaviour().streams.new_control();
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let end = plan.end;
    let mut loops = Vec::new();
    for _ in 0..plan.slow {
        let mut control = control.clone();
        let protocol = plan.protocol.clone();
        loops.push(tokio::spawn(async move {
            if let Ok(mut stream) = control.open_stream(target, protocol).await {
                let _ = stream.write_all(&[0x80]).await;
                let _ = stream.flush().await;
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(
                    end.saturating_duration_since(Instant::now()),
                    stream.read_to_end(&mut rest),
                )
                .await;
            }
        }));
    }
    for _ in 0..plan.streams {
        let mut control = control.clone();
        let (protocol, request, counts) = (
            plan.protocol.clone(),
            Arc::clone(&plan.request),
            Arc::clone(&plan.counts),
        );
        loops.push(tokio::spawn(async move {
            while Instant::now() < end {
                // A stream that cannot be opened: the connection is gone.
                let Ok(mut stream) = control.open_stream(target, protocol.clone()).await else {
                    return;
                };
                counts.sent.fetch_add(1, Ordering::Relaxed);
                let exchange = async {
                    stream.write_all(&request).await.ok()?;
                    stream.close().await.ok()?;
                    let mut answer = Vec::new();
                    stream.read_to_end(&mut answer).await.ok()?;
                    (!answer.is_empty()).then_some(())
                };
                match tokio::time::timeout(Duration::from_secs(2), exchange).await {
                    Ok(Some(())) => counts.answered.fetch_add(1, Ordering::Relaxed),
                    _ => counts.failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // The slow streams end with the flood; the request loops when the connection goes.
    for l in loops.drain(plan.slow..) {
        let _ = l.await;
    }
    for l in loops {
        l.abort();
    }
    driver.abort();
}
