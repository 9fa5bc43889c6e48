//! The operator endpoints, behind the bearer token of `http.operator_token`
//! (a webhook signature is not an operator credential). The same shapes as
//! `carga job --json`, `carga jobs --json` and `carga schedule --json`: the
//! read models of `queue/` and `freshness.rs`.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::throttle::{Verdict, retry_after_secs};
use super::webhook::Accepted;
use super::{ApiError, AppState};
use crate::dataset::{Kind, Period};
use crate::freshness::DatasetStatus;
use crate::queue::{self, JobView, ListFilter, NewJob, Priority, Trigger};

/// Refuses a request without `Authorization: Bearer <http.operator_token>`
/// (compared in constant time); with no token configured, refuses all. A
/// client address with too many failures waits before its token is even
/// compared: 429 with `Retry-After` (`throttle.rs`).
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let expected = state
        .settings
        .http
        .operator_token
        .expose_secret()
        .as_bytes();
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .as_bytes();
    let client = super::client_address(request.extensions());
    let verdict = state
        .throttle
        .attempt(client, std::time::Instant::now(), || {
            !expected.is_empty() && constant_time_eq(expected, given)
        });
    match verdict {
        Verdict::Granted => next.run(request).await,
        Verdict::Denied => (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response(),
        Verdict::TooSoon(wait) => too_many_failures(wait),
    }
}

/// 429 for an address that must wait: `Retry-After` and a JSON error.
fn too_many_failures(wait: std::time::Duration) -> Response {
    let seconds = retry_after_secs(wait);
    tracing::warn!(retry_after_s = seconds, "operator token attempt throttled");
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(axum::http::header::RETRY_AFTER, seconds.to_string())],
        Json(super::ErrorBody {
            error: format!(
                "too many failed operator tokens from this address: retry in {seconds} s"
            ),
        }),
    )
        .into_response()
}

/// Equal, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct JobsQuery {
    pub state: Option<String>,
    pub dataset: Option<String>,
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = JobView), (status = 401), (status = 404, body = super::ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<JobView>, ApiError> {
    let client = state.ctx.pool.get().await.map_err(ApiError::internal)?;
    Ok(Json(
        queue::get(&**client, id).await.map_err(ApiError::queue)?,
    ))
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    params(JobsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = Vec<JobView>), (status = 401), (status = 400, body = super::ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Query(query): Query<JobsQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    if let Some(s) = &query.state {
        if !queue::STATES.contains(&s.as_str()) {
            return Err(ApiError::bad_request(format!(
                "state {s:?} is not one of {}",
                queue::STATES.join(", ")
            )));
        }
    }
    let client = state.ctx.pool.get().await.map_err(ApiError::internal)?;
    let filter = ListFilter {
        state: query.state,
        dataset: query.dataset,
        limit: query.limit.unwrap_or(50),
    };
    Ok(Json(
        queue::list(&**client, &filter)
            .await
            .map_err(ApiError::queue)?,
    ))
}

#[utoipa::path(get, path = "/v1/datasets", tag = "datasets",
    security(("bearer" = [])),
    responses((status = 200, body = Vec<DatasetStatus>), (status = 401)))]
pub async fn list_datasets(
    State(state): State<AppState>,
) -> Result<Json<Vec<DatasetStatus>>, ApiError> {
    let client = state.ctx.pool.get().await.map_err(ApiError::internal)?;
    Ok(Json(
        crate::freshness::datasets(&**client, &state.specs)
            .await
            .map_err(ApiError::db)?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBody {
    /// `YYYY-MM`.
    pub period: String,
    /// Publish even if unchanged or shrunk; allow a period outside the spec.
    #[serde(default)]
    pub force: bool,
}

#[utoipa::path(post, path = "/v1/datasets/{dataset}/loads", tag = "datasets",
    params(("dataset" = String, Path)),
    request_body = LoadBody,
    security(("bearer" = [])),
    responses((status = 202, body = Accepted), (status = 400, body = super::ErrorBody), (status = 401), (status = 422, body = super::ErrorBody)))]
pub async fn trigger_load(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
    body: Result<Json<LoadBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let period = Period::parse(&body.period)
        .ok_or_else(|| ApiError::bad_request(format!("period {:?} is not YYYY-MM", body.period)))?;
    let spec = state
        .specs
        .iter()
        .find(|s| s.dataset == dataset && s.kind != Kind::Reference)
        .ok_or_else(|| ApiError::unprocessable(format!("unknown dataset {dataset:?}")))?;
    crate::pipeline::check_period(spec, period, body.force)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let job = NewJob {
        force: body.force,
        ..NewJob::for_spec(
            spec,
            period,
            Trigger::Operator { name: "api".into() },
            Priority::Fresh,
            &state.settings.queue,
        )
    };
    let client = state.ctx.pool.get().await.map_err(ApiError::internal)?;
    let enqueued = queue::enqueue(&**client, &job)
        .await
        .map_err(ApiError::queue)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted::new(enqueued.id, !enqueued.new)),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelResponse {
    pub job_id: i64,
    /// `cancelled`, or `cancelling` for a running job (it stops on its next heartbeat).
    pub state: String,
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = i64, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = CancelResponse), (status = 401), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<CancelResponse>, ApiError> {
    let client = state.ctx.pool.get().await.map_err(ApiError::internal)?;
    let state = queue::cancel(&**client, id)
        .await
        .map_err(ApiError::queue)?;
    Ok(Json(CancelResponse { job_id: id, state }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RetryResponse {
    /// The job that will run (another pending job of the same month, if any).
    pub job_id: i64,
    pub status_url: String,
}

#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = i64, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = RetryResponse), (status = 401), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn retry_job(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<RetryResponse>, ApiError> {
    let client = state.ctx.pool.get().await.map_err(ApiError::internal)?;
    let job_id = queue::retry(&**client, id).await.map_err(ApiError::queue)?;
    Ok(Json(RetryResponse {
        job_id,
        status_url: format!("/v1/jobs/{job_id}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret-token", b"secret-token-longer"));
        assert!(!constant_time_eq(b"secret-token", b"secret"));
        assert!(!constant_time_eq(b"secret-token", b""));
    }
}
