//! The load's quality guards, as pure functions of what the stream saw: a
//! load that fails one rolls back and the published period stays as it was.

use super::error::LoadError;
use super::parser::ParseSummary;
use crate::dataset::{Period, Quality, Spec};
use crate::engine::aggregate::Totals;

/// The limit on rejects for `rows_read` rows: the larger of the spec's
/// allowance and its ratio of the rows read.
pub(crate) fn reject_limit(spec: &Spec, rows_read: u64) -> u64 {
    limit_of(&spec.quality, rows_read)
}

fn limit_of(quality: &Quality, rows_read: u64) -> u64 {
    let by_ratio = (quality.max_reject_ratio * rows_read as f64).floor() as u64;
    by_ratio.max(quality.reject_allowance)
}

/// Fails when the rejects pass the spec's limit, naming the first reject.
pub(crate) fn check_rejects(spec: &Spec, summary: &ParseSummary) -> Result<(), LoadError> {
    rejects_within(&spec.quality, summary)
}

fn rejects_within(quality: &Quality, summary: &ParseSummary) -> Result<(), LoadError> {
    let limit = limit_of(quality, summary.rows_read);
    if summary.rows_rejected > limit {
        let first = summary.rejects.first();
        return Err(too_many_rejects(
            summary.file.clone(),
            (summary.rows_rejected, summary.rows_read, limit),
            first.map_or(0, |r| r.line),
            first,
        ));
    }
    Ok(())
}

/// The error of `rejected` of `read` rows over `limit`, naming the first
/// reject (its line; its column and reason when it was kept).
fn too_many_rejects(
    file: String,
    (rejected, read, limit): (u64, u64, u64),
    first_line: u64,
    first: Option<&crate::engine::load::ledger::Reject>,
) -> LoadError {
    LoadError::TooManyRejects {
        file,
        rejected,
        read,
        limit,
        first_line,
        first_column: first
            .and_then(|r| r.column.as_ref())
            .map(|c| format!(", column {c:?}"))
            .unwrap_or_default(),
        first_reason: first.map(|r| r.reason.clone()).unwrap_or_default(),
    }
}

/// A file of many periods: the reject limit holds for each period it
/// publishes too (its rows loaded plus its rejects), so the rejects a whole
/// file allows cannot all fall on one period.
pub(super) fn check_period_rejects(
    quality: &Quality,
    summary: &ParseSummary,
    period: Period,
    rows_loaded: u64,
) -> Result<(), LoadError> {
    let Some(&(_, rejected, first_line)) = summary
        .rejects_by_period
        .iter()
        .find(|(p, _, _)| *p == period.yyyymm())
    else {
        return Ok(());
    };
    let read = rows_loaded + rejected;
    let limit = limit_of(quality, read);
    if rejected > limit {
        return Err(too_many_rejects(
            format!("{} ({period})", summary.file),
            (rejected, read, limit),
            first_line,
            summary.rejects.iter().find(|r| r.line == first_line),
        ));
    }
    Ok(())
}

/// The stream's own checks, in the order that names the root cause: no
/// rows at all, then too many rejects, then nothing left to load, then a
/// COPY that stored another count than the parser produced.
pub(super) fn check_stream(
    quality: &Quality,
    summary: &ParseSummary,
    copied_rows: u64,
) -> Result<(), LoadError> {
    if summary.rows_read == 0 {
        return Err(LoadError::NoRows {
            file: summary.file.clone(),
        });
    }
    rejects_within(quality, summary)?;
    if summary.rows_loaded == 0 {
        return Err(LoadError::NoRows {
            file: summary.file.clone(),
        });
    }
    if copied_rows != summary.rows_loaded {
        return Err(LoadError::Internal(format!(
            "COPY stored {copied_rows} rows but the parser produced {}",
            summary.rows_loaded
        )));
    }
    Ok(())
}

