//! The durable job queue in `carga.jobs`: enqueue (deduplicated by the
//! database), claim (one statement, `FOR UPDATE SKIP LOCKED`), heartbeats,
//! the fenced completion, retries, cancellation, the rescuer and history.
//! The state machine is drawn in ARCHITECTURE.md ("Jobs"). Every time is the
//! database's `now()`; no statement here trusts a worker's clock.
//!
//! This module owns the jobs tables; it never runs a load (that is
//! `runner.rs`), and never decides what an error means beyond
//! [`retry::classify`].

pub mod fence;
pub mod retry;
pub mod sealed;
pub mod state;

pub use sealed::{JobUrl, SealError};
pub use state::JobState;

use crate::code::Code;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use tokio_postgres::error::SqlState;

use crate::config::QueueSettings;
use crate::dataset::Period;

pub use fence::JobFence;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("database error: {}", crate::db::describe_db(.0))]
    Db(tokio_postgres::Error),
    #[error("job {0} not found")]
    NotFound(i64),
    #[error("job {id} is {state}: {action} applies only to {allowed}")]
    WrongState {
        id: i64,
        state: String,
        action: &'static str,
        allowed: &'static str,
    },
    #[error("the enqueue of {dataset} {period} kept racing with other writers")]
    Contended { dataset: String, period: Period },
    /// The request asks for more than the pending job of its month will do
    /// (`--force`, another URL) and that job cannot take it on.
    #[error("job {id} is already {state} for {dataset} {period}: {reason}")]
    Conflict {
        id: i64,
        state: JobState,
        dataset: String,
        period: Period,
        reason: String,
    },
}

impl From<tokio_postgres::Error> for QueueError {
    fn from(e: tokio_postgres::Error) -> Self {
        QueueError::Db(e)
    }
}

pub type Result<T> = std::result::Result<T, QueueError>;

/// Every state a job can be in, as text (see [`JobState`]).
pub const STATES: [&str; 6] = [
    JobState::Available.as_str(),
    JobState::Running.as_str(),
    JobState::Retryable.as_str(),
    JobState::Succeeded.as_str(),
    JobState::Failed.as_str(),
    JobState::Cancelled.as_str(),
];

/// Who asked for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A cron tick; `slot` is the floored schedule time.
    Schedule {
        slot: DateTime<Utc>,
    },
    Operator {
        name: String,
    },
    Webhook {
        sender: String,
    },
}

impl Trigger {
    fn kind(&self) -> &'static str {
        match self {
            Trigger::Schedule { .. } => "schedule",
            Trigger::Operator { .. } => "operator",
            Trigger::Webhook { .. } => "webhook",
        }
    }
    fn sender(&self) -> Option<&str> {
        match self {
            Trigger::Schedule { .. } => None,
            Trigger::Operator { name } => Some(name),
            Trigger::Webhook { sender } => Some(sender),
        }
    }
    fn slot(&self) -> Option<DateTime<Utc>> {
        match self {
            Trigger::Schedule { slot } => Some(*slot),
            _ => None,
        }
    }
}

/// Lower runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Scheduled, webhook and operator loads of a month.
    Fresh = 0,
    /// The months of a backfill: never ahead of a fresh month.
    Backfill = 2,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub dataset: String,
    pub period: Period,
    /// An explicit source URL (else the spec's), secrets sealed.
    pub url: Option<JobUrl>,
    pub force: bool,
    pub trigger: Trigger,
    pub priority: Priority,
    pub max_attempts: i32,
    /// How long a 404 is retried, from now (or from the slot).
    pub not_found_window: Duration,
}

impl NewJob {
    /// A job for `spec`'s `period` with the queue's attempt budget and the
    /// spec's 404 window; `url` and `force` are unset.
    pub fn for_spec(
        spec: &crate::dataset::Spec,
        period: Period,
        trigger: Trigger,
        priority: Priority,
        settings: &QueueSettings,
    ) -> NewJob {
        NewJob {
            dataset: spec.dataset.clone(),
            period,
            url: None,
            force: false,
            trigger,
            priority,
            max_attempts: settings.max_attempts,
            not_found_window: spec.not_found_window(),
        }
    }
}

/// The result of an enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub id: i64,
    /// False when an equivalent job already existed and was returned.
    pub new: bool,
}

