use netabase_macros::{NetabaseModel, netabase_definition_module};

#[netabase_definition_module(ChatDefinition, ChatKeys)]
pub mod chat {
    use super::*;

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        #[primary_key]
        pub id: u64,
        #[primary_key]
        pub author: String,
    }
}

fn main() {}
