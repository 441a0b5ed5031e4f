use std::time::Instant;

use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;

type Input = KvInput<String, String>;
type Output = KvOutput<String>;
type Op = Operation<Input, Output>;
type Store = BTreeMap<String, Vec<String>>;

const PLENTY: Budget = Budget::steps(10_000_000);

fn done(client: u64, call: u64, ret: u64, input: Input, output: Output) -> Op {
    Operation::completed(client, input, call, ret, output)
}

fn put(key: &str, value: &str) -> Input {
    KvInput::put(key, value)
}

fn get(key: &str) -> Input {
    KvInput::get(key)
}

fn found(value: &str) -> Output {
    KvOutput::found(value)
}

fn list(values: &[&str]) -> Output {
    KvOutput::List(values.iter().map(|v| v.to_string()).collect())
}

fn cas(key: &str, expected: Option<&str>, new: Option<&str>) -> Input {
    KvInput::compare_and_set(key, expected.map(str::to_owned), new.map(str::to_owned))
}

fn verdict(history: &[Op]) -> Verdict {
    check(&KvModel::new(), history, PLENTY)
}

fn assert_linearizable(history: &[Op]) {
    let verdict = verdict(history);
    assert!(verdict.is_linearizable(), "{verdict}\n{history:#?}");
}

fn counterexample(history: &[Op]) -> Counterexample {
    match verdict(history) {
        Verdict::NotLinearizable(counterexample) => *counterexample,
        other => panic!("expected not linearizable, got {other}\n{history:#?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Hand-written histories.

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        done(1, 0, 1, get("x"), KvOutput::absent()),
        done(1, 2, 3, put("x", "1"), KvOutput::Ok),
        done(1, 4, 5, get("x"), found("1")),
        done(2, 6, 7, put("x", "2"), KvOutput::Ok),
        done(1, 8, 9, get("x"), found("2")),
        done(2, 10, 11, KvInput::remove("x"), KvOutput::Ok),
        done(1, 12, 13, get("x"), KvOutput::absent()),
        done(1, 14, 15, get("x"), list(&[])),
    ]);
}

#[test]
fn overlapping_writes_may_take_effect_in_either_order() {
    let writes = [
        done(1, 0, 10, put("x", "1"), KvOutput::Ok),
        done(2, 0, 10, put("x", "2"), KvOutput::Ok),
    ];
    for last in ["1", "2"] {
        let mut history = writes.to_vec();
        history.push(done(3, 11, 12, get("x"), found(last)));
        assert_linearizable(&history);
    }
    // Reads during the writes see 2 and then 1: the writes took effect as 2, 1.
    let mut history = writes.to_vec();
    history.push(done(3, 1, 5, get("x"), found("2")));
    history.push(done(3, 6, 9, get("x"), found("1")));
    assert_linearizable(&history);
    // After that, seeing 2 again is impossible.
    history.push(done(3, 11, 12, get("x"), found("2")));
    let counterexample = counterexample(&history);
    assert_eq!(counterexample.partition, "key \"x\"");
    assert_eq!(
        counterexample.core,
        vec![2, 3, 4],
        "{}",
        counterexample.explanation
    );
}

#[test]
fn stale_read_is_not_linearizable() {
    let history = [
        done(1, 0, 1, put("x", "1"), KvOutput::Ok),
        done(1, 2, 3, put("x", "2"), KvOutput::Ok),
        done(2, 4, 5, get("x"), found("1")),
    ];
    let counterexample = counterexample(&history);
    assert_eq!(counterexample.core, vec![0, 1, 2]);
    assert_eq!(counterexample.linearized, vec![0, 1]);
    assert_eq!(counterexample.unplaced, vec![2]);
    assert!(
        counterexample.explanation.contains("#2 client 2 [4, 5]"),
        "{}",
        counterexample.explanation
    );
    // Had the read overlapped the second write, it would be fine.
    let mut overlapping = history.to_vec();
    overlapping[2].call = 3;
    assert_linearizable(&overlapping);
}

