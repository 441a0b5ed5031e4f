//! The control protocol: JSON lines, the same on a node's standard input and on its
//! control socket.
//!
//! Every line sent to the node is one [`Request`]: a `cmd` naming the [`Command`], its
//! arguments, and an optional `req` (any JSON value) that the reply echoes. Every request
//! gets exactly one [`Output::Reply`] line, in completion order (requests run
//! concurrently):
//!
//! ```text
//! -> {"req":1,"cmd":"put","key":"greeting","value":"hello"}
//! <- {"type":"reply","req":1,"ok":true,"result":{"key":"greeting","dht_key":"2f6e62...","stored_at":["12D3..."],"quorum_error":null}}
//! -> {"req":2,"cmd":"get","key":"missing"}
//! <- {"type":"reply","req":2,"ok":true,"result":null}
//! -> {"cmd":"nonsense"}
//! <- {"type":"reply","req":null,"ok":false,"error":"invalid request: unknown variant `nonsense`, ..."}
//! ```
//!
//! A line longer than [`MAX_LINE`] bytes, an empty line, a line that is not UTF-8 and a
//! line that is not a request are refused (with `req: null`). On standard input the next
//! line is read as usual; on the control socket the connection closes after the refusal
//! (the [`control`](crate::control) module describes the socket). The result of each
//! command is described on its variant.

pub use netabase_control::protocol::*;

/// The node's DHT mode of a mode name.
pub fn mode_of(name: ModeName) -> netabase::Mode {
    match name {
        ModeName::Server => netabase::Mode::Server,
        ModeName::Client => netabase::Mode::Client,
    }
}

/// The name of a node's DHT mode.
pub fn mode_name(mode: netabase::Mode) -> ModeName {
    match mode {
        netabase::Mode::Server => ModeName::Server,
        netabase::Mode::Client => ModeName::Client,
    }
}

/// The protocol counters of a node's statistics.
pub fn node_counters(s: &netabase::NetabaseStats) -> NodeCounters {
    NodeCounters {
        requests_sent: s.kad.requests_sent,
        responses_received: s.kad.responses_received,
        requests_failed: s.kad.requests_failed,
        requests_timed_out: s.kad.requests_timed_out,
        unexpected_responses: s.kad.unexpected_responses,
        mismatched_responses: s.kad.mismatched_responses,
        inbound_requests: s.kad.inbound_requests,
        inbound_rejected: s.kad.inbound_rejected,
        invalid_records: s.kad.invalid_records,
        inbound_stream_failures: s.inbound_stream_failures,
        inbound_refused: s.inbound_refused,
        queries_finished: s.kad.queries_finished,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_convert_both_ways() {
        for name in [ModeName::Server, ModeName::Client] {
            assert_eq!(mode_name(mode_of(name)), name);
        }
        assert_eq!(mode_of(ModeName::Client), netabase::Mode::Client);
    }
}
