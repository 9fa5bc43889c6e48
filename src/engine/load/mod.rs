//! Writing: the period's new partition, the binary COPY stream into it, the
//! swap that publishes it, and the ledger. Only this module (and later the
//! queue) writes carga's tables.
//!
//! Layout: `carga.payments` is LIST-partitioned by program, each program's
//! table by reference month. A load creates its leaf inside its own
//! transaction (invisible to every other session, and eligible for
//! `COPY … FREEZE`), fills it, recomputes the aggregates from it, and only
//! then, as the last statements before COMMIT, detaches and drops the old
//! leaf and attaches the new one.

pub(crate) mod copy;
pub mod ledger;
pub(crate) mod session;
pub(crate) mod tabulated;

use bytes::Bytes;
use futures::SinkExt;
use postgres_protocol::escape::escape_identifier;
use tokio::sync::mpsc;
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;

use tokio_postgres::GenericClient;

use crate::dataset::{Period, Program};
use crate::engine::parse::{MunicipalityEntry, MunicipalityIndex};

/// Inserts the program if missing (the API may own it already) and returns its id.
pub async fn ensure_program(
    client: &impl GenericClient,
    program: &Program,
) -> Result<i32, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO public.programs (code, name, description, data_source_url, update_frequency,
                                          is_active, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, true, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
             ON CONFLICT (code) DO NOTHING",
            &[
                &program.code,
                &program.name,
                &program.description,
                &program.data_source_url,
                &program.update_frequency,
            ],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT id FROM public.programs WHERE code = $1",
            &[&program.code],
        )
        .await?;
    Ok(row.get(0))
}

/// Municipality lookups from `public.municipalities` (codes, and names by
/// state for a file that names municipalities).
pub async fn municipality_index(
    client: &impl GenericClient,
) -> Result<MunicipalityIndex, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT m.id, m.ibge_code, m.siafi_code, m.state_id, m.name::text, s.abbreviation::text
             FROM public.municipalities m JOIN public.states s ON s.id = m.state_id
             WHERE m.ibge_code ~ '^[0-9]{7}$'",
            &[],
        )
        .await?;
    let code = |r: &tokio_postgres::Row| r.get::<_, String>(1).parse::<u32>().unwrap_or(0);
    let mut index = MunicipalityIndex::new(rows.iter().map(|r| {
        let siafi: Option<String> = r.get(2);
        MunicipalityEntry {
            id: r.get(0),
            ibge: code(r),
            siafi: siafi.and_then(|s| crate::engine::parse::value::siafi(s.as_bytes())),
            state_id: r.get(3),
        }
    }));
    for r in &rows {
        index.add_name(code(r), r.get(5), r.get(4));
    }
    Ok(index)
}

/// State abbreviation → database id, from `public.states`.
pub(crate) async fn state_ids(
    client: &impl GenericClient,
) -> Result<std::collections::HashMap<String, i32>, tokio_postgres::Error> {
    let rows = client
        .query("SELECT abbreviation::text, id FROM public.states", &[])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn program_table(code: &str) -> String {
    format!("payments_{}", code.to_ascii_lowercase())
}

fn leaf_prefix(code: &str, period: Period) -> String {
    format!("{}_{:06}_l", program_table(code), period.yyyymm())
}

fn qualified(name: &str) -> String {
    format!("carga.{}", escape_identifier(name))
}

/// Creates the program's partition of `carga.payments` if missing, in its
/// own short transaction (a concurrent creator is tolerated).
pub(crate) async fn ensure_program_partition(
    client: &impl GenericClient,
    program_id: i32,
    code: &str,
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF carga.payments FOR VALUES IN ({program_id})
         PARTITION BY LIST (reference_date)",
        qualified(&program_table(code))
    );
    match client.batch_execute(&sql).await {
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_TABLE)
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Creates the load's leaf table in `tx`, with a CHECK that implies its
/// partition bound (so ATTACH needs no validation scan). Returns its
/// unquoted name.
pub(crate) async fn create_leaf(
    tx: &Transaction<'_>,
    code: &str,
    program_id: i32,
    period: Period,
    load_id: i64,
) -> Result<String, tokio_postgres::Error> {
    let name = format!("{}{load_id}", leaf_prefix(code, period));
    tx.batch_execute(&format!(
        "CREATE TABLE {table} (LIKE carga.payments INCLUDING DEFAULTS,
             CONSTRAINT partition_bound CHECK (program_id = {program_id} AND reference_date = DATE '{day}'));
         -- constant per leaf: filled in by the server, not sent per row
         ALTER TABLE {table} ALTER COLUMN program_id SET DEFAULT {program_id},
             ALTER COLUMN reference_date SET DEFAULT DATE '{day}'",
        table = qualified(&name),
        day = period.first_day()
    ))
    .await?;
    Ok(name)
}

