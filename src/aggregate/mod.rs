//! The aggregate tables, recomputed for exactly one program and period from
//! the period's new (not yet attached) partition, inside the publishing
//! transaction. One function per table, its SQL beside it. Money is summed
//! as integer cents and divided once: no floating point anywhere.

use tokio_postgres::Transaction;

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

/// `beneficiary_data`: one row per municipality, upserted (so the API's ids
/// and its coverage_rate survive), and the period's rows for municipalities
/// absent from the new file deleted.
pub async fn municipal(
    tx: &Transaction<'_>,
    scope: &Scope<'_>,
) -> Result<u64, tokio_postgres::Error> {
    let partition = scope.partition;
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE carga_municipal ON COMMIT DROP AS
         SELECT municipality_id,
                count(DISTINCT beneficiary_hash) AS people,
                count(*) AS payments,
                sum(value_cents) AS cents,
                count(*) FILTER (WHERE competence_date < reference_date) AS retro_payments,
                coalesce(sum(value_cents) FILTER (WHERE competence_date < reference_date), 0) AS retro_cents,
                count(*) FILTER (WHERE beneficiary_hash IS NULL) AS without_nis
         FROM {partition}
         GROUP BY municipality_id"
    ))
    .await?;
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
           AND NOT EXISTS (SELECT 1 FROM carga_municipal a WHERE a.municipality_id = b.municipality_id)",
        &[&scope.program_id, &scope.reference_date],
    )
    .await?;
    Ok(upserted)
}

/// `program_state_monthly`: exact distinct beneficiaries per state.
pub async fn state(tx: &Transaction<'_>, scope: &Scope<'_>) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        "DELETE FROM public.program_state_monthly WHERE program_id = $1 AND reference_date = $2",
        &[&scope.program_id, &scope.reference_date],
    )
    .await?;
    tx.execute(
        &format!(
            "INSERT INTO public.program_state_monthly
                 (program_id, state_id, reference_date, municipalities, total_beneficiaries,
                  total_families, total_value_brl, payments, load_id)
             SELECT $1, m.state_id, $2, count(DISTINCT p.municipality_id)::int,
                    count(DISTINCT p.beneficiary_hash)::int,
                    CASE WHEN $3 THEN count(DISTINCT p.beneficiary_hash)::int END,
                    sum(p.value_cents)::numeric / 100, count(*), $4
             FROM {} p JOIN public.municipalities m ON m.id = p.municipality_id
             GROUP BY m.state_id",
            scope.partition
        ),
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
pub async fn national(
    tx: &Transaction<'_>,
    scope: &Scope<'_>,
) -> Result<Totals, tokio_postgres::Error> {
    let row = tx
        .query_one(
            &format!(
                "SELECT count(DISTINCT beneficiary_hash), count(*), coalesce(sum(value_cents), 0)::bigint,
                        count(DISTINCT municipality_id)
                 FROM {}",
                scope.partition
            ),
            &[],
        )
        .await?;
    let states: i64 = tx
        .query_one(
            "SELECT count(*) FROM public.program_state_monthly WHERE program_id = $1 AND reference_date = $2",
            &[&scope.program_id, &scope.reference_date],
        )
        .await?
        .get(0);
    let totals = Totals {
        distinct_beneficiaries: row.get(0),
        payments: row.get(1),
        value_cents: row.get(2),
        municipalities: row.get(3),
        states,
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
