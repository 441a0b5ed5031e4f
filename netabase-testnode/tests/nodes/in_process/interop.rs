//! A stock rust-libp2p Kademlia node (on tokio) and a Netabase node (on each runtime) on
//! `/ipfs/kad/1.0.0` store and fetch each other's records and provider records.

use futures::StreamExt;
use libp2p::kad::{self, store::RecordStore as _};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use netabase::swarm::Runtime;
use netabase::{IPFS_PROTOCOL_NAME, NetabaseEvent};
use netabase_core::RecordKey;
use netabase_core::model::{Envelope, record_key};
use netabase_testnode::in_process::*;
use netabase_testnode::{ChatDefinition, MessagePrimaryKey, UserPrimaryKey};
use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

use crate::stock::{TokioPeers, tokio_swarm};

enum Cmd {
    Put(kad::Record, oneshot::Sender<bool>),
    Get(kad::RecordKey, oneshot::Sender<Option<Vec<u8>>>),
    Provide(kad::RecordKey, oneshot::Sender<bool>),
    Providers(kad::RecordKey, oneshot::Sender<HashSet<PeerId>>),
    /// Answers once the stock node's own store holds exactly this value under the key.
    Holds(kad::RecordKey, Vec<u8>, oneshot::Sender<()>),
}

/// A stock Kademlia server on 127.0.0.1 on `peers`' runtime, driven through commands;
/// it knows `remote` at `remote_addr`.
async fn stock_node<R: Runtime>(
    peers: &TokioPeers,
    remote: PeerId,
    remote_addr: Multiaddr,
) -> (PeerId, Multiaddr, mpsc::Sender<Cmd>) {
    let (ready_tx, ready) = oneshot::channel();
    peers.spawn(async move {
        let mut swarm = tokio_swarm(
            |key| {
                let id = key.public().to_peer_id();
                let config = kad::Config::new(StreamProtocol::new(IPFS_PROTOCOL_NAME));
                kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), config)
            },
            None,
        );
        swarm.behaviour_mut().set_mode(Some(kad::Mode::Server));
        swarm.behaviour_mut().add_address(&remote, remote_addr);
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let (tx, rx) = mpsc::channel::<Cmd>(8);
        let _ = ready_tx.send((*swarm.local_peer_id(), addr, tx));
        serve(swarm, rx).await;
    });
    within::<R, _>("the stock node", ready)
        .await
        .expect("the stock node starts")
}