/// Enqueues `job`, or returns the job it converges on: the pending job of
/// the same (dataset, period), or the job of the same schedule slot. The
/// database decides (partial unique indexes, `ON CONFLICT DO NOTHING`), so
/// concurrent enqueues from cron, CLI and webhooks meet on one row. The
/// stronger intent is merged into a pending job that has not started: a
/// fresh request raises a backfill job's priority, `force` sticks, and an
/// explicit URL replaces "the spec's URL". What cannot be merged is refused
/// with [`QueueError::Conflict`], never dropped: a different explicit URL,
/// or `force`/a URL for a job already running.
pub async fn enqueue(client: &impl GenericClient, job: &NewJob) -> Result<Enqueued> {
    let period = job.period.first_day();
    let slot = job.trigger.slot();
    let priority = job.priority as i16;
    let window = job.not_found_window.as_secs_f64();
    let shown = job.url.as_ref().map(|u| u.shown.clone());
    let sealed = job.url.as_ref().and_then(|u| u.sealed.clone());
    let fingerprint = job.url.as_ref().and_then(|u| u.fingerprint.clone());
    for _ in 0..8 {
        let inserted = client
            .query_opt(
                "INSERT INTO carga.jobs (dataset, period, url, force, priority, max_attempts,
                                         enqueued_by, sender, slot, not_found_deadline,
                                         url_sealed, url_fingerprint)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                         coalesce($9, now()) + make_interval(secs => $10), $11, $12)
                 ON CONFLICT DO NOTHING
                 RETURNING id",
                &[
                    &job.dataset,
                    &period,
                    &shown,
                    &job.force,
                    &priority,
                    &job.max_attempts,
                    &job.trigger.kind(),
                    &job.trigger.sender(),
                    &slot,
                    &window,
                    &sealed,
                    &fingerprint,
                ],
            )
            .await?;
        if let Some(row) = inserted {
            return Ok(Enqueued {
                id: row.get(0),
                new: true,
            });
        }
        // A conflict: the slot's job (whatever its state), else the pending
        // job of the period. Either may have moved on since the INSERT saw
        // it; then try again.
        let existing = client
            .query_opt(
                "SELECT id, state, force, url, slot, url_fingerprint FROM carga.jobs
                 WHERE dataset = $1
                   AND (($3::timestamptz IS NOT NULL AND slot = $3)
                        OR (period = $2 AND state IN ('available', 'running', 'retryable')))
                 ORDER BY (slot IS NOT DISTINCT FROM $3) DESC, id DESC
                 LIMIT 1",
                &[&job.dataset, &period, &slot],
            )
            .await?;
        if let Some(row) = existing {
            let id: i64 = row.get(0);
            let state: JobState = row.get(1);
            let force: bool = row.get(2);
            let url: Option<String> = row.get(3);
            let slot_job = slot.is_some() && row.get::<_, Option<DateTime<Utc>>>(4) == slot;
            if slot_job {
                // The slot's own job: scheduled, no force, no URL.
                return Ok(Enqueued { id, new: false });
            }
            let conflict = |reason: String| QueueError::Conflict {
                id,
                state,
                dataset: job.dataset.clone(),
                period: job.period,
                reason,
            };
            // The shown URLs hide query values; the fingerprints (keyed
            // HMACs of the real URLs) tell two tokens or months apart.
            let pending_print: Option<Vec<u8>> = row.get(5);
            if let (Some(asked), Some(pending)) = (&shown, &url) {
                if asked != pending || fingerprint != pending_print {
                    return Err(conflict(format!(
                        "it loads another URL ({}); cancel it, or wait for it to end, then enqueue this one",
                        // Stored redacted since V6; a job pending across
                        // the upgrade may still hold its URL in clear.
                        crate::engine::source::redact_source(pending)
                    )));
                }
            }
            let stronger = (job.force && !force) || (job.url.is_some() && url.is_none());
            if stronger && state == JobState::Running {
                return Err(conflict(format!(
                    "it runs without {}; wait for it to end (or cancel it), then enqueue again",
                    if job.force && !force {
                        "--force"
                    } else {
                        "this URL"
                    }
                )));
            }
            // A job that takes on a request's URL takes on where the URL
            // came from too (a webhook's URL is checked on every redirect);
            // a webhook or an operator asking for a waiting month makes it
            // due now.
            let merged = client
                .execute(
                    "UPDATE carga.jobs SET priority = least(priority, $2), force = force OR $3,
                                           url_sealed = CASE WHEN url IS NULL THEN $5 ELSE url_sealed END,
                                           url_fingerprint = CASE WHEN url IS NULL THEN $6 ELSE url_fingerprint END,
                                           enqueued_by = CASE WHEN url IS NULL AND $4::text IS NOT NULL
                                                              THEN $7 ELSE enqueued_by END,
                                           sender = CASE WHEN url IS NULL AND $4::text IS NOT NULL
                                                         THEN $8 ELSE sender END,
                                           scheduled_at = CASE WHEN $7 <> 'schedule'
                                                               THEN least(scheduled_at, now())
                                                               ELSE scheduled_at END,
                                           url = coalesce(url, $4)
                     WHERE id = $1 AND state IN ('available', 'retryable')",
                    &[
                        &id,
                        &priority,
                        &job.force,
                        &shown,
                        &sealed,
                        &fingerprint,
                        &job.trigger.kind(),
                        &job.trigger.sender(),
                    ],
                )
                .await?;
            if merged == 1 || !stronger {
                return Ok(Enqueued { id, new: false });
            }
            // It started or ended since it was read: look again.
            continue;
        }
    }
    Err(QueueError::Contended {
        dataset: job.dataset.clone(),
        period: job.period,
    })
}

