//! Consensus across node processes on 127.0.0.1 (mDNS off). A cluster of every node runs a
//! closed-loop workload: one client thread per node issues puts, removals, compare-and-sets
//! and linearizable and lease reads on a few keys, with unique values, and records each
//! operation's call and return times (one monotonic clock in the test process) and outcome:
//! unknown when the write was reported indeterminate, failed otherwise, or its node died
//! under it.
//!
//! During the load the leader is killed with SIGKILL, restarted on its data directory and
//! rejoined; later the leader of the moment is stopped with SIGSTOP until another member
//! leads and writes commit without it, then continued. The history must be linearizable
//! (`netabase_sim::linearizability`), and every member must read the same latest values.
//! Another test kills every member at once under load and restarts them all: every
//! acknowledged write must still be there, or overwritten by a later one. A third stops a
//! leader while another takes over and writes: reads and a compare-and-set queued on the
//! stopped leader must not act on the older value once it continues.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use netabase_sim::linearizability::{Budget, KvInput, KvModel, KvOutput, Operation, check};
use netabase_testnode::{
    BootstrapReply, CasReply, ClusterStatusReply, Command, ConsensusFound, ConsensusReply,
    ConsensusWriteReply, Event, LogPosition, ReadLevelName,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tempfile::TempDir;

use super::support::*;

/// The keys (message ids) of the workload.
const KEYS: [u64; 4] = [1, 2, 3, 4];
/// The longest one phase of a scenario may take.
const PHASE: Duration = Duration::from_secs(25);
/// The longest one consensus command may take (a stopped node answers once continued).
const REPLY: Duration = Duration::from_secs(30);
/// Writes acknowledged in each phase of a scenario (by the members that are up).
const WRITES_PER_PHASE: usize = 100;
/// Operations the client of a member restarted or continued completes before the end of
/// its phase.
const OWN_OPERATIONS: usize = 15;

type Input = KvInput<u64, String>;
type Output = KvOutput<String>;
type Op = Operation<Input, Output>;

/// A member: what it takes to start its process again.
#[derive(Clone)]
struct Member {
    name: String,
    dir: PathBuf,
    /// Its listen address, kept over restarts.
    listen: String,
    peer_id: String,
}

/// A cluster of node processes: its id and its members.
struct Plan {
    cluster: String,
    members: Vec<Member>,
}

impl Plan {
    fn peer_ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.peer_id.clone()).collect()
    }

    fn index_of(&self, peer: &str) -> Option<usize> {
        self.members.iter().position(|m| m.peer_id == peer)
    }

    /// Member `i`'s node on its data directory and address, with every other member as a
    /// bootstrap peer.
    fn spawn(&self, i: usize) -> Spawn {
        let me = &self.members[i];
        let mut spawn = settings(Spawn::new(&me.name, Rt::Tokio))
            .data_dir(&me.dir)
            .listen(&me.listen);
        for (j, other) in self.members.iter().enumerate() {
            if j != i {
                spawn = spawn.arg(
                    "--bootstrap",
                    &format!("{}/p2p/{}", other.listen, other.peer_id),
                );
            }
        }
        spawn
    }

    /// Starts the cluster's member on `node`, one of the members' nodes.
    fn join(&self, node: &mut NodeProc) {
        let () = node.call(Command::JoinCluster {
            cluster: self.cluster.clone(),
            members: self.peer_ids(),
        });
    }
}

/// The consensus settings of every node: outcomes within a few seconds.
fn settings(spawn: Spawn) -> Spawn {
    spawn
        .arg("--backend", "redb")
        .arg("--proposal-timeout-ms", "5000")
        .arg("--read-timeout-ms", "3000")
}

