//! Every connection carga opens to PostgreSQL: one at a time
//! ([`connect`], its failure read into a cause) or from the pool
//! ([`pool`], with explicit timeouts). The runner's LISTEN and the loads'
//! cancel requests take the same [`Tls`].

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use super::{DbError, Result, SslMode, Target, Tls, tls};
use crate::config::Settings;

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
async fn connect_error(
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
