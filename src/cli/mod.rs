//! The command line: one file per subcommand (args, run). Exit codes:
//! 0 success (including "unchanged, skipped"), 1 the load failed, 2 bad
//! usage or configuration. Errors print their whole chain on one line.

mod backfill;
mod cancel;
mod datasets;
mod demo;
mod enqueue;
mod job;
mod jobs;
mod migrate;
mod retry;
mod run;
mod sample;
mod schedule;
mod serve;
mod validate;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::engine::pipeline::Context;

#[derive(Debug, Parser)]
#[command(
    name = "carga",
    version,
    about = "Streams Portal da Transparência payment files into PostgreSQL"
)]
struct Cli {
    /// A TOML file layered over config/default.toml (env CARGA__… wins over both).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create or upgrade the schema.
    Migrate,
    /// Load one period of one dataset inline.
    Run(run::RunArgs),
    /// Parse and check a file without loading it; print the reject report.
    Validate(validate::ValidateArgs),
    /// List the dataset specs with their schedule and last published period.
    Datasets,
    /// Migrate, load reference data and a generated sample over loopback HTTP,
    /// and print the aggregates. Needs nothing but a PostgreSQL.
    Demo(demo::DemoArgs),
    /// Write a generated Portal-format ZIP (synthetic people) and/or the same
    /// rows as a clean CSV, for benchmarks and trials. No database needed.
    Sample(sample::SampleArgs),
    /// Queue one load (prints the job id; the pending one when deduplicated).
    Enqueue(enqueue::EnqueueArgs),
    /// Queue every month of a range, behind fresh months.
    Backfill(backfill::BackfillArgs),
    /// List jobs.
    Jobs(jobs::JobsArgs),
    /// Show one job: attempts, errors, progress, timings.
    Job(job::JobArgs),
    /// Cancel a job (a running one stops and rolls back).
    Cancel(cancel::CancelArgs),
    /// Run a failed, cancelled or retryable job again.
    Retry(retry::RetryArgs),
    /// Per dataset: next run, last success, freshness, gaps.
    Schedule(schedule::ScheduleArgs),
    /// Run queued loads until SIGTERM/SIGINT.
    Worker(worker::WorkerArgs),
    /// The HTTP API and console, the scheduler and the workers in one process.
    Serve(serve::ServeArgs),
}

impl Command {
    /// Long-running services log at INFO even on a terminal.
    fn is_service(&self) -> bool {
        matches!(self, Command::Worker(_) | Command::Serve(_))
    }
}

/// A command's failure and its exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Exit 2.
    Usage(anyhow::Error),
    /// Exit 1.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

pub(crate) type CliResult = Result<(), Failure>;

