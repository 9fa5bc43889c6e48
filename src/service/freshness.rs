//! The datasets' read model: per dataset, the last published period, when
//! it was published (freshness), the last successful job, the next
//! scheduled run and the gaps — months between the first expected period
//! and the last published one that were never published. One query path
//! for `carga schedule` and the HTTP API. Also what the source has: the
//! latest period it answered for (a file, 202 "preparing" or 304, as
//! recorded per attempt in `job_attempts.source_status`) and since when it
//! has had a period newer than the last published one — silence from a
//! source that is ahead of us is a failure. Reads only.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::dataset::{Period, Spec};
use crate::engine::load::ledger::LedgerStatus;
use crate::service::queue::JobState;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DatasetStatus {
    pub dataset: String,
    pub(crate) title: String,
    /// The spec's kind.
    pub(crate) kind: String,
    /// A snapshot (`reference`, `places`, `boundaries`) has no periods:
    /// only when it was last published.
    pub(crate) snapshot: bool,
    pub(crate) cron: Option<String>,
    pub(crate) timezone: Option<String>,
    pub(crate) next_run: Option<DateTime<Utc>>,
    pub(crate) last_published_period: Option<String>,
    pub(crate) last_published_at: Option<DateTime<Utc>>,
    /// Seconds since the last publish, on the database's clock.
    pub(crate) freshness_seconds: Option<f64>,
    pub(crate) last_success_at: Option<DateTime<Utc>>,
    /// When a job of this dataset last finished, whatever its outcome.
    pub(crate) last_check_at: Option<DateTime<Utc>>,
    published_periods: usize,
    /// Months never published between the first expected period (the
    /// spec's `first_period`, else the first published) and the last
    /// published one.
    pub(crate) gaps: Vec<String>,
    /// The latest period the source answered for with a file (or 202
    /// "preparing", or 304), whether or not it was loaded.
    pub source_latest_period: Option<String>,
    /// Since when the source has had a period newer than the last
    /// published one (the first such answer); `None` when it has not.
    pub source_ahead_since: Option<DateTime<Utc>>,
    /// Seconds since `source_ahead_since`, on the database's clock.
    pub(crate) source_ahead_seconds: Option<f64>,
}

/// The status codes that say the source has the period.
const SOURCE_HAS_IT: &str = "(200, 202, 206, 304)";

/// Per dataset, the periods the source answered for and when it first did.
///
/// A file of many periods and a snapshot are left out: their job's period
/// names the month a run was for, not a month the source holds.
async fn source_periods(
    client: &impl GenericClient,
    specs: &[Spec],
) -> Result<HashMap<String, Vec<(Period, DateTime<Utc>)>>, tokio_postgres::Error> {
    let mut out: HashMap<String, Vec<(Period, DateTime<Utc>)>> = HashMap::new();
    let tabulated = |dataset: &str| {
        specs
            .iter()
            .any(|s| s.dataset == dataset && (s.one_file() || s.kind.is_snapshot()))
    };
    for row in client
        .query(
            &format!(
                "SELECT j.dataset, j.period, min(coalesce(a.finished_at, a.started_at))
                 FROM carga.job_attempts a JOIN carga.jobs j ON j.id = a.job_id
                 WHERE a.source_status IN {SOURCE_HAS_IT}
                 GROUP BY j.dataset, j.period ORDER BY j.dataset, j.period"
            ),
            &[],
        )
        .await?
    {
        let dataset: String = row.get(0);
        if tabulated(&dataset) {
            continue;
        }
        out.entry(dataset)
            .or_default()
            .push((Period::from_date(row.get(1)), row.get(2)));
    }
    Ok(out)
}

