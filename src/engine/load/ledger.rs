//! The loads ledger (`carga.loads`) and the rejects table. A load's row is
//! inserted when it starts and finished when it ends, outside the load
//! transaction so a failure is recorded even though its data rolls back;
//! the published state is written inside the publishing transaction.

use std::fmt;

use serde_json::json;
use tokio_postgres::GenericClient;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::dataset::Period;

/// A load's status in the ledger (`carga.loads.status`): the one place in
/// Rust that names the seven words. The ledger's statements bind it as a
/// parameter; the CHECK constraint (migrations V1, V3) spells the same
/// words, and a unit test holds the two equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerStatus {
    /// Started, not finished (or its process died: see `abandon_dead`).
    Running,
    /// The current load of its (program, month): at most one.
    Published,
    /// Was published; a later load of the same month replaced it.
    Superseded,
    /// The source was unchanged since the published load.
    Skipped,
    Failed,
    /// Its owning connection went away while it was running.
    Abandoned,
    Cancelled,
}

impl LedgerStatus {
    /// Every status, in the order of the CHECK constraint.
    pub const ALL: [LedgerStatus; 7] = [
        LedgerStatus::Running,
        LedgerStatus::Published,
        LedgerStatus::Superseded,
        LedgerStatus::Skipped,
        LedgerStatus::Failed,
        LedgerStatus::Abandoned,
        LedgerStatus::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            LedgerStatus::Running => "running",
            LedgerStatus::Published => "published",
            LedgerStatus::Superseded => "superseded",
            LedgerStatus::Skipped => "skipped",
            LedgerStatus::Failed => "failed",
            LedgerStatus::Abandoned => "abandoned",
            LedgerStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<LedgerStatus> {
        LedgerStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for LedgerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl<'a> FromSql<'a> for LedgerStatus {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = <&str as FromSql>::from_sql(ty, raw)?;
        LedgerStatus::parse(text).ok_or_else(|| format!("unknown ledger status {text:?}").into())
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

impl ToSql for LedgerStatus {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.as_str().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// A previously published load of the same program and period.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    pub period: chrono::NaiveDate,
    pub sha256: Option<Vec<u8>>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub rows_loaded: i64,
}

pub(crate) async fn start(
    client: &impl GenericClient,
    dataset: &str,
    program_code: Option<&str>,
    period: Option<Period>,
    source_url: &str,
    forced: bool,
) -> Result<i64, tokio_postgres::Error> {
    let period = period.map(Period::first_day);
    let row = client
        .query_one(
            "INSERT INTO carga.loads (dataset, program_code, period, status, source_url, forced,
                                      owner_pid)
             VALUES ($1, $2, $3, $6, $4, $5, pg_backend_pid()) RETURNING id",
            &[
                &dataset,
                &program_code,
                &period,
                &source_url,
                &forced,
                &LedgerStatus::Running,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// Records a failure or skip (outside the load transaction).
pub(crate) async fn finish_unpublished(
    client: &impl GenericClient,
    load_id: i64,
    status: LedgerStatus,
    error_code: Option<&str>,
    error: Option<&str>,
    stats: &serde_json::Value,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE carga.loads SET status = $2, error_code = $3, error = $4, finished_at = clock_timestamp(),
                    stage_seconds = coalesce($5::jsonb -> 'stage_seconds', stage_seconds),
                    bytes_downloaded = ($5::jsonb ->> 'bytes')::bigint,
                    rows_read = ($5::jsonb ->> 'rows_read')::bigint,
                    rows_rejected = ($5::jsonb ->> 'rows_rejected')::bigint,
                    sha256 = decode($5::jsonb ->> 'sha256', 'hex'),
                    layout = $5::jsonb ->> 'layout'
             WHERE id = $1 AND status = $6",
            &[
                &load_id,
                &status,
                &error_code,
                &error,
                stats,
                &LedgerStatus::Running,
            ],
        )
        .await?;
    Ok(())
}

/// A `running` ledger row is dead when the connection that owns it
/// (`owner_pid`, the ledger connection of its load) is gone: no backend has
/// that pid, or the one that has it started after the load did (the pid
/// was reused). The statements add `status = running` beside it.
const OWNER_GONE: &str = "NOT EXISTS (SELECT 1 FROM pg_stat_activity s
                    WHERE s.pid = carga.loads.owner_pid
                      AND (s.backend_start IS NULL OR s.backend_start <= carga.loads.started_at))";

/// Marks other `running` attempts of (program, period) whose owning
/// connection is gone `abandoned`. Call outside the load transaction
/// (autocommit), so the mark stays whatever this load's outcome.
pub(crate) async fn abandon_stale(
    client: &impl GenericClient,
    program_code: &str,
    period: Period,
    load_id: i64,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            &format!(
                "UPDATE carga.loads SET status = $4, finished_at = clock_timestamp()
                 WHERE program_code = $1 AND period = $2 AND id <> $3 AND status = $5
                   AND {OWNER_GONE}"
            ),
            &[
                &program_code,
                &period.first_day(),
                &load_id,
                &LedgerStatus::Abandoned,
                &LedgerStatus::Running,
            ],
        )
        .await
}

/// Marks every dead `running` row `abandoned`, whatever its month: the
/// maintenance loop of `serve` and `worker` runs it, so a killed load's
/// row never stays `running` (a later run of its month may never take the
/// month's lock, e.g. when the source answers 304).
pub(crate) async fn abandon_dead(
    client: &impl GenericClient,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            &format!(
                "UPDATE carga.loads SET status = $1, finished_at = clock_timestamp()
                 WHERE status = $2 AND {OWNER_GONE}"
            ),
            &[&LedgerStatus::Abandoned, &LedgerStatus::Running],
        )
        .await
}

/// Inside the reference load's transaction: supersede the dataset's
/// previous published load and mark this one published.
pub(crate) async fn publish_reference(
    client: &impl GenericClient,
    load_id: i64,
    dataset: &str,
    rows: i64,
) -> Result<(), tokio_postgres::Error> {
    publish_snapshot(client, load_id, dataset, rows, rows, 0).await
}

/// Publishes a snapshot's load (no period): the dataset's previous one is
/// superseded.
pub(crate) async fn publish_snapshot(
    client: &impl GenericClient,
    load_id: i64,
    dataset: &str,
    read: i64,
    loaded: i64,
    rejected: i64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE carga.loads SET status = $2 WHERE dataset = $1 AND status = $3",
            &[
                &dataset,
                &LedgerStatus::Superseded,
                &LedgerStatus::Published,
            ],
        )
        .await?;
    client
        .execute(
            "UPDATE carga.loads SET status = $3, finished_at = clock_timestamp(), rows_read = $2,
                    rows_loaded = $4, rows_rejected = $5
             WHERE id = $1",
            &[
                &load_id,
                &read,
                &LedgerStatus::Published,
                &loaded,
                &rejected,
            ],
        )
        .await?;
    Ok(())
}

/// The current published load of (program, period), if any.
pub(crate) async fn current(
    client: &impl GenericClient,
    program_code: &str,
    period: Period,
) -> Result<Option<Published>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT period, sha256, etag, last_modified, coalesce(rows_loaded, 0)
             FROM carga.loads WHERE program_code = $1 AND period = $2 AND status = $3",
            &[&program_code, &period.first_day(), &LedgerStatus::Published],
        )
        .await?;
    Ok(row.map(published))
}

