use netabase_macros::{NetabaseModel, netabase_definition_module};

#[netabase_definition_module(LedgerDefinition, LedgerKeys)]
pub mod ledger {
    use super::*;

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[netabase(replicated)]
    pub struct Account {
        #[primary_key]
        pub number: u64,
    }
}

fn main() {}
