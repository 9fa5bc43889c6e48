//! Where the database is: `DATABASE_URL` when set, else a local server on
//! the default socket or 127.0.0.1:5432, else (for `carga demo` and one-off
//! runs only) a private cluster; the database created when missing.

use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::cluster::{absolute, start_private_cluster};
use super::url::{DatabaseUrl, parse_url, redact_url, url_with_database};
use super::{DbError, Result, SslMode, Tls, TlsSettings, connect};
use crate::config::Settings;

/// Where the database is and how it was found.
#[derive(Debug, Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    /// Safe to print.
    pub description: String,
    /// The database did not exist and carga created it.
    pub created: bool,
    /// How every connection to it negotiates TLS.
    pub tls: Tls,
}

/// Resolves the database to use: `DATABASE_URL` when set; else a local
/// server on the default socket or 127.0.0.1:5432 (database `carga`, created
/// if missing); else a private cluster started from the system's binaries.
pub async fn resolve(settings: &Settings) -> Result<Target> {
    resolve_database(settings, None, Fallback::PrivateCluster).await
}

/// Like [`resolve`], but never a private cluster: `serve` and `worker`, on
/// a host where no database is to be found, would otherwise initdb an empty
/// one of their own and wait there forever.
pub(crate) async fn resolve_existing(settings: &Settings) -> Result<Target> {
    resolve_database(settings, None, Fallback::Refuse).await
}

/// What to do when neither `DATABASE_URL` nor a local server gives a
/// database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    PrivateCluster,
    Refuse,
}

/// Like [`resolve`], but on the same server as the database `resolve` would
/// pick, the database `database` (created if missing). `carga demo` runs
/// there so that it never writes over real data.
pub async fn resolve_separate(settings: &Settings, database: &str) -> Result<Target> {
    resolve_database(settings, Some(database), Fallback::PrivateCluster).await
}

async fn resolve_database(
    settings: &Settings,
    separate: Option<&str>,
    fallback: Fallback,
) -> Result<Target> {
    let local_name = separate.unwrap_or("carga");
    if let Some(url) = &settings.database_url {
        let DatabaseUrl {
            config,
            tls,
            normalized: url,
        } = parse_url(url.expose_secret())?;
        let tls = Tls::new(&tls)?;
        let Some(database) = separate else {
            return Ok(Target {
                config,
                description: redact_url(&url),
                created: false,
                tls,
            });
        };
        // CREATE DATABASE runs from the database the URL names (the role can
        // surely connect there); `postgres` may be closed to it.
        let maintenance = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres")
            .to_string();
        let (config, created) = ensure_database(config, &tls, &maintenance, database).await?;
        return Ok(Target {
            config,
            description: redact_url(&url_with_database(&url, database)),
            created,
            tls,
        });
    }
    if !settings.database.use_system_server {
        if fallback == Fallback::Refuse {
            return Err(DbError::NoDatabase(
                "database.use_system_server = false".into(),
            ));
        }
        return private_target(settings, "use_system_server = false".into(), local_name).await;
    }
    // libpq's default for a server found without a URL: TLS when it is
    // offered, nothing checked (sockets never use TLS).
    let tls = Tls::new(&TlsSettings::default())?;
    let user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into());
    let mut candidates = Vec::new();
    for socket in ["/var/run/postgresql", "/tmp"] {
        if Path::new(socket).join(".s.PGSQL.5432").exists() {
            let mut c = tokio_postgres::Config::new();
            c.host_path(socket).port(5432).user(&user);
            candidates.push((c, format!("socket {socket}")));
        }
    }
    let mut tcp = tokio_postgres::Config::new();
    tcp.host("127.0.0.1").port(5432).user(&user);
    candidates.push((tcp, "127.0.0.1:5432".to_string()));
    let mut last_error = String::new();
    for (config, label) in candidates {
        match ensure_database(config.clone(), &tls, "postgres", local_name).await {
            Ok((config, created)) => {
                return Ok(Target {
                    config,
                    description: format!(
                        "local server on {label}, database {local_name}, user {user}"
                    ),
                    created,
                    tls,
                });
            }
            Err(e) => {
                let mut text = format!("{label}: {e}");
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    text.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                last_error = text;
            }
        }
    }
    if fallback == Fallback::Refuse {
        return Err(DbError::NoDatabase(last_error));
    }
    tracing::warn!(reason = %last_error, "no local PostgreSQL answers; starting a private cluster");
    private_target(settings, last_error, local_name).await
}

async fn private_target(settings: &Settings, last_error: String, database: &str) -> Result<Target> {
    let dir = absolute(&settings.database.local_cluster_dir);
    let port = settings.database.local_cluster_port;
    let cluster_user = start_private_cluster(&dir, port)
        .map_err(|e| DbError::NoServer(format!("{last_error}; private cluster: {e}")))?;
    let mut config = tokio_postgres::Config::new();
    config.host_path(&dir).port(port).user(&cluster_user);
    // A socket: never TLS.
    let tls = Tls::new(&TlsSettings {
        mode: SslMode::Disable,
        ..TlsSettings::default()
    })?;
    let (config, created) = ensure_database(config, &tls, "postgres", database).await?;
    Ok(Target {
        config,
        description: format!(
            "private cluster in {} (port {port}), database {database}",
            dir.display()
        ),
        created,
        tls,
    })
}

/// Connects to `maintenance` with `config`, creates `database` if missing
/// and returns the config pointing at it, and whether it was created.
async fn ensure_database(
    mut config: tokio_postgres::Config,
    tls: &Tls,
    maintenance: &str,
    database: &str,
) -> Result<(tokio_postgres::Config, bool)> {
    config
        .dbname(maintenance)
        .connect_timeout(Duration::from_secs(3));
    let client = connect(&config, tls, maintenance).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
        .await?
        .is_some();
    let mut created = false;
    if !exists {
        let sql = format!(
            "CREATE DATABASE {}",
            postgres_protocol::escape::escape_identifier(database)
        );
        match client.batch_execute(&sql).await {
            Ok(()) => created = true,
            // Another process may have created it in between.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::debug!(database, "created database");
    }
    config.dbname(database);
    Ok((config, created))
}
