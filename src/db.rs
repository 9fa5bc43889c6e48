//! The database: `DATABASE_URL` normalisation, redaction and parsing (its
//! TLS part into a typed [`TlsSettings`], made into the one [`Tls`]
//! connector every connection uses: see `db/tls.rs`), finding or starting a
//! local server when no URL is given, the connection pool, and migrations.
//! Owns no table's contents. No connection to PostgreSQL is opened outside
//! this module's [`connect`] and [`pool`], except the runner's LISTEN and
//! the loads' cancel requests, which take the same [`Tls`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use crate::config::Settings;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::ExposeSecret;

mod tls;

pub use tls::{ClientCert, RootCert, SslMode, Tls, TlsSettings};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Session-level advisory lock key serialising `migrate` across processes.
const MIGRATION_LOCK_KEY: i64 = 0x6361_7267_615f_6d31; // "carga_m1"

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "no database: DATABASE_URL is not set and no PostgreSQL answers on the local socket or 127.0.0.1:5432 ({0}); set DATABASE_URL (a long-running service never starts a private cluster of its own: that is for `carga demo` and one-off `carga run`)"
    )]
    NoDatabase(String),
    #[error(
        "DATABASE_URL is not a PostgreSQL URL ({0}): expected postgres://, postgresql://, postgresql+asyncpg:// or postgresql+psycopg2://"
    )]
    BadUrl(String),
    #[error(
        "DATABASE_URL: {param}={value} is not an SSL mode: expected one of true, false, disable, allow, prefer, require, verify-ca, verify-full"
    )]
    BadSslMode { param: &'static str, value: String },
    #[error(
        "DATABASE_URL: sslmode={mode} checks the server's certificate and no CA is given: add sslrootcert=/path/to/ca.pem (the provider's CA bundle), or sslrootcert=system for the system trust store"
    )]
    NoRootCert { mode: &'static str },
    #[error(
        "DATABASE_URL: sslrootcert=system needs sslmode=verify-full (as in libpq), not sslmode={mode}"
    )]
    WeakSslModeWithSystemRoots { mode: &'static str },
    #[error("DATABASE_URL: {given} is given without {missing}: give both or neither")]
    ClientCertIncomplete {
        given: &'static str,
        missing: &'static str,
    },
    #[error("the CA file {path} (sslrootcert) cannot be read: {reason}")]
    CaFile { path: String, reason: String },
    #[error("the client certificate or key {path} (sslcert/sslkey) cannot be used: {reason}")]
    ClientCert { path: String, reason: String },
    #[error("sslrootcert=system: the system trust store cannot be read: {0}")]
    SystemRoots(String),
    #[error("failed to set up TLS: {0}")]
    TlsSetup(String),
    #[error(
        "{target} requires TLS and DATABASE_URL says sslmode=disable: use sslmode=verify-full with sslrootcert (or sslmode=require) (the server said: {detail})"
    )]
    TlsRequired { target: String, detail: String },
    #[error(
        "{target} does not offer TLS and sslmode={mode} requires it: enable ssl on the server, or use sslmode=prefer"
    )]
    TlsNotOffered { target: String, mode: &'static str },
    #[error(
        "the certificate of {target} is not trusted: it does not chain to {trust} ({reason}); set sslrootcert to the CA that signed it"
    )]
    CertificateUntrusted {
        target: String,
        trust: String,
        reason: String,
    },
    #[error(
        "the certificate of {target} does not match the host name ({reason}); connect by a name it lists, or use sslmode=verify-ca"
    )]
    HostNameMismatch { target: String, reason: String },
    #[error("the TLS handshake with {target} failed: {reason}")]
    TlsHandshake { target: String, reason: String },
    #[error("failed to connect to {target}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "no PostgreSQL server answers on the default socket or 127.0.0.1:5432, and no private cluster could be started ({0}). Install PostgreSQL (Debian: `apt-get install postgresql`) or set DATABASE_URL=postgres://user:password@host:port/database"
    )]
    NoServer(String),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("failed to build the connection pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    #[error("failed to get a database connection from the pool: {0}")]
    PoolGet(#[from] deadpool_postgres::PoolError),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

impl DbError {
    /// Whether the error is the operator's to fix in the configuration (a
    /// malformed URL, a database or role that does not exist, a wrong
    /// password) rather than an operational failure (a server down or
    /// unreachable, a query that failed). The CLI exits 2 for the former.
    pub fn is_configuration(&self) -> bool {
        use tokio_postgres::error::SqlState;
        let refused = |e: &tokio_postgres::Error| {
            e.code().is_some_and(|c| {
                [
                    SqlState::INVALID_CATALOG_NAME,
                    SqlState::INVALID_PASSWORD,
                    SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                ]
                .contains(c)
            })
        };
        match self {
            DbError::NoDatabase(_)
            | DbError::BadUrl(_)
            | DbError::BadSslMode { .. }
            | DbError::NoRootCert { .. }
            | DbError::WeakSslModeWithSystemRoots { .. }
            | DbError::ClientCertIncomplete { .. }
            | DbError::CaFile { .. }
            | DbError::ClientCert { .. }
            | DbError::SystemRoots(_)
            | DbError::TlsSetup(_)
            | DbError::TlsRequired { .. }
            | DbError::TlsNotOffered { .. }
            | DbError::CertificateUntrusted { .. }
            | DbError::HostNameMismatch { .. }
            | DbError::TlsHandshake { .. } => true,
            DbError::Connect { source, .. } | DbError::Postgres(source) => refused(source),
            // A pooled connection that failed its handshake: the
            // certificate or the CA is wrong, not the server down.
            DbError::PoolGet(deadpool_postgres::PoolError::Backend(source)) => {
                refused(source) || tls::handshake_error(source).is_some()
            }
            _ => false,
        }
    }
}

/// libpq's `sslmode` for an `ssl=` / `sslmode=` value, as asyncpg reads it:
/// the six libpq mode names, lower case, `_` accepted for `-` (asyncpg
/// looks the name up in its `SSLMode` enum after replacing `-` by `_`), and
/// `true` / `false` with the meaning of asyncpg's boolean `ssl` argument
/// (`True`: verify the certificate and host name, i.e. `verify-full`).
fn ssl_mode(param: &'static str, value: &str) -> Result<SslMode> {
    match value {
        "true" | "True" => Ok(SslMode::VerifyFull),
        "false" | "False" => Ok(SslMode::Disable),
        _ => SslMode::from_libpq(value).ok_or_else(|| DbError::BadSslMode {
            param,
            value: value.to_string(),
        }),
    }
}

/// Turns every URL form the API team uses into one tokio-postgres accepts.
/// SQLAlchemy driver suffixes (`+asyncpg`, `+psycopg2`, `+psycopg`) are
/// dropped; `ssl=` (asyncpg's spelling) and `sslmode=` are read as asyncpg
/// reads them (see [`ssl_mode`]) and written as libpq's `sslmode=`.
pub fn normalize_url(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| DbError::BadUrl("no scheme".into()))?;
    let base = scheme.split('+').next().unwrap_or(scheme);
    if base != "postgres" && base != "postgresql" {
        return Err(DbError::BadUrl(format!("scheme {scheme}")));
    }
    let rest = match rest.split_once('?') {
        Some((head, query)) => {
            let query = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some(("ssl", v)) => Ok(format!("sslmode={}", ssl_mode("ssl", v)?.as_str())),
                    Some(("sslmode", v)) => {
                        Ok(format!("sslmode={}", ssl_mode("sslmode", v)?.as_str()))
                    }
                    _ => Ok(p.to_string()),
                })
                .collect::<Result<Vec<String>>>()?;
            if query.is_empty() {
                head.to_string()
            } else {
                format!("{head}?{}", query.join("&"))
            }
        }
        None => rest.to_string(),
    };
    Ok(format!("postgresql://{rest}"))
}

