use netabase_core::model::{PrimaryKey, record_key};
use netabase_macros::{NetabaseModel, netabase_definition_module};

#[netabase_definition_module(ChatDefinition, ChatKeys)]
pub mod chat {
    use super::*;

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        #[primary_key]
        pub id: u64,
    }

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct User {
        #[primary_key]
        pub name: String,
    }
}

use chat::{Message, MessagePrimaryKey, UserPrimaryKey};

fn message_key_bytes<K: PrimaryKey<Model = Message>>(key: &K) -> Vec<u8> {
    key.key_bytes().unwrap()
}

fn main() {
    // A User key where a Message key is expected.
    let _ = record_key::<MessagePrimaryKey>(&UserPrimaryKey("ada".to_owned()));
    let _ = message_key_bytes(&UserPrimaryKey("ada".to_owned()));
}
