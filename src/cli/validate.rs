//! `carga validate <dataset> <url-or-path>`: parse and check a file without
//! loading it, and print the reject report. Municipality codes are checked
//! against the shipped reference list, so no database is needed. Exits 1
//! when the load would fail.

use std::sync::Arc;

use anyhow::anyhow;
use clap::Args;

use super::{CliResult, Failure, brl, usage};
use crate::config::Settings;
use crate::dataset;
use crate::engine::aggregate::MAX_CENTS_NUMERIC_17_2;
use crate::engine::parse::{MunicipalityEntry, MunicipalityIndex};
use crate::engine::pipeline;
use crate::engine::source::Progress;

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    pub(crate) dataset: String,
    /// URL or path of the file.
    pub(crate) location: String,
}

/// The shipped municipality list as a lookup (ids are the IBGE codes), with
/// names by state for a file that names municipalities.
fn builtin_index() -> MunicipalityIndex {
    use crate::engine::snapshot::reference;
    let municipalities =
        reference::parse_municipalities(reference::MUNICIPIOS_CSV, "municipios.csv")
            .unwrap_or_default();
    let states: std::collections::HashMap<String, String> =
        reference::parse_states(reference::ESTADOS_CSV, "estados.csv")
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.ibge_code, s.abbreviation))
            .collect();
    let mut index = MunicipalityIndex::new(municipalities.iter().filter_map(|m| {
        let ibge: u32 = m.ibge_code.parse().ok()?;
        Some(MunicipalityEntry {
            id: ibge as i32,
            ibge,
            // the same rule as a file's codes: exactly four digits
            siafi: m
                .siafi_code
                .as_deref()
                .and_then(|s| crate::engine::parse::value::siafi(s.as_bytes())),
            state_id: (ibge / 100_000) as i32,
        })
    }));
    for m in &municipalities {
        if let (Ok(ibge), Some(uf)) = (m.ibge_code.parse(), states.get(&m.state_code)) {
            index.add_name(ibge, uf, &m.name);
        }
    }
    index
}

/// The file's total as `carga run` would store it, or `None` when the
/// ledger's and the national aggregate's `numeric(17, 2)` cannot hold it (the
/// load would fail). Never truncated: `as i64` once printed a negative
/// total for a file whose sum passed `i64`.
fn storable_total(cents: i128) -> Option<i64> {
    i64::try_from(cents)
        .ok()
        .filter(|cents| cents.unsigned_abs() <= MAX_CENTS_NUMERIC_17_2.unsigned_abs())
}

pub(crate) async fn run(settings: Settings, args: ValidateArgs) -> CliResult {
    let spec = dataset::find(&settings.load.jobs_dir, &args.dataset).map_err(usage)?;
    let progress = Arc::new(Progress::default());
    let (ticker, bar) =
        super::spawn_progress(progress.clone(), format!("validate {}", spec.dataset));
    let result =
        pipeline::validate(&settings, &spec, &args.location, builtin_index(), progress).await;
    super::finish_progress(ticker, bar);
    let report = result.map_err(|e| Failure::Failed(e.into()))?;
    let s = &report.summary;
    println!("{} {}: {}", spec.dataset, report.source, s.file);
    println!("  layout          {}", s.layout);
    println!(
        "  bytes           {} read, {} decompressed",
        report.bytes, s.decompressed_bytes
    );
    let month = |yyyymm: u32| format!("{}-{:02}", yyyymm / 100, yyyymm % 100);
    if s.periods.is_empty() {
        println!(
            "  period          {}",
            if s.period == 0 {
                "-".to_string()
            } else {
                month(s.period)
            }
        );
    } else {
        // A file of many periods (aggregates): each with its rows.
        let mut periods = s.periods.clone();
        periods.sort_by_key(|p| p.period);
        let listed: Vec<String> = periods
            .iter()
            .map(|p| format!("{} ({} rows)", month(p.period), p.rows))
            .collect();
        println!("  periods         {}: {}", periods.len(), listed.join(", "));
    }
    println!(
        "  rows            {} read, {} valid, {} rejected (limit {})",
        s.rows_read, s.rows_loaded, s.rows_rejected, report.limit
    );
    let total = storable_total(s.value_cents);
    match total {
        _ if !spec.has_value() => println!("  value           - (the file has no value column)"),
        Some(cents) => println!("  value           {}", brl(cents)),
        None => println!("  value           beyond {}", brl(MAX_CENTS_NUMERIC_17_2)),
    }
    for (code, count) in &s.rejects_by_code {
        println!("  rejects         {count} {code}");
    }
    for r in s.rejects.iter().take(50) {
        println!(
            "  line {} (byte {}){}: {}\n      {}",
            r.line,
            r.byte_offset,
            r.column
                .as_ref()
                .map(|c| format!(", column {c:?}"))
                .unwrap_or_default(),
            r.reason,
            r.raw_line
        );
    }
    if s.rows_read == 0 {
        return Err(Failure::Failed(anyhow!("{}: no rows", s.file)));
    }
    if total.is_none() {
        return Err(Failure::Failed(anyhow!(
            "{}: the total value is beyond what the database stores ({}), so the load would fail",
            s.file,
            brl(MAX_CENTS_NUMERIC_17_2)
        )));
    }
    pipeline::check_rejects(&spec, s).map_err(|e| Failure::Failed(e.into()))?;
    println!("  result          ok: the file would load");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_never_truncated() {
        assert_eq!(storable_total(123_456), Some(123_456));
        assert_eq!(storable_total(-5_000), Some(-5_000));
        let max = i128::from(MAX_CENTS_NUMERIC_17_2);
        assert_eq!(storable_total(max), Some(MAX_CENTS_NUMERIC_17_2));
        assert_eq!(storable_total(-max), Some(-MAX_CENTS_NUMERIC_17_2));
        assert_eq!(storable_total(max + 1), None);
        // Two rows of 92233720368547758,07: `as i64` said R$ -0,02.
        let two = 2 * i128::from(i64::MAX);
        assert_eq!(two as i64, -2);
        assert_eq!(storable_total(two), None);
    }
}
