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
pub(crate) struct Live {
    pub(crate) status: &'static str,
    pub(crate) version: &'static str,
}

#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = Live)))]
pub(crate) async fn live() -> Json<Live> {
    Json(Live {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PoolStatus {
    pub(crate) driver: &'static str,
    pub(crate) size: usize,
    pub(crate) max_size: usize,
    pub(crate) available: usize,
    pub(crate) waiting: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Ready {
    /// `ready` or `unready`.
    pub(crate) status: &'static str,
    pub(crate) database: &'static str,
    /// Whether the checking session was encrypted (`pg_stat_ssl`); absent
    /// when the database did not answer.
    database_encrypted: Option<bool>,
    /// `TLSv1.3`, when encrypted.
    database_tls_version: Option<String>,
    /// Migrations applied to the database / known to this binary.
    migrations_applied: Option<i64>,
    migrations_expected: usize,
    pub(crate) pool: PoolStatus,
    /// Why not ready, if not.
    pub(crate) error: Option<String>,
}

#[utoipa::path(get, path = "/ready", tag = "health",
    responses((status = 200, body = Ready), (status = 503, body = Ready)))]
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
    let expected = crate::db::migration_count();
    let checked = tokio::time::timeout(Duration::from_secs(3), async {
        let client = state.ctx.pool.get().await.map_err(|e| e.to_string())?;
        let applied = crate::db::applied(&**client)
            .await
            .map_err(|e| crate::db::describe_db(&e))?
            .unwrap_or(0);
        let encryption = crate::db::encryption(&client)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((applied, encryption))
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
        Ok((applied, encryption)) if applied as usize == expected => (
            StatusCode::OK,
            Ready {
                status: "ready",
                database: "reachable",
                database_encrypted: Some(encryption.encrypted),
                database_tls_version: encryption.tls_version,
                migrations_applied: Some(applied),
                migrations_expected: expected,
                pool,
                error: None,
            },
        ),
        Ok((applied, encryption)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Ready {
                status: "unready",
                database: "reachable",
                database_encrypted: Some(encryption.encrypted),
                database_tls_version: encryption.tls_version,
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
                    database_encrypted: None,
                    database_tls_version: None,
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
