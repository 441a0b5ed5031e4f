//! Arbitrary sequences of consensus messages (well-formed ones built from the input, and
//! raw bytes), proposals, reads, syncs, crashes and timeouts fed to one member of a
//! three-member cluster: it never panics and its invariants hold after every step.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netabase_core::consensus::{
    Ballot, ClusterId, Compaction, Configuration, ConsensusConfig, Entry, EntryId, Envelope,
    KvCommand, KvState, Member, Membership, MembershipChange, MemoryLogStore, Message, Position,
    ReadLevel, Reconfiguration, SlotValue, SnapshotChunk, SnapshotImage, State, Value,
};
use netabase_core::{Instant, PeerId};

const CLUSTER: ClusterId = ClusterId([3; 16]);

#[derive(Arbitrary, Debug)]
enum Op {
    Prepare {
        from: u8,
        round: u8,
        leader: u8,
        slot: u8,
    },
    Promise {
        from: u8,
        round: u8,
        slot: u8,
        next: bool,
        entries: u8,
        truncated: u8,
    },
    /// A snapshot chunk: of a genuine image (a state with `keys` keys applied through
    /// `slot`) or of arbitrary bytes.
    Snapshot {
        from: u8,
        slot: u8,
        offset: u16,
        len: u16,
        genuine: bool,
        keys: u8,
        bytes: Vec<u8>,
    },
    SnapshotNext {
        from: u8,
        slot: u8,
        offset: u16,
    },
    Nack {
        from: u8,
        round: u8,
        promised: Option<u8>,
        alive: bool,
    },
    Accept {
        from: u8,
        round: u8,
        slot: u8,
        committed: u8,
        entries: u8,
    },
    Accepted {
        from: u8,
        round: u8,
        slot: u8,
    },
    Commit {
        from: u8,
        round: u8,
        slot: u8,
    },
    Heartbeat {
        from: u8,
        round: u8,
        committed: u8,
        seq: u8,
    },
    HeartbeatAck {
        from: u8,
        round: u8,
        seq: u8,
        committed: u8,
    },
    ChangeMembership {
        from: u8,
        seq: u8,
        kind: u8,
        target: u8,
    },
    ChangeApi {
        kind: u8,
        target: u8,
    },
    /// The instance the following messages name.
    Instance {
        instance: u8,
    },
    CatchUp {
        from: u8,
        slot: u8,
    },
    Entries {
        from: u8,
        slot: u8,
        count: u8,
    },
    Forward {
        from: u8,
        entries: u8,
    },
    ReadIndex {
        from: u8,
        request: u8,
        lease: bool,
    },
    ReadIndexReply {
        from: u8,
        request: u8,
        index: Option<u8>,
    },
    Relinquish {
        from: u8,
        round: u8,
    },
    TimeoutNow {
        from: u8,
        round: u8,
    },
    Transfer,
    Raw {
        from: u8,
        bytes: Vec<u8>,
    },
    Propose {
        len: u8,
    },
    Read {
        level: u8,
    },
    Sync,
    Crash,
    Advance {
        millis: u16,
    },
}

fn peer(n: u8) -> PeerId {
    PeerId::from_seed(u64::from(n % 4))
}

fn ballot(round: u8, leader: u8) -> Ballot {
    Ballot {
        round: u64::from(round % 8),
        leader: peer(leader),
    }
}

fn change(kind: u8, target: u8) -> MembershipChange {
    let p = peer(target);
    match kind % 4 {
        0 => MembershipChange::Add(p),
        1 => MembershipChange::Remove(p),
        2 => MembershipChange::Replace {
            old: p,
            new: peer(target.wrapping_add(1)),
        },
        _ => MembershipChange::Promote {
            peer: p,
            instance: u64::from(target % 3),
        },
    }
}

fn batch(from: u8, n: u8) -> Value {
    if n % 8 == 5 {
        // A membership change, with the configuration a leader would have computed.
        let change = change(n / 8, from.wrapping_add(n));
        let base = Configuration::new([peer(0), peer(1), peer(2)]);
        return Value::Reconfigure(Box::new(Reconfiguration {
            id: EntryId {
                proposer: peer(from),
                seq: u64::from(n),
            },
            change,
            outcome: base.changed(&change),
        }));
    }
    if n % 4 == 0 {
        return Value::Noop;
    }
    Value::Batch(
        (0..n % 4)
            .map(|i| Entry {
                id: EntryId {
                    proposer: peer(from),
                    seq: u64::from(i),
                },
                command: KvCommand::Append {
                    key: vec![i],
                    value: vec![n],
                }
                .encode(),
            })
            .collect(),
    )
}

