//! The schema: refinery's embedded migrations applied under an advisory
//! lock, the API-facing tables carga adopts or creates, and whether the
//! migrating session was encrypted.

use super::{Result, Target, connect};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Session-level advisory lock key serialising `migrate` across processes.
const MIGRATION_LOCK_KEY: i64 = 0x6361_7267_615f_6d31; // "carga_m1"

/// The tables the dashboard API's Alembic migrations create, which carga
/// adopts when they exist and creates when they do not.
const API_TABLES: [&str; 4] = ["states", "municipalities", "programs", "beneficiary_data"];

/// What [`migrate_reporting`] did.
#[derive(Debug, Default)]
pub struct Migration {
    /// The migrations applied now, oldest first.
    pub applied: Vec<String>,
    /// API-facing tables that did not exist and were created by carga (the
    /// API's own `alembic upgrade head` will then fail on them).
    pub created_api_tables: Vec<&'static str>,
    /// Whether the migrating session was encrypted.
    pub encryption: Encryption,
}

/// Whether a session is encrypted, as the server sees it (`pg_stat_ssl`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Encryption {
    pub encrypted: bool,
    /// `TLSv1.3`, when encrypted.
    pub tls_version: Option<String>,
    pub cipher: Option<String>,
}

impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.encrypted, &self.tls_version, &self.cipher) {
            (false, _, _) => f.write_str("not encrypted"),
            (true, Some(version), Some(cipher)) => write!(f, "encrypted ({version}, {cipher})"),
            (true, Some(version), None) => write!(f, "encrypted ({version})"),
            (true, None, _) => f.write_str("encrypted"),
        }
    }
}

/// Reads this session's row of `pg_stat_ssl`.
pub(crate) async fn encryption(client: &tokio_postgres::Client) -> Result<Encryption> {
    let row = client
        .query_opt(
            "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(match row {
        Some(row) => Encryption {
            encrypted: row.get(0),
            tls_version: row.get(1),
            cipher: row.get(2),
        },
        None => Encryption::default(),
    })
}

/// Applies the embedded migrations; returns the ones applied now.
pub async fn migrate(target: &Target) -> Result<Vec<String>> {
    Ok(migrate_reporting(target).await?.applied)
}

/// Applies the embedded migrations, serialised across processes by a
/// session advisory lock on a dedicated connection (closed afterwards, so
/// the lock never outlives this call), and says which API-facing tables it
/// created rather than adopted.
pub async fn migrate_reporting(target: &Target) -> Result<Migration> {
    let mut client = connect(&target.config, &target.tls, &target.description).await?;
    let encryption = encryption(&client).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let missing_before = missing_api_tables(&client).await?;
    client
        .batch_execute("CREATE SCHEMA IF NOT EXISTS carga")
        .await?;
    let report = embedded::migrations::runner()
        .set_migration_table_name("carga.schema_history")
        .run_async(&mut client)
        .await?;
    let missing_after = missing_api_tables(&client).await?;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    Ok(Migration {
        applied: report
            .applied_migrations()
            .iter()
            .map(|m| m.to_string())
            .collect(),
        created_api_tables: missing_before
            .into_iter()
            .filter(|t| !missing_after.contains(t))
            .collect(),
        encryption,
    })
}

async fn missing_api_tables(client: &tokio_postgres::Client) -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for table in API_TABLES {
        let qualified = format!("public.{table}");
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified])
            .await?
            .get(0);
        if !exists {
            missing.push(table);
        }
    }
    Ok(missing)
}

/// How many migrations the binary carries.
pub fn migration_count() -> usize {
    embedded::migrations::runner().get_migrations().len()
}

/// How many migrations the database has applied; `None` when it has no
/// carga schema yet. Only reads (a read-only role may ask).
pub(crate) async fn applied(
    client: &impl tokio_postgres::GenericClient,
) -> std::result::Result<Option<i64>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('carga.schema_history') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(Some(
        client
            .query_one("SELECT count(*) FROM carga.schema_history", &[])
            .await?
            .get(0),
    ))
}