/// A claimed job: what its worker needs, and the lease that fences it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub dataset: String,
    pub period: Period,
    /// The explicit source URL, still sealed: [`JobUrl::open`] it.
    pub url: Option<JobUrl>,
    pub force: bool,
    pub attempt: i32,
    pub max_attempts: i32,
    pub lease_token: String,
    /// `schedule`, `operator` or `webhook`.
    pub enqueued_by: String,
    /// The code the previous attempt ended with, if any.
    pub previous_code: Option<String>,
    /// How long the source has been preparing this job's file (HTTP 202),
    /// on the database's clock; `None` when it is not preparing.
    pub preparing_for: Option<Duration>,
}

/// Claims the next runnable job for `worker`, in one statement: the
/// highest-priority, earliest-scheduled available or retryable job whose
/// time has come, skipping rows other workers hold; starts its attempt.
pub async fn claim(
    client: &impl GenericClient,
    worker: &str,
    settings: &QueueSettings,
) -> Result<Option<Claimed>> {
    let lease = settings.lease_s as f64;
    let row = client
        .query_opt(
            "WITH next AS (
                 SELECT id FROM carga.jobs
                 WHERE state IN ('available', 'retryable') AND scheduled_at <= now()
                 ORDER BY priority, scheduled_at, id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED
             ), claimed AS (
                 UPDATE carga.jobs j
                 SET state = 'running', attempt = j.attempt + 1, worker = $1,
                     lease_token = gen_random_uuid()::text,
                     lease_expires_at = now() + make_interval(secs => $2),
                     started_at = coalesce(j.started_at, now()), attempted_at = now(),
                     load_backend_pid = NULL, progress = '{}'
                 FROM next WHERE j.id = next.id
                 RETURNING j.id, j.dataset, j.period, j.url, j.force, j.attempt,
                           j.max_attempts, j.lease_token, j.enqueued_by, j.url_sealed,
                           extract(epoch FROM now() - j.preparing_since)::float8, j.error_code
             ), attempt AS (
                 INSERT INTO carga.job_attempts (job_id, attempt, worker)
                 SELECT id, attempt, $1 FROM claimed
             )
             SELECT * FROM claimed",
            &[&worker, &lease],
        )
        .await?;
    Ok(row.map(|r| Claimed {
        id: r.get(0),
        dataset: r.get(1),
        period: Period::from_date(r.get::<_, NaiveDate>(2)),
        url: r.get::<_, Option<String>>(3).map(|shown| JobUrl {
            shown,
            sealed: r.get(9),
            fingerprint: None,
        }),
        force: r.get(4),
        attempt: r.get(5),
        max_attempts: r.get(6),
        lease_token: r.get(7),
        enqueued_by: r.get(8),
        preparing_for: r
            .get::<_, Option<f64>>(10)
            .map(|s| Duration::from_secs_f64(s.max(0.0))),
        previous_code: r.get(11),
    }))
}

/// What a heartbeat learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Held,
    /// An operator asked to cancel the job.
    CancelRequested,
    /// The lease is gone (expired and rescued, or the job was changed):
    /// this attempt must stop; it cannot publish.
    Lost,
}

/// Renews the lease and records progress (and the load's backend once
/// known). Runs on the worker's control connection, never the load's.
pub async fn heartbeat(
    client: &impl GenericClient,
    job: &Claimed,
    settings: &QueueSettings,
    progress: &serde_json::Value,
    load_backend_pid: Option<i32>,
) -> Result<Beat> {
    let row = client
        .query_opt(
            "UPDATE carga.jobs
             SET lease_expires_at = now() + make_interval(secs => $3), progress = $4,
                 load_backend_pid = coalesce($5, load_backend_pid)
             WHERE id = $1 AND lease_token = $2 AND state = 'running'
             RETURNING cancel_requested",
            &[
                &job.id,
                &job.lease_token,
                &(settings.lease_s as f64),
                progress,
                &load_backend_pid,
            ],
        )
        .await?;
    Ok(match row {
        None => Beat::Lost,
        Some(r) if r.get::<_, bool>(0) => Beat::CancelRequested,
        Some(_) => Beat::Held,
    })
}

