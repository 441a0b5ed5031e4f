//! The `Netabase` handle: the async API applications use.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, SinkExt};
use libp2p::identity::Keypair;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{Multiaddr, PeerId, StreamProtocol, connection_limits, identify, mdns, ping};
use netabase_core::model::{
    Envelope, ModelError, NetabaseDefinition, NetabaseModel, Opened, PrimaryKey, SealParts,
    record_key,
};
use netabase_core::{Codec, Mode, NodeStats, QueryError, QueryResult, QueryStats, RecordKey};
use netabase_store::{
    BackendConfig, Durability, PersistentRecordStore, ReadOnlyStore, RecordStore, Store,
};

use crate::behaviour::NodeBehaviour;
use crate::carrier::KadCarrier;
use crate::config::{NetabaseConfig, StorageBackend};
use crate::convert::{to_core_peer, to_libp2p_peer, to_multiaddr};
use crate::driver::{
    Command, Driver, DriverSettings, LocalWrite, PutOp, QueryDone, QueryOp, Snapshot,
};
use crate::error::NetabaseError;
use crate::event::{EventSubscriber, NetabaseEvent};
use crate::handler::Shared;
use crate::identity;
use crate::identity::core_keypair;
use crate::runtime::{Runtime, TransportSettings, sleeper};

/// The identify protocol version this node announces.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/netabase/1.0.0";

/// How long `start_swarm` waits for its listeners to report addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of [`Netabase::put_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecordResult {
    /// The record's DHT key.
    pub key: RecordKey,
    /// The remote peers that confirmed they stored the record by the time the configured
    /// quorum ([`NetabaseConfig::put_quorum`], one peer by default) was met; the other
    /// closest peers receive it too.
    pub stored_at: Vec<PeerId>,
    /// Why the network part fell short of the configured quorum, if it did. The record is
    /// stored locally either way, and the node publishes it again with its background
    /// jobs.
    pub quorum_error: Option<QueryError>,
    /// A newer version of the record that a peer holds, if one answered with it: the put
    /// lost to it (last writer wins), and the newer version replaced the local DHT copy.
    pub superseded_by: Option<Superseded>,
    /// The query's counters.
    pub stats: QueryStats,
}

/// The version of a record that superseded a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superseded {
    /// Its writer.
    pub origin: PeerId,
    /// Its hybrid logical clock timestamp.
    pub timestamp: u64,
    /// Whether it is a removal.
    pub removed: bool,
}

impl PutRecordResult {
    /// How many remote peers stored the record.
    pub fn peer_count(&self) -> usize {
        self.stored_at.len()
    }
}

/// A record found by [`Netabase::get_record`].
#[derive(Debug, Clone, PartialEq)]
pub struct GetRecordResult<M> {
    /// The typed value.
    pub record: M,
    /// The peer that returned it; `None`: this node's own DHT store.
    pub source: Option<PeerId>,
    /// The peer that wrote it (from its envelope).
    pub origin: PeerId,
    /// The writer's timestamp (from its envelope).
    pub timestamp: u64,
    /// The query's counters.
    pub stats: QueryStats,
}

/// The outcome of [`Netabase::start_providing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidingResult {
    /// The key's DHT key.
    pub key: RecordKey,
    /// The peers the announcement reached.
    pub announced_to: Vec<PeerId>,
    /// Why no peer was reached, if none was. The local provider record is kept either
    /// way and announced again by the background jobs.
    pub error: Option<QueryError>,
}

/// A provider found by [`Netabase::get_providers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    /// The providing peer.
    pub peer: PeerId,
    /// The addresses it announced.
    pub addresses: Vec<Multiaddr>,
}

/// The outcome of [`Netabase::bootstrap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapResult {
    /// Peers in the routing table afterwards.
    pub routing_table_size: usize,
    /// The query's counters.
    pub stats: QueryStats,
}

/// Counters of a running node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetabaseStats {
    /// The Kademlia core's counters (requests, answers, rejections, invalid records).
    pub kad: NodeStats,
    /// Inbound streams that failed before delivering a request (malformed or oversized
    /// messages, timeouts, too many streams).
    pub inbound_stream_failures: u64,
    /// Inbound connections and requests refused by the
    /// [inbound limits](crate::InboundLimits) (the metric
    /// `netabase_rejected_inputs_total{input="limit"}` counts them by reason).
    pub inbound_refused: u64,
}

