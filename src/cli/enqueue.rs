//! `carga enqueue <dataset> --period YYYY-MM [--url URL] [--force] [--wait]`:
//! queue one load (a snapshot dataset, with no period, needs no
//! `--period`: its job is labelled with the current month). Prints the job id alone on stdout (the existing job's
//! when one of that month is already pending) so scripts can capture it;
//! stderr says whether it was new. `--wait` follows the job to its end and
//! exits 0 only if it succeeded.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;

use super::{CliResult, Failure, usage};
use crate::config::Settings;
use crate::dataset::{self, Period, Spec};
use crate::service::queue::{self, NewJob, Priority, Trigger};

#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    pub(crate) dataset: String,
    /// The month, YYYY-MM (not for a snapshot: places, boundaries,
    /// reference data).
    #[arg(long)]
    pub(crate) period: Option<String>,
    /// Load this URL instead of the spec's.
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// Publish even if unchanged or smaller than the guard allows; allow a
    /// period outside the spec's bounds.
    #[arg(long)]
    pub(crate) force: bool,
    /// Wait for the job to end; exit 0 if it succeeded, 1 otherwise.
    #[arg(long)]
    pub(crate) wait: bool,
}

/// The payments spec named `dataset`, or a usage error.
pub(crate) fn payments_spec(settings: &Settings, dataset: &str) -> Result<Spec, Failure> {
    let spec = dataset::find(&settings.load.jobs_dir, dataset).map_err(usage)?;
    if spec.kind.is_snapshot() {
        return Err(usage(anyhow!(
            "{dataset} is {} data (a snapshot with no period): load it with `carga run {dataset}` or `carga enqueue {dataset}`",
            spec.kind.as_str()
        )));
    }
    Ok(spec)
}

pub(crate) fn parse_period(text: &str, flag: &str) -> Result<Period, Failure> {
    Period::parse(text).ok_or_else(|| usage(anyhow!("{flag} {text:?} is not YYYY-MM")))
}

/// A job for `spec` and `period` as an operator asks for it.
pub(crate) fn operator_job(
    settings: &Settings,
    spec: &Spec,
    period: Period,
    url: Option<queue::JobUrl>,
    force: bool,
    priority: Priority,
) -> NewJob {
    NewJob {
        url,
        force,
        ..NewJob::for_spec(
            spec,
            period,
            Trigger::Operator {
                name: std::env::var("USER").unwrap_or_else(|_| "cli".into()),
            },
            priority,
            &settings.queue,
        )
    }
}

pub(crate) async fn run(settings: Settings, args: EnqueueArgs) -> CliResult {
    let spec = dataset::find(&settings.load.jobs_dir, &args.dataset).map_err(usage)?;
    let period = match (&args.period, spec.kind.is_snapshot()) {
        (Some(_), true) => {
            return Err(usage(anyhow!(
                "{} is {} data (a snapshot with no period): --period does not apply",
                spec.dataset,
                spec.kind.as_str()
            )));
        }
        // On demand: the job is labelled with the month it was asked in.
        (None, true) => spec.current_period(),
        (Some(text), false) => parse_period(text, "--period")?,
        (None, false) => {
            return Err(usage(anyhow!(
                "--period YYYY-MM is required for {}",
                spec.dataset
            )));
        }
    };
    spec.check_period(period, args.force).map_err(usage)?;
    let ctx = super::connect(&settings).await?;
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|e| Failure::Failed(e.into()))?;
    let url = args
        .url
        .as_deref()
        .map(|u| queue::JobUrl::new(u, settings.nis_key.as_ref()))
        .transpose()
        .map_err(usage)?;
    let job = operator_job(&settings, &spec, period, url, args.force, Priority::Fresh);
    let enqueued = queue::enqueue(&**client, &job, &queue::Clock::database())
        .await
        .map_err(super::job::queue_failure)?;
    println!("{}", enqueued.id);
    eprintln!(
        "carga: job {} {} ({} {})",
        enqueued.id,
        if enqueued.new {
            "enqueued"
        } else {
            "already pending: deduplicated"
        },
        spec.dataset,
        period
    );
    if !args.wait {
        return Ok(());
    }
    drop(client);
    wait(&ctx, enqueued.id).await
}

/// Follows a job to its end, with a progress bar on a terminal.
async fn wait(ctx: &crate::engine::pipeline::Context, id: i64) -> CliResult {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::hidden();
        bar.set_style(
            indicatif::ProgressStyle::with_template("job {prefix} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(id.to_string());
        crate::telemetry::terminal().add(bar.clone());
        bar
    });
    let cancel = super::cancel_on_signal();
    let job = loop {
        let client = ctx
            .pool
            .get()
            .await
            .map_err(|e| Failure::Failed(e.into()))?;
        let job = queue::get(&**client, id)
            .await
            .map_err(|e| Failure::Failed(e.into()))?;
        drop(client);
        if let Some(bar) = &bar {
            bar.set_message(super::job::progress_line(&job));
        }
        if job.state.is_finished() {
            break job;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = cancel.cancelled() => {
                // Stops waiting; the job itself goes on.
                return Err(Failure::Failed(anyhow!("stopped waiting; job {id} is {} and goes on (`carga cancel {id}` cancels it)", job.state)));
            }
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
        crate::telemetry::terminal().remove(&bar);
    }
    // One line either way: the summary, or the failure as the error.
    let line = super::job::summary_line(&job);
    if job.state == queue::JobState::Succeeded {
        eprintln!("carga: {line}");
        Ok(())
    } else {
        Err(Failure::Failed(anyhow!(line)))
    }
}
