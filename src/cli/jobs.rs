//! `carga jobs [--state S] [--dataset D] [--limit N] [--json]`: running and
//! waiting jobs first, then the most recently finished.

use clap::Args;

use super::{CliResult, Failure};
use crate::config::Settings;
use crate::service::queue::{self, ListFilter};

#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    #[arg(long)]
    pub(crate) state: Option<String>,
    #[arg(long)]
    pub(crate) dataset: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub(crate) limit: i64,
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn run(settings: Settings, args: JobsArgs) -> CliResult {
    if let Some(state) = &args.state {
        if !queue::STATES.contains(&state.as_str()) {
            return Err(super::usage(anyhow::anyhow!(
                "--state {state:?} is not one of {}",
                queue::STATES.join(", ")
            )));
        }
    }
    let client = super::database_read_only(&settings).await?;
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
        return super::print_json(&jobs);
    }
    println!(
        "{:>7} {:<26} {:<8} {:<10} {:>7} {:<9} {:<20} DETAIL",
        "ID", "DATASET", "PERIOD", "STATE", "ATTEMPT", "BY", "WHEN (UTC)"
    );
    for job in jobs {
        let when = job.finished_at.unwrap_or(match job.state {
            queue::JobState::Running => job.started_at.unwrap_or(job.scheduled_at),
            _ => job.scheduled_at,
        });
        let detail = match job.state {
            queue::JobState::Running => super::job::progress_line(&job),
            queue::JobState::Succeeded => job.outcome.clone().unwrap_or_default(),
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
