//! `cargo run --example simple_mdns_chat`, twice: two interactive chats, each in a network
//! namespace of its own (mDNS multicasts on every interface it sees, so it runs only in
//! namespaces this test creates), find each other, exchange messages typed on their
//! standard input, list them with `/history`, and leave with `quit`. The chat runs on every
//! runtime: a tokio chat talks with a smol chat (libp2p-mdns and the core's mDNS find each
//! other), and two async-std chats talk with each other.

use std::time::Duration;

use crate::support::*;

/// The chat's peer id, from its banner (`... (peer 12D3KooW...)`).
fn peer_id(chat: &mut Program) -> String {
    chat.expect_line("the banner", |line| {
        let rest = line.strip_prefix("Netabase chat: you are ")?;
        let id = rest.split("(peer ").nth(1)?.trim_end_matches(')');
        Some(id.to_string())
    })
}

fn short(peer: &str) -> &str {
    &peer[peer.len() - 6..]
}

#[cfg(all(feature = "tokio", feature = "smol"))]
#[test]
fn a_tokio_chat_and_a_smol_chat_find_each_other_and_exchange_messages() {
    chat_pair(["tokio", "smol"]);
}

#[cfg(feature = "async-std")]
#[test]
fn two_async_std_chats_find_each_other_and_exchange_messages() {
    chat_pair(["async-std", "async-std"]);
}

/// Two chats on `runtimes` (named as `--runtime` takes them), one per namespace.
fn chat_pair(runtimes: [&str; 2]) {
    let ns = namespaces();
    let program = example("simple_mdns_chat");
    let dirs = [
        tempfile::tempdir().expect("data directory"),
        tempfile::tempdir().expect("data directory"),
    ];
    let mut chats: Vec<Program> = (0..2)
        .map(|i| {
            let mut command = ns.command(i, &program);
            for var in [
                "NETABASE_CHAT_RUNTIME",
                "NETABASE_CHAT_NAME",
                "NETABASE_CHAT_LISTEN",
                "NETABASE_CHAT_DATA_DIR",
                "NETABASE_CHAT_MDNS",
                "NETABASE_CHAT_PEERS",
            ] {
                command.env_remove(var);
            }
            let listen = format!("/ip4/{}/tcp/0", ns.addr(i));
            if i == 0 {
                // Flags for one, environment variables for the other.
                command.args(["--runtime", runtimes[i], "--name", "alice"]);
                command.args(["--listen", &listen, "--data-dir"]);
                command.arg(dirs[i].path());
            } else {
                command
                    .env("NETABASE_CHAT_RUNTIME", runtimes[i])
                    .env("NETABASE_CHAT_NAME", "bob")
                    .env("NETABASE_CHAT_LISTEN", &listen)
                    .env("NETABASE_CHAT_DATA_DIR", dirs[i].path());
            }
            Program::start(["alice", "bob"][i], command)
        })
        .collect();

    let ids: Vec<String> = chats.iter_mut().map(peer_id).collect();
    for (i, chat) in chats.iter_mut().enumerate() {
        chat.expect_containing(&format!("runtime: {}", runtimes[i]));
        let line = chat.expect_containing("listening on ");
        assert!(
            line.contains(&format!("/ip4/{}/tcp/", ns.addr(i))),
            "{line}"
        );
        chat.expect_containing("mDNS is on");
    }

    // mDNS, on by default, finds the other side at its address on the veth pair, and the
    // other side joins the routing table.
    for (i, chat) in chats.iter_mut().enumerate() {
        let other = short(&ids[1 - i]).to_string();
        let found = chat.expect_containing(&format!("* discovered peer {other} at "));
        assert!(
            found.contains(&format!("/ip4/{}/tcp/", ns.addr(1 - i))),
            "{found}"
        );
        chat.expect_containing(&format!("* peer {other} joined the chat"));
    }

    // A message typed on one side is delivered and shown on the other.
    let hello = "hello from alice, ünïcødé ✓";
    chats[0].type_line(hello);
    chats[0].expect_containing("(delivered to 1 peer(s))");
    let shown = chats[1].expect_containing(&format!("alice: {hello}"));
    assert!(shown.starts_with('['), "{shown}");

    chats[1].type_line("hi alice");
    chats[1].expect_containing("(delivered to 1 peer(s))");
    chats[0].expect_containing("bob: hi alice");

    // Both sides list both messages, oldest first.
    for chat in &mut chats {
        chat.type_line("/history");
        chat.expect_containing("history: 2 message(s)");
        let first = chat.expect_line("the first history line", |l| {
            l.starts_with("  [").then(|| l.to_string())
        });
        assert!(first.ends_with(&format!("alice: {hello}")), "{first}");
        let second = chat.expect_line("the second history line", |l| {
            l.starts_with("  [").then(|| l.to_string())
        });
        assert!(second.ends_with("bob: hi alice"), "{second}");
    }

    chats[0].type_line("/help");
    chats[0].expect_containing("/history");
    chats[0].type_line("/nonsense");
    chats[0].expect_containing("unknown command /nonsense");

    for chat in &mut chats {
        chat.type_line("quit");
        chat.expect_containing("bye");
        let status = chat.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "{status}");
    }
}
