//! One load, end to end: open the source, then four stages joined by
//! bounded channels — the download task (bytes, SHA-256), the inflate thread
//! (container, output caps), the parser thread (CSV, transform, tallies,
//! distinct-count spill, binary COPY encoding) and the COPY stream on the load
//! transaction — then the guards, the aggregates and the publish, all in that
//! one transaction. Any failure before COMMIT rolls everything back.
//!
//! - `error`: the load's error and its codes;
//! - `stages`: the download, inflate and parser stages and their wiring;
//! - `parser`: the parser loop, its row sinks and its one reject log;
//! - `guards`: the quality checks, pure functions;
//! - `publish`: the publish transaction's last steps;
//! - [`validate`]: checking a file without a database.
//!
//! The SQL lives in `engine::load`; this module orders the steps.

mod error;
mod guards;
mod parser;
mod publish;
mod stages;
mod tabulated;
mod validate;

pub use error::LoadError;
pub(crate) use guards::{check_rejects, reject_limit};
pub(crate) use parser::{CopySink, ParseInput};
pub(crate) use stages::{FirstFailure, Stage, open_source};
pub use validate::{ValidateReport, validate};

use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;
use secrecy::SecretString;
use tokio::sync::mpsc;

use crate::config::Settings;
use futures::future::Either;

use crate::dataset::{Period, Spec};
use crate::engine::load::ledger::LedgerStatus;
use crate::engine::load::{self, ledger};
use crate::engine::parse::MunicipalityIndex;
use crate::engine::source::{self, OpenOutcome, Progress, Validators};

/// Shared handles for loads.
#[derive(Clone)]
pub struct Context {
    pub settings: Settings,
    pub pool: Pool,
    /// The pool's TLS connector: a cancel request goes over TLS when the
    /// session does.
    pub tls: crate::db::Tls,
}

/// One load to run.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    pub spec: Spec,
    pub period: Period,
    /// Overrides the spec's URL template.
    pub url: Option<String>,
    /// Publish even when unchanged or shrunk.
    pub force: bool,
    /// Checks every redirect of the source (a URL from a webhook).
    pub redirect_guard: Option<source::RedirectGuard>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Published,
    /// Same bytes (SHA-256) or validators as the published load: nothing done.
    Unchanged,
}

/// What a finished load reports.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub load_id: i64,
    pub outcome: Outcome,
    pub(crate) source: String,
    pub(crate) file: String,
    pub(crate) bytes: u64,
    pub(crate) decompressed_bytes: u64,
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    pub distinct_beneficiaries: i64,
    pub(crate) municipalities: i64,
    pub value_cents: i64,
    pub(crate) seconds: f64,
    pub(crate) stage_seconds: Vec<(&'static str, f64)>,
    pub rejects: Vec<ledger::Reject>,
    pub replaced_load: Option<String>,
    /// A file of many periods (`aggregates` kind): each period it held,
    /// oldest first.
    pub periods: Vec<PeriodOutcome>,
}

/// One period of a file of many periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodOutcome {
    pub period: Period,
    pub rows: u64,
    /// False: its rows were those already published, left alone.
    pub published: bool,
}

impl LoadReport {
    fn new(load_id: i64, source: &str) -> LoadReport {
        LoadReport {
            load_id,
            outcome: Outcome::Published,
            source: source.to_string(),
            file: String::new(),
            bytes: 0,
            decompressed_bytes: 0,
            rows_read: 0,
            rows_loaded: 0,
            rows_rejected: 0,
            distinct_beneficiaries: 0,
            municipalities: 0,
            value_cents: 0,
            seconds: 0.0,
            stage_seconds: Vec::new(),
            rejects: Vec::new(),
            replaced_load: None,
            periods: Vec::new(),
        }
    }

    /// The report of a load that found the published data unchanged.
    fn unchanged(mut self, started: Instant) -> LoadReport {
        self.outcome = Outcome::Unchanged;
        self.seconds = started.elapsed().as_secs_f64();
        self
    }

    pub(crate) fn rows_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.rows_read as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Runs one load of a payments dataset and records it in the ledger.
///
/// When `cancel` completes first, the attempt is dropped (its transaction
/// rolls back, the COPY aborts), the ledger records `cancelled`, and
/// [`LoadError::Cancelled`] is returned.
pub async fn run(
    ctx: &Context,
    request: &LoadRequest,
    nis_key: Option<SecretString>,
    progress: Arc<Progress>,
    cancel: impl Future<Output = ()>,
) -> Result<LoadReport, LoadError> {
    run_with(ctx, request, nis_key, progress, cancel, None).await
}

/// What a caller (the job runner) adds to a load without the pipeline
/// learning about it: it hears which database session runs the load, and
/// adds a step to the publish transaction (the job's fenced completion).
pub trait PublishStep: Send + Sync {
    /// A name for the load's session in `pg_stat_activity` (set for its
    /// transaction only), so others can tell it apart.
    fn application_name(&self) -> String;

