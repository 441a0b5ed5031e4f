use netabase_macros::{NetabaseModel, netabase_definition_module};

#[netabase_definition_module(ChatDefinition, ChatKeys)]
pub mod chat {
    use super::*;

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        pub id: u64,
        #[secondary_key]
        pub author: String,
    }
}

fn main() {}
