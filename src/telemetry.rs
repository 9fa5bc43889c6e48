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
pub(crate) fn terminal() -> &'static indicatif::MultiProgress {
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
fn default_filter(stderr_is_terminal: bool) -> &'static str {
    if stderr_is_terminal {
        TERMINAL_FILTER
    } else {
        LOG_FILTER
    }
}

/// Installs the global subscriber once; later calls are no-ops. A
/// long-running service (`worker`, `serve`) logs at INFO on a terminal too:
/// its log is its output.
pub(crate) fn init(service: bool) {
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

/// Prometheus metrics: the recorder is installed once per process; every
/// series is named here. Recorded per request, per job and per load (never
/// per row).
pub(crate) mod metric {
    use std::sync::OnceLock;

    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

    pub(crate) const HTTP_REQUESTS: &str = "carga_http_requests_total";
    pub(crate) const ROWS_LOADED: &str = "carga_rows_loaded_total";
    pub(crate) const ROWS_REJECTED: &str = "carga_rows_rejected_total";
    pub(crate) const BYTES_DOWNLOADED: &str = "carga_bytes_downloaded_total";
    pub(crate) const LOAD_SECONDS: &str = "carga_load_duration_seconds";
    pub(crate) const JOBS_FINISHED: &str = "carga_job_attempts_total";
    pub(crate) const JOB_RETRIES: &str = "carga_job_retries_total";
    pub(crate) const RESCUES: &str = "carga_job_rescues_total";
    pub(crate) const QUEUE_DEPTH: &str = "carga_jobs";
    pub(crate) const LAST_SUCCESS: &str = "carga_last_published_timestamp_seconds";
    pub(crate) const SOURCE_LATEST: &str = "carga_source_latest_period";
    pub(crate) const PUBLISHED_LATEST: &str = "carga_published_latest_period";
    pub(crate) const SOURCE_AHEAD: &str = "carga_source_ahead_seconds";
    pub(crate) const POOL: &str = "carga_pool_connections";
    pub(crate) const HTTP_CONNECTIONS_CLOSED: &str = "carga_http_connections_closed_total";

    /// The process's Prometheus handle (installs the recorder the first
    /// time; later calls return the same handle).
    pub(crate) fn handle() -> PrometheusHandle {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        HANDLE
            .get_or_init(|| {
                let builder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        Matcher::Full(LOAD_SECONDS.into()),
                        &[
                            0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
                        ],
                    )
                    .unwrap_or_else(|_| PrometheusBuilder::new());
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                // A recorder installed by someone else keeps working; ours
                // then only renders what it was given.
                let _ = metrics::set_global_recorder(recorder);
                describe();
                handle
            })
            .clone()
    }

    /// `# HELP` for every family (`promtool check metrics` wants one each).
    fn describe() {
        use metrics::{describe_counter, describe_gauge, describe_histogram};
        describe_counter!(
            HTTP_REQUESTS,
            "HTTP requests answered, by route, method and status."
        );
        describe_counter!(ROWS_LOADED, "Rows published, by dataset.");
        describe_counter!(
            HTTP_CONNECTIONS_CLOSED,
            "HTTP connections the server closed by policy, by reason (idle, evicted, address_full)."
        );
        describe_counter!(
            ROWS_REJECTED,
            "Rows rejected by the parser in published loads, by dataset."
        );
        describe_counter!(
            BYTES_DOWNLOADED,
            "Source bytes downloaded by published loads, by dataset."
        );
        describe_histogram!(
            LOAD_SECONDS,
            "Seconds a published load spent, by dataset and stage (stream, aggregate, publish, total)."
        );
        describe_counter!(
            JOBS_FINISHED,
            "Job attempts ended, by dataset and ending (published, unchanged, retry, not_found, failed, cancelled, released, waiting)."
        );
        describe_counter!(
            JOB_RETRIES,
            "Job attempts that ended in a retry (an error or a month not yet published), by dataset."
        );
        describe_counter!(
            RESCUES,
            "Running jobs whose lease expired and that the rescuer handed back."
        );
        describe_gauge!(
            QUEUE_DEPTH,
            "Jobs in the queue, by state (read when scraped)."
        );
        describe_gauge!(
            LAST_SUCCESS,
            "Unix time of the dataset's last published load (read when scraped)."
        );
        describe_gauge!(
            SOURCE_LATEST,
            "The latest period (YYYYMM) the dataset's source answered for with a file, 202 or 304 (read when scraped)."
        );
        describe_gauge!(
            PUBLISHED_LATEST,
            "The latest published period (YYYYMM) of the dataset (read when scraped)."
        );
        describe_gauge!(
            SOURCE_AHEAD,
            "Seconds since the source first had a period newer than the last published one; 0 when it has none (read when scraped)."
        );
        describe_gauge!(
            POOL,
            "The API's database pool: size, available, waiting and max connections (read when scraped)."
        );
    }
}

