//! The aggregate tables, recomputed for exactly one program and period
//! inside the publishing transaction. Everything is counted by the worker
//! while the rows stream: sums and counts per municipality in `tally`,
//! exact distinct beneficiaries per municipality, state and country in
//! `distinct`. SQL only writes those numbers (a few thousand rows) and
//! never scans the period's payments. One function per table, its SQL
//! beside it. Money is integer cents until the single division into
//! `numeric`, and every money value written has two decimals (the
//! `numeric(p, 2)` columns by their type, the `extra_data` JSON by
//! `round(…, 2)`). Totals a column cannot hold fail the load in
//! [`prepare`], naming the cause, before any aggregate is written.

pub(crate) mod coverage;
mod distinct;
pub(crate) mod read;
pub(crate) mod tabulated;
mod tally;

use tokio_postgres::Transaction;

pub(crate) use distinct::DistinctSpill;
pub use tally::MunicipalTally;
pub(crate) use tally::Tallies;

/// What the aggregates say about the whole period.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    pub(crate) municipalities: i64,
    pub(crate) states: i64,
    pub(crate) distinct_beneficiaries: i64,
    pub(crate) payments: i64,
    pub(crate) value_cents: i64,
}

/// Everything the recompute needs to know.
pub(crate) struct Scope<'a> {
    pub(crate) program_id: i32,
    pub(crate) reference_date: chrono::NaiveDate,
    pub(crate) load_id: i64,
    pub(crate) paid_per_family: bool,
    pub(crate) data_source: &'a str,
}

/// What the worker counted: per municipality (database id), per state
/// (database id) and for the whole file.
pub struct Counted<'a> {
    pub municipal: &'a [(i32, MunicipalTally)],
    pub states: &'a [(i32, u64)],
    pub distinct_beneficiaries: u64,
}

/// Builds the two working tables of the recompute (dropped at commit):
/// `carga_municipal`, the municipal tallies with their state, and
/// `carga_state_people`, distinct beneficiaries per state.
pub async fn prepare(
    tx: &Transaction<'_>,
    counted: &Counted<'_>,
) -> Result<(), tokio_postgres::Error> {
    let municipal = counted.municipal;
    let ids: Vec<i32> = municipal.iter().map(|(id, _)| *id).collect();
    let column = |f: fn(&MunicipalTally) -> u64| -> Vec<i64> {
        municipal.iter().map(|(_, t)| f(t) as i64).collect()
    };
    let payments = column(|t| t.payments);
    let cents: Vec<i64> = municipal.iter().map(|(_, t)| t.cents).collect();
    let retro_payments = column(|t| t.retro_payments);
    let retro_cents: Vec<i64> = municipal.iter().map(|(_, t)| t.retro_cents).collect();
    let without_nis = column(|t| t.without_nis);
    let people = column(|t| t.people);
    tx.execute(
        "CREATE TEMP TABLE carga_municipal ON COMMIT DROP AS
         SELECT t.municipality_id, mu.state_id, t.payments, t.cents, t.retro_payments, t.retro_cents,
                t.without_nis, t.people
         FROM unnest($1::int[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                     $7::bigint[])
              AS t(municipality_id, payments, cents, retro_payments, retro_cents, without_nis, people)
         JOIN public.municipalities mu ON mu.id = t.municipality_id",
        &[&ids, &payments, &cents, &retro_payments, &retro_cents, &without_nis, &people],
    )
    .await?;
    guard_totals(tx, municipal.iter().any(|(_, t)| t.overflowed)).await?;
    let state_ids: Vec<i32> = counted.states.iter().map(|(id, _)| *id).collect();
    let state_people: Vec<i64> = counted.states.iter().map(|(_, n)| *n as i64).collect();
    tx.execute(
        "CREATE TEMP TABLE carga_state_people ON COMMIT DROP AS
         SELECT * FROM unnest($1::int[], $2::bigint[]) AS t(state_id, people)",
        &[&state_ids, &state_people],
    )
    .await?;
    Ok(())
}

/// Largest |cents| of `numeric(15, 2)`: `beneficiary_data` and
/// `program_state_monthly`'s `total_value_brl`.
pub const MAX_CENTS_NUMERIC_15_2: i64 = 999_999_999_999_999;
/// Largest |cents| of `numeric(17, 2)`: `program_national_monthly`'s
/// `total_value_brl` and the ledger's.
pub(crate) const MAX_CENTS_NUMERIC_17_2: i64 = 99_999_999_999_999_999;

/// Fails (SQLSTATE 22003, with a message saying which total) when a tally
/// overflowed in the worker or a municipal, state or national sum would not
/// fit its `numeric` column, instead of PostgreSQL's bare "numeric field
/// overflow" halfway through the aggregates. Only integers are formatted
/// into the statement.
async fn guard_totals(tx: &Transaction<'_>, overflowed: bool) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "DO $$
         BEGIN
           IF {overflowed} THEN
             RAISE EXCEPTION 'a municipal tally overflowed 64-bit cents in the worker'
               USING ERRCODE = 'numeric_value_out_of_range';
           END IF;
           IF EXISTS (SELECT 1 FROM carga_municipal WHERE abs(cents) > {m})
              OR EXISTS (SELECT 1 FROM carga_municipal GROUP BY state_id
                         HAVING abs(sum(cents)) > {m}) THEN
             RAISE EXCEPTION 'a municipality''s or state''s total value is beyond what total_value_brl numeric(15,2) holds'
               USING ERRCODE = 'numeric_value_out_of_range';
           END IF;
           IF (SELECT abs(coalesce(sum(cents), 0)) FROM carga_municipal) > {n} THEN
             RAISE EXCEPTION 'the national total value is beyond what total_value_brl numeric(17,2) holds'
               USING ERRCODE = 'numeric_value_out_of_range';
           END IF;
         END $$",
        m = MAX_CENTS_NUMERIC_15_2,
        n = MAX_CENTS_NUMERIC_17_2,
    );
    tx.batch_execute(&sql).await
}

