//! The load transaction's own settings: its name in `pg_stat_activity`,
//! its time limits, and the advisory lock that lets one load per
//! (program, period) run at a time.

use tokio_postgres::Transaction;

use crate::dataset::Period;

/// Names the transaction's session (for this transaction only) and returns
/// its backend pid, so that others can tell it apart and cancel it.
pub(crate) async fn name(
    tx: &Transaction<'_>,
    application_name: &str,
) -> Result<i32, tokio_postgres::Error> {
    Ok(tx
        .query_one(
            "SELECT pg_backend_pid() FROM set_config('application_name', $1, true)",
            &[&application_name],
        )
        .await?
        .get(0))
}

/// Bounds every statement and every lock wait of the transaction.
pub(crate) async fn limit(
    tx: &Transaction<'_>,
    statement_timeout_s: u64,
    lock_timeout_ms: u64,
) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '{statement_timeout_s}s'; SET LOCAL lock_timeout = '{lock_timeout_ms}ms'"
    ))
    .await
}

/// The advisory lock of one (program, period): carga's tag in the high
/// bits, then the program id and `YYYYMM`.
fn lock_key(program_id: i32, period: Period) -> i64 {
    (0x6361_i64 << 48) | (i64::from(program_id) << 24) | i64::from(period.yyyymm())
}

/// Takes the (program, period) lock until the transaction ends; false when
/// another load holds it.
pub(crate) async fn try_lock(
    tx: &Transaction<'_>,
    program_id: i32,
    period: Period,
) -> Result<bool, tokio_postgres::Error> {
    Ok(tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1)",
            &[&lock_key(program_id, period)],
        )
        .await?
        .get(0))
}

/// Takes the lock of a whole program's file (a dataset whose one file holds
/// every period) until the transaction ends; false when another load holds
/// it. Its key has month 0, which no period has.
pub(crate) async fn try_lock_file(
    tx: &Transaction<'_>,
    program_id: i32,
) -> Result<bool, tokio_postgres::Error> {
    let key = (0x6361_i64 << 48) | (i64::from(program_id) << 24);
    Ok(tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&key])
        .await?
        .get(0))
}