/// Every ending [`record_attempt`] is called with (the runner's `Ending`s
/// by name, and `published` for a publish completed by the fence).
const ATTEMPT_ENDINGS: [&str; 8] = [
    "published",
    "unchanged",
    "retry",
    "not_found",
    "failed",
    "cancelled",
    "released",
    "waiting",
];

/// Creates, at 0, the counters that alert rules take `increase()` of, for
/// every known dataset and ending, so a rule sees a series before the first
/// event (Prometheus cannot compute an increase from a series that appears
/// at 1). Adds 0: calling it again, or after events, changes nothing.
pub(crate) fn register_series<'a>(datasets: impl IntoIterator<Item = &'a str>) {
    metrics::counter!(metric::RESCUES).increment(0);
    for dataset in datasets {
        metrics::counter!(metric::JOB_RETRIES, "dataset" => dataset.to_string()).increment(0);
        for ending in ATTEMPT_ENDINGS {
            metrics::counter!(metric::JOBS_FINISHED, "dataset" => dataset.to_string(), "ending" => ending)
                .increment(0);
        }
    }
}

/// One HTTP request answered.
pub(crate) fn record_request(route: &str, method: &str, status: u16) {
    metrics::counter!(metric::HTTP_REQUESTS, "route" => route.to_string(), "method" => method.to_string(), "status" => status.to_string()).increment(1);
}

/// A connection the server closed by policy: `idle` (no request for
/// `http.idle_timeout_s`), `evicted` (room for a newcomer), `address_full`
/// (its address held its share).
pub(crate) fn record_connection_refused(reason: &'static str) {
    metrics::counter!(metric::HTTP_CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

/// A published or unchanged load, by dataset: rows, bytes, stage times.
pub(crate) fn record_load(dataset: &str, report: &crate::engine::pipeline::LoadReport) {
    let d = dataset.to_string();
    metrics::counter!(metric::ROWS_LOADED, "dataset" => d.clone()).increment(report.rows_loaded);
    metrics::counter!(metric::ROWS_REJECTED, "dataset" => d.clone())
        .increment(report.rows_rejected);
    metrics::counter!(metric::BYTES_DOWNLOADED, "dataset" => d.clone()).increment(report.bytes);
    for (stage, seconds) in &report.stage_seconds {
        metrics::histogram!(metric::LOAD_SECONDS, "dataset" => d.clone(), "stage" => *stage)
            .record(*seconds);
    }
    metrics::histogram!(metric::LOAD_SECONDS, "dataset" => d, "stage" => "total")
        .record(report.seconds);
}

/// How a job's attempt ended (`published`, `unchanged`, `retry`, `failed`…).
pub(crate) fn record_attempt(dataset: &str, ending: &str) {
    metrics::counter!(metric::JOBS_FINISHED, "dataset" => dataset.to_string(), "ending" => ending.to_string()).increment(1);
    if matches!(ending, "retry" | "not_found") {
        metrics::counter!(metric::JOB_RETRIES, "dataset" => dataset.to_string()).increment(1);
    }
}

/// Jobs the rescuer handed back.
pub(crate) fn record_rescues(count: usize) {
    metrics::counter!(metric::RESCUES).increment(count as u64);
}

#[cfg(test)]
mod tests {
    /// The runner names its attempts' endings in `record()`; every name it
    /// uses must be one [`super::register_series`] creates at 0.
    #[test]
    fn every_ending_the_runner_records_is_registered() {
        let runner = include_str!("service/runner.rs");
        let start = runner
            .find("let name = match ending {")
            .expect("the runner names its endings");
        let block = &runner[start..start + runner[start..].find("};").expect("end of match")];
        let mut named = vec!["published"]; // recorded by the fence's path
        for piece in block.split("=> \"").skip(1) {
            named.push(piece.split('"').next().unwrap_or_default());
        }
        assert!(named.len() > 5, "{named:?}");
        for ending in named {
            assert!(
                super::ATTEMPT_ENDINGS.contains(&ending),
                "{ending} is not in ATTEMPT_ENDINGS"
            );
        }
    }
}
