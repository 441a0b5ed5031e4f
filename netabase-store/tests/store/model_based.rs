//! Model-based property tests: arbitrary sequences of puts, replaces, removes, batches and
//! transactions (committed and rolled back), applied to every backend and to an in-memory
//! reference model, with every read checked against the reference after every step.

use std::collections::BTreeMap;

use proptest::prelude::*;

use netabase_store::{BackendKind, Store, StoreError};

use crate::support::*;
use crate::{BACKENDS, Opened, open};

const AUTHORS: [&str; 3] = ["ada", "bob", "b"];
const COUNTRIES: [&str; 2] = ["uk", "de"];
const NAMES: [&str; 4] = ["x", "y", "xy", ""];

#[derive(Debug, Clone)]
enum Step {
    PutMessage(Message),
    PutUser(User),
    RemoveMessage(u64),
    RemoveUser(String),
}

#[derive(Debug, Clone)]
enum Op {
    /// One step in its own transaction.
    Single(Step),
    /// Steps applied through a `Batch`.
    Batch(Vec<Step>),
    /// Steps in one write transaction, committed or rolled back.
    Transaction { steps: Vec<Step>, commit: bool },
    /// Messages (possibly the same one twice) written by `put_many`.
    PutMany(Vec<Message>),
}

fn message_strategy() -> impl Strategy<Value = Message> {
    (0u64..6, 0..AUTHORS.len(), 0u32..3, "[a-c]{0,3}").prop_map(|(id, author, channel, text)| {
        Message {
            id,
            author: AUTHORS[author].into(),
            channel,
            text,
        }
    })
}

fn step() -> impl Strategy<Value = Step> {
    let message = message_strategy();
    let user = (0..NAMES.len(), 0..COUNTRIES.len(), any::<u16>()).prop_map(|(n, c, age)| User {
        name: NAMES[n].into(),
        country: COUNTRIES[c].into(),
        age,
    });
    prop_oneof![
        3 => message.prop_map(Step::PutMessage),
        2 => user.prop_map(Step::PutUser),
        2 => (0u64..6).prop_map(Step::RemoveMessage),
        1 => (0..NAMES.len()).prop_map(|n| Step::RemoveUser(NAMES[n].into())),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => step().prop_map(Op::Single),
        1 => prop::collection::vec(step(), 0..5).prop_map(Op::Batch),
        2 => (prop::collection::vec(step(), 0..5), any::<bool>())
            .prop_map(|(steps, commit)| Op::Transaction { steps, commit }),
        1 => prop::collection::vec(message_strategy(), 0..6).prop_map(Op::PutMany),
    ]
}

/// The reference: what the store must hold.
#[derive(Debug, Clone, Default)]
struct Reference {
    messages: BTreeMap<u64, Message>,
    users: BTreeMap<String, User>,
}

/// What a step returns: the replaced or removed value.
#[derive(Debug, PartialEq)]
enum Previous {
    Message(Option<Message>),
    User(Option<User>),
}

impl Reference {
    fn apply(&mut self, step: &Step) -> Previous {
        match step {
            Step::PutMessage(m) => Previous::Message(self.messages.insert(m.id, m.clone())),
            Step::PutUser(u) => Previous::User(self.users.insert(u.name.clone(), u.clone())),
            Step::RemoveMessage(id) => Previous::Message(self.messages.remove(id)),
            Step::RemoveUser(name) => Previous::User(self.users.remove(name)),
        }
    }
}

fn apply_in_tx<B: netabase_store::Backend>(
    tx: &mut netabase_store::WriteTx<'_, ChatDefinition, B>,
    step: &Step,
) -> Result<Previous, StoreError> {
    Ok(match step {
        Step::PutMessage(m) => Previous::Message(tx.put(m)?),
        Step::PutUser(u) => Previous::User(tx.put(u)?),
        Step::RemoveMessage(id) => Previous::Message(tx.remove(&MessagePrimaryKey(*id))?),
        Step::RemoveUser(name) => Previous::User(tx.remove(&UserPrimaryKey(name.clone()))?),
    })
}