/// How an attempt ended, as the runner decided it.
#[derive(Debug, Clone)]
pub enum Ending {
    /// Succeeded without the fence: a payments month found unchanged
    /// (nothing published), or reference data (idempotent upserts, at
    /// least once). A payments publish is completed by [`JobFence`] inside
    /// its own transaction instead.
    Succeeded {
        load_id: i64,
        outcome: &'static str,
    },
    /// Retry at the database's `now()` + `after`.
    Retry {
        after: Duration,
        code: Code,
        message: String,
    },
    /// The month is not published yet: retry on the slow cadence unless the
    /// job's 404 deadline has passed, then fail.
    NotFound {
        after: Duration,
        code: Code,
        message: String,
    },
    Fail {
        code: Code,
        message: String,
    },
    /// Another load holds the month: retry after `after`, not counted.
    Wait {
        after: Duration,
        code: Code,
        message: String,
    },
    Cancelled {
        message: String,
    },
    /// Shutdown: give the job back at once, without spending an attempt.
    Release,
}

/// Records the end of an attempt that did not publish, guarded by the
/// lease. Returns false when the lease was already lost (nothing written).
pub async fn finish(
    client: &impl GenericClient,
    job: &Claimed,
    ending: &Ending,
    source_status: Option<u16>,
) -> Result<bool> {
    let source_status = source_status.and_then(|s| i16::try_from(s).ok());
    let (state, outcome, code, message, after, load_id): (
        &str,
        &str,
        Option<Code>,
        Option<&str>,
        f64,
        Option<i64>,
    ) = match ending {
        Ending::Succeeded { load_id, outcome } => {
            ("succeeded", *outcome, None, None, 0.0, Some(*load_id))
        }
        Ending::Retry {
            after,
            code,
            message,
        } => (
            "retryable",
            "retryable",
            Some(*code),
            Some(message),
            after.as_secs_f64(),
            None,
        ),
        Ending::NotFound {
            after,
            code,
            message,
        } => (
            "not_found",
            "retryable",
            Some(*code),
            Some(message),
            after.as_secs_f64(),
            None,
        ),
        Ending::Fail { code, message } => {
            ("failed", "failed", Some(*code), Some(message), 0.0, None)
        }
        Ending::Wait {
            after,
            code,
            message,
        } => (
            "waiting",
            "retryable",
            Some(*code),
            Some(message),
            after.as_secs_f64(),
            None,
        ),
        Ending::Cancelled { message } => (
            "cancelled",
            "cancelled",
            Some(Code::Cancelled),
            Some(message),
            0.0,
            None,
        ),
        Ending::Release => ("released", "released", None, None, 0.0, None),
    };
    let code = code.map(|c| c.as_str());
    let code = code.as_deref();
    // One statement: the job's new state (decided in SQL where it depends
    // on the attempt count or the 404 deadline) and the attempt's record.
    let row = client
        .query_opt(
            "WITH decided AS (
                 SELECT id,
                        CASE
                            -- An operator's cancel wins over a retry or release
                            -- that raced it (it only waited for a heartbeat).
                            WHEN cancel_requested AND $3 <> 'succeeded' THEN 'cancelled'
                            WHEN $3 = 'released' THEN 'available'
                            WHEN $3 = 'retryable' AND attempt >= max_attempts THEN 'failed'
                            WHEN $3 = 'not_found' AND now() + make_interval(secs => $6)
                                                      > coalesce(not_found_deadline, now()) THEN 'failed'
                            WHEN $3 IN ('not_found', 'waiting') THEN 'retryable'
                            ELSE $3
                        END AS state
                 FROM carga.jobs
                 WHERE id = $1 AND lease_token = $2 AND state = 'running'
                 FOR UPDATE
             ), updated AS (
                 UPDATE carga.jobs j
                 SET state = d.state,
                     -- A released attempt, a month not published yet and a
                     -- month another load holds do not count against the
                     -- budget of attempts (that is for failures).
                     max_attempts = CASE WHEN $3 IN ('released', 'not_found', 'waiting')
                                         THEN j.max_attempts + 1
                                         ELSE j.max_attempts END,
                     scheduled_at = CASE WHEN d.state = 'retryable'
                                         THEN now() + make_interval(secs => $6)
                                         ELSE j.scheduled_at END,
                     finished_at = CASE WHEN d.state IN ('succeeded', 'failed', 'cancelled')
                                        THEN clock_timestamp() END,
                     -- Waiting for the source to prepare the file: since
                     -- when (kept across waits, the fall-back to the slow
                     -- cadence and releases, so the limit is reached once;
                     -- cleared by any other answer, a retry or a cancel).
                     preparing_since = CASE WHEN $4 = $11
                                            THEN coalesce(j.preparing_since, now())
                                            WHEN $3 = 'released' THEN j.preparing_since END,
                     outcome = CASE WHEN d.state = 'succeeded' THEN $8 ELSE j.outcome END,
                     load_id = coalesce($7, j.load_id),
                     error_code = CASE WHEN d.state = 'cancelled' THEN 'cancelled'
                                       WHEN $3 = 'not_found' AND d.state = 'failed'
                                            AND $4 = $12
                                       THEN 'not_published_by_deadline' ELSE $4 END,
                     error = CASE WHEN $3 = 'not_found' AND d.state = 'failed' AND $4 = $12
                                  THEN 'the month was still not published at the dataset''s deadline ('
                                       || to_char(j.not_found_deadline, 'YYYY-MM-DD HH24:MI TZ')
                                       || '): ' || $5
                                  WHEN $3 = 'not_found' AND d.state = 'failed'
                                  THEN 'the source still served it so at the dataset''s deadline ('
                                       || to_char(j.not_found_deadline, 'YYYY-MM-DD HH24:MI TZ')
                                       || '): ' || $5
                                  ELSE $5 END,
                     lease_token = NULL, lease_expires_at = NULL, load_backend_pid = NULL,
                     cancel_requested = false,
                     progress = j.progress || jsonb_build_object('stage', 'done')
                 FROM decided d WHERE j.id = d.id
                 RETURNING j.id, j.state
             ), attempt AS (
                 UPDATE carga.job_attempts a
                 SET finished_at = clock_timestamp(),
                     outcome = CASE WHEN u.state IN ('succeeded', 'failed', 'cancelled') THEN u.state
                                    ELSE $8 END,
                     error_code = $4, error = $5, load_id = $7, source_status = $10
                 FROM updated u WHERE a.job_id = u.id AND a.attempt = $9
             )
             SELECT state FROM updated",
            &[
                &job.id,
                &job.lease_token,
                &state,
                &code,
                &message,
                &after,
                &load_id,
                &outcome,
                &job.attempt,
                &source_status,
                // The codes the SQL decides on, spelled by `Code`.
                &Code::SourcePreparing.as_str(),
                &Code::HttpStatus(404).as_str(),
            ],
        )
        .await?;
    Ok(row.is_some())
}

