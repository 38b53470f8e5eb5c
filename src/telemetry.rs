//! Log output (DESIGN §6): a tracing subscriber writing text or JSON lines to stderr
//! through a non-blocking writer, so a slow log reader never stalls the daemon.

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Keeps the log writer alive; dropping it flushes what is buffered.
pub struct Logging {
    _guard: WorkerGuard,
    /// Lines the writer dropped because its buffer was full.
    pub dropped_lines: ErrorCounter,
}

/// Lines the non-blocking writer buffers before it starts dropping (and counting) them.
const LOG_BUFFER_LINES: usize = 64 * 1024;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `[log] level`.
pub fn init(config: &LogConfig) -> Logging {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::builder().parse_lossy(env),
        _ => EnvFilter::builder().parse_lossy(&config.level),
    };
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .finish(std::io::stderr());
    let dropped_lines = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match config.format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .flatten_event(false)
            .init(),
    }
    Logging {
        _guard: guard,
        dropped_lines,
    }
}
