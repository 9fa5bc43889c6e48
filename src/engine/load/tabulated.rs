//! A pre-aggregated file's working table and ledger rows (`aggregates`
//! kind). The file's rows are COPYed into `carga_tabulated`, a temporary
//! table of the load transaction (dropped at its end); from it each period
//! gets a digest of its rows, and the periods whose digest differs from the
//! published one are written (`aggregate::tabulated`) and get a ledger row
//! of their own, pointing at the download's row (`file_load`).

use bytes::{BufMut, BytesMut};
use tokio_postgres::{GenericClient, Transaction};

use super::ledger::LedgerStatus;
use crate::dataset::Period;
use crate::engine::parse::TabulatedRow;
use crate::engine::parse::value::first_day_pg;

/// The working table and the column list every encoded row follows.
pub(crate) const TARGET: &str =
    "carga_tabulated (reference_date, municipality_id, state_id, place_key,
     version1, version2, part, beneficiaries, families, value_cents, line,
     m0, m1, m2, m3, m4, m5, m6, m7, m8, m9)";

/// Creates the working table, dropped when the transaction ends.
pub(crate) async fn create(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(
        "CREATE TEMP TABLE carga_tabulated (
             reference_date  date   NOT NULL,
             municipality_id int    NOT NULL,
             state_id        int    NOT NULL,
             place_key       bigint NOT NULL,
             version1        bigint NOT NULL,
             version2        bigint NOT NULL,
             part            bigint NOT NULL,
             beneficiaries   bigint,
             families        bigint,
             value_cents     bigint,
             line            bigint NOT NULL,
             m0 bigint, m1 bigint, m2 bigint, m3 bigint, m4 bigint,
             m5 bigint, m6 bigint, m7 bigint, m8 bigint, m9 bigint
         ) ON COMMIT DROP",
    )
    .await
}

/// Appends one tuple of `row` (read at `line`) in binary COPY format.
pub(crate) fn encode_row(buf: &mut BytesMut, row: &TabulatedRow) {
    buf.reserve(256);
    buf.put_i16(21);
    buf.put_i32(4);
    buf.put_i32(first_day_pg(row.period));
    for int in [row.municipality_id, row.state_id] {
        buf.put_i32(4);
        buf.put_i32(int);
    }
    for big in [row.key, row.version[0], row.version[1], row.part] {
        buf.put_i32(8);
        buf.put_i64(big);
    }
    for figure in [row.beneficiaries, row.families, row.value_cents] {
        match figure {
            Some(v) => {
                buf.put_i32(8);
                buf.put_i64(v);
            }
            None => buf.put_i32(-1),
        }
    }
    buf.put_i32(8);
    buf.put_i64(row.line as i64);
    for figure in row.measures {
        match figure {
            Some(v) => {
                buf.put_i32(8);
                buf.put_i64(v);
            }
            None => buf.put_i32(-1),
        }
    }
}

/// How a file's rows are keyed: per municipality (`aggregates`), or per
/// state key, approval and part (`state_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grain {
    Municipality,
    StateKey,
}

/// Two rows with one key: the first repeat, by line, and what it repeats.
#[derive(Debug, Clone)]
pub(crate) struct Repeat {
    pub(crate) line: i64,
    pub(crate) first_line: i64,
    pub(crate) what: String,
    pub(crate) period: chrono::NaiveDate,
}

