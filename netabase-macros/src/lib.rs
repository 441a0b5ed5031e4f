//! Definition-module and model derive macros of Netabase.