    /// The load's transaction runs on this backend (known before the COPY).
    fn load_session(&self, backend_pid: i32);

    /// Runs in the publish transaction, after the ledger is written and
    /// before COMMIT. An error rolls the whole load back.
    fn before_commit<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        load_id: i64,
    ) -> futures::future::BoxFuture<'a, Result<(), LoadError>>;
}

/// [`run`], with the caller's [`PublishStep`].
#[tracing::instrument(skip_all, fields(dataset = %request.spec.dataset, period = %request.period))]
pub async fn run_with(
    ctx: &Context,
    request: &LoadRequest,
    nis_key: Option<SecretString>,
    progress: Arc<Progress>,
    cancel: impl Future<Output = ()>,
    step: Option<&dyn PublishStep>,
) -> Result<LoadReport, LoadError> {
    let spec = &request.spec;
    // A file of counts names no one: it needs no key. Its target may belong
    // to no program (the population): its ledger rows are then keyed by
    // the dataset (`dataset:<name>`, never an API program code).
    let tabulated = spec.kind.is_tabulated();
    let program = match spec.program.clone() {
        Some(program) => Some(program),
        None if tabulated && !spec.target.needs_program() => None,
        None => return Err(LoadError::NotPayments(spec.dataset.clone())),
    };
    let program_code = program
        .as_ref()
        .map_or_else(|| format!("dataset:{}", spec.dataset), |p| p.code.clone());
    let nis_key = match nis_key {
        Some(key) => key,
        None if tabulated => SecretString::from(String::new()),
        None => return Err(LoadError::NoNisKey),
    };
    spec.check_period(request.period, request.force)?;
    let client = ctx.pool.get().await?;
    let program_id = match &program {
        Some(program) => {
            let id = load::ensure_program(&**client, program).await?;
            if !tabulated {
                load::ensure_program_partition(&**client, id, &program.code).await?;
            }
            id
        }
        // Not a program: a stable number of the dataset's own, above any
        // program id, for its advisory lock.
        None => 0x40_0000 | (fnv1a(spec.dataset.as_bytes()) & 0x3f_ffff) as i32,
    };
    let municipalities = load::municipality_index(&**client).await?;
    if municipalities.is_empty() {
        return Err(LoadError::NoMunicipalities);
    }
    let location = request
        .url
        .clone()
        .unwrap_or_else(|| spec.url_for(request.period));
    let redacted = source::redact_source(&location);
    // A file of many periods is one download with no period of its own;
    // each period it publishes gets its own ledger row.
    let load_id = ledger::start(
        &**client,
        &spec.dataset,
        Some(&program_code),
        (!tabulated).then_some(request.period),
        &redacted,
        request.force,
    )
    .await?;
    tracing::info!(load_id, dataset = %spec.dataset, period = %request.period, source = %redacted, "load started");
    let mut stats = serde_json::json!({});
    let session = Arc::new(std::sync::Mutex::new(None));
    let input = AttemptInput {
        program_id,
        program_code: &program_code,
        paid_per_family: program.as_ref().is_some_and(|p| p.paid_per_family),
        municipalities,
        location: &location,
        redacted: &redacted,
        load_id,
        nis_key,
        session: session.clone(),
        step,
    };
    let attempt = if tabulated {
        Either::Left(tabulated::attempt(
            ctx, &client, request, input, progress, &mut stats,
        ))
    } else {
        Either::Right(attempt(ctx, &client, request, input, progress, &mut stats))
    };
    let result = tokio::select! {
        result = attempt => result,
        () = cancel => {
            // Dropping the attempt queues a ROLLBACK behind whatever the
            // server is running (a COPY, an aggregate); cancel that first so
            // the transaction, its leaf and the month's lock go now.
            let token = session.lock().ok().and_then(|mut t| t.take());
            if let Some(token) = token {
                if let Err(e) = token.cancel_query(ctx.tls.clone()).await {
                    tracing::warn!(error = %crate::db::describe_db(&e), "failed to cancel the load's statement");
                }
            }
            Err(LoadError::Cancelled)
        }
    };
    match &result {
        Ok(report) if report.outcome == Outcome::Unchanged => {
            ledger::finish_unpublished(
                &**client,
                load_id,
                LedgerStatus::Skipped,
                Some("unchanged"),
                None,
                &stats,
            )
            .await?;
            tracing::info!(
                load_id,
                "source unchanged since the published load; skipped"
            );
        }
        Ok(report) => {
            tracing::info!(
                load_id,
                rows = report.rows_loaded,
                seconds = report.seconds,
                "load published"
            );
        }
        Err(error) => {
            let message = error.to_string();
            let status = match error {
                LoadError::Cancelled => LedgerStatus::Cancelled,
                _ => LedgerStatus::Failed,
            };
            if let Err(e) = ledger::finish_unpublished(
                &**client,
                load_id,
                status,
                Some(&*error.code().as_str()),
                Some(&message),
                &stats,
            )
            .await
            {
                tracing::error!(error = %crate::db::describe_db(&e), "failed to record the failure in the ledger");
            }
            tracing::error!(load_id, code = %error.code(), error = %message, "load failed");
        }
    }
    result
}

