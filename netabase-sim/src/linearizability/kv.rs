//! A model of a key-value store with puts, gets, removals, compare-and-set and list append.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::marker::PhantomData;

use super::Model;

/// An operation on a key-value store.
///
/// Every key holds a list of values, or nothing. [`KvInput::Put`] and a swapping
/// [`KvInput::CompareAndSet`] make it a list of one value, [`KvInput::Append`] pushes onto
/// it, and [`KvInput::Remove`] (or a swap to `None`) deletes it. A store without appends
/// therefore behaves as a plain map of single values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvInput<K = String, V = String> {
    /// Sets the key to `value`. Output: [`KvOutput::Ok`].
    Put {
        /// The key.
        key: K,
        /// The new value.
        value: V,
    },
    /// Reads the key. Output: [`KvOutput::Value`] (when the key holds at most one value) or
    /// [`KvOutput::List`] (always).
    Get {
        /// The key.
        key: K,
    },
    /// Deletes the key. Output: [`KvOutput::Ok`].
    Remove {
        /// The key.
        key: K,
    },
    /// Sets the key to `new` (`None` deletes it) if it holds `expected` (`None`: if it is
    /// absent). Output: [`KvOutput::Swapped`] or [`KvOutput::Cas`].
    CompareAndSet {
        /// The key.
        key: K,
        /// The value the key must hold for the swap; `None` for an absent key. A key
        /// holding a list of two or more values matches no expected value.
        expected: Option<V>,
        /// The value to set; `None` deletes the key.
        new: Option<V>,
    },
    /// Appends `value` to the key's list (an absent key starts an empty list). Output:
    /// [`KvOutput::Ok`].
    Append {
        /// The key.
        key: K,
        /// The value appended.
        value: V,
    },
}

impl<K, V> KvInput<K, V> {
    /// A [`KvInput::Put`].
    pub fn put(key: impl Into<K>, value: impl Into<V>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A [`KvInput::Get`].
    pub fn get(key: impl Into<K>) -> Self {
        Self::Get { key: key.into() }
    }

    /// A [`KvInput::Remove`].
    pub fn remove(key: impl Into<K>) -> Self {
        Self::Remove { key: key.into() }
    }

    /// A [`KvInput::CompareAndSet`].
    pub fn compare_and_set(key: impl Into<K>, expected: Option<V>, new: Option<V>) -> Self {
        Self::CompareAndSet {
            key: key.into(),
            expected,
            new,
        }
    }

    /// A [`KvInput::Append`].
    pub fn append(key: impl Into<K>, value: impl Into<V>) -> Self {
        Self::Append {
            key: key.into(),
            value: value.into(),
        }
    }

    /// The key the operation touches.
    pub fn key(&self) -> &K {
        match self {
            Self::Put { key, .. }
            | Self::Get { key }
            | Self::Remove { key }
            | Self::CompareAndSet { key, .. }
            | Self::Append { key, .. } => key,
        }
    }
}

/// The result of a [`KvInput`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput<V = String> {
    /// A put, removal or append succeeded.
    Ok,
    /// A get found this value (`None`: the key was absent). Legal only when the key holds
    /// at most one value.
    Value(Option<V>),
    /// A get found this list (empty: the key was absent).
    List(Vec<V>),
    /// A compare-and-set swapped (`true`) or did not (`false`).
    Swapped(bool),
    /// A compare-and-set's result with the value it compared against.
    Cas {
        /// Whether it swapped.
        swapped: bool,
        /// The value the key held when the operation took effect, before any swap
        /// (`None`: absent).
        previous: Option<V>,
    },
}

impl<V> KvOutput<V> {
    /// A [`KvOutput::Value`] holding `value`.
    pub fn found(value: impl Into<V>) -> Self {
        Self::Value(Some(value.into()))
    }

    /// A [`KvOutput::Value`] for an absent key.
    pub fn absent() -> Self {
        Self::Value(None)
    }
}

/// The state of a [`KvModel`]: each present key's list of values (never empty).
pub type KvState<K, V> = BTreeMap<K, Vec<V>>;