/// A `DATABASE_URL` read once, at start.
#[derive(Debug, Clone)]
pub struct DatabaseUrl {
    /// What tokio-postgres connects with (`sslmode` reduced to what it
    /// negotiates; the TLS files are not its business).
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
    /// The normalised URL, libpq's spelling (not redacted).
    pub normalized: String,
}

/// Reads `DATABASE_URL` (any form [`normalize_url`] takes): the TLS
/// parameters `sslmode`, `sslrootcert`, `sslcert` and `sslkey` into a
/// [`TlsSettings`] with libpq's defaults (`prefer`; `verify-full` when
/// `sslrootcert=system` and no mode is given), the rest into a
/// tokio-postgres config. Files are not read here (see [`Tls::new`]).
pub fn parse_url(raw: &str) -> Result<DatabaseUrl> {
    let normalized = normalize_url(raw)?;
    let (head, query) = match normalized.split_once('?') {
        Some((head, query)) => (head, query),
        None => (normalized.as_str(), ""),
    };
    let decode = |v: &str| {
        percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .to_string()
    };
    let mut mode = None;
    let mut root_cert = None;
    let mut cert = None;
    let mut key = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = Some(ssl_mode("sslmode", v)?),
            Some(("sslrootcert", v)) => {
                root_cert = Some(match decode(v).as_str() {
                    "system" => RootCert::System,
                    path => RootCert::File(PathBuf::from(path)),
                })
            }
            Some(("sslcert", v)) => cert = Some(PathBuf::from(decode(v))),
            Some(("sslkey", v)) => key = Some(PathBuf::from(decode(v))),
            _ => rest.push(pair),
        }
    }
    let mode = match (mode, &root_cert) {
        (None, Some(RootCert::System)) => SslMode::VerifyFull,
        (Some(mode), Some(RootCert::System)) if mode != SslMode::VerifyFull => {
            return Err(DbError::WeakSslModeWithSystemRoots {
                mode: mode.as_str(),
            });
        }
        (mode, _) => mode.unwrap_or_default(),
    };
    let client_cert = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
        (Some(_), None) => {
            return Err(DbError::ClientCertIncomplete {
                given: "sslcert",
                missing: "sslkey",
            });
        }
        (None, Some(_)) => {
            return Err(DbError::ClientCertIncomplete {
                given: "sslkey",
                missing: "sslcert",
            });
        }
    };
    let negotiation = match mode.negotiation() {
        tokio_postgres::config::SslMode::Disable => "disable",
        tokio_postgres::config::SslMode::Require => "require",
        _ => "prefer",
    };
    let negotiation = format!("sslmode={negotiation}");
    rest.push(&negotiation);
    let config = tokio_postgres::Config::from_str(&format!("{head}?{}", rest.join("&")))
        .map_err(|e| DbError::BadUrl(e.to_string()))?;
    Ok(DatabaseUrl {
        config,
        tls: TlsSettings {
            mode,
            root_cert,
            client_cert,
        },
        normalized,
    })
}

