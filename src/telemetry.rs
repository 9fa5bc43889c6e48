//! Tracing: human-readable on a terminal, JSON lines otherwise, to stderr
//! (stdout carries command output). Owns the terminal's progress area, so
//! that log lines are printed above a progress bar instead of through it.
//! `RUST_LOG` overrides the level. Never log personal data or secrets:
//! fields are counts, codes and redacted URLs.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// On a terminal only warnings and errors are printed: the terminal holds
/// the progress bar and the summary. Elsewhere every INFO event is logged,
/// except the libraries' chatter (the server's NOTICEs, relayed by
/// tokio-postgres; refinery's "no migrations to apply"), which is debug
/// detail: `RUST_LOG=debug` shows it.
const TERMINAL_FILTER: &str = "warn";
const LOG_FILTER: &str = "info,tokio_postgres=warn,refinery_core=warn";

/// The terminal's progress area. Progress bars are added to it; log lines
/// go through [`SuspendingStderr`], which hides the bars while it writes.
pub fn terminal() -> &'static indicatif::MultiProgress {
    static TERMINAL: OnceLock<indicatif::MultiProgress> = OnceLock::new();
    TERMINAL.get_or_init(|| {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
    })
}

/// stderr, with the progress bars cleared before and redrawn after each
/// write (one write per event: the formatter buffers the whole line).
struct SuspendingStderr;

impl Write for SuspendingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        terminal().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The default filter directives for this process's stderr.
pub fn default_filter(stderr_is_terminal: bool) -> &'static str {
    if stderr_is_terminal {
        TERMINAL_FILTER
    } else {
        LOG_FILTER
    }
}

/// Installs the global subscriber once; later calls are no-ops. A
/// long-running service (`worker`, `serve`) logs at INFO on a terminal too:
/// its log is its output.
pub fn init(service: bool) {
    let on_terminal = std::io::stderr().is_terminal();
    let default = if service {
        LOG_FILTER
    } else {
        default_filter(on_terminal)
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if on_terminal {
        builder
            .with_writer(|| SuspendingStderr)
            .with_target(false)
            .compact()
            .try_init()
    } else {
        builder
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .try_init()
    };
}