pub(crate) fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Usage(e.into())
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("carga: {}", one_line(&anyhow::Error::from(e)));
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(cli.command.is_service());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("carga: failed to start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(dispatch(cli.command, settings));
    // Do not wait for stray blocking tasks (a cancelled parser drains on its own).
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("carga: {}", one_line(&e));
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("carga: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line: a cause whose text its parent
/// already quotes is not repeated ("x: y: y"), and line breaks (a
/// database's multi-line message) become spaces.
fn one_line(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(part.trim()) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn dispatch(command: Command, settings: Settings) -> CliResult {
    match command {
        Command::Migrate => migrate::run(settings).await,
        Command::Run(args) => run::run(settings, args).await,
        Command::Validate(args) => {
            refuse_reference_validation(&settings, &args.dataset)?;
            validate::run(settings, args).await
        }
        Command::Datasets => datasets::run(settings).await,
        Command::Demo(args) => demo::run(settings, args).await,
        Command::Sample(args) => sample::run(args),
        Command::Enqueue(args) => enqueue::run(settings, args).await,
        Command::Backfill(args) => backfill::run(settings, args).await,
        Command::Jobs(args) => jobs::run(settings, args).await,
        Command::Job(args) => job::run(settings, args).await,
        Command::Cancel(args) => cancel::run(settings, args).await,
        Command::Retry(args) => retry::run(settings, args).await,
        Command::Schedule(args) => schedule::run(settings, args).await,
        Command::Worker(args) => worker::run(settings, args).await,
        Command::Serve(args) => serve::run(settings, args).await,
    }
}

/// A real load refuses to start without the NIS key (exit 2).
pub(crate) fn require_nis_key(settings: &Settings) -> CliResult {
    if settings.nis_key.is_none() {
        return Err(usage(crate::engine::pipeline::LoadError::NoNisKey));
    }
    Ok(())
}

/// The runner of a worker process: the database resolved (never a
/// private cluster), migrated, and the runner assembled by the app.
pub(crate) async fn runner(settings: &Settings) -> Result<crate::service::runner::Runner, Failure> {
    let app = crate::app::App::connect(settings.clone())
        .await
        .map_err(app_failure)?;
    tracing::info!(database = %app.target().description, "database");
    migrate_before_load(app.target()).await?;
    app.runner().map_err(app_failure)
}

/// The exit code of a failure to assemble the app: 2 for a configuration
/// mistake (a database that does not exist, a broken spec), else 1.
pub(crate) fn app_failure(error: crate::app::AppError) -> Failure {
    use crate::app::AppError;
    match error {
        AppError::Database(e) => db_failure(e, "failed to reach the database"),
        AppError::Specs(e) => usage(e),
        e => Failure::Failed(e.into()),
    }
}

/// Applies the migrations once the database answers: a server that is down
/// or restarting is waited for (backoff up to 30 s, each failure logged);
/// a configuration error (unknown database or role, wrong password) ends
/// the wait at once. `Ok(false)`: `stop` fired first.
pub(crate) async fn migrate_when_reachable(
    target: &crate::db::Target,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<bool, Failure> {
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        match crate::db::migrate_reporting(target).await {
            Ok(migration) => {
                if !migration.created_api_tables.is_empty() {
                    tracing::warn!(
                        tables = %migration.created_api_tables.join(", "),
                        "{}",
                        migrate::created_api_tables_note(&migration.created_api_tables)
                    );
                }
                return Ok(true);
            }
            Err(e) if e.is_configuration() => {
                return Err(db_failure(e, "failed to migrate the schema"));
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    retry_in_s = delay.as_secs(),
                    "the database is not reachable yet; not ready, trying again"
                );
            }
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(false),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(30));
    }
}

/// `validate` checks payments files; a reference dataset is a usage error
/// (exit 2), not a failed check.
fn refuse_reference_validation(settings: &Settings, dataset: &str) -> CliResult {
    // An unknown dataset is reported by `validate` itself.
    if let Ok(spec) = crate::dataset::find(&settings.load.jobs_dir, dataset) {
        if spec.kind.is_snapshot() {
            return Err(usage(anyhow::anyhow!(
                "{dataset} is {} data: `validate` checks payments files (load it with `carga run {dataset} [--url FILE]`)",
                spec.kind.as_str()
            )));
        }
    }
    Ok(())
}

/// A database error as a command failure: exit 2 when the configuration is
/// wrong (malformed URL, unknown database or role, wrong password), exit 1
/// when the server is down or a query failed.
pub(crate) fn db_failure(error: crate::db::DbError, what: &str) -> Failure {
    let configuration = error.is_configuration();
    let error = anyhow::Error::from(error).context(what.to_string());
    if configuration {
        Failure::Usage(error)
    } else {
        Failure::Failed(error)
    }
}

/// Resolves the database (`DATABASE_URL`, else a local server or cluster).
pub(crate) async fn resolve(settings: &Settings) -> Result<crate::db::Target, Failure> {
    crate::db::resolve(settings)
        .await
        .map_err(|e| db_failure(e, "failed to reach the database"))
}

/// Applies the migrations.
pub(crate) async fn migrate(target: &crate::db::Target) -> Result<crate::db::Migration, Failure> {
    crate::db::migrate_reporting(target)
        .await
        .map_err(|e| db_failure(e, "failed to migrate the schema"))
}

/// Applies the migrations before a load; warns when they created the
/// API-facing tables (see [`migrate::created_api_tables_note`]).
async fn migrate_before_load(target: &crate::db::Target) -> Result<(), Failure> {
    let migration = migrate(target).await?;
    if !migration.created_api_tables.is_empty() {
        tracing::warn!(
            tables = %migration.created_api_tables.join(", "),
            "{}",
            migrate::created_api_tables_note(&migration.created_api_tables)
        );
    }
    Ok(())
}

/// Applies migrations to `target` and builds the pool.
pub(crate) async fn connect_to(
    settings: &Settings,
    target: &crate::db::Target,
) -> Result<Context, Failure> {
    use anyhow::Context as _;
    tracing::info!(database = %target.description, "database");
    migrate_before_load(target).await?;
    let pool = crate::db::pool(target, settings).context("failed to build the pool")?;
    Ok(Context {
        settings: settings.clone(),
        pool,
        tls: target.tls.clone(),
    })
}

/// One connection to the migrated database, for commands that read or
/// change a few rows.
pub(crate) async fn database(settings: &Settings) -> Result<deadpool_postgres::Object, Failure> {
    let ctx = connect(settings).await?;
    ctx.pool.get().await.map_err(|e| Failure::Failed(e.into()))
}

/// One connection for a command that only reads (`jobs`, `job`,
/// `schedule`): it never migrates, so it works against a read-only replica
/// or role; it checks that the schema is the one this binary knows.
pub(crate) async fn database_read_only(
    settings: &Settings,
) -> Result<deadpool_postgres::Object, Failure> {
    use anyhow::Context as _;
    let target = resolve(settings).await?;
    let pool = crate::db::pool(&target, settings).context("failed to build the pool")?;
    let client = pool.get().await.map_err(|e| {
        Failure::Failed(anyhow::Error::from(e).context("failed to reach the database"))
    })?;
    let unreadable = |e: tokio_postgres::Error| {
        Failure::Failed(anyhow::anyhow!(
            "failed to read the schema version: {}",
            crate::db::describe_db(&e)
        ))
    };
    let applied = crate::db::applied(&**client).await.map_err(unreadable)?;
    let expected = crate::db::migration_count() as i64;
    match applied {
        Some(n) if n == expected => Ok(client),
        None => Err(Failure::Failed(anyhow::anyhow!(
            "{} has no carga schema yet: run `carga migrate` (or start `carga serve` or `carga worker`)",
            target.description
        ))),
        Some(n) if n < expected => Err(Failure::Failed(anyhow::anyhow!(
            "the schema has {n} of this binary's {expected} migrations: run `carga migrate` first"
        ))),
        Some(n) => Err(Failure::Failed(anyhow::anyhow!(
            "the database has {n} migrations, more than this binary's {expected}: use the newer carga"
        ))),
    }
}

/// Prints `value` as indented JSON on stdout (the `--json` of every command).
pub(crate) fn print_json(value: &impl serde::Serialize) -> CliResult {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Failed(e.into()))?;
    println!("{text}");
    Ok(())
}

/// Resolves the database, applies migrations and builds the pool.
pub(crate) async fn connect(settings: &Settings) -> Result<Context, Failure> {
    let target = resolve(settings).await?;
    connect_to(settings, &target).await
}

/// Cancelled on SIGINT (Ctrl-C) or SIGTERM (`docker stop`, systemd, `kill`).
/// The handlers are installed now, so a signal that arrives before the load
/// starts listening still cancels it (instead of killing the process with no
/// ledger entry). Only commands that run a load install them: the others
/// keep the default action and stop at once.
pub(crate) fn cancel_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = interrupt.recv() => tracing::warn!("SIGINT: cancelling"),
                        _ = terminate.recv() => tracing::warn!("SIGTERM: cancelling"),
                    }
                    cancel.cancel();
                });
            }
            (Err(error), _) | (_, Err(error)) => {
                // Without handlers the signals keep their default action.
                tracing::warn!(%error, "cannot install signal handlers");
            }
        }
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    token
}