/// The URL with its password replaced by `***`, safe for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable url>".into();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

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

/// The name of the database in a normalised URL replaced by `database`
/// (for descriptions: the query string is kept, the password is not
/// redacted here).
fn url_with_database(url: &str, database: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let query = tail.split_once('?').map(|(_, q)| q);
    match query {
        Some(q) => format!("{scheme}://{authority}/{database}?{q}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
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
pub async fn resolve_existing(settings: &Settings) -> Result<Target> {
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

/// One connection outside the pool, its driver task spawned. A failure
/// says its cause when it is TLS's (see [`connect_error`]).
pub async fn connect(
    config: &tokio_postgres::Config,
    tls: &Tls,
    target: &str,
) -> Result<tokio_postgres::Client> {
    match config.connect(tls.clone()).await {
        Ok((client, connection)) => {
            tokio::spawn(drive(connection));
            Ok(client)
        }
        Err(source) => Err(connect_error(config, tls, target, source).await),
    }
}

/// A failed connection's cause, named: the certificate not trusted or not
/// for this host, the server requiring TLS that `sslmode=disable` forbids,
/// the server not offering the TLS the mode insists on; else the driver's
/// error as it is (a server down, a refused role). The last two are told
/// apart by asking the server whether it speaks TLS, never by reading the
/// server's (translatable) message.
pub async fn connect_error(
    config: &tokio_postgres::Config,
    tls: &Tls,
    target: &str,
    source: tokio_postgres::Error,
) -> DbError {
    use rustls::CertificateError;
    let target = target.to_string();
    if let Some(handshake) = tls::handshake_error(&source) {
        return match handshake {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => DbError::HostNameMismatch {
                target,
                reason: handshake.to_string(),
            },
            rustls::Error::InvalidCertificate(_) => DbError::CertificateUntrusted {
                target,
                trust: tls.trust().to_string(),
                reason: handshake.to_string(),
            },
            other => DbError::TlsHandshake {
                target,
                reason: other.to_string(),
            },
        };
    }
    let mode = tls.settings().mode;
    let refused_plain = mode == SslMode::Disable
        && source.code()
            == Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
    let insisted = mode.negotiation() == tokio_postgres::config::SslMode::Require
        && source.as_db_error().is_none();
    if refused_plain && tls::server_offers_tls(config).await == Some(true) {
        let detail = source
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        return DbError::TlsRequired { target, detail };
    }
    if insisted && tls::server_offers_tls(config).await == Some(false) {
        return DbError::TlsNotOffered {
            target,
            mode: mode.as_str(),
        };
    }
    DbError::Connect { target, source }
}

/// Runs a connection, logging the server's notices (`schema "carga"
/// already exists, skipping`) at debug level: they are chatter, not news.
async fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = futures::StreamExt::next(&mut messages).await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notice(notice)) => {
                tracing::debug!(
                    severity = notice.severity(),
                    message = notice.message(),
                    "database notice"
                );
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "database connection closed");
                return;
            }
        }
    }
}