/// The status of every payments dataset in `specs`.
pub async fn datasets(
    client: &impl GenericClient,
    specs: &[Spec],
) -> Result<Vec<DatasetStatus>, tokio_postgres::Error> {
    let now: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let mut published: HashMap<String, BTreeSet<NaiveDate>> = HashMap::new();
    let mut published_at: HashMap<String, DateTime<Utc>> = HashMap::new();
    // A snapshot's load has no period: only when it was published counts.
    for row in client
        .query(
            "SELECT dataset, period, finished_at FROM carga.loads WHERE status = 'published'",
            &[],
        )
        .await?
    {
        let dataset: String = row.get(0);
        let finished: Option<DateTime<Utc>> = row.get(2);
        if let Some(finished) = finished {
            let latest = published_at.entry(dataset.clone()).or_insert(finished);
            *latest = (*latest).max(finished);
        }
        if let Some(period) = row.get::<_, Option<NaiveDate>>(1) {
            published.entry(dataset).or_default().insert(period);
        }
    }
    let mut success: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut checked: HashMap<String, DateTime<Utc>> = HashMap::new();
    for row in client
        .query(
            "SELECT dataset, max(finished_at) FILTER (WHERE state = $1), max(finished_at)
             FROM carga.jobs GROUP BY dataset",
            &[&crate::service::queue::JobState::Succeeded],
        )
        .await?
    {
        let dataset: String = row.get(0);
        if let Some(at) = row.get::<_, Option<DateTime<Utc>>>(1) {
            success.insert(dataset.clone(), at);
        }
        if let Some(at) = row.get::<_, Option<DateTime<Utc>>>(2) {
            checked.insert(dataset, at);
        }
    }
    let at_source = source_periods(client, specs).await?;
    let mut out = Vec::new();
    for spec in specs {
        let periods: Vec<Period> = published
            .get(&spec.dataset)
            .map(|s| s.iter().map(|d| Period::from_date(*d)).collect())
            .unwrap_or_default();
        let last = periods.last().copied();
        // A file of many periods holds what its source kept: a month
        // between two it holds is not carga's gap (see MonthState::NotAtSource).
        let first = if spec.one_file() {
            None
        } else {
            spec.first_period.or(periods.first().copied())
        };
        let gaps = match (first, last) {
            (Some(first), Some(last)) => Period::range(first, last)
                .into_iter()
                .filter(|p| !periods.contains(p) && spec.cadence.pays(*p))
                .map(|p| p.to_string())
                .collect(),
            _ => Vec::new(),
        };
        let last_at = published_at.get(&spec.dataset).copied();
        let seen = at_source.get(&spec.dataset);
        let source_latest = seen.and_then(|s| s.iter().map(|(p, _)| *p).max());
        let ahead_since = seen.and_then(|s| {
            s.iter()
                .filter(|(p, _)| last.is_none_or(|l| *p > l))
                .map(|(_, at)| *at)
                .min()
        });
        out.push(DatasetStatus {
            dataset: spec.dataset.clone(),
            title: spec.title.clone(),
            kind: spec.kind.as_str().to_string(),
            snapshot: spec.kind.is_snapshot(),
            cron: spec.schedule.as_ref().map(|s| s.cron.clone()),
            timezone: spec.schedule.as_ref().map(|s| s.timezone.clone()),
            next_run: crate::service::schedule::next_slot(spec, now),
            last_published_period: last.map(|p| p.to_string()),
            last_published_at: last_at,
            freshness_seconds: last_at
                .map(|at| now.signed_duration_since(at).num_milliseconds() as f64 / 1000.0),
            last_success_at: success.get(&spec.dataset).copied(),
            last_check_at: checked.get(&spec.dataset).copied(),
            published_periods: periods.len(),
            gaps,
            source_latest_period: source_latest.map(|p| p.to_string()),
            source_ahead_since: ahead_since,
            source_ahead_seconds: ahead_since
                .map(|at| now.signed_duration_since(at).num_milliseconds() as f64 / 1000.0),
        });
    }
    Ok(out)
}

/// What the console's month grid shows for one month of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MonthState {
    /// Published; the last check found it unchanged.
    Unchanged,
    Published,
    Running,
    Queued,
    /// Its last job or load failed and nothing is published.
    Failed,
    /// The source has it (a file, 202 or 304 answered) and it is not
    /// published: available at the source, not loaded.
    AtSource,
    /// Due (its publication lag has passed) and never published.
    Missing,
    /// Off the dataset's cadence (Auxílio Gás pays every other month, the
    /// population is yearly): nothing to load, not a gap.
    NotPaid,
    /// A file of many periods (`aggregates` kind) that has a later period
    /// published does not hold this one: the source did not publish it,
    /// which is not a failure or a gap of carga's.
    NotAtSource,
    NotDue,
}

impl MonthState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MonthState::Unchanged => "unchanged",
            MonthState::Published => "published",
            MonthState::Running => "running",
            MonthState::Queued => "queued",
            MonthState::Failed => "failed",
            MonthState::AtSource => "at source, not loaded",
            MonthState::Missing => "missing",
            MonthState::NotAtSource => "not published by the source",
            MonthState::NotPaid => "off its cadence (nothing to load)",
            MonthState::NotDue => "not due",
        }
    }
}

/// One month of one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct MonthCell {
    pub period: String,
    pub state: MonthState,
    pub(crate) load_id: Option<i64>,
    pub(crate) job_id: Option<i64>,
    pub(crate) rows: Option<i64>,
    pub(crate) value_cents: Option<i64>,
    /// The failure's code, when failed.
    pub(crate) error_code: Option<String>,
}

/// A dataset's status and its months, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetBoard {
    pub status: DatasetStatus,
    pub months: Vec<MonthCell>,
}