/// `n` nodes in one network, each on a data directory of its own, in one new cluster;
/// returns when every node follows a leader.
fn form_cluster(prefix: &str, n: usize, dirs: &[TempDir]) -> (Plan, Vec<NodeProc>) {
    let mut nodes = network_with(prefix, &vec![Rt::Tokio; n], |i, spawn| {
        settings(spawn).data_dir(dirs[i].path())
    });
    let members: Vec<Member> = nodes
        .iter()
        .zip(dirs)
        .map(|(node, dir)| Member {
            name: node.name.clone(),
            dir: dir.path().to_path_buf(),
            listen: node.addrs[0].clone(),
            peer_id: node.peer_id.clone(),
        })
        .collect();
    let peer_ids: Vec<String> = members.iter().map(|m| m.peer_id.clone()).collect();
    let cluster: String = nodes[0].call(Command::CreateCluster { members: peer_ids });
    assert_eq!(cluster.len(), 32, "{cluster}");
    let plan = Plan { cluster, members };
    for node in nodes.iter_mut().skip(1) {
        plan.join(node);
    }
    for node in &mut nodes {
        node.expect_event("a leader", |e| {
            matches!(
                e,
                Event::ConsensusLeader {
                    leader: Some(_),
                    ..
                }
            )
            .then_some(())
        });
    }
    // The creator adds the others through the log: wait until every member votes.
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &mut nodes {
        node.expect_event("every member a voter", |e| match e {
            Event::ConsensusConfiguration { voters, .. } if voters.len() == n => Some(()),
            _ => None,
        });
        // In force once the slots before it are applied: each round waits for a
        // linearizable read, which takes a heartbeat round of the leader.
        while status(node).members.len() < n {
            assert!(
                Instant::now() < deadline,
                "{}: the configuration with every member is not in force",
                node.name
            );
            let _: ConsensusReply<Option<ConsensusFound>> = node.call(Command::ConsensusGet {
                id: u64::MAX,
                level: ReadLevelName::Linearizable,
            });
        }
    }
    (plan, nodes)
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// An acknowledged write: its key, its value (`None`: a removal) and its position.
type Written = (u64, Option<String>, LogPosition);

/// What became of one operation of a client, for the history.
enum Outcome {
    /// Its output, and the position of a write that took effect.
    Known(Output, Option<LogPosition>),
    /// A write that may or may not have taken effect (indeterminate, or failed).
    Unknown,
    /// It did not happen: refused, or a read that failed.
    NotDone,
}

/// An operation whose outcome is known, for the progress conditions.
#[derive(Clone, Copy)]
struct Done {
    call: u64,
    write: bool,
}

/// What the clients recorded, and what the test and the clients tell each other.
struct Record {
    history: Vec<Op>,
    /// Acknowledged writes (puts, removals and swapping compare-and-sets): key, value
    /// (`None`: removed), position.
    writes: Vec<Written>,
    /// Per node: its client's operations with a known outcome.
    done: Vec<Vec<Done>>,
    /// Per node: the leader and round its last leader event named.
    leaders: Vec<Option<(Option<String>, u64)>>,
    /// Per node: its process id.
    pids: Vec<u32>,
    /// Per node: the test is killing it (its death is expected).
    doomed: Vec<bool>,
    /// Per node: its client may restart it.
    released: Vec<bool>,
    /// Per node: when its process was last restarted and rejoined.
    restarted: Vec<Option<u64>>,
    /// Writes with an unknown outcome, and operations refused.
    unknown: usize,
    refused: usize,
    /// Clients stop after their current operation.
    stop: bool,
    /// A client thread failed.
    crashed: bool,
}

struct Shared {
    clock: Instant,
    record: Mutex<Record>,
    changed: Condvar,
}

impl Shared {
    fn new(nodes: &[NodeProc]) -> Arc<Shared> {
        let n = nodes.len();
        Arc::new(Shared {
            clock: Instant::now(),
            record: Mutex::new(Record {
                history: Vec::new(),
                writes: Vec::new(),
                done: vec![Vec::new(); n],
                leaders: vec![None; n],
                pids: nodes.iter().map(NodeProc::pid).collect(),
                doomed: vec![false; n],
                released: vec![false; n],
                restarted: vec![None; n],
                unknown: 0,
                refused: 0,
                stop: false,
                crashed: false,
            }),
            changed: Condvar::new(),
        })
    }

    /// Nanoseconds on the test's clock.
    fn now(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the record and wakes the test.
    fn update<T>(&self, change: impl FnOnce(&mut Record) -> T) -> T {
        let t = change(&mut self.lock());
        self.changed.notify_all();
        t
    }

    /// Waits up to [`PHASE`] until `ready` holds; fails the test if it does not, or if a
    /// client thread failed.
    fn wait_for<T>(&self, what: &str, mut ready: impl FnMut(&Record) -> Option<T>) -> T {
        let mut found = None;
        let (record, timeout) = self
            .changed
            .wait_timeout_while(self.lock(), PHASE, |r| {
                if r.crashed {
                    return false;
                }
                found = ready(r);
                found.is_none()
            })
            .unwrap_or_else(|e| e.into_inner());
        assert!(
            !record.crashed,
            "a client thread failed while waiting for {what}"
        );
        let summary = format!(
            "{} operations, done per node {:?}, leaders {:?}",
            record.history.len(),
            record.done.iter().map(Vec::len).collect::<Vec<_>>(),
            record.leaders
        );
        drop(record);
        assert!(
            !timeout.timed_out(),
            "timed out waiting for {what}: {summary}"
        );
        found.expect("ready")
    }
}

/// Marks the record when a client thread fails, so that the test stops waiting.
struct CrashAlarm(Arc<Shared>);

impl Drop for CrashAlarm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.update(|r| r.crashed = true);
        }
    }
}