/// Streams pre-encoded binary COPY chunks from `rx` into `leaf`.
///
/// COPY starts only once the first chunk arrives (the producer sends it
/// after the header is validated), and is finished only if `producer`
/// succeeds; otherwise the sink is dropped, which aborts the COPY, and the
/// producer's error is returned. The producer must drop its sender when it
/// ends. Returns the row count COPY reports and the producer's value.
pub(crate) async fn copy_into<T, E>(
    tx: &Transaction<'_>,
    leaf: &str,
    rx: mpsc::Receiver<Bytes>,
    producer: impl Future<Output = Result<T, E>>,
) -> Result<(u64, T), E>
where
    E: From<tokio_postgres::Error>,
{
    let target = format!("{} ({})", qualified(leaf), copy::COLUMNS);
    copy_stream(tx, &target, "FREEZE", rx, producer).await
}

/// [`copy_into`] for any `target` (a table and its column list), with
/// COPY's extra `options`.
pub(crate) async fn copy_stream<T, E>(
    tx: &Transaction<'_>,
    target: &str,
    options: &str,
    mut rx: mpsc::Receiver<Bytes>,
    producer: impl Future<Output = Result<T, E>>,
) -> Result<(u64, T), E>
where
    E: From<tokio_postgres::Error>,
{
    let Some(first) = rx.recv().await else {
        let value = producer.await?;
        return Ok((0, value));
    };
    let sink = tx
        .copy_in::<_, Bytes>(&format!(
            "COPY {target} FROM STDIN (FORMAT binary{}{options})",
            if options.is_empty() { "" } else { ", " }
        ))
        .await?;
    tokio::pin!(sink);
    sink.send(first).await?;
    while let Some(chunk) = rx.recv().await {
        sink.send(chunk).await?;
    }
    // An error here returns early and drops the unfinished sink: COPY aborts.
    let value = producer.await?;
    let rows = sink.as_mut().finish().await?;
    Ok((rows, value))
}

/// Publishes `leaf` as the period's partition: detach and drop the current
/// leaf (if any), attach the new one. Run last before COMMIT: DETACH takes
/// an ACCESS EXCLUSIVE lock on the program's table until the commit.
/// Returns the replaced leaf's name.
pub(crate) async fn swap(
    tx: &Transaction<'_>,
    code: &str,
    period: Period,
    leaf: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    let parent = program_table(code);
    let prefix = leaf_prefix(code, period);
    let children = tx
        .query(
            "SELECT c.relname::text FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             JOIN pg_namespace n ON n.oid = p.relnamespace
             WHERE n.nspname = 'carga' AND p.relname = $1",
            &[&parent],
        )
        .await?;
    let mut replaced = None;
    for row in children {
        let name: String = row.get(0);
        if name.starts_with(&prefix) && name != leaf {
            tx.batch_execute(&format!(
                "ALTER TABLE {} DETACH PARTITION {}; DROP TABLE {};",
                qualified(&parent),
                qualified(&name),
                qualified(&name)
            ))
            .await?;
            replaced = Some(name);
        }
    }
    tx.batch_execute(&format!(
        "ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN (DATE '{}')",
        qualified(&parent),
        qualified(leaf),
        period.first_day()
    ))
    .await?;
    Ok(replaced)
}