/// A dataset's latest published load, as `carga datasets` and `/metrics`
/// show it.
#[derive(Debug, Clone)]
pub(crate) struct LastPublished {
    pub dataset: String,
    /// The latest published period (none for reference data).
    pub period: Option<chrono::NaiveDate>,
    /// When the latest publish finished, as the server writes it.
    pub finished_text: Option<String>,
    /// The same instant in seconds since the epoch.
    pub finished_epoch: Option<f64>,
}

/// Per dataset, its latest published period and publish; `None` when the
/// ledger does not exist yet (a database never migrated).
pub(crate) async fn last_published(
    client: &impl GenericClient,
) -> Result<Option<Vec<LastPublished>>, tokio_postgres::Error> {
    let migrated: bool = client
        .query_one("SELECT to_regclass('carga.loads') IS NOT NULL", &[])
        .await?
        .get(0);
    if !migrated {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT dataset, max(period) AS period, max(finished_at)::text AS finished_text,
                    extract(epoch FROM max(finished_at))::float8 AS finished_epoch
             FROM carga.loads WHERE status = $1 GROUP BY dataset",
            &[&LedgerStatus::Published],
        )
        .await?;
    Ok(Some(
        rows.iter()
            .map(|row| LastPublished {
                dataset: row.get("dataset"),
                period: row.get("period"),
                finished_text: row.get("finished_text"),
                finished_epoch: row.get("finished_epoch"),
            })
            .collect(),
    ))
}

