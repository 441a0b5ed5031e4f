//! The records the `netabase` node stores and publishes: raw key-value records and JSON
//! documents, each under a string key.

/// The definition of the node's records. Its name, `CliDefinition`, is part of every DHT
/// key the node writes (`/nb/CliDefinition/Raw/<key>`, `/nb/CliDefinition/Document/<key>`),
/// so any program built on the same definition reads and writes the same records.
// The macro generates public items without docs of their own; they are documented here.
#[allow(missing_docs)]
#[netabase::netabase_definition_module(CliDefinition, CliKeys)]
pub mod definition {
    use netabase::NetabaseModel;

    /// A raw record: bytes under a string key.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct Raw {
        /// The key (the primary key).
        #[primary_key]
        pub key: String,
        /// The value.
        pub value: Vec<u8>,
    }

    /// A JSON document under a string key, kept as its compact JSON text.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct Document {
        /// The key (the primary key).
        #[primary_key]
        pub key: String,
        /// The document, as compact JSON text.
        pub json: String,
    }
}

pub use definition::{CliDefinition, Document, DocumentPrimaryKey, Raw, RawPrimaryKey};