/// Continues a stopped process when dropped (also when the test fails), so that it can
/// read the end of its input and exit.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        signal(pid, Signal::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, Signal::SIGCONT);
    }
}

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap_or_else(|e| panic!("{signal} {pid}: {e}"));
}

/// The leader a majority of the members (other than `without`) name in their last leader
/// event, with its round.
fn agreed_leader(plan: &Plan, r: &Record, without: Option<usize>) -> Option<(usize, u64)> {
    let views: Vec<&(Option<String>, u64)> = r
        .leaders
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != without)
        .filter_map(|(_, view)| view.as_ref())
        .collect();
    let majority = plan.members.len() / 2 + 1;
    views.iter().find_map(|(leader, round)| {
        let leader = leader.as_ref()?;
        let votes = views
            .iter()
            .filter(|(l, rd)| l.as_ref() == Some(leader) && rd == round)
            .count();
        (votes >= majority).then(|| (plan.index_of(leader).expect("a member leads"), *round))
    })
}

/// Sends `command` and decodes its reply; `None` when the node died first.
fn consensus_call<T: DeserializeOwned>(node: &mut NodeProc, command: Command) -> Option<T> {
    let req = node.try_send(command)?;
    let value = node
        .reply_unless_gone(req, Instant::now() + REPLY)?
        .unwrap_or_else(|e| panic!("{}: consensus command failed outright: {e}", node.name));
    Some(
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{}: unexpected reply {value}: {e}", node.name)),
    )
}

/// The text of the value stored under `key` (the message id) in the history.
fn check_found(key: u64, found: &Option<ConsensusFound>) -> Option<String> {
    found.as_ref().map(|f| {
        assert_eq!(
            f.record,
            message(key, &f.record.text),
            "the record under {key}"
        );
        f.record.text.clone()
    })
}

