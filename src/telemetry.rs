//! Log output (ARCHITECTURE §6): a tracing subscriber writing text or JSON lines to stderr
//! through a non-blocking writer (`logwriter`), so a slow log reader never stalls the
//! daemon.

use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::logwriter::{self, Dropped, Guard};

/// The log writer's guard: dropping it flushes what is buffered. It lives here rather than
/// in [`Logging`] so that [`exit`] can flush from any task before the process ends.
static GUARD: Mutex<Option<Guard>> = Mutex::new(None);

/// Keeps the log writer alive; dropping it flushes what is buffered.
pub struct Logging {
    /// Lines the writer dropped because its backlog was full.
    pub dropped_lines: Dropped,
    /// Sets the level filter while the daemon runs (SIGHUP), unless `RUST_LOG` set it.
    pub level: LevelHandle,
}

/// The subscriber's reload handle refused a new filter (the subscriber is gone).
type ReloadFailed = tracing_subscriber::reload::Error;

/// Why a new log level was not put in force; the level in force stays.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    /// The level is not a filter the subscriber can take.
    #[error("not a log filter: {0}")]
    NotAFilter(tracing_subscriber::filter::ParseError),
    /// The subscriber did not take the new filter.
    #[error("{0}")]
    Reload(ReloadFailed),
}

/// Changes the log filter of the installed subscriber.
#[derive(Clone)]
pub struct LevelHandle {
    /// The subscriber's reload handle, behind a closure: its type differs between the
    /// text and the JSON format.
    set: Arc<dyn Fn(EnvFilter) -> Result<(), ReloadFailed> + Send + Sync>,
    /// `RUST_LOG` chose the filter: it keeps winning over `[log] level`.
    from_env: bool,
}

impl LevelHandle {
    /// Applies `level` (a filter such as `info` or `a_chat=debug,info`); Ok(false) when
    /// `RUST_LOG` is set and keeps its own filter.
    pub fn set(&self, level: &str) -> Result<bool, LevelError> {
        if self.from_env {
            return Ok(false);
        }
        let filter = EnvFilter::builder()
            .parse(level)
            .map_err(LevelError::NotAFilter)?;
        (self.set)(filter).map_err(LevelError::Reload)?;
        Ok(true)
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `[log] level`.
pub fn init(config: &LogConfig) -> Logging {
    // A malformed RUST_LOG is not allowed to silence the daemon: [log] level applies,
    // and a warning says why once the subscriber is up.
    let mut bad_env = None;
    let (filter, from_env) = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => match crate::config::check_log_filter(&env) {
            Ok(()) => (EnvFilter::builder().parse_lossy(env), true),
            Err(e) => {
                bad_env = Some((env, e));
                (EnvFilter::builder().parse_lossy(&config.level), false)
            }
        },
        _ => (EnvFilter::builder().parse_lossy(&config.level), false),
    };
    let (writer, dropped_lines, guard) = logwriter::start(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // Under systemd, stderr goes to the journal, which stamps every line itself and reads
    // a priority from a `<N>` prefix (sd-daemon(3)): then text lines carry that prefix and
    // no timestamp of their own, so `journalctl -p warning` works.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some_and(|v| !v.is_empty());
    let set: Arc<dyn Fn(EnvFilter) -> Result<(), ReloadFailed> + Send + Sync> = match config.format
    {
        LogFormat::Text if journal => {
            let format = Journald(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            );
            let builder = builder
                .with_ansi(false)
                .event_format(format)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Arc::new(move |f| handle.reload(f))
        }
        LogFormat::Text => {
            let builder = builder.with_ansi(false).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Arc::new(move |f| handle.reload(f))
        }
        LogFormat::Json => {
            let builder = builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .flatten_event(false)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Arc::new(move |f| handle.reload(f))
        }
    };
    if let Some((env, e)) = bad_env {
        tracing::warn!(
            rust_log = %env,
            level = %config.level,
            "RUST_LOG ignored: {e}; using [log] level"
        );
    }
    *GUARD.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    Logging {
        dropped_lines,
        level: LevelHandle { set, from_env },
    }
}

impl Drop for Logging {
    fn drop(&mut self) {
        flush();
    }
}

/// Writes out every buffered log line and stops the writer; later lines are lost.
fn flush() {
    let guard = GUARD.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(guard);
}

/// Ends the process with `code` at once, after the log lines already written reach their
/// reader: `std::process::exit` alone would skip the flush, and the last line (the one
/// saying why the daemon exits) would be lost.
pub fn exit(code: i32) -> ! {
    flush();
    std::process::exit(code)
}

/// A text line for the journal: the sd-daemon priority prefix (`<3>` error, `<4>` warning,
/// `<6>` info, `<7>` debug and trace), then the line as the inner format writes it.
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The syslog priority of a tracing level.
fn priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}