#[test]
fn read_of_a_value_never_written_is_not_linearizable() {
    let history = [
        done(1, 0, 10, put("x", "1"), KvOutput::Ok),
        done(2, 0, 10, get("x"), found("7")),
        done(3, 0, 10, put("y", "7"), KvOutput::Ok),
    ];
    let counterexample = counterexample(&history);
    assert_eq!(counterexample.core, vec![1]);
    assert_eq!(counterexample.relaxed, vec![0]);
}

#[test]
fn lost_write_is_detected() {
    assert!(
        !verdict(&[
            done(1, 0, 1, put("x", "1"), KvOutput::Ok),
            done(2, 2, 3, get("x"), KvOutput::absent()),
        ])
        .is_linearizable()
    );
    // A lost append.
    assert!(
        !verdict(&[
            done(1, 0, 1, KvInput::append("x", "a"), KvOutput::Ok),
            done(1, 2, 3, KvInput::append("x", "b"), KvOutput::Ok),
            done(2, 4, 5, get("x"), list(&["a"])),
        ])
        .is_linearizable()
    );
}

#[test]
fn compare_and_set_swaps_only_on_a_match() {
    let mut history = vec![
        done(1, 0, 1, cas("x", None, Some("1")), KvOutput::Swapped(true)),
        done(
            1,
            2,
            3,
            cas("x", Some("1"), Some("2")),
            KvOutput::Swapped(true),
        ),
        done(
            1,
            4,
            5,
            cas("x", Some("1"), Some("3")),
            KvOutput::Swapped(false),
        ),
        done(
            1,
            6,
            7,
            cas("x", Some("9"), None),
            KvOutput::Cas {
                swapped: false,
                previous: Some("2".into()),
            },
        ),
        done(1, 8, 9, get("x"), found("2")),
        done(
            1,
            10,
            11,
            cas("x", Some("2"), None),
            KvOutput::Cas {
                swapped: true,
                previous: Some("2".into()),
            },
        ),
        done(1, 12, 13, get("x"), KvOutput::absent()),
    ];
    assert_linearizable(&history);

    let mutations = [
        // A failing swap reported as a success, and the other way round.
        (2, KvOutput::Swapped(true)),
        (1, KvOutput::Swapped(false)),
        // The wrong previous value.
        (
            3,
            KvOutput::Cas {
                swapped: false,
                previous: Some("1".into()),
            },
        ),
        // A swap that did not happen, seen by the read.
        (4, found("3")),
    ];
    for (index, output) in mutations {
        let saved = history[index].output.replace(output);
        assert!(!verdict(&history).is_linearizable(), "mutated #{index}");
        history[index].output = saved;
    }
}

#[test]
fn appends_keep_their_order() {
    let append = |client, call, ret, value: &str| {
        done(client, call, ret, KvInput::append("l", value), KvOutput::Ok)
    };
    // Sequential appends: only one order.
    let sequential = [append(1, 0, 1, "a"), append(1, 2, 3, "b")];
    for (seen, ok) in [(&["a", "b"][..], true), (&["b", "a"][..], false)] {
        let mut history = sequential.to_vec();
        history.push(done(2, 4, 5, get("l"), list(seen)));
        assert_eq!(verdict(&history).is_linearizable(), ok, "{seen:?}");
    }
    // Concurrent appends: either order, but one order for everyone.
    let concurrent = [append(1, 0, 10, "a"), append(2, 0, 10, "b")];
    for seen in [&["a", "b"][..], &["b", "a"][..]] {
        let mut history = concurrent.to_vec();
        history.push(done(3, 11, 12, get("l"), list(seen)));
        assert_linearizable(&history);
    }
    let mut history = concurrent.to_vec();
    history.push(done(3, 1, 5, get("l"), list(&["a"])));
    history.push(done(3, 6, 9, get("l"), list(&["b", "a"])));
    assert!(!verdict(&history).is_linearizable());
    // A one-element list reads as a value too.
    assert_linearizable(&[append(1, 0, 1, "a"), done(2, 2, 3, get("l"), found("a"))]);
}

