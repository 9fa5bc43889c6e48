//! The dashboard's aggregate tables read back, for `carga demo`'s summary:
//! the same tables [`super`] writes, so their SQL lives beside it.

use tokio_postgres::GenericClient;

/// One program's national row for a month.
#[derive(Debug, Clone)]
pub struct National {
    pub families: i32,
    pub payments: i64,
    pub value_cents: i64,
    pub states: i32,
    pub municipalities: i32,
}

/// One state's row for a month.
#[derive(Debug, Clone)]
pub struct StateRow {
    pub abbreviation: String,
    pub families: i32,
    pub value_cents: i64,
    pub municipalities: i32,
}

/// One municipality's row for a month.
#[derive(Debug, Clone)]
pub struct MunicipalRow {
    pub name: String,
    pub state: String,
    pub ibge_code: String,
    pub families: i32,
    pub value_cents: i64,
}

/// `program_national_monthly` for `program` (its code) and `month`.
pub async fn national(
    client: &impl GenericClient,
    program: &str,
    month: chrono::NaiveDate,
) -> Result<National, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT n.total_families AS families, n.payments,
                    (n.total_value_brl * 100)::bigint AS value_cents, n.states, n.municipalities
             FROM public.program_national_monthly n JOIN public.programs p ON p.id = n.program_id
             WHERE p.code = $1 AND n.reference_date = $2",
            &[&program, &month],
        )
        .await?;
    Ok(National {
        families: row.get("families"),
        payments: row.get("payments"),
        value_cents: row.get("value_cents"),
        states: row.get("states"),
        municipalities: row.get("municipalities"),
    })
}

/// The `limit` states with the largest value in `program_state_monthly`.
pub async fn top_states(
    client: &impl GenericClient,
    program: &str,
    month: chrono::NaiveDate,
    limit: i64,
) -> Result<Vec<StateRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT s.abbreviation, a.total_families AS families,
                    (a.total_value_brl * 100)::bigint AS value_cents, a.municipalities
             FROM public.program_state_monthly a JOIN public.states s ON s.id = a.state_id
             JOIN public.programs p ON p.id = a.program_id
             WHERE p.code = $1 AND a.reference_date = $2
             ORDER BY a.total_value_brl DESC LIMIT $3",
            &[&program, &month, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| StateRow {
            abbreviation: row.get("abbreviation"),
            families: row.get("families"),
            value_cents: row.get("value_cents"),
            municipalities: row.get("municipalities"),
        })
        .collect())
}

/// The `limit` municipalities with the largest value in `beneficiary_data`.
pub async fn top_municipalities(
    client: &impl GenericClient,
    program: &str,
    month: chrono::NaiveDate,
    limit: i64,
) -> Result<Vec<MunicipalRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT m.name, s.abbreviation AS state, m.ibge_code, b.total_families AS families,
                    (b.total_value_brl * 100)::bigint AS value_cents
             FROM public.beneficiary_data b JOIN public.municipalities m ON m.id = b.municipality_id
             JOIN public.states s ON s.id = m.state_id JOIN public.programs p ON p.id = b.program_id
             WHERE p.code = $1 AND b.reference_date = $2
             ORDER BY b.total_value_brl DESC LIMIT $3",
            &[&program, &month, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| MunicipalRow {
            name: row.get("name"),
            state: row.get("state"),
            ibge_code: row.get("ibge_code"),
            families: row.get("families"),
            value_cents: row.get("value_cents"),
        })
        .collect())
}
