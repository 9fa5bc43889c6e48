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

pub mod api;
pub mod console;
pub mod files;
pub mod headers;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod throttle;
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
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::config::Settings;
use crate::dataset::Spec;
use crate::pipeline::Context;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub ctx: Context,
    pub settings: Arc<Settings>,
    pub specs: Arc<Vec<Spec>>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Failed sign-ins and bearer tokens per client address.
    pub throttle: Arc<throttle::Throttle>,
}

impl AppState {
    /// The state for serving `specs` over `ctx` (its settings, its pool).
    pub fn new(
        ctx: Context,
        specs: Vec<Spec>,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> AppState {
        AppState {
            settings: Arc::new(ctx.settings.clone()),
            specs: Arc::new(specs),
            metrics,
            throttle: Arc::new(throttle::Throttle::new(throttle::Policy::default())),
            ctx,
        }
    }
}

/// An error as JSON: `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            message: message.into(),
        }
    }
    /// A server-side failure: logged in full, answered without detail.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "request failed");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error (see the server's log)".into(),
        }
    }
    pub fn db(e: tokio_postgres::Error) -> ApiError {
        ApiError::internal(crate::pipeline::describe_db(&e))
    }
    pub fn queue(e: crate::queue::QueueError) -> ApiError {
        use crate::queue::QueueError;
        match e {
            QueueError::NotFound(_) => ApiError::not_found(e.to_string()),
            QueueError::WrongState { .. } => ApiError::conflict(e.to_string()),
            e => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// The application's routes, with request ids, timeouts, body limits,
/// request metrics and security headers (`headers.rs`).
pub fn router(state: AppState) -> Router {
    let settings = state.settings.clone();
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

/// A bound API server.
pub struct Server {
    listener: TcpListener,
    router: Router,
    settings: Arc<Settings>,
}

impl Server {
    /// Binds `listen` (port 0 picks one).
    pub async fn bind(listen: &str, state: AppState) -> std::io::Result<Server> {
        let listener = TcpListener::bind(listen).await?;
        Ok(Server {
            listener,
            settings: state.settings.clone(),
            router: router(state),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then stops accepting and lets open requests
    /// finish (bounded by the request timeout).
    pub async fn serve(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.http.max_connections.max(1)));
        let header_timeout = Duration::from_secs(self.settings.http.header_read_timeout_s.max(1));
        let connections = tokio_util::task::TaskTracker::new();
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
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
            let service = TowerToHyperService::new(with_peer(self.router.clone(), peer));
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let _permit = permit;
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .keep_alive(true);
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    () = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
        }
        connections.close();
        connections.wait().await;
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
pub fn client_address(extensions: &axum::http::Extensions) -> std::net::IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| {
            c.0.ip()
        })
}

/// `Cache-Control` for responses that must not be cached.
pub fn no_store() -> (axum::http::HeaderName, HeaderValue) {
    (
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    )
}
