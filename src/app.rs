//! The composition root: the one place that turns settings and a database
//! into the running parts — the load pool, the control pool, the runner,
//! the API's state and pool, the scheduler. `serve`, `worker` and the test
//! harness assemble through it, so the three cannot drift apart. The parts
//! share one queue [`Clock`] (the database's, unshifted, unless a test
//! hands in one it advances).
//!
//! It never starts a private PostgreSQL: `App::connect` resolves only a
//! server that exists (`carga demo` is the one path to a private cluster).
//! Nothing here connects: pools connect on first use, so `serve` can start
//! while the database is down and migrate once it answers.

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::config::Settings;
use crate::dataset::{Spec, SpecError};
use crate::db::{DbError, Target};
use crate::engine::pipeline::Context;
use crate::service::http::AppState;
use crate::service::queue::Clock;
use crate::service::runner::Runner;
use crate::service::schedule::{self, ScheduleError, Scheduler};

/// Connections of the API's own pool: loads hold theirs for minutes, the
/// API must answer meanwhile.
const API_POOL_SIZE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("failed to build the {which} pool: {source}")]
    Pool {
        which: &'static str,
        #[source]
        source: DbError,
    },
    #[error(transparent)]
    Specs(#[from] SpecError),
    #[error("the OS random source failed ({0}): refusing to start without session keys")]
    Random(String),
    #[error("failed to start the scheduler: {0}")]
    Schedule(#[from] ScheduleError),
}

/// Settings, the database and the dataset specs: what every part is built from.
pub struct App {
    settings: Settings,
    target: Target,
    specs: Vec<Spec>,
    clock: Clock,
}

impl App {
    /// Resolves a database that exists (never a private cluster) and reads
    /// the specs. Neither connects nor migrates.
    pub(crate) async fn connect(settings: Settings) -> Result<App, AppError> {
        let target = crate::db::resolve_existing(&settings).await?;
        App::new(settings, target)
    }

    /// An app over an already resolved database.
    pub fn new(settings: Settings, target: Target) -> Result<App, AppError> {
        let specs = crate::service::runner::specs(&settings)?;
        Ok(App {
            settings,
            target,
            specs,
            clock: Clock::database(),
        })
    }

    /// This app on `clock`: its runner, API and scheduler all read the
    /// queue's time there (tests advance it instead of sleeping).
    pub fn with_clock(mut self, clock: Clock) -> App {
        self.clock = clock;
        self
    }

    /// The queue's time every part of this app shares.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    fn pool(&self, which: &'static str, size: usize) -> Result<Pool, AppError> {
        let mut settings = self.settings.clone();
        settings.database.pool_size = size;
        crate::db::pool(&self.target, &settings).map_err(|source| AppError::Pool { which, source })
    }

    /// The runner: a load pool sized so that every concurrent load gets its
    /// two connections, a separate control pool for claims and heartbeats
    /// (never starved by loads), and the LISTEN connection's config.
    pub fn runner(&self) -> Result<Runner, AppError> {
        let concurrency = self.settings.queue.concurrency.max(1);
        let load_size = self.settings.database.pool_size.max(concurrency * 2 + 1);
        let mut settings = self.settings.clone();
        settings.database.pool_size = load_size;
        let ctx = Context {
            settings,
            pool: self.pool("load", load_size)?,
            tls: self.target.tls.clone(),
        };
        let control = self.pool("control", concurrency + 2)?;
        Ok(
            Runner::new(ctx, control, self.target.config.clone(), self.specs.clone())
                .with_clock(self.clock.clone()),
        )
    }

    /// The HTTP API's state on its own small pool. Session and CSRF keys
    /// come from the OS random source: without it, no API.
    pub fn api_state(&self) -> Result<AppState, AppError> {
        crate::service::http::console::random_bytes(&mut [0u8; 32])
            .map_err(|e| AppError::Random(e.to_string()))?;
        let ctx = Context {
            settings: self.settings.clone(),
            pool: self.pool("API", API_POOL_SIZE)?,
            tls: self.target.tls.clone(),
        };
        Ok(
            AppState::new(ctx, self.specs.clone(), crate::telemetry::metric::handle())
                .with_clock(self.clock.clone()),
        )
    }

    /// Starts the scheduler (cron jobs and the reconciliation task) on the
    /// runner's control pool.
    pub(crate) async fn scheduler(&self, runner: &Arc<Runner>) -> Result<Scheduler, AppError> {
        Ok(schedule::start(
            runner.control_pool().clone(),
            self.specs.clone(),
            self.settings.queue.clone(),
            self.clock.clone(),
        )
        .await?)
    }
}
