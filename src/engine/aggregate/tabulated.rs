//! The aggregate tables for one period of a pre-aggregated file
//! (`aggregates` kind), written from the load's working table
//! `carga_tabulated` (`load::tabulated`). The file already counted each
//! municipality; a state's and the country's figures are the sums of its
//! municipalities' (a file of counts holds no people to count apart). A
//! figure the file does not have is NULL at every level, never made up,
//! and a sum over places of which one lacks the figure is NULL too: a
//! partial sum is never published as a total.

use tokio_postgres::Transaction;

/// What one period's writes need.
pub(crate) struct PeriodScope<'a> {
    pub(crate) program_id: i32,
    pub(crate) reference_date: chrono::NaiveDate,
    pub(crate) load_id: i64,
    pub(crate) data_source: &'a str,
}

/// The period's figures as written, read back for the totals check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) municipalities: i64,
    pub(crate) beneficiaries: Option<i64>,
    pub(crate) families: Option<i64>,
    pub(crate) value_cents: Option<i64>,
}

/// Fails (SQLSTATE 22003) when a municipality's count would not fit
/// `beneficiary_data`'s integer columns, before anything is written.
async fn guard(tx: &Transaction<'_>, scope: &PeriodScope<'_>) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(&format!(
        "DO $$
         BEGIN
           IF EXISTS (SELECT 1 FROM carga_tabulated WHERE reference_date = DATE '{date}'
                      AND (beneficiaries > 2147483647 OR families > 2147483647)) THEN
             RAISE EXCEPTION 'a municipality''s count in {date} is beyond what its column holds'
               USING ERRCODE = 'numeric_value_out_of_range';
           END IF;
         END $$",
        date = scope.reference_date.format("%Y-%m-%d"),
    ))
    .await
}

/// Where a period's state and national sums come from: a query of
/// (`state_id`, `beneficiaries`, `families`, `value_cents`) per place for
/// the period `$2`.
enum Places {
    /// The file's municipalities (their count is written).
    Municipalities,
    /// Each state key's chosen approval (`state_level`: no municipalities).
    StateKeys,
}

impl Places {
    fn rows(&self) -> &'static str {
        match self {
            Places::Municipalities => {
                "SELECT m.state_id, t.beneficiaries, t.families, t.value_cents
                 FROM carga_tabulated t JOIN public.municipalities m ON m.id = t.municipality_id
                 WHERE t.reference_date = $2"
            }
            Places::StateKeys => {
                "SELECT state_id, beneficiaries, families, value_cents
                 FROM carga_state_chosen WHERE reference_date = $2"
            }
        }
    }
}

/// `program_state_monthly` (replaced) and `program_national_monthly`
/// (upserted) for one period, summed over `places`; a sum over places of
/// which one lacks the figure is NULL. Fails (SQLSTATE 22003, naming the
/// level) when a sum would not fit its column, before writing. Returns the
/// national figures written (`municipalities`: the states counted).
async fn state_and_national(
    tx: &Transaction<'_>,
    scope: &PeriodScope<'_>,
    places: Places,
) -> Result<Written, tokio_postgres::Error> {
    let (program, date, load) = (&scope.program_id, &scope.reference_date, &scope.load_id);
    let rows = places.rows();
    let municipalities = match places {
        Places::Municipalities => "count(*)",
        Places::StateKeys => "NULL::int",
    };
    let whole =
        |x: &str, cast: &str| format!("CASE WHEN count({x}) = count(*) THEN sum({x}){cast} END");
    let figures = format!(
        "{}, {}, {}",
        whole("beneficiaries", "::int"),
        whole("families", "::int"),
        whole("value_cents", "::numeric / 100")
    );
    // The guard reads the same rows, with the period inlined (a DO block
    // takes no parameters; only a formatted date goes in).
    let day = format!("DATE '{}'", date.format("%Y-%m-%d"));
    tx.batch_execute(&format!(
        "DO $$
         BEGIN
           IF EXISTS (SELECT 1 FROM ({inner}) p GROUP BY state_id
                      HAVING sum(beneficiaries) > 2147483647 OR sum(families) > 2147483647
                          OR abs(sum(value_cents)) > {m}) THEN
             RAISE EXCEPTION 'a state''s count or value in {date} is beyond what its column holds'
               USING ERRCODE = 'numeric_value_out_of_range';
           END IF;
           IF (SELECT sum(beneficiaries) > 2147483647 OR sum(families) > 2147483647
                      OR abs(sum(value_cents)) > {n} FROM ({inner}) p) THEN
             RAISE EXCEPTION 'the national count or value in {date} is beyond what its column holds'
               USING ERRCODE = 'numeric_value_out_of_range';
           END IF;
         END $$",
        inner = rows.replace("$2", &day),
        date = date.format("%Y-%m-%d"),
        m = super::MAX_CENTS_NUMERIC_15_2,
        n = super::MAX_CENTS_NUMERIC_17_2,
    ))
    .await?;
    tx.execute(
        "DELETE FROM public.program_state_monthly WHERE program_id = $1 AND reference_date = $2",
        &[program, date],
    )
    .await?;
    tx.execute(
        &format!(
            "INSERT INTO public.program_state_monthly
                 (program_id, state_id, reference_date, municipalities, total_beneficiaries,
                  total_families, total_value_brl, payments, load_id)
             SELECT $1, state_id, $2, {municipalities}, {figures}, NULL, $3
             FROM ({rows}) p GROUP BY state_id"
        ),
        &[program, date, load],
    )
    .await?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO public.program_national_monthly
                     (program_id, reference_date, states, municipalities, total_beneficiaries,
                      total_families, total_value_brl, payments, load_id, computed_at)
                 SELECT $1, $2, count(DISTINCT state_id), {municipalities}, {figures}, NULL, $3, now()
                 FROM ({rows}) p
                 ON CONFLICT (program_id, reference_date) DO UPDATE SET
                     states = EXCLUDED.states, municipalities = EXCLUDED.municipalities,
                     total_beneficiaries = EXCLUDED.total_beneficiaries,
                     total_families = EXCLUDED.total_families,
                     total_value_brl = EXCLUDED.total_value_brl, payments = EXCLUDED.payments,
                     load_id = EXCLUDED.load_id, computed_at = EXCLUDED.computed_at
                 RETURNING states::bigint, total_beneficiaries::bigint, total_families::bigint,
                           (total_value_brl * 100)::bigint"
            ),
            &[program, date, load],
        )
        .await?;
    Ok(Written {
        municipalities: row.get(0),
        beneficiaries: row.get(1),
        families: row.get(2),
        value_cents: row.get(3),
    })
}

