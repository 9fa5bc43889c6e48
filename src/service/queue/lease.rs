//! A job's lease, from claim to ending: the one-statement claim
//! ([`claim`]), heartbeats that renew the lease and record progress
//! ([`heartbeat`]), the endings of an attempt that did not publish
//! ([`finish`]) and the fenced completion inside a publish's transaction
//! ([`complete_in`], called by [`super::JobFence`]). Every write is
//! guarded by the lease token; a worker that lost it writes nothing.

use std::time::Duration;

use chrono::NaiveDate;
use tokio_postgres::GenericClient;

use super::{Clock, JobUrl, Progress, Result};
use crate::code::Code;
use crate::config::QueueSettings;
use crate::dataset::Period;

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
/// time has come on `clock`, skipping rows other workers hold; starts its
/// attempt with a lease of `lease_s` on that clock.
pub async fn claim(
    client: &impl GenericClient,
    worker: &str,
    settings: &QueueSettings,
    clock: &Clock,
) -> Result<Option<Claimed>> {
    let lease = settings.lease_s as f64;
    let row = client
        .query_opt(
            "WITH next AS (
                 SELECT id FROM carga.jobs
                 WHERE state IN ('available', 'retryable')
                   AND scheduled_at <= now() + make_interval(secs => $3)
                 ORDER BY priority, scheduled_at, id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED
             ), claimed AS (
                 UPDATE carga.jobs j
                 SET state = 'running', attempt = j.attempt + 1, worker = $1,
                     lease_token = gen_random_uuid()::text,
                     lease_expires_at = now() + make_interval(secs => $3::float8 + $2::float8),
                     started_at = coalesce(j.started_at, now()), attempted_at = now(),
                     load_backend_pid = NULL, progress = '{}'
                 FROM next WHERE j.id = next.id
                 RETURNING j.id, j.dataset, j.period, j.url, j.force, j.attempt,
                           j.max_attempts, j.lease_token, j.enqueued_by, j.url_sealed,
                           extract(epoch FROM now() + make_interval(secs => $3)
                                              - j.preparing_since)::float8 AS preparing_s,
                           j.error_code
             ), attempt AS (
                 INSERT INTO carga.job_attempts (job_id, attempt, worker)
                 SELECT id, attempt, $1 FROM claimed
             )
             SELECT * FROM claimed",
            &[&worker, &lease, &clock.skew_s()],
        )
        .await?;
    Ok(row.map(|r| Claimed {
        id: r.get("id"),
        dataset: r.get("dataset"),
        period: Period::from_date(r.get::<_, NaiveDate>("period")),
        url: r.get::<_, Option<String>>("url").map(|shown| JobUrl {
            shown,
            sealed: r.get("url_sealed"),
            fingerprint: None,
        }),
        force: r.get("force"),
        attempt: r.get("attempt"),
        max_attempts: r.get("max_attempts"),
        lease_token: r.get("lease_token"),
        enqueued_by: r.get("enqueued_by"),
        preparing_for: r
            .get::<_, Option<f64>>("preparing_s")
            .map(|s| Duration::from_secs_f64(s.max(0.0))),
        previous_code: r.get("error_code"),
    }))
}

/// What a heartbeat learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    Held,
    /// An operator asked to cancel the job.
    CancelRequested,
    /// The lease is gone (expired and rescued, or the job was changed):
    /// this attempt must stop; it cannot publish.
    Lost,
}

/// Renews the lease (`lease_s` from now on `clock`) and records progress
/// (and the load's backend once known). Runs on the worker's control
/// connection, never the load's.
pub(crate) async fn heartbeat(
    client: &impl GenericClient,
    job: &Claimed,
    settings: &QueueSettings,
    clock: &Clock,
    progress: &Progress,
    load_backend_pid: Option<i32>,
) -> Result<Beat> {
    let row = client
        .query_opt(
            "UPDATE carga.jobs
             SET lease_expires_at = now() + make_interval(secs => $6::float8 + $3::float8), progress = $4,
                 load_backend_pid = coalesce($5, load_backend_pid)
             WHERE id = $1 AND lease_token = $2 AND state = 'running'
             RETURNING cancel_requested",
            &[
                &job.id,
                &job.lease_token,
                &(settings.lease_s as f64),
                &progress.as_json(),
                &load_backend_pid,
                &clock.skew_s(),
            ],
        )
        .await?;
    Ok(match row {
        None => Beat::Lost,
        Some(r) if r.get::<_, bool>("cancel_requested") => Beat::CancelRequested,
        Some(_) => Beat::Held,
    })
}