/// FNV-1a, 32 bits: a stable number for a name.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// A `state_level` spec's shipped table as the parser needs it: its name
/// and key → state id (`ids`: abbreviation → id). A state the table names
/// that `ids` lacks fails the load.
pub(crate) fn places(
    spec: &Spec,
    ids: &std::collections::HashMap<String, i32>,
) -> Result<(String, std::collections::HashMap<u64, i32>), LoadError> {
    let Some(map) = &spec.state_map else {
        return Ok(Default::default());
    };
    let mut places = std::collections::HashMap::new();
    for (key, uf) in &map.entries {
        let id = ids.get(uf).ok_or_else(|| {
            LoadError::Reference(format!(
                "{}: state {uf} of jobs/reference/{}.csv is not in the states table (run `carga run municipios`)",
                spec.dataset, map.name
            ))
        })?;
        places.insert(*key, *id);
    }
    Ok((map.name.clone(), places))
}

/// The load's own connection, its cancel token handed to the caller.
/// Taken out of the pool: when a cancel drops the attempt mid-statement,
/// the connection closes (the server rolls back) instead of going back to
/// the pool with a ROLLBACK queued, where the cancel request sent next
/// could hit another task's statement on the same backend.
async fn load_connection(
    ctx: &Context,
    input: &AttemptInput<'_>,
) -> Result<deadpool_postgres::ClientWrapper, LoadError> {
    let connection = deadpool_postgres::Object::take(ctx.pool.get().await?);
    if let Ok(mut slot) = input.session.lock() {
        *slot = Some(connection.cancel_token());
    }
    Ok(connection)
}

/// The load transaction's first statements: its name for the caller's step
/// (which hears the backend's pid) and its time limits.
async fn begin(
    tx: &tokio_postgres::Transaction<'_>,
    settings: &Settings,
    step: Option<&dyn PublishStep>,
) -> Result<(), LoadError> {
    if let Some(step) = step {
        step.load_session(load::session::name(tx, &step.application_name()).await?);
    }
    let db = &settings.database;
    load::session::limit(tx, db.statement_timeout_s, db.lock_timeout_ms).await?;
    Ok(())
}

struct AttemptInput<'a> {
    program_id: i32,
    program_code: &'a str,
    paid_per_family: bool,
    municipalities: MunicipalityIndex,
    location: &'a str,
    redacted: &'a str,
    load_id: i64,
    nis_key: SecretString,
    /// Filled with the load connection's cancel token once it has one.
    session: Arc<std::sync::Mutex<Option<tokio_postgres::CancelToken>>>,
    step: Option<&'a dyn PublishStep>,
}

