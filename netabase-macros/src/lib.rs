//! Definition-module and model derive macros of Netabase.
//!
//! A Netabase application describes its data as a *definition*: a module of model structs,
//! each with one primary key and any number of secondary keys. The attribute
//! [`macro@netabase_definition_module`] turns such a module into the typed API that the
//! store and the node work with, implementing the traits of `netabase_core::model`
//! (`NetabaseDefinition`, `NetabaseModel`, `PrimaryKey`, `SecondaryKey`).
//!
//! ```text
//! use netabase_macros::{netabase_definition_module, NetabaseModel};
//!
//! #[netabase_definition_module(ChatDefinition, ChatKeys)]
//! pub mod chat {
//!     use super::*;
//!
//!     #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//!     pub struct Message {
//!         #[primary_key]
//!         pub id: u64,
//!         #[secondary_key]
//!         pub author: String,
//!         pub text: String,
//!     }
//!
//!     #[derive(NetabaseModel, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//!     pub struct User {
//!         #[primary_key]
//!         pub name: String,
//!         #[secondary_key]
//!         pub email: String,
//!     }
//! }
//!
//! use chat::*;
//! use netabase_core::model::{NetabaseDefinition, NetabaseModel, record_key};
//!
//! let message = Message { id: 7, author: "ada".into(), text: "hello".into() };
//! assert_eq!(message.primary_key(), MessagePrimaryKey(7));
//! assert_eq!(
//!     message.secondary_keys(),
//!     vec![MessageSecondaryKeys::Author(MessageAuthorSecondaryKey("ada".into()))],
//! );
//! let value = ChatDefinition::from(message.clone());
//! assert_eq!(value.record_key(), record_key(&MessagePrimaryKey(7)));
//! assert_eq!(Message::try_from(value), Ok(message));
//! // record_key(&UserPrimaryKey("ada".into())) is a `User` key: where a `Message` key is
//! // expected, passing it does not compile.
//! ```
//!
//! The integration tests of this crate (`tests/macros/`) run this example and more, and
//! `tests/ui/` shows the compile errors for misuse.
//!
//! # Where the generated code finds the core
//!
//! The generated code names the traits through the crate the user depends on: the first of
//! `netabase` (as `netabase::core`), `netabase-store` (as `netabase_store::core`) and
//! `netabase-core` (as `netabase_core`) listed in the user's `Cargo.toml`, renames
//! included; `::netabase_core` if none is. Generated types derive serde through the
//! core's re-export, so the user needs serde only for the derives on their own models.
//! A crate that uses the macro inside its own library (rather than in its tests or
//! examples) needs `extern crate self as <its name>;` at its root.

mod args;
mod expand;
mod parse;
mod paths;

use proc_macro::TokenStream;
use quote::quote_spanned;
use syn::{DeriveInput, ItemMod, parse_macro_input};

/// Turns a module of models into a Netabase definition.
///
/// `#[netabase_definition_module(Definition, Keys)]` or
/// `#[netabase_definition_module(Definition, Keys, schema_version = N)]` (the schema
/// version is 1 unless given). The module's items stay as they are; every struct in it
/// with `#[derive(NetabaseModel)]` becomes a model, numbered from 0 in declaration order
/// (its `ModelId`: append new models at the end to keep ids stable). For a model
/// `Message` with `#[primary_key] id: u64` and `#[secondary_key] author: String`, the
/// module gains:
///
/// - `MessagePrimaryKey(pub u64)`: the primary key newtype (`Clone`, `Debug`, `Eq`, `Ord`,
///   `Hash`, serde, `From<u64>`), implementing `PrimaryKey<Model = Message>`. Keys of
///   different models are different types, so one cannot be passed for the other.
/// - `MessageAuthorSecondaryKey(pub String)`: one newtype per secondary key, and
///   `MessageSecondaryKeys { Author(MessageAuthorSecondaryKey) }`, implementing
///   `SecondaryKey` (`index` is the field's position among the secondary keys,
///   `value_bytes` the order-preserving encoding of the field value). A model without
///   secondary keys gets an enum without variants.
/// - `MessageKey { Primary(MessagePrimaryKey), Secondary(MessageSecondaryKeys) }`.
/// - `impl NetabaseModel for Message`.
///
/// and for the whole definition:
///
/// - `Definition`: an enum with one variant per model, named and holding like the model
///   (`Definition::Message(Message)`), with `From<Message>`, `TryFrom<Definition> for
///   Message` (the error gives back the value when it holds another model) and
///   `impl NetabaseDefinition` (name, schema version, the list of models and their
///   secondary keys, bincode encoding and decoding of the held model).
/// - `Keys`: an enum with one variant per model holding its `MessageKey`, with `From`
///   conversions from each model's key, primary key and secondary keys, and a `model_id`
///   method. It is the definition's `NetabaseDefinition::Keys`.
///
/// Generated per-model types take the model's visibility; the definition and keys enums
/// are as visible as the module.
///
/// Key fields must have types that implement `Serialize`, `DeserializeOwned`, `Ord`,
/// `Hash`, `Clone`, `Debug`, `Send` and `Sync` and hold no borrowed data; the compiler
/// reports a key field of another type at the field. A model must be a non-generic struct with named fields and exactly one
/// `#[primary_key]` field. A field cannot be both `#[primary_key]` and `#[secondary_key]`
/// (the primary key is unique and looked up directly already). Models must implement
/// `Clone`, `Debug`, `Serialize` and `Deserialize` themselves (the definition enum needs
/// `PartialEq` too).
#[proc_macro_attribute]
pub fn netabase_definition_module(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(attr as args::DefinitionArgs);
    let module = parse_macro_input!(item as ItemMod);
    expand::definition_module(args, module).into()
}

/// Marks a struct as a model of the enclosing definition module.
///
/// Use it only on structs directly inside a [`macro@netabase_definition_module`]
/// module, which generates the model's key types and trait implementations (see there).
/// Mark the primary-key field with `#[primary_key]` and each indexed field with
/// `#[secondary_key]`.
///
/// The derive itself generates nothing: the definition module leaves the derive and the
/// `#[primary_key]`/`#[secondary_key]` attributes in place (so the `NetabaseModel` import
/// is used and the field attributes stay valid) and marks each model with an internal
/// attribute; on a struct without that mark, i.e. outside a definition module, the derive
/// reports a compile error.
#[proc_macro_derive(
    NetabaseModel,
    attributes(primary_key, secondary_key, netabase, __netabase_definition_member)
)]
pub fn derive_netabase_model(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as DeriveInput);
    let inside_definition = input
        .attrs
        .iter()
        .any(|attr| attr.path().is_ident(parse::MEMBER_MARKER));
    if inside_definition {
        return TokenStream::new();
    }
    quote_spanned! {input.ident.span()=>
        ::core::compile_error!(
            "`#[derive(NetabaseModel)]` must be used inside a \
             `#[netabase_definition_module(..)]` module: put the struct directly in the \
             module that carries the attribute"
        );
    }
    .into()
}
