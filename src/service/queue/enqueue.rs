//! Enqueue: who asked for a job ([`Trigger`]), how soon ([`Priority`]),
//! and the one function that inserts a job or converges on the pending
//! one of its month or slot ([`enqueue`]). Deduplication is the
//! database's (partial unique indexes, `ON CONFLICT DO NOTHING`); this file
//! never checks before it inserts, and never claims or runs a job.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::{Clock, JobState, JobUrl, QueueError, Result};
use crate::config::QueueSettings;
use crate::dataset::Period;

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
/// or `force`/a URL for a job already running. "Now" (when a new job is
/// due, where its 404 window starts, what "due now" means for a merged
/// request) is read on `clock`.
pub async fn enqueue(client: &impl GenericClient, job: &NewJob, clock: &Clock) -> Result<Enqueued> {
    let period = job.period.first_day();
    let slot = job.trigger.slot();
    let priority = job.priority as i16;
    let window = job.not_found_window.as_secs_f64();
    let shown = job.url.as_ref().map(|u| u.shown.clone());
    let sealed = job.url.as_ref().and_then(|u| u.sealed.clone());
    let fingerprint = job.url.as_ref().and_then(|u| u.fingerprint.clone());
    let skew = clock.skew_s();
    for _ in 0..8 {
        let inserted = client
            .query_opt(
                "INSERT INTO carga.jobs (dataset, period, url, force, priority, max_attempts,
                                         enqueued_by, sender, slot, not_found_deadline,
                                         url_sealed, url_fingerprint, scheduled_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                         coalesce($9, now() + make_interval(secs => $13))
                             + make_interval(secs => $10),
                         $11, $12, now() + make_interval(secs => $13))
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
                    &skew,
                ],
            )
            .await?;
        if let Some(row) = inserted {
            return Ok(Enqueued {
                id: row.get("id"),
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
            let id: i64 = row.get("id");
            let state: JobState = row.get("state");
            let force: bool = row.get("force");
            let url: Option<String> = row.get("url");
            let slot_job = slot.is_some() && row.get::<_, Option<DateTime<Utc>>>("slot") == slot;
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
            let pending_print: Option<Vec<u8>> = row.get("url_fingerprint");
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
                                                               THEN least(scheduled_at,
                                                                          now() + make_interval(secs => $9))
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
                        &skew,
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
