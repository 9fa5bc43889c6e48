//! `carga datasets`: the specs, their schedule and last published period.

use std::collections::HashMap;

use super::{CliResult, usage};
use crate::config::Settings;
use crate::dataset::{self, Period};

pub async fn run(settings: Settings) -> CliResult {
    let specs = dataset::load_all(&settings.load.jobs_dir).map_err(usage)?;
    let mut last: HashMap<String, String> = HashMap::new();
    match super::connect(&settings).await {
        Ok(ctx) => {
            let client = ctx.pool.get().await.map_err(anyhow::Error::from)?;
            let rows = client
                .query(
                    "SELECT dataset, max(period), max(finished_at)::text FROM carga.loads
                     WHERE status = 'published' GROUP BY dataset",
                    &[],
                )
                .await
                .map_err(anyhow::Error::from)?;
            for row in rows {
                let period: Option<chrono::NaiveDate> = row.get(1);
                let finished: Option<String> = row.get(2);
                let text = match period {
                    Some(p) => Period::from_date(p).to_string(),
                    None => finished
                        .map(|f| f.chars().take(10).collect())
                        .unwrap_or_default(),
                };
                last.insert(row.get(0), text);
            }
        }
        Err(super::Failure::Usage(e) | super::Failure::Failed(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "database unavailable; last periods unknown");
        }
    }
    println!(
        "{:<26} {:<15} {:<10} {:<24} {:<18} {:>4} {:<10}",
        "DATASET", "PROGRAM", "CONTAINER", "SCHEDULE (CRON)", "TIME ZONE", "LAG", "LAST"
    );
    for s in specs {
        let (cron, tz, lag) = match &s.schedule {
            Some(sc) => (
                sc.cron.clone(),
                sc.timezone.clone(),
                sc.lag_months.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<26} {:<15} {:<10} {:<24} {:<18} {:>4} {:<10}",
            s.dataset,
            s.program
                .as_ref()
                .map_or("(reference)", |p| p.code.as_str()),
            format!("{:?}", s.source.container).to_lowercase(),
            cron,
            tz,
            lag,
            last.get(&s.dataset).map_or("-", String::as_str)
        );
    }
    Ok(())
}
