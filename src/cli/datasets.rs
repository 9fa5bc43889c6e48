//! `carga datasets`: the specs, their schedule and last published period
//! ("-": never published). Fails when the database cannot be read.

use std::collections::HashMap;

use anyhow::Context as _;

use super::{CliResult, usage};
use crate::config::Settings;
use crate::dataset::{self, Period};

pub(crate) async fn run(settings: Settings) -> CliResult {
    let specs = dataset::load_all(&settings.load.jobs_dir).map_err(usage)?;
    // The LAST column needs the database: when it cannot be read the
    // command fails (exit 1, or 2 for a bad URL) rather than print "-" as if
    // nothing had ever been published. It only reads: no migration.
    let target = super::resolve(&settings).await?;
    let client = crate::db::connect(&target.config, &target.tls, &target.description)
        .await
        .map_err(|e| super::db_failure(e, "failed to read the last published periods"))?;
    let published = crate::engine::load::ledger::last_published(&client)
        .await
        .context("failed to read the last published periods")?;
    let mut last: HashMap<String, String> = HashMap::new();
    match published {
        Some(published) => {
            for row in published {
                let text = match row.period {
                    Some(p) => Period::from_date(p).to_string(),
                    None => row
                        .finished_text
                        .map(|f| f.chars().take(10).collect())
                        .unwrap_or_default(),
                };
                last.insert(row.dataset, text);
            }
        }
        None => eprintln!(
            "carga: note: {} has no carga schema yet (`carga migrate`), so nothing was published",
            target.description
        ),
    }
    println!(
        "{:<26} {:<11} {:<20} {:<10} {:<20} {:<16} {:<24} {:<18} {:>4} {:<10}",
        "DATASET",
        "KIND",
        "PROGRAM",
        "CONTAINER",
        "LAYOUTS",
        "CADENCE",
        "SCHEDULE (CRON)",
        "TIME ZONE",
        "LAG",
        "LAST"
    );
    for s in specs {
        let (cron, tz, lag) = match &s.schedule {
            Some(sc) => (
                sc.cron.clone(),
                sc.timezone.clone(),
                sc.lag_months.to_string(),
            ),
            None => ("on demand".into(), "-".into(), "-".into()),
        };
        let cadence = match (s.cadence.every_months, s.cadence.anchor) {
            _ if s.kind.is_snapshot() => "snapshot".to_string(),
            (1, _) | (_, None) => "monthly".to_string(),
            (12, Some(a)) => format!("yearly: {a}"),
            (n, Some(a)) => format!("{n}-monthly: {a}"),
        };
        let layouts: Vec<&str> = s.layouts.iter().map(|l| l.name.as_str()).collect();
        println!(
            "{:<26} {:<11} {:<20} {:<10} {:<20} {:<16} {:<24} {:<18} {:>4} {:<10}",
            s.dataset,
            s.kind.as_str(),
            match (&s.program, s.kind) {
                (Some(p), _) => p.code.as_str(),
                (None, crate::dataset::Kind::Reference) => "(reference)",
                (None, _) => "-",
            },
            format!("{:?}", s.source.container).to_lowercase(),
            layouts.join(","),
            cadence,
            cron,
            tz,
            lag,
            last.get(&s.dataset).map_or("-", String::as_str)
        );
    }
    Ok(())
}
