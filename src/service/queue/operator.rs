//! What an operator may do to a job (CLI, API, console): cancel it
//! ([`cancel`]) or run it again ([`retry`]). Each is one guarded statement;
//! a job in a state the action does not apply to is refused with
//! [`QueueError::WrongState`], never changed.

use tokio_postgres::GenericClient;
use tokio_postgres::error::SqlState;

use super::{Clock, JobState, QueueError, Result};

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The job was waiting: it is `cancelled` now.
    Now,
    /// The job is running: its worker stops it on its next heartbeat.
    Requested,
}

impl std::fmt::Display for Cancelled {
    /// As the CLI, the API (`CancelResponse.state`) and the console say it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cancelled::Now => "cancelled",
            Cancelled::Requested => "cancelling",
        })
    }
}

/// Cancels a job: at once when it is waiting; by request when it runs (its
/// worker sees the request on its next heartbeat, cancels the load and its
/// server-side statement, and records `cancelled`).
pub async fn cancel(client: &impl GenericClient, id: i64) -> Result<Cancelled> {
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
    let before: JobState = row.get("state");
    match before {
        JobState::Available | JobState::Retryable => Ok(Cancelled::Now),
        JobState::Running => Ok(Cancelled::Requested),
        JobState::Succeeded | JobState::Failed | JobState::Cancelled => {
            Err(QueueError::WrongState {
                id,
                state: before,
                action: "cancel",
                allowed: "available, retryable or running jobs",
            })
        }
    }
}

/// Runs a failed or cancelled job again with a new budget of `budget`
/// attempts (the queue's `max_attempts`, as a new job gets), or a retryable
/// one now (on `clock`, as is its fresh 404 window). A pending job of the
/// same period wins: its id is returned instead.
pub async fn retry(
    client: &impl GenericClient,
    id: i64,
    budget: i32,
    clock: &Clock,
) -> Result<i64> {
    let row = client
        .query_opt("SELECT state FROM carga.jobs WHERE id = $1", &[&id])
        .await?;
    let Some(row) = row else {
        return Err(QueueError::NotFound(id));
    };
    let state: JobState = row.get("state");
    let updated = client
        .execute(
            "UPDATE carga.jobs
             SET state = 'available', scheduled_at = now() + make_interval(secs => $3),
                 finished_at = NULL,
                 preparing_since = NULL,
                 max_attempts = CASE WHEN state = 'retryable' THEN max_attempts
                                     ELSE attempt + $2 END,
                 -- A fresh 404 window as long as the first one (measured
                 -- from `enqueued_at`, a real time: with a skewed clock the
                 -- window grows by the skew the job was enqueued under).
                 not_found_deadline = greatest(not_found_deadline,
                     now() + make_interval(secs => $3)
                         + (not_found_deadline - coalesce(slot, enqueued_at))),
                 cancel_requested = false
             WHERE id = $1 AND state IN ('failed', 'cancelled', 'retryable')",
            &[&id, &budget.max(1), &clock.skew_s()],
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
            Ok(row.get("id"))
        }
        Err(e) => Err(e.into()),
    }
}
