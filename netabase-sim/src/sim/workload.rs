//! The workload: choosing client operations (puts of fresh keys, overwrites, removals,
//! gets, provides, provider and peer lookups), starting them on their nodes, recording
//! their outcomes for the checkers, and the forgers' changes to the records they pass on.

use netabase_core::{
    Instant, Keypair, PeerId, QueryResult, Quorum, RecordKey, RecordStore, Version,
};
use rand_core::RngCore;

use super::engine::{Cx, Ev, lock};
use super::network::Net;
use super::{SUPERSEDED, Simulation, splitmix, unit, version_of};
use crate::checkers::Detail;
use crate::history::{OpKind, OpRecord, Outcome};

/// The model id of the records the workload writes.
const WORKLOAD_MODEL: u16 = 0;

/// The schema version of the records the workload writes.
const WORKLOAD_SCHEMA: u32 = 1;

/// A client operation running on a node.
pub(super) struct OpRun {
    pub(super) op: usize,
    /// A get: the version of the node's own copy when it started.
    pub(super) local: Option<Version>,
    /// A put or removal: the key and the version it wrote.
    pub(super) written: Option<(RecordKey, Version)>,
    /// A put or removal a peer answered with a newer version of the record.
    pub(super) superseded: bool,
}

/// A client operation, chosen between epochs, that starts on its node during one.
#[derive(Debug)]
pub(super) struct OpStart {
    pub(super) node: u32,
    pub(super) op: usize,
    pub(super) kind: OpKind,
    pub(super) key: RecordKey,
    /// A put's payload.
    pub(super) value: Vec<u8>,
    /// Copies a put must store, or a get collect.
    pub(super) quorum: usize,
    /// Whether a put seals a versioned record (otherwise it writes the plain payload).
    pub(super) versioned: bool,
}

/// How a client operation ended on its node.
pub(super) enum Finished {
    /// Its query finished, after this many rounds; a get's local version at its start;
    /// whether a put was superseded.
    Query(QueryResult, u32, Option<Version>, bool),
    /// The node refused to start it.
    Refused(String),
    /// A put or removal sealed this record value (the operation goes on).
    Sealed(Vec<u8>),
}

/// A client operation ended on its node.
pub(super) struct Done {
    pub(super) at: Instant,
    pub(super) order: u64,
    pub(super) op: usize,
    pub(super) how: Finished,
}

impl Cx<'_> {
    /// A client operation starts on its node.
    pub(super) fn start_op(&mut self, start: OpStart) {
        let i = start.node as usize;
        self.shard.events += 1;
        self.trace(i, 14, start.op as u64);
        let local = self.input_now(i);
        let Some(node) = self.node(i).core_mut() else {
            return;
        };
        let key = start.key;
        let mut run = OpRun {
            op: start.op,
            local: None,
            written: None,
            superseded: false,
        };
        let mut sealed = None;
        let quorum = Quorum::N(start.quorum);
        let started = match start.kind {
            OpKind::Put if !start.versioned => {
                sealed = Some(start.value.clone());
                node.put_record(local, netabase_core::Record::new(key, start.value), quorum)
            }
            OpKind::Put | OpKind::Remove => {
                let tombstone = start.kind == OpKind::Remove;
                let payload = if tombstone { &[][..] } else { &start.value[..] };
                match node.seal_record(
                    local,
                    key.clone(),
                    WORKLOAD_MODEL,
                    WORKLOAD_SCHEMA,
                    tombstone,
                    payload,
                ) {
                    Ok(record) => {
                        run.written = version_of(&record.value).map(|(v, _)| (key.clone(), v));
                        sealed = Some(record.value.clone());
                        node.put_record(local, record, quorum)
                    }
                    Err(e) => Err(e),
                }
            }
            OpKind::Get => {
                run.local = node
                    .store()
                    .get(&key)
                    .ok()
                    .flatten()
                    .filter(|r| !r.is_expired(local))
                    .and_then(|r| version_of(&r.value))
                    .map(|(v, _)| v);
                node.get_record(local, key, quorum)
            }
            OpKind::Provide => node.start_providing(local, key),
            OpKind::GetProviders => node.get_providers(local, key),
            OpKind::Lookup => node.get_closest_peers(local, key),
        };
        let at = self.now;
        let node = self.node(i);
        if let Some(value) = sealed {
            let order = node.next_order(i);
            self.shard.done.push(Done {
                at,
                order,
                op: start.op,
                how: Finished::Sealed(value),
            });
        }
        let node = self.node(i);
        match started {
            Ok(q) => {
                node.ops.insert(q, run);
            }
            Err(e) => {
                let order = node.next_order(i);
                self.shard.done.push(Done {
                    at,
                    order,
                    op: start.op,
                    how: Finished::Refused(e.to_string()),
                });
            }
        }
        self.drain(i);
    }
}

