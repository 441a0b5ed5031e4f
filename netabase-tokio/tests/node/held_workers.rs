//! The node's driver on a thread of its own.

use netabase_testnode::Message;
use netabase_testnode::in_process::{get_and_put_from_a_plain_thread, message, start_with};
use netabase_tokio::TokioRuntime;

/// A durable commit in one node's driver waits for the disk; with the driver on a runtime
/// worker that would stall every task of the runtime. Here the only worker is held while a
/// caller outside the runtime reads a local record and puts another (whose durable local
/// write the driver makes): the driver, on its own thread, answers both.
#[test]
fn a_node_answers_while_every_worker_of_its_runtime_is_held() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let node = runtime.block_on(start_with::<TokioRuntime>(|_| {}));
    runtime
        .block_on(node.node.put_record(message(1, "local")))
        .unwrap();

    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    runtime.spawn(async move {
        held_tx.send(()).unwrap();
        // Blocks the only worker until the calls have their answers (or the test ends).
        let _ = release_rx.recv();
    });
    held_rx.recv().unwrap();

    get_and_put_from_a_plain_thread(&node.node, || release_tx.send(()).unwrap());
    assert_eq!(
        runtime
            .block_on(node.node.query_local_records::<Message>(10))
            .unwrap(),
        vec![message(1, "local"), message(2, "while held")]
    );
    runtime.block_on(node.node.stop_swarm()).unwrap();
}
