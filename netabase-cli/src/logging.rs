//! Logs on standard error, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// What is logged when `RUST_LOG` is not set: a node tells its own start and stop, and
/// warnings; the other commands only warnings.
pub(crate) fn default_filter(node: bool) -> &'static str {
    if node {
        "warn,netabase_cli=info,netabase_swarm=info"
    } else {
        "warn"
    }
}

/// Sends `tracing` events to standard error, filtered by `RUST_LOG` (tracing-subscriber's
/// `EnvFilter` syntax, e.g. `RUST_LOG=debug` or `RUST_LOG=netabase_swarm=debug,libp2p_swarm=debug`).
pub(crate) fn init(node: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(node)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
