//! The job's side of a load: the fenced completion the pipeline runs in
//! its publish transaction, and the load session it hears about (for the
//! heartbeat to record, so a rescuer can end a frozen worker's session).

use std::sync::atomic::{AtomicI32, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Claimed;
use crate::engine::pipeline::{LoadError, PublishStep};

/// The completion of one claimed attempt, guarded by (job, attempt, lease).
pub struct JobFence {
    job: Claimed,
    /// The load session's backend pid, 0 until known.
    backend_pid: AtomicI32,
    /// Woken when the pid becomes known (the heartbeat records it at once).
    pub session_known: tokio::sync::Notify,
}

impl JobFence {
    pub fn new(job: Claimed) -> JobFence {
        JobFence {
            job,
            backend_pid: AtomicI32::new(0),
            session_known: tokio::sync::Notify::new(),
        }
    }

    /// The load session's backend, once the pipeline opened it.
    pub fn backend_pid(&self) -> Option<i32> {
        match self.backend_pid.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// How the load's session is named in `pg_stat_activity`.
    pub fn session_name(job_id: i64, attempt: i32) -> String {
        format!("carga job {job_id} attempt {attempt}")
    }
}

impl PublishStep for JobFence {
    fn application_name(&self) -> String {
        Self::session_name(self.job.id, self.job.attempt)
    }

    fn load_session(&self, backend_pid: i32) {
        self.backend_pid.store(backend_pid, Ordering::Relaxed);
        self.session_known.notify_one();
    }

    fn before_commit<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        load_id: i64,
    ) -> BoxFuture<'a, Result<(), LoadError>> {
        async move {
            let held = super::complete_in(
                tx,
                self.job.id,
                self.job.attempt,
                &self.job.lease_token,
                load_id,
            )
            .await?;
            if held {
                Ok(())
            } else {
                tracing::warn!(
                    job_id = self.job.id,
                    attempt = self.job.attempt,
                    "lease_lost: another worker owns this job now; rolling the load back"
                );
                Err(LoadError::LeaseLost {
                    job_id: self.job.id,
                    attempt: self.job.attempt,
                })
            }
        }
        .boxed()
    }
}