#[test]
fn unknown_outcomes_may_or_may_not_take_effect() {
    let write = Operation::unknown(1, put("x", "1"), 10);
    // It took effect.
    assert_linearizable(&[write.clone(), done(2, 20, 21, get("x"), found("1"))]);
    // It did not.
    assert_linearizable(&[write.clone(), done(2, 20, 21, get("x"), KvOutput::absent())]);
    // It took effect late: after a read that missed it.
    assert_linearizable(&[
        write.clone(),
        done(2, 20, 21, get("x"), KvOutput::absent()),
        done(2, 22, 23, get("x"), found("1")),
    ]);
    // Once seen, it cannot be undone.
    assert!(
        !verdict(&[
            write.clone(),
            done(2, 20, 21, get("x"), found("1")),
            done(2, 22, 23, get("x"), KvOutput::absent()),
        ])
        .is_linearizable()
    );
    // A read that finished before the write was called cannot see it...
    assert!(!verdict(&[write.clone(), done(2, 0, 5, get("x"), found("1"))]).is_linearizable());
    // ...but one that was still running after the call can.
    assert_linearizable(&[write.clone(), done(2, 0, 11, get("x"), found("1"))]);
    // A client that gave up at 12 does not stop the write from taking effect later.
    let mut timed_out = write.clone();
    timed_out.ret = Some(12);
    assert_linearizable(&[
        timed_out,
        done(2, 20, 21, get("x"), KvOutput::absent()),
        done(2, 22, 23, get("x"), found("1")),
    ]);
    // An output without a return time: it did take effect, at some time after its call.
    let mut late = write;
    late.output = Some(KvOutput::Ok);
    assert_linearizable(&[
        late.clone(),
        done(2, 20, 21, get("x"), KvOutput::absent()),
        done(2, 22, 23, get("x"), found("1")),
    ]);
    assert!(
        !verdict(&[
            late,
            done(2, 20, 21, get("x"), found("1")),
            done(2, 22, 23, get("x"), KvOutput::absent()),
        ])
        .is_linearizable()
    );
}

#[test]
fn partitions_are_checked_separately() {
    let history = [
        done(1, 0, 1, put("x", "1"), KvOutput::Ok),
        done(1, 0, 1, put("y", "1"), KvOutput::Ok),
        done(2, 2, 3, get("x"), found("1")),
        done(2, 4, 5, get("y"), KvOutput::absent()),
    ];
    let counterexample = counterexample(&history);
    assert_eq!(counterexample.partition, "key \"y\"");
    assert_eq!(counterexample.core, vec![1, 3]);
}

#[test]
fn shrinking_finds_a_small_core_in_a_long_history() {
    let mut history: Vec<Op> = (0..12)
        .map(|i| done(1, 2 * i, 2 * i + 1, put("x", &i.to_string()), KvOutput::Ok))
        .collect();
    history.push(done(2, 100, 101, get("x"), found("5")));
    // Operations after the failure are cut off.
    history.push(done(2, 102, 103, put("x", "5"), KvOutput::Ok));
    let counterexample = counterexample(&history);
    // The write of 5, one known write after it, and the read.
    let core = &counterexample.core;
    assert_eq!(core.len(), 3, "{}", counterexample.explanation);
    assert!(core[0] == 5 && core[1] > 5 && core[2] == 12, "{core:?}");
    assert!(!counterexample.relaxed.contains(&13));
    assert_witness(&history, &counterexample);
}