/// Published loads that `carga demo` did not make: anything but the
/// builtin reference data and the demo month from `demo_source` (a LIKE
/// pattern). The demo refuses to overwrite them.
pub(crate) async fn foreign_to_demo(
    client: &impl GenericClient,
    demo_period: Option<chrono::NaiveDate>,
    demo_source: &str,
) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM carga.loads WHERE status = $3
               AND NOT (dataset = 'municipios' AND source_url LIKE 'builtin:%')
               AND NOT (dataset = 'novo-bolsa-familia' AND period = $1 AND source_url LIKE $2)",
            &[&demo_period, &demo_source, &LedgerStatus::Published],
        )
        .await?
        .get(0))
}

/// The baseline of the shrink guard: the published load of the same period,
/// else of the latest earlier period of the program.
pub(crate) async fn baseline(
    client: &impl GenericClient,
    program_code: &str,
    period: Period,
) -> Result<Option<Published>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT period, sha256, etag, last_modified, coalesce(rows_loaded, 0)
             FROM carga.loads WHERE program_code = $1 AND period <= $2 AND status = $3
             ORDER BY period DESC LIMIT 1",
            &[&program_code, &period.first_day(), &LedgerStatus::Published],
        )
        .await?;
    Ok(row.map(published))
}

fn published(row: tokio_postgres::Row) -> Published {
    Published {
        period: row.get(0),
        sha256: row.get(1),
        etag: row.get(2),
        last_modified: row.get(3),
        rows_loaded: row.get(4),
    }
}

/// Everything the ledger keeps about a published load.
#[derive(Debug, Clone, Default)]
pub(crate) struct PublishRecord {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub sha256: Vec<u8>,
    pub bytes_downloaded: i64,
    pub bytes_decompressed: i64,
    pub rows_read: i64,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
    pub distinct_beneficiaries: i64,
    pub value_cents: i64,
    pub partition_name: String,
    pub stage_seconds: serde_json::Value,
    /// The layout the file's header picked.
    pub layout: String,
}

/// Inside the publishing transaction: supersede the previous published load
/// of (program, period) and mark this one published.
pub(crate) async fn publish(
    client: &impl GenericClient,
    load_id: i64,
    program_code: &str,
    period: Period,
    record: &PublishRecord,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE carga.loads SET status = $3
             WHERE program_code = $1 AND period = $2 AND status = $4",
            &[
                &program_code,
                &period.first_day(),
                &LedgerStatus::Superseded,
                &LedgerStatus::Published,
            ],
        )
        .await?;
    client
        .execute(
            "UPDATE carga.loads SET status = $14, finished_at = clock_timestamp(), etag = $2, last_modified = $3,
                    sha256 = $4, bytes_downloaded = $5, bytes_decompressed = $6, rows_read = $7,
                    rows_loaded = $8, rows_rejected = $9, distinct_beneficiaries = $10,
                    total_value_brl = $11::bigint::numeric / 100, partition_name = $12, stage_seconds = $13,
                    layout = $15
             WHERE id = $1",
            &[
                &load_id,
                &record.etag,
                &record.last_modified,
                &record.sha256,
                &record.bytes_downloaded,
                &record.bytes_decompressed,
                &record.rows_read,
                &record.rows_loaded,
                &record.rows_rejected,
                &record.distinct_beneficiaries,
                &record.value_cents,
                &record.partition_name,
                &record.stage_seconds,
                &LedgerStatus::Published,
                &record.layout,
            ],
        )
        .await?;
    Ok(())
}

/// A refused row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    pub byte_offset: u64,
    pub column: Option<String>,
    pub code: &'static str,
    pub reason: String,
    pub raw_line: String,
}

/// Writes rejects in one statement (arrays unnested server-side).
pub(crate) async fn insert_rejects(
    client: &impl GenericClient,
    load_id: i64,
    rejects: &[Reject],
) -> Result<(), tokio_postgres::Error> {
    if rejects.is_empty() {
        return Ok(());
    }
    let lines: Vec<i64> = rejects.iter().map(|r| r.line as i64).collect();
    let offsets: Vec<i64> = rejects.iter().map(|r| r.byte_offset as i64).collect();
    let columns: Vec<Option<&str>> = rejects.iter().map(|r| r.column.as_deref()).collect();
    let reasons: Vec<String> = rejects
        .iter()
        .map(|r| format!("{}: {}", r.code, r.reason))
        .collect();
    let raws: Vec<&str> = rejects.iter().map(|r| r.raw_line.as_str()).collect();
    client
        .execute(
            "INSERT INTO carga.rejects (load_id, line, byte_offset, column_name, reason, raw_line)
             SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[])
             ON CONFLICT DO NOTHING",
            &[&load_id, &lines, &offsets, &columns, &reasons, &raws],
        )
        .await?;
    Ok(())
}

