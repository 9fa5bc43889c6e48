//! Cron ticks → idempotent enqueues of (dataset, period). Nothing else: the
//! workers do the work. Every `carga serve` process runs the scheduler (no
//! leader): each tick enqueues the dataset's current slot — the latest cron
//! time at or before the queue's now (the database's `now()` on the app's
//! [`Clock`]), in the spec's time zone — and
//! the slot's unique index makes N processes produce one job. Starting up
//! is a tick too, so a slot missed during downtime is caught up (the latest
//! one, unless the spec says `catch_up = "none"`).

use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use deadpool_postgres::Pool;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::config::QueueSettings;
use crate::dataset::{CatchUp, Period, Spec};
use crate::service::queue::{self, Clock, Enqueued, NewJob, Priority, Trigger};

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{dataset}: schedule.cron {cron:?}: {reason}")]
    Cron {
        dataset: String,
        cron: String,
        reason: String,
    },
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {}", crate::db::describe_db(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("scheduler: {0}")]
    Scheduler(#[from] tokio_cron_scheduler::JobSchedulerError),
}

/// A dataset's slot at `now`: the latest cron time at or before it, and
/// the period that slot loads (the slot's month in the spec's time zone,
/// minus the publication lag). None for a spec without a schedule.
fn slot_at(
    spec: &Spec,
    now: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, Period)>, ScheduleError> {
    let Some(schedule) = &spec.schedule else {
        return Ok(None);
    };
    let error = |reason: String| ScheduleError::Cron {
        dataset: spec.dataset.clone(),
        cron: schedule.cron.clone(),
        reason,
    };
    let cron = schedule.parsed().map_err(error)?;
    let local = now.with_timezone(&schedule.tz());
    let slot = cron
        .find_previous_occurrence(&local, true)
        .map_err(|e| error(e.to_string()))?;
    let months =
        i64::from(slot.year()) * 12 + i64::from(slot.month0()) - i64::from(schedule.lag_months);
    let period = Period::new((months / 12) as u16, (months % 12 + 1) as u8)
        .ok_or_else(|| error("the slot's period is out of range".into()))?;
    // croner keeps the sub-second part of the time it searched from; a slot
    // is a whole second, or two ticks of one slot would differ.
    let slot = slot.with_timezone(&Utc);
    let slot = slot.with_nanosecond(0).unwrap_or(slot);
    Ok(Some((slot, period)))
}

/// The job a tick at `now` would enqueue: the slot and its period, unless
/// the period lies outside the spec's `first_period`..`last_period` (a
/// program that has ended, or not started, has nothing to load).
pub fn due(
    spec: &Spec,
    now: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, Period)>, ScheduleError> {
    Ok(slot_at(spec, now)?
        .filter(|(_, period)| spec.kind.is_snapshot() || spec.check_period(*period, false).is_ok()))
}

/// The next slot after `now` that has something to load (for `carga
/// schedule`): a slot whose period is off the dataset's cadence (the
/// population's months other than January) is passed over.
pub(crate) fn next_slot(spec: &Spec, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let schedule = spec.schedule.as_ref()?;
    let cron = schedule.parsed().ok()?;
    let mut from = now.with_timezone(&schedule.tz());
    // A yearly cadence under a monthly cron: at most a year of slots.
    for _ in 0..400 {
        let next = cron.find_next_occurrence(&from, false).ok()?;
        let months =
            i64::from(next.year()) * 12 + i64::from(next.month0()) - i64::from(schedule.lag_months);
        let period = Period::new((months / 12) as u16, (months % 12 + 1) as u8)?;
        if spec.cadence.pays(period) {
            return Some(next.with_timezone(&Utc));
        }
        from = next;
    }
    None
}

