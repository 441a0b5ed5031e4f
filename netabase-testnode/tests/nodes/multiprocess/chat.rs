//! The product description's chat tests: messages written on one node process are received
//! and fetchable, byte for byte, on another.

use netabase_testnode::{BootstrapReply, Command, Event, Message, PutReply};

use super::support::*;

/// Puts `messages` on `sender` all at once (every command sent before any reply is read)
/// and checks each reply; returns the replies in message order.
fn put_all(sender: &mut NodeProc, messages: &[Message]) -> Vec<PutReply> {
    let reqs: Vec<u64> = messages
        .iter()
        .map(|m| sender.send(Command::Put { message: m.clone() }))
        .collect();
    reqs.into_iter()
        .zip(messages)
        .map(|(req, m)| {
            let put: PutReply = sender.reply_as(req);
            assert_eq!(put.key, message_key(m.id));
            assert_eq!(put.quorum_error, None, "{put:?}");
            assert!(!put.stored_at.is_empty(), "{put:?}");
            put
        })
        .collect()
}

/// A receiver and a sender joined through it.
fn pair(prefix: &str, rt: Rt) -> (NodeProc, NodeProc) {
    let receiver = Spawn::new(&format!("{prefix}-receiver"), rt).start();
    let mut sender = Spawn::new(&format!("{prefix}-sender"), rt)
        .bootstrap(&receiver)
        .start();
    let joined: BootstrapReply = sender.call(Command::Bootstrap);
    assert_eq!(joined.routing_table_size, 1);
    (receiver, sender)
}

/// `receiver` was sent every message by `from`: one remote-store event per message, and
/// each is found typed, with its writer, in the receiver's own DHT store.
fn assert_received(receiver: &mut NodeProc, from: &str, messages: &[Message]) {
    for m in messages {
        let key = message_key(m.id);
        receiver.expect_event(&format!("message {} stored", m.id), |e| {
            matches!(e, Event::RecordStored { key: k, from: f } if *k == key && f == from)
                .then_some(())
        });
        let found = receiver.get(m.id).expect("received");
        assert_eq!(&found.record, m);
        assert_eq!(found.origin, from);
        assert_eq!(found.source, None, "held locally");
    }
}

fn two_node_exchange(prefix: &str, count: u64, rt: Rt) {
    let (mut receiver, mut sender) = pair(prefix, rt);
    let messages: Vec<Message> = (1..=count)
        .map(|i| message(i, &format!("message {i} of {count}")))
        .collect();
    for put in put_all(&mut sender, &messages) {
        assert_eq!(put.stored_at, vec![receiver.peer_id.clone()]);
    }
    let sender_id = sender.peer_id.clone();
    assert_received(&mut receiver, &sender_id, &messages);
    // The writer's typed store lists them all; the receiver keeps them only in its DHT
    // store.
    let local: Vec<Message> = sender.call(Command::LocalMessages { limit: 100 });
    assert_eq!(local, messages);
    let theirs: Vec<Message> = receiver.call(Command::LocalMessages { limit: 100 });
    assert!(theirs.is_empty(), "{theirs:?}");
    assert_eq!(receiver.get(count + 1), None);
}

fn test_two_node_basic(rt: Rt) {
    two_node_exchange("basic", 5, rt);
}

fn test_two_node_many_messages(rt: Rt) {
    two_node_exchange("many", 20, rt);
}

fn test_multi_sender_single_receiver(rt: Rt) {
    let mut receiver = Spawn::new("receiver", rt).start();
    let mut senders: Vec<NodeProc> = (0..3)
        .map(|i| {
            Spawn::new(&format!("sender{i}"), rt)
                .bootstrap(&receiver)
                .launch()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|l| l.ready())
        .collect();
    for sender in &mut senders {
        let joined: BootstrapReply = sender.call(Command::Bootstrap);
        assert!(joined.routing_table_size >= 1);
    }
    // Every sender writes its own messages, all senders at the same time.
    let batches: Vec<Vec<Message>> = (0..3u64)
        .map(|s| {
            (0..4)
                .map(|i| message(100 * (s + 1) + i, &format!("from sender {s}, #{i}")))
                .collect()
        })
        .collect();
    let reqs: Vec<Vec<u64>> = senders
        .iter_mut()
        .zip(&batches)
        .map(|(sender, batch)| {
            batch
                .iter()
                .map(|m| sender.send(Command::Put { message: m.clone() }))
                .collect()
        })
        .collect();
    for ((sender, batch), reqs) in senders.iter_mut().zip(&batches).zip(reqs) {
        for (req, m) in reqs.into_iter().zip(batch) {
            let put: PutReply = sender.reply_as(req);
            assert_eq!(put.key, message_key(m.id));
            assert_eq!(put.quorum_error, None, "{put:?}");
        }
    }
    for (sender, batch) in senders.iter().zip(&batches) {
        assert_received(&mut receiver, &sender.peer_id, batch);
    }
    // Twelve messages, each from its own writer, none lost or mixed up.
    let stored = receiver.events_matching(|e| match e {
        Event::RecordStored { key, .. } => Some(key.clone()),
        _ => None,
    });
    for batch in &batches {
        for m in batch {
            assert!(stored.contains(&message_key(m.id)));
        }
    }
}

/// Texts that exercise the encodings on the way: JSON escapes, every UTF-8 width, control
/// characters, combining marks, an empty string, and one large value near the record
/// limit.
fn tricky_messages() -> Vec<Message> {
    let large: String = "ä€😀x".repeat(4_500);
    assert!(large.len() > 40_000, "{}", large.len());
    let texts = [
        String::new(),
        "plain ascii".to_string(),
        "héllo wörld — 你好 — مرحبا — שלום — Привет".to_string(),
        "🦀🚀 👩‍👩‍👧‍👦 🏳️‍🌈 e\u{301} a\u{30a}".to_string(),
        "\u{0}\u{1}\u{7f}\t\r\n line two \u{2028} \u{feff}".to_string(),
        r#"{"json": "inside", "esc": "\"\\/\b\f"}"#.to_string(),
        "\u{10ffff}\u{fffd}\u{e000}".to_string(),
        large,
    ];
    texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| Message {
            id: i as u64 + 1,
            author: format!("autor-ü-{i}-✓"),
            text,
        })
        .collect()
}

fn test_message_content_integrity(rt: Rt) {
    let (mut receiver, mut sender) = pair("integrity", rt);
    let messages = tricky_messages();
    put_all(&mut sender, &messages);
    let sender_id = sender.peer_id.clone();
    // Carried by PUT_VALUE to the receiver's store.
    assert_received(&mut receiver, &sender_id, &messages);

    // Carried by GET_VALUE answers to a node that joins afterwards.
    let mut late = Spawn::new("integrity-late", rt)
        .bootstrap(&receiver)
        .start();
    let _: BootstrapReply = late.call(Command::Bootstrap);
    for m in &messages {
        let found = late.get(m.id).expect("found on the network");
        assert_eq!(found.record.text.as_bytes(), m.text.as_bytes(), "{}", m.id);
        assert_eq!(&found.record, m);
        assert_eq!(found.origin, sender_id);
        assert!(found.source.is_some(), "fetched from a peer");
    }
    // The writer reads its own copies back unchanged as well.
    let local: Vec<Message> = sender.call(Command::LocalMessages { limit: 100 });
    assert_eq!(local, messages);
}

per_runtime!(test_two_node_basic);
per_runtime!(test_two_node_many_messages);
per_runtime!(test_multi_sender_single_receiver);
per_runtime!(test_message_content_integrity);
