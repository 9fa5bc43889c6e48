//! The console's session cookie: 32 random bytes, base64url. What it is
//! worth is decided by `sessions.rs` on the server (a row per session, so
//! signing out ends it everywhere and rotating the operator token ends all
//! of them); this module only makes, reads and formats the cookie and the
//! session's CSRF token. `HttpOnly`, `SameSite=Strict`, `Path=/console`,
//! and `Secure` when the request came over TLS (a proxy's
//! `X-Forwarded-Proto: https`).

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::service::sessions::LIFETIME_S;

pub(crate) const NAME: &str = "carga_session";
/// base64url of 32 bytes.
const VALUE_LEN: usize = 43;

/// A new session value: 32 bytes from the kernel's random source.
pub(crate) fn new_value() -> Result<String, super::RandomUnavailable> {
    let mut bytes = [0u8; 32];
    super::random_bytes(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The session cookie's value in `headers`, if it has the shape of one
/// (whether it is a live session is for `sessions::valid`).
pub(crate) fn value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .map(|(_, value)| value.to_string())
        .filter(|v| v.len() == VALUE_LEN && URL_SAFE_NO_PAD.decode(v).is_ok())
}

fn secure(headers: &HeaderMap) -> &'static str {
    let tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    if tls { "; Secure" } else { "" }
}

/// `Set-Cookie` for a new session.
pub(crate) fn set(value: &str, headers: &HeaderMap) -> String {
    format!(
        "{NAME}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_S}{}",
        secure(headers)
    )
}

/// `Set-Cookie` that removes the cookie from the browser.
pub(crate) fn clear(headers: &HeaderMap) -> String {
    format!(
        "{NAME}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure(headers)
    )
}

/// The CSRF token of a session: a MAC keyed with the (secret) session
/// value, so every form of that session carries it, no other session's
/// works, and every `serve` process computes the same one.
pub(crate) fn csrf(session: &str) -> String {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(session.as_bytes()) {
        Ok(mut m) => {
            m.update(b"carga console csrf");
            URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        }
        // HMAC takes keys of any length; never reached.
        Err(_) => String::new(),
    }
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
    fn values_are_random_and_read_back_only_when_well_formed() {
        let session = new_value().expect("random");
        assert_eq!(session.len(), VALUE_LEN);
        assert_ne!(session, new_value().expect("random"));
        assert_eq!(
            value(&with_cookie(&session)).as_deref(),
            Some(session.as_str())
        );
        assert!(value(&with_cookie("9999999999.AAAA.AAAA")).is_none());
        assert!(value(&with_cookie(&format!("{session}x"))).is_none());
        assert!(value(&HeaderMap::new()).is_none());
        assert_ne!(csrf(&session), csrf(&new_value().expect("random")));
        assert_eq!(csrf(&session), csrf(&session));
    }
}