#[test]
fn return_before_call_is_an_error() {
    let history = [
        done(1, 0, 1, put("x", "1"), KvOutput::Ok),
        done(1, 5, 4, get("x"), found("1")),
    ];
    assert_eq!(
        verdict(&history),
        Verdict::InvalidHistory(HistoryError::ReturnBeforeCall {
            index: 1,
            call: 5,
            ret: 4
        })
    );
}

#[test]
fn out_of_budget_is_reported() {
    let history = generate(1, 200, 3, 3, 0);
    assert!(verdict(&history).is_linearizable());
    let verdict = check(&KvModel::new(), &history, Budget::steps(50));
    assert!(
        matches!(verdict, Verdict::OutOfBudget { steps: 50, .. }),
        "{verdict:?}"
    );
    assert!(!verdict.is_linearizable());
    let verdict = check(&KvModel::new(), &history, Budget::deadline(Instant::now()));
    assert!(
        matches!(verdict, Verdict::OutOfBudget { .. }),
        "{verdict:?}"
    );
    let verdict = check(
        &KvModel::new(),
        &history,
        Budget::steps(u64::MAX).with_deadline(Instant::now() + std::time::Duration::from_secs(600)),
    );
    assert!(verdict.is_linearizable(), "{verdict}");
}

#[test]
fn ten_thousand_operations_fit_a_step_budget() {
    // 10,000 operations over 10 keys from 5 clients, about 1% with unknown outcomes.
    let history = generate(2024, 10_000, 5, 10, 10);
    assert_eq!(history.len(), 10_000);
    let budget = Budget::steps(200_000);
    let verdict = check(&KvModel::new(), &history, budget);
    assert!(verdict.is_linearizable(), "{verdict}");
    // A read of a value never written, late in the history, is found.
    let mut broken = history.clone();
    let read = broken
        .iter()
        .rposition(|op| matches!(op.input, KvInput::Get { .. }) && op.output.is_some())
        .expect("a read");
    broken[read].output = Some(found("never"));
    match check(&KvModel::new(), &broken, Budget::steps(5_000_000)) {
        Verdict::NotLinearizable(counterexample) => {
            assert!(counterexample.core.contains(&read));
            assert!(counterexample.unplaced.contains(&read));
        }
        other => panic!("{other}"),
    }
}

// ---------------------------------------------------------------------------------------
// Generated histories.

/// The store's sequential specification, written independently of the model: every legal
/// output of `input`, after applying it to `store`.
fn legal_outputs(store: &mut Store, input: &Input) -> Vec<Output> {
    match input {
        KvInput::Put { key, value } => {
            store.insert(key.clone(), vec![value.clone()]);
            vec![KvOutput::Ok]
        }
        KvInput::Remove { key } => {
            store.remove(key);
            vec![KvOutput::Ok]
        }
        KvInput::Append { key, value } => {
            store.entry(key.clone()).or_default().push(value.clone());
            vec![KvOutput::Ok]
        }
        KvInput::Get { key } => {
            let held = store.get(key).cloned().unwrap_or_default();
            let mut outputs = vec![KvOutput::List(held.clone())];
            if held.len() <= 1 {
                outputs.push(KvOutput::Value(held.into_iter().next()));
            }
            outputs
        }
        KvInput::CompareAndSet { key, expected, new } => {
            let held = store.get(key).cloned().unwrap_or_default();
            let previous = match held.as_slice() {
                [] => Some(None),
                [one] => Some(Some(one.clone())),
                _ => None,
            };
            let swapped = previous.as_ref() == Some(expected);
            if swapped {
                match new {
                    Some(value) => store.insert(key.clone(), vec![value.clone()]),
                    None => store.remove(key),
                };
            }
            let mut outputs = vec![KvOutput::Swapped(swapped)];
            if let Some(previous) = previous {
                outputs.push(KvOutput::Cas { swapped, previous });
            }
            outputs
        }
    }
}

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    rng.next_u64() % n
}