/// A forger's change to a signed record of another origin: a later timestamp and a
/// flipped byte of the payload (or origin), under the original signature. Whether it
/// changed anything.
pub(super) fn forge(value: &mut [u8], own: PeerId) -> bool {
    /// Offset of the timestamp in a format-2 envelope.
    const TIMESTAMP: std::ops::Range<usize> = 11..19;
    if version_of(value).is_none_or(|(v, _)| v.origin == own) || value.len() < 20 + 64 {
        return false;
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&value[TIMESTAMP]);
    let ts = u64::from_be_bytes(ts).saturating_add(1_000);
    value[TIMESTAMP].copy_from_slice(&ts.to_be_bytes());
    let last = value.len() - 65;
    value[last] ^= 0xFF;
    true
}

/// Signs a forged record again with the key of the origin it names (a simulated node's,
/// derived from the identity seed), so that it passes every signature check: the
/// `unchecked-signatures` bug, as nodes that check no signature would see it. Forgeries
/// whose origin is no simulated node (or that no longer decode) stay as they are.
pub(super) fn sign_forgery(net: &Net, key: &RecordKey, value: &mut Vec<u8>) {
    let Ok(envelope) = netabase_core::model::Envelope::decode(value) else {
        return;
    };
    let Some(&j) = net.index.get(&envelope.origin) else {
        return;
    };
    let keypair = Keypair::from_seed(splitmix(net.id_seed ^ j as u64));
    *value = netabase_core::model::Envelope::seal_parts(
        key,
        netabase_core::model::SealParts {
            model: envelope.model,
            schema_version: envelope.schema_version,
            timestamp: envelope.timestamp,
            tombstone: envelope.tombstone,
            payload: &envelope.payload,
        },
        &keypair,
    );
}

impl Simulation {
    /// A random running node to issue an operation at (forgers issue none: they are the
    /// adversary, not clients).
    fn pick_up_node(&mut self) -> Option<usize> {
        let n = self.world.nodes.len() - self.world.scenario.faults.forgers;
        for _ in 0..16 {
            let i = (self.work_rng.next_u64() % n as u64) as usize;
            if self.world.nodes[i].is_up() {
                return Some(i);
            }
        }
        None
    }