enum State<D: NetabaseDefinition> {
    Idle(Store<D>),
    Running {
        store: Store<D>,
        commands: mpsc::Sender<Command>,
    },
    Stopped,
}

struct Inner<D: NetabaseDefinition, R> {
    config: NetabaseConfig,
    keypair: Keypair,
    peer_id: PeerId,
    core_peer: netabase_core::PeerId,
    protocol: StreamProtocol,
    events: async_broadcast::Sender<NetabaseEvent>,
    _keep_open: async_broadcast::InactiveReceiver<NetabaseEvent>,
    state: Mutex<State<D>>,
    /// Serialises start and stop.
    lifecycle: futures::lock::Mutex<()>,
    _runtime: PhantomData<fn() -> R>,
}

/// A Netabase node: typed local storage and a Kademlia DHT on libp2p.
///
/// The handle is cheap to clone (clones share the node) and every method can be called
/// from any task. Construction opens the data directory (database and identity key);
/// [`start_swarm`](Netabase::start_swarm) starts networking on a background task of the
/// runtime `R`, which owns the swarm, the protocol core and the DHT record store;
/// methods send it commands and await its answers.
///
/// Local operations ([`query_local_records`](Netabase::query_local_records),
/// [`remove_record`](Netabase::remove_record), [`local_store`](Netabase::local_store))
/// work before the swarm starts; network operations fail with
/// [`NetabaseError::NotRunning`] until then, and with [`NetabaseError::Stopped`] after
/// [`stop_swarm`](Netabase::stop_swarm).
///
/// Applications use it through a runtime crate's alias, such as `netabase::Netabase<D>`
/// (tokio).
pub struct Netabase<D: NetabaseDefinition, R: Runtime> {
    inner: Arc<Inner<D, R>>,
}

impl<D: NetabaseDefinition, R: Runtime> Clone for Netabase<D, R> {
    fn clone(&self) -> Self {
        Netabase {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<D: NetabaseDefinition, R: Runtime> std::fmt::Debug for Netabase<D, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netabase")
            .field("peer_id", &self.inner.peer_id)
            .field("data_dir", &self.inner.config.data_dir)
            .field("running", &self.is_running())
            .finish()
    }
}

fn store_path(config: &NetabaseConfig) -> PathBuf {
    match config.backend {
        StorageBackend::Redb => config.data_dir.join("netabase.redb"),
        StorageBackend::Sled => config.data_dir.join("netabase.sled"),
        // Ignored by the memory backend.
        StorageBackend::Memory => config.data_dir.clone(),
    }
}

/// Opens the node's database and brings its DHT tables to the current layout (see
/// [`Store::migrate_record_store`]; a no-op once done).
fn open_store<D: NetabaseDefinition>(
    config: &NetabaseConfig,
    keypair: &Keypair,
) -> Result<Store<D>, NetabaseError> {
    let backend = match config.backend {
        StorageBackend::Redb => BackendConfig::redb(),
        StorageBackend::Sled => BackendConfig::sled(),
        StorageBackend::Memory => BackendConfig::Memory,
    };
    let store = Store::open_with(store_path(config), backend)?;
    let core_peer = to_core_peer(&keypair.public().to_peer_id())
        .ok_or_else(|| NetabaseError::Config("unsupported peer id".into()))?;
    let migrated = store.migrate_record_store(core_peer, core_keypair(keypair).as_ref())?;
    if migrated.changed() {
        tracing::info!(?migrated, "migrated the DHT tables to the current layout");
    }
    Ok(store)
}

/// A seed for the core's random choices, different for every node start.
fn random_seed(peer: &PeerId) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(&peer.to_bytes());
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

impl<D: NetabaseDefinition, R: Runtime> Netabase<D, R> {
    /// A node with the default configuration, keeping its data in
    /// [`DEFAULT_DATA_DIR`](crate::DEFAULT_DATA_DIR) (`./netabase-data`, relative to the
    /// working directory).
    pub fn new() -> Result<Self, NetabaseError> {
        Self::new_with_config(NetabaseConfig::default())
    }