/// The key-value store model: [`KvInput`] in, [`KvOutput`] out, [`KvState`] as state.
///
/// It partitions the history by key (keys are independent), which keeps the check fast.
/// `K` and `V` are the key and value types: `String`, `Vec<u8>`, an integer, anything
/// ordered and hashable.
pub struct KvModel<K = String, V = String> {
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> KvModel<K, V> {
    /// The model.
    pub const fn new() -> Self {
        Self { types: PhantomData }
    }
}

impl<K, V> Default for KvModel<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Clone for KvModel<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for KvModel<K, V> {}

impl<K, V> Debug for KvModel<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KvModel")
    }
}

/// The single value a key's list stands for: `Some(None)` when absent, `Some(Some(v))` for
/// a list of one, `None` for a longer list.
fn single<V>(list: Option<&Vec<V>>) -> Option<Option<&V>> {
    match list.map(Vec::as_slice) {
        None => Some(None),
        Some([one]) => Some(Some(one)),
        Some(_) => None,
    }
}

/// The state after `input` takes effect in `state`: the store's sequential specification.
/// `None` for an input that does not change the state (a get, a failing swap).
fn apply<K, V>(state: &KvState<K, V>, input: &KvInput<K, V>) -> Option<KvState<K, V>>
where
    K: Clone + Ord,
    V: Clone + Eq,
{
    let mut next = state.clone();
    match input {
        KvInput::Get { .. } => return None,
        KvInput::Put { key, value } => {
            next.insert(key.clone(), vec![value.clone()]);
        }
        KvInput::Remove { key } => {
            next.remove(key);
        }
        KvInput::Append { key, value } => next.entry(key.clone()).or_default().push(value.clone()),
        KvInput::CompareAndSet { key, expected, new } => {
            if single(state.get(key)) != Some(expected.as_ref()) {
                return None;
            }
            match new {
                Some(value) => {
                    next.insert(key.clone(), vec![value.clone()]);
                }
                None => {
                    next.remove(key);
                }
            }
        }
    }
    Some(next)
}

impl<K, V> Model for KvModel<K, V>
where
    K: Clone + Ord + Hash + Debug,
    V: Clone + Eq + Hash + Debug,
{
    type State = KvState<K, V>;
    type Input = KvInput<K, V>;
    type Output = KvOutput<V>;

    fn init(&self) -> Self::State {
        KvState::new()
    }

    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State> {
        match (input, output) {
            (KvInput::Get { key }, KvOutput::Value(seen)) => {
                (single(state.get(key)) == Some(seen.as_ref())).then(|| state.clone())
            }
            (KvInput::Get { key }, KvOutput::List(seen)) => {
                let held = state.get(key).map_or(&[][..], Vec::as_slice);
                (held == seen.as_slice()).then(|| state.clone())
            }
            (
                KvInput::Put { .. } | KvInput::Remove { .. } | KvInput::Append { .. },
                KvOutput::Ok,
            ) => apply(state, input),
            (KvInput::CompareAndSet { key, expected, .. }, KvOutput::Swapped(swapped)) => {
                let matches = single(state.get(key)) == Some(expected.as_ref());
                match (matches, swapped) {
                    (true, true) => apply(state, input),
                    (false, false) => Some(state.clone()),
                    _ => None,
                }
            }
            (KvInput::CompareAndSet { key, expected, .. }, KvOutput::Cas { swapped, previous }) => {
                let held = single(state.get(key));
                if held != Some(previous.as_ref()) {
                    return None;
                }
                match (held == Some(expected.as_ref()), swapped) {
                    (true, true) => apply(state, input),
                    (false, false) => Some(state.clone()),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn step_unknown(&self, state: &Self::State, input: &Self::Input) -> Vec<Self::State> {
        // Gets and failing swaps leave the state as it is: nothing to add.
        apply(state, input)
            .filter(|next| next != state)
            .into_iter()
            .collect()
    }

    fn partition(&self, input: &Self::Input) -> String {
        format!("key {:?}", input.key())
    }
}