/// The shrink guard: fails when `rows` falls by more than the spec's
/// `max_shrink` against the baseline (the last published load of the same
/// or an earlier period).
pub(super) fn check_shrink(
    quality: &Quality,
    file: &str,
    rows: u64,
    baseline_rows: i64,
    baseline_period: Period,
) -> Result<(), LoadError> {
    let floor = (1.0 - quality.max_shrink) * baseline_rows as f64;
    if (rows as f64) < floor {
        let percent = 100.0 * (1.0 - rows as f64 / baseline_rows as f64);
        return Err(LoadError::Shrink {
            file: file.to_string(),
            rows,
            baseline_rows,
            baseline_period: baseline_period.to_string(),
            percent,
            allowed: quality.max_shrink * 100.0,
        });
    }
    Ok(())
}

/// The aggregates come from the tallies joined to `municipalities`: a
/// municipality lost in that join would silently drop its rows, so the
/// totals must equal what the parser counted.
pub(super) fn check_totals(totals: &Totals, summary: &ParseSummary) -> Result<(), LoadError> {
    if totals.payments as u64 != summary.rows_loaded
        || i128::from(totals.value_cents) != summary.value_cents
    {
        return Err(LoadError::Internal(format!(
            "aggregates disagree with the stream: {} rows / {} cents aggregated, {} rows / {} cents parsed",
            totals.payments, totals.value_cents, summary.rows_loaded, summary.value_cents
        )));
    }
    Ok(())
}

/// A pre-aggregated period: what `beneficiary_data` holds after the writes
/// must be what the parser summed for that period (a row lost or doubled
/// on the way fails the load).
pub(super) fn check_period_totals(
    written: &crate::engine::aggregate::tabulated::Written,
    tally: &super::parser::PeriodTally,
) -> Result<(), LoadError> {
    let sum = |v: Option<i64>| v.map_or(0, i128::from);
    let same = written.municipalities as u64 == tally.rows
        && sum(written.beneficiaries) == tally.beneficiaries
        && sum(written.families) == tally.families
        && sum(written.value_cents) == tally.value_cents;
    if !same {
        return Err(LoadError::Internal(format!(
            "aggregates of {} disagree with the stream: {written:?} written, {tally:?} parsed",
            tally.period
        )));
    }
    Ok(())
}