/// The pool, with explicit timeouts (deadpool's defaults wait forever).
pub fn pool(target: &Target, settings: &Settings) -> Result<Pool> {
    let manager = Manager::from_config(
        target.config.clone(),
        target.tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let db = &settings.database;
    Ok(Pool::builder(manager)
        .max_size(db.pool_size)
        .wait_timeout(Some(Duration::from_millis(db.wait_timeout_ms)))
        .create_timeout(Some(Duration::from_millis(db.create_timeout_ms)))
        .recycle_timeout(Some(Duration::from_millis(db.recycle_timeout_ms)))
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// The tables the dashboard API's Alembic migrations create, which carga
/// adopts when they exist and creates when they do not.
pub const API_TABLES: [&str; 4] = ["states", "municipalities", "programs", "beneficiary_data"];

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
pub async fn encryption(client: &tokio_postgres::Client) -> Result<Encryption> {
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

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Finds `name` (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin.
fn find_pg_binary(name: &str) -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    for root in ["/usr/lib/postgresql", "/usr/local/pgsql", "/usr/pgsql"] {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        let mut versions: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        versions.sort();
        for version in versions.iter().rev() {
            let candidate = version.join("bin").join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Starts (initialising if needed) a cluster in `dir` listening only on a
/// socket in `dir`. As root, runs the binaries as the `postgres` user through
/// `runuser`, since initdb and postgres refuse to run as root. Returns the
/// database user to connect as.
fn start_private_cluster(dir: &Path, port: u16) -> std::result::Result<String, String> {
    let initdb =
        find_pg_binary("initdb").ok_or("initdb not found on PATH or under /usr/lib/postgresql")?;
    let pg_ctl =
        find_pg_binary("pg_ctl").ok_or("pg_ctl not found on PATH or under /usr/lib/postgresql")?;
    let as_root = running_as_root();
    let run = |program: &Path, args: &[&str]| -> std::result::Result<(), String> {
        let mut command = if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let output = command
            .args(args)
            .output()
            .map_err(|e| format!("failed to run {}: {e}", program.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed: {}",
                program.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if as_root {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .map_err(|e| format!("chown failed: {e}"))?;
        if !status.success() {
            return Err("running as root and the `postgres` user does not exist; run carga as an ordinary user or set DATABASE_URL".into());
        }
    }
    let dir_str = dir.to_string_lossy().to_string();
    if !dir.join("PG_VERSION").exists() {
        run(
            &initdb,
            &[
                "-D", &dir_str, "-A", "trust", "-U", "postgres", "-E", "UTF8",
            ],
        )?;
    }
    let options = format!("-c listen_addresses='' -k {dir_str} -p {port}");
    let log = dir.join("server.log").to_string_lossy().to_string();
    // `status` exits 0 only when a server runs on this directory (a stale
    // pid file after a reboot does not count).
    if run(&pg_ctl, &["-D", &dir_str, "status"]).is_err() {
        run(
            &pg_ctl,
            &["-D", &dir_str, "-o", &options, "-l", &log, "-w", "start"],
        )?;
    }
    tracing::warn!(dir = %dir.display(), port, "using a private PostgreSQL cluster; stop it with pg_ctl -D <dir> stop");
    Ok("postgres".into())
}

/// Stops a private cluster started by [`resolve`] (fast shutdown).
pub fn stop_private_cluster(dir: &Path) -> std::result::Result<(), String> {
    let pg_ctl = find_pg_binary("pg_ctl").ok_or("pg_ctl not found")?;
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
        c
    } else {
        Command::new(&pg_ctl)
    };
    let output = command
        .arg("-D")
        .arg(dir)
        .args(["-m", "fast", "-w", "stop"])
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// A database error on one line: the server's message, SQLSTATE, detail
/// and hint (never its context, which can quote a row), or the client
/// error with its causes.
pub fn describe_db(e: &tokio_postgres::Error) -> String {
    let text = match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str("; detail: ");
                text.push_str(detail);
            }
            if let Some(hint) = db.hint() {
                text.push_str("; hint: ");
                text.push_str(hint);
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                let part = c.to_string();
                if !text.contains(&part) {
                    text.push_str(": ");
                    text.push_str(&part);
                }
                cause = c.source();
            }
            text
        }
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_every_form_the_api_uses() {
        for (raw, want) in [
            ("postgres://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
            ("postgresql://u:p@h/db", "postgresql://u:p@h/db"),
            ("postgresql+asyncpg://u:p@h/db", "postgresql://u:p@h/db"),
            (
                "postgresql+psycopg2://u:p@h/db?sslmode=disable",
                "postgresql://u:p@h/db?sslmode=disable",
            ),
            (
                "postgresql+asyncpg://u@h/db?ssl=disable",
                "postgresql://u@h/db?sslmode=disable",
            ),
        ] {
            assert_eq!(normalize_url(raw).expect("valid"), want, "{raw}");
        }
        assert!(normalize_url("mysql://h/db").is_err());
        assert!(normalize_url("h/db").is_err());
    }

    #[test]
    fn every_ssl_value_asyncpg_reads_is_understood() {
        let base = "postgresql+asyncpg://u:p@h/db";
        for (param, value, want) in [
            ("ssl", "false", SslMode::Disable),
            ("ssl", "disable", SslMode::Disable),
            ("sslmode", "disable", SslMode::Disable),
            ("ssl", "allow", SslMode::Allow),
            ("ssl", "prefer", SslMode::Prefer),
            ("sslmode", "prefer", SslMode::Prefer),
            ("ssl", "require", SslMode::Require),
            ("ssl", "true", SslMode::VerifyFull),
            ("ssl", "verify-ca", SslMode::VerifyCa),
            ("ssl", "verify_ca", SslMode::VerifyCa),
            ("ssl", "verify-full", SslMode::VerifyFull),
            ("sslmode", "verify_full", SslMode::VerifyFull),
        ] {
            let raw = format!("{base}?{param}={value}&application_name=x");
            let url = normalize_url(&raw).expect("valid");
            assert_eq!(
                url,
                format!(
                    "postgresql://u:p@h/db?sslmode={}&application_name=x",
                    want.as_str()
                ),
                "{raw}"
            );
            let parsed = parse_url(&raw).expect("parses");
            assert_eq!(parsed.tls.mode, want, "{raw}");
            assert_eq!(parsed.config.get_ssl_mode(), want.negotiation(), "{raw}");
            assert_eq!(parsed.config.get_application_name(), Some("x"));
        }
        // Unknown values, and case asyncpg does not accept, are named.
        for value in ["yes", "Require", "verify-everything", ""] {
            let e = normalize_url(&format!("{base}?ssl={value}")).expect_err(value);
            assert!(matches!(e, DbError::BadSslMode { .. }), "{value}: {e}");
            assert!(e.to_string().contains("verify-full"), "{e}");
            assert!(e.is_configuration());
        }
    }

    #[test]
    fn tls_parameters_become_typed_settings_with_libpq_defaults() {
        let parsed = parse_url("postgres://u:p@h/db").expect("plain");
        assert_eq!(parsed.tls, TlsSettings::default());
        assert_eq!(parsed.tls.mode, SslMode::Prefer);
        let parsed = parse_url(
            "postgres://u:p@h/db?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca%20bundle.pem&sslcert=/c.pem&sslkey=/k.pem",
        )
        .expect("files");
        assert_eq!(
            parsed.tls,
            TlsSettings {
                mode: SslMode::VerifyCa,
                root_cert: Some(RootCert::File("/etc/ca bundle.pem".into())),
                client_cert: Some(ClientCert {
                    cert: "/c.pem".into(),
                    key: "/k.pem".into(),
                }),
            }
        );
        // libpq 16: sslrootcert=system implies verify-full and refuses less.
        let parsed = parse_url("postgres://h/db?sslrootcert=system").expect("system");
        assert_eq!(parsed.tls.mode, SslMode::VerifyFull);
        assert_eq!(parsed.tls.root_cert, Some(RootCert::System));
        let e = parse_url("postgres://h/db?sslmode=require&sslrootcert=system").expect_err("weak");
        assert!(
            matches!(e, DbError::WeakSslModeWithSystemRoots { .. }),
            "{e}"
        );
        assert!(e.is_configuration());
        let e = parse_url("postgres://h/db?sslcert=/c.pem").expect_err("half");
        assert!(e.to_string().contains("sslkey"), "{e}");
        assert!(e.is_configuration());
    }

    #[test]
    fn tls_files_that_cannot_be_read_are_configuration_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing-ca.pem");
        let not_pem = dir.path().join("not-a-ca.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        for path in [&missing, &not_pem] {
            let e = Tls::new(&TlsSettings {
                mode: SslMode::VerifyFull,
                root_cert: Some(RootCert::File(path.clone())),
                client_cert: None,
            })
            .expect_err("unreadable CA");
            let text = e.to_string();
            assert!(matches!(e, DbError::CaFile { .. }), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(e.is_configuration());
        }
        // A key file's contents never reach the message.
        std::fs::write(&not_pem, "SECRET-KEY-MATERIAL").expect("write");
        let e = Tls::new(&TlsSettings {
            mode: SslMode::Require,
            root_cert: None,
            client_cert: Some(ClientCert {
                cert: not_pem.clone(),
                key: not_pem.clone(),
            }),
        })
        .expect_err("bad client cert");
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert!(e.is_configuration());
    }

    #[test]
    fn verifying_modes_without_a_ca_say_how_to_give_one() {
        // libpq's default CA file (~/.postgresql/root.crt) would be used if
        // this machine had one.
        let settings = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: None,
            client_cert: None,
        };
        let default_ca = std::env::var_os("HOME")
            .map(|home| Path::new(&home).join(".postgresql/root.crt"))
            .is_some_and(|p| p.exists());
        if !default_ca {
            let e = Tls::new(&settings).expect_err("no CA");
            assert!(matches!(e, DbError::NoRootCert { .. }), "{e}");
            assert!(e.to_string().contains("sslrootcert=system"), "{e}");
            assert!(e.is_configuration());
        }
        // Encrypt-only modes need no CA.
        for mode in [
            SslMode::Disable,
            SslMode::Allow,
            SslMode::Prefer,
            SslMode::Require,
        ] {
            let settings = TlsSettings {
                mode,
                root_cert: None,
                client_cert: None,
            };
            Tls::new(&settings).expect("no CA needed");
        }
    }

    #[test]
    fn the_demo_database_keeps_server_and_query() {
        assert_eq!(
            url_with_database("postgresql://u:p@h:5/real?sslmode=disable", "carga_demo"),
            "postgresql://u:p@h:5/carga_demo?sslmode=disable"
        );
        assert_eq!(
            url_with_database("postgresql://u@h", "carga_demo"),
            "postgresql://u@h/carga_demo"
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgresql://user:s3cr3t@host:5432/db?password=x&a=b"),
            "postgresql://user:***@host:5432/db?password=***&a=b"
        );
        assert_eq!(
            redact_url("postgresql://user@host/db"),
            "postgresql://user@host/db"
        );
        assert!(!redact_url("postgresql://u:p%40ss@h/db").contains("p%40ss"));
    }
}