/// One client of node `i`: operations until told to stop. A death the test caused ends
/// the client (`restart` false) or, once the test allows it, restarts the node on its data
/// directory and rejoins.
fn client(
    shared: Arc<Shared>,
    plan: Arc<Plan>,
    i: usize,
    mut node: NodeProc,
    restart: bool,
) -> Option<NodeProc> {
    let _alarm = CrashAlarm(shared.clone());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    // The last value this client saw under each key: what its compare-and-sets expect.
    let mut seen: HashMap<u64, Option<String>> = HashMap::new();
    let client = i as u64;
    for seq in 1.. {
        if shared.lock().stop {
            return Some(node);
        }
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let value = format!("n{i}-{seq}");
        let roll = rng.below(100);
        let call = shared.now();
        // The operation, and its outcome (`None`: the node died under it).
        let (input, outcome) = if (30..38).contains(&roll) {
            let reply = consensus_call::<ConsensusReply<ConsensusWriteReply>>(
                &mut node,
                Command::ConsensusRemove { id: key },
            );
            let outcome = reply.map(|reply| match reply {
                ConsensusReply::Done(w) => Outcome::Known(KvOutput::Ok, Some(w.position)),
                ConsensusReply::Refused(_) => Outcome::NotDone,
                ConsensusReply::Indeterminate(_) | ConsensusReply::Failed(_) => Outcome::Unknown,
            });
            (KvInput::remove(key), outcome)
        } else if roll < 38 {
            let reply = consensus_call::<ConsensusReply<ConsensusWriteReply>>(
                &mut node,
                Command::ConsensusPut {
                    message: message(key, &value),
                },
            );
            let outcome = reply.map(|reply| match reply {
                ConsensusReply::Done(w) => Outcome::Known(KvOutput::Ok, Some(w.position)),
                ConsensusReply::Refused(_) => Outcome::NotDone,
                ConsensusReply::Indeterminate(_) | ConsensusReply::Failed(_) => Outcome::Unknown,
            });
            (KvInput::put(key, value.clone()), outcome)
        } else if roll < 65 {
            let expected = seen.get(&key).cloned().flatten();
            let reply = consensus_call::<ConsensusReply<CasReply>>(
                &mut node,
                Command::ConsensusCas {
                    id: key,
                    expected: expected.as_deref().map(|text| message(key, text)),
                    new: Some(message(key, &value)),
                },
            );
            let outcome = reply.map(|reply| match reply {
                ConsensusReply::Done(c) => {
                    if c.swapped {
                        seen.insert(key, Some(value.clone()));
                    }
                    Outcome::Known(
                        KvOutput::Swapped(c.swapped),
                        c.swapped.then_some(c.position),
                    )
                }
                ConsensusReply::Refused(_) => Outcome::NotDone,
                ConsensusReply::Indeterminate(_) | ConsensusReply::Failed(_) => Outcome::Unknown,
            });
            (
                KvInput::compare_and_set(key, expected, Some(value.clone())),
                outcome,
            )
        } else {
            let reply = consensus_call::<ConsensusReply<Option<ConsensusFound>>>(
                &mut node,
                Command::ConsensusGet {
                    id: key,
                    level: if roll < 85 {
                        ReadLevelName::Linearizable
                    } else {
                        ReadLevelName::Lease
                    },
                },
            );
            let outcome = reply.map(|reply| match reply {
                ConsensusReply::Done(found) => {
                    let text = check_found(key, &found);
                    seen.insert(key, text.clone());
                    Outcome::Known(KvOutput::Value(text), None)
                }
                // A read that failed had no effect.
                _ => Outcome::NotDone,
            });
            (KvInput::get(key), outcome)
        };
        let ret = shared.now();
        let write = !matches!(input, KvInput::Get { .. });
        let died = outcome.is_none();
        let leader = node
            .events_matching(|e| match e {
                Event::ConsensusLeader { leader, round } => Some((leader.clone(), *round)),
                _ => None,
            })
            .pop();
        shared.update(|r| {
            match outcome {
                Some(Outcome::Known(output, position)) => {
                    if let Some(position) = position {
                        let written = match &input {
                            KvInput::Remove { .. } => None,
                            _ => Some(value.clone()),
                        };
                        r.writes.push((key, written, position));
                    }
                    r.done[i].push(Done { call, write });
                    r.history
                        .push(Operation::completed(client, input, call, ret, output));
                }
                // A write may have taken effect, at any time after its call.
                Some(Outcome::Unknown) | None if write => {
                    r.unknown += 1;
                    r.history.push(Operation::unknown(client, input, call));
                }
                None => {}
                Some(Outcome::Unknown | Outcome::NotDone) => r.refused += 1,
            }
            if leader.is_some() {
                r.leaders[i] = leader;
            }
        });
        if died {
            assert!(
                shared.lock().doomed[i],
                "{}: the node died, and not by the test's hand",
                node.name
            );
            node.wait_exit();
            if !restart {
                return None;
            }
            shared.wait_for("the test to let the member restart", |r| {
                r.released[i].then_some(())
            });
            let mut again = plan.spawn(i).start();
            assert_eq!(again.peer_id, plan.members[i].peer_id, "{}", again.name);
            plan.join(&mut again);
            node = again;
            let at = shared.now();
            shared.update(|r| {
                r.pids[i] = node.pid();
                r.doomed[i] = false;
                r.released[i] = false;
                r.leaders[i] = None;
                r.restarted[i] = Some(at);
            });
        }
    }
    unreachable!("the client loop ends by returning")
}

/// Starts one client thread per node.
fn start_clients(
    shared: &Arc<Shared>,
    plan: &Arc<Plan>,
    nodes: Vec<NodeProc>,
    restart: bool,
) -> Vec<std::thread::JoinHandle<Option<NodeProc>>> {
    nodes
        .into_iter()
        .enumerate()
        .map(|(i, node)| {
            let (shared, plan) = (shared.clone(), plan.clone());
            std::thread::spawn(move || client(shared, plan, i, node, restart))
        })
        .collect()
}