/// The fenced completion of a publish, inside the load's transaction:
/// only the holder of (job, attempt, lease token) may mark the job
/// succeeded. Returns false when it does not hold them any more.
pub async fn complete_in(
    tx: &impl GenericClient,
    job_id: i64,
    attempt: i32,
    lease_token: &str,
    load_id: i64,
) -> std::result::Result<bool, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "WITH updated AS (
                 UPDATE carga.jobs
                 SET state = 'succeeded', outcome = 'published', load_id = $4, finished_at = clock_timestamp(),
                     error_code = NULL, error = NULL, lease_token = NULL, lease_expires_at = NULL,
                     load_backend_pid = NULL, progress = progress || jsonb_build_object('stage', 'done')
                 WHERE id = $1 AND attempt = $2 AND lease_token = $3 AND state = 'running'
                 RETURNING id
             ), attempt AS (
                 UPDATE carga.job_attempts a SET finished_at = clock_timestamp(), outcome = 'succeeded', load_id = $4, source_status = 200
                 FROM updated u WHERE a.job_id = u.id AND a.attempt = $2
             )
             SELECT id FROM updated",
            &[&job_id, &attempt, &lease_token, &load_id],
        )
        .await?;
    Ok(row.is_some())
}

/// A job whose lease expired, handed back by the rescuer.
#[derive(Debug, Clone)]
pub struct Rescued {
    pub id: i64,
    pub attempt: i32,
    pub state: String,
    /// The stale attempt's load session, if it was recorded.
    pub load_backend_pid: Option<i32>,
    /// Whether that session was still there and was ended.
    pub terminated: bool,
}