    /// A node with the default configuration, keeping its data in `path`.
    pub fn new_with_path(path: impl AsRef<Path>) -> Result<Self, NetabaseError> {
        Self::new_with_config(NetabaseConfig::default().with_data_dir(path.as_ref()))
    }

    /// A node with `config`. Creates the data directory, loads (or creates) the identity
    /// key and opens the database; fails if another node has that database open.
    pub fn new_with_config(config: NetabaseConfig) -> Result<Self, NetabaseError> {
        let protocol = StreamProtocol::try_from_owned(config.protocol_name.clone())
            .map_err(|e| NetabaseError::Config(format!("protocol name: {e}")))?;
        config.validate()?;
        identity::create_data_dir(&config.data_dir)?;
        let keypair = match &config.identity {
            Some(k) => k.clone(),
            None => identity::load_or_create(&config.data_dir)?,
        };
        let peer_id = keypair.public().to_peer_id();
        let core_peer = to_core_peer(&peer_id)
            .ok_or_else(|| NetabaseError::Config(format!("unsupported peer id {peer_id}")))?;
        let store = open_store::<D>(&config, &keypair)?;
        let (mut events, rx) = async_broadcast::broadcast(config.event_capacity);
        events.set_overflow(true);
        events.set_await_active(false);
        Ok(Netabase {
            inner: Arc::new(Inner {
                config,
                keypair,
                peer_id,
                core_peer,
                protocol,
                events,
                _keep_open: rx.deactivate(),
                state: Mutex::new(State::Idle(store)),
                lifecycle: futures::lock::Mutex::new(()),
                _runtime: PhantomData,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<D>> {
        // A panic while holding this lock leaves a consistent state (every update is one
        // assignment), so a poisoned lock is used as it is.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn running(&self) -> Result<(Store<D>, mpsc::Sender<Command>), NetabaseError> {
        match &*self.state() {
            State::Running { store, commands } => Ok((store.clone(), commands.clone())),
            State::Idle(_) => Err(NetabaseError::NotRunning),
            State::Stopped => Err(NetabaseError::Stopped),
        }
    }

    /// A read-only view of the typed local store (shared with the node). Writes go through
    /// [`put_record`](Netabase::put_record) and [`remove_record`](Netabase::remove_record),
    /// which version them and keep the DHT store in step. Fails after `stop_swarm`.
    pub fn local_store(&self) -> Result<ReadOnlyStore<D>, NetabaseError> {
        Ok(self.typed_store()?.read_only())
    }

    /// The DHT record this node holds under `key` (its own or one held for another peer),
    /// as stored: the envelope bytes, publisher and expiry. `None` when it holds none.
    pub fn local_record(
        &self,
        key: &RecordKey,
    ) -> Result<Option<netabase_core::Record>, NetabaseError> {
        let store = self.typed_store()?;
        let dht: PersistentRecordStore = PersistentRecordStore::new(
            Arc::clone(store.backend()),
            self.inner.core_peer,
            self.inner.config.record_store.clone(),
        );
        Ok(dht.get(key)?)
    }

    /// The typed local store itself, for the node's own writes.
    fn typed_store(&self) -> Result<Store<D>, NetabaseError> {
        match &*self.state() {
            State::Running { store, .. } | State::Idle(store) => Ok(store.clone()),
            State::Stopped => Err(NetabaseError::Stopped),
        }
    }

    /// The node's peer id (derived from its identity key).
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The configuration the node was made with.
    pub fn config(&self) -> &NetabaseConfig {
        &self.inner.config
    }

    /// Whether the swarm is running.
    pub fn is_running(&self) -> bool {
        matches!(&*self.state(), State::Running { .. })
    }

    /// The Kademlia protocol names this node speaks (it serves them to peers only in
    /// server mode).
    pub fn get_protocol_names(&self) -> Vec<String> {
        vec![self.inner.protocol.to_string()]
    }

    /// A new subscription to the node's events, from now on. Subscriptions survive
    /// `stop_swarm` and `start_swarm`.
    pub fn subscribe_to_broadcasts(&self) -> EventSubscriber {
        EventSubscriber {
            rx: self.inner.events.new_receiver(),
        }
    }

    /// Starts networking: builds the transports, listens on the configured addresses
    /// (returning once each listener has an address), adds the configured bootstrap peers
    /// to the routing table, and runs the node on a background task.
    #[tracing::instrument(level = "debug", skip_all, fields(peer = %self.inner.peer_id))]
    pub async fn start_swarm(&self) -> Result<(), NetabaseError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let store = match &*self.state() {
            State::Running { .. } => return Err(NetabaseError::AlreadyRunning),
            State::Idle(store) => store.clone(),
            State::Stopped => open_store::<D>(&self.inner.config, &self.inner.keypair)?,
        };
        let config = &self.inner.config;
        // Deferred commits: the driver syncs them, all writes since its last output at
        // once, before anything that depends on them leaves the node (group commit).
        let record_store: PersistentRecordStore = store
            .record_store(self.inner.core_peer, config.record_store.clone())
            .with_durability(Durability::Deferred);
        let behaviour = self.behaviour()?;
        let settings = TransportSettings {
            idle_connection_timeout: config.idle_connection_timeout,
            metrics: config.metrics.clone(),
        };
        let swarm = R::build_swarm(self.inner.keypair.clone(), behaviour, &settings)?;
        let (tx, rx) = mpsc::channel(256);
        let mut driver = Driver::<R>::new(
            swarm,
            config.kad.clone(),
            record_store,
            random_seed(&self.inner.peer_id),
            rx,
            self.inner.events.clone(),
            DriverSettings {
                protocol: self.inner.protocol.clone(),
                put_quorum: config.put_quorum,
                get_quorum: config.get_quorum,
                metrics: config.metrics.clone(),
                keypair: core_keypair(&self.inner.keypair),
                consensus: config.consensus.clone(),
                #[cfg(feature = "paxakos")]
                engine: config.engine,
                #[cfg(feature = "paxakos")]
                paxakos: config.paxakos.clone(),
            },
        )?;
        driver
            .listen(&config.listen_addresses, LISTEN_TIMEOUT)
            .await?;
        driver.add_bootstrap_peers(&config.bootstrap_peers);
        R::spawn(driver.run().boxed());
        *self.state() = State::Running {
            store,
            commands: tx,
        };
        Ok(())
    }

    fn behaviour(&self) -> Result<NodeBehaviour<R::Mdns>, NetabaseError> {
        let config = &self.inner.config;
        let shared = Shared {
            protocol: self.inner.protocol.clone(),
            codec: Codec::new(config.max_message_size),
            serving: Arc::new(AtomicBool::new(config.kad.mode == Mode::Server)),
            next_inbound: Arc::new(AtomicU64::new(0)),
            stream_timeout: config.stream_timeout,
            max_streams: config.max_streams_per_connection.max(1),
            sleep: sleeper::<R>(),
        };
        let limits = config.connection_limits;
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(limits.max_established))
            .with_max_established_per_peer(Some(limits.max_established_per_peer))
            .with_max_pending_incoming(Some(limits.max_pending))
            .with_max_pending_outgoing(Some(limits.max_pending));
        let identify = identify::Config::new(
            IDENTIFY_PROTOCOL_VERSION.to_string(),
            self.inner.keypair.public(),
        )
        .with_agent_version(format!("netabase/{}", env!("CARGO_PKG_VERSION")));
        let mdns = if config.mdns {
            Some(R::mdns(self.inner.peer_id, mdns::Config::default())?)
        } else {
            None
        };
        Ok(NodeBehaviour {
            limits: connection_limits::Behaviour::new(limits),
            kad: KadCarrier::new(shared, config.inbound_limits.clone()),
            identify: identify::Behaviour::new(identify),
            ping: ping::Behaviour::default(),
            paxos: crate::paxos::behaviour(),
            paxakos: Toggle::from(crate::driver::paxakos_behaviour(config.engine)),
            mdns: Toggle::from(mdns),
        })
    }

    /// Stops networking gracefully: operations still waiting fail with
    /// [`NetabaseError::Stopped`], connections close, the database is flushed and closed
    /// (once no other clone of [`local_store`](Netabase::local_store) holds it). A later
    /// [`start_swarm`](Netabase::start_swarm) opens it again.
    #[tracing::instrument(level = "debug", skip_all, fields(peer = %self.inner.peer_id))]
    pub async fn stop_swarm(&self) -> Result<(), NetabaseError> {
        let _lifecycle = self.inner.lifecycle.lock().await;
        let previous = std::mem::replace(&mut *self.state(), State::Stopped);
        if let State::Running {
            store,
            mut commands,
        } = previous
        {
            drop(store);
            let (reply, done) = oneshot::channel();
            if commands.send(Command::Stop { reply }).await.is_ok() {
                // An error means the driver is already gone, which is what was asked.
                let _ = done.await;
            }
        }
        Ok(())
    }

    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetabaseError> {
        let (_, mut commands) = self.running()?;
        let (reply, answer) = oneshot::channel();
        commands
            .send(make(reply))
            .await
            .map_err(|_| NetabaseError::Stopped)?;
        answer.await.map_err(|_| NetabaseError::Stopped)
    }

    async fn query(&self, op: QueryOp) -> Result<QueryDone, NetabaseError> {
        self.call(|reply| Command::Query { op, reply }).await?
    }

    /// Stores `model` in the local typed store, then publishes it on the DHT (in its
    /// envelope, under its derived key) to the closest peers. The result lists the peers
    /// that stored it; the local write stands even when no peer did. The node's driver
    /// makes the local write, so a durable commit does not hold the calling task (with
    /// `netabase-tokio` the driver has a thread of its own).
    #[tracing::instrument(level = "debug", skip_all, fields(model = M::NAME))]
    pub async fn put_record<M>(&self, model: M) -> Result<PutRecordResult, NetabaseError>
    where
        M: NetabaseModel<Definition = D>,
    {
        refuse_consensus_model::<M>()?;
        let (store, _) = self.running()?;
        let value: D = model.into();
        let key = value.record_key()?;
        let model = value.model_id();
        let payload = value.encode_model()?;
        // The driver has the core version and sign the record, writes the typed store (on
        // its own thread) and publishes the record only once that write succeeded. The
        // commit is deferred: the driver makes it durable with the DHT record's, in one
        // sync, before the first request goes out.
        let pk = value.primary_key_bytes().map_err(ModelError::from)?;
        let local = LocalWrite(Box::new(move |version| {
            store.write_with(Durability::Deferred, |tx| {
                tx.put_definition(&value)?;
                tx.set_version(model, &pk, version)
            })?;
            Ok(())
        }));
        let done = self
            .query(QueryOp::Put(Box::new(PutOp {
                key: key.clone(),
                model,
                schema_version: D::SCHEMA_VERSION,
                payload,
                tombstone: false,
                local,
            })))
            .await?;
        let superseded_by = done.superseded_by.as_deref().and_then(|record| {
            let envelope = Envelope::decode(&record.value).ok()?;
            Some(Superseded {
                origin: to_libp2p_peer(&envelope.origin)?,
                timestamp: envelope.timestamp,
                removed: envelope.tombstone,
            })
        });
        let (result, stats) = (done.result, done.stats);
        let (stored_at, quorum_error) = match result {
            QueryResult::PutRecord(Ok(peers)) => (peers_of(&peers), None),
            QueryResult::PutRecord(Err(e)) => (Vec::new(), Some(e)),
            _ => (Vec::new(), None),
        };
        Ok(PutRecordResult {
            key,
            stored_at,
            quorum_error,
            superseded_by,
            stats,
        })
    }

    /// Finds the record with primary key `key`: this node's DHT store first (records it
    /// wrote or holds for others, `source: None`), then the network. `Ok(None)`: no
    /// reachable peer has it.
    #[tracing::instrument(level = "debug", skip_all, fields(model = <K::Model as NetabaseModel>::NAME))]
    pub async fn get_record<K>(
        &self,
        key: &K,
    ) -> Result<Option<GetRecordResult<K::Model>>, NetabaseError>
    where
        K: PrimaryKey,
        K::Model: NetabaseModel<Definition = D>,
    {
        let record_key = record_key(key)?;
        let QueryDone { result, stats, .. } = self.query(QueryOp::Get(record_key.clone())).await?;
        let found = match result {
            QueryResult::GetRecord(Ok(found)) => found,
            QueryResult::GetRecord(Err(QueryError::NotFound)) => return Ok(None),
            QueryResult::GetRecord(Err(e)) => return Err(e.into()),
            _ => return Ok(None),
        };
        // Newest first: the core resolved the copies it found, and the newest is the
        // answer. A removal wins like any newer version; a newest copy this release cannot
        // read (a later schema or envelope format) is an error, never an older copy.
        let Some(newest) = found.into_iter().next() else {
            return Ok(None);
        };
        match Envelope::open_verified::<D>(&record_key, &newest.record.value)? {
            Opened::Removed(_) => Ok(None),
            Opened::Value(value, envelope) => {
                let model = <K::Model as TryFrom<D>>::try_from(value).map_err(|_| {
                    NetabaseError::WrongModel {
                        found: envelope.model,
                    }
                })?;
                Ok(Some(GetRecordResult {
                    record: model,
                    source: newest.peer.as_ref().and_then(to_libp2p_peer),
                    origin: to_libp2p_peer(&envelope.origin).unwrap_or(self.inner.peer_id),
                    timestamp: envelope.timestamp,
                    stats,
                }))
            }
        }
    }

    /// Removes the record with primary key `key`: the typed row goes, and a signed
    /// tombstone (a removal versioned like any write, so it beats every older copy and
    /// loses to newer writes) takes the DHT record's place in the same sync and is
    /// published to the closest peers. A tombstone that has not reached the put quorum
    /// waits in the node's outbox, which survives restarts, and is published again until it
    /// does. Tombstones expire at their own timestamp plus
    /// [`tombstone_horizon`](netabase_core::Config::tombstone_horizon). Returns the removed
    /// value.
    ///
    /// A node that is not started writes the tombstone locally and publishes it from the
    /// outbox once it runs.
    #[tracing::instrument(level = "debug", skip_all, fields(model = <K::Model as NetabaseModel>::NAME))]
    pub async fn remove_record<K>(&self, key: &K) -> Result<Option<K::Model>, NetabaseError>
    where
        K: PrimaryKey,
        K::Model: NetabaseModel<Definition = D>,
    {
        refuse_consensus_model::<K::Model>()?;
        let record_key = record_key(key)?;
        let model = <K::Model as NetabaseModel>::ID;
        let pk = key
            .key_bytes()
            .map_err(netabase_core::model::ModelError::from)?;
        let removed = match self.running() {
            Ok((store, _)) => {
                let slot = Arc::new(Mutex::new(None));
                let filled = Arc::clone(&slot);
                let local = LocalWrite(Box::new(move |_| {
                    let old = store.write_with(Durability::Deferred, |tx| {
                        let old = tx.remove_definition(model, &pk)?;
                        tx.remove_version(model, &pk)?;
                        Ok(old)
                    })?;
                    *filled.lock().unwrap_or_else(|e| e.into_inner()) = old;
                    Ok(())
                }));
                // A quorum failure is no error: the tombstone stands locally and waits in
                // the outbox.
                self.query(QueryOp::Put(Box::new(PutOp {
                    key: record_key,
                    model,
                    schema_version: D::SCHEMA_VERSION,
                    payload: Vec::new(),
                    tombstone: true,
                    local,
                })))
                .await?;
                slot.lock().unwrap_or_else(|e| e.into_inner()).take()
            }
            Err(NetabaseError::NotRunning) => self.remove_offline(record_key, model, &pk)?,
            Err(e) => return Err(e),
        };
        match removed {
            Some(value) => <K::Model as TryFrom<D>>::try_from(value)
                .map(Some)
                .map_err(|_| NetabaseError::WrongModel { found: model }),
            None => Ok(None),
        }
    }

    /// [`remove_record`](Netabase::remove_record) on a node that is not started: the typed
    /// removal, the tombstone (versioned by a clock that starts at the persisted ceiling)
    /// and its outbox entry, made durable in one sync.
    fn remove_offline(
        &self,
        key: RecordKey,
        model: netabase_core::model::ModelId,
        pk: &[u8],
    ) -> Result<Option<D>, NetabaseError> {
        let keypair = core_keypair(&self.inner.keypair)
            .ok_or(NetabaseError::Api(netabase_core::ApiError::NoIdentity))?;
        let store = self.typed_store()?;
        let config = &self.inner.config;
        let mut dht: PersistentRecordStore = store
            .record_store(self.inner.core_peer, config.record_store.clone())
            .with_durability(Durability::Deferred);
        let old = store.write_with(Durability::Deferred, |tx| {
            let old = tx.remove_definition(model, pk)?;
            tx.remove_version(model, pk)?;
            Ok(old)
        })?;
        let mut hlc = netabase_core::Hlc::new(config.kad.hlc, dht.clock_ceiling()?);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let parts = SealParts {
            model,
            schema_version: D::SCHEMA_VERSION,
            timestamp: 0,
            tombstone: true,
            payload: &[],
        };
        let value = netabase_core::seal_version(&mut dht, &mut hlc, &keypair, wall, &key, parts)?;
        // The node's clock reads microseconds since the Unix epoch, as the wall clock does.
        let horizon = u64::try_from(config.kad.tombstone_horizon.as_micros()).unwrap_or(u64::MAX);
        let expires = Envelope::version_of(&value)
            .map(|(v, _)| netabase_core::Instant::from_micros(v.timestamp.saturating_add(horizon)));
        let record = netabase_core::Record {
            key: key.clone(),
            value,
            publisher: Some(self.inner.core_peer),
            expires,
        };
        dht.put_resolved(record)?;
        dht.outbox_add(&key)?;
        dht.sync()?;
        Ok(old)
    }

    /// Up to `limit` records of model `M` from the local typed store, in key order.
    pub async fn query_local_records<M>(&self, limit: usize) -> Result<Vec<M>, NetabaseError>
    where
        M: NetabaseModel<Definition = D>,
    {
        Ok(self.local_store()?.query::<M>(limit)?)
    }

    /// Announces this node as a provider of `key` to the closest peers (and records it
    /// locally, so it is announced again periodically).
    #[tracing::instrument(level = "debug", skip_all, fields(model = <K::Model as NetabaseModel>::NAME))]
    pub async fn start_providing<K>(&self, key: &K) -> Result<ProvidingResult, NetabaseError>
    where
        K: PrimaryKey,
        K::Model: NetabaseModel<Definition = D>,
    {
        let record_key = record_key(key)?;
        let QueryDone { result, .. } = self
            .query(QueryOp::StartProviding(record_key.clone()))
            .await?;
        let (announced_to, error) = match result {
            QueryResult::StartProviding(Ok(peers)) => (peers_of(&peers), None),
            QueryResult::StartProviding(Err(e)) => (Vec::new(), Some(e)),
            _ => (Vec::new(), None),
        };
        Ok(ProvidingResult {
            key: record_key,
            announced_to,
            error,
        })
    }

    /// Stops providing `key` (announcements at other peers expire).
    #[tracing::instrument(level = "debug", skip_all, fields(model = <K::Model as NetabaseModel>::NAME))]
    pub async fn stop_providing<K>(&self, key: &K) -> Result<(), NetabaseError>
    where
        K: PrimaryKey,
        K::Model: NetabaseModel<Definition = D>,
    {
        let key = record_key(key)?;
        self.call(|reply| Command::StopProviding { key, reply })
            .await?
    }

    /// The providers of `key` known locally and found on the network (empty if none).
    #[tracing::instrument(level = "debug", skip_all, fields(model = <K::Model as NetabaseModel>::NAME))]
    pub async fn get_providers<K>(&self, key: &K) -> Result<Vec<ProviderInfo>, NetabaseError>
    where
        K: PrimaryKey,
        K::Model: NetabaseModel<Definition = D>,
    {
        let key = record_key(key)?;
        let QueryDone { result, .. } = self.query(QueryOp::GetProviders(key)).await?;
        match result {
            QueryResult::GetProviders(Ok(providers)) => Ok(providers
                .into_iter()
                .filter_map(|p| {
                    Some(ProviderInfo {
                        peer: to_libp2p_peer(&p.id)?,
                        addresses: p.addrs.iter().filter_map(to_multiaddr).collect(),
                    })
                })
                .collect()),
            QueryResult::GetProviders(Err(QueryError::NotFound)) => Ok(Vec::new()),
            QueryResult::GetProviders(Err(e)) => Err(e.into()),
            _ => Ok(Vec::new()),
        }
    }

    /// Joins (or refreshes) the DHT: looks up the local id and refreshes the routing
    /// table's buckets. Needs at least one known peer (a bootstrap peer, `add_address`, or
    /// mDNS).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn bootstrap(&self) -> Result<BootstrapResult, NetabaseError> {
        let QueryDone { result, stats, .. } = self.query(QueryOp::Bootstrap).await?;
        match result {
            QueryResult::Bootstrap(Ok(size)) => Ok(BootstrapResult {
                routing_table_size: size,
                stats,
            }),
            QueryResult::Bootstrap(Err(e)) => Err(e.into()),
            _ => Err(QueryError::NotFound.into()),
        }
    }

    /// Adds an address of a DHT peer to the routing table (and to the swarm's address
    /// book, for dialling).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NetabaseError> {
        self.call(|reply| Command::AddAddress { peer, addr, reply })
            .await?
    }

    /// Removes one address of `peer`; the peer leaves the routing table with its last.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn remove_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NetabaseError> {
        self.call(|reply| Command::RemoveAddress { peer, addr, reply })
            .await
    }