/// The first (by line) row repeating an earlier row's key and period, if
/// any: its municipality, or its state key, approval and part.
pub(crate) async fn first_repeat(
    tx: &Transaction<'_>,
    grain: Grain,
) -> Result<Option<Repeat>, tokio_postgres::Error> {
    let sql = match grain {
        Grain::Municipality => {
            "SELECT r.line, r.first_line,
                    'municipality ' || m.ibge_code::text
                        || CASE WHEN r.part <> 0 THEN ', the same part' ELSE '' END,
                    r.reference_date
             FROM (SELECT line, reference_date, municipality_id, part,
                          min(line) OVER (PARTITION BY reference_date, municipality_id, part)
                              AS first_line
                   FROM carga_tabulated) r
             JOIN public.municipalities m ON m.id = r.municipality_id
             WHERE r.line <> r.first_line
             ORDER BY r.line LIMIT 1"
        }
        Grain::StateKey => {
            "SELECT r.line, r.first_line,
                    'CNPJ ' || lpad(r.place_key::text, 14, '0') || ', part ' || r.part || ' of one approval',
                    r.reference_date
             FROM (SELECT line, reference_date, place_key, part,
                          min(line) OVER (PARTITION BY reference_date, place_key, version1, version2, part)
                              AS first_line
                   FROM carga_tabulated) r
             WHERE r.line <> r.first_line
             ORDER BY r.line LIMIT 1"
        }
    };
    let row = tx.query_opt(sql, &[]).await?;
    Ok(row.map(|r| Repeat {
        line: r.get(0),
        first_line: r.get(1),
        what: r.get(2),
        period: r.get(3),
    }))
}

/// A period's rows before and after [`merge_parts`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Merged {
    pub(crate) period: Period,
    pub(crate) rows: i64,
    pub(crate) municipalities: i64,
}

/// Sums each municipality's parts (an `aggregates` file with a `part`
/// column: PNAE's rows per teaching modality) into one row, in place. A
/// figure one part lacks leaves the municipality's sum NULL, never
/// partial; the row keeps its first line. Returns each period's counts.
pub(crate) async fn merge_parts(
    tx: &Transaction<'_>,
) -> Result<Vec<Merged>, tokio_postgres::Error> {
    let counts = tx
        .query(
            "SELECT reference_date, count(*), count(DISTINCT municipality_id)
             FROM carga_tabulated GROUP BY reference_date ORDER BY reference_date",
            &[],
        )
        .await?;
    let whole = |c: &str| format!("CASE WHEN count({c}) = count(*) THEN sum({c}) END::bigint");
    let measures: Vec<String> = (0..10)
        .map(|i| format!("{} AS m{i}", whole(&format!("m{i}"))))
        .collect();
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE carga_parts ON COMMIT DROP AS
             SELECT reference_date, municipality_id, 0 AS state_id, 0::bigint AS place_key,
                    0::bigint AS version1, 0::bigint AS version2, 0::bigint AS part,
                    {b} AS beneficiaries, {f} AS families, {v} AS value_cents,
                    min(line) AS line, {m}
             FROM carga_tabulated GROUP BY reference_date, municipality_id;
         TRUNCATE carga_tabulated;
         INSERT INTO carga_tabulated SELECT * FROM carga_parts;
         DROP TABLE carga_parts;",
        b = whole("beneficiaries"),
        f = whole("families"),
        v = whole("value_cents"),
        m = measures.join(", "),
    ))
    .await?;
    Ok(counts
        .iter()
        .map(|r| Merged {
            period: Period::from_date(r.get(0)),
            rows: r.get(1),
            municipalities: r.get(2),
        })
        .collect())
}

/// A `state_level` value said once per approval that differs between its
/// parts: the first such key and period, with a line of each value.
#[derive(Debug, Clone)]
pub(crate) struct Disagreement {
    pub(crate) key: String,
    pub(crate) period: chrono::NaiveDate,
    pub(crate) lines: (i64, i64),
}

