//! A job's source URL without its secrets in the table. `carga.jobs.url`
//! holds the URL as every screen and log shows it (userinfo removed, query
//! values `***`, [`crate::engine::source::redact_source`]); when that differs from
//! the real URL, the real one is kept in `url_sealed`, encrypted and
//! authenticated (ChaCha20-Poly1305, the shown URL as associated data) under
//! a key derived from `CARGA_NIS_KEY` (HMAC-SHA256 with its own label, so
//! the two uses never share a key). Workers need that secret anyway; a
//! reader of the table, a backup or a replica gets no token or password.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};

/// Domain separation for the derived keys.
const LABEL: &[u8] = b"carga/jobs.url_sealed/v1";
const FINGERPRINT_LABEL: &[u8] = b"carga/jobs.url_fingerprint/v1";

/// HMAC-SHA256 under a key derived from `CARGA_NIS_KEY` for `label`.
fn derived(nis_key: &SecretString, label: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let derive = |key: &[u8], message: &[u8]| {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(message);
        let out: [u8; 32] = mac.finalize().into_bytes().into();
        out
    };
    let key = derive(nis_key.expose_secret().as_bytes(), label);
    derive(&key, message)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "the URL carries credentials (a password or query values), which carga keeps in the queue only encrypted: set CARGA_NIS_KEY"
    )]
    NoKey,
    #[error(
        "the job's URL was sealed under another CARGA_NIS_KEY (or was altered); enqueue it again"
    )]
    Unsealable,
    #[error("the system's random generator failed")]
    Random,
}

/// The key that seals URLs, derived from `CARGA_NIS_KEY`.
pub(crate) struct UrlKey(LessSafeKey);

impl UrlKey {
    pub fn derive(nis_key: &SecretString) -> UrlKey {
        use hmac::{KeyInit, Mac};
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(
            nis_key.expose_secret().as_bytes(),
        )
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(LABEL);
        let bytes = mac.finalize().into_bytes();
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .unwrap_or_else(|_| unreachable!("32 bytes is ChaCha20-Poly1305's key length"));
        UrlKey(LessSafeKey::new(unbound))
    }
}

/// A job's URL as stored: what may be shown, and the sealed original when
/// it held secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUrl {
    pub shown: String,
    pub sealed: Option<Vec<u8>>,
    /// A keyed HMAC of the real URL (with its own derived key) when it is
    /// sealed: two URLs that show alike (`?token=***`) are told apart
    /// without opening either.
    pub fingerprint: Option<Vec<u8>>,
}

impl JobUrl {
    /// Seals `url` when its redacted form differs from it (`key` is needed
    /// only then).
    pub fn new(url: &str, key: Option<&SecretString>) -> Result<JobUrl, SealError> {
        let shown = crate::engine::source::redact_source(url);
        if shown == url {
            return Ok(JobUrl {
                shown,
                sealed: None,
                fingerprint: None,
            });
        }
        let secret = key.ok_or(SealError::NoKey)?;
        let fingerprint = derived(secret, FINGERPRINT_LABEL, url.as_bytes()).to_vec();
        let key = UrlKey::derive(secret);
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut sealed = url.as_bytes().to_vec();
        key.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(shown.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SealError::Random)?;
        let mut stored = nonce.to_vec();
        stored.append(&mut sealed);
        Ok(JobUrl {
            shown,
            sealed: Some(stored),
            fingerprint: Some(fingerprint),
        })
    }

    /// The URL to fetch.
    pub fn open(&self, key: Option<&SecretString>) -> Result<String, SealError> {
        let Some(sealed) = &self.sealed else {
            return Ok(self.shown.clone());
        };
        let key = UrlKey::derive(key.ok_or(SealError::NoKey)?);
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Unsealable);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Unsealable)?;
        let mut body = body.to_vec();
        let plain = key
            .0
            .open_in_place(nonce, Aad::from(self.shown.as_bytes()), &mut body)
            .map_err(|_| SealError::Unsealable)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> SecretString {
        SecretString::from(text.to_string())
    }

    #[test]
    fn a_plain_url_is_stored_as_it_is() {
        let url = JobUrl::new("https://portal.example/202410.zip", None).expect("plain");
        assert_eq!(url.sealed, None);
        assert_eq!(
            url.open(None).expect("open"),
            "https://portal.example/202410.zip"
        );
    }

    #[test]
    fn secrets_are_sealed_and_only_the_key_opens_them() {
        let k = key("test-nis-key-0123456789-abcdefghijklmnop");
        let real = "https://user:pa55word@files.example/a.zip?token=url-token-canary-31";
        let url = JobUrl::new(real, Some(&k)).expect("sealed");
        assert!(!url.shown.contains("pa55word") && !url.shown.contains("canary"));
        let sealed = url.sealed.clone().expect("sealed bytes");
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        assert_eq!(url.open(Some(&k)).expect("open"), real);
        // Another key, a tampered byte or a swapped shown URL: refused.
        let other = key("another-nis-key-0123456789-abcdefghijklm");
        assert_eq!(url.open(Some(&other)), Err(SealError::Unsealable));
        let mut tampered = url.clone();
        if let Some(s) = tampered.sealed.as_mut() {
            s[20] ^= 1;
        }
        assert_eq!(tampered.open(Some(&k)), Err(SealError::Unsealable));
        let mut swapped = url.clone();
        swapped.shown = "https://files.example/b.zip?token=***".into();
        assert_eq!(swapped.open(Some(&k)), Err(SealError::Unsealable));
        assert_eq!(url.open(None), Err(SealError::NoKey));
        // No key to seal with: refused, never stored in clear.
        assert_eq!(JobUrl::new(real, None), Err(SealError::NoKey));
        // Two seals of one URL differ (a fresh nonce each).
        assert_ne!(
            JobUrl::new(real, Some(&k)).expect("again").sealed,
            url.sealed
        );
    }
}
