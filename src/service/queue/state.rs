//! A job's state: the one place that names the six states (the SQL in
//! this module's siblings spells the same words; `JobState::parse` is how
//! Rust reads them back). See ARCHITECTURE.md, "Jobs", for the machine.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Available,
    Running,
    Retryable,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    /// Every state, in the machine's order.
    pub const ALL: [JobState; 6] = [
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Waiting to run (now or after its backoff).
    pub fn is_pending(self) -> bool {
        matches!(self, JobState::Available | JobState::Retryable)
    }

    /// Ended for good (until an operator retries it).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Every state a job can be in, as text (see [`JobState`]).
pub const STATES: [&str; 6] = [
    JobState::Available.as_str(),
    JobState::Running.as_str(),
    JobState::Retryable.as_str(),
    JobState::Succeeded.as_str(),
    JobState::Failed.as_str(),
    JobState::Cancelled.as_str(),
];

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl<'a> tokio_postgres::types::FromSql<'a> for JobState {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = <&str as tokio_postgres::types::FromSql>::from_sql(ty, raw)?;
        JobState::parse(text).ok_or_else(|| format!("unknown job state {text:?}").into())
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

impl tokio_postgres::types::ToSql for JobState {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.as_str().to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <&str as tokio_postgres::types::ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_serialise_as_their_text() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_string(&state).expect("json"),
                format!("\"{state}\"")
            );
        }
        assert_eq!(JobState::parse("waiting"), None);
    }
}