/// Moves every running job whose lease has expired back to `retryable`,
/// due at once (the expired lease was its wait: a killed worker's job
/// starts again about `lease_s` + `rescue_interval_s` after the kill), or
/// to `failed` once its attempts are spent, and ends the
/// stale attempt's database session: a frozen worker still holds the
/// load's transaction, its COPY and the month's lock, and the server would
/// not notice on its own. Only a session still tagged with that job and
/// attempt (its `application_name`, see [`fence`]) is terminated, never a
/// backend that merely reuses the pid.
pub async fn rescue(client: &impl GenericClient) -> Result<Vec<Rescued>> {
    let rows = client
        .query(
            "WITH expired AS (
                 SELECT id FROM carga.jobs
                 WHERE state = 'running' AND lease_expires_at < now()
                 FOR UPDATE SKIP LOCKED
             ), updated AS (
                 UPDATE carga.jobs j
                 SET state = CASE WHEN j.cancel_requested THEN 'cancelled'
                                  WHEN j.attempt >= j.max_attempts THEN 'failed' ELSE 'retryable' END,
                     scheduled_at = now(),
                     finished_at = CASE WHEN j.cancel_requested OR j.attempt >= j.max_attempts
                                        THEN clock_timestamp() END,
                     error_code = 'lease_expired',
                     error = 'worker ' || coalesce(j.worker, '?') || ' stopped renewing its lease (killed or frozen); its attempt was ended',
                     lease_token = NULL, lease_expires_at = NULL
                 FROM expired e WHERE j.id = e.id
                 RETURNING j.id, j.attempt, j.state, j.load_backend_pid
             ), attempt AS (
                 UPDATE carga.job_attempts a
                 SET finished_at = clock_timestamp(), outcome = 'rescued', error_code = 'lease_expired'
                 FROM updated u WHERE a.job_id = u.id AND a.attempt = u.attempt
             )
             SELECT u.id, u.attempt, u.state, u.load_backend_pid,
                    (SELECT pg_terminate_backend(s.pid) FROM pg_stat_activity s
                     WHERE s.pid = u.load_backend_pid
                       AND s.application_name = 'carga job ' || u.id || ' attempt ' || u.attempt)
             FROM updated u",
            &[],
        )
        .await?;
    let rescued: Vec<Rescued> = rows
        .iter()
        .map(|r| Rescued {
            id: r.get(0),
            attempt: r.get(1),
            state: r.get(2),
            load_backend_pid: r.get(3),
            terminated: r.get::<_, Option<bool>>(4).unwrap_or(false),
        })
        .collect();
    if !rescued.is_empty() {
        let ids: Vec<i64> = rescued.iter().map(|r| r.id).collect();
        client
            .execute(
                "UPDATE carga.jobs SET load_backend_pid = NULL WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
    }
    Ok(rescued)
}

/// Deletes finished jobs (with their attempts and webhook deliveries)
/// older than the retention. Returns how many.
pub async fn prune(client: &impl GenericClient, settings: &QueueSettings) -> Result<u64> {
    Ok(client
        .execute(
            "DELETE FROM carga.jobs
             WHERE state IN ('succeeded', 'failed', 'cancelled')
               AND finished_at < now() - make_interval(days => $1)",
            &[&(settings.retention_days as i32)],
        )
        .await?)
}

/// Cancels a job: at once when it is waiting; by request when it runs (its
/// worker sees the request on its next heartbeat, cancels the load and its
/// server-side statement, and records `cancelled`). Returns the state.
pub async fn cancel(client: &impl GenericClient, id: i64) -> Result<String> {
    let row = client
        .query_opt(
            "WITH target AS (SELECT id, state FROM carga.jobs WHERE id = $1 FOR UPDATE)
             UPDATE carga.jobs j
             SET state = CASE WHEN t.state IN ('available', 'retryable') THEN 'cancelled' ELSE j.state END,
                 preparing_since = NULL,
                 finished_at = CASE WHEN t.state IN ('available', 'retryable') THEN clock_timestamp() ELSE j.finished_at END,
                 error_code = CASE WHEN t.state IN ('available', 'retryable') THEN 'cancelled' ELSE j.error_code END,
                 error = CASE WHEN t.state IN ('available', 'retryable') THEN 'cancelled before it ran' ELSE j.error END,
                 cancel_requested = (t.state = 'running')
             FROM target t WHERE j.id = t.id
             RETURNING t.state",
            &[&id],
        )
        .await?;
    let Some(row) = row else {
        return Err(QueueError::NotFound(id));
    };
    let before: String = row.get(0);
    match before.as_str() {
        "available" | "retryable" => Ok("cancelled".into()),
        "running" => Ok("cancelling".into()),
        _ => Err(QueueError::WrongState {
            id,
            state: before,
            action: "cancel",
            allowed: "available, retryable or running jobs",
        }),
    }
}