/// One tick for `spec`: enqueue its current slot's job (or find it), the
/// slot taken at the queue's now on `clock`.
pub(crate) async fn tick(
    pool: &Pool,
    spec: &Spec,
    settings: &QueueSettings,
    clock: &Clock,
) -> Result<Option<(Period, Enqueued)>, ScheduleError> {
    let db_now = || async {
        let client = pool.get().await?;
        let now = crate::service::queue::database_now(&**client, clock).await?;
        Ok::<_, ScheduleError>(now)
    };
    let now = db_now().await?;
    // A tick fired by a clock ahead of the database's would see the
    // previous slot: wait for the database to reach it (bounded, holding
    // no connection). The minutely reconciliation covers larger skews.
    let skew = Utc::now().signed_duration_since(now);
    let now = match skew.to_std() {
        Ok(ahead) if ahead > Duration::from_millis(50) && ahead < Duration::from_secs(300) => {
            tokio::time::sleep(ahead).await;
            db_now().await?
        }
        _ => now,
    };
    let client = pool.get().await?;
    let Some((slot, period)) = due(spec, now)? else {
        return Ok(None);
    };
    let job = NewJob::for_spec(
        spec,
        period,
        Trigger::Schedule { slot },
        Priority::Fresh,
        settings,
    );
    let enqueued = queue::enqueue(&**client, &job, clock).await?;
    if enqueued.new {
        tracing::info!(dataset = %spec.dataset, %period, %slot, job_id = enqueued.id, "scheduled");
    }
    Ok(Some((period, enqueued)))
}

/// Starts the scheduler: a catch-up tick for every scheduled dataset, then
/// its cron in its time zone; every tick reads the queue's time on
/// `clock`. The returned scheduler must be kept (and shut down) by the
/// caller.
pub async fn start(
    pool: Pool,
    specs: Vec<Spec>,
    settings: QueueSettings,
    clock: Clock,
) -> Result<Scheduler, ScheduleError> {
    let scheduler = JobScheduler::new().await?;
    let reconciled: Vec<Spec> = specs
        .iter()
        .filter(|s| {
            s.schedule
                .as_ref()
                .is_some_and(|x| x.catch_up == CatchUp::Latest)
        })
        .cloned()
        .collect();
    for spec in specs.into_iter().filter(|s| s.schedule.is_some()) {
        let Some(schedule) = spec.schedule.clone() else {
            continue;
        };
        if schedule.catch_up == CatchUp::Latest {
            if let Err(e) = tick(&pool, &spec, &settings, &clock).await {
                tracing::warn!(dataset = %spec.dataset, error = %e, "catch-up tick failed");
            }
        }
        let (pool, settings, clock, spec_for_job) =
            (pool.clone(), settings.clone(), clock.clone(), spec.clone());
        let job = Job::new_async_tz(schedule.cron.as_str(), schedule.tz(), move |_, _| {
            let (pool, settings, clock, spec) = (
                pool.clone(),
                settings.clone(),
                clock.clone(),
                spec_for_job.clone(),
            );
            Box::pin(async move {
                if let Err(e) = tick(&pool, &spec, &settings, &clock).await {
                    tracing::warn!(dataset = %spec.dataset, error = %e, "scheduled tick failed");
                }
            })
        })?;
        scheduler.add(job).await?;
    }
    scheduler.start().await?;
    // Reconciliation: a tick that failed (database away at 03:00), a clock
    // far ahead, a daylight-saving shift in the cron library or a cron it
    // reads differently would otherwise lose a slot until the next one (a
    // month for a monthly cron). Every `queue.reconcile_s`, each dataset's current slot
    // is enqueued again, idempotently: the slot's unique index makes it a
    // no-op once done.
    let every = Duration::from_secs(settings.reconcile_s.max(1));
    let stop = tokio_util::sync::CancellationToken::new();
    let passes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reconciler = {
        let (stop, passes) = (stop.clone(), passes.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                for spec in &reconciled {
                    if let Err(e) = tick(&pool, spec, &settings, &clock).await {
                        tracing::warn!(dataset = %spec.dataset, error = %e, "reconciliation tick failed");
                    }
                }
                passes.fetch_add(1, std::sync::atomic::Ordering::Release);
            }
        })
    };
    Ok(Scheduler {
        cron: scheduler,
        stop,
        reconciler: Some(reconciler),
        passes,
    })
}