/// Operations by clients other than `without`'s with a known outcome, called from `since`
/// on; writes only if `writes`.
fn done_since(r: &Record, since: u64, without: Option<usize>, writes: bool) -> usize {
    r.done
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != without)
        .flat_map(|(_, done)| done)
        .filter(|d| d.call >= since && (d.write || !writes))
        .count()
}

/// Reads every key linearizably on every node, in turn, recording the reads in `history`
/// (as client 1000 + node); the nodes must agree. Returns what they read.
fn read_everything(
    shared: &Shared,
    nodes: &mut [NodeProc],
    history: &mut Vec<Op>,
) -> HashMap<u64, Option<ConsensusFound>> {
    let mut latest = HashMap::new();
    for key in KEYS {
        for (i, node) in nodes.iter_mut().enumerate() {
            let deadline = Instant::now() + PHASE;
            // A read no leader confirmed in time is refused; ask again until the deadline.
            let (found, call, ret) = loop {
                let call = shared.now();
                let reply: ConsensusReply<Option<ConsensusFound>> =
                    node.call(Command::ConsensusGet {
                        id: key,
                        level: ReadLevelName::Linearizable,
                    });
                match reply {
                    ConsensusReply::Done(found) => break (found, call, shared.now()),
                    other => assert!(
                        Instant::now() < deadline,
                        "{}: no read of {key} succeeded: {other:?}",
                        node.name
                    ),
                }
            };
            let text = check_found(key, &found);
            history.push(Operation::completed(
                1000 + i as u64,
                KvInput::get(key),
                call,
                ret,
                KvOutput::Value(text),
            ));
            // Applied here: a local read sees the same.
            let local: ConsensusReply<Option<ConsensusFound>> = node.call(Command::ConsensusGet {
                id: key,
                level: ReadLevelName::Local,
            });
            assert_eq!(
                local,
                ConsensusReply::Done(found.clone()),
                "{}: {key}",
                node.name
            );
            match latest.get(&key) {
                None => {
                    latest.insert(key, found);
                }
                Some(first) => assert_eq!(*first, found, "{}: {key}", node.name),
            }
        }
    }
    latest
}

/// Every acknowledged write is what the members read (`latest`), or a later write to its
/// key: a record found was written at the same position or later, and a key found absent
/// was removed by some operation of the history (acknowledged or not).
fn assert_writes_kept(
    writes: &[Written],
    latest: &HashMap<u64, Option<ConsensusFound>>,
    history: &[Op],
) {
    for (key, value, position) in writes {
        match &latest[key] {
            Some(found) => {
                assert!(
                    found.position >= *position,
                    "{key}: {value:?} was written at {position:?}, the members read {found:?}"
                );
                if found.position == *position {
                    assert_eq!(Some(&found.record.text), value.as_ref(), "{key}");
                }
            }
            None => assert!(
                history.iter().any(|op| op.input == KvInput::remove(*key)),
                "{key} lost: {value:?} was written at {position:?}"
            ),
        }
    }
}

/// Checks `history` against the key-value model; fails the test unless it is linearizable.
fn assert_linearizable(history: &[Op]) {
    let started = Instant::now();
    let verdict = check(
        &KvModel::<u64, String>::new(),
        history,
        Budget::steps(20_000_000).with_deadline(Instant::now() + Duration::from_secs(20)),
    );
    assert!(verdict.is_linearizable(), "{verdict}");
    eprintln!(
        "{} operations checked linearizable in {:?}",
        history.len(),
        started.elapsed()
    );
}

fn status(node: &mut NodeProc) -> ClusterStatusReply {
    node.call::<Option<ClusterStatusReply>>(Command::ClusterStatus)
        .unwrap_or_else(|| panic!("{}: in no cluster", node.name))
}

