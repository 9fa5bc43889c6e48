//! `POST /v1/webhooks/{sender}`: an upstream system says a month is out.
//! The signature (Standard Webhooks 1.0: HMAC-SHA256 over
//! `id.timestamp.body`, `v1,<base64>`, several space-separated for secret
//! rotation, secrets `whsec_<base64>`) is checked over the raw body bytes,
//! in constant time, before anything is parsed; the timestamp must be
//! within the tolerance of this server's clock. Then the body, the
//! sender's allow-list of datasets and, when a source URL is given, the
//! dataset's allow-list of sources (no SSRF). The answer comes after the
//! enqueue has committed; a replayed `webhook-id` returns its first job.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::reject::ApiPath;
use super::{ApiError, AppState, ErrorBody};
use crate::config::decode_secret;
use crate::dataset::{Period, Spec};
use crate::engine::source::allow::source_allowed;
use crate::service::queue::{self, NewJob, Priority, Trigger};

/// Why a signature was refused (all answer 401 with no detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    MissingHeader,
    BadTimestamp,
    Stale,
    Future,
    BadSignature,
}

/// Checks a Standard Webhooks signature. `now` is this server's Unix time.
/// Any one of the space-separated `v1,` signatures made with any one of
/// `keys` passes; the comparison is the MAC library's constant-time one.
pub(crate) fn verify(
    keys: &[Vec<u8>],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), Refusal> {
    let (Some(id), Some(timestamp), Some(signatures)) = (id, timestamp, signatures) else {
        return Err(Refusal::MissingHeader);
    };
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refusal::BadTimestamp)?;
    if now.saturating_sub(sent) > tolerance_s {
        return Err(Refusal::Stale);
    }
    if sent.saturating_sub(now) > tolerance_s {
        return Err(Refusal::Future);
    }
    let candidates: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, b64)| STANDARD.decode(b64).ok())
        .collect();
    for key in keys {
        for candidate in &candidates {
            let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
                continue;
            };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.trim().as_bytes());
            mac.update(b".");
            mac.update(body);
            if mac.verify_slice(candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(Refusal::BadSignature)
}

/// Signs like a Standard Webhooks sender (for tests and the README).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The body a sender posts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookBody {
    /// A payment dataset on the sender's allow-list.
    pub(crate) dataset: String,
    /// `YYYY-MM`.
    #[schema(pattern = "^(19|2[0-9])[0-9]{2}-(0[1-9]|1[0-2])$", example = "2024-10")]
    pub(crate) period: String,
    /// A source URL for this month; only on the dataset's allow-list.
    #[schema(max_length = 2048)]
    pub(crate) url: Option<String>,
}

/// What an accepted trigger answers (webhook and operator alike).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    pub(crate) job_id: i64,
    pub(crate) status_url: String,
    /// True when an existing job was returned (the same month pending, or a
    /// replayed `webhook-id`).
    pub(crate) deduplicated: bool,
}

