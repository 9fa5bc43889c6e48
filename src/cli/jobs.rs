//! `carga jobs [--state S] [--dataset D] [--limit N] [--json]`: running and
//! waiting jobs first, then the most recently finished.

use clap::Args;

use super::{CliResult, Failure};
use crate::config::Settings;
use crate::queue::{self, ListFilter};

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub dataset: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

const STATES: [&str; 6] = [
    "available",
    "running",
    "retryable",
    "succeeded",
    "failed",
    "cancelled",
];

pub async fn run(settings: Settings, args: JobsArgs) -> CliResult {
    if let Some(state) = &args.state {
        if !STATES.contains(&state.as_str()) {
            return Err(super::usage(anyhow::anyhow!(
                "--state {state:?} is not one of {}",
                STATES.join(", ")
            )));
        }
    }
    let ctx = super::connect(&settings).await?;
    let client = ctx
        .pool
        .get()
        .await
        .map_err(|e| Failure::Failed(e.into()))?;
    let jobs = queue::list(
        &**client,
        &ListFilter {
            state: args.state,
            dataset: args.dataset,
            limit: args.limit,
        },
    )
    .await
    .map_err(|e| Failure::Failed(e.into()))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&jobs).map_err(|e| Failure::Failed(e.into()))?
        );
        return Ok(());
    }
    println!(
        "{:>7} {:<26} {:<8} {:<10} {:>7} {:<9} {:<20} DETAIL",
        "ID", "DATASET", "PERIOD", "STATE", "ATTEMPT", "BY", "WHEN (UTC)"
    );
    for job in jobs {
        let when = job.finished_at.unwrap_or(match job.state.as_str() {
            "running" => job.started_at.unwrap_or(job.scheduled_at),
            _ => job.scheduled_at,
        });
        let detail = match job.state.as_str() {
            "running" => super::job::progress_line(&job),
            "succeeded" => job.outcome.clone().unwrap_or_default(),
            _ => job
                .error_code
                .as_deref()
                .map(|c| format!("{c}: {}", job.error.as_deref().unwrap_or("")))
                .unwrap_or_default(),
        };
        println!(
            "{:>7} {:<26} {:<8} {:<10} {:>7} {:<9} {:<20} {}",
            job.id,
            job.dataset,
            job.period,
            job.state,
            format!("{}/{}", job.attempt, job.max_attempts),
            job.enqueued_by,
            when.format("%Y-%m-%d %H:%M:%S"),
            detail.chars().take(100).collect::<String>()
        );
    }
    Ok(())
}
