//! The command line: one file per subcommand (args, run). Exit codes:
//! 0 success (including "unchanged, skipped"), 1 the load failed, 2 bad
//! usage or configuration. Errors print their whole chain on one line.

mod datasets;
mod demo;
mod migrate;
mod run;
mod sample;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::pipeline::Context;

#[derive(Debug, Parser)]
#[command(
    name = "carga",
    version,
    about = "Streams Portal da Transparência payment files into PostgreSQL"
)]
pub struct Cli {
    /// A TOML file layered over config/default.toml (env CARGA__… wins over both).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Generate a Portal-format sample file (for benchmarks).
    #[command(hide = true)]
    Sample(sample::SampleArgs),
}

/// A command's failure and its exit code.
#[derive(Debug)]
pub enum Failure {
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

pub type CliResult = Result<(), Failure>;

pub fn usage(e: impl Into<anyhow::Error>) -> Failure {
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
            eprintln!("carga: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init("info");
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
            eprintln!("carga: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("carga: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(command: Command, settings: Settings) -> CliResult {
    match command {
        Command::Migrate => migrate::run(settings).await,
        Command::Run(args) => run::run(settings, args).await,
        Command::Validate(args) => validate::run(settings, args).await,
        Command::Datasets => datasets::run(settings).await,
        Command::Demo(args) => demo::run(settings, args).await,
        Command::Sample(args) => sample::run(args),
    }
}

/// Resolves the database, applies migrations and builds the pool.
pub async fn connect(settings: &Settings) -> Result<Context, Failure> {
    use anyhow::Context as _;
    let target = crate::db::resolve(settings)
        .await
        .context("failed to reach the database")?;
    tracing::info!(database = %target.description, "database");
    crate::db::migrate(&target.config)
        .await
        .context("failed to migrate the schema")?;
    let pool = crate::db::pool(&target, settings).context("failed to build the pool")?;
    Ok(Context {
        settings: settings.clone(),
        pool,
    })
}

/// Live progress: a bar on a terminal, a log line every 10 s otherwise.
pub fn spawn_progress(
    progress: Arc<crate::source::Progress>,
    label: String,
) -> (tokio::task::JoinHandle<()>, Option<indicatif::ProgressBar>) {
    use std::io::IsTerminal;
    use std::sync::atomic::Ordering;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label.clone());
        bar
    });
    let bar_for_task = bar.clone();
    let task = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut last_log = std::time::Instant::now();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let bytes = progress.bytes.load(Ordering::Relaxed);
            let total = progress.total_bytes.load(Ordering::Relaxed);
            let rows = progress.rows.load(Ordering::Relaxed);
            let rate = rows as f64 / started.elapsed().as_secs_f64().max(0.001);
            match &bar_for_task {
                Some(bar) => {
                    if total > 0 {
                        bar.set_length(total);
                    }
                    bar.set_position(bytes);
                    bar.set_message(format!("{rows} rows ({rate:.0}/s)"));
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

/// `12345678` cents → `R$ 123.456,78`.
pub fn brl(cents: i64) -> String {
    format!("R$ {}", crate::sample::format_brl(cents))
}
