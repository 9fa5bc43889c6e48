//! `GET /metrics`: Prometheus text. Counters and histograms are recorded as
//! things happen (`telemetry::record_*`); the queue's depth by state, the
//! last publish per dataset (for a freshness alert) and the pool's usage
//! are read when scraped.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::telemetry::metric;

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn render(State(state): State<AppState>) -> Response {
    let pool = state.ctx.pool.status();
    metrics::gauge!(metric::POOL, "state" => "size").set(pool.size as f64);
    metrics::gauge!(metric::POOL, "state" => "available").set(pool.available as f64);
    metrics::gauge!(metric::POOL, "state" => "waiting").set(pool.waiting as f64);
    metrics::gauge!(metric::POOL, "state" => "max").set(pool.max_size as f64);
    if let Ok(client) = state.ctx.pool.get().await {
        if let Ok(depth) = crate::service::queue::depth(&**client).await {
            for s in crate::service::queue::STATES {
                let n = depth
                    .iter()
                    .find(|(name, _)| name == s)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!(metric::QUEUE_DEPTH, "state" => s).set(n as f64);
            }
        }
        if let Ok(Some(last)) = crate::engine::load::ledger::last_published(&**client).await {
            for dataset in last {
                if let Some(at) = dataset.finished_epoch {
                    metrics::gauge!(metric::LAST_SUCCESS, "dataset" => dataset.dataset).set(at);
                }
            }
        }
        // What the sources have against what is published: silence from a
        // source that is ahead of us is a failure (README's alert rule).
        if let Ok(statuses) = crate::service::freshness::datasets(&**client, &state.specs).await {
            let yyyymm = |p: &Option<String>| {
                p.as_deref()
                    .and_then(crate::dataset::Period::parse)
                    .map(|p| f64::from(p.yyyymm()))
            };
            for s in statuses {
                if let Some(p) = yyyymm(&s.source_latest_period) {
                    metrics::gauge!(metric::SOURCE_LATEST, "dataset" => s.dataset.clone()).set(p);
                }
                if let Some(p) = yyyymm(&s.last_published_period) {
                    metrics::gauge!(metric::PUBLISHED_LATEST, "dataset" => s.dataset.clone())
                        .set(p);
                }
                metrics::gauge!(metric::SOURCE_AHEAD, "dataset" => s.dataset)
                    .set(s.source_ahead_seconds.unwrap_or(0.0));
            }
        }
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
