//! The definitions the tests expand.

use netabase_macros::{NetabaseModel, netabase_definition_module};

/// A helper the definition modules reach through `use super::*`.
pub fn shout(text: &str) -> String {
    text.to_uppercase()
}

/// The chat example: a `u64`-keyed and a `String`-keyed model, one secondary key each.
#[netabase_definition_module(ChatDefinition, ChatKeys)]
pub mod chat {
    use super::*;

    /// A chat message.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Message {
        /// Message id.
        #[primary_key]
        pub id: u64,
        /// Who wrote it.
        #[secondary_key]
        pub author: String,
        /// What it says.
        pub text: String,
    }

    /// A chat user.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct User {
        /// User name.
        #[primary_key]
        pub name: String,
        /// E-mail address.
        #[secondary_key]
        pub email: String,
    }

    /// Items that are not models stay as they are and can use what the parent module has.
    pub fn loud_text(message: &Message) -> String {
        shout(&message.text)
    }
}

/// A second definition at schema version 2: several secondary keys, none, and a composite
/// primary key.
#[netabase_definition_module(InventoryDefinition, InventoryKeys, schema_version = 2)]
pub mod inventory {
    use super::*;

    /// A product.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Product {
        /// Stock-keeping unit.
        #[primary_key]
        pub sku: u32,
        /// Product category.
        #[secondary_key]
        pub category: String,
        /// Not a key.
        pub description: String,
        /// Price in cents.
        #[secondary_key]
        pub price_cents: u64,
        /// Whether any is in stock.
        #[secondary_key]
        pub in_stock: bool,
        /// A field named after a keyword.
        #[secondary_key]
        pub r#type: Option<u8>,
    }

    /// A tag without secondary keys, keyed by a `String`.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Tag {
        /// The tag itself.
        #[primary_key]
        pub label: String,
        /// How often it was used.
        pub uses: u64,
    }

    /// A shipment keyed by (warehouse, date).
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Shipment {
        /// Warehouse and day number.
        #[primary_key]
        pub id: (String, u32),
        /// Products shipped.
        pub products: Vec<u32>,
    }
}

/// A definition in a private module: its generated items are visible to this module.
#[netabase_definition_module(PrivateDefinition, PrivateKeys)]
mod private {
    #[derive(
        super::NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize,
    )]
    pub(super) struct Note {
        #[primary_key]
        pub(super) id: i64,
    }
}

/// `pub` models in a private module: the definition follows the models' visibility.
#[netabase_definition_module(HiddenDefinition, HiddenKeys)]
#[allow(unreachable_pub)] // `pub` items in a private module, on purpose
mod hidden {
    #[derive(
        super::NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize,
    )]
    pub struct Draft {
        #[primary_key]
        pub id: u32,
    }
}

/// The model id of a value of the hidden definition.
pub fn hidden_draft_model_id(id: u32) -> u16 {
    use netabase_core::model::NetabaseDefinition;
    hidden::HiddenDefinition::from(hidden::Draft { id }).model_id()
}

/// Builds a value of the private definition (which stays private to this module).
pub fn private_note_model_id(id: i64) -> u16 {
    use netabase_core::model::NetabaseDefinition;
    let note = private::PrivateDefinition::from(private::Note { id });
    assert_eq!(
        private::PrivateKeys::from(private::NotePrimaryKey(id)).model_id(),
        0
    );
    note.model_id()
}

/// A definition with a consensus model (`#[netabase(consensus)]`) beside a plain one.
#[netabase_definition_module(LedgerDefinition, LedgerKeys)]
pub mod ledger {
    use super::*;

    /// An account, written only through a consensus cluster's log.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[netabase(consensus)]
    pub struct Account {
        /// Account number.
        #[primary_key]
        pub number: u64,
        /// Balance in cents.
        pub balance: i64,
    }

    /// A note, an ordinary model.
    #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    pub struct Note {
        /// Note id.
        #[primary_key]
        pub id: u64,
    }
}