fn values(from: u8, slot: u8, count: u8) -> Vec<SlotValue> {
    (0..count % 4)
        .map(|i| SlotValue {
            slot: u64::from(slot % 16) + u64::from(i),
            ballot: ballot(i, from),
            value: batch(from, count.wrapping_add(i)),
            chosen: i % 2 == 0,
        })
        .collect()
}

/// The encoded snapshot of a state with `keys` keys applied through `slot`, with the
/// cluster's first configuration.
fn image(slot: u64, keys: u8) -> Vec<u8> {
    let mut state = KvState::new();
    for k in 0..keys % 8 {
        state.apply(
            Position { slot, index: 0 },
            &Entry {
                id: EntryId {
                    proposer: peer(1),
                    seq: u64::from(k) + 100,
                },
                command: KvCommand::Put {
                    key: vec![k],
                    value: vec![keys],
                }
                .encode(),
            },
        );
    }
    state.set_applied(slot);
    SnapshotImage {
        slot,
        configurations: vec![(0, Configuration::new([peer(0), peer(1), peer(2)]))],
        state: state.freeze(),
    }
    .encode()
}

fn start(log: MemoryLogStore, state: KvState, now: Instant) -> Member<MemoryLogStore, KvState> {
    let config = ConsensusConfig {
        max_pending: 64,
        max_pending_reads: 64,
        compaction: Some(Compaction {
            entries: 4,
            bytes: 4096,
            keep: 1,
        }),
        snapshot_chunk_bytes: 64,
        max_snapshot_bytes: 4096,
        ..ConsensusConfig::default()
    };
    Member::new(
        config,
        Membership {
            local: peer(0),
            cluster: CLUSTER,
            members: Configuration::new([peer(0), peer(1), peer(2)]),
            contacts: Default::default(),
        },
        log,
        state,
        7,
        now,
    )
    .expect("valid member")
}

