//! Logs go to the workspace's logs/lathe.log, never to the terminal (it belongs to the UI).
//! `LATHE_LOG` takes a tracing filter such as `debug` or `lathe=trace`.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Starts logging to `dir/lathe.log`; keep the guard alive until exit so the tail is flushed.
pub fn init(dir: &Path) -> Option<WorkerGuard> {
    let appender = tracing_appender::rolling::never(dir, "lathe.log");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = EnvFilter::try_from_env("LATHE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init()
        .ok()?;
    Some(guard)
}