fn random_input(rng: &mut ChaCha8Rng, keys: u64, values: u64) -> Input {
    let key = format!("k{}", below(rng, keys));
    let value = |rng: &mut ChaCha8Rng| below(rng, values).to_string();
    match below(rng, 20) {
        0..=7 => KvInput::Get { key },
        8..=12 => KvInput::Put {
            value: value(rng),
            key,
        },
        13..=14 => KvInput::Remove { key },
        15..=17 => KvInput::CompareAndSet {
            expected: (below(rng, 4) != 0).then(|| value(rng)),
            new: (below(rng, 4) != 0).then(|| value(rng)),
            key,
        },
        _ => KvInput::Append {
            value: value(rng),
            key,
        },
    }
}

/// A client of the generated run.
enum Client {
    Idle,
    /// Its operation was called and has not taken effect.
    Called(usize),
    /// Its operation took effect with this output and has not returned.
    Applied(usize, Output),
}

/// A history that is linearizable by construction: `clients` clients issue `ops`
/// operations in total against a sequential store, under a random interleaving of calls,
/// effects and returns. About `unknown_per_mille` of the operations time out: their outcome
/// is unknown, and they take effect later, or never.
fn generate(seed: u64, ops: usize, clients: u64, keys: u64, unknown_per_mille: u64) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut store = Store::new();
    let mut history: Vec<Op> = Vec::with_capacity(ops);
    let mut states: Vec<Client> = (0..clients).map(|_| Client::Idle).collect();
    let mut orphans: Vec<Input> = Vec::new();
    let mut clock = 0;
    let values = 8;
    loop {
        clock += 1;
        if !orphans.is_empty() && below(&mut rng, 8) == 0 {
            let orphan = orphans.swap_remove(below(&mut rng, orphans.len() as u64) as usize);
            if below(&mut rng, 2) == 0 {
                legal_outputs(&mut store, &orphan);
            }
            continue;
        }
        let client = below(&mut rng, clients) as usize;
        match std::mem::replace(&mut states[client], Client::Idle) {
            Client::Idle => {
                if history.len() == ops {
                    if states.iter().all(|state| matches!(state, Client::Idle)) {
                        return history;
                    }
                    continue;
                }
                let input = random_input(&mut rng, keys, values);
                history.push(Operation::unknown(client as u64, input, clock));
                states[client] = Client::Called(history.len() - 1);
            }
            Client::Called(index) => {
                if below(&mut rng, 1000) < unknown_per_mille {
                    // Timed out: still in flight.
                    history[index].ret = Some(clock);
                    orphans.push(history[index].input.clone());
                } else {
                    let outputs = legal_outputs(&mut store, &history[index].input);
                    let output = outputs[below(&mut rng, outputs.len() as u64) as usize].clone();
                    states[client] = Client::Applied(index, output);
                }
            }
            Client::Applied(index, output) => {
                history[index].ret = Some(clock);
                history[index].output = Some(output);
            }
        }
    }
}