/// Keeps, per (state key, period), the rows of its latest approval (by
/// version1, then version2), parts summed, into `carga_state_chosen`
/// (dropped at commit). A `repeated` value (the same on every part) is
/// taken once; returns the first approval whose parts disagree on it.
pub(crate) async fn choose_latest(
    tx: &Transaction<'_>,
    repeated_value: bool,
) -> Result<Option<Disagreement>, tokio_postgres::Error> {
    // A figure a part lacks leaves the approval's sum NULL (never partial).
    let value = if repeated_value {
        "min(t.value_cents)"
    } else {
        "CASE WHEN count(t.value_cents) = count(*) THEN sum(t.value_cents) END"
    };
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE carga_state_chosen ON COMMIT DROP AS
         WITH latest AS (
             SELECT DISTINCT ON (reference_date, place_key) reference_date, place_key, version1, version2
             FROM carga_tabulated
             ORDER BY reference_date, place_key, version1 DESC, version2 DESC)
         SELECT t.reference_date, t.place_key, min(t.state_id) AS state_id,
                CASE WHEN count(t.beneficiaries) = count(*) THEN sum(t.beneficiaries) END AS beneficiaries,
                CASE WHEN count(t.families) = count(*) THEN sum(t.families) END AS families,
                {value} AS value_cents,
                min(t.value_cents) IS DISTINCT FROM max(t.value_cents)
                    OR (count(t.value_cents) > 0 AND count(t.value_cents) < count(*)) AS disagree,
                min(t.line) AS first_line, max(t.line) AS last_line
         FROM carga_tabulated t
         JOIN latest l USING (reference_date, place_key, version1, version2)
         GROUP BY t.reference_date, t.place_key"
    ))
    .await?;
    if !repeated_value {
        return Ok(None);
    }
    let row = tx
        .query_opt(
            "SELECT 'CNPJ ' || lpad(place_key::text, 14, '0'), reference_date, first_line, last_line
             FROM carga_state_chosen WHERE disagree ORDER BY first_line LIMIT 1",
            &[],
        )
        .await?;
    Ok(row.map(|r| Disagreement {
        key: r.get(0),
        period: r.get(1),
        lines: (r.get(2), r.get(3)),
    }))
}

/// One period of the file: its row count and the digest of its rows
/// (SHA-256 over the rows in municipality order; NULL spelled apart from
/// every number).
#[derive(Debug, Clone)]
pub(crate) struct PeriodDigest {
    pub(crate) period: Period,
    pub(crate) rows: i64,
    pub(crate) digest: Vec<u8>,
}

/// The file's periods, oldest first: per municipality, or per state key
/// (its chosen approval, after [`choose_latest`]).
pub(crate) async fn periods(
    tx: &Transaction<'_>,
    grain: Grain,
) -> Result<Vec<PeriodDigest>, tokio_postgres::Error> {
    let (key, table) = match grain {
        Grain::Municipality => (
            "municipality_id, coalesce(m0::text, '-'), coalesce(m1::text, '-'), coalesce(m2::text, '-'),
             coalesce(m3::text, '-'), coalesce(m4::text, '-'), coalesce(m5::text, '-'),
             coalesce(m6::text, '-'), coalesce(m7::text, '-'), coalesce(m8::text, '-'),
             coalesce(m9::text, '-')",
            "carga_tabulated",
        ),
        Grain::StateKey => ("place_key || ':' || state_id", "carga_state_chosen"),
    };
    let order = match grain {
        Grain::Municipality => "municipality_id",
        Grain::StateKey => "place_key",
    };
    let rows = tx
        .query(
            &format!(
                "SELECT reference_date, count(*),
                        sha256(convert_to(string_agg(
                            concat_ws(',', {key}, coalesce(beneficiaries::text, '-'),
                                      coalesce(families::text, '-'), coalesce(value_cents::text, '-')),
                            ';' ORDER BY {order}), 'UTF8'))
                 FROM {table} GROUP BY reference_date ORDER BY reference_date"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PeriodDigest {
            period: Period::from_date(r.get(0)),
            rows: r.get(1),
            digest: r.get(2),
        })
        .collect())
}

/// What the ledger holds of a period published before.
#[derive(Debug, Clone)]
pub(crate) struct PublishedPeriod {
    pub(crate) period: Period,
    pub(crate) digest: Option<Vec<u8>>,
    pub(crate) rows: i64,
}

/// The published ledger rows of `program_code`'s periods.
pub(crate) async fn published(
    client: &impl GenericClient,
    program_code: &str,
) -> Result<Vec<PublishedPeriod>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT period, sha256, coalesce(rows_loaded, 0) FROM carga.loads
             WHERE program_code = $1 AND period IS NOT NULL AND status = $2",
            &[&program_code, &LedgerStatus::Published],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PublishedPeriod {
            period: Period::from_date(r.get(0)),
            digest: r.get(1),
            rows: r.get(2),
        })
        .collect())
}