/// Stage timings as stored in the ledger.
pub(crate) fn stage_seconds(pairs: &[(&str, f64)]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        map.insert((*k).to_string(), json!((v * 1000.0).round() / 1000.0));
    }
    serde_json::Value::Object(map)
}

/// A ledger entry as the console shows it (no personal data: reject lines
/// are stored redacted).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadView {
    pub id: i64,
    pub dataset: String,
    pub period: Option<String>,
    pub status: LedgerStatus,
    pub forced: bool,
    pub source_url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub sha256: Option<String>,
    pub bytes_downloaded: Option<i64>,
    pub bytes_decompressed: Option<i64>,
    pub rows_read: Option<i64>,
    pub rows_loaded: Option<i64>,
    pub rows_rejected: Option<i64>,
    pub distinct_beneficiaries: Option<i64>,
    pub value_cents: Option<i64>,
    pub stage_seconds: serde_json::Value,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub rejects: Vec<RejectView>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RejectView {
    pub line: i64,
    pub column: Option<String>,
    pub reason: String,
    /// Redacted before it was stored.
    pub raw_line: Option<String>,
}

/// One ledger entry with its first `rejects` rejects, if it exists.
pub(crate) async fn view(
    client: &impl GenericClient,
    id: i64,
    rejects: i64,
) -> Result<Option<LoadView>, tokio_postgres::Error> {
    let Some(r) = client
        .query_opt(
            "SELECT id, dataset, to_char(period, 'YYYY-MM'), status, forced, source_url, etag,
                    last_modified, encode(sha256, 'hex'), bytes_downloaded, bytes_decompressed,
                    rows_read, rows_loaded, rows_rejected, distinct_beneficiaries,
                    (total_value_brl * 100)::bigint, stage_seconds, error_code, error,
                    started_at, finished_at
             FROM carga.loads WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let rejects = client
        .query(
            "SELECT line, column_name, reason, raw_line FROM carga.rejects
             WHERE load_id = $1 ORDER BY line LIMIT $2",
            &[&id, &rejects],
        )
        .await?
        .iter()
        .map(|x| RejectView {
            line: x.get(0),
            column: x.get(1),
            reason: x.get(2),
            raw_line: x.get(3),
        })
        .collect();
    Ok(Some(LoadView {
        id: r.get(0),
        dataset: r.get(1),
        period: r.get(2),
        status: r.get(3),
        forced: r.get(4),
        source_url: r.get(5),
        etag: r.get(6),
        last_modified: r.get(7),
        sha256: r.get(8),
        bytes_downloaded: r.get(9),
        bytes_decompressed: r.get(10),
        rows_read: r.get(11),
        rows_loaded: r.get(12),
        rows_rejected: r.get(13),
        distinct_beneficiaries: r.get(14),
        value_cents: r.get(15),
        stage_seconds: r.get(16),
        error_code: r.get(17),
        error: r.get(18),
        started_at: r.get(19),
        finished_at: r.get(20),
        rejects,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_serialise_as_their_text() {
        for status in LedgerStatus::ALL {
            assert_eq!(LedgerStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_string(&status).expect("json"),
                format!("\"{status}\"")
            );
            assert_eq!(
                serde_json::from_str::<LedgerStatus>(&format!("\"{status}\"")).expect("json"),
                status
            );
        }
        assert_eq!(LedgerStatus::parse("done"), None);
    }

    /// The enum and the table's CHECK constraint (as the last migration
    /// that wrote it, V3, leaves it) name the same words.
    #[test]
    fn statuses_are_the_ones_the_table_allows() {
        let migration = include_str!("../../../migrations/V3__ledger_cancelled_and_owner.sql");
        let check = migration
            .split("CHECK (status IN (")
            .nth(1)
            .and_then(|rest| rest.split("))").next())
            .expect("the CHECK constraint");
        let allowed: Vec<&str> = check
            .split(',')
            .map(|word| word.trim().trim_matches('\''))
            .collect();
        let named: Vec<&str> = LedgerStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(allowed, named);
    }
}