/// Live progress: a bar on a terminal, a log line every 10 s otherwise.
/// The bar appears only once bytes arrive (no empty `0 B/0 B` bar while
/// the database is set up), shows the total only when the source gave one,
/// and lives in the terminal's progress area, so log lines print above it.
pub(crate) fn spawn_progress(
    progress: Arc<crate::engine::source::Progress>,
    label: String,
) -> (tokio::task::JoinHandle<()>, Option<indicatif::ProgressBar>) {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering;
    let style = |template: &str| {
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ")
    };
    let sized =
        style("{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}");
    let unknown_total = style("{prefix} {bytes} {binary_bytes_per_sec} {msg}");
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::hidden();
        bar.set_style(unknown_total);
        bar.set_prefix(label.clone());
        bar
    });
    let bar_for_task = bar.clone();
    let task = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut last_log = std::time::Instant::now();
        let mut shown = false;
        let mut sized_style = Some(sized);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let bytes = progress.bytes.load(Ordering::Relaxed);
            let total = progress.total_bytes.load(Ordering::Relaxed);
            let rows = progress.rows.load(Ordering::Relaxed);
            let rate = rows as f64 / started.elapsed().as_secs_f64().max(0.001);
            match &bar_for_task {
                Some(_) if bytes == 0 => {}
                Some(bar) => {
                    if total > 0 {
                        if let Some(style) = sized_style.take() {
                            bar.set_style(style);
                        }
                        bar.set_length(total);
                    }
                    bar.set_position(bytes);
                    bar.set_message(format!("{rows} rows ({rate:.0}/s)"));
                    if !shown {
                        crate::telemetry::terminal().add(bar.clone());
                        shown = true;
                    }
                }
                None if last_log.elapsed().as_secs() >= 10 => {
                    last_log = std::time::Instant::now();
                    tracing::info!(%label, bytes, total_bytes = total, rows, rows_per_second = rate as u64, "progress");
                }
                None => {}
            }
        }
    });
    (task, bar)
}

/// Stops the progress display started by [`spawn_progress`].
pub(crate) fn finish_progress(
    ticker: tokio::task::JoinHandle<()>,
    bar: Option<indicatif::ProgressBar>,
) {
    ticker.abort();
    if let Some(bar) = bar {
        bar.finish_and_clear();
        crate::telemetry::terminal().remove(&bar);
    }
}

pub(crate) use crate::money::brl;

#[cfg(test)]
mod one_line_tests {
    use super::one_line;
    use crate::engine::decode::DecodeError;
    use crate::engine::pipeline::LoadError;

    #[test]
    fn causes_already_quoted_are_not_repeated_and_lines_are_joined() {
        let error = LoadError::Decode {
            file: "x.csv (in x.zip)".into(),
            source: DecodeError::Corrupt("entry \"x.csv\": bad\nblock".into()),
        };
        let text = one_line(&anyhow::Error::from(error).context("failed to load"));
        assert_eq!(
            text,
            "failed to load: x.csv (in x.zip): archive corrupt: entry \"x.csv\": bad block"
        );
    }
}
