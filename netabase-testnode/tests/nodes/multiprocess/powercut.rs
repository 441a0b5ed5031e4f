//! Power cuts of a whole node process: its data directory is on the FUSE file system of
//! `netabase_powercut::fs`, where file data is volatile until the file's `fsync` and
//! directory entries until the directory's. One cut: puts are sent to the node, some of
//! their replies (acknowledgements) awaited, the node killed with SIGKILL, the FUSE
//! connection aborted, the unsynced state dropped (file data in part, drawn from the seed)
//! and a fresh instance mounted; the node restarted there must have the same peer id and
//! every acknowledged record, typed and in the DHT store.
//!
//! `NETABASE_POWERCUT_NODE_CUTS` sets the number of cuts ([`DEFAULT_CUTS`] by default),
//! `NETABASE_POWERCUT_SEED` the seed (0 by default). Needs root and `/dev/fuse`.

use std::time::Instant;

use netabase_powercut::fs::{Image, Mounted, mount};
use netabase_powercut::{Retention, Rng};
use netabase_testnode::{Command, Message, PutReply};

use super::support::*;

/// Cuts unless `NETABASE_POWERCUT_NODE_CUTS` says otherwise.
const DEFAULT_CUTS: u64 = 20;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
}

struct Mount {
    _dir: tempfile::TempDir,
    at: std::path::PathBuf,
    mounted: Option<Mounted>,
}

impl Mount {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("mnt");
        std::fs::create_dir(&at).unwrap();
        let mounted = mount(Image::empty(), &at).expect("mount the FUSE file system");
        Mount {
            _dir: dir,
            at,
            mounted: Some(mounted),
        }
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.at.join("node")
    }

    fn mounted(&self) -> &Mounted {
        self.mounted.as_ref().expect("mounted")
    }

    /// Cuts the power (the node was killed first) and mounts what survived.
    fn cut(&mut self, seed: u64, retention: Retention) {
        let image = self.mounted.take().expect("mounted").cut(seed, retention);
        self.mounted = Some(mount(image, &self.at).expect("mount again"));
    }
}

fn start(name: &str, dir: &std::path::Path) -> NodeProc {
    Spawn::new(name, Rt::Tokio)
        .arg("--backend", "redb")
        .data_dir(dir)
        .start()
}

/// The node's typed messages.
fn local_messages(node: &mut NodeProc) -> Vec<Message> {
    node.call(Command::LocalMessages { limit: 100_000 })
}

#[test]
fn a_node_loses_nothing_acknowledged_and_keeps_its_peer_id_over_power_cuts() {
    let cuts = env_u64("NETABASE_POWERCUT_NODE_CUTS").unwrap_or(DEFAULT_CUTS);
    let seed = env_u64("NETABASE_POWERCUT_SEED").unwrap_or(0);
    let replay = format!(
        "replay: NETABASE_POWERCUT_SEED={seed} NETABASE_POWERCUT_NODE_CUTS={cuts} \
         cargo nextest run -p netabase-testnode --test nodes multiprocess::powercut"
    );
    let mut rng = Rng::new(seed);
    let mut fs = Mount::new();
    let started = Instant::now();
    let mut peer_id: Option<String> = None;
    let mut acked: Vec<Message> = Vec::new();
    let mut next_id = 1;
    let mut fsyncs = 0;
    for cut in 0..cuts {
        let mut node = start(&format!("powercut-{cut}"), &fs.data_dir());
        let id = peer_id.get_or_insert_with(|| node.peer_id.clone());
        assert_eq!(
            &node.peer_id, id,
            "cut {cut}: the peer id changed\n{replay}"
        );
        let held = local_messages(&mut node);
        for m in &acked {
            assert!(
                held.contains(m),
                "cut {cut}: acknowledged message {} lost\n{replay}",
                m.id
            );
            assert!(
                node.local(m.id).is_some(),
                "cut {cut}: the DHT record of acknowledged message {} lost\n{replay}",
                m.id
            );
        }
        // Puts in flight, some of them acknowledged before the cut.
        let sent = 1 + rng.below(8);
        let awaited = rng.below(sent + 1);
        let requests: Vec<(u64, Message)> = (0..sent)
            .map(|_| {
                let m = message(next_id, &format!("cut {cut}"));
                next_id += 1;
                (node.send(Command::Put { message: m.clone() }), m)
            })
            .collect();
        for (req, m) in requests.iter().take(awaited as usize) {
            let _: PutReply = node.reply_as(*req);
            acked.push(m.clone());
        }
        drop(node); // SIGKILL
        fsyncs += fs.mounted().stats().fsyncs;
        fs.cut(rng.next_u64(), Retention::draw(&mut rng));
    }
    eprintln!(
        "{cuts} node power cuts in {:.1} s, {} puts acknowledged, none lost; {fsyncs} file syncs",
        started.elapsed().as_secs_f64(),
        acked.len()
    );
    assert!(!acked.is_empty());
    assert!(fsyncs > 0, "the node never synced a file on the mount");
}

/// A sync that fails with `EIO` stops the node: the put whose sync failed is not
/// acknowledged, and neither is any later one.
#[test]
fn a_failed_fsync_stops_the_node_without_acknowledging() {
    let fs = Mount::new();
    let mut node = start("powercut-eio", &fs.data_dir());
    let _: PutReply = node.call(Command::Put {
        message: message(1, "before"),
    });
    let before = fs.mounted().stats();
    fs.mounted().fail_next_fsync();
    let failed = node.try_call(Command::Put {
        message: message(2, "sync fails"),
    });
    assert!(failed.is_err(), "acknowledged despite EIO: {failed:?}");
    let after = fs.mounted().stats();
    assert_eq!(after.failed_fsyncs, before.failed_fsyncs + 1);
    let later = node.try_call(Command::Put {
        message: message(3, "after"),
    });
    assert!(
        later.is_err(),
        "acknowledged after a failed sync: {later:?}"
    );
    eprintln!("the put whose sync failed: {failed:?}; the next one: {later:?}");
}

/// The identity key file survives a cut right after it was written (with nothing else in
/// the data directory to sync it): the same key, so the same peer id, every time.
#[test]
fn the_identity_key_survives_a_power_cut_right_after_it_was_written() {
    for seed in 0..10 {
        let mut fs = Mount::new();
        let dir = fs.data_dir();
        std::fs::create_dir(&dir).unwrap();
        std::fs::File::open(&fs.at).unwrap().sync_all().unwrap();
        let key = netabase::swarm::load_or_create_identity(&dir).unwrap();
        fs.cut(seed, Retention::NONE);
        let again = netabase::swarm::load_or_create_identity(&dir).unwrap();
        assert_eq!(
            again.public().to_peer_id(),
            key.public().to_peer_id(),
            "seed {seed}"
        );
    }
}
