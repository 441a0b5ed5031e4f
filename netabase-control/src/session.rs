//! How the lines of one control connection are checked, before any request runs.
//!
//! A connection is a [`Session`]: on a TCP endpoint its first line must be the node's
//! [`Token`] (compared in constant time); then every line must be one [`Request`]. A line
//! that starts with an HTTP method (what a web page's request looks like), a line that is
//! not a valid request (too long, not UTF-8, empty, not JSON of a request) and a wrong token
//! end the session with one [`Refusal`]; every later line is refused as well
//! ([`Refusal::Closed`]).

use std::time::Duration;

use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::protocol::{MAX_LINE, Output, Request, hex};

/// Most control connections open at once (both endpoints together).
pub const MAX_CONNECTIONS: usize = 32;
/// How long a TCP connection may take to send its token line.
pub const TOKEN_DEADLINE: Duration = Duration::from_secs(2);
/// The token's length in bytes (256 bits); its line is twice as many hex digits.
pub const TOKEN_BYTES: usize = 32;

/// The HTTP methods a control line may not start with.
const HTTP_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PRI",
];

/// One line as a bounded line reader returns it.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line (without its line ending).
    Text(String),
    /// A line that is not UTF-8.
    NotUtf8,
    /// A line longer than allowed; the rest of it was skipped.
    TooLong,
    /// The end of input.
    Eof,
}

/// A TCP endpoint's token.
#[derive(Clone)]
pub struct Token {
    hex: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token of these random bytes.
    pub fn from_bytes(bytes: &[u8; TOKEN_BYTES]) -> Token {
        Token { hex: hex(bytes) }
    }

    /// The token of a token line or file (hex; surrounding white space ignored), if it is
    /// one.
    pub fn from_hex(text: &str) -> Option<Token> {
        let text = text.trim();
        (text.len() == 2 * TOKEN_BYTES && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
            Token {
                hex: text.to_ascii_lowercase(),
            }
        })
    }

    /// The token in hex, as written to the token file and sent as the first line.
    pub fn to_hex(&self) -> &str {
        &self.hex
    }

    /// Whether `line` is this token. The comparison takes the same time whichever bytes
    /// differ (`subtle`), so the time a refusal takes tells nothing about the token.
    pub fn matches(&self, line: &[u8]) -> bool {
        self.hex.as_bytes().ct_eq(line).into()
    }
}

/// Why a connection or a line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The line starts with an HTTP method.
    #[error("HTTP is not spoken here: this is a JSON-lines control socket")]
    Http,
    /// The line is not a valid request.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The first line of a TCP connection is not the token.
    #[error("the first line must be the node's control token")]
    Token,
    /// No token line within [`TOKEN_DEADLINE`].
    #[error("no control token within {} s", TOKEN_DEADLINE.as_secs())]
    TokenTimeout,
    /// The peer runs as another user.
    #[error("the control socket serves only its own user")]
    PeerUser,
    /// Too many connections are open.
    #[error("too many control connections (at most {MAX_CONNECTIONS})")]
    Connections,
    /// The connection was closed after an earlier refusal.
    #[error("the connection is closed")]
    Closed,
}

impl Refusal {
    /// The `reason` label of the refusal's counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Http => "http",
            Refusal::Invalid(_) => "invalid_request",
            Refusal::Token => "token",
            Refusal::TokenTimeout => "token_timeout",
            Refusal::PeerUser => "peer_user",
            Refusal::Connections => "connections",
            Refusal::Closed => "closed",
        }
    }

    /// The refusal line sent before the connection closes.
    pub fn to_line(&self) -> String {
        Output::reply(Value::Null, Err(self.to_string())).to_line()
    }
}

/// Whether `line` starts with an HTTP method and a space (a request line, as a browser's
/// request begins).
pub fn starts_with_http_method(line: &[u8]) -> bool {
    HTTP_METHODS
        .iter()
        .any(|m| line.len() > m.len() && line.starts_with(m.as_bytes()) && line[m.len()] == b' ')
}

/// Parses one request line (without its line ending): refuses a line longer than
/// [`MAX_LINE`], one that is not UTF-8, an empty one, one that starts with an HTTP
/// method, and one that is not a [`Request`].
pub fn parse_request(line: &[u8]) -> Result<Request, Refusal> {
    if line.len() > MAX_LINE {
        return Err(Refusal::Invalid(format!(
            "the line is longer than {MAX_LINE} bytes"
        )));
    }
    if starts_with_http_method(line) {
        return Err(Refusal::Http);
    }
    let text =
        std::str::from_utf8(line).map_err(|_| Refusal::Invalid("the line is not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(Refusal::Invalid("empty line".into()));
    }
    serde_json::from_str(text).map_err(|e| Refusal::Invalid(e.to_string()))
}

/// What one line read on a control connection leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The token was right: go on reading requests.
    Authenticated,
    /// A request to carry out.
    Request(Request),
    /// Send this refusal and close the connection.
    Refuse(Refusal),
}

/// The state of one control connection: whether it still owes its token, and whether it
/// was refused (then every later line is refused too).
#[derive(Debug, Clone)]
pub struct Session {
    token: Option<Token>,
    closed: bool,
}

impl Session {
    /// A connection that must first send `token` (TCP), or none (the Unix socket).
    pub fn new(token: Option<Token>) -> Session {
        Session {
            token,
            closed: false,
        }
    }

    /// Whether the next line must be the token.
    pub fn awaits_token(&self) -> bool {
        self.token.is_some() && !self.closed
    }