    /// Removes `peer` from the routing table; returns whether it was there.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn remove_peer(&self, peer: PeerId) -> Result<bool, NetabaseError> {
        self.call(|reply| Command::RemovePeer { peer, reply }).await
    }

    /// The DHT mode: the running node's, or the configured one before the swarm starts.
    pub async fn get_mode(&self) -> Result<Mode, NetabaseError> {
        match self.running() {
            Ok(_) => Ok(self.snapshot().await?.mode),
            Err(NetabaseError::NotRunning) => Ok(self.inner.config.kad.mode),
            Err(e) => Err(e),
        }
    }

    /// Switches the DHT mode. A client answers no DHT request and stops offering the
    /// protocol, so peers (told by identify) drop it from their routing tables; a server
    /// serves the protocol again.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn set_mode(&self, mode: Mode) -> Result<(), NetabaseError> {
        self.call(|reply| Command::SetMode { mode, reply }).await
    }

    async fn snapshot(&self) -> Result<Snapshot, NetabaseError> {
        self.call(|reply| Command::Snapshot { reply }).await
    }

    /// The addresses the node listens on.
    pub async fn listen_addresses(&self) -> Result<Vec<Multiaddr>, NetabaseError> {
        Ok(self.snapshot().await?.listen_addresses)
    }

    /// The peers with an open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NetabaseError> {
        Ok(self.snapshot().await?.connected_peers)
    }

    /// The peers in the DHT routing table.
    pub async fn routing_table_peers(&self) -> Result<Vec<PeerId>, NetabaseError> {
        Ok(self.snapshot().await?.routing_table)
    }

    /// The node's counters.
    pub async fn stats(&self) -> Result<NetabaseStats, NetabaseError> {
        let snapshot = self.snapshot().await?;
        Ok(NetabaseStats {
            kad: snapshot.stats,
            inbound_stream_failures: snapshot.inbound_stream_failures,
            inbound_refused: snapshot.inbound_refused,
        })
    }
}

fn peers_of(peers: &[netabase_core::PeerId]) -> Vec<PeerId> {
    peers.iter().filter_map(to_libp2p_peer).collect()
}

/// Refuses a consensus model on the DHT's write paths: only its cluster's log writes it.
fn refuse_consensus_model<M: NetabaseModel>() -> Result<(), NetabaseError> {
    if M::CONSENSUS {
        return Err(crate::consensus::ConsensusError::ConsensusModel(M::NAME).into());
    }
    Ok(())
}
