//! `carga schedule [--json]`: per dataset, the next scheduled run, the last
//! success, freshness and the gaps in the published periods.

use clap::Args;

use super::{CliResult, Failure};
use crate::config::Settings;

#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn run(settings: Settings, args: ScheduleArgs) -> CliResult {
    let specs = crate::dataset::load_all(&settings.load.jobs_dir).map_err(super::usage)?;
    let client = super::database_read_only(&settings).await?;
    let statuses = crate::service::freshness::datasets(&**client, &specs)
        .await
        .map_err(|e| Failure::Failed(crate::engine::pipeline::LoadError::from(e).into()))?;
    if args.json {
        return super::print_json(&statuses);
    }
    println!(
        "{:<26} {:<17} {:<8} {:<17} {:>9} {:<17} {:<10} GAPS",
        "DATASET", "NEXT RUN (UTC)", "LAST", "PUBLISHED (UTC)", "AGE", "LAST SUCCESS", "AT SOURCE"
    );
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "-".into())
    };
    for s in statuses {
        let age = s
            .freshness_seconds
            .map(|secs| format!("{:.1}d", secs / 86_400.0))
            .unwrap_or_else(|| "-".into());
        let gaps = match s.gaps.len() {
            0 => "none".to_string(),
            n if n <= 4 => s.gaps.join(" "),
            n => format!("{n} months ({} … {})", s.gaps[0], s.gaps[n - 1]),
        };
        // The latest period the source has; `!` when it is ahead of us.
        let at_source = match (&s.source_latest_period, s.source_ahead_since) {
            (Some(p), Some(_)) => format!("{p}!"),
            (Some(p), None) => p.clone(),
            (None, _) => "-".into(),
        };
        println!(
            "{:<26} {:<17} {:<8} {:<17} {:>9} {:<17} {:<10} {}",
            s.dataset,
            time(s.next_run),
            s.last_published_period.as_deref().unwrap_or("-"),
            time(s.last_published_at),
            age,
            time(s.last_success_at),
            at_source,
            gaps
        );
        if let Some(since) = s.source_ahead_since {
            println!(
                "  {}: the source has had {} since {} and it is not published",
                s.dataset,
                s.source_latest_period
                    .as_deref()
                    .unwrap_or("a newer period"),
                since.format("%Y-%m-%d %H:%M UTC")
            );
        }
    }
    Ok(())
}