/// Checks every read of the store against the reference.
fn check(store: &Store<ChatDefinition>, reference: &Reference, kind: BackendKind) {
    for id in 0..6 {
        assert_eq!(
            store.get(&MessagePrimaryKey(id)).unwrap(),
            reference.messages.get(&id).cloned(),
            "{kind:?}: message {id}"
        );
    }
    for name in NAMES {
        assert_eq!(
            store.get(&UserPrimaryKey(name.into())).unwrap(),
            reference.users.get(name).cloned(),
            "{kind:?}: user {name:?}"
        );
    }
    for a in AUTHORS {
        let expected: Vec<Message> = reference
            .messages
            .values()
            .filter(|m| m.author == a)
            .cloned()
            .collect();
        assert_eq!(
            store.get_by_secondary(&author(a)).unwrap(),
            expected,
            "{kind:?}: author {a:?}"
        );
    }
    for c in 0..3 {
        let expected: Vec<Message> = reference
            .messages
            .values()
            .filter(|m| m.channel == c)
            .cloned()
            .collect();
        assert_eq!(
            store.get_by_secondary(&channel(c)).unwrap(),
            expected,
            "{kind:?}: channel {c}"
        );
    }
    for c in COUNTRIES {
        let expected: Vec<User> = reference
            .users
            .values()
            .filter(|u| u.country == c)
            .cloned()
            .collect();
        assert_eq!(
            store.get_by_secondary(&country(c)).unwrap(),
            expected,
            "{kind:?}: country {c}"
        );
    }
    let all: Vec<Message> = reference.messages.values().cloned().collect();
    assert_eq!(store.range::<Message>(..).unwrap(), all, "{kind:?}");
    assert_eq!(
        store.query::<Message>(2).unwrap(),
        all.iter().take(2).cloned().collect::<Vec<_>>()
    );
    let users: Vec<User> = reference.users.values().cloned().collect();
    assert_eq!(store.range::<User>(..).unwrap(), users, "{kind:?}");
    assert_eq!(store.count::<Message>().unwrap(), all.len() as u64);
    assert_eq!(store.count::<User>().unwrap(), users.len() as u64);
    // Exactly one index entry per secondary key of every live record: none is stale.
    let entries = store
        .read(|tx| {
            use netabase_store::backend::ReadTransaction;
            Ok((
                tx.raw().len(&netabase_store::index_table("Message"))?,
                tx.raw().len(&netabase_store::index_table("User"))?,
            ))
        })
        .unwrap();
    assert_eq!(
        entries,
        (2 * all.len() as u64, users.len() as u64),
        "{kind:?}"
    );
}

fn run(ops: &[Op], opened: &Opened, kind: BackendKind) {
    let store = &opened.store;
    let mut reference = Reference::default();
    for op in ops {
        match op {
            Op::Single(step) => {
                let expected = reference.apply(step);
                let got = store.write(|tx| apply_in_tx(tx, step)).unwrap();
                assert_eq!(got, expected, "{kind:?}: {step:?}");
            }
            Op::Batch(steps) => {
                let mut batch = store.batch();
                for step in steps {
                    reference.apply(step);
                    match step {
                        Step::PutMessage(m) => batch.put(m.clone()),
                        Step::PutUser(u) => batch.put(u.clone()),
                        Step::RemoveMessage(id) => batch.remove(&MessagePrimaryKey(*id)),
                        Step::RemoveUser(n) => batch.remove(&UserPrimaryKey(n.clone())),
                    };
                }
                store.apply(batch).unwrap();
            }
            Op::PutMany(messages) => {
                for m in messages {
                    reference.apply(&Step::PutMessage(m.clone()));
                }
                assert_eq!(store.put_many(messages).unwrap(), messages.len());
            }
            Op::Transaction { steps, commit } => {
                let mut inside = reference.clone();
                let result = store.write(|tx| {
                    for step in steps {
                        let expected = inside.apply(step);
                        assert_eq!(apply_in_tx(tx, step)?, expected, "{kind:?}: {step:?}");
                    }
                    // Reads inside the transaction see its writes.
                    let all: Vec<Message> = inside.messages.values().cloned().collect();
                    assert_eq!(tx.range::<Message>(..)?, all, "{kind:?}: inside");
                    if *commit {
                        Ok(())
                    } else {
                        Err(StoreError::aborted("rolled back on purpose"))
                    }
                });
                if *commit {
                    result.unwrap();
                    reference = inside;
                } else {
                    assert!(matches!(result, Err(StoreError::Aborted(_))));
                }
            }
        }
        check(store, &reference, kind);
    }
}

proptest! {
    #[test]
    fn every_backend_agrees_with_the_reference(ops in prop::collection::vec(op(), 1..24)) {
        for kind in BACKENDS {
            let opened = open(kind, false);
            run(&ops, &opened, kind);
        }
    }
}
