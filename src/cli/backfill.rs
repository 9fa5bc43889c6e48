//! `carga backfill <dataset> --from YYYY-MM --to YYYY-MM [--force]`: queue
//! every month of a range at backfill priority (a fresh month always runs
//! first) and print how many jobs were new. A dataset whose one file holds
//! every period gets one job.

use anyhow::anyhow;
use clap::Args;

use super::enqueue::{operator_job, parse_period, payments_spec};
use super::{CliResult, Failure, usage};
use crate::config::Settings;
use crate::dataset::Period;
use crate::service::queue::{self, Priority};

#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    pub(crate) dataset: String,
    #[arg(long)]
    pub(crate) from: String,
    #[arg(long)]
    pub(crate) to: String,
    /// Reload months even if unchanged; allow months outside the spec's bounds.
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) async fn run(settings: Settings, args: BackfillArgs) -> CliResult {
    let spec = payments_spec(&settings, &args.dataset)?;
    let from = parse_period(&args.from, "--from")?;
    let to = parse_period(&args.to, "--to")?;
    if from > to {
        return Err(usage(anyhow!("--from {from} is after --to {to}")));
    }
    // A file of many periods is one download whatever the range: one job,
    // for the range's last month, publishes every period the file holds.
    // A month off the dataset's cadence (Auxílio Gás pays every other
    // month) is not a gap: skipped unless --force.
    let periods = if spec.one_file() {
        vec![to]
    } else {
        Period::range(from, to)
            .into_iter()
            .filter(|p| args.force || spec.cadence.pays(*p))
            .collect()
    };
    if spec.one_file() {
        eprintln!(
            "carga: {} is one file holding every period: one job ({to}) loads every period the file holds",
            spec.dataset
        );
    }
    for period in &periods {
        spec.check_period(*period, args.force).map_err(usage)?;
    }
    let client = super::database(&settings).await?;
    let mut new = 0;
    let mut refused = 0;
    for period in &periods {
        let job = operator_job(
            &settings,
            &spec,
            *period,
            None,
            args.force,
            Priority::Backfill,
        );
        match queue::enqueue(&**client, &job, &queue::Clock::database()).await {
            Ok(enqueued) => new += usize::from(enqueued.new),
            // A month whose running job cannot take --force: said, never
            // dropped; the other months go on.
            Err(e @ queue::QueueError::Conflict { .. }) => {
                eprintln!("carga: {e}");
                refused += 1;
            }
            Err(e) => return Err(Failure::Failed(e.into())),
        }
    }
    println!("{new}");
    if refused > 0 {
        return Err(Failure::Failed(anyhow::anyhow!(
            "{refused} of {} months were not enqueued as asked (see above); {new} were",
            periods.len()
        )));
    }
    eprintln!(
        "carga: {new} of {} months of {} enqueued ({from} to {to}); the rest were already pending",
        periods.len(),
        spec.dataset
    );
    Ok(())
}
