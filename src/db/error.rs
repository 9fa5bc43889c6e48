//! What can go wrong with the database, and how it is told: [`DbError`]
//! (with [`DbError::is_configuration`], the operator's to fix or not) and
//! [`describe_db`], a server error on one line for every room.

use super::tls;

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
    pub(crate) fn is_configuration(&self) -> bool {
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

/// A database error on one line: the server's message, SQLSTATE, detail
/// and hint (never its context, which can quote a row), or the client
/// error with its causes.
pub(crate) fn describe_db(e: &tokio_postgres::Error) -> String {
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
