//! The durable job queue in `carga.jobs`: enqueue (deduplicated by the
//! database), claim (one statement, `FOR UPDATE SKIP LOCKED`), heartbeats,
//! the fenced completion, retries, cancellation, the rescuer and history.
//! The state machine is drawn in ARCHITECTURE.md ("Jobs"). Every time is the
//! database's `now()`, shifted by a [`Clock`]'s skew (zero in production,
//! advanced by tests); no statement here trusts a worker's clock.
//!
//! This module owns the jobs tables; it never runs a load (that is
//! `runner.rs`), and never decides what an error means beyond
//! [`retry::classify`].

//! Where things are, by what they do to a job:
//!
//! - `state.rs`: [`JobState`], the six states named once;
//! - `clock.rs`: [`Clock`], the queue's "now" (the database's, plus a skew
//!   tests advance instead of sleeping);
//! - `enqueue.rs`: [`NewJob`], [`Trigger`], [`Priority`], [`enqueue`];
//! - `deliveries.rs`: webhook deliveries and the job each resolved to;
//! - `lease.rs`: [`claim`], `heartbeat`, [`finish`] and `complete_in`
//!   (guarded by the lease token; `fence.rs` runs the last in a publish);
//! - `maintenance.rs`: the rescuer ([`rescue`]) and the cleaner ([`prune`]);
//! - `operator.rs`: [`cancel`] and [`retry()`];
//! - `progress.rs`: [`Progress`], the snapshot a heartbeat records;
//! - `read.rs`: the read model ([`JobView`], `get`, `list`, `depth`);
//! - `retry.rs`: what an ending's code means (retry, wait, fail), backoff;
//! - `sealed.rs`: a job URL's secrets, sealed at rest.

mod clock;
mod deliveries;
mod enqueue;
pub mod fence;
mod lease;
mod maintenance;
mod operator;
mod progress;
mod read;
pub mod retry;
pub mod sealed;
pub mod state;

pub use clock::Clock;
pub(crate) use deliveries::{delivered_job, record_delivery};
pub use enqueue::{Enqueued, NewJob, Priority, Trigger, enqueue};
pub use fence::JobFence;
pub(crate) use lease::{Beat, complete_in, heartbeat};
pub use lease::{Claimed, Ending, claim, finish};
pub use maintenance::{Rescued, prune, rescue};
pub use operator::{Cancelled, cancel, retry};
pub use progress::Progress;
pub use read::{AttemptView, JobView, ProgressView};
pub(crate) use read::{ListFilter, database_now, depth, get, list};
pub use sealed::{JobUrl, SealError};
pub use state::{JobState, STATES};

use crate::dataset::Period;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("database error: {}", crate::db::describe_db(.0))]
    Db(tokio_postgres::Error),
    #[error("job {0} not found")]
    NotFound(i64),
    #[error("job {id} is {state}: {action} applies only to {allowed}")]
    WrongState {
        id: i64,
        state: JobState,
        action: &'static str,
        allowed: &'static str,
    },
    #[error("the enqueue of {dataset} {period} kept racing with other writers")]
    Contended { dataset: String, period: Period },
    /// The request asks for more than the pending job of its month will do
    /// (`--force`, another URL) and that job cannot take it on.
    #[error("job {id} is already {state} for {dataset} {period}: {reason}")]
    Conflict {
        id: i64,
        state: JobState,
        dataset: String,
        period: Period,
        reason: String,
    },
}

impl From<tokio_postgres::Error> for QueueError {
    fn from(e: tokio_postgres::Error) -> Self {
        QueueError::Db(e)
    }
}

pub type Result<T> = std::result::Result<T, QueueError>;
