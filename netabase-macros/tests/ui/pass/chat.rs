//! The shape of the crate documentation, under strict lints: the generated code adds no
//! warnings to a crate that denies them.
#![deny(warnings, missing_docs, unreachable_pub, rust_2018_idioms)]
#![forbid(unsafe_code)]

use netabase_core::model::{NetabaseDefinition, NetabaseModel, record_key};
use netabase_macros::{NetabaseModel, netabase_definition_module};

/// The chat definition.
#[netabase_definition_module(ChatDefinition, ChatKeys)]
pub mod chat {
    use super::*;

    /// A message.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        /// Id.
        #[primary_key]
        pub id: u64,
        /// Author.
        #[secondary_key]
        pub author: String,
        /// Text.
        pub text: String,
    }

    /// A user.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct User {
        /// Name.
        #[primary_key]
        pub name: String,
        /// E-mail address.
        #[secondary_key]
        pub email: String,
    }
}

use chat::{ChatDefinition, ChatKeys, Message, MessagePrimaryKey, UserPrimaryKey};

fn main() {
    let message = Message {
        id: 1,
        author: "ada".to_owned(),
        text: "hi".to_owned(),
    };
    let value = ChatDefinition::from(message.clone());
    assert_eq!(value.record_key(), record_key(&MessagePrimaryKey(1)));
    assert_eq!(message.primary_key(), MessagePrimaryKey(1));
    let _keys: <ChatDefinition as NetabaseDefinition>::Keys =
        ChatKeys::from(UserPrimaryKey("ada".to_owned()));
    assert_eq!(Message::try_from(value), Ok(message));
}