/// How an attempt ended, as the runner decided it.
#[derive(Debug, Clone)]
pub enum Ending {
    /// Succeeded without the fence: a payments month found unchanged
    /// (nothing published), or reference data (idempotent upserts, at
    /// least once). A payments publish is completed by [`super::JobFence`] inside
    /// its own transaction instead.
    Succeeded {
        load_id: i64,
        outcome: &'static str,
    },
    /// Retry at the queue's now (the database's `now()` on its [`Clock`]) + `after`.
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
/// lease; the next attempt's time and the 404 deadline are read on
/// `clock`. Returns false when the lease was already lost (nothing
/// written).
pub async fn finish(
    client: &impl GenericClient,
    job: &Claimed,
    ending: &Ending,
    source_status: Option<u16>,
    clock: &Clock,
) -> Result<bool> {
    let source_status = source_status.and_then(|s| i16::try_from(s).ok());
    let decision = Decision::of(ending);
    let (state, code, message, load_id) = (
        decision.intent,
        decision.code,
        decision.message,
        decision.load_id,
    );
    let (outcome, after) = (decision.outcome(), decision.after.as_secs_f64());
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
                            WHEN $3 = 'not_found'
                                 AND now() + make_interval(secs => $13::float8 + $6::float8)
                                     > coalesce(not_found_deadline, now() + make_interval(secs => $13))
                            THEN 'failed'
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
                                         THEN now() + make_interval(secs => $13::float8 + $6::float8)
                                         ELSE j.scheduled_at END,
                     finished_at = CASE WHEN d.state IN ('succeeded', 'failed', 'cancelled')
                                        THEN clock_timestamp() END,
                     -- Waiting for the source to prepare the file: since
                     -- when (kept across waits, the fall-back to the slow
                     -- cadence and releases, so the limit is reached once;
                     -- cleared by any other answer, a retry or a cancel).
                     preparing_since = CASE WHEN $4 = $11
                                            THEN coalesce(j.preparing_since,
                                                          now() + make_interval(secs => $13))
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
                &clock.skew_s(),
            ],
        )
        .await?;
    Ok(row.is_some())
}

/// What an ending asks of the job, before the statement decides the state
/// where it depends on the attempt count, the 404 deadline or a cancel
/// request: `$3` of [`finish`]'s statement, which spells the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Succeeded,
    Retry,
    NotFound,
    Fail,
    Wait,
    Cancel,
    Release,
}

impl Intent {
    const fn as_str(self) -> &'static str {
        match self {
            Intent::Succeeded => "succeeded",
            Intent::Retry => "retryable",
            Intent::NotFound => "not_found",
            Intent::Fail => "failed",
            Intent::Wait => "waiting",
            Intent::Cancel => "cancelled",
            Intent::Release => "released",
        }
    }
}

impl tokio_postgres::types::ToSql for Intent {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        self.as_str().to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// An ending, as [`finish`] writes it.
struct Decision<'a> {
    intent: Intent,
    /// The outcome of a success (`published`, `unchanged`).
    succeeded: &'a str,
    code: Option<Code>,
    message: Option<&'a str>,
    after: Duration,
    load_id: Option<i64>,
}

impl<'a> Decision<'a> {
    fn of(ending: &'a Ending) -> Decision<'a> {
        let decision = |intent, code, message, after| Decision {
            intent,
            succeeded: "",
            code,
            message,
            after,
            load_id: None,
        };
        match ending {
            Ending::Succeeded { load_id, outcome } => Decision {
                succeeded: outcome,
                load_id: Some(*load_id),
                ..decision(Intent::Succeeded, None, None, Duration::ZERO)
            },
            Ending::Retry {
                after,
                code,
                message,
            } => decision(Intent::Retry, Some(*code), Some(message), *after),
            Ending::NotFound {
                after,
                code,
                message,
            } => decision(Intent::NotFound, Some(*code), Some(message), *after),
            Ending::Fail { code, message } => {
                decision(Intent::Fail, Some(*code), Some(message), Duration::ZERO)
            }
            Ending::Wait {
                after,
                code,
                message,
            } => decision(Intent::Wait, Some(*code), Some(message), *after),
            Ending::Cancelled { message } => decision(
                Intent::Cancel,
                Some(Code::Cancelled),
                Some(message),
                Duration::ZERO,
            ),
            Ending::Release => decision(Intent::Release, None, None, Duration::ZERO),
        }
    }

    /// The attempt's outcome when the statement does not settle it on a
    /// final state: every wait is `retryable`.
    fn outcome(&self) -> &'a str {
        match self.intent {
            Intent::Succeeded => self.succeeded,
            Intent::Retry | Intent::NotFound | Intent::Wait => Intent::Retry.as_str(),
            other => other.as_str(),
        }
    }
}

/// The fenced completion of a publish, inside the load's transaction:
/// only the holder of (job, attempt, lease token) may mark the job
/// succeeded. Returns false when it does not hold them any more.
pub(crate) async fn complete_in(
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
