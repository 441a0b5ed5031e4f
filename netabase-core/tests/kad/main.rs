//! Tests of the Kademlia core, driven through its public sans-IO API.

mod codec;
mod commands;
mod config;
mod harness;
mod lookup;
mod table;
mod validation;
mod versions;