/// The month grid of every payments dataset: from its first period (the
/// spec's, else its first published month, else `months_back` months ago)
/// to the current month.
pub async fn boards(
    client: &impl GenericClient,
    specs: &[Spec],
    months_back: u32,
) -> Result<Vec<DatasetBoard>, tokio_postgres::Error> {
    let statuses = datasets(client, specs).await?;
    let seen_at_source = source_periods(client, specs).await?;
    let now: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let mut out = Vec::new();
    for status in statuses {
        let Some(spec) = specs.iter().find(|s| s.dataset == status.dataset) else {
            continue;
        };
        if spec.kind.is_snapshot() {
            // No months: the page shows when it was last loaded.
            out.push(DatasetBoard {
                status,
                months: Vec::new(),
            });
            continue;
        }
        let tz = spec
            .schedule
            .as_ref()
            .map_or(chrono_tz::America::Sao_Paulo, |s| s.tz());
        let local = now.with_timezone(&tz);
        use chrono::Datelike;
        let current = Period::new(local.year() as u16, local.month() as u8);
        let Some(current) = current else { continue };
        let lag = spec.schedule.as_ref().map_or(2, |s| s.lag_months);
        let due = Period::range(Period::new(1990, 1).unwrap_or(current), current)
            .into_iter()
            .rev()
            .nth(lag as usize)
            .unwrap_or(current);
        let earliest = Period::range(Period::new(1990, 1).unwrap_or(current), current)
            .into_iter()
            .rev()
            .nth(months_back.saturating_sub(1) as usize)
            .unwrap_or(current);
        // From the program's first period (or its first published month),
        // else the last `months_back` months.
        let first_published = published_periods(client, &spec.dataset).await?;
        let first = spec.first_period.or(first_published).unwrap_or(earliest);
        let last = spec.last_period.map_or(current, |l| l.min(current));
        let mut published: HashMap<NaiveDate, (i64, i64, i64)> = HashMap::new();
        for row in client
            .query(
                "SELECT period, id, rows_loaded, (total_value_brl * 100)::bigint FROM carga.loads
                 WHERE dataset = $1 AND status = 'published' AND period IS NOT NULL",
                &[&spec.dataset],
            )
            .await?
        {
            published.insert(
                row.get(0),
                (
                    row.get(1),
                    row.get::<_, Option<i64>>(2).unwrap_or(0),
                    row.get::<_, Option<i64>>(3).unwrap_or(0),
                ),
            );
        }
        let mut jobs: HashMap<NaiveDate, (i64, JobState, Option<String>, Option<String>)> =
            HashMap::new();
        for row in client
            .query(
                "SELECT DISTINCT ON (period) period, id, state, outcome, error_code FROM carga.jobs
                 WHERE dataset = $1 ORDER BY period, id DESC",
                &[&spec.dataset],
            )
            .await?
        {
            jobs.insert(row.get(0), (row.get(1), row.get(2), row.get(3), row.get(4)));
        }
        let mut loads: HashMap<NaiveDate, (LedgerStatus, Option<String>)> = HashMap::new();
        for row in client
            .query(
                "SELECT DISTINCT ON (period) period, status, error_code FROM carga.loads
                 WHERE dataset = $1 AND period IS NOT NULL ORDER BY period, id DESC",
                &[&spec.dataset],
            )
            .await?
        {
            loads.insert(row.get(0), (row.get(1), row.get(2)));
        }
        let at_source: BTreeSet<Period> = seen_at_source
            .get(&spec.dataset)
            .map(|s| s.iter().map(|(p, _)| *p).collect())
            .unwrap_or_default();
        let tabulated = spec.one_file();
        let latest = published.keys().max().map(|d| Period::from_date(*d));
        let months = Period::range(first, last)
            .into_iter()
            .map(|p| {
                let day = p.first_day();
                let publ = published.get(&day);
                let job = jobs.get(&day);
                let load = loads.get(&day);
                let job_state = job.map(|j| j.1);
                let state = match (publ, job_state) {
                    (_, Some(JobState::Running)) => MonthState::Running,
                    (Some(_), _)
                        if job.is_some_and(|j| {
                            j.1 == JobState::Succeeded && j.2.as_deref() == Some("unchanged")
                        }) =>
                    {
                        MonthState::Unchanged
                    }
                    (Some(_), _) => MonthState::Published,
                    (None, Some(JobState::Failed)) => MonthState::Failed,
                    (None, _) if at_source.contains(&p) => MonthState::AtSource,
                    (None, Some(s)) if s.is_pending() => MonthState::Queued,
                    (None, _) if load.is_some_and(|l| l.0 == LedgerStatus::Failed) => {
                        MonthState::Failed
                    }
                    (None, _) if !spec.cadence.pays(p) => MonthState::NotPaid,
                    (None, _) if tabulated && latest.is_some_and(|l| p < l) => {
                        MonthState::NotAtSource
                    }
                    (None, _) if p <= due => MonthState::Missing,
                    (None, _) => MonthState::NotDue,
                };
                MonthCell {
                    period: p.to_string(),
                    state,
                    load_id: publ.map(|x| x.0),
                    job_id: job.map(|j| j.0),
                    rows: publ.map(|x| x.1),
                    value_cents: publ.map(|x| x.2),
                    error_code: match state {
                        MonthState::Failed => job
                            .and_then(|j| j.3.clone())
                            .or_else(|| load.and_then(|l| l.1.clone())),
                        _ => None,
                    },
                }
            })
            .collect();
        out.push(DatasetBoard { status, months });
    }
    Ok(out)
}

async fn published_periods(
    client: &impl GenericClient,
    dataset: &str,
) -> Result<Option<Period>, tokio_postgres::Error> {
    let first: Option<NaiveDate> = client
        .query_one(
            "SELECT min(period) FROM carga.loads WHERE dataset = $1 AND status = 'published'",
            &[&dataset],
        )
        .await?
        .get(0);
    Ok(first.map(Period::from_date))
}
