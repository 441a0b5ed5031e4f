//! Any bytes offered as a typed DHT record give a value or a typed error: the envelope
//! parser, the model decoder and the key check never panic, and whatever opens re-seals to
//! the same key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netabase_core::RecordKey;
use netabase_core::model::{Envelope, NetabaseDefinition};
use netabase_macros::netabase_definition_module;

#[netabase_definition_module(FuzzDefinition, FuzzKeys)]
mod models {
    use netabase_macros::NetabaseModel;

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        #[primary_key]
        pub id: u64,
        #[secondary_key]
        pub author: String,
        pub text: String,
        pub tags: Vec<String>,
    }

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct User {
        #[primary_key]
        pub name: String,
        pub age: Option<u8>,
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the key length, so that keys that match their value are reached.
    let (key_len, rest) = match data.split_first() {
        Some((n, rest)) => (usize::from(*n).min(rest.len()), rest),
        None => return,
    };
    let (key, value) = rest.split_at(key_len);
    if let Ok(envelope) = Envelope::decode(value) {
        assert_eq!(envelope.encode(), value, "a decoded envelope re-encodes to its bytes");
    }
    let Ok(key) = RecordKey::new(key) else {
        return;
    };
    if let Ok((definition, envelope)) = Envelope::open::<models::FuzzDefinition>(&key, value) {
        assert_eq!(definition.record_key().as_ref(), Ok(&key));
        let (sealed_key, _) = Envelope::seal(&definition, envelope.timestamp, envelope.origin)
            .expect("an opened value seals again");
        assert_eq!(sealed_key, key);
    }
    for model in 0..3u16 {
        let _ = models::FuzzDefinition::decode_model(model, value);
    }
});
