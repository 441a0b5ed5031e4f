use netabase_macros::netabase_definition_module;

#[netabase_definition_module(ChatDefinition)]
pub mod missing_keys_name {}

#[netabase_definition_module(ChatDefinition, ChatKeys, version = 2)]
pub mod unknown_option {}

#[netabase_definition_module(ChatDefinition, ChatKeys, schema_version = -1)]
pub mod negative_version {}

#[netabase_definition_module(ChatDefinition, ChatKeys)]
pub mod no_models {
    pub struct NotAModel;
}

fn main() {}