fuzz_target!(|ops: Vec<Op>| {
    let mut now = Instant::from_millis(1);
    let mut member = Some(start(MemoryLogStore::new(), KvState::new(), now));
    // The state as the last sync that moved the truncation point left it (the state is
    // written with the log): what a restart finds.
    let mut checkpoint: Option<(u64, KvState)> = None;
    let mut instance = 1u64;
    for op in ops.into_iter().take(256) {
        let m = member.as_mut().expect("running");
        let message = match op {
            Op::Prepare {
                from,
                round,
                leader,
                slot,
            } => Some((
                from,
                Message::Prepare {
                    ballot: ballot(round, leader),
                    from: u64::from(slot % 16),
                },
            )),
            Op::Promise {
                from,
                round,
                slot,
                next,
                entries,
                truncated,
            } => Some((
                from,
                Message::Promise {
                    ballot: ballot(round, 0),
                    accepted: values(from, slot, entries),
                    next: next.then_some(u64::from(slot % 16) + 4),
                    truncated: u64::from(truncated % 24),
                },
            )),
            Op::Snapshot {
                from,
                slot,
                offset,
                len,
                genuine,
                keys,
                bytes,
            } => {
                let slot = u64::from(slot % 32);
                let image = if genuine { image(slot, keys) } else { bytes };
                let total = image.len() as u64;
                let start = usize::from(offset).min(image.len());
                let end = (start + usize::from(len)).min(image.len());
                Some((
                    from,
                    Message::Snapshot(SnapshotChunk {
                        slot,
                        total,
                        digest: SnapshotImage::digest(&image),
                        offset: start as u64,
                        chunk: image[start..end].to_vec(),
                    }),
                ))
            }
            Op::SnapshotNext { from, slot, offset } => Some((
                from,
                Message::SnapshotNext {
                    slot: u64::from(slot % 32),
                    digest: [0; 32],
                    offset: u64::from(offset),
                },
            )),
            Op::Nack {
                from,
                round,
                promised,
                alive,
            } => Some((
                from,
                Message::Nack {
                    ballot: ballot(round, 0),
                    promised: promised.map(|r| ballot(r, from)),
                    leader_alive: alive,
                },
            )),
            Op::Accept {
                from,
                round,
                slot,
                committed,
                entries,
            } => Some((
                from,
                Message::Accept {
                    ballot: ballot(round, from),
                    slot: u64::from(slot % 16) + 1,
                    value: batch(from, entries),
                    committed: u64::from(committed % 16),
                },
            )),
            Op::Accepted { from, round, slot } => Some((
                from,
                Message::Accepted {
                    ballot: ballot(round, 0),
                    slot: u64::from(slot % 16),
                },
            )),
            Op::Commit { from, round, slot } => Some((
                from,
                Message::Commit {
                    ballot: ballot(round, from),
                    slot: u64::from(slot % 16),
                },
            )),
            Op::Heartbeat {
                from,
                round,
                committed,
                seq,
            } => Some((
                from,
                Message::Heartbeat {
                    ballot: ballot(round, from),
                    committed: u64::from(committed % 16),
                    seq: u64::from(seq),
                },
            )),
            Op::HeartbeatAck {
                from,
                round,
                seq,
                committed,
            } => Some((
                from,
                Message::HeartbeatAck {
                    ballot: ballot(round, 0),
                    seq: u64::from(seq),
                    committed: u64::from(committed % 16),
                },
            )),
            Op::ChangeMembership {
                from,
                seq,
                kind,
                target,
            } => Some((
                from,
                Message::ChangeMembership {
                    id: EntryId {
                        proposer: peer(from),
                        seq: u64::from(seq),
                    },
                    change: Box::new(change(kind, target)),
                },
            )),
            Op::ChangeApi { kind, target } => {
                let _ = m.change_membership(now, change(kind, target));
                None
            }
            Op::Instance { instance: i } => {
                instance = u64::from(i % 4);
                None
            }
            Op::CatchUp { from, slot } => Some((
                from,
                Message::CatchUp {
                    from: u64::from(slot),
                },
            )),
            Op::Entries { from, slot, count } => Some((
                from,
                Message::Entries {
                    entries: values(from, slot, count)
                        .into_iter()
                        .map(|v| SlotValue { chosen: true, ..v })
                        .collect(),
                },
            )),
            Op::Forward { from, entries } => Some((
                from,
                Message::Forward {
                    entries: match batch(from, entries) {
                        Value::Batch(e) => e,
                        Value::Noop | Value::Reconfigure(_) => Vec::new(),
                    },
                },
            )),
            Op::ReadIndex {
                from,
                request,
                lease,
            } => Some((
                from,
                Message::ReadIndex {
                    request: u64::from(request),
                    lease,
                },
            )),
            Op::ReadIndexReply {
                from,
                request,
                index,
            } => Some((
                from,
                Message::ReadIndexReply {
                    request: u64::from(request),
                    index: index.map(u64::from),
                },
            )),
            Op::Relinquish { from, round } => Some((
                from,
                Message::Relinquish {
                    ballot: ballot(round, from),
                },
            )),
            Op::TimeoutNow { from, round } => Some((
                from,
                Message::TimeoutNow {
                    ballot: ballot(round, from),
                },
            )),
            Op::Transfer => {
                let _ = m.transfer_leadership(now);
                None
            }
            Op::Raw { from, bytes } => {
                let _ = m.handle_bytes(now, peer(from), &bytes);
                None
            }
            Op::Propose { len } => {
                let _ = m.propose(now, vec![len; usize::from(len)]);
                None
            }
            Op::Read { level } => {
                let level = [ReadLevel::Linearizable, ReadLevel::Lease, ReadLevel::Local]
                    [usize::from(level % 3)];
                let _ = m.read(now, level);
                None
            }
            Op::Sync => {
                m.log_mut().sync();
                m.synced(now);
                let truncated = m.log().durable_truncated();
                if checkpoint.as_ref().map_or(0, |(t, _)| *t) != truncated {
                    checkpoint = Some((truncated, m.state().clone()));
                }
                None
            }
            Op::Crash => {
                let (mut log, _) = member.take().expect("running").into_parts();
                log.crash();
                let state = checkpoint
                    .as_ref()
                    .map(|(_, s)| s.clone())
                    .unwrap_or_default();
                member = Some(start(log, state, now));
                None
            }
            Op::Advance { millis } => {
                now = now + Duration::from_millis(u64::from(millis));
                if m.poll_timeout() <= now {
                    m.handle_timeout(now);
                }
                None
            }
        };
        let m = member.as_mut().expect("running");
        if let Some((from, message)) = message {
            m.handle_message(
                now,
                peer(from),
                Envelope {
                    cluster: CLUSTER,
                    instance,
                    message,
                },
            );
        }
        while m.poll_output().is_some() {}
        m.check_invariants();
    }
});
