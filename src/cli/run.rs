//! `carga run <dataset> --period YYYY-MM [--url URL] [--force]`: one load,
//! inline, with live progress and a summary. SIGINT and SIGTERM cancel it.

use std::sync::Arc;

use anyhow::anyhow;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{CliResult, Failure, brl, usage};
use crate::config::Settings;
use crate::dataset::{self, Period};
use crate::engine::pipeline::{self, LoadReport, LoadRequest, Outcome};
use crate::engine::source::Progress;

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Dataset name (a Portal slug, or `municipios`).
    pub(crate) dataset: String,
    /// The month to load, YYYY-MM.
    #[arg(long)]
    pub(crate) period: Option<String>,
    /// Load this URL or path instead of the spec's.
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// Publish even if unchanged or smaller than the guard allows.
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) async fn run(settings: Settings, args: RunArgs) -> CliResult {
    let spec = dataset::find(&settings.load.jobs_dir, &args.dataset).map_err(usage)?;
    if spec.kind.is_snapshot() {
        if args.period.is_some() {
            return Err(usage(anyhow!(
                "{} is {} data (a snapshot), not monthly: --period does not apply",
                spec.dataset,
                spec.kind.as_str()
            )));
        }
        let cancel = super::cancel_on_signal();
        let ctx = super::connect(&settings).await?;
        let report = load_snapshot(&ctx, &spec, args.url.as_deref(), args.force, &cancel).await?;
        println!(
            "{}: published (load {}): {} in {:.2}s",
            spec.dataset, report.load_id, report.summary, report.seconds
        );
        return Ok(());
    }
    // One file of aggregates holds every period: --period only names the
    // one the run is for (the current month by default).
    let tabulated = spec.kind.is_tabulated();
    let period = match args.period.as_deref() {
        Some(text) => {
            Period::parse(text).ok_or_else(|| usage(anyhow!("--period {text:?} is not YYYY-MM")))?
        }
        None if spec.one_file() => spec.current_period(),
        None => {
            return Err(usage(anyhow!(
                "--period YYYY-MM is required for {}",
                spec.dataset
            )));
        }
    };
    if settings.nis_key.is_none() && !tabulated {
        return Err(usage(pipeline::LoadError::NoNisKey));
    }
    spec.check_period(period, args.force).map_err(usage)?;
    let cancel = super::cancel_on_signal();
    let ctx = super::connect(&settings).await?;
    let request = LoadRequest {
        spec,
        period,
        url: args.url,
        force: args.force,
        redirect_guard: None,
    };
    let report = run_with_progress(&ctx, &request, settings.nis_key.clone(), &cancel).await?;
    print_report(&request, &report);
    Ok(())
}

/// Loads a snapshot (the states and municipalities, or places); `cancel`
/// (SIGINT, SIGTERM) drops the attempt, which rolls its transaction back.
pub(crate) async fn load_snapshot(
    ctx: &pipeline::Context,
    spec: &dataset::Spec,
    url: Option<&str>,
    force: bool,
    cancel: &CancellationToken,
) -> Result<crate::engine::snapshot::SnapshotReport, Failure> {
    crate::engine::snapshot::run(ctx, spec, url, force, cancel.cancelled())
        .await
        .map_err(|e| Failure::Failed(e.into()))
}

/// Runs the load with a progress display; `cancel` (SIGINT, SIGTERM)
/// cancels it (the transaction rolls back and the previous data stays).
pub(crate) async fn run_with_progress(
    ctx: &pipeline::Context,
    request: &LoadRequest,
    nis_key: Option<secrecy::SecretString>,
    cancel: &CancellationToken,
) -> Result<LoadReport, Failure> {
    let poll = std::time::Duration::from_secs(ctx.settings.http.preparing_poll_s.max(1));
    let limit = std::time::Duration::from_secs(ctx.settings.http.preparing_limit_s);
    let started = std::time::Instant::now();
    loop {
        let progress = Arc::new(Progress::default());
        let label = format!("{} {}", request.spec.dataset, request.period);
        let (ticker, bar) = super::spawn_progress(progress.clone(), label);
        let result =
            pipeline::run(ctx, request, nis_key.clone(), progress, cancel.cancelled()).await;
        super::finish_progress(ticker, bar);
        match result {
            // The source is preparing the file (HTTP 202): no queue here
            // to wait in, so wait inline, up to http.preparing_limit_s.
            Err(e)
                if e.code() == crate::code::Code::SourcePreparing && started.elapsed() < limit =>
            {
                let wait = e
                    .retry_after()
                    .unwrap_or(poll)
                    .min(limit - started.elapsed());
                eprintln!(
                    "carga: waiting for the Portal to prepare the file (HTTP 202); asking again in {} s",
                    wait.as_secs().max(1)
                );
                tokio::select! {
                    () = cancel.cancelled() => {
                        return Err(Failure::Failed(pipeline::LoadError::Cancelled.into()));
                    }
                    () = tokio::time::sleep(wait.max(std::time::Duration::from_secs(1))) => {}
                }
            }
            result => return result.map_err(|e| Failure::Failed(e.into())),
        }
    }
}

pub(crate) fn print_report(request: &LoadRequest, r: &LoadReport) {
    let outcome = match r.outcome {
        Outcome::Published => "published",
        Outcome::Unchanged => "unchanged since the published load, skipped (use --force to reload)",
    };
    if request.spec.kind.is_tabulated() {
        println!("{}: {} (load {})", request.spec.dataset, outcome, r.load_id);
    } else {
        println!(
            "{} {}: {} (load {})",
            request.spec.dataset, request.period, outcome, r.load_id
        );
    }
    println!("  source          {}", r.source);
    println!("  file            {}", r.file);
    println!(
        "  bytes           {} downloaded, {} decompressed",
        r.bytes, r.decompressed_bytes
    );
    println!(
        "  rows            {} read, {} loaded, {} rejected",
        r.rows_read, r.rows_loaded, r.rows_rejected
    );
    if !r.periods.is_empty() {
        let (published, kept): (Vec<_>, Vec<_>) = r.periods.iter().partition(|p| p.published);
        let list = |ps: &[&pipeline::PeriodOutcome]| {
            ps.iter()
                .map(|p| format!("{} ({} rows)", p.period, p.rows))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  periods         {} in the file: {} published, {} unchanged",
            r.periods.len(),
            published.len(),
            kept.len()
        );
        if !published.is_empty() {
            println!("  published       {}", list(&published));
        }
        if !r.periods.iter().any(|p| p.period == request.period) {
            println!(
                "  note            the file holds no rows for {}",
                request.period
            );
        }
    } else if r.outcome == Outcome::Published {
        println!(
            "  beneficiaries   {} distinct in {} municipalities",
            r.distinct_beneficiaries, r.municipalities
        );
        println!("  value           {}", brl(r.value_cents));
    }
    let stages: Vec<String> = r
        .stage_seconds
        .iter()
        .map(|(k, v)| format!("{k} {v:.2}s"))
        .collect();
    println!(
        "  seconds         {:.2} ({:.0} rows/s){}",
        r.seconds,
        r.rows_per_second(),
        if stages.is_empty() {
            String::new()
        } else {
            format!("; {}", stages.join(", "))
        }
    );
    if !r.rejects.is_empty() {
        println!("  first rejects:");
        for reject in r.rejects.iter().take(5) {
            println!(
                "    line {}{}: {}",
                reject.line,
                reject
                    .column
                    .as_ref()
                    .map(|c| format!(", column {c:?}"))
                    .unwrap_or_default(),
                reject.reason
            );
        }
    }
}
