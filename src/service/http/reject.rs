//! How the API refuses a request: always the JSON error body
//! (`{"error": "..."}`) that `/openapi.json` declares, never axum's
//! text/plain rejections. Extractors ([`ApiPath`], [`ApiQuery`],
//! [`ApiJson`]) turn a path, query or body that does not parse into a 400
//! (413 for a body too large, 415 for one that is not JSON);
//! [`json_errors`] rewrites the errors made outside a handler (401 from the
//! token check, 404 for an unknown route, 405, 408, 413) the same way. The
//! text checks here ([`period`], [`dataset_filter`], [`source_url`]) run
//! before anything reaches SQL: PostgreSQL refuses a NUL in text, and a
//! refused statement would be a 500 and an ERROR in the log.
//!
//! The console (`/console…`) is left alone: its answers are pages.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::{ApiError, ErrorBody};
use crate::dataset::{Period, Spec};

/// `Path<T>`, refusing with the JSON error.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(e) if e.status().is_server_error() => Err(ApiError::internal(e.body_text())),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// `Query<T>`, refusing with the JSON error.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// A JSON body, refusing with the JSON error. The 400 says where the JSON
/// broke, never what it held (serde's messages quote values and unknown
/// field names).
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || v.starts_with("application/") && v.ends_with("+json")
            });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => "a JSON body that does not fit the schema",
                _ => "malformed JSON",
            };
            ApiError::bad_request(format!(
                "{what} at line {}, column {} (see /openapi.json)",
                e.line(),
                e.column()
            ))
        })
    }
}

/// A month as the API takes it: `YYYY-MM`, nothing around it.
pub(crate) fn period(text: &str) -> Result<Period, ApiError> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 7
        && bytes[4] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || b.is_ascii_digit());
    shaped
        .then(|| Period::parse(text))
        .flatten()
        .ok_or_else(|| ApiError::bad_request(format!("period {text:?} is not YYYY-MM")))
}

/// The `dataset` filter of a listing: one of the loaded specs.
pub(crate) fn dataset_filter(specs: &[Spec], name: &str) -> Result<(), ApiError> {
    if specs.iter().any(|s| s.dataset == name) {
        return Ok(());
    }
    let known: Vec<&str> = specs.iter().map(|s| s.dataset.as_str()).collect();
    Err(ApiError::bad_request(format!(
        "dataset {name:?} is not one of {}",
        known.join(", ")
    )))
}

/// The longest source URL a webhook may name.
const MAX_URL_BYTES: usize = 2048;

/// A source URL as text: bounded, and no control characters (a NUL would
/// be refused by PostgreSQL; the allow-list check comes after).
pub(crate) fn source_url(url: &str) -> Result<(), ApiError> {
    if url.len() > MAX_URL_BYTES {
        return Err(ApiError::bad_request(format!(
            "url is longer than {MAX_URL_BYTES} bytes"
        )));
    }
    if url.chars().any(char::is_control) {
        return Err(ApiError::bad_request("url contains a control character"));
    }
    Ok(())
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Rewrites every error response of the API that is not already the JSON
/// error body (the token check's 401, an unknown route's 404, 405 with its
/// `Allow`, the timeout's 408, the body limit's 413) into it, keeping its
/// status and headers. Console paths are left alone.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let console = path == "/console" || path.starts_with("/console/");
    let response = next.run(request).await;
    let status = response.status();
    if console || !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let error = match status {
        StatusCode::UNAUTHORIZED => "unauthorized".to_string(),
        StatusCode::NOT_FOUND => "no such route".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            format!("method not allowed (allowed: {allowed})")
        }
        StatusCode::REQUEST_TIMEOUT => {
            "the request was not answered within http.request_timeout_s".to_string()
        }
        StatusCode::PAYLOAD_TOO_LARGE => "the body is larger than http.max_body_bytes".to_string(),
        other => other
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    let body = serde_json::to_vec(&ErrorBody { error }).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_exactly_yyyy_mm() {
        assert!(period("2024-10").is_ok());
        for refused in [
            "202410",
            "2024-13",
            "2024-00",
            "1899-12",
            " 2024-10",
            "2024-10\0",
            "2024--1",
            "２０２４-10",
        ] {
            assert!(period(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn source_urls_without_control_characters() {
        assert!(source_url("https://portaldatransparencia.gov.br/x.zip").is_ok());
        assert!(source_url("https://portaldatransparencia.gov.br/x\0.zip").is_err());
        assert!(source_url("https://portaldatransparencia.gov.br/x\n.zip").is_err());
        assert!(source_url(&format!("https://a.b/{}", "x".repeat(MAX_URL_BYTES))).is_err());
    }
}
