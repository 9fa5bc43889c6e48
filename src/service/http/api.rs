//! The operator endpoints, behind the bearer token of `http.operator_token`
//! (a webhook signature is not an operator credential). The same shapes as
//! `carga job --json`, `carga jobs --json` and `carga schedule --json`: the
//! read models of `queue/` and `freshness.rs`.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::reject::{ApiJson, ApiPath, ApiQuery};
use super::throttle::{Verdict, retry_after_secs};
use super::webhook::Accepted;
use super::{ApiError, AppState, ErrorBody};
use crate::service::freshness::DatasetStatus;
use crate::service::queue::{self, JobView, ListFilter, NewJob, Priority, Trigger};

/// Refuses a request without `Authorization: Bearer <http.operator_token>`
/// (compared in constant time); with no token configured, refuses all. A
/// client address with too many failures waits before its token is even
/// compared: 429 with `Retry-After` (`throttle.rs`).
pub(crate) async fn require_token(
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
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// The most jobs one listing returns.
const MAX_LIMIT: i64 = 10_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobsQuery {
    /// Only jobs in this state.
    pub(crate) state: Option<String>,
    /// Only jobs of this dataset.
    pub(crate) dataset: Option<String>,
    /// At most this many jobs (default 50).
    #[param(minimum = 1, maximum = 10_000)]
    pub(crate) limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "the job's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = JobView),
        (status = 400, description = "the id is not a 64-bit integer", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody),
        (status = 429, description = "too many wrong tokens from this address: wait Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 503, description = "the database is unavailable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<JobView>, ApiError> {
    let client = state.ctx.pool.get().await.map_err(ApiError::pool)?;
    Ok(Json(
        queue::get(&**client, id).await.map_err(ApiError::queue)?,
    ))
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    params(JobsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<JobView>),
        (status = 400, description = "an unknown state or dataset, or a limit out of range", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody),
        (status = 429, description = "too many wrong tokens from this address: wait Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
        (status = 503, description = "the database is unavailable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<JobsQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    if let Some(s) = &query.state {
        if !queue::STATES.contains(&s.as_str()) {
            return Err(ApiError::bad_request(format!(
                "state {s:?} is not one of {}",
                queue::STATES.join(", ")
            )));
        }
    }
    if let Some(dataset) = &query.dataset {
        super::reject::dataset_filter(&state.specs, dataset)?;
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is not between 1 and {MAX_LIMIT}"
        )));
    }
    let client = state.ctx.pool.get().await.map_err(ApiError::pool)?;
    let filter = ListFilter {
        state: query.state,
        dataset: query.dataset,
        limit,
    };
    Ok(Json(
        queue::list(&**client, &filter)
            .await
            .map_err(ApiError::queue)?,
    ))
}

#[utoipa::path(get, path = "/v1/datasets", tag = "datasets",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Vec<DatasetStatus>),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody),
        (status = 429, description = "too many wrong tokens from this address: wait Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
        (status = 503, description = "the database is unavailable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub(crate) async fn list_datasets(
    State(state): State<AppState>,
) -> Result<Json<Vec<DatasetStatus>>, ApiError> {
    let client = state.ctx.pool.get().await.map_err(ApiError::pool)?;
    Ok(Json(
        crate::service::freshness::datasets(&**client, &state.specs)
            .await
            .map_err(ApiError::db)?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadBody {
    /// `YYYY-MM`.
    #[schema(pattern = "^(19|2[0-9])[0-9]{2}-(0[1-9]|1[0-2])$", example = "2024-10")]
    pub(crate) period: String,
    /// Publish even if unchanged or shrunk; allow a period outside the spec.
    #[serde(default)]
    pub(crate) force: bool,
}

#[utoipa::path(post, path = "/v1/datasets/{dataset}/loads", tag = "datasets",
    params(("dataset" = String, Path, description = "a payment dataset")),
    request_body = LoadBody,
    security(("bearer" = [])),
    responses(
        (status = 202, body = Accepted),
        (status = 400, description = "malformed JSON or period", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody),
        (status = 429, description = "too many wrong tokens from this address: wait Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 409, description = "the month's pending job cannot take this request (force for a running job, or another URL)", body = ErrorBody),
        (status = 422, description = "unknown dataset, or a period outside the spec without force", body = ErrorBody),
        (status = 503, description = "the database is unavailable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub(crate) async fn trigger_load(
    State(state): State<AppState>,
    ApiPath(dataset): ApiPath<String>,
    ApiJson(body): ApiJson<LoadBody>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let period = super::reject::period(&body.period)?;
    let spec = state
        .specs
        .iter()
        .find(|s| s.dataset == dataset)
        .ok_or_else(|| ApiError::unprocessable(format!("unknown dataset {dataset:?}")))?;
    spec.check_period(period, body.force)
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
    let client = state.ctx.pool.get().await.map_err(ApiError::pool)?;
    let enqueued = queue::enqueue(&**client, &job, &state.clock)
        .await
        .map_err(ApiError::queue)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted::new(enqueued.id, !enqueued.new)),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CancelResponse {
    pub(crate) job_id: i64,
    /// `cancelled`, or `cancelling` for a running job (it stops on its next heartbeat).
    pub(crate) state: String,
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = i64, Path, description = "the job's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = CancelResponse),
        (status = 400, description = "the id is not a 64-bit integer", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody),
        (status = 429, description = "too many wrong tokens from this address: wait Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 409, description = "the job has already finished", body = ErrorBody),
        (status = 503, description = "the database is unavailable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<CancelResponse>, ApiError> {
    let client = state.ctx.pool.get().await.map_err(ApiError::pool)?;
    let state = queue::cancel(&**client, id)
        .await
        .map_err(ApiError::queue)?;
    Ok(Json(CancelResponse {
        job_id: id,
        state: state.to_string(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RetryResponse {
    /// The job that will run (another pending job of the same month, if any).
    pub(crate) job_id: i64,
    pub(crate) status_url: String,
}

#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = i64, Path, description = "the job's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = RetryResponse),
        (status = 400, description = "the id is not a 64-bit integer", body = ErrorBody),
        (status = 401, description = "no or wrong bearer token", body = ErrorBody),
        (status = 429, description = "too many wrong tokens from this address: wait Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 409, description = "the job is not failed, cancelled or retryable", body = ErrorBody),
        (status = 503, description = "the database is unavailable", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub(crate) async fn retry_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<RetryResponse>, ApiError> {
    let client = state.ctx.pool.get().await.map_err(ApiError::pool)?;
    let job_id = queue::retry(
        &**client,
        id,
        state.settings.queue.max_attempts,
        &state.clock,
    )
    .await
    .map_err(ApiError::queue)?;
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
