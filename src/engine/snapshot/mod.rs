//! Snapshot loads: datasets with no period (`kind = "reference"`, the
//! states and municipalities; `kind = "places"`, CRAS; `kind =
//! "boundaries"`, their PostGIS geometry), each loaded whole
//! in one transaction, by `carga run` or by a worker, on demand or on a
//! schedule.

pub mod boundaries;
pub mod places;
pub mod reference;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::dataset::{Kind, Spec};
use crate::engine::load::ledger::{self, LedgerStatus};
use crate::engine::pipeline::{Context, LoadError};

/// What a snapshot load read and refused, for its ledger row when it fails
/// (set by the load as it learns them).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    read: AtomicU64,
    rejected: AtomicU64,
}

impl Counts {
    pub(crate) fn set(&self, read: u64, rejected: u64) {
        self.read.store(read, Ordering::Relaxed);
        self.rejected.store(rejected, Ordering::Relaxed);
    }
}

/// Runs a snapshot's `work` (its transaction) until it ends or `cancel`
/// completes (dropping it rolls the transaction back). A failure or a
/// cancellation is recorded on the ledger row `load_id`, outside the
/// transaction, with what `counts` says was read and refused.
pub(crate) async fn settle<T>(
    client: &impl tokio_postgres::GenericClient,
    load_id: i64,
    counts: &Counts,
    work: impl Future<Output = Result<T, LoadError>>,
    cancel: impl Future<Output = ()>,
) -> Result<T, LoadError> {
    let result = tokio::select! {
        result = work => result,
        () = cancel => Err(LoadError::Cancelled),
    };
    if let Err(error) = &result {
        let status = match error {
            LoadError::Cancelled => LedgerStatus::Cancelled,
            _ => LedgerStatus::Failed,
        };
        let read = counts.read.load(Ordering::Relaxed);
        let stats = if read == 0 {
            serde_json::json!({})
        } else {
            serde_json::json!({
                "rows_read": read,
                "rows_rejected": counts.rejected.load(Ordering::Relaxed),
            })
        };
        let _ = ledger::finish_unpublished(
            client,
            load_id,
            status,
            Some(&*error.code().as_str()),
            Some(&error.to_string()),
            &stats,
        )
        .await;
    }
    result
}

/// What a snapshot load published.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    pub(crate) load_id: i64,
    /// One line of what was written, for people.
    pub summary: String,
    pub(crate) seconds: f64,
}

/// Loads `spec` (a snapshot kind) from `url` or its own source.
pub async fn run(
    ctx: &Context,
    spec: &Spec,
    url: Option<&str>,
    force: bool,
    cancel: impl Future<Output = ()>,
) -> Result<SnapshotReport, LoadError> {
    match spec.kind {
        Kind::Reference => {
            let r = reference::run(ctx, spec, url, force, cancel).await?;
            Ok(SnapshotReport {
                load_id: r.load_id,
                summary: format!(
                    "{} states, {} municipalities ({} with a SIAFI code)",
                    r.states, r.municipalities, r.with_siafi
                ),
                seconds: r.seconds,
            })
        }
        Kind::Places => {
            let r = places::run(ctx, spec, url, force, cancel).await?;
            Ok(SnapshotReport {
                load_id: r.load_id,
                summary: format!(
                    "{} places ({} new, {} changed, {} removed; {} of {} rows rejected)",
                    r.places, r.inserted, r.updated, r.removed, r.rejected, r.read
                ),
                seconds: r.seconds,
            })
        }
        Kind::Boundaries => {
            let r = boundaries::run(ctx, spec, url, force, cancel).await?;
            let written = if r.columns.is_empty() {
                "; geometry not written: this database has no PostGIS geometry columns".to_string()
            } else {
                format!("; wrote {}", r.columns.join(", "))
            };
            Ok(SnapshotReport {
                load_id: r.load_id,
                summary: format!(
                    "{} boundaries ({} changed; {} of {} features rejected){written}",
                    r.accepted, r.changed, r.rejected, r.read
                ),
                seconds: r.seconds,
            })
        }
        other => Err(LoadError::Internal(format!(
            "{} is a {} dataset, not a snapshot",
            spec.dataset,
            other.as_str()
        ))),
    }
}
