use netabase_macros::{NetabaseModel, netabase_definition_module};

/// Ordered and hashable, but not serialisable: cannot be a key.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Opaque(pub u8);

#[netabase_definition_module(ChatDefinition, ChatKeys)]
pub mod chat {
    use super::*;

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        #[primary_key]
        pub id: u64,
        #[secondary_key]
        #[serde(skip)]
        pub author: Opaque,
    }

    /// Serialisable, but a float has no total order: cannot be a key either.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Score {
        #[primary_key]
        pub value: f64,
    }
}

fn main() {}