/// `n` members under load: the leader is killed and restarted, then the next leader is
/// stopped and continued; the history stays linearizable and every member catches up.
fn a_cluster_stays_linearizable_through_a_killed_and_a_stopped_leader(n: usize) {
    let began = Instant::now();
    let dirs: Vec<TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let (plan, nodes) = form_cluster(&format!("consensus{n}-"), n, &dirs);
    let plan = Arc::new(plan);
    let shared = Shared::new(&nodes);
    let clients = start_clients(&shared, &plan, nodes, true);

    shared.wait_for("the first acknowledged writes", |r| {
        (done_since(r, 0, None, true) >= WRITES_PER_PHASE
            && agreed_leader(&plan, r, None).is_some())
        .then_some(())
    });

    // SIGKILL the leader: another member leads and writes commit while it is down; then
    // its client restarts it on its data directory and rejoins.
    let (killed, round) = shared.wait_for("a leader", |r| agreed_leader(&plan, r, None));
    let pid = shared.update(|r| {
        r.doomed[killed] = true;
        r.pids[killed]
    });
    let killed_at = shared.now();
    signal(pid, Signal::SIGKILL);
    let (next, next_round) = shared.wait_for("a leader and writes after the kill", |r| {
        let (l, rd) =
            agreed_leader(&plan, r, Some(killed)).filter(|&(l, rd)| l != killed && rd > round)?;
        (done_since(r, killed_at, Some(killed), true) >= WRITES_PER_PHASE).then_some((l, rd))
    });
    let down_for = Duration::from_nanos(shared.now() - killed_at);
    shared.update(|r| r.released[killed] = true);
    eprintln!(
        "killed leader {killed} (round {round}); {next} leads in round {next_round}; \
         restarting after {down_for:?}"
    );
    let restarted_at = shared.wait_for("the restarted member's operations", |r| {
        let at = r.restarted[killed]?;
        let own = r.done[killed].iter().filter(|d| d.call >= at).count();
        (own >= OWN_OPERATIONS && done_since(r, at, None, true) >= WRITES_PER_PHASE).then_some(at)
    });

    // SIGSTOP the leader of the moment past the election timeout: another member leads
    // and writes commit without it.
    let (stopped, round) = shared.wait_for("a leader after the restart", |r| {
        agreed_leader(&plan, r, None).filter(|&(_, rd)| rd >= next_round)
    });
    let pid = shared.lock().pids[stopped];
    let stopped_at = shared.now();
    let stop = Stopped::stop(pid);
    let (successor, successor_round) = shared.wait_for("a leader while one is stopped", |r| {
        let (l, rd) =
            agreed_leader(&plan, r, Some(stopped)).filter(|&(l, rd)| l != stopped && rd > round)?;
        (done_since(r, stopped_at, Some(stopped), true) >= WRITES_PER_PHASE).then_some((l, rd))
    });
    let stopped_for = Duration::from_nanos(shared.now() - stopped_at);
    drop(stop);
    let continued_at = shared.now();
    eprintln!(
        "stopped leader {stopped} (round {round}) for {stopped_for:?}; {successor} leads in \
         round {successor_round}"
    );
    shared.wait_for("the continued member's operations", |r| {
        let own = r.done[stopped]
            .iter()
            .filter(|d| d.call >= continued_at)
            .count();
        (own >= OWN_OPERATIONS
            && done_since(r, continued_at, Some(stopped), true) >= WRITES_PER_PHASE)
            .then_some(())
    });

    shared.update(|r| r.stop = true);
    let mut nodes: Vec<NodeProc> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread").expect("a running node"))
        .collect();
    let (mut history, writes, unknown, refused) = {
        let mut r = shared.lock();
        (
            std::mem::take(&mut r.history),
            std::mem::take(&mut r.writes),
            r.unknown,
            r.refused,
        )
    };

    // Every member, the restarted one too, reads the latest values.
    let latest = read_everything(&shared, &mut nodes, &mut history);
    let last_write = writes.iter().map(|w| w.2).max().expect("writes");
    let restarted = status(&mut nodes[killed]);
    assert_eq!(restarted.cluster, plan.cluster);
    assert!(
        restarted.applied >= last_write.slot,
        "the restarted member applied through {}, the last write is at {last_write:?}",
        restarted.applied
    );
    assert_writes_kept(&writes, &latest, &history);
    let swaps = history
        .iter()
        .filter(|op| op.output == Some(KvOutput::Swapped(true)))
        .count();
    assert!(swaps > 0, "no compare-and-set swapped");
    eprintln!(
        "{} operations ({} acknowledged writes, {swaps} swaps, {unknown} unknown, {refused} \
         refused); restarted at {:?}, stopped for {stopped_for:?}",
        history.len(),
        writes.len(),
        Duration::from_nanos(restarted_at),
    );
    assert_linearizable(&history);
    for node in nodes {
        assert!(node.shutdown().success());
    }
    eprintln!("{n} members: {:?}", began.elapsed());
}