/// The validators of the last published download of the file, for a
/// conditional request, and its SHA-256.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileValidators {
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
    pub(crate) sha256: Option<Vec<u8>>,
}

pub(crate) async fn last_download(
    client: &impl GenericClient,
    program_code: &str,
) -> Result<Option<FileValidators>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT etag, last_modified, sha256 FROM carga.loads
             WHERE program_code = $1 AND period IS NULL AND status = $2
             ORDER BY finished_at DESC LIMIT 1",
            &[&program_code, &LedgerStatus::Published],
        )
        .await?;
    Ok(row.map(|r| FileValidators {
        etag: r.get(0),
        last_modified: r.get(1),
        sha256: r.get(2),
    }))
}

/// One period as published: its ledger row's figures.
#[derive(Debug, Clone)]
pub(crate) struct PeriodRecord<'a> {
    pub(crate) dataset: &'a str,
    pub(crate) program_code: &'a str,
    pub(crate) period: Period,
    pub(crate) source_url: &'a str,
    pub(crate) forced: bool,
    pub(crate) digest: &'a [u8],
    pub(crate) rows: i64,
    pub(crate) value_cents: Option<i64>,
    pub(crate) layout: &'a str,
}

/// In the publishing transaction: supersede the period's published row and
/// insert this one, `published`, pointing at the download `file_load`.
pub(crate) async fn publish_period(
    tx: &Transaction<'_>,
    file_load: i64,
    record: &PeriodRecord<'_>,
) -> Result<i64, tokio_postgres::Error> {
    let period = record.period.first_day();
    tx.execute(
        "UPDATE carga.loads SET status = $3
         WHERE program_code = $1 AND period = $2 AND status = $4",
        &[
            &record.program_code,
            &period,
            &LedgerStatus::Superseded,
            &LedgerStatus::Published,
        ],
    )
    .await?;
    let row = tx
        .query_one(
            "INSERT INTO carga.loads (dataset, program_code, period, status, forced, source_url, sha256,
                                      rows_read, rows_loaded, total_value_brl, layout, file_load,
                                      started_at, finished_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $8, $9::bigint::numeric / 100, $10, $11,
                    f.started_at, clock_timestamp()
             FROM carga.loads f WHERE f.id = $11
             RETURNING id",
            &[
                &record.dataset,
                &record.program_code,
                &period,
                &LedgerStatus::Published,
                &record.forced,
                &record.source_url,
                &record.digest,
                &record.rows,
                &record.value_cents,
                &record.layout,
                &file_load,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// In the publishing transaction: the download's own row becomes the
/// program's published download (the one a conditional request asks with).
pub(crate) async fn publish_download(
    tx: &Transaction<'_>,
    load_id: i64,
    program_code: &str,
    record: &super::ledger::PublishRecord,
    value_cents: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE carga.loads SET status = $3
         WHERE program_code = $1 AND period IS NULL AND status = $2 AND id <> $4",
        &[
            &program_code,
            &LedgerStatus::Published,
            &LedgerStatus::Superseded,
            &load_id,
        ],
    )
    .await?;
    tx.execute(
        "UPDATE carga.loads SET status = $2, finished_at = clock_timestamp(), etag = $3,
                last_modified = $4, sha256 = $5, bytes_downloaded = $6, bytes_decompressed = $7,
                rows_read = $8, rows_loaded = $9, rows_rejected = $10,
                total_value_brl = $11::bigint::numeric / 100, stage_seconds = $12, layout = $13
         WHERE id = $1",
        &[
            &load_id,
            &LedgerStatus::Published,
            &record.etag,
            &record.last_modified,
            &record.sha256,
            &record.bytes_downloaded,
            &record.bytes_decompressed,
            &record.rows_read,
            &record.rows_loaded,
            &record.rows_rejected,
            &value_cents,
            &record.stage_seconds,
            &record.layout,
        ],
    )
    .await?;
    Ok(())
}

/// After the COPY: an index on the period (every per-period statement
/// filters on it) and fresh statistics for the planner.
pub(crate) async fn index(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(
        "CREATE INDEX ON carga_tabulated (reference_date);
         ANALYZE carga_tabulated",
    )
    .await
}
