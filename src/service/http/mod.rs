//! The HTTP side of `carga serve`: signed webhooks that enqueue loads, the
//! operator API (bearer token), health, readiness, Prometheus metrics and
//! the OpenAPI description; plus the loopback file server the demo and the
//! tests fetch Portal-format files from. Only this module knows the wire
//! format; handlers are thin: parse, call one function of `queue/` or a
//! read model, map the result to a status.
//!
//! The server is a value that reports the address it bound (tests pass
//! port 0). It is served with hyper-util directly rather than
//! `axum::serve`, which installs no timer: headers must arrive within
//! `http.header_read_timeout_s`, a request is answered within
//! `http.request_timeout_s`, bodies above `http.max_body_bytes` get 413
//! before they are read, and at most `http.max_connections` connections are
//! served at once.

mod api;
mod connections;
pub(crate) mod console;
pub mod files;
mod headers;
mod health;
mod metrics;
mod openapi;
mod reject;
mod throttle;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::config::Settings;
use crate::dataset::Spec;
use crate::engine::pipeline::Context;
use crate::service::queue::Clock;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub(crate) ctx: Context,
    pub(crate) settings: Arc<Settings>,
    pub(crate) specs: Arc<Vec<Spec>>,
    pub(crate) metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Failed sign-ins and bearer tokens per client address.
    pub(crate) throttle: Arc<throttle::Throttle>,
    /// The queue's time for the enqueues and retries the API makes (the
    /// app's, shared with its runner and scheduler).
    pub(crate) clock: Clock,
}

impl AppState {
    /// The state for serving `specs` over `ctx` (its settings, its pool).
    pub(crate) fn new(
        ctx: Context,
        specs: Vec<Spec>,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> AppState {
        AppState {
            settings: Arc::new(ctx.settings.clone()),
            specs: Arc::new(specs),
            metrics,
            throttle: Arc::new(throttle::Throttle::new(throttle::Policy::default())),
            clock: Clock::database(),
            ctx,
        }
    }

    /// This state on `clock` instead of the database's unshifted one.
    pub fn with_clock(mut self, clock: Clock) -> AppState {
        self.clock = clock;
        self
    }
}

/// An error as JSON: `{"error": "..."}` with its status (and
/// `Retry-After` when the database is unavailable).
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// Seconds, sent as `Retry-After`.
    pub(crate) retry_after: Option<u64>,
}

/// What a 503 asks the client to wait before trying again, in seconds.
pub(crate) const RETRY_AFTER_S: u64 = 5;

/// True when a database error means "the database cannot be reached or is
/// going away" (answer 503 and ask to retry) rather than a fault in the
/// request or the server (500). Decided on the connection's state and the
/// SQLSTATE, never on message text: a closed connection, an I/O error
/// (refused, reset), class 08 (connection exception), 57P01–57P03
/// (admin/crash shutdown, cannot connect now) and 53300 (too many
/// connections).
pub(crate) fn database_unavailable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
            ]
            .contains(code);
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// True when a pool error means the database is unavailable: a wait or
/// connect timeout, a connection that could not be made or checked, a
/// closed pool. Only a missing runtime (a bug) is not.
pub(crate) fn pool_unavailable(e: &deadpool_postgres::PoolError) -> bool {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Timeout(_) | PoolError::Closed | PoolError::PostCreateHook(_) => true,
        PoolError::Backend(e) => e.as_db_error().is_none() || database_unavailable(e),
        PoolError::NoRuntimeSpecified => false,
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub(crate) fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    /// A server-side failure: logged in full, answered without detail.
    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (see the server's log)",
        )
    }
    /// The database cannot be reached: 503 with `Retry-After`; the detail
    /// (host, role) goes to the log, as a warning.
    pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
        tracing::warn!(error = %e, "request refused: the database is unavailable");
        ApiError {
            retry_after: Some(RETRY_AFTER_S),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable; try again later",
            )
        }
    }
    pub(crate) fn pool(e: deadpool_postgres::PoolError) -> ApiError {
        if pool_unavailable(&e) {
            ApiError::unavailable(e)
        } else {
            ApiError::internal(e)
        }
    }
    pub(crate) fn db(e: tokio_postgres::Error) -> ApiError {
        let text = crate::db::describe_db(&e);
        if database_unavailable(&e) {
            ApiError::unavailable(text)
        } else {
            ApiError::internal(text)
        }
    }
    pub(crate) fn queue(e: crate::service::queue::QueueError) -> ApiError {
        use crate::service::queue::QueueError;
        match e {
            QueueError::NotFound(_) => ApiError::not_found(e.to_string()),
            QueueError::WrongState { .. } | QueueError::Conflict { .. } => {
                ApiError::conflict(e.to_string())
            }
            QueueError::Db(e) => ApiError::db(e),
            e => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The application's routes, with request ids, timeouts, body limits,
/// request metrics and security headers (`headers.rs`).
pub(crate) fn router(state: AppState) -> Router {
    let settings = state.settings.clone();
    crate::telemetry::register_series(state.specs.iter().map(|s| s.dataset.as_str()));
    let operator = Router::new()
        .route("/v1/jobs", get(api::list_jobs))
        .route("/v1/jobs/{id}", get(api::get_job))
        .route("/v1/jobs/{id}/cancel", post(api::cancel_job))
        .route("/v1/jobs/{id}/retry", post(api::retry_job))
        .route("/v1/datasets", get(api::list_datasets))
        .route("/v1/datasets/{dataset}/loads", post(api::trigger_load))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            api::require_token,
        ));
    Router::new()
        .route("/health", get(health::live))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::document))
        .route("/v1/webhooks/{sender}", post(webhook::receive))
        .merge(operator)
        .merge(console::routes())
        .with_state(state)
        .layer(middleware::from_fn(observe))
        .layer(RequestBodyLimitLayer::new(settings.http.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(settings.http.request_timeout_s),
        ))
        // Outside the limits, so their 408 and 413 become JSON too.
        .layer(middleware::from_fn(reject::json_errors))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(middleware::from_fn(headers::secure))
}

