use netabase_macros::{NetabaseModel, netabase_definition_module};

#[netabase_definition_module(ChatDefinition, ChatKeys)]
pub mod chat {
    use super::*;

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Tuple(#[primary_key] pub u64);

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub enum Choice {
        A,
    }

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Generic<T> {
        #[primary_key]
        pub id: u64,
        pub value: T,
    }

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Both {
        #[primary_key]
        #[secondary_key]
        pub id: u64,
    }

    #[cfg(any())]
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Conditional {
        #[primary_key]
        pub id: u64,
    }

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct ConditionalKey {
        #[primary_key]
        pub id: u64,
        #[cfg(any())]
        #[secondary_key]
        pub tag: String,
    }
}

fn main() {}