/// Writes the period: `beneficiary_data` upserted per municipality (its
/// rows for municipalities the file no longer has deleted), then
/// `program_state_monthly` and `program_national_monthly`. Returns what
/// `beneficiary_data` now holds for the period.
pub(crate) async fn write_period(
    tx: &Transaction<'_>,
    scope: &PeriodScope<'_>,
) -> Result<Written, tokio_postgres::Error> {
    guard(tx, scope).await?;
    let (program, date, load) = (&scope.program_id, &scope.reference_date, &scope.load_id);
    tx.execute(
        "INSERT INTO public.beneficiary_data AS b
             (municipality_id, program_id, reference_date, total_beneficiaries, total_families,
              total_value_brl, extra_data, data_source, ingested_at)
         SELECT municipality_id, $1, $2, beneficiaries::int, families::int,
                value_cents::numeric / 100, jsonb_build_object('load_id', $3::bigint, 'line', line),
                $4, now() AT TIME ZONE 'UTC'
         FROM carga_tabulated WHERE reference_date = $2
         ON CONFLICT (municipality_id, program_id, reference_date) DO UPDATE SET
             total_beneficiaries = EXCLUDED.total_beneficiaries,
             total_families = EXCLUDED.total_families,
             total_value_brl = EXCLUDED.total_value_brl,
             extra_data = EXCLUDED.extra_data,
             data_source = EXCLUDED.data_source,
             ingested_at = EXCLUDED.ingested_at",
        &[program, date, load, &scope.data_source],
    )
    .await?;
    super::coverage::recompute(
        tx,
        &super::coverage::Scope::ProgramMonth {
            program_id: *program,
            reference_date: *date,
        },
    )
    .await?;
    tx.execute(
        "DELETE FROM public.beneficiary_data b
         WHERE b.program_id = $1 AND b.reference_date = $2
           AND b.municipality_id NOT IN
               (SELECT municipality_id FROM carga_tabulated WHERE reference_date = $2)",
        &[program, date],
    )
    .await?;
    state_and_national(tx, scope, Places::Municipalities).await?;
    let row = tx
        .query_one(
            "SELECT count(*), sum(total_beneficiaries)::bigint, sum(total_families)::bigint,
                    (sum(total_value_brl) * 100)::bigint
             FROM public.beneficiary_data WHERE program_id = $1 AND reference_date = $2",
            &[program, date],
        )
        .await?;
    Ok(Written {
        municipalities: row.get(0),
        beneficiaries: row.get(1),
        families: row.get(2),
        value_cents: row.get(3),
    })
}