/// One attempt, as its list of steps: ask the source (conditionally), open
/// the load transaction, stream into a hidden leaf, check, publish.
#[tracing::instrument(skip_all, fields(load_id = input.load_id))]
async fn attempt(
    ctx: &Context,
    client: &tokio_postgres::Client,
    request: &LoadRequest,
    input: AttemptInput<'_>,
    progress: Arc<Progress>,
    stats: &mut serde_json::Value,
) -> Result<LoadReport, LoadError> {
    let started = Instant::now();
    let (spec, period, settings) = (&request.spec, request.period, &ctx.settings);
    let mut report = LoadReport::new(input.load_id, input.redacted);
    let current = ledger::current(client, input.program_code, period).await?;
    let conditional = match (&current, request.force) {
        (Some(c), false) => Some(Validators {
            etag: c.etag.clone().filter(|e| !e.starts_with("W/")),
            last_modified: c.last_modified.clone(),
        }),
        _ => None,
    };

    // 1. The source, asked with the published load's validators.
    let opened = stages::open_source(
        spec,
        input.location,
        settings,
        conditional.as_ref(),
        request.redirect_guard.clone(),
        &progress,
    )
    .await;
    let opened = match opened? {
        OpenOutcome::NotModified(meta) => {
            // No lock is taken on this path: sweep dead attempts here too.
            ledger::abandon_dead(client).await?;
            report.file = meta.file_name;
            return Ok(report.unchanged(started));
        }
        OpenOutcome::Body(opened) => opened,
    };
    let meta = opened.meta.clone();
    report.file = meta.file_name.clone();

    // 2. The load transaction: named, bounded, locked, with a hidden leaf.
    let mut connection = load_connection(ctx, &input).await?;
    let tx = connection.transaction().await?;
    begin(&tx, settings, input.step).await?;
    if !load::session::try_lock(&tx, input.program_id, period).await? {
        return Err(LoadError::Busy {
            dataset: spec.dataset.clone(),
            period,
        });
    }
    // Holding the lock: 'running' rows whose process is gone are dead
    // attempts. Marked on the ledger connection, so a later failure or skip
    // of this load does not roll the mark back.
    ledger::abandon_stale(client, input.program_code, period, input.load_id).await?;
    let leaf = load::create_leaf(
        &tx,
        input.program_code,
        input.program_id,
        period,
        input.load_id,
    )
    .await?;

    // 3. The stream: download → inflate → parse → COPY into the leaf.
    progress.set_stage("stream");
    let (byte_tx, byte_rx) = mpsc::channel(settings.load.download_depth);
    let (copy_tx, copy_rx) = mpsc::channel(settings.load.channel_depth);
    let first = Arc::new(FirstFailure::default());
    let download = stages::spawn_download(opened, byte_tx, settings, &progress, &first);
    let parse_input = ParseInput {
        spec: spec.clone(),
        municipalities: input.municipalities,
        period: Some(period),
        nis_key: input.nis_key,
        limits: settings.limits.clone(),
        file: meta.file_name.clone(),
        places: Default::default(),
        periods: None,
    };
    let municipalities = parse_input.municipalities.len();
    let (chunk_bytes, spill_dir, threads) = (
        settings.load.copy_chunk_bytes,
        settings.load.spill_dir(),
        settings.load.count_threads(),
    );
    let sink = move || {
        CopySink::new(
            copy_tx,
            chunk_bytes,
            period,
            municipalities,
            spill_dir,
            threads,
        )
    };
    let parser = parser::spawn_parser(byte_rx, parse_input, sink, &progress, &first);
    let copied = load::copy_into(&tx, &leaf, copy_rx, parser).await;
    if let Err(LoadError::Db { .. }) = &copied {
        // The server refused the COPY; the parser then fails to send.
        first.record(Stage::Stream);
    }
    if copied.is_err() && !download.is_finished() {
        download.abort();
    }
    let downloaded = stages::join_download(download).await;
    let ((copied_rows, summary), download) = first.root_cause(copied, downloaded)?;
    let stream_seconds = started.elapsed().as_secs_f64();
    report.bytes = download.bytes;
    report.file = summary.file.clone();
    report.rows_read = summary.rows_read;
    report.rows_loaded = summary.rows_loaded;
    report.rows_rejected = summary.rows_rejected;
    report.decompressed_bytes = summary.decompressed_bytes;
    report.rejects = summary.rejects.iter().take(20).cloned().collect();
    *stats = serde_json::json!({
        "bytes": download.bytes,
        "sha256": hex::encode(download.sha256),
        "rows_read": summary.rows_read,
        "rows_rejected": summary.rows_rejected,
        "spilled_bytes": summary.spilled_bytes,
        "layout": summary.layout,
        "stage_seconds": ledger::stage_seconds(&[("stream", stream_seconds)]),
    });
    tracing::debug!(
        seconds = stream_seconds,
        spilled_bytes = summary.spilled_bytes,
        "stream finished"
    );

    // 4. The guards.
    guards::check_stream(&spec.quality, &summary, copied_rows)?;
    let unchanged = current
        .as_ref()
        .and_then(|c| c.sha256.as_deref())
        .is_some_and(|sha| sha == download.sha256);
    if unchanged && !request.force {
        return Ok(report.unchanged(started)); // the transaction rolls back on drop
    }
    if !request.force {
        if let Some(baseline) = ledger::baseline(client, input.program_code, period).await? {
            guards::check_shrink(
                &spec.quality,
                &summary.file,
                summary.rows_loaded,
                baseline.rows_loaded,
                Period::from_date(baseline.period),
            )?;
        }
    }

    // 5. Aggregates, swap, ledger, the caller's step, COMMIT.
    let publish = publish::Publish {
        spec,
        period,
        program_id: input.program_id,
        program_code: input.program_code,
        paid_per_family: input.paid_per_family,
        load_id: input.load_id,
        leaf: &leaf,
        meta: &meta,
        download: &download,
        summary: &summary,
        stream_seconds,
        step: input.step,
    };
    publish.run(tx, &progress, &mut report).await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
