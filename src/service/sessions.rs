//! The console's sessions, kept in `carga.console_sessions` (the only
//! module that writes that table), so that every `serve` process sharing
//! the database agrees on them: a session is valid while its row exists,
//! has not expired by the database's clock, and was made with the operator
//! token this process has. Signing out deletes the row; rotating the token
//! ends every session made with the old one. The cookie's value is 32
//! random bytes; the table stores only its SHA-256, and a fingerprint of
//! the token keyed per session (HMAC-SHA256 under the token of the cookie's
//! value itself, which is never stored), never the token: a copy of the
//! table gives no way to test guesses of the token offline. Expired rows are pruned when someone signs in and by
//! the workers' maintenance. Knows nothing of HTTP or cookies.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

/// A session lasts this long (from sign-in; not renewed by use).
pub(crate) const LIFETIME_S: i64 = 8 * 3600;

pub(crate) type Result<T> = std::result::Result<T, tokio_postgres::Error>;

fn id_hash(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

/// The token's fingerprint for one session (over the cookie's value, not
/// its stored hash); `None` without a token.
fn fingerprint(token: &SecretString, value: &str) -> Option<Vec<u8>> {
    let token = token.expose_secret().as_bytes();
    if token.is_empty() {
        return None;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(token).ok()?;
    mac.update(value.as_bytes());
    Some(mac.finalize().into_bytes().to_vec())
}

/// Records a new session for the cookie value `value` (random, made by the
/// caller), made with `token`, valid for [`LIFETIME_S`]; prunes expired
/// sessions first. Returns false when there is no token (nothing stored).
pub(crate) async fn create(
    client: &impl GenericClient,
    value: &str,
    token: &SecretString,
) -> Result<bool> {
    let hash = id_hash(value);
    let Some(fingerprint) = fingerprint(token, value) else {
        return Ok(false);
    };
    prune(client).await?;
    client
        .execute(
            "INSERT INTO carga.console_sessions (id_hash, token_fingerprint, expires_at)
             VALUES ($1, $2, now() + make_interval(secs => $3))",
            &[&hash, &fingerprint, &(LIFETIME_S as f64)],
        )
        .await?;
    Ok(true)
}

/// Whether `value` is a live session made with `token`.
pub(crate) async fn valid(
    client: &impl GenericClient,
    value: &str,
    token: &SecretString,
) -> Result<bool> {
    let hash = id_hash(value);
    let Some(fingerprint) = fingerprint(token, value) else {
        return Ok(false);
    };
    Ok(client
        .query_opt(
            "SELECT 1 FROM carga.console_sessions
             WHERE id_hash = $1 AND token_fingerprint = $2 AND expires_at > now()",
            &[&hash, &fingerprint],
        )
        .await?
        .is_some())
}

/// Ends the session `value` (signing out), on every process.
pub(crate) async fn end(client: &impl GenericClient, value: &str) -> Result<()> {
    client
        .execute(
            "DELETE FROM carga.console_sessions WHERE id_hash = $1",
            &[&id_hash(value)],
        )
        .await?;
    Ok(())
}

/// Deletes expired sessions. Returns how many.
pub(crate) async fn prune(client: &impl GenericClient) -> Result<u64> {
    client
        .execute(
            "DELETE FROM carga.console_sessions WHERE expires_at <= now()",
            &[],
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_depends_on_the_token_and_the_session() {
        let a = SecretString::from("token-a".to_string());
        let b = SecretString::from("token-b".to_string());
        assert_eq!(fingerprint(&a, "one"), fingerprint(&a, "one"));
        assert_ne!(fingerprint(&a, "one"), fingerprint(&b, "one"));
        assert_ne!(fingerprint(&a, "one"), fingerprint(&a, "two"));
        assert!(fingerprint(&SecretString::from(String::new()), "one").is_none());
        assert_ne!(id_hash("one"), b"one".to_vec());
        // What the table stores (the value's hash) is not what the
        // fingerprint is made over: a copy of the table cannot test a
        // guess of the token.
        let stored = id_hash("one");
        let from_table = {
            use hmac::{Hmac, KeyInit, Mac};
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"token-a").expect("key");
            mac.update(&stored);
            mac.finalize().into_bytes().to_vec()
        };
        assert_ne!(fingerprint(&a, "one"), Some(from_table));
    }
}
