//! Tests of the `netabase` program: real processes on 127.0.0.1 (mDNS off), driven through
//! its control subcommands, its standard input and signals; metrics scraped over HTTP.

mod control;
mod migration;
mod network;
mod restart;
mod sim;
mod stdin;
mod support;
