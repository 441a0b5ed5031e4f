//! The node's driver on a thread of its own.

use netabase_async_std::SmolRuntime;
use netabase_testnode::Message;
use netabase_testnode::in_process::{get_and_put_from_a_plain_thread, message, start_with};

/// A durable commit in a node's driver waits for the disk; on an executor thread it would
/// hold that thread. Here the only thread of smol's global executor is held while a caller
/// outside it reads a local record and puts another (whose durable local write the driver
/// makes): the driver, on its own thread, answers both.
#[test]
fn a_node_answers_while_its_executor_is_held() {
    // smol's global executor has one thread unless SMOL_THREADS says otherwise; hold them
    // all.
    let threads = std::env::var("SMOL_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let node = smol::block_on(start_with::<SmolRuntime>(|_| {}));
    smol::block_on(node.node.put_record(message(1, "local"))).unwrap();

    let (held_tx, held_rx) = std::sync::mpsc::channel();
    // The executor threads wait on this lock until the test lets it go.
    let gate = std::sync::Arc::new(std::sync::RwLock::new(()));
    let closed = gate.write().unwrap();
    for _ in 0..threads {
        let held_tx = held_tx.clone();
        let gate = std::sync::Arc::clone(&gate);
        smol::spawn(async move {
            held_tx.send(()).unwrap();
            // Blocks this executor thread until the calls have their answers (or the test
            // ends).
            let _open = gate.read();
        })
        .detach();
    }
    for _ in 0..threads {
        held_rx.recv().unwrap();
    }

    get_and_put_from_a_plain_thread(&node.node, || drop(closed));
    assert_eq!(
        smol::block_on(node.node.query_local_records::<Message>(10)).unwrap(),
        vec![message(1, "local"), message(2, "while held")]
    );
    smol::block_on(node.node.stop_swarm()).unwrap();
}