/// Runs a failed or cancelled job again with a new budget of `budget`
/// attempts (the queue's `max_attempts`, as a new job gets), or a retryable
/// one now. A pending job of the same period wins: its id is returned
/// instead.
pub async fn retry(client: &impl GenericClient, id: i64, budget: i32) -> Result<i64> {
    let row = client
        .query_opt("SELECT state FROM carga.jobs WHERE id = $1", &[&id])
        .await?;
    let Some(row) = row else {
        return Err(QueueError::NotFound(id));
    };
    let state: String = row.get(0);
    let updated = client
        .execute(
            "UPDATE carga.jobs
             SET state = 'available', scheduled_at = now(), finished_at = NULL,
                 preparing_since = NULL,
                 max_attempts = CASE WHEN state = 'retryable' THEN max_attempts
                                     ELSE attempt + $2 END,
                 -- A fresh 404 window as long as the first one.
                 not_found_deadline = greatest(not_found_deadline,
                     now() + (not_found_deadline - coalesce(slot, enqueued_at))),
                 cancel_requested = false
             WHERE id = $1 AND state IN ('failed', 'cancelled', 'retryable')",
            &[&id, &budget.max(1)],
        )
        .await;
    match updated {
        Ok(1) => Ok(id),
        Ok(_) => Err(QueueError::WrongState {
            id,
            state,
            action: "retry",
            allowed: "failed, cancelled or retryable jobs",
        }),
        // Another job of the same period is pending: that one runs.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            let row = client
                .query_one(
                    "SELECT p.id FROM carga.jobs p JOIN carga.jobs j ON j.id = $1
                     WHERE p.dataset = j.dataset AND p.period = j.period
                       AND p.state IN ('available', 'running', 'retryable')",
                    &[&id],
                )
                .await?;
            Ok(row.get(0))
        }
        Err(e) => Err(e.into()),
    }
}

/// A job as operators see it (`carga job`, `GET /v1/jobs/{id}`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: i64,
    pub dataset: String,
    pub period: String,
    pub state: JobState,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub enqueued_by: String,
    pub sender: Option<String>,
    pub slot: Option<DateTime<Utc>>,
    pub source: Option<String>,
    pub force: bool,
    pub enqueued_at: DateTime<Utc>,
    pub scheduled_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    #[schema(value_type = Object)]
    pub progress: serde_json::Value,
    pub load_id: Option<i64>,
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// Seconds from first start to finish (or to now while it runs).
    pub seconds: Option<f64>,
    pub attempts: Vec<AttemptView>,
}

/// A running job's progress, read from what its heartbeat recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressView {
    /// `open`, `stream`, `aggregate`, `publish`, `done`; `queued` before any.
    pub stage: String,
    /// Bytes downloaded, of `total_bytes` (0: unknown).
    pub bytes: u64,
    pub total_bytes: u64,
    pub rows: u64,
    /// Of the download, when its size is known.
    pub percent: Option<f64>,
    /// Bytes per second since the job started.
    pub rate: f64,
    /// Seconds left at that rate, when the size is known.
    pub eta_seconds: Option<f64>,
}

impl JobView {
    pub fn progress_view(&self) -> ProgressView {
        let p = &self.progress;
        let n = |k: &str| p.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let (bytes, total_bytes, rows) = (n("bytes"), n("total_bytes"), n("rows"));
        let rate = bytes as f64 / self.seconds.unwrap_or(0.0).max(0.001);
        let known = total_bytes > 0;
        ProgressView {
            stage: p
                .get("stage")
                .and_then(|s| s.as_str())
                .unwrap_or("queued")
                .to_string(),
            bytes,
            total_bytes,
            rows,
            percent: known.then(|| (100.0 * bytes as f64 / total_bytes as f64).min(100.0)),
            rate,
            eta_seconds: (known && total_bytes > bytes && rate > 0.0)
                .then(|| (total_bytes - bytes) as f64 / rate),
        }
    }
}

