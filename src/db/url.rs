//! `DATABASE_URL` as text: every form the API team uses normalised to
//! libpq's, its TLS parameters read into [`TlsSettings`], the password
//! redacted for logs. No I/O: files are read when the settings become a
//! [`Tls`](super::Tls).

use std::path::PathBuf;
use std::str::FromStr;

use super::{ClientCert, DbError, Result, RootCert, SslMode, TlsSettings};

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
pub(super) fn normalize_url(raw: &str) -> Result<String> {
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
pub(super) struct DatabaseUrl {
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
pub(super) fn parse_url(raw: &str) -> Result<DatabaseUrl> {
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
pub(super) fn redact_url(url: &str) -> String {
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

/// The name of the database in a normalised URL replaced by `database`
/// (for descriptions: the query string is kept, the password is not
/// redacted here).
pub(super) fn url_with_database(url: &str, database: &str) -> String {
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