impl Accepted {
    pub(crate) fn new(job_id: i64, deduplicated: bool) -> Accepted {
        Accepted {
            job_id,
            status_url: format!("/v1/jobs/{job_id}"),
            deduplicated,
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{sender}",
    tag = "webhooks",
    params(("sender" = String, Path, description = "the sender's name in [webhooks.senders]")),
    request_body = WebhookBody,
    responses(
        (status = 202, description = "enqueued (or the existing job)", body = Accepted),
        (status = 400, description = "malformed JSON, period or url", body = ErrorBody),
        (status = 401, description = "missing, bad, stale or future signature, or unknown sender (no detail)", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 409, description = "the month's pending job loads another URL, or runs without this one", body = ErrorBody),
        (status = 422, description = "unknown dataset, not allowed for this sender, or source URL not allowed", body = ErrorBody),
        (status = 503, description = "the database is unavailable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
    )
)]
pub(crate) async fn receive(
    State(state): State<AppState>,
    ApiPath(sender): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The signature first, over the raw bytes, before any parsing.
    let configured = state.settings.webhooks.senders.get(&sender);
    let keys: Vec<Vec<u8>> = configured
        .map(|s| {
            s.secrets
                .iter()
                .filter_map(|k| decode_secret(k.expose_secret()))
                .collect()
        })
        .unwrap_or_else(|| vec![vec![0u8; 32]]); // an unknown sender costs the same
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    let verified = verify(
        &keys,
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        now,
        state.settings.webhooks.tolerance_s as i64,
    );
    let Some(configured) = configured.filter(|_| verified.is_ok()) else {
        tracing::warn!(sender = %sender, reason = ?verified.err(), "webhook refused");
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let webhook_id = header("webhook-id").unwrap_or_default().to_string();
    let request: WebhookBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            // Where, not what: serde's message can quote the body's values.
            return ApiError::bad_request(format!(
                "malformed JSON body at line {}, column {} (expected {{\"dataset\", \"period\"[, \"url\"]}})",
                e.line(),
                e.column()
            ))
            .into_response();
        }
    };
    let period = match super::reject::period(&request.period) {
        Ok(period) => period,
        Err(e) => return e.into_response(),
    };
    if let Some(url) = &request.url {
        if let Err(e) = super::reject::source_url(url) {
            return e.into_response();
        }
    }
    if !configured.datasets.contains(&request.dataset) {
        return ApiError::unprocessable(format!(
            "dataset {:?} is not allowed for sender {sender:?}",
            request.dataset
        ))
        .into_response();
    }
    let Some(spec) = state
        .specs
        .iter()
        .find(|s| s.dataset == request.dataset && !s.kind.is_snapshot())
    else {
        return ApiError::unprocessable(format!("unknown dataset {:?}", request.dataset))
            .into_response();
    };
    if let Err(e) = spec.check_period(period, false) {
        return ApiError::unprocessable(e.to_string()).into_response();
    }
    if let Some(url) = &request.url {
        if let Err(reason) = source_allowed(spec, url).await {
            return ApiError::unprocessable(reason).into_response();
        }
    }
    match enqueue(&state, spec, period, request.url, &sender, &webhook_id).await {
        Ok(accepted) => {
            tracing::info!(sender = %sender, dataset = %spec.dataset, %period, job_id = accepted.job_id, deduplicated = accepted.deduplicated, "webhook accepted");
            (StatusCode::ACCEPTED, Json(accepted)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Enqueues in one transaction with the delivery's record, so a replayed
/// `webhook-id` finds its job.
async fn enqueue(
    state: &AppState,
    spec: &Spec,
    period: Period,
    url: Option<String>,
    sender: &str,
    webhook_id: &str,
) -> Result<Accepted, ApiError> {
    let url = url
        .as_deref()
        .map(|u| queue::JobUrl::new(u, state.settings.nis_key.as_ref()))
        .transpose()
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let mut client = state.ctx.pool.get().await.map_err(ApiError::pool)?;
    let tx = client.transaction().await.map_err(ApiError::db)?;
    let replayed = queue::delivered_job(&*tx, sender, webhook_id)
        .await
        .map_err(ApiError::queue)?;
    if let Some(job_id) = replayed {
        return Ok(Accepted::new(job_id, true));
    }
    let job = NewJob {
        url,
        ..NewJob::for_spec(
            spec,
            period,
            Trigger::Webhook {
                sender: sender.to_string(),
            },
            Priority::Fresh,
            &state.settings.queue,
        )
    };
    let enqueued = queue::enqueue(&*tx, &job, &state.clock)
        .await
        .map_err(ApiError::queue)?;
    let recorded = queue::record_delivery(&*tx, sender, webhook_id, enqueued.id)
        .await
        .map_err(ApiError::queue)?;
    tx.commit().await.map_err(ApiError::db)?;
    if recorded {
        return Ok(Accepted::new(enqueued.id, !enqueued.new));
    }
    // The same delivery raced us and committed first: its job.
    let first = queue::delivered_job(&**client, sender, webhook_id)
        .await
        .map_err(ApiError::queue)?
        .ok_or_else(|| ApiError::internal("a delivery recorded by a concurrent request is gone"))?;
    Ok(Accepted::new(first, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference libraries' vector (standard-webhooks, libraries/*).
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: i64 = 1_649_367_553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn check(
        keys: &[&str],
        id: Option<&str>,
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), Refusal> {
        let keys: Vec<Vec<u8>> = keys.iter().filter_map(|k| decode_secret(k)).collect();
        verify(&keys, id, ts, sig, body, now, 300)
    }

    #[test]
    fn the_standards_vector_signs_and_verifies() {
        let key = decode_secret(SECRET).expect("secret");
        assert_eq!(sign(&key, ID, TIMESTAMP, BODY), SIGNATURE);
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            check(
                &[SECRET],
                Some(ID),
                Some(&ts),
                Some(SIGNATURE),
                BODY,
                TIMESTAMP + 10
            ),
            Ok(())
        );
    }

    #[test]
    fn every_way_of_getting_it_wrong_is_refused() {
        let ts = TIMESTAMP.to_string();
        let ok = |sig: &str, body: &[u8], now: i64| {
            check(&[SECRET], Some(ID), Some(&ts), Some(sig), body, now)
        };
        // The reference libraries' wrong signature.
        assert_eq!(
            ok(
                "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU=",
                BODY,
                TIMESTAMP
            ),
            Err(Refusal::BadSignature)
        );
        // The body re-serialised after signing (whitespace added).
        assert_eq!(
            ok(
                SIGNATURE,
                br#"{"email": "test@example.com", "username": "test_user"}"#,
                TIMESTAMP
            ),
            Err(Refusal::BadSignature)
        );
        // Stale and future, just past the tolerance; inside it passes.
        assert_eq!(ok(SIGNATURE, BODY, TIMESTAMP + 301), Err(Refusal::Stale));
        assert_eq!(ok(SIGNATURE, BODY, TIMESTAMP - 301), Err(Refusal::Future));
        assert_eq!(ok(SIGNATURE, BODY, TIMESTAMP + 300), Ok(()));
        // Another version, a truncated or empty signature.
        assert_eq!(
            ok(
                "v1a,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
                BODY,
                TIMESTAMP
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            ok(
                "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3",
                BODY,
                TIMESTAMP
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(ok("v1,", BODY, TIMESTAMP), Err(Refusal::BadSignature));
        // Missing headers, a timestamp that is not a number.
        assert_eq!(
            check(&[SECRET], None, Some(&ts), Some(SIGNATURE), BODY, TIMESTAMP),
            Err(Refusal::MissingHeader)
        );
        assert_eq!(
            check(&[SECRET], Some(ID), None, Some(SIGNATURE), BODY, TIMESTAMP),
            Err(Refusal::MissingHeader)
        );
        assert_eq!(
            check(&[SECRET], Some(ID), Some(&ts), None, BODY, TIMESTAMP),
            Err(Refusal::MissingHeader)
        );
        assert_eq!(
            check(
                &[SECRET],
                Some(ID),
                Some("soon"),
                Some(SIGNATURE),
                BODY,
                TIMESTAMP
            ),
            Err(Refusal::BadTimestamp)
        );
        // Another message id.
        assert_eq!(
            check(
                &[SECRET],
                Some("msg_other"),
                Some(&ts),
                Some(SIGNATURE),
                BODY,
                TIMESTAMP
            ),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn rotated_secrets_and_several_signatures() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let ts = TIMESTAMP.to_string();
        // The reference libraries' multi-signature header, with the valid one third.
        let many = format!(
            "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ= v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q= {SIGNATURE} v1,9DfC1c3eeOrXB6w/5dIDydLNQaEyww5KalE5jLBZucE="
        );
        assert_eq!(
            check(&[SECRET], Some(ID), Some(&ts), Some(&many), BODY, TIMESTAMP),
            Ok(())
        );
        let without = "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ= v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q=";
        assert_eq!(
            check(
                &[SECRET],
                Some(ID),
                Some(&ts),
                Some(without),
                BODY,
                TIMESTAMP
            ),
            Err(Refusal::BadSignature)
        );
        // The receiver holds the old and the new secret during a rotation.
        assert_eq!(
            check(
                &[old, SECRET],
                Some(ID),
                Some(&ts),
                Some(SIGNATURE),
                BODY,
                TIMESTAMP
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &[old],
                Some(ID),
                Some(&ts),
                Some(SIGNATURE),
                BODY,
                TIMESTAMP
            ),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn secrets_must_be_whsec_base64_of_24_to_64_bytes() {
        assert!(decode_secret(SECRET).is_some());
        assert!(decode_secret("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_none());
        assert!(decode_secret("whsec_c2hvcnQ=").is_none());
        assert!(decode_secret("whsec_not base64!").is_none());
    }
}
