//! A stock rust-libp2p Kademlia node (on tokio) and a Netabase node (on each runtime) on
//! `/ipfs/kad/1.0.0` store and fetch each other's records and provider records.

use futures::StreamExt;
use libp2p::kad::{self, store::RecordStore as _};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use netabase::swarm::Runtime;
use netabase::{IPFS_PROTOCOL_NAME, NetabaseEvent};
use netabase_core::model::{Envelope, record_key};
use netabase_testnode::in_process::*;
use netabase_testnode::{ChatDefinition, MessagePrimaryKey, UserPrimaryKey};
use std::collections::{HashMap, HashSet};
use tokio::sync::{mpsc, oneshot};

use crate::stock::{TokioPeers, tokio_swarm};

enum Cmd {
    Put(kad::Record, oneshot::Sender<bool>),
    Get(kad::RecordKey, oneshot::Sender<Option<Vec<u8>>>),
    Provide(kad::RecordKey, oneshot::Sender<bool>),
    Providers(kad::RecordKey, oneshot::Sender<HashSet<PeerId>>),
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
    loop {
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