/// Writes one period of a `state_level` file from `carga_state_chosen`
/// (each key's latest approval, parts summed): `program_state_monthly` per
/// state and `program_national_monthly`, with no municipality count (the
/// rows are not per municipality) and nothing in `beneficiary_data` (never
/// split over municipalities). Returns the national figures written.
pub(crate) async fn write_state_period(
    tx: &Transaction<'_>,
    scope: &PeriodScope<'_>,
) -> Result<Written, tokio_postgres::Error> {
    state_and_national(tx, scope, Places::StateKeys).await
}

/// Writes one period of a CadÚnico file into `cadunico_data` (upserted per
/// municipality; the period's rows for municipalities the file no longer
/// has deleted), then recomputes `coverage_rate` for every month this
/// register month is the denominator of. Returns what the table holds for
/// the period (municipalities, and `total_families` as beneficiaries).
pub(crate) async fn write_cadunico_period(
    tx: &Transaction<'_>,
    scope: &PeriodScope<'_>,
) -> Result<Written, tokio_postgres::Error> {
    let date = &scope.reference_date;
    // Every count must fit the API's integer columns.
    let too_big = (0..10)
        .map(|i| format!("m{i} > 2147483647"))
        .collect::<Vec<_>>()
        .join(" OR ");
    tx.batch_execute(&format!(
        "DO $$
         BEGIN
           IF EXISTS (SELECT 1 FROM carga_tabulated WHERE reference_date = DATE '{day}' AND ({too_big})) THEN
             RAISE EXCEPTION 'a CadÚnico count in {day} is beyond what its integer column holds'
               USING ERRCODE = 'numeric_value_out_of_range';
           END IF;
         END $$",
        day = date.format("%Y-%m-%d"),
    ))
    .await?;
    let columns = crate::dataset::CADUNICO_MEASURES.join(", ");
    let values = (0..10)
        .map(|i| format!("m{i}::int"))
        .collect::<Vec<_>>()
        .join(", ");
    let updates = crate::dataset::CADUNICO_MEASURES
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    tx.execute(
        &format!(
            "INSERT INTO public.cadunico_data (municipality_id, reference_date, {columns}, ingested_at)
             SELECT municipality_id, reference_date, {values}, now() AT TIME ZONE 'UTC'
             FROM carga_tabulated WHERE reference_date = $1
             ON CONFLICT (municipality_id, reference_date) DO UPDATE SET
                 {updates}, ingested_at = EXCLUDED.ingested_at"
        ),
        &[date],
    )
    .await?;
    tx.execute(
        "DELETE FROM public.cadunico_data c
         WHERE c.reference_date = $1
           AND c.municipality_id NOT IN
               (SELECT municipality_id FROM carga_tabulated WHERE reference_date = $1)",
        &[date],
    )
    .await?;
    super::coverage::recompute(
        tx,
        &super::coverage::Scope::From {
            reference_date: *date,
        },
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT count(*), sum(total_families)::bigint FROM public.cadunico_data
             WHERE reference_date = $1",
            &[date],
        )
        .await?;
    Ok(Written {
        municipalities: row.get(0),
        beneficiaries: row.get(1),
        families: None,
        value_cents: None,
    })
}

/// One year of population estimates: `municipalities.population` set from
/// the working table's first measure, when `latest` (the newest year the
/// file or the ledger has; an older year's revision changes nothing).
/// Municipalities the file lacks keep their population. Returns the rows
/// the period has (the file's municipalities).
pub(crate) async fn write_population_period(
    tx: &Transaction<'_>,
    scope: &PeriodScope<'_>,
    latest: bool,
) -> Result<Written, tokio_postgres::Error> {
    let date = &scope.reference_date;
    tx.batch_execute(&format!(
        "DO $$
         BEGIN
           IF EXISTS (SELECT 1 FROM carga_tabulated WHERE reference_date = DATE '{day}' AND m0 > 2147483647) THEN
             RAISE EXCEPTION 'a population in {day} is beyond what municipalities.population (integer) holds'
               USING ERRCODE = 'numeric_value_out_of_range';
           END IF;
         END $$",
        day = date.format("%Y-%m-%d"),
    ))
    .await?;
    if latest {
        tx.execute(
            "UPDATE public.municipalities m SET population = t.m0::int
             FROM carga_tabulated t
             WHERE t.reference_date = $1 AND t.municipality_id = m.id AND t.m0 IS NOT NULL
               AND m.population IS DISTINCT FROM t.m0::int",
            &[date],
        )
        .await?;
    }
    let row = tx
        .query_one(
            "SELECT count(*), sum(m0)::bigint FROM carga_tabulated WHERE reference_date = $1",
            &[date],
        )
        .await?;
    Ok(Written {
        municipalities: row.get(0),
        beneficiaries: row.get(1),
        families: None,
        value_cents: None,
    })
}