/// `beneficiary_data`: one row per municipality, upserted (so the API's ids
/// survive), `coverage_rate` recomputed (`coverage`); the period's rows for
/// municipalities absent from the new file are deleted.
pub(crate) async fn municipal(
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
                        'retroactive_value_brl', round(retro_cents::numeric / 100, 2),
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
    coverage::recompute(
        tx,
        &coverage::Scope::ProgramMonth {
            program_id: scope.program_id,
            reference_date: scope.reference_date,
        },
    )
    .await?;
    Ok(upserted)
}

/// `program_state_monthly`: exact distinct beneficiaries per state (a
/// person paid in two municipalities of a state counts once).
pub(crate) async fn state(
    tx: &Transaction<'_>,
    scope: &Scope<'_>,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM public.program_state_monthly WHERE program_id = $1 AND reference_date = $2",
        &[&scope.program_id, &scope.reference_date],
    )
    .await?;
    tx.execute(
        "INSERT INTO public.program_state_monthly
             (program_id, state_id, reference_date, municipalities, total_beneficiaries,
              total_families, total_value_brl, payments, load_id)
         SELECT $1, a.state_id, $2, a.municipalities, coalesce(p.people, 0)::int,
                CASE WHEN $3 THEN coalesce(p.people, 0)::int END,
                a.cents::numeric / 100, a.payments, $4
         FROM (SELECT state_id, count(*) AS municipalities, sum(cents) AS cents,
                      sum(payments) AS payments
               FROM carga_municipal GROUP BY state_id) a
         LEFT JOIN carga_state_people p USING (state_id)",
        &[
            &scope.program_id,
            &scope.reference_date,
            &scope.paid_per_family,
            &scope.load_id,
        ],
    )
    .await
}

/// `program_national_monthly`, and the totals reported by the load.
pub(crate) async fn national(
    tx: &Transaction<'_>,
    scope: &Scope<'_>,
    distinct_beneficiaries: u64,
) -> Result<Totals, tokio_postgres::Error> {
    let row = tx
        .query_one(
            "SELECT count(DISTINCT state_id), count(*),
                    coalesce(sum(payments), 0)::bigint, coalesce(sum(cents), 0)::bigint
             FROM carga_municipal",
            &[],
        )
        .await?;
    let totals = Totals {
        states: row.get(0),
        municipalities: row.get(1),
        distinct_beneficiaries: distinct_beneficiaries as i64,
        payments: row.get(2),
        value_cents: row.get(3),
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
