use netabase_macros::NetabaseModel;

#[derive(NetabaseModel, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Message {
    #[primary_key]
    pub id: u64,
}

fn main() {}