/// A period written to a table of many figures (`cadunico_data`): it must
/// hold one row per row the parser accepted for that period.
pub(super) fn check_period_rows(
    written: &crate::engine::aggregate::tabulated::Written,
    tally: &super::parser::PeriodTally,
) -> Result<(), LoadError> {
    if written.municipalities as u64 != tally.rows {
        return Err(LoadError::Internal(format!(
            "{}: {} rows written, {} parsed",
            tally.period, written.municipalities, tally.rows
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::engine::load::ledger::Reject;

    #[test]
    fn a_period_written_must_equal_its_tally() {
        use crate::engine::aggregate::tabulated::Written;
        use crate::engine::pipeline::parser::PeriodTally;
        let tally = PeriodTally {
            period: 202412,
            rows: 2,
            beneficiaries: 30,
            families: 0,
            value_cents: 0,
        };
        let written = Written {
            municipalities: 2,
            beneficiaries: Some(30),
            families: None,
            value_cents: None,
        };
        assert!(check_period_totals(&written, &tally).is_ok());
        let lost = Written {
            municipalities: 1,
            beneficiaries: Some(10),
            ..written
        };
        let error = check_period_totals(&lost, &tally).expect_err("a lost row");
        assert_eq!(error.code(), Code::Internal);
        assert!(error.to_string().contains("202412"), "{error}");
    }

    fn quality(ratio: f64, allowance: u64, shrink: f64) -> Quality {
        Quality {
            max_reject_ratio: ratio,
            reject_allowance: allowance,
            max_shrink: shrink,
            ..Quality::default()
        }
    }

    fn summary(read: u64, loaded: u64) -> ParseSummary {
        ParseSummary {
            file: "f.csv".into(),
            rows_read: read,
            rows_loaded: loaded,
            rows_rejected: read - loaded,
            value_cents: 100 * i128::from(loaded as i64),
            ..ParseSummary::default()
        }
    }

    #[test]
    fn the_reject_limit_is_the_larger_of_allowance_and_ratio() {
        let q = quality(0.01, 5, 0.5);
        assert_eq!(limit_of(&q, 100), 5);
        assert_eq!(limit_of(&q, 1_000), 10);
        assert_eq!(limit_of(&q, 1_099), 10, "the ratio rounds down");
    }

    #[test]
    fn too_many_rejects_names_the_first_one() {
        let q = quality(0.0, 1, 0.5);
        let mut s = summary(10, 8);
        s.rejects.push(Reject {
            line: 7,
            byte_offset: 300,
            column: Some("VALOR PARCELA".into()),
            code: "bad_money",
            reason: "not a number".into(),
            raw_line: String::new(),
        });
        let e = rejects_within(&q, &s).expect_err("the guard fails");
        assert_eq!(e.code(), Code::TooManyRejects);
        let text = e.to_string();
        assert!(
            text.contains("2 of 10 rows rejected, above the limit of 1"),
            "{text}"
        );
        assert!(
            text.contains("line 7, column \"VALOR PARCELA\": not a number"),
            "{text}"
        );
        assert!(rejects_within(&quality(0.0, 2, 0.5), &s).is_ok());
    }

    #[test]
    fn the_stream_checks_name_the_root_cause_first() {
        let q = quality(0.0, 0, 0.5);
        assert_eq!(
            check_stream(&q, &summary(0, 0), 0)
                .expect_err("the guard fails")
                .code(),
            Code::EmptyFile
        );
        // Every row rejected: the rejects, not "no rows", are the cause.
        let e = check_stream(&q, &summary(3, 0), 0).expect_err("the guard fails");
        assert_eq!(e.code(), Code::TooManyRejects);
        let lenient = quality(1.0, 0, 0.5);
        assert_eq!(
            check_stream(&lenient, &summary(3, 0), 0)
                .expect_err("the guard fails")
                .code(),
            Code::EmptyFile
        );
        assert_eq!(
            check_stream(&q, &summary(3, 3), 2)
                .expect_err("the guard fails")
                .code(),
            Code::Internal
        );
        assert!(check_stream(&q, &summary(3, 3), 3).is_ok());
    }

    #[test]
    fn the_shrink_guard_allows_exactly_max_shrink() {
        let q = quality(0.0, 0, 0.5);
        let period = Period::new(2024, 3).expect("a period");
        assert!(check_shrink(&q, "f", 50, 100, period).is_ok());
        let e = check_shrink(&q, "f", 49, 100, period).expect_err("the guard fails");
        assert_eq!(e.code(), Code::ShrinkGuard);
        let text = e.to_string();
        assert!(text.contains("49 rows loaded, 51.0% fewer"), "{text}");
        assert!(text.contains("the guard allows 50%"), "{text}");
        // 1.0 disables the guard.
        assert!(check_shrink(&quality(0.0, 0, 1.0), "f", 0, 100, period).is_ok());
    }

    #[test]
    fn totals_must_equal_what_was_parsed() {
        let s = summary(4, 4);
        let mut totals = Totals {
            municipalities: 2,
            states: 1,
            distinct_beneficiaries: 4,
            payments: 4,
            value_cents: 400,
        };
        assert!(check_totals(&totals, &s).is_ok());
        totals.value_cents = 399;
        assert_eq!(
            check_totals(&totals, &s)
                .expect_err("the guard fails")
                .code(),
            Code::Internal
        );
        totals.value_cents = 400;
        totals.payments = 3;
        assert!(check_totals(&totals, &s).is_err());
    }
}