impl ProgressView {
    /// `3.1 of 10.6 MB (29%), 120.000 rows, 0.4 MB/s, ETA 18 s`.
    pub fn figures(&self) -> String {
        let mut line = format!("{:.1}", self.bytes as f64 / 1e6);
        if let Some(percent) = self.percent {
            line.push_str(&format!(
                " of {:.1} MB ({percent:.0}%)",
                self.total_bytes as f64 / 1e6
            ));
        } else {
            line.push_str(" MB");
        }
        line.push_str(&format!(
            ", {} rows, {:.1} MB/s",
            crate::money::group_thousands(self.rows),
            self.rate / 1e6
        ));
        if let Some(eta) = self.eta_seconds {
            line.push_str(&format!(", ETA {eta:.0} s"));
        }
        line
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub attempt: i32,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub load_id: Option<i64>,
}

const VIEW_COLUMNS: &str = "id, dataset, to_char(period, 'YYYY-MM'), state, priority, attempt,
    max_attempts, enqueued_by, sender, slot, url, force, enqueued_at, scheduled_at, started_at,
    finished_at, worker, lease_expires_at, cancel_requested, progress, load_id, outcome,
    error_code, error,
    extract(epoch FROM coalesce(finished_at, now()) - started_at)::float8";

fn view(r: &tokio_postgres::Row) -> JobView {
    let url: Option<String> = r.get(10);
    JobView {
        id: r.get(0),
        dataset: r.get(1),
        period: r.get(2),
        state: r.get(3),
        priority: r.get(4),
        attempt: r.get(5),
        max_attempts: r.get(6),
        enqueued_by: r.get(7),
        sender: r.get(8),
        slot: r.get(9),
        source: url.as_deref().map(crate::engine::source::redact_source),
        force: r.get(11),
        enqueued_at: r.get(12),
        scheduled_at: r.get(13),
        started_at: r.get(14),
        finished_at: r.get(15),
        worker: r.get(16),
        lease_expires_at: r.get(17),
        cancel_requested: r.get(18),
        progress: r.get(19),
        load_id: r.get(20),
        outcome: r.get(21),
        error_code: r.get(22),
        error: r.get(23),
        seconds: r.get(24),
        attempts: Vec::new(),
    }
}

/// One job with its attempts.
pub async fn get(client: &impl GenericClient, id: i64) -> Result<JobView> {
    let row = client
        .query_opt(
            &format!("SELECT {VIEW_COLUMNS} FROM carga.jobs WHERE id = $1"),
            &[&id],
        )
        .await?
        .ok_or(QueueError::NotFound(id))?;
    let mut job = view(&row);
    job.attempts = client
        .query(
            "SELECT attempt, worker, started_at, finished_at, outcome, error_code, error, load_id
             FROM carga.job_attempts WHERE job_id = $1 ORDER BY attempt",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| AttemptView {
            attempt: r.get(0),
            worker: r.get(1),
            started_at: r.get(2),
            finished_at: r.get(3),
            outcome: r.get(4),
            error_code: r.get(5),
            error: r.get(6),
            load_id: r.get(7),
        })
        .collect();
    Ok(job)
}

/// A filter for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<String>,
    pub dataset: Option<String>,
    pub limit: i64,
}

/// Jobs, newest first (running and waiting ones before finished ones).
pub async fn list(client: &impl GenericClient, filter: &ListFilter) -> Result<Vec<JobView>> {
    let rows = client
        .query(
            &format!(
                "SELECT {VIEW_COLUMNS} FROM carga.jobs
                 WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR dataset = $2)
                 ORDER BY finished_at IS NOT NULL, coalesce(finished_at, enqueued_at) DESC, id DESC
                 LIMIT $3"
            ),
            &[
                &filter.state,
                &filter.dataset,
                &filter.limit.clamp(1, 10_000),
            ],
        )
        .await?;
    Ok(rows.iter().map(view).collect())
}

/// Jobs per state (for metrics and the console).
pub async fn depth(client: &impl GenericClient) -> Result<Vec<(String, i64)>> {
    let rows = client
        .query(
            "SELECT state, count(*) FROM carga.jobs GROUP BY state ORDER BY state",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(progress: serde_json::Value, seconds: f64) -> JobView {
        JobView {
            id: 1,
            dataset: "d".into(),
            period: "2024-10".into(),
            state: JobState::Running,
            priority: 0,
            attempt: 1,
            max_attempts: 8,
            enqueued_by: "operator".into(),
            sender: None,
            slot: None,
            source: None,
            force: false,
            enqueued_at: Utc::now(),
            scheduled_at: Utc::now(),
            started_at: None,
            finished_at: None,
            worker: None,
            lease_expires_at: None,
            cancel_requested: false,
            progress,
            load_id: None,
            outcome: None,
            error_code: None,
            error: None,
            seconds: Some(seconds),
            attempts: Vec::new(),
        }
    }

    #[test]
    fn progress_reads_the_heartbeat_and_estimates_what_is_left() {
        let p = job(
            serde_json::json!({"stage": "stream", "bytes": 3_000_000, "total_bytes": 12_000_000, "rows": 120_000}),
            10.0,
        )
        .progress_view();
        assert_eq!(p.stage, "stream");
        assert_eq!(p.percent, Some(25.0));
        assert_eq!(p.eta_seconds, Some(30.0));
        assert_eq!(
            p.figures(),
            "3.0 of 12.0 MB (25%), 120.000 rows, 0.3 MB/s, ETA 30 s"
        );
        let unknown = job(serde_json::json!({"bytes": 500_000}), 1.0).progress_view();
        assert_eq!(
            (unknown.stage.as_str(), unknown.percent, unknown.eta_seconds),
            ("queued", None, None)
        );
        assert_eq!(unknown.figures(), "0.5 MB, 0 rows, 0.5 MB/s");
    }
}
