//! `carga serve [--listen ADDR] [--concurrency N]`: the HTTP API
//! (webhooks, operator endpoints, health, metrics), the scheduler and the
//! workers in one process. Every `serve` process runs the scheduler:
//! enqueues are idempotent per slot, so N processes make one job.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{CliResult, Failure, usage};
use crate::config::Settings;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Loads at once (overrides queue.concurrency; 0: no workers).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Where the API listens (overrides http.listen).
    #[arg(long)]
    pub listen: Option<String>,
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
    // The database may be down at start: serve anyway (health says live,
    // /ready says why not ready) and migrate once it answers.
    let target = super::resolve(&settings).await?;
    tracing::info!(database = %target.description, "database");
    let runner = Arc::new(super::runner_unmigrated(&settings, &target)?);
    let specs = crate::runner::specs(&settings).map_err(usage)?;
    let listen = args.listen.unwrap_or_else(|| settings.http.listen.clone());
    // Without an operator token the console and the operator API refuse
    // everyone; on a non-loopback address that is a misconfiguration.
    let loopback = listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
        || listen.starts_with("localhost:");
    if !loopback && secrecy::ExposeSecret::expose_secret(&settings.http.operator_token).is_empty() {
        return Err(usage(anyhow::anyhow!(
            "http.operator_token is not set: the console and the operator API would be open to nobody on {listen}; set CARGA__HTTP__OPERATOR_TOKEN or listen on loopback"
        )));
    }
    // The API has its own small pool: loads hold theirs for minutes.
    let mut api_settings = settings.clone();
    api_settings.database.pool_size = 4;
    let api_pool = crate::db::pool(
        &crate::db::Target {
            config: runner.database().clone(),
            description: String::new(),
            created: false,
        },
        &api_settings,
    )
    .map_err(|e| Failure::Failed(e.into()))?;
    let state = crate::http::AppState {
        ctx: crate::pipeline::Context {
            settings: settings.clone(),
            pool: api_pool,
        },
        settings: Arc::new(settings.clone()),
        specs: Arc::new(specs.clone()),
        metrics: crate::telemetry::metric::handle(),
        session_key: crate::http::AppState::new_session_key(),
    };
    let server = crate::http::Server::bind(&listen, state)
        .await
        .map_err(|e| usage(anyhow::anyhow!("cannot listen on {listen}: {e}")))?;
    let address = server.local_addr().map_err(|e| Failure::Failed(e.into()))?;
    tracing::info!(%address, "API listening");
    let stop_http = CancellationToken::new();
    let http = tokio::spawn(server.serve(stop_http.clone()));
    let migrated = match super::migrate_when_reachable(&target, &shutdown).await {
        Ok(migrated) => migrated,
        Err(failure) => {
            stop_http.cancel();
            let _ = http.await;
            return Err(failure);
        }
    };
    if !migrated {
        stop_http.cancel();
        let _ = http.await;
        return Ok(());
    }
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
    stop_http.cancel();
    let _ = http.await;
    Ok(())
}