/// Whether `history` has a linearization, by trying every order that respects real time.
fn brute_force(history: &[Op]) -> bool {
    fn place(history: &[Op], placed: &mut [bool], store: &Store) -> bool {
        let waiting = |placed: &[bool], j: usize| !placed[j] && history[j].output.is_some();
        if !(0..history.len()).any(|j| waiting(placed, j)) {
            return true;
        }
        for i in 0..history.len() {
            if placed[i] {
                continue;
            }
            // Some other operation must come first.
            let blocked = (0..history.len()).any(|j| {
                j != i
                    && waiting(placed, j)
                    && history[j].ret.is_some_and(|ret| ret < history[i].call)
            });
            if blocked {
                continue;
            }
            let mut next = store.clone();
            let outputs = legal_outputs(&mut next, &history[i].input);
            let legal = match &history[i].output {
                Some(output) => outputs.contains(output),
                None => true,
            };
            if legal {
                placed[i] = true;
                let found = place(history, placed, &next);
                placed[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    place(history, &mut vec![false; history.len()], &Store::new())
}

/// The history a counterexample stands for: the core's outputs, the other operations of
/// the witness with unknown outcomes.
fn witness(history: &[Op], counterexample: &Counterexample) -> Vec<Op> {
    let mut ops: Vec<usize> = counterexample
        .core
        .iter()
        .chain(&counterexample.relaxed)
        .copied()
        .collect();
    ops.sort_unstable();
    ops.into_iter()
        .map(|i| {
            let mut op = history[i].clone();
            if !counterexample.core.contains(&i) {
                op.output = None;
            }
            op
        })
        .collect()
}

fn assert_witness(history: &[Op], counterexample: &Counterexample) {
    let witness = witness(history, counterexample);
    assert!(
        !verdict(&witness).is_linearizable(),
        "the witness is linearizable: {witness:#?}"
    );
}

/// A tiny random history: generated by construction, then with some outputs replaced.
fn tiny(seed: u64) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ops = 1 + below(&mut rng, 6) as usize;
    let mut history = generate(rng.next_u64(), ops, 1 + below(&mut rng, 3), 2, 150);
    for op in &mut history {
        if op.output.is_some() && below(&mut rng, 4) == 0 {
            // An output the operation could have had in some other state.
            let mut store = Store::new();
            for key in ["k0", "k1"] {
                legal_outputs(&mut store, &random_input(&mut rng, 1, 3));
                if let Some(values) = store.remove("k0") {
                    store.insert(key.to_owned(), values);
                }
            }
            let outputs = legal_outputs(&mut store, &op.input);
            op.output = Some(outputs[below(&mut rng, outputs.len() as u64) as usize].clone());
        }
    }
    history
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn histories_run_against_a_sequential_store_are_linearizable(
        seed: u64, ops in 1usize..40, clients in 1u64..5, keys in 1u64..4, unknown in 0u64..200
    ) {
        let history = generate(seed, ops, clients, keys, unknown);
        let verdict = verdict(&history);
        prop_assert!(verdict.is_linearizable(), "{}", verdict);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(
        seed: u64, ops in 1usize..40, clients in 1u64..5, keys in 1u64..4, unknown in 0u64..200,
        pick: usize, as_list: bool
    ) {
        let mut history = generate(seed, ops, clients, keys, unknown);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].input, KvInput::Get { .. }) && history[i].output.is_some())
            .collect();
        prop_assume!(!reads.is_empty());
        let read = reads[pick % reads.len()];
        history[read].output = Some(if as_list { list(&["never"]) } else { found("never") });
        let counterexample = counterexample(&history);
        prop_assert!(counterexample.core.contains(&read));
        assert_witness(&history, &counterexample);
    }

    #[test]
    fn agrees_with_brute_force_on_tiny_histories(seed: u64) {
        let history = tiny(seed);
        let expected = brute_force(&history);
        let verdict = verdict(&history);
        prop_assert_eq!(verdict.is_linearizable(), expected, "{}\n{:#?}", verdict, history);
        if let Verdict::NotLinearizable(counterexample) = verdict {
            let witness = witness(&history, &counterexample);
            prop_assert!(!brute_force(&witness), "witness {:#?}", witness);
        }
    }
}

#[test]
fn tiny_histories_include_both_verdicts() {
    let linearizable = (0..200).filter(|&seed| brute_force(&tiny(seed))).count();
    assert!((20..180).contains(&linearizable), "{linearizable} of 200");
}

#[test]
fn verdicts_are_deterministic() {
    let mut history = generate(9, 2_000, 5, 4, 20);
    let read = history
        .iter()
        .position(|op| matches!(op.input, KvInput::Get { .. }) && op.output.is_some())
        .expect("a read");
    history[read].output = Some(found("never"));
    let first = verdict(&history);
    assert!(!first.is_linearizable());
    for _ in 0..3 {
        assert_eq!(verdict(&history), first);
    }
}