/// Every request: a span with its request id (so every log line of the
/// request carries it), and the request counter by route and status.
async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let method = request.method().clone();
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(status, ms = started.elapsed().as_millis() as u64, "request");
    });
    crate::telemetry::record_request(&route, method.as_str(), status);
    response
}

/// The routes of `carga worker`'s own listener: the process's counters
/// (attempts by ending, retries, rescues, rows, bytes, stage times) at
/// `/metrics`, and `/health`. The queue's depth and the datasets'
/// freshness are the database's, served once by `carga serve`.
pub(crate) fn worker_router(metrics: metrics_exporter_prometheus::PrometheusHandle) -> Router {
    Router::new()
        .route("/health", get(health::live))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .layer(middleware::from_fn(reject::json_errors))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(middleware::from_fn(headers::secure))
}

/// A bound API server.
pub struct Server {
    listener: TcpListener,
    router: Router,
    settings: Arc<Settings>,
}

impl Server {
    /// Binds `listen` (port 0 picks one).
    pub async fn bind(listen: &str, state: AppState) -> std::io::Result<Server> {
        let settings = state.settings.clone();
        Server::bind_router(listen, router(state), settings).await
    }

    /// Binds `listen` to serve `router` under the same connection policy.
    pub(crate) async fn bind_router(
        listen: &str,
        router: Router,
        settings: Arc<Settings>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(listen).await?;
        Ok(Server {
            listener,
            settings,
            router,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then stops accepting and lets open requests
    /// finish (bounded by the request timeout). Who holds a connection slot
    /// and for how long is `connections`' policy.
    pub async fn serve(self, shutdown: CancellationToken) {
        let http = &self.settings.http;
        let registry = Arc::new(connections::Registry::new(
            http.max_connections,
            http.max_connections_per_address,
        ));
        let header_timeout = Duration::from_secs(http.header_read_timeout_s.max(1));
        let idle_timeout = Duration::from_secs(http.idle_timeout_s.max(1));
        let tasks = tokio_util::task::TaskTracker::new();
        'accept: loop {
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (id, activity) = loop {
                let freed = registry.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                match registry.admit(peer.ip()) {
                    connections::Admission::Admitted { id, activity } => break (id, activity),
                    connections::Admission::AddressFull => {
                        crate::telemetry::record_connection_refused("address_full");
                        drop(stream);
                        continue 'accept;
                    }
                    connections::Admission::Full => tokio::select! {
                        () = shutdown.cancelled() => break 'accept,
                        () = freed => {}
                    },
                }
            };
            let router = self.router.clone();
            let request_activity = activity.clone();
            let service = TowerToHyperService::new(tower::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let guard = request_activity.request();
                    let router = router.clone();
                    async move {
                        // The request stays in flight until its response's
                        // body is written out (a slow reader is busy, not
                        // idle).
                        let response =
                            tower::ServiceExt::oneshot(with_peer(router, peer), request).await;
                        response.map(|r| {
                            r.map(|body| {
                                axum::body::Body::new(connections::Guarded::new(body, guard))
                            })
                        })
                    }
                },
            ));
            let shutdown = shutdown.clone();
            let registry = registry.clone();
            tasks.spawn(async move {
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .keep_alive(true);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Some(idle_timeout))
                    .keep_alive_timeout(idle_timeout);
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                tokio::pin!(connection);
                let mut watch = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(100)));
                watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = connection.as_mut() => break,
                        () = activity.close.cancelled() => {
                            crate::telemetry::record_connection_refused("evicted");
                            break;
                        }
                        _ = watch.tick() => {
                            if activity.idle_for(std::time::Instant::now()).is_some_and(|d| d >= idle_timeout) {
                                crate::telemetry::record_connection_refused("idle");
                                break;
                            }
                        }
                        () = shutdown.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.as_mut().await;
                            break;
                        }
                    }
                }
                registry.leave(id);
            });
        }
        tasks.close();
        tasks.wait().await;
    }
}

/// The router for one connection: every request carries the peer's address
/// as `ConnectInfo`, which the failed-authentication throttle counts by
/// (`throttle.rs`).
fn with_peer(
    router: Router,
    peer: SocketAddr,
) -> impl tower::Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    use tower::ServiceExt;
    router.map_request(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            request
        },
    )
}

/// The client's address (from [`with_peer`]); unspecified when the router
/// is served without it, so such clients share one throttle entry.
pub(crate) fn client_address(extensions: &axum::http::Extensions) -> std::net::IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| {
            c.0.ip()
        })
}

/// `Cache-Control` for responses that must not be cached.
pub(crate) fn no_store() -> (axum::http::HeaderName, HeaderValue) {
    (
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    )
}
