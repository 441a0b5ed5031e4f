//! A shard: the events of a range of nodes, its message slab and its mailboxes.

use std::sync::atomic::Ordering;

use netabase_core::Instant;

use super::super::network::{Mail, Msg, Net};
use super::super::node::SimNode;
use super::super::trace::Line;
use super::super::workload::Done;
use super::{Cx, Ev, Team, lock, wait_until};
use crate::queue::EventQueue;

/// The events of a range of nodes, and what their processing produced for the rest.
pub(in crate::sim) struct Shard {
    /// Its number.
    pub(super) index: usize,
    /// Index of its first node.
    pub(super) lo: usize,
    /// Nodes per shard.
    pub(super) part_len: usize,
    /// Its nodes while another thread runs it.
    pub(super) held: Vec<SimNode>,
    /// Its nodes' events.
    pub(in crate::sim) queue: EventQueue<Ev>,
    /// Messages in flight to its nodes, by slot; freed slots are reused (most recently
    /// freed first, so a new message usually lands in memory that is still in cache).
    pub(super) msgs: Vec<Option<Msg>>,
    pub(super) free_msgs: Vec<u32>,
    /// Messages for the nodes of each other shard, posted after each step of an epoch.
    pub(super) outbox: Vec<Vec<Mail>>,
    /// The earliest message posted to another shard, since this epoch began, that the
    /// epoch does not reach.
    pub(super) posted_next: Option<Instant>,
    pub(in crate::sim) done: Vec<Done>,
    pub(in crate::sim) lines: Vec<Line>,
    pub(in crate::sim) events: u64,
    pub(in crate::sim) messages: u64,
}

impl Shard {
    pub(in crate::sim) fn new(index: usize, part_len: usize, shards: usize) -> Self {
        Shard {
            index,
            lo: index * part_len,
            part_len,
            held: Vec::new(),
            queue: EventQueue::new(),
            msgs: Vec::new(),
            free_msgs: Vec::new(),
            outbox: (0..shards).map(|_| Vec::new()).collect(),
            posted_next: None,
            done: Vec::new(),
            lines: Vec::new(),
            events: 0,
            messages: 0,
        }
    }

    /// Puts `msg` in a free slot of the message slab.
    fn store_msg(&mut self, msg: Msg) -> u32 {
        match self.free_msgs.pop() {
            Some(slot) => {
                self.msgs[slot as usize] = Some(msg);
                slot
            }
            None => {
                self.msgs.push(Some(msg));
                (self.msgs.len() - 1) as u32
            }
        }
    }

    /// Takes the message out of `slot` and frees the slot.
    pub(super) fn take_msg(&mut self, slot: u32) -> Msg {
        self.free_msgs.push(slot);
        self.msgs[slot as usize]
            .take()
            .expect("a scheduled delivery owns its message slot")
    }

    pub(super) fn deliver(&mut self, mail: Mail) {
        let msg = self.store_msg(mail.msg);
        self.queue.push(
            mail.at,
            mail.order,
            Ev::Deliver {
                to: mail.to,
                to_inc: mail.to_inc,
                from: mail.from,
                msg,
            },
        );
    }

    /// Hands the messages for other shards to their mailboxes.
    /// Messages due before `taken_before` are taken by their shards before the current
    /// epoch ends; [`Shard::next_at`] counts the others.
    pub(super) fn post(&mut self, team: &Team, taken_before: Instant) {
        let n = self.outbox.len();
        for (to, out) in self.outbox.iter_mut().enumerate() {
            if out.is_empty() {
                continue;
            }
            if let Some(first) = out
                .iter()
                .map(|m| m.at)
                .filter(|&t| t >= taken_before)
                .min()
            {
                self.posted_next = Some(self.posted_next.map_or(first, |p| p.min(first)));
            }
            lock(&team.mail[self.index * n + to]).append(out);
        }
    }

    /// Takes the messages other shards posted for this one.
    fn collect(&mut self, team: &Team, scratch: &mut Vec<Mail>) {
        let n = self.outbox.len();
        for from in 0..n {
            if from == self.index {
                continue;
            }
            std::mem::swap(scratch, &mut *lock(&team.mail[from * n + self.index]));
            for mail in scratch.drain(..) {
                self.deliver(mail);
            }
        }
    }

    /// One epoch: processes this shard's events before `until`, taking the mail of the
    /// other shards and posting its own for them.
    ///
    /// Shards move through the epoch at their own pace: a shard may process its events
    /// up to one lookahead past the shard furthest behind (no message sent later than that
    /// can arrive earlier), taking the other shards' mail before each step and posting its
    /// own after it, then saying how far it got.
    pub(super) fn epoch(&mut self, nodes: &mut [SimNode], team: &Team, net: &Net, until: Instant) {
        let mut scratch = Vec::new();
        let mut reached = Instant::from_micros(team.progress[self.index].load(Ordering::Acquire));
        let mut first = true;
        loop {
            let horizon = if team.shards.len() == 1 {
                until
            } else {
                let mut horizon = until;
                let mut abandoned = false;
                wait_until(|| {
                    // Another thread failed, or the run is being torn down: stop here.
                    if team.failed.load(Ordering::Acquire) || team.stop.load(Ordering::Acquire) {
                        abandoned = true;
                        return true;
                    }
                    let behind = team
                        .progress
                        .iter()
                        .enumerate()
                        .filter(|&(k, _)| k != self.index)
                        .map(|(_, p)| p.load(Ordering::Acquire))
                        .min()
                        .unwrap_or(u64::MAX);
                    horizon =
                        Instant::from_micros(behind.saturating_add(team.lookahead)).min(until);
                    horizon > reached
                });
                if abandoned {
                    return;
                }
                horizon
            };
            self.collect(team, &mut scratch);
            if first {
                self.posted_next = None;
                first = false;
            }
            while let Some((at, _, ev)) = self.queue.pop_before(horizon) {
                let mut cx = Cx {
                    shard: self,
                    nodes: &mut *nodes,
                    net,
                    now: at,
                };
                cx.process(at, ev);
            }
            self.post(team, until);
            team.progress[self.index].store(horizon.as_micros(), Ordering::Release);
            if team.shards.len() > 1 {
                team.wake();
            }
            reached = horizon;
            if horizon >= until {
                return;
            }
        }
    }

    /// When this shard's next event is, counting messages it posted that the other
    /// shards have not taken yet.
    pub(in crate::sim) fn next_at(&mut self) -> Option<Instant> {
        match (self.queue.peek_time(), self.posted_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