    /// The step for one line (without its line ending).
    pub fn on_line(&mut self, line: &[u8]) -> Step {
        if self.closed {
            return Step::Refuse(Refusal::Closed);
        }
        let step = match self.token.take() {
            Some(_) if starts_with_http_method(line) => Step::Refuse(Refusal::Http),
            Some(token) if token.matches(line) => Step::Authenticated,
            Some(_) => Step::Refuse(Refusal::Token),
            None => match parse_request(line) {
                Ok(request) => Step::Request(request),
                Err(refusal) => Step::Refuse(refusal),
            },
        };
        if matches!(step, Step::Refuse(_)) {
            self.closed = true;
        }
        step
    }

    /// The step for one line as a bounded line reader returned it.
    pub fn on_read(&mut self, line: Line) -> Step {
        match line {
            Line::Text(text) => self.on_line(text.as_bytes()),
            Line::NotUtf8 if !self.closed => {
                self.closed = true;
                Step::Refuse(if self.token.is_some() {
                    Refusal::Token
                } else {
                    Refusal::Invalid("the line is not UTF-8".into())
                })
            }
            Line::TooLong if !self.closed => {
                self.closed = true;
                Step::Refuse(if self.token.is_some() {
                    Refusal::Token
                } else {
                    Refusal::Invalid(format!("the line is longer than {MAX_LINE} bytes"))
                })
            }
            Line::NotUtf8 | Line::TooLong | Line::Eof => {
                self.closed = true;
                Step::Refuse(Refusal::Closed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Command;

    #[test]
    fn tokens_match_only_themselves() {
        let a = Token::from_bytes(&[0xa5; TOKEN_BYTES]);
        let b = Token::from_bytes(&[0xa4; TOKEN_BYTES]);
        assert_eq!(a.to_hex(), "a5".repeat(TOKEN_BYTES));
        assert!(a.matches(a.to_hex().as_bytes()));
        assert!(!a.matches(b.to_hex().as_bytes()));
        assert!(!a.matches(a.to_hex().to_uppercase().as_bytes()));
        assert!(!a.matches(&a.to_hex().as_bytes()[1..]));
        assert!(!a.matches(b""));
        assert_eq!(
            Token::from_hex(&format!("\t{}\r\n", "A5".repeat(TOKEN_BYTES)))
                .unwrap()
                .to_hex(),
            a.to_hex()
        );
        assert!(Token::from_hex(&"a5".repeat(TOKEN_BYTES + 1)).is_none());
    }

    #[test]
    fn http_requests_and_bad_lines_are_refused_and_close_the_session() {
        for line in [
            &b"POST / HTTP/1.1"[..],
            b"GET /metrics HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"PRI * HTTP/2.0",
        ] {
            assert_eq!(parse_request(line), Err(Refusal::Http));
            let mut s = Session::new(None);
            assert_eq!(s.on_line(line), Step::Refuse(Refusal::Http));
            // Nothing after a refusal runs, not even a valid request.
            assert_eq!(
                s.on_line(br#"{"req":1,"cmd":"shutdown"}"#),
                Step::Refuse(Refusal::Closed)
            );
        }
        for line in [
            &b""[..],
            b"  ",
            b"\xff",
            b"{}",
            b"GETX",
            b"{\"cmd\":\"nope\"}",
        ] {
            assert!(
                matches!(parse_request(line), Err(Refusal::Invalid(_))),
                "{line:?}"
            );
        }
        let long = vec![b' '; MAX_LINE + 1];
        assert!(matches!(parse_request(&long), Err(Refusal::Invalid(_))));
        let mut s = Session::new(None);
        assert_eq!(
            s.on_line(br#"{"req":1,"cmd":"mode"}"#),
            Step::Request(Request {
                req: Value::from(1),
                command: Command::Mode
            })
        );
        assert!(matches!(
            s.on_read(Line::TooLong),
            Step::Refuse(Refusal::Invalid(_))
        ));
        assert_eq!(
            s.on_line(br#"{"cmd":"mode"}"#),
            Step::Refuse(Refusal::Closed)
        );
    }

    #[test]
    fn a_tcp_session_wants_the_token_first() {
        let token = Token::from_bytes(&[0x5a; TOKEN_BYTES]);
        let shutdown = br#"{"req":1,"cmd":"shutdown"}"#;
        // A request instead of the token.
        let mut s = Session::new(Some(token.clone()));
        assert!(s.awaits_token());
        assert_eq!(s.on_line(shutdown), Step::Refuse(Refusal::Token));
        assert_eq!(
            s.on_line(token.to_hex().as_bytes()),
            Step::Refuse(Refusal::Closed)
        );
        // A browser's request line.
        let mut s = Session::new(Some(token.clone()));
        assert_eq!(s.on_line(b"POST / HTTP/1.1"), Step::Refuse(Refusal::Http));
        // The token, then requests.
        let mut s = Session::new(Some(token.clone()));
        assert_eq!(s.on_line(token.to_hex().as_bytes()), Step::Authenticated);
        assert!(!s.awaits_token());
        assert!(matches!(s.on_line(shutdown), Step::Request(_)));
        // The token a second time is not a request.
        assert!(matches!(
            s.on_line(token.to_hex().as_bytes()),
            Step::Refuse(Refusal::Invalid(_))
        ));
        // An unreadable first line.
        let mut s = Session::new(Some(token));
        assert_eq!(s.on_read(Line::NotUtf8), Step::Refuse(Refusal::Token));
    }
}
