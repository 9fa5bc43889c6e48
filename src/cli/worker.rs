//! `carga worker [--once]`: run queued loads until SIGTERM/SIGINT (graceful:
//! no new claims, running loads get `queue.shutdown_grace_s`, then are
//! cancelled and released for another worker). `--once`: claim at most one
//! job, run it, exit (0 when nothing failed).

use std::sync::Arc;

use clap::Args;

use super::{CliResult, Failure};
use crate::config::Settings;
use crate::service::runner::RunOne;

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Run at most one job, then exit.
    #[arg(long)]
    pub(crate) once: bool,
    /// Loads at once (overrides queue.concurrency).
    #[arg(long)]
    pub(crate) concurrency: Option<usize>,
    /// Serve this process's /metrics and /health here (overrides
    /// queue.metrics_listen; off when both are empty).
    #[arg(long)]
    pub(crate) metrics_listen: Option<String>,
}

pub(crate) async fn run(mut settings: Settings, args: WorkerArgs) -> CliResult {
    if let Some(n) = args.concurrency {
        settings.queue.concurrency = n;
    }
    super::require_nis_key(&settings)?;
    let shutdown = super::cancel_on_signal();
    let runner = super::runner(&settings).await?;
    let listen = args
        .metrics_listen
        .unwrap_or_else(|| settings.queue.metrics_listen.clone());
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    let _stop_metrics_on_exit = stop_metrics.clone().drop_guard();
    if !listen.is_empty() {
        let router = crate::service::http::worker_router(crate::telemetry::metric::handle());
        let specs = crate::service::runner::specs(&settings).map_err(super::usage)?;
        crate::telemetry::register_series(specs.iter().map(|s| s.dataset.as_str()));
        let server =
            crate::service::http::Server::bind_router(&listen, router, Arc::new(settings.clone()))
                .await
                .map_err(|e| super::usage(anyhow::anyhow!("cannot listen on {listen}: {e}")))?;
        let address = server.local_addr().map_err(|e| Failure::Failed(e.into()))?;
        tracing::info!(%address, "metrics listening");
        tokio::spawn(server.serve(stop_metrics));
    }
    if args.once {
        return match runner.run_one_until(shutdown.clone()).await {
            Ok(RunOne::Empty) => {
                eprintln!("carga: no job was waiting");
                Ok(())
            }
            Ok(RunOne::Ran { job_id, ending }) => {
                println!("job {job_id}: {ending}");
                match ending.as_str() {
                    "published" | "unchanged" => Ok(()),
                    _ => Err(Failure::Failed(anyhow::anyhow!(
                        "job {job_id} ended {ending}"
                    ))),
                }
            }
            Err(e) => Err(Failure::Failed(e.into())),
        };
    }
    Arc::new(runner).run(shutdown.cancelled_owned()).await;
    Ok(())
}