/// A fourth process joins a running three-member cluster: `join_cluster` resolves once
/// another process added it, it catches up, is promoted and serves a linearizable read of
/// a write made before it joined.
#[test]
fn a_fourth_process_joins_a_running_cluster() {
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (plan, mut nodes) = form_cluster("join-", 3, &dirs);
    let before: ConsensusReply<ConsensusWriteReply> = nodes[0].call(Command::ConsensusPut {
        message: message(1, "before"),
    });
    assert!(before.done().is_some(), "the first write failed");
    let mut newcomer = settings(Spawn::new("join-3", Rt::Tokio))
        .bootstrap(&nodes[0])
        .start();
    let bootstrapped: BootstrapReply = newcomer.call(Command::Bootstrap);
    assert!(bootstrapped.routing_table_size >= 1);
    let join = newcomer.send(Command::JoinCluster {
        cluster: plan.cluster.clone(),
        members: plan.peer_ids(),
    });
    let added: ConsensusReply<u64> = nodes[1].call(Command::AddMember {
        peer: newcomer.peer_id.clone(),
    });
    assert!(added.done().is_some(), "the add failed");
    let () = newcomer.reply_as(join);
    let id = newcomer.peer_id.clone();
    newcomer.expect_event("the newcomer becomes a voter", |e| match e {
        Event::ConsensusConfiguration { voters, .. } if voters.contains(&id) => Some(()),
        _ => None,
    });
    let found: ConsensusReply<Option<ConsensusFound>> = newcomer.call(Command::ConsensusGet {
        id: 1,
        level: ReadLevelName::Linearizable,
    });
    let found = found
        .done()
        .flatten()
        .expect("the write made before the join");
    assert_eq!(found.record, message(1, "before"));
    assert!(newcomer.shutdown().success());
    for node in nodes {
        assert!(node.shutdown().success());
    }
}

#[test]
fn three_members_stay_linearizable_through_a_killed_and_a_stopped_leader() {
    a_cluster_stays_linearizable_through_a_killed_and_a_stopped_leader(3);
}

#[test]
fn five_members_stay_linearizable_through_a_killed_and_a_stopped_leader() {
    a_cluster_stays_linearizable_through_a_killed_and_a_stopped_leader(5);
}

