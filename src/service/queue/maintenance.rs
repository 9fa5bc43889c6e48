//! The queue's maintenance services, apart from the transitions a worker
//! makes (as River keeps its rescuer and cleaner under
//! `internal/maintenance/`): the rescuer hands back jobs whose lease
//! expired and ends their stale sessions ([`rescue`]); the cleaner deletes
//! old finished jobs ([`prune`]). Both run on every process that runs jobs.

use tokio_postgres::GenericClient;

use super::{Clock, Result};
use crate::config::QueueSettings;

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

/// Moves every running job whose lease has expired on `clock` back to `retryable`,
/// due at once (the expired lease was its wait: a killed worker's job
/// starts again about `lease_s` + `rescue_interval_s` after the kill), or
/// to `failed` once its attempts are spent, and ends the
/// stale attempt's database session: a frozen worker still holds the
/// load's transaction, its COPY and the month's lock, and the server would
/// not notice on its own. Only a session still tagged with that job and
/// attempt (its `application_name`, see [`super::fence`]) is terminated, never a
/// backend that merely reuses the pid.
pub async fn rescue(client: &impl GenericClient, clock: &Clock) -> Result<Vec<Rescued>> {
    let rows = client
        .query(
            "WITH expired AS (
                 SELECT id FROM carga.jobs
                 WHERE state = 'running' AND lease_expires_at < now() + make_interval(secs => $1)
                 FOR UPDATE SKIP LOCKED
             ), updated AS (
                 UPDATE carga.jobs j
                 SET state = CASE WHEN j.cancel_requested THEN 'cancelled'
                                  WHEN j.attempt >= j.max_attempts THEN 'failed' ELSE 'retryable' END,
                     scheduled_at = now() + make_interval(secs => $1),
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
                    AS terminated
             FROM updated u",
            &[&clock.skew_s()],
        )
        .await?;
    let rescued: Vec<Rescued> = rows
        .iter()
        .map(|r| Rescued {
            id: r.get("id"),
            attempt: r.get("attempt"),
            state: r.get("state"),
            load_backend_pid: r.get("load_backend_pid"),
            terminated: r.get::<_, Option<bool>>("terminated").unwrap_or(false),
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
/// older than the retention. Returns how many. Retention measures records
/// (`finished_at` is the real commit time), so it reads the database's
/// clock unshifted, never a [`Clock`]'s.
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
