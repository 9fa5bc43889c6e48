//! The queue's read model: a job and its attempts as operators see them
//! ([`JobView`], shared by `carga job --json`, the API and the console),
//! lists of jobs and the depth per state. Read only; it never writes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::{JobState, Progress, QueueError, Result};

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
    /// What the last heartbeat recorded (`{}` before the first).
    #[schema(value_type = Object)]
    pub progress: Progress,
    pub load_id: Option<i64>,
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// Seconds from first start to finish (or to now while it runs).
    pub seconds: Option<f64>,
    pub attempts: Vec<AttemptView>,
}

/// A running job's progress, read from what its heartbeat recorded: typed
/// figures (bytes, rows, bytes per second, seconds); the pages that show it
/// format them (`money::download_figures`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressView {
    /// `open`, `stream`, `aggregate`, `publish`, `done`; `queued` before any.
    pub stage: String,
    /// Bytes downloaded, of `total_bytes` (0: unknown).
    pub bytes: u64,
    pub total_bytes: u64,
    /// Fetched beyond `bytes` by a ranged download (0 otherwise).
    pub ahead: u64,
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
        let bytes = p.bytes.unwrap_or(0);
        let total_bytes = p.total_bytes.unwrap_or(0);
        let rows = p.rows.unwrap_or(0);
        let rate = bytes as f64 / self.seconds.unwrap_or(0.0).max(0.001);
        let known = total_bytes > 0;
        ProgressView {
            stage: p.stage.as_deref().unwrap_or("queued").to_string(),
            bytes,
            total_bytes,
            ahead: p.bytes_ahead.unwrap_or(0),
            rows,
            percent: known.then(|| (100.0 * bytes as f64 / total_bytes as f64).min(100.0)),
            rate,
            eta_seconds: (known && total_bytes > bytes && rate > 0.0)
                .then(|| (total_bytes - bytes) as f64 / rate),
        }
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

/// The columns [`view`] reads, each by its name: the order here is free.
const VIEW_COLUMNS: &str = "id, dataset, to_char(period, 'YYYY-MM') AS period, state, priority,
    attempt, max_attempts, enqueued_by, sender, slot, url, force, enqueued_at, scheduled_at,
    started_at, finished_at, worker, lease_expires_at, cancel_requested, progress, load_id,
    outcome, error_code, error,
    extract(epoch FROM coalesce(finished_at, now()) - started_at)::float8 AS seconds";

/// A row of [`VIEW_COLUMNS`], read by column name.
fn view(r: &tokio_postgres::Row) -> JobView {
    let url: Option<String> = r.get("url");
    JobView {
        id: r.get("id"),
        dataset: r.get("dataset"),
        period: r.get("period"),
        state: r.get("state"),
        priority: r.get("priority"),
        attempt: r.get("attempt"),
        max_attempts: r.get("max_attempts"),
        enqueued_by: r.get("enqueued_by"),
        sender: r.get("sender"),
        slot: r.get("slot"),
        source: url.as_deref().map(crate::engine::source::redact_source),
        force: r.get("force"),
        enqueued_at: r.get("enqueued_at"),
        scheduled_at: r.get("scheduled_at"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
        worker: r.get("worker"),
        lease_expires_at: r.get("lease_expires_at"),
        cancel_requested: r.get("cancel_requested"),
        progress: Progress::from_json(r.get("progress")),
        load_id: r.get("load_id"),
        outcome: r.get("outcome"),
        error_code: r.get("error_code"),
        error: r.get("error"),
        seconds: r.get("seconds"),
        attempts: Vec::new(),
    }
}

/// One job with its attempts.
pub(crate) async fn get(client: &impl GenericClient, id: i64) -> Result<JobView> {
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
            attempt: r.get("attempt"),
            worker: r.get("worker"),
            started_at: r.get("started_at"),
            finished_at: r.get("finished_at"),
            outcome: r.get("outcome"),
            error_code: r.get("error_code"),
            error: r.get("error"),
            load_id: r.get("load_id"),
        })
        .collect();
    Ok(job)
}

/// A filter for [`list`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ListFilter {
    pub state: Option<String>,
    pub dataset: Option<String>,
    pub limit: i64,
}

/// Jobs, newest first (running and waiting ones before finished ones).
pub(crate) async fn list(client: &impl GenericClient, filter: &ListFilter) -> Result<Vec<JobView>> {
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
pub(crate) async fn depth(client: &impl GenericClient) -> Result<Vec<(String, i64)>> {
    let rows = client
        .query(
            "SELECT state, count(*) AS jobs FROM carga.jobs GROUP BY state ORDER BY state",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get("state"), r.get("jobs")))
        .collect())
}
/// The queue's now on `clock` (the database's, shifted by the clock's
/// skew): the scheduler reads it too, so every process agrees on the slot.
pub(crate) async fn database_now(
    client: &impl GenericClient,
    clock: &super::Clock,
) -> Result<DateTime<Utc>> {
    Ok(client
        .query_one(
            "SELECT now() + make_interval(secs => $1)",
            &[&clock.skew_s()],
        )
        .await?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(progress: serde_json::Value, seconds: f64) -> JobView {
        let progress = Progress::from_json(progress);
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
            (p.bytes, p.total_bytes, p.rows),
            (3_000_000, 12_000_000, 120_000)
        );
        assert_eq!(p.rate, 300_000.0);
        let unknown = job(serde_json::json!({"bytes": 500_000}), 1.0).progress_view();
        assert_eq!(
            (unknown.stage.as_str(), unknown.percent, unknown.eta_seconds),
            ("queued", None, None)
        );
        assert_eq!(
            (unknown.bytes, unknown.rows, unknown.rate),
            (500_000, 0, 500_000.0)
        );
    }
}