/// Runs the stock node's commands until every sender is gone.
async fn serve(
    mut swarm: libp2p::Swarm<kad::Behaviour<kad::store::MemoryStore>>,
    mut rx: mpsc::Receiver<Cmd>,
) {
    let mut puts = HashMap::new();
    let mut gets = HashMap::new();
    let mut provides = HashMap::new();
    let mut providers = HashMap::new();
    let mut waiting: Vec<(kad::RecordKey, Vec<u8>, oneshot::Sender<()>)> = Vec::new();
    loop {
        // Answers the waiters whose value the store holds now (checked after every command
        // and every swarm event).
        let mut i = 0;
        while i < waiting.len() {
            let (key, value, _) = &waiting[i];
            let store = swarm.behaviour_mut().store_mut();
            if store.get(key).is_some_and(|r| r.value == *value) {
                let (_, _, reply) = waiting.swap_remove(i);
                let _ = reply.send(());
            } else {
                i += 1;
            }
        }
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => return,
                Some(Cmd::Put(record, reply)) => {
                    let q = swarm.behaviour_mut().put_record(record, kad::Quorum::One).unwrap();
                    puts.insert(q, reply);
                }
                Some(Cmd::Get(key, reply)) => {
                    swarm.behaviour_mut().store_mut().remove(&key);
                    gets.insert(swarm.behaviour_mut().get_record(key), reply);
                }
                Some(Cmd::Provide(key, reply)) => {
                    provides.insert(swarm.behaviour_mut().start_providing(key).unwrap(), reply);
                }
                Some(Cmd::Holds(key, value, reply)) => waiting.push((key, value, reply)),
                Some(Cmd::Providers(key, reply)) => {
                    let q = swarm.behaviour_mut().get_providers(key);
                    providers.insert(q, (reply, HashSet::new()));
                }
            },
            event = swarm.select_next_some() => {
                let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed { id, result, step, .. }) = event else {
                    continue;
                };
                match result {
                    kad::QueryResult::PutRecord(r) => {
                        if let Some(reply) = puts.remove(&id) { let _ = reply.send(r.is_ok()); }
                    }
                    kad::QueryResult::GetRecord(r) => {
                        if let Some(reply) = gets.remove(&id) {
                            let value = match r {
                                Ok(kad::GetRecordOk::FoundRecord(found)) => Some(found.record.value),
                                _ => None,
                            };
                            let _ = reply.send(value);
                        }
                    }
                    kad::QueryResult::StartProviding(r) => {
                        if let Some(reply) = provides.remove(&id) { let _ = reply.send(r.is_ok()); }
                    }
                    kad::QueryResult::GetProviders(r) => {
                        if let Ok(kad::GetProvidersOk::FoundProviders { providers: found, .. }) = r
                            && let Some((_, set)) = providers.get_mut(&id)
                        {
                            set.extend(found);
                        }
                        if step.last && let Some((reply, set)) = providers.remove(&id) {
                            let _ = reply.send(set);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The stock node's answer to the command `make` builds.
async fn ask<R: Runtime, T>(
    tx: &mpsc::Sender<Cmd>,
    make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
) -> T {
    let (reply, answer) = oneshot::channel();
    tx.send(make(reply)).await.unwrap();
    within::<R, _>("the stock node's answer", answer)
        .await
        .unwrap()
}

per_runtime!(a_stock_kademlia_node_and_netabase_exchange_records_and_providers);
async fn a_stock_kademlia_node_and_netabase_exchange_records_and_providers<R: TestRuntime>() {
    let peers = TokioPeers::new();
    let ours = start_with::<R>(|c| c.protocol_name = IPFS_PROTOCOL_NAME.to_string()).await;
    let (stock, stock_addr, stock_tx) = stock_node::<R>(&peers, ours.id(), ours.addr.clone()).await;
    ours.node.add_address(stock, stock_addr).await.unwrap();
    let mut events = ours.events();

    // Netabase -> stock: PUT_VALUE, then the stock node fetches it back with GET_VALUE.
    let put = ours.node.put_record(message(1, "to stock")).await.unwrap();
    assert_eq!(put.stored_at, vec![stock]);
    let key = kad::RecordKey::new(&put.key.as_bytes());
    let value = ask::<R, _>(&stock_tx, |r| Cmd::Get(key.clone(), r))
        .await
        .expect("stock finds it");
    let (decoded, _) = Envelope::open::<ChatDefinition>(&put.key, &value).unwrap();
    assert_eq!(decoded, ChatDefinition::Message(message(1, "to stock")));

    // Stock -> Netabase: a typed record in its envelope, stored after validation.
    let typed_key = record_key(&MessagePrimaryKey(2)).unwrap();
    // Written (signed) by some Netabase identity, carried by the stock node.
    let writer = netabase_core::Keypair::from_seed(42);
    let writer_id = libp2p::PeerId::from_bytes(writer.peer_id().as_bytes()).unwrap();
    let (k, bytes) = Envelope::seal(
        &ChatDefinition::Message(message(2, "from stock")),
        1,
        &writer,
    )
    .unwrap();
    assert_eq!(k, typed_key);
    let record = kad::Record::new(kad::RecordKey::new(&typed_key.as_bytes()), bytes);
    assert!(ask::<R, _>(&stock_tx, |r| Cmd::Put(record, r)).await);
    let got = ours
        .node
        .get_record(&MessagePrimaryKey(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.record, got.origin),
        (message(2, "from stock"), writer_id)
    );

    // Providers both ways; ADD_PROVIDER is one-way in both directions.
    let theirs = UserPrimaryKey("stock".into());
    let theirs_key = kad::RecordKey::new(&record_key(&theirs).unwrap().as_bytes());
    assert!(ask::<R, _>(&stock_tx, |r| Cmd::Provide(theirs_key, r)).await);
    events
        .wait_for("provider added", |e| match e {
            NetabaseEvent::ProviderAdded { provider, .. } if *provider == stock => Some(()),
            _ => None,
        })
        .await;
    let found = ours.node.get_providers(&theirs).await.unwrap();
    assert!(found.iter().any(|p| p.peer == stock), "{found:?}");

    let mine = UserPrimaryKey("netabase".into());
    let announced = ours.node.start_providing(&mine).await.unwrap();
    assert_eq!(announced.announced_to, vec![stock]);
    let mine_key = kad::RecordKey::new(&record_key(&mine).unwrap().as_bytes());
    let providers = ask::<R, _>(&stock_tx, |r| Cmd::Providers(mine_key, r)).await;
    assert!(providers.contains(&ours.id()), "{providers:?}");
}

/// Versioned records beside a stock node: three Netabase servers on `/ipfs/kad/1.0.0`
/// joined through the first, and a stock Kademlia server (which stores whatever it is
/// sent, newest or not) that knows the first and that every server has in its routing
/// table, so that it is among the closest peers of every key.
struct Mixed<R: TestRuntime> {
    servers: Vec<TestNode<R>>,
    stock: PeerId,
    stock_tx: mpsc::Sender<Cmd>,
}

fn ipfs(c: &mut netabase::NetabaseConfig) {
    c.protocol_name = IPFS_PROTOCOL_NAME.to_string();
}

/// The DHT key of message 1 and its form for the stock node.
fn key_one() -> (RecordKey, kad::RecordKey) {
    let key = record_key(&MessagePrimaryKey(1)).unwrap();
    let stock_key = kad::RecordKey::new(&key.as_bytes());
    (key, stock_key)
}

impl<R: TestRuntime> Mixed<R> {
    async fn start(peers: &TokioPeers) -> Self {
        let mut servers = vec![start_with::<R>(ipfs).await];
        let boot = (servers[0].id(), servers[0].addr.clone());
        for _ in 0..2 {
            let node = start_with::<R>(|c| {
                ipfs(c);
                c.bootstrap_peers = vec![boot.clone()];
            })
            .await;
            node.node.bootstrap().await.expect("bootstrap");
            servers.push(node);
        }
        let (stock, stock_addr, stock_tx) = stock_node::<R>(peers, boot.0, boot.1).await;
        for s in &servers {
            s.node.add_address(stock, stock_addr.clone()).await.unwrap();
        }
        Mixed {
            servers,
            stock,
            stock_tx,
        }
    }

    fn events(&self) -> Vec<Events<R>> {
        self.servers.iter().map(TestNode::events).collect()
    }

    /// Waits until every server other than `from` stored message 1 from `from` (events
    /// subscribed before the put).
    async fn reached(&self, events: &mut [Events<R>], from: PeerId) {
        let (key, _) = key_one();
        for (s, events) in self.servers.iter().zip(events) {
            if s.id() != from {
                events
                    .wait_for("the put reaches every server", |e| {
                        matches!(e, NetabaseEvent::RecordStored { key: k, from: f }
                            if *k == key && *f == from)
                        .then_some(())
                    })
                    .await;
            }
        }
    }

    /// Every server reads message 1 as `text` by `origin`, one version everywhere, and the
    /// stock node holds that version's bytes; returns its timestamp.
    async fn newest_everywhere(&self, text: &str, origin: PeerId) -> u64 {
        let mut stamps = Vec::new();
        for s in &self.servers {
            let got = s.node.get_record(&MessagePrimaryKey(1)).await.unwrap();
            let got = got.expect("found");
            assert_eq!((got.record, got.origin), (message(1, text), origin));
            stamps.push(got.timestamp);
        }
        stamps.dedup();
        assert_eq!(stamps.len(), 1, "one version on every server: {stamps:?}");
        let (key, stock_key) = key_one();
        let bytes = self.servers[0].node.local_record(&key).unwrap();
        let bytes = bytes.expect("held").value;
        ask::<R, _>(&self.stock_tx, |r| Cmd::Holds(stock_key, bytes, r)).await;
        stamps[0]
    }

    /// Server `i` puts message 1 saying `text`: the put succeeds, is not superseded and
    /// reaches every server.
    async fn put(&self, i: usize, text: &str) {
        let mut events = self.events();
        let put = self.servers[i].node.put_record(message(1, text)).await;
        let put = put.unwrap();
        assert_eq!((&put.quorum_error, put.superseded_by), (&None, None));
        self.reached(&mut events, self.servers[i].id()).await;
    }

    /// The stock node puts message 1 saying `text`, written by the identity of `seed` at
    /// `timestamp`; it reaches every server. Returns the writer's peer id.
    async fn stock_put(&self, text: &str, seed: u64, timestamp: u64) -> PeerId {
        let writer = netabase_core::Keypair::from_seed(seed);
        let message = ChatDefinition::Message(message(1, text));
        let (_, bytes) = Envelope::seal(&message, timestamp, &writer).unwrap();
        let mut events = self.events();
        let record = kad::Record::new(key_one().1, bytes);
        assert!(ask::<R, _>(&self.stock_tx, |r| Cmd::Put(record, r)).await);
        self.reached(&mut events, self.stock).await;
        PeerId::from_bytes(writer.peer_id().as_bytes()).unwrap()
    }
}

/// The wall clock plus `secs`, in microseconds since the Unix epoch.
fn wall_in(secs: u64) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(now.as_micros()).unwrap() + secs * 1_000_000
}

per_runtime!(a_stock_kademlia_peer_among_the_closest_keeps_versioned_records_working);
/// Beside a stock Kademlia peer among the closest: a put and an overwrite succeed, every
/// server reads the newer version and the stock node holds it; a version the stock node
/// carries (written by another identity 20 s ahead, within the accepted drift) is newer
/// and wins everywhere; a server's next write goes above it, reaches every peer, and the
/// stock node's own network get finds it.
async fn a_stock_kademlia_peer_among_the_closest_keeps_versioned_records_working<R: TestRuntime>() {
    let peers = TokioPeers::new();
    let net = Mixed::<R>::start(&peers).await;
    let ids: Vec<PeerId> = net.servers.iter().map(TestNode::id).collect();

    net.put(1, "first").await;
    let first = net.newest_everywhere("first", ids[1]).await;
    net.put(2, "second").await;
    let second = net.newest_everywhere("second", ids[2]).await;
    assert!(second > first);

    let ahead = wall_in(20);
    let writer = net.stock_put("from the stock node", 7, ahead).await;
    let carried = net.newest_everywhere("from the stock node", writer).await;
    assert_eq!(carried, ahead);

    net.put(0, "last").await;
    let last = net.newest_everywhere("last", ids[0]).await;
    assert!(last > carried);
    let (key, stock_key) = key_one();
    let found = ask::<R, _>(&net.stock_tx, |r| Cmd::Get(stock_key, r)).await;
    let (value, envelope) = Envelope::open::<ChatDefinition>(&key, &found.expect("found")).unwrap();
    assert_eq!(value, ChatDefinition::Message(message(1, "last")));
    assert_eq!(envelope.timestamp, last);
}

per_runtime!(a_put_that_loses_to_a_newer_version_yields_to_it_beside_a_stock_peer);
/// Every server holds a version of message 1 written 20 s ahead (carried by the stock
/// node). A Netabase client that holds no copy puts message 1 at the wall clock: the
/// servers answer with the newer version. The put may be confirmed first by the stock
/// node's echo (then its result cannot say it lost), but the newer version still replaces
/// the client's copy and typed row, with an event; when the result does report it, it
/// names the newer version.
async fn a_put_that_loses_to_a_newer_version_yields_to_it_beside_a_stock_peer<R: TestRuntime>() {
    let peers = TokioPeers::new();
    let net = Mixed::<R>::start(&peers).await;
    let ahead = wall_in(20);
    let writer = net.stock_put("from the stock node", 7, ahead).await;
    net.newest_everywhere("from the stock node", writer).await;
    let boot = (net.servers[0].id(), net.servers[0].addr.clone());
    let client = start_with::<R>(|c| {
        ipfs(c);
        c.kad.mode = netabase::Mode::Client;
        c.bootstrap_peers = vec![boot];
    })
    .await;
    client.node.bootstrap().await.expect("bootstrap");
    let mut events = client.events();

    let late = client.node.put_record(message(1, "late")).await.unwrap();
    if let Some(superseded) = late.superseded_by {
        assert_eq!(
            (superseded.origin, superseded.timestamp, superseded.removed),
            (writer, ahead, false)
        );
    }
    let key = late.key.clone();
    events
        .wait_for(
            "the newer version replaces the client's copy",
            |e| match e {
                netabase::NetabaseEvent::RecordUpdated { key: k, .. } if *k == key => Some(()),
                _ => None,
            },
        )
        .await;
    let got = client.node.get_record(&MessagePrimaryKey(1)).await.unwrap();
    let got = got.expect("found");
    assert_eq!(
        (got.record, got.origin),
        (message(1, "from the stock node"), writer)
    );
    let typed = client
        .node
        .query_local_records::<netabase_testnode::Message>(10);
    assert_eq!(
        typed.await.unwrap(),
        vec![message(1, "from the stock node")]
    );
}
