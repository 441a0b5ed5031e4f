//! Integration tests of the definition-module and model macros: the generated API, its
//! behaviour with the core's storage and DHT helpers, and the compile errors for misuse.

pub mod definitions;
mod generated;
mod properties;
mod ui;
