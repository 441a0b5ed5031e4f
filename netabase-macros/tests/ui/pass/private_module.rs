//! A definition in a private module with one model and no secondary keys, under strict
//! lints: the generated items are `pub(super)`, so `unreachable_pub` stays quiet.
#![deny(warnings, missing_docs, unreachable_pub)]

use netabase_core::model::{NetabaseDefinition, NetabaseModel};
use netabase_macros::netabase_definition_module;

#[netabase_definition_module(Notes, NoteKeys, schema_version = 3)]
mod notes {
    #[derive(
        netabase_macros::NetabaseModel,
        Clone,
        Debug,
        PartialEq,
        serde::Serialize,
        serde::Deserialize,
    )]
    pub(super) struct Note {
        #[primary_key]
        pub(super) id: i64,
        pub(super) body: String,
    }
}

fn main() {
    let note = notes::Note {
        id: -1,
        body: String::new(),
    };
    assert_eq!(note.primary_key(), notes::NotePrimaryKey(-1));
    assert!(note.secondary_keys().is_empty());
    let value = notes::Notes::from(note.clone());
    assert_eq!(<notes::Notes as NetabaseDefinition>::SCHEMA_VERSION, 3);
    assert_eq!(notes::Note::try_from(value), Ok(note));
    let _ = notes::NoteKeys::from(notes::NotePrimaryKey(1)).model_id();
}
