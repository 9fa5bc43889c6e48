//! `carga job <id> [--json]`: one job — state, attempts with their errors,
//! progress and timings. `--json` prints the same shape as
//! `GET /v1/jobs/{id}`, with a top-level `state`.

use clap::Args;

use super::{CliResult, Failure};
use crate::config::Settings;
use crate::service::queue::{self, JobView, QueueError};

#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    pub(crate) id: i64,
    #[arg(long)]
    pub(crate) json: bool,
}

/// A missing job is the operator's mistake (exit 2), anything else exit 1.
pub(crate) fn queue_failure(e: QueueError) -> Failure {
    match e {
        QueueError::NotFound(_) | QueueError::WrongState { .. } | QueueError::Conflict { .. } => {
            Failure::Usage(e.into())
        }
        e => Failure::Failed(e.into()),
    }
}

pub(crate) async fn run(settings: Settings, args: JobArgs) -> CliResult {
    let client = super::database_read_only(&settings).await?;
    let job = queue::get(&**client, args.id)
        .await
        .map_err(queue_failure)?;
    if args.json {
        return super::print_json(&job);
    }
    println!(
        "job {} — {} {}: {}",
        job.id, job.dataset, job.period, job.state
    );
    println!(
        "  enqueued        {} by {}{}",
        job.enqueued_at.format("%Y-%m-%d %H:%M:%S UTC"),
        job.enqueued_by,
        job.sender
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    );
    if let Some(slot) = job.slot {
        println!("  slot            {}", slot.format("%Y-%m-%d %H:%M UTC"));
    }
    if let Some(source) = &job.source {
        println!("  source          {source}");
    }
    println!(
        "  priority        {}{}",
        if job.priority == 0 {
            "fresh"
        } else {
            "backfill"
        },
        if job.force { ", forced" } else { "" }
    );
    println!("  attempts        {} of {}", job.attempt, job.max_attempts);
    if job.state.is_pending() {
        println!(
            "  next attempt    {}",
            job.scheduled_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    if job.state == crate::service::queue::JobState::Running {
        println!("  progress        {}", progress_line(&job));
        if let Some(worker) = &job.worker {
            println!("  worker          {worker}");
        }
    }
    if let Some(seconds) = job.seconds {
        println!("  seconds         {seconds:.1}");
    }
    if let (Some(outcome), Some(load)) = (&job.outcome, job.load_id) {
        println!("  outcome         {outcome} (load {load})");
    }
    if let (Some(code), Some(error)) = (&job.error_code, &job.error) {
        println!("  error           {code}: {error}");
    }
    for a in &job.attempts {
        println!(
            "  attempt {:<3}     {} on {}: {}{}",
            a.attempt,
            a.started_at.format("%Y-%m-%d %H:%M:%S"),
            a.worker,
            a.outcome.as_deref().unwrap_or("running"),
            a.error_code
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// A running job's progress in one line.
pub(crate) fn progress_line(job: &JobView) -> String {
    let p = job.progress_view();
    let figures = crate::money::download_figures(
        p.bytes,
        p.percent.map(|percent| (p.total_bytes, percent)),
        p.rows,
        p.rate,
        p.eta_seconds,
    ) + &crate::money::fetched_ahead(p.ahead);
    format!("{} {}, {figures}", job.state, p.stage)
}

/// A finished job in one line.
pub(crate) fn summary_line(job: &JobView) -> String {
    match job.state {
        crate::service::queue::JobState::Succeeded => format!(
            "job {} succeeded: {} {} {} (load {}) after {} attempt(s)",
            job.id,
            job.dataset,
            job.period,
            job.outcome.as_deref().unwrap_or("done"),
            job.load_id.unwrap_or(0),
            job.attempt
        ),
        state => format!(
            "job {} {state}: {}",
            job.id,
            job.error.as_deref().unwrap_or("")
        ),
    }
}
