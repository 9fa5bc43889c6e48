//! `GET /health` (the process answers) and `GET /ready` (it can work: the
//! database answers, the schema is at this binary's migrations, and the
//! pool's state), reported the way the dashboard API's own health endpoint
//! reports its pool.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Live {
    pub status: &'static str,
    pub version: &'static str,
}

#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = Live)))]
pub async fn live() -> Json<Live> {
    Json(Live {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PoolStatus {
    pub driver: &'static str,
    pub size: usize,
    pub max_size: usize,
    pub available: usize,
    pub waiting: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// `ready` or `unready`.
    pub status: &'static str,
    pub database: &'static str,
    /// Migrations applied to the database / known to this binary.
    pub migrations_applied: Option<i64>,
    pub migrations_expected: usize,
    pub pool: PoolStatus,
    /// Why not ready, if not.
    pub error: Option<String>,
}

#[utoipa::path(get, path = "/ready", tag = "health",
    responses((status = 200, body = Ready), (status = 503, body = Ready)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
    let expected = crate::db::migration_count();
    let checked = tokio::time::timeout(Duration::from_secs(3), async {
        let client = state.ctx.pool.get().await.map_err(|e| e.to_string())?;
        client
            .query_one("SELECT count(*) FROM carga.schema_history", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .map_err(|e| crate::pipeline::describe_db(&e))
    })
    .await
    .unwrap_or_else(|_| Err("the database did not answer within 3 s".into()));
    let pool = state.ctx.pool.status();
    let pool = PoolStatus {
        driver: "tokio-postgres (deadpool-postgres)",
        size: pool.size,
        max_size: pool.max_size,
        available: pool.available,
        waiting: pool.waiting,
    };
    let (status, body) = match checked {
        Ok(applied) if applied as usize == expected => (
            StatusCode::OK,
            Ready {
                status: "ready",
                database: "reachable",
                migrations_applied: Some(applied),
                migrations_expected: expected,
                pool,
                error: None,
            },
        ),
        Ok(applied) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Ready {
                status: "unready",
                database: "reachable",
                migrations_applied: Some(applied),
                migrations_expected: expected,
                pool,
                error: Some(
                    "the schema is not at this binary's migrations (`carga migrate`)".into(),
                ),
            },
        ),
        Err(error) => {
            // The detail (host, role, authentication) goes to the log only.
            tracing::warn!(%error, "not ready: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Ready {
                    status: "unready",
                    database: "unreachable",
                    migrations_applied: None,
                    migrations_expected: expected,
                    pool,
                    error: Some("the database does not answer (see the server's log)".into()),
                },
            )
        }
    };
    (status, Json(body))
}
