//! Snapshot loads: datasets with no period (`kind = "reference"`, the
//! states and municipalities; `kind = "places"`, CRAS; `kind =
//! "boundaries"`, their PostGIS geometry), each loaded whole
//! in one transaction, by `carga run` or by a worker, on demand or on a
//! schedule.

pub mod boundaries;
pub mod places;
pub mod reference;

use crate::dataset::{Kind, Spec};
use crate::engine::pipeline::{Context, LoadError};

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
