//! `beneficiary_data.coverage_rate`, the API's coverage of a program in a
//! municipality and month: the program's families (else its beneficiaries)
//! over the families in the CadÚnico register, capped at 1 (the seed's
//! `update_coverage.py`). The register's month is the same month, else the
//! latest earlier one with families (never a later one: that would use
//! numbers not yet known then); without any, the rate is NULL — the seed writes 0, a number
//! it does not have. Recomputed inside the publish transaction of whichever
//! side changed, so it is never stale and never half-updated.

use tokio_postgres::Transaction;

/// Which `beneficiary_data` rows to recompute.
pub(crate) enum Scope {
    /// One program's month (a payments or aggregates publish).
    ProgramMonth {
        program_id: i32,
        reference_date: chrono::NaiveDate,
    },
    /// Every row a register month can be the denominator of: that month
    /// and later (a CadÚnico publish).
    From { reference_date: chrono::NaiveDate },
}

/// Recomputes the rates in `scope`; returns the rows changed.
pub(crate) async fn recompute(
    tx: &Transaction<'_>,
    scope: &Scope,
) -> Result<u64, tokio_postgres::Error> {
    const RATE: &str = "UPDATE public.beneficiary_data b SET coverage_rate = x.rate
         FROM (SELECT b2.id,
                      (SELECT CASE WHEN c.total_families > 0
                                   THEN round(least(1, coalesce(b2.total_families, b2.total_beneficiaries)::numeric
                                                       / c.total_families), 4)
                              END
                       FROM public.cadunico_data c
                       WHERE c.municipality_id = b2.municipality_id
                         AND c.reference_date <= b2.reference_date
                         AND c.total_families > 0
                       ORDER BY c.reference_date DESC LIMIT 1) AS rate
               FROM public.beneficiary_data b2
               WHERE {filter}) x
         WHERE b.id = x.id AND b.coverage_rate IS DISTINCT FROM x.rate";
    match scope {
        Scope::ProgramMonth {
            program_id,
            reference_date,
        } => {
            tx.execute(
                &RATE.replace("{filter}", "b2.program_id = $1 AND b2.reference_date = $2"),
                &[program_id, reference_date],
            )
            .await
        }
        Scope::From { reference_date } => {
            // Only the rows whose denominator is this register month: none
            // of the municipality's later months comes before them.
            tx.execute(
                &RATE.replace(
                    "{filter}",
                    "b2.reference_date >= $1 AND NOT EXISTS (
                         SELECT 1 FROM public.cadunico_data l
                         WHERE l.municipality_id = b2.municipality_id AND l.total_families > 0
                           AND l.reference_date > $1 AND l.reference_date <= b2.reference_date)",
                ),
                &[reference_date],
            )
            .await
        }
    }
}
