// The definition of the `typed_record` target, shared with the seed generator.
#[netabase_definition_module(FuzzDefinition, FuzzKeys)]
pub mod models {
    use netabase_macros::NetabaseModel;

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        #[primary_key]
        pub id: u64,
        #[secondary_key]
        pub author: String,
        pub text: String,
        pub tags: Vec<String>,
    }

    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct User {
        #[primary_key]
        pub name: String,
        pub age: Option<u8>,
    }
}
