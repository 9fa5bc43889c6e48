//! `carga serve`: the scheduler and the workers in one process (the HTTP
//! API joins them in a later issue). Every `serve` process runs the
//! scheduler: enqueues are idempotent per slot, so N processes make one job.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::CliResult;
use crate::config::Settings;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Loads at once (overrides queue.concurrency; 0 runs only the scheduler).
    #[arg(long)]
    pub concurrency: Option<usize>,
}

pub async fn run(mut settings: Settings, args: ServeArgs) -> CliResult {
    if let Some(n) = args.concurrency {
        settings.queue.concurrency = n;
    }
    let workers = settings.queue.concurrency > 0;
    if workers {
        super::require_nis_key(&settings)?;
    }
    let shutdown = super::cancel_on_signal();
    let runner = Arc::new(super::runner(&settings).await?);
    let specs = crate::runner::specs(&settings).map_err(super::usage)?;
    let mut scheduler =
        crate::schedule::start(runner.control_pool().clone(), specs, settings.queue.clone())
            .await
            .context("failed to start the scheduler")?;
    tracing::info!("scheduler started");
    if workers {
        runner.run(shutdown.cancelled_owned()).await;
    } else {
        shutdown.cancelled().await;
    }
    scheduler
        .shutdown()
        .await
        .context("failed to stop the scheduler")?;
    Ok(())
}
