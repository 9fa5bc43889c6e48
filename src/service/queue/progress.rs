//! A running job's progress as its heartbeat records it in
//! `carga.jobs.progress` (jsonb) and the read model reads it back: one
//! struct, so the keys are named once. The runner fills it from the load's
//! counters; nothing here computes a rate or formats a figure (that is
//! [`super::ProgressView`] and the pages that show it).

use serde::{Deserialize, Serialize};
use tokio_postgres::types::Json;

/// The snapshot a heartbeat writes. Every key is optional: a claimed job
/// holds `{}` until its first heartbeat, and an ending adds only
/// `"stage": "done"`. Absent keys are left out of the JSON, and the fields
/// are declared in the order `serde_json` sorts a map's keys, so the API
/// serves the same bytes it did when this was a `serde_json::Value`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Bytes downloaded so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// A ranged download's bytes fetched beyond `bytes` (ranges in flight
    /// or waiting for an earlier one); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_ahead: Option<u64>,
    /// Rows parsed so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Rows rejected so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_rejected: Option<u64>,
    /// `open`, `stream`, `aggregate`, `publish`; `done` once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The download's size, 0 while unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
}

impl Progress {
    /// The value bound to a statement's jsonb parameter.
    pub(crate) fn as_json(&self) -> Json<&Progress> {
        Json(self)
    }

    /// Reads the jsonb column back. A value that is not this shape (only a
    /// hand-edited row could hold one) reads as no progress rather than
    /// failing the job's page.
    pub(crate) fn from_json(value: serde_json::Value) -> Progress {
        serde_json::from_value(value).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a job's progress is not the heartbeat's shape; shown as none");
            Progress::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_the_heartbeat_json_did() {
        let full = Progress {
            stage: Some("stream".into()),
            bytes: Some(3),
            bytes_ahead: None,
            total_bytes: Some(12),
            rows: Some(120),
            rows_rejected: Some(1),
        };
        let before = serde_json::json!({
            "stage": "stream", "bytes": 3, "total_bytes": 12, "rows": 120, "rows_rejected": 1,
        });
        let text = serde_json::to_string(&full).expect("json");
        assert_eq!(text, serde_json::to_string(&before).expect("json"));
        assert_eq!(Progress::from_json(before), full);
        // A ranged download's bytes fetched ahead, in key order.
        let ranged = Progress {
            bytes_ahead: Some(5),
            ..full.clone()
        };
        assert_eq!(
            serde_json::to_string(&ranged).expect("json"),
            r#"{"bytes":3,"bytes_ahead":5,"rows":120,"rows_rejected":1,"stage":"stream","total_bytes":12}"#
        );
        for partial in [serde_json::json!({}), serde_json::json!({"stage": "done"})] {
            let read = Progress::from_json(partial.clone());
            assert_eq!(serde_json::to_value(&read).expect("json"), partial);
        }
        assert_eq!(
            Progress::from_json(serde_json::json!({"bytes": "many"})),
            Progress::default()
        );
    }
}
