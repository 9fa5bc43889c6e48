//! The aggregate tables, recomputed for exactly one program and period
//! inside the publishing transaction. Sums and counts per municipality come
//! exact from the parser's tallies ([`tally`]); distinct beneficiaries come
//! from the rows the repeat filter flagged, which are the only rows SQL has
//! to deduplicate. One function per table, its SQL beside it. Money is
//! integer cents until the single division into `numeric`.

pub mod tally;

use tokio_postgres::Transaction;

pub use tally::{MunicipalTally, RepeatFilter, Tallies};

/// What the aggregates say about the whole period.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub municipalities: i64,
    pub states: i64,
    pub distinct_beneficiaries: i64,
    pub payments: i64,
    pub value_cents: i64,
}

/// Everything the recompute needs to know.
pub struct Scope<'a> {
    /// Quoted, schema-qualified name of the period's new partition.
    pub partition: &'a str,
    pub program_id: i32,
    pub reference_date: chrono::NaiveDate,
    pub load_id: i64,
    pub paid_per_family: bool,
    pub data_source: &'a str,
}

/// Builds the two working tables of the recompute (dropped at commit):
/// `carga_repeats`, every row whose beneficiary hash was flagged at least
/// once, and `carga_municipal`, the tallies with exact distinct counts.
pub async fn prepare(
    tx: &Transaction<'_>,
    scope: &Scope<'_>,
    municipal: &[(i32, MunicipalTally)],
) -> Result<(), tokio_postgres::Error> {
    let partition = scope.partition;
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE carga_repeats ON COMMIT DROP AS
         SELECT p.municipality_id, m.state_id, p.beneficiary_hash
         FROM {partition} p JOIN public.municipalities m ON m.id = p.municipality_id
         WHERE p.beneficiary_hash IN (SELECT beneficiary_hash FROM {partition} WHERE maybe_repeat);
         ANALYZE carga_repeats"
    ))
    .await?;
    let ids: Vec<i32> = municipal.iter().map(|(id, _)| *id).collect();
    let column = |f: fn(&MunicipalTally) -> i64| -> Vec<i64> {
        municipal.iter().map(|(_, t)| f(t)).collect()
    };
    let payments = column(|t| t.payments as i64);
    let cents = column(|t| t.cents);
    let retro_payments = column(|t| t.retro_payments as i64);
    let retro_cents = column(|t| t.retro_cents);
    let without_nis = column(|t| t.without_nis as i64);
    tx.execute(
        "CREATE TEMP TABLE carga_municipal ON COMMIT DROP AS
         SELECT t.municipality_id, mu.state_id, t.payments, t.cents, t.retro_payments, t.retro_cents,
                t.without_nis,
                t.payments - t.without_nis - coalesce(r.rows, 0) + coalesce(r.people, 0) AS people
         FROM unnest($1::int[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
              AS t(municipality_id, payments, cents, retro_payments, retro_cents, without_nis)
         JOIN public.municipalities mu ON mu.id = t.municipality_id
         LEFT JOIN (SELECT municipality_id, count(*) AS rows, count(DISTINCT beneficiary_hash) AS people
                    FROM carga_repeats GROUP BY municipality_id) r USING (municipality_id)",
        &[&ids, &payments, &cents, &retro_payments, &retro_cents, &without_nis],
    )
    .await?;
    Ok(())
}

/// What the partition holds: (rows, cents), to check against the tallies.
pub async fn stored(
    tx: &Transaction<'_>,
    scope: &Scope<'_>,
) -> Result<(i64, i64), tokio_postgres::Error> {
    let row = tx
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(value_cents), 0)::bigint FROM {}",
                scope.partition
            ),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// `beneficiary_data`: one row per municipality, upserted (so the API's ids
