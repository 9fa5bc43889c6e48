//! The datasets' read model: per dataset, the last published period, when
//! it was published (freshness), the last successful job, the next
//! scheduled run and the gaps — months between the first expected period
//! and the last published one that were never published. One query path
//! for `carga schedule` and the HTTP API. Reads only.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::dataset::{Kind, Period, Spec};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DatasetStatus {
    pub dataset: String,
    pub title: String,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub next_run: Option<DateTime<Utc>>,
    pub last_published_period: Option<String>,
    pub last_published_at: Option<DateTime<Utc>>,
    /// Seconds since the last publish, on the database's clock.
    pub freshness_seconds: Option<f64>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub published_periods: usize,
    /// Months never published between the first expected period (the
    /// spec's `first_period`, else the first published) and the last
    /// published one.
    pub gaps: Vec<String>,
}

/// The status of every payments dataset in `specs`.
pub async fn datasets(
    client: &impl GenericClient,
    specs: &[Spec],
) -> Result<Vec<DatasetStatus>, tokio_postgres::Error> {
    let now: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let mut published: HashMap<String, BTreeSet<NaiveDate>> = HashMap::new();
    let mut published_at: HashMap<String, DateTime<Utc>> = HashMap::new();
    for row in client
        .query(
            "SELECT dataset, period, finished_at FROM carga.loads
             WHERE status = 'published' AND period IS NOT NULL",
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
        published.entry(dataset).or_default().insert(row.get(1));
    }
    let mut success: HashMap<String, DateTime<Utc>> = HashMap::new();
    for row in client
        .query(
            "SELECT dataset, max(finished_at) FROM carga.jobs
             WHERE state = 'succeeded' GROUP BY dataset",
            &[],
        )
        .await?
    {
        if let Some(at) = row.get::<_, Option<DateTime<Utc>>>(1) {
            success.insert(row.get(0), at);
        }
    }
    let mut out = Vec::new();
    for spec in specs.iter().filter(|s| s.kind != Kind::Reference) {
        let periods: Vec<Period> = published
            .get(&spec.dataset)
            .map(|s| s.iter().map(|d| Period::from_date(*d)).collect())
            .unwrap_or_default();
        let last = periods.last().copied();
        let gaps = match (spec.first_period.or(periods.first().copied()), last) {
            (Some(first), Some(last)) => Period::range(first, last)
                .into_iter()
                .filter(|p| !periods.contains(p))
                .map(|p| p.to_string())
                .collect(),
            _ => Vec::new(),
        };
        let last_at = published_at.get(&spec.dataset).copied();
        out.push(DatasetStatus {
            dataset: spec.dataset.clone(),
            title: spec.title.clone(),
            cron: spec.schedule.as_ref().map(|s| s.cron.clone()),
            timezone: spec.schedule.as_ref().map(|s| s.timezone.clone()),
            next_run: crate::schedule::next_slot(spec, now),
            last_published_period: last.map(|p| p.to_string()),
            last_published_at: last_at,
            freshness_seconds: last_at
                .map(|at| now.signed_duration_since(at).num_milliseconds() as f64 / 1000.0),
            last_success_at: success.get(&spec.dataset).copied(),
            published_periods: periods.len(),
            gaps,
        });
    }
    Ok(out)
}
