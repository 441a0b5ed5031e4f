//! A hostile peer floods a node while three honest peers use it: the honest peers' latency
//! stays within three times what it was unloaded, the node's memory stays bounded, and the
//! refusals show in its counters.
//!
//! The node runs on the memory backend, pinned to CPU 0 with the honest peers (this test's
//! process); the flooder is its own process
//! (`netabase-flood`) pinned to CPU 1 with `taskset`, dialling from 127.0.0.5 in 20 slots,
//! each connecting with a fresh identity, sending requests on 48 streams at once and
//! holding 4 that send one byte and then nothing, and connecting again with another
//! identity whenever the node closes its connection; the honest peers dial from 127.0.0.2,
//! .3 and .4. Each address is its own source for the node's per-address limits, so the
//! flooder's identities share one budget. The node runs with 500 requests per second per
//! peer and per address (the defaults are higher, for clusters on one host), so that the
//! flood crosses them. The test prints what the flooder achieved.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use netabase_core::{Codec, RecordKey, Request};

use super::bad_input::{KAD, RawPeer};
use super::support::*;

/// The most memory (peak resident set) the node may use under the flood.
const MAX_NODE_MEMORY_KIB: u64 = 64 * 1024;
/// Requests per honest peer per phase.
const REQUESTS: usize = 300;

/// Pins every thread of process `pid` to `cpu`.
fn pin(pid: u32, cpu: u32) {
    let status = Process::new("taskset")
        .args(["-a", "-c", "-p", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux) runs");
    assert!(status.success(), "taskset failed: {status}");
}

/// The peak resident set of process `pid`, in KiB.
fn peak_memory_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// Every honest peer sends `REQUESTS` FIND_NODE requests one after another, all three at
/// once; the latency of each.
fn measure(peers: &mut [RawPeer], node: PeerId, request: &[u8]) -> Vec<Duration> {
    std::thread::scope(|s| {
        let handles: Vec<_> = peers
            .iter_mut()
            .map(|peer| {
                s.spawn(move || {
                    (0..REQUESTS)
                        .map(|_| {
                            let started = Instant::now();
                            let answer = peer.exchange(node, KAD, request).expect("an answer");
                            assert!(!answer.is_empty(), "an honest request was refused");
                            started.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

fn a_flooding_peer_is_held_back_while_honest_peers_are_served(rt: Rt) {
    let mut target = Spawn::new("flood-target", rt)
        .arg("--backend", "memory")
        .arg("--requests-per-ip", "500")
        .arg("--requests-per-peer", "500")
        .start();
    pin(target.pid(), 0);
    // The honest peers share CPU 0 with the node (in both phases alike), so that the
    // flooder's own CPU 1 is all it has.
    pin(std::process::id(), 0);
    let node: PeerId = target.peer_id.parse().unwrap();
    let addr: Multiaddr = target.addrs[0].parse().unwrap();
    let request = Codec::default().encode_request(&Request::FindNode {
        key: RecordKey::new(b"honest").unwrap(),
    });
    let mut honest: Vec<RawPeer> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .into_iter()
        .map(|ip| RawPeer::start_from(ip, node, addr.clone()))
        .collect();
    // Warm up, then the unloaded latency.
    measure(&mut honest, node, &request);
    let unloaded = p99(measure(&mut honest, node, &request));

    let mut flooder = Process::new("taskset")
        .args(["-c", "1", env!("CARGO_BIN_EXE_netabase-flood")])
        .args(["--target", &target.p2p_addr(), "--source", "127.0.0.5"])
        .args(["--seconds", "8", "--identities", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the flooder starts");
    let mut out = BufReader::new(flooder.stdout.take().unwrap()).lines();
    let first = out.next().expect("the flooder reports").unwrap();
    assert_eq!(first, "flooding", "the flooder never connected");
    // Let the flood build up before measuring under it.
    let flood_started = Instant::now();
    while flood_started.elapsed() < Duration::from_secs(1) {
        std::thread::yield_now();
    }
    let loaded = p99(measure(&mut honest, node, &request));
    let report = out.next().expect("the flooder's report").unwrap();
    assert!(flooder.wait().unwrap().success());
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let memory = peak_memory_kib(target.pid());
    let stats = target.stats();
    eprintln!(
        "flood: {report}; honest p99 unloaded {unloaded:?}, under the flood {loaded:?}; \
         node peak memory {memory} KiB; refused {}, stream failures {}",
        stats.inbound_refused, stats.inbound_stream_failures
    );
    assert!(report["requests_sent"].as_u64().unwrap() > 0);
    assert!(stats.inbound_refused > 0, "the limits refused nothing");
    assert!(
        loaded <= unloaded * 3,
        "honest p99 under the flood {loaded:?} exceeds 3x the unloaded {unloaded:?}"
    );
    assert!(
        memory <= MAX_NODE_MEMORY_KIB,
        "the node peaked at {memory} KiB"
    );
    target.shutdown();
}

per_runtime!(a_flooding_peer_is_held_back_while_honest_peers_are_served: tokio);
