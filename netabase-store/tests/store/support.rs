//! A hand-written definition: what `#[netabase_definition_module]` generates, spelled out.
//!
//! `Chat` has three models: `Message` (u64 primary key, two secondary keys), `User` (String
//! primary key, one secondary key) and `Setting` (tuple primary key, no secondary key).

use netabase_store::core::model::{
    KeyEncodeError, ModelError, ModelId, ModelInfo, NetabaseDefinition, NetabaseModel, PrimaryKey,
    SecondaryKey, decode_value, encode_key, encode_secondary_keys, encode_value,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) id: u64,
    pub(crate) author: String,
    pub(crate) channel: u32,
    pub(crate) text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) country: String,
    pub(crate) age: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Setting {
    pub(crate) key: (u32, String),
    pub(crate) value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct MessagePrimaryKey(pub(crate) u64);
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct MessageAuthorSecondaryKey(pub(crate) String);
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct MessageChannelSecondaryKey(pub(crate) u32);
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MessageSecondaryKeys {
    Author(MessageAuthorSecondaryKey),
    Channel(MessageChannelSecondaryKey),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct UserPrimaryKey(pub(crate) String);
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct UserCountrySecondaryKey(pub(crate) String);
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum UserSecondaryKeys {
    Country(UserCountrySecondaryKey),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct SettingPrimaryKey(pub(crate) (u32, String));
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SettingSecondaryKeys {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ChatDefinition {
    Message(Message),
    User(User),
    Setting(Setting),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ChatKeys {
    Message(MessagePrimaryKey),
    User(UserPrimaryKey),
    Setting(SettingPrimaryKey),
}

impl PrimaryKey for MessagePrimaryKey {
    type Model = Message;
}
impl PrimaryKey for UserPrimaryKey {
    type Model = User;
}
impl PrimaryKey for SettingPrimaryKey {
    type Model = Setting;
}

impl SecondaryKey for MessageSecondaryKeys {
    type Model = Message;
    fn index(&self) -> u16 {
        match self {
            MessageSecondaryKeys::Author(_) => 0,
            MessageSecondaryKeys::Channel(_) => 1,
        }
    }
    fn value_bytes(&self) -> Result<Vec<u8>, KeyEncodeError> {
        match self {
            MessageSecondaryKeys::Author(k) => encode_key(&k.0),
            MessageSecondaryKeys::Channel(k) => encode_key(&k.0),
        }
    }
}

impl SecondaryKey for UserSecondaryKeys {
    type Model = User;
    fn index(&self) -> u16 {
        0
    }
    fn value_bytes(&self) -> Result<Vec<u8>, KeyEncodeError> {
        match self {
            UserSecondaryKeys::Country(k) => encode_key(&k.0),
        }
    }
}

impl SecondaryKey for SettingSecondaryKeys {
    type Model = Setting;
    fn index(&self) -> u16 {
        match *self {}
    }
    fn value_bytes(&self) -> Result<Vec<u8>, KeyEncodeError> {
        match *self {}
    }
}

macro_rules! conversions {
    ($($model:ident),*) => {$(
        impl From<$model> for ChatDefinition {
            fn from(value: $model) -> Self {
                ChatDefinition::$model(value)
            }
        }
        impl TryFrom<ChatDefinition> for $model {
            type Error = ChatDefinition;
            fn try_from(value: ChatDefinition) -> Result<Self, ChatDefinition> {
                match value {
                    ChatDefinition::$model(value) => Ok(value),
                    other => Err(other),
                }
            }
        }
    )*};
}
conversions!(Message, User, Setting);

impl NetabaseModel for Message {
    type Definition = ChatDefinition;
    type PrimaryKey = MessagePrimaryKey;
    type SecondaryKey = MessageSecondaryKeys;
    const ID: ModelId = 0;
    const NAME: &'static str = "Message";
    fn primary_key(&self) -> MessagePrimaryKey {
        MessagePrimaryKey(self.id)
    }
    fn secondary_keys(&self) -> Vec<MessageSecondaryKeys> {
        vec![
            MessageSecondaryKeys::Author(MessageAuthorSecondaryKey(self.author.clone())),
            MessageSecondaryKeys::Channel(MessageChannelSecondaryKey(self.channel)),
        ]
    }
}

impl NetabaseModel for User {
    type Definition = ChatDefinition;
    type PrimaryKey = UserPrimaryKey;
    type SecondaryKey = UserSecondaryKeys;
    const ID: ModelId = 1;
    const NAME: &'static str = "User";
    fn primary_key(&self) -> UserPrimaryKey {
        UserPrimaryKey(self.name.clone())
    }
    fn secondary_keys(&self) -> Vec<UserSecondaryKeys> {
        vec![UserSecondaryKeys::Country(UserCountrySecondaryKey(
            self.country.clone(),
        ))]
    }
}

impl NetabaseModel for Setting {
    type Definition = ChatDefinition;
    type PrimaryKey = SettingPrimaryKey;
    type SecondaryKey = SettingSecondaryKeys;
    const ID: ModelId = 2;
    const NAME: &'static str = "Setting";
    fn primary_key(&self) -> SettingPrimaryKey {
        SettingPrimaryKey(self.key.clone())
    }
    fn secondary_keys(&self) -> Vec<SettingSecondaryKeys> {
        Vec::new()
    }
}

impl NetabaseDefinition for ChatDefinition {
    type Keys = ChatKeys;
    const NAME: &'static str = "ChatDefinition";
    const SCHEMA_VERSION: u32 = 1;
    const MODELS: &'static [ModelInfo] = &[
        ModelInfo {
            id: 0,
            name: "Message",
            secondary_keys: &["author", "channel"],
        },
        ModelInfo {
            id: 1,
            name: "User",
            secondary_keys: &["country"],
        },
        ModelInfo {
            id: 2,
            name: "Setting",
            secondary_keys: &[],
        },
    ];

    fn model_id(&self) -> ModelId {
        match self {
            ChatDefinition::Message(_) => 0,
            ChatDefinition::User(_) => 1,
            ChatDefinition::Setting(_) => 2,
        }
    }

    fn primary_key_bytes(&self) -> Result<Vec<u8>, KeyEncodeError> {
        match self {
            ChatDefinition::Message(m) => m.key_bytes(),
            ChatDefinition::User(m) => m.key_bytes(),
            ChatDefinition::Setting(m) => m.key_bytes(),
        }
    }

    fn secondary_key_bytes(&self) -> Result<Vec<(u16, Vec<u8>)>, KeyEncodeError> {
        match self {
            ChatDefinition::Message(m) => encode_secondary_keys(m),
            ChatDefinition::User(m) => encode_secondary_keys(m),
            ChatDefinition::Setting(m) => encode_secondary_keys(m),
        }
    }

    fn encode_model(&self) -> Result<Vec<u8>, ModelError> {
        match self {
            ChatDefinition::Message(m) => encode_value(m),
            ChatDefinition::User(m) => encode_value(m),
            ChatDefinition::Setting(m) => encode_value(m),
        }
    }

    fn decode_model(model: ModelId, bytes: &[u8]) -> Result<Self, ModelError> {
        match model {
            0 => decode_value("Message", bytes).map(ChatDefinition::Message),
            1 => decode_value("User", bytes).map(ChatDefinition::User),
            2 => decode_value("Setting", bytes).map(ChatDefinition::Setting),
            other => Err(ModelError::UnknownModel(other)),
        }
    }
}

/// Shorthands for building records in tests.
pub(crate) fn message(id: u64, author: &str, channel: u32, text: &str) -> Message {
    Message {
        id,
        author: author.into(),
        channel,
        text: text.into(),
    }
}

pub(crate) fn user(name: &str, country: &str, age: u16) -> User {
    User {
        name: name.into(),
        country: country.into(),
        age,
    }
}

pub(crate) fn author(name: &str) -> MessageSecondaryKeys {
    MessageSecondaryKeys::Author(MessageAuthorSecondaryKey(name.into()))
}

pub(crate) fn channel(channel: u32) -> MessageSecondaryKeys {
    MessageSecondaryKeys::Channel(MessageChannelSecondaryKey(channel))
}

pub(crate) fn country(name: &str) -> UserSecondaryKeys {
    UserSecondaryKeys::Country(UserCountrySecondaryKey(name.into()))
}