/// A leader stopped with SIGSTOP while another member takes over and commits a newer value
/// acts on no stale state once continued: of the commands queued on its input while it was
/// stopped, reads at the lease and the linearizable level see the newer value or are
/// refused, and a compare-and-set expecting the older value does not swap.
#[test]
fn a_continued_leader_acts_on_no_stale_state() {
    let began = Instant::now();
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (plan, mut nodes) = form_cluster("stale-", 3, &dirs);
    let statuses: Vec<ClusterStatusReply> = nodes.iter_mut().map(status).collect();
    let leader = statuses
        .iter()
        .position(|s| s.role == netabase_testnode::RoleName::Leader)
        .expect("a leader");
    for s in &statuses {
        assert_eq!(
            s.leader.as_deref(),
            Some(plan.members[leader].peer_id.as_str())
        );
    }
    let put = |node: &mut NodeProc, text: &str| -> ConsensusWriteReply {
        let reply: ConsensusReply<ConsensusWriteReply> = node.call(Command::ConsensusPut {
            message: message(1, text),
        });
        reply
            .done()
            .unwrap_or_else(|| panic!("{}: the put of {text:?} failed", node.name))
    };
    let before = put(&mut nodes[leader], "before");
    let entry: ConsensusReply<netabase_testnode::EntryStatusReply> =
        nodes[leader].call(Command::ConsensusEntryStatus {
            entry: before.entry.clone(),
        });
    assert!(
        matches!(
            entry,
            ConsensusReply::Done(netabase_testnode::EntryStatusReply::Applied(_))
        ),
        "{entry:?}"
    );
    // A lease read on the leader, answered from its lease.
    let read = |node: &mut NodeProc, req: u64| -> ConsensusReply<Option<ConsensusFound>> {
        node.reply_as(req)
    };
    let req = nodes[leader].send(Command::ConsensusGet {
        id: 1,
        level: ReadLevelName::Lease,
    });
    let found = read(&mut nodes[leader], req)
        .done()
        .flatten()
        .expect("found");
    assert_eq!(
        (found.record.text.as_str(), found.position),
        ("before", before.position)
    );

    let stop = Stopped::stop(nodes[leader].pid());
    let other = (leader + 1) % 3;
    let after = put(&mut nodes[other], "after");
    assert!(after.position > before.position);
    // Read from the stopped leader's input once it continues: a compare-and-set that
    // expects the older value, and reads.
    let cas = nodes[leader].send(Command::ConsensusCas {
        id: 1,
        expected: Some(message(1, "before")),
        new: Some(message(1, "split")),
    });
    let queued = [ReadLevelName::Lease, ReadLevelName::Linearizable].map(|level| {
        (
            level,
            nodes[leader].send(Command::ConsensusGet { id: 1, level }),
        )
    });
    drop(stop);
    match nodes[leader].reply_as::<ConsensusReply<CasReply>>(cas) {
        ConsensusReply::Done(c) => {
            assert!(
                !c.swapped,
                "the continued leader swapped against the older value"
            );
            assert!(c.position > after.position, "{c:?}");
        }
        // It can never swap: nothing writes the older value again.
        ConsensusReply::Indeterminate(_) | ConsensusReply::Refused(_) => {}
        other => panic!("compare-and-set: {other:?}"),
    }
    for (level, req) in queued {
        match read(&mut nodes[leader], req) {
            ConsensusReply::Done(found) => {
                let found = found.expect("found");
                assert_eq!(
                    (found.record.text.as_str(), found.position),
                    ("after", after.position),
                    "{level:?}: a stale read on the continued leader"
                );
            }
            ConsensusReply::Refused(why) => eprintln!("{level:?} read refused: {why}"),
            other => panic!("{level:?}: {other:?}"),
        }
    }
    // It learned of the newer ballot, and every member reads the newer value.
    let status = status(&mut nodes[leader]);
    assert!(status.round > statuses[leader].round, "{status:?}");
    for node in &mut nodes {
        let reply: ConsensusReply<Option<ConsensusFound>> = node.call(Command::ConsensusGet {
            id: 1,
            level: ReadLevelName::Linearizable,
        });
        let found = reply.done().flatten().expect("found");
        assert_eq!(found.record.text, "after", "{}", node.name);
    }
    for node in nodes {
        assert!(node.shutdown().success());
    }
    eprintln!("stale reads: {:?}", began.elapsed());
}

/// Every member is killed with SIGKILL under load and restarted on its data directory:
/// every acknowledged write is read back on every member, or a later write to its key.
#[test]
fn acknowledged_consensus_writes_survive_killing_every_member() {
    let began = Instant::now();
    let n = 3;
    let dirs: Vec<TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let (plan, nodes) = form_cluster("durable-", n, &dirs);
    let plan = Arc::new(plan);
    let shared = Shared::new(&nodes);
    let clients = start_clients(&shared, &plan, nodes, false);
    shared.wait_for("acknowledged writes", |r| {
        (r.writes.len() >= 4 * WRITES_PER_PHASE).then_some(())
    });
    let pids = shared.update(|r| {
        r.doomed = vec![true; n];
        r.pids.clone()
    });
    for pid in pids {
        signal(pid, Signal::SIGKILL);
    }
    for c in clients {
        assert!(c.join().expect("client thread").is_none());
    }
    let (mut history, writes) = {
        let mut r = shared.lock();
        (
            std::mem::take(&mut r.history),
            std::mem::take(&mut r.writes),
        )
    };

    let launched: Vec<_> = (0..n).map(|i| plan.spawn(i).launch()).collect();
    let mut nodes: Vec<NodeProc> = launched.into_iter().map(|l| l.ready()).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        assert_eq!(node.peer_id, plan.members[i].peer_id);
        let before: Value = node.call(Command::ClusterStatus);
        assert_eq!(
            before,
            Value::Null,
            "{}: in no cluster until it joins",
            node.name
        );
        plan.join(node);
    }
    let latest = read_everything(&shared, &mut nodes, &mut history);
    assert_writes_kept(&writes, &latest, &history);
    eprintln!(
        "{} acknowledged writes survived; {} operations",
        writes.len(),
        history.len()
    );
    assert_linearizable(&history);
    for node in nodes {
        assert!(node.shutdown().success());
    }
    eprintln!("durability: {:?}", began.elapsed());
}
