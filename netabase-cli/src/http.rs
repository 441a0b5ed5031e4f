//! The metrics endpoint (HTTP server) and a tiny HTTP client to read it.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use netabase::swarm::prometheus_client::encoding::text::encode;
use netabase::swarm::prometheus_client::metrics::counter::Counter;
use netabase::swarm::prometheus_client::metrics::family::Family;
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

/// What the metrics endpoint checks each request against: the host names it answers to
/// besides IP addresses and `localhost`, and its refusal counter
/// (`netabase_metrics_refusals_total{reason="host"}`).
#[derive(Clone, Debug)]
pub(crate) struct MetricsEndpoint {
    names: Arc<Vec<String>>,
    refusals: Family<[(&'static str, &'static str); 1], Counter>,
}

impl MetricsEndpoint {
    /// The endpoint answering to `names` too, its counter registered in `registry`.
    pub(crate) fn new(registry: &mut Registry, names: &[String]) -> MetricsEndpoint {
        let refusals = Family::default();
        registry.register(
            "netabase_metrics_refusals",
            "Requests the metrics endpoint refused, by reason",
            refusals.clone(),
        );
        MetricsEndpoint {
            names: Arc::new(names.iter().map(|n| n.to_ascii_lowercase()).collect()),
            refusals,
        }
    }
}

/// Whether a request's `Host` header names this endpoint: an IP address, `localhost`, or
/// one of `names` (lower case), with or without a port. Any other name may be one a web
/// page's author controls and points at 127.0.0.1 (DNS rebinding), so the page would read
/// the answer as its own.
pub(crate) fn host_allowed(host: &str, names: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal, with or without a port.
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || valid_port(port) => {
                return ip.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || names.contains(&name)
}

fn valid_port(port: &str) -> bool {
    port.strip_prefix(':')
        .unwrap_or(port)
        .parse::<u16>()
        .is_ok()
}

async fn check_host(
    State(endpoint): State<MetricsEndpoint>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = match request.headers().get(header::HOST) {
        // HTTP/1.0 clients may send none; a browser always does.
        None => true,
        Some(host) => host
            .to_str()
            .is_ok_and(|host| host_allowed(host, &endpoint.names)),
    };
    if allowed {
        next.run(request).await
    } else {
        endpoint.refusals.get_or_create(&[("reason", "host")]).inc();
        tracing::debug!(host = ?request.headers().get(header::HOST), "metrics request for another host refused");
        (
            StatusCode::FORBIDDEN,
            "this endpoint answers only to IP addresses, localhost and its configured names\n",
        )
            .into_response()
    }
}

/// Serves `registry` at `/metrics` on `listener` until the process ends. It sends no
/// CORS headers, so a web page of another origin cannot read what it serves.
pub(crate) async fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    endpoint: MetricsEndpoint,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .with_state(registry)
        .layer(middleware::from_fn_with_state(endpoint, check_host));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_addresses_localhost_and_configured_names_are_served() {
        let names = vec!["metrics.internal".to_string()];
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9100",
            "10.1.2.3:80",
            "[::1]",
            "[::1]:9100",
            "localhost",
            "LocalHost:9100",
            "localhost.:9100",
            "metrics.internal",
            "Metrics.Internal:9100",
        ] {
            assert!(host_allowed(ok, &names), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:9100",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "2130706433",
            "[::1",
            "[not-an-ip]:80",
            "127.0.0.1:99999",
            "localhost:port",
            "",
            "metrics.internal.evil",
        ] {
            assert!(!host_allowed(refused, &names), "{refused}");
        }
        assert!(!host_allowed("metrics.internal", &[]));
    }
}