/// The running scheduler: the cron jobs and the reconciliation task. Stop
/// it with [`Scheduler::shutdown`]; dropping it stops the reconciliation.
pub struct Scheduler {
    cron: JobScheduler,
    stop: tokio_util::sync::CancellationToken,
    reconciler: Option<tokio::task::JoinHandle<()>>,
    passes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Scheduler {
    /// Reconciliation passes finished so far (tests wait on it, not on
    /// the clock).
    pub fn passes(&self) -> u64 {
        self.passes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops the cron jobs and the reconciliation task, and waits for both.
    pub async fn shutdown(mut self) -> Result<(), ScheduleError> {
        self.stop.cancel();
        if let Some(reconciler) = self.reconciler.take() {
            let _ = reconciler.await;
        }
        self.cron.shutdown().await?;
        Ok(())
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cron: &str, lag: u32) -> Spec {
        let mut spec =
            crate::dataset::find(std::path::Path::new("jobs"), "novo-bolsa-familia").expect("spec");
        if let Some(s) = spec.schedule.as_mut() {
            s.cron = cron.into();
            s.lag_months = lag;
            s.timezone = "America/Sao_Paulo".into();
        }
        spec
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn slots_are_floored_in_the_spec_time_zone_and_lagged() {
        // Daily at 03:00 in São Paulo (UTC−3): 06:00 UTC.
        let daily = spec("0 0 3 * * *", 2);
        let (slot, period) = slot_at(&daily, at("2026-11-24T12:00:00Z"))
            .expect("ok")
            .expect("slot");
        assert_eq!(slot, at("2026-11-24T06:00:00Z"));
        assert_eq!(period.to_string(), "2026-09");
        // Before 03:00 local it is still yesterday's slot.
        let (slot, _) = slot_at(&daily, at("2026-11-24T05:59:59Z"))
            .expect("ok")
            .expect("slot");
        assert_eq!(slot, at("2026-11-23T06:00:00Z"));
        // Exactly at the slot: that slot.
        let (slot, _) = slot_at(&daily, at("2026-11-24T06:00:00Z"))
            .expect("ok")
            .expect("slot");
        assert_eq!(slot, at("2026-11-24T06:00:00Z"));
        // January with a lag crosses the year.
        let (_, period) = slot_at(&daily, at("2026-01-10T12:00:00Z"))
            .expect("ok")
            .expect("slot");
        assert_eq!(period.to_string(), "2025-11");
        // A time with a fraction of a second gives the same whole slot.
        let (slot, _) = slot_at(&daily, at("2026-11-24T12:34:56.789123Z"))
            .expect("ok")
            .expect("slot");
        assert_eq!(slot, at("2026-11-24T06:00:00Z"));
        let next = next_slot(&daily, at("2026-11-24T12:00:00Z")).expect("next");
        assert_eq!(next, at("2026-11-25T06:00:00Z"));
    }

    #[test]
    fn a_month_off_the_cadence_is_never_due() {
        let mut gas = spec("0 0 3 5 * *", 2);
        gas.cadence = crate::dataset::Cadence {
            every_months: 2,
            anchor: Period::parse("2021-12"),
        };
        // The slot of 5 November 2026 is for September (lag 2): odd, not paid.
        assert!(due(&gas, at("2026-11-10T12:00:00Z")).expect("ok").is_none());
        // The slot of 5 December 2026 is for October: paid.
        let (_, period) = due(&gas, at("2026-12-10T12:00:00Z"))
            .expect("ok")
            .expect("due");
        assert_eq!(period.to_string(), "2026-10");
        // 5 November's slot is passed over: the next run is 5 December's.
        let next = next_slot(&gas, at("2026-11-01T12:00:00Z")).expect("next");
        assert_eq!(next, at("2026-12-05T06:00:00Z"));
    }
}