/// and its coverage_rate survive); the period's rows for municipalities
/// absent from the new file are deleted.
pub async fn municipal(
    tx: &Transaction<'_>,
    scope: &Scope<'_>,
) -> Result<u64, tokio_postgres::Error> {
    let upserted = tx
        .execute(
            "INSERT INTO public.beneficiary_data AS b
                 (municipality_id, program_id, reference_date, total_beneficiaries, total_families,
                  total_value_brl, extra_data, data_source, ingested_at)
             SELECT municipality_id, $1, $2, people::int,
                    CASE WHEN $3 THEN people::int END,
                    cents::numeric / 100,
                    jsonb_build_object(
                        'payments', payments,
                        'retroactive_payments', retro_payments,
                        'retroactive_value_brl', retro_cents::numeric / 100,
                        'payments_without_nis', without_nis,
                        'load_id', $4::bigint),
                    $5, now() AT TIME ZONE 'UTC'
             FROM carga_municipal
             ON CONFLICT (municipality_id, program_id, reference_date) DO UPDATE SET
                 total_beneficiaries = EXCLUDED.total_beneficiaries,
                 total_families = EXCLUDED.total_families,
                 total_value_brl = EXCLUDED.total_value_brl,
                 extra_data = EXCLUDED.extra_data,
                 data_source = EXCLUDED.data_source,
                 ingested_at = EXCLUDED.ingested_at",
            &[
                &scope.program_id,
                &scope.reference_date,
                &scope.paid_per_family,
                &scope.load_id,
                &scope.data_source,
            ],
        )
        .await?;
    tx.execute(
        "DELETE FROM public.beneficiary_data b
         WHERE b.program_id = $1 AND b.reference_date = $2
           AND b.municipality_id NOT IN (SELECT municipality_id FROM carga_municipal)",
        &[&scope.program_id, &scope.reference_date],
    )
    .await?;
    Ok(upserted)
}

/// `program_state_monthly`: exact distinct beneficiaries per state (a
/// person paid in two municipalities of a state counts once).
pub async fn state(tx: &Transaction<'_>, scope: &Scope<'_>) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM public.program_state_monthly WHERE program_id = $1 AND reference_date = $2",
        &[&scope.program_id, &scope.reference_date],
    )
    .await?;
    tx.execute(
        "INSERT INTO public.program_state_monthly
             (program_id, state_id, reference_date, municipalities, total_beneficiaries,
              total_families, total_value_brl, payments, load_id)
         SELECT $1, a.state_id, $2, a.municipalities,
                (a.nis_rows - coalesce(r.rows, 0) + coalesce(r.people, 0))::int,
                CASE WHEN $3 THEN (a.nis_rows - coalesce(r.rows, 0) + coalesce(r.people, 0))::int END,
                a.cents::numeric / 100, a.payments, $4
         FROM (SELECT state_id, count(*) AS municipalities, sum(payments - without_nis) AS nis_rows,
                      sum(cents) AS cents, sum(payments) AS payments
               FROM carga_municipal GROUP BY state_id) a
         LEFT JOIN (SELECT state_id, count(*) AS rows, count(DISTINCT beneficiary_hash) AS people
                    FROM carga_repeats GROUP BY state_id) r USING (state_id)",
        &[&scope.program_id, &scope.reference_date, &scope.paid_per_family, &scope.load_id],
    )
    .await
}

/// `program_national_monthly`, and the totals reported by the load.
pub async fn national(
    tx: &Transaction<'_>,
    scope: &Scope<'_>,
) -> Result<Totals, tokio_postgres::Error> {
    let row = tx
        .query_one(
            "SELECT count(DISTINCT state_id), count(*),
                    (coalesce(sum(payments - without_nis), 0)
                       - (SELECT count(*) FROM carga_repeats)
                       + (SELECT count(DISTINCT beneficiary_hash) FROM carga_repeats))::bigint,
                    coalesce(sum(payments), 0)::bigint, coalesce(sum(cents), 0)::bigint
             FROM carga_municipal",
            &[],
        )
        .await?;
    let totals = Totals {
        states: row.get(0),
        municipalities: row.get(1),
        distinct_beneficiaries: row.get(2),
        payments: row.get(3),
        value_cents: row.get(4),
    };
    tx.execute(
        "INSERT INTO public.program_national_monthly
             (program_id, reference_date, states, municipalities, total_beneficiaries, total_families,
              total_value_brl, payments, load_id, computed_at)
         VALUES ($1, $2, $3::bigint::int, $4::bigint::int, $5::bigint::int,
                 CASE WHEN $6 THEN $5::bigint::int END, $7::bigint::numeric / 100, $8, $9, now())
         ON CONFLICT (program_id, reference_date) DO UPDATE SET
             states = EXCLUDED.states, municipalities = EXCLUDED.municipalities,
             total_beneficiaries = EXCLUDED.total_beneficiaries, total_families = EXCLUDED.total_families,
             total_value_brl = EXCLUDED.total_value_brl, payments = EXCLUDED.payments,
             load_id = EXCLUDED.load_id, computed_at = EXCLUDED.computed_at",
        &[
            &scope.program_id,
            &scope.reference_date,
            &totals.states,
            &totals.municipalities,
            &totals.distinct_beneficiaries,
            &scope.paid_per_family,
            &totals.value_cents,
            &totals.payments,
            &scope.load_id,
        ],
    )
    .await?;
    Ok(totals)
}
