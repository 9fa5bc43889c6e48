//! The console's session cookie: `<expiry>.<nonce>.<mac>`, HMAC-SHA256
//! under a key drawn at server start (so a restart signs everyone out, and
//! nothing is stored). `HttpOnly`, `SameSite=Strict`, `Path=/console`, and
//! `Secure` when the request came over TLS (a proxy's
//! `X-Forwarded-Proto: https`).

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const NAME: &str = "carga_session";
/// A session lasts this long.
pub const LIFETIME_S: i64 = 8 * 3600;

fn mac(key: &[u8], text: &str) -> Vec<u8> {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(text.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// A new session value, valid until `now + LIFETIME_S`.
pub fn issue(key: &[u8], now: i64) -> String {
    let mut nonce = [0u8; 16];
    super::random_bytes(&mut nonce);
    let body = format!("{}.{}", now + LIFETIME_S, URL_SAFE_NO_PAD.encode(nonce));
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac(key, &body)))
}

/// The session in `headers`, if it is ours and not expired.
pub fn session(headers: &HeaderMap, key: &[u8], now: i64) -> Option<String> {
    let value = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .map(|(_, value)| value.to_string())?;
    let (body, tag) = value.rsplit_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let mut check = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
    check.update(body.as_bytes());
    check.verify_slice(&tag).ok()?;
    let expiry: i64 = body.split('.').next()?.parse().ok()?;
    (expiry > now).then_some(value)
}

fn secure(headers: &HeaderMap) -> &'static str {
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    if tls { "; Secure" } else { "" }
}

/// `Set-Cookie` for a new session.
pub fn set(value: &str, headers: &HeaderMap) -> String {
    format!(
        "{NAME}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_S}{}",
        secure(headers)
    )
}

/// `Set-Cookie` that ends the session.
pub fn clear(headers: &HeaderMap) -> String {
    format!(
        "{NAME}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure(headers)
    )
}

/// The CSRF token of a session: a MAC of the session value, so every form
/// of that session carries it and no other session's works.
pub fn csrf(key: &[u8], session: &str) -> String {
    URL_SAFE_NO_PAD.encode(mac(key, &format!("csrf:{session}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("other=1; {NAME}={value}").parse().expect("header"),
        );
        h
    }

    #[test]
    fn sessions_are_signed_and_expire() {
        let key = [7u8; 32];
        let value = issue(&key, 1_000);
        assert_eq!(
            session(&with_cookie(&value), &key, 1_001).as_deref(),
            Some(value.as_str())
        );
        assert!(
            session(&with_cookie(&value), &key, 1_000 + LIFETIME_S).is_none(),
            "expired"
        );
        assert!(
            session(&with_cookie(&value), &[8u8; 32], 1_001).is_none(),
            "another key"
        );
        let forged = value.replacen(&(1_000 + LIFETIME_S).to_string(), "99999999999", 1);
        assert!(
            session(&with_cookie(&forged), &key, 1_001).is_none(),
            "edited expiry"
        );
        assert!(session(&HeaderMap::new(), &key, 1_001).is_none());
        assert_ne!(csrf(&key, &value), csrf(&key, &issue(&key, 1_000)));
    }
}