    /// Chooses the operation that starts at `at` and schedules its start on its node.
    pub(super) fn issue_op(&mut self, at: Instant) {
        let w = self.world.scenario.workload.clone();
        let Some(i) = self.pick_up_node() else {
            return;
        };
        let weights = [
            (OpKind::Put, w.put),
            (OpKind::Put, w.overwrite),
            (OpKind::Remove, w.remove),
            (OpKind::Get, w.get),
            (OpKind::Provide, w.provide),
            (OpKind::GetProviders, w.get_providers),
            (OpKind::Lookup, w.lookup),
        ];
        let total: f64 = weights.iter().map(|(_, x)| x).sum();
        if total <= 0.0 {
            return;
        }
        let mut x = unit(&mut self.work_rng) * total;
        let mut choice = weights.len() - 1;
        for (c, (_, weight)) in weights.iter().enumerate() {
            if x < *weight {
                choice = c;
                break;
            }
            x -= weight;
        }
        let mut kind = weights[choice].0;
        // A put of a fresh key, unless the scenario's keys are all taken.
        let fresh = choice == 0 && w.max_keys.is_none_or(|m| self.fresh_keys < m);
        let id = self.world.history.ops.len();
        let mut reads = None;
        let mut value = Vec::new();
        let key = match kind {
            OpKind::Put if fresh => {
                self.fresh_keys += 1;
                format!("rec-{id}").into_bytes()
            }
            OpKind::Put | OpKind::Remove | OpKind::Get if !self.keys.is_empty() => {
                let k =
                    self.keys[(self.work_rng.next_u64() % self.keys.len() as u64) as usize].clone();
                if kind == OpKind::Get {
                    reads = self.latest_acked.get(&k).copied();
                }
                k
            }
            OpKind::Provide => format!("prov-{id}").into_bytes(),
            OpKind::GetProviders if !self.completed_provides.is_empty() => {
                let p = self.completed_provides
                    [(self.work_rng.next_u64() % self.completed_provides.len() as u64) as usize];
                reads = Some(p);
                self.world.history.ops[p].key.clone()
            }
            _ => {
                kind = OpKind::Lookup;
                let mut k = [0u8; 16];
                for b in k.chunks_mut(8) {
                    b.copy_from_slice(&self.work_rng.next_u64().to_le_bytes());
                }
                k.to_vec()
            }
        };
        if kind == OpKind::Put {
            // The payload says who wrote it and in which operation, then random bytes.
            value = vec![0u8; w.value_bytes.max(12)];
            value[..8].copy_from_slice(&(id as u64).to_be_bytes());
            value[8..12].copy_from_slice(&(i as u32).to_be_bytes());
            for chunk in value[12..].chunks_mut(8) {
                let r = self.work_rng.next_u64().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
        }
        self.schedule_op(at, i, kind, key, value, reads);
    }

    /// Records operation `kind` on `key` in the history and schedules its start at node
    /// `i` at `at`.
    fn schedule_op(
        &mut self,
        at: Instant,
        i: usize,
        kind: OpKind,
        key: Vec<u8>,
        payload: Vec<u8>,
        reads: Option<usize>,
    ) {
        let id = self.world.history.ops.len();
        let w = &self.world.scenario.workload;
        let quorum = match kind {
            OpKind::Get => w.get_quorum,
            _ => w.put_quorum,
        };
        self.world.history.ops.push(OpRecord {
            id,
            node: i,
            kind,
            key: key.clone(),
            value: Vec::new(),
            version: None,
            tombstone: false,
            local_version: None,
            incarnation: self.world.nodes[i].incarnation,
            reads,
            invoked: at,
            completed: None,
            outcome: Outcome::Pending,
            hops: 0,
        });
        let key = RecordKey::new(&key).expect("workload keys are short");
        let order = self.world.nodes[i].next_order(i);
        let start = Ev::Op(Box::new(OpStart {
            node: i as u32,
            op: id,
            kind,
            key,
            value: payload,
            quorum,
            versioned: self.world.scenario.workload.versioned,
        }));
        lock(&self.team.shards[i / self.world.nodes.part_len])
            .queue
            .push(at, order, start);
    }

    /// Reads every key with an acknowledged write once more, each at a random up node.
    pub(super) fn final_reads(&mut self, at: Instant) {
        for k in 0..self.keys.len() {
            let Some(i) = self.pick_up_node() else {
                return;
            };
            let key = self.keys[k].clone();
            let reads = self.latest_acked.get(&key).copied();
            self.schedule_op(at, i, OpKind::Get, key, Vec::new(), reads);
        }
    }

    /// A put or removal sealed its record: the history keeps its value and version.
    pub(super) fn sealed(&mut self, op: usize, value: Vec<u8>) {
        let rec = &mut self.world.history.ops[op];
        if let Some((v, t)) = version_of(&value) {
            rec.version = Some(v);
            rec.tombstone = t;
        }
        rec.value = value;
    }

    pub(super) fn query_finished(
        &mut self,
        op: usize,
        result: QueryResult,
        hops: u32,
        local: Option<Version>,
        superseded: bool,
    ) {
        let expect_provider = self.world.history.ops[op]
            .reads
            .map(|p| self.world.nodes[self.world.history.ops[p].node].peer);
        let mut lookup_peers = None;
        let outcome = match result {
            QueryResult::PutRecord(Ok(_)) | QueryResult::StartProviding(Ok(_)) => Outcome::Ok,
            QueryResult::PutRecord(Err(e)) if superseded => {
                Outcome::Failed(format!("{SUPERSEDED} ({e})"))
            }
            QueryResult::GetRecord(Ok(records)) => {
                // The newest copy comes first (the injected bug takes the last, the oldest).
                let chosen = if self.world.scenario.faults.is("get-returns-oldest-copy") {
                    records.last()
                } else {
                    records.first()
                };
                let value = chosen.map(|r| r.record.value.clone()).unwrap_or_default();
                let rec = &mut self.world.history.ops[op];
                if let Some((v, t)) = version_of(&value) {
                    rec.version = Some(v);
                    rec.tombstone = t;
                }
                rec.value = value;
                rec.local_version = local;
                Outcome::Ok
            }
            QueryResult::GetProviders(Ok(providers)) => {
                if expect_provider.is_some_and(|p| providers.iter().any(|x| x.id == p)) {
                    Outcome::Ok
                } else {
                    Outcome::Failed("announced provider not among the providers found".into())
                }
            }
            QueryResult::GetClosestPeers(Ok(peers)) => {
                lookup_peers = Some(peers);
                Outcome::Ok
            }
            QueryResult::PutRecord(Err(e))
            | QueryResult::StartProviding(Err(e))
            | QueryResult::GetRecord(Err(e))
            | QueryResult::GetProviders(Err(e))
            | QueryResult::GetClosestPeers(Err(e))
            | QueryResult::FindPeer(Err(e))
            | QueryResult::Bootstrap(Err(e)) => Outcome::Failed(e.to_string()),
            QueryResult::FindPeer(Ok(_)) | QueryResult::Bootstrap(Ok(_)) => Outcome::Ok,
        };
        self.world.history.ops[op].local_version = local;
        self.complete_op(op, outcome, hops, lookup_peers);
    }

    pub(super) fn complete_op(
        &mut self,
        op: usize,
        outcome: Outcome,
        hops: u32,
        peers: Option<Vec<PeerId>>,
    ) {
        let now = self.world.now;
        {
            let rec = &mut self.world.history.ops[op];
            rec.completed = Some(now);
            rec.outcome = outcome;
            rec.hops = hops;
        }
        let code = u64::from(self.world.history.ops[op].ok());
        self.trace_event(now, 15, op as u32, code);
        let rec = &self.world.history.ops[op];
        if rec.ok() {
            match rec.kind {
                OpKind::Put | OpKind::Remove
                    if self.latest_acked.insert(rec.key.clone(), op).is_none() =>
                {
                    self.keys.push(rec.key.clone());
                }
                OpKind::Provide => self.completed_provides.push(op),
                _ => {}
            }
        }
        let rec = &self.world.history.ops[op];
        let target = RecordKey::new(&rec.key).map(|k| k.key()).ok();
        let detail = match (&peers, &target) {
            (Some(p), Some(t)) => Detail::Lookup {
                target: t,
                peers: p,
            },
            _ => Detail::None,
        };
        let mut out = Vec::new();
        for c in &mut self.checkers {
            c.on_complete(&self.world, &self.world.history.ops[op], &detail, &mut out);
        }
        self.violations.extend(out);
    }
}
