//! The metrics endpoint (HTTP server) and a tiny HTTP client to read it.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use netabase::swarm::prometheus_client::encoding::text::encode;
use netabase::swarm::prometheus_client::registry::Registry;

/// The content type of the OpenMetrics text format (which Prometheus reads).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    let mut body = String::new();
    match encode(&mut body, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn index() -> &'static str {
    "netabase node: metrics at /metrics\n"
}

/// Serves `registry` at `/metrics` on `listener` until the process ends.
pub(crate) async fn serve_metrics(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .with_state(registry);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics endpoint stopped");
    }
}

/// Why fetching a page failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The connection or the transfer failed.
    #[error("{address}: {source}")]
    Io {
        /// The server.
        address: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("{0}: not an HTTP answer")]
    NotHttp(String),
    /// The server answered with another status than 200.
    #[error("{address}: HTTP status {status}")]
    Status {
        /// The server.
        address: String,
        /// The status line's code.
        status: String,
    },
}

/// The body of `http://{address}{path}` (HTTP/1.0, so the server closes the connection
/// after the body and sends it in one piece).
pub(crate) fn fetch(address: &str, path: &str, timeout: Duration) -> Result<String, FetchError> {
    let io = |source| FetchError::Io {
        address: address.to_string(),
        source,
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(address)
        .map_err(io)?
        .next()
        .ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such address",
            ))
        })?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| FetchError::NotHttp(address.to_string()))?;
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .ok_or_else(|| FetchError::NotHttp(address.to_string()))?;
    if status != "200" {
        return Err(FetchError::Status {
            address: address.to_string(),
            status: status.to_string(),
        });
    }
    Ok(body.to_string())
}
