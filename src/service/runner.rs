//! The worker: claim → run the load → record the ending, up to
//! `queue.concurrency` loads at once. Each running job has a heartbeat on
//! the worker's control pool (a load holds its own connections in COPY for
//! minutes and can never starve it), which renews the lease, records
//! progress and the load's backend, and hears cancel requests and a lost
//! lease. Idle workers wake on `LISTEN carga_jobs` and poll as a fallback;
//! a maintenance task rescues expired leases and prunes history (and
//! expired console sessions).
//!
//! Shutdown (a future, so tests can fire it): stop claiming, let running
//! loads go on for `shutdown_grace_s`, then cancel them and release their
//! jobs so another worker starts them at once. A panic in a job fails that
//! job, never the worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use secrecy::SecretString;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::code::Code;
use crate::config::QueueSettings;
use crate::dataset::{self, Spec};
use crate::engine::pipeline::{self, Context, LoadError, LoadRequest, Outcome};
use crate::engine::source::Progress;
use crate::service::queue::{self, Beat, Claimed, Clock, Ending, JobFence, retry};

/// The channel jobs are announced on (see migrations/V4__jobs.sql).
pub const CHANNEL: &str = "carga_jobs";

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// What one claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOne {
    /// A job ran; its final word.
    Ran { job_id: i64, ending: String },
    /// Nothing was claimable.
    Empty,
}

/// One worker process's runner.
pub struct Runner {
    ctx: Context,
    /// Claims, heartbeats, endings and rescues: never shared with loads.
    control: Pool,
    /// For the LISTEN connection (outside any pool).
    listen: tokio_postgres::Config,
    specs: Vec<Spec>,
    nis_key: Option<SecretString>,
    worker: String,
    settings: QueueSettings,
    /// `http.preparing_poll_s` and `http.preparing_limit_s`.
    preparing_poll: Duration,
    preparing_limit: Duration,
    /// The queue's time: claims, leases, endings and rescues read it.
    clock: Clock,
}

/// What a finished load produced.
enum Done {
    Payments(pipeline::LoadReport),
    Snapshot(crate::engine::snapshot::SnapshotReport),
}

/// Why a running load was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Operator,
    LeaseLost,
    Shutdown,
    Timeout,
}

impl Runner {
    pub fn new(
        ctx: Context,
        control: Pool,
        listen: tokio_postgres::Config,
        specs: Vec<Spec>,
    ) -> Runner {
        let settings = ctx.settings.queue.clone();
        Runner {
            worker: settings.worker_id(),
            nis_key: ctx.settings.nis_key.clone(),
            preparing_poll: Duration::from_secs(ctx.settings.http.preparing_poll_s.max(1)),
            preparing_limit: Duration::from_secs(ctx.settings.http.preparing_limit_s),
            ctx,
            control,
            listen,
            specs,
            settings,
            clock: Clock::database(),
        }
    }

    /// This runner on `clock` (the app's, shared with its API and
    /// scheduler) instead of the database's unshifted one.
    pub fn with_clock(mut self, clock: Clock) -> Runner {
        self.clock = clock;
        self
    }

    /// The queue's time this runner decides by: tests advance it to let
    /// backoffs and leases pass without sleeping.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Where the database is (for another pool beside this runner's).
    pub fn database(&self) -> &tokio_postgres::Config {
        &self.listen
    }

    /// The loads' context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The pool claims, heartbeats and the scheduler use.
    pub fn control_pool(&self) -> &Pool {
        &self.control
    }

    /// Claims one job and runs it to its end (for tests and `--once`).
    pub async fn run_one(&self) -> Result<RunOne, RunnerError> {
        self.run_one_until(CancellationToken::new()).await
    }

    /// [`Runner::run_one`]; `release` cancels the load and gives the job
    /// back (SIGTERM on `carga worker --once`).
    pub async fn run_one_until(&self, release: CancellationToken) -> Result<RunOne, RunnerError> {
        let client = self.control.get().await?;
        let Some(job) = queue::claim(&**client, &self.worker, &self.settings, &self.clock).await?
        else {
            return Ok(RunOne::Empty);
        };
        drop(client);
        let job_id = job.id;
        let ending = self.execute(job, release).await;
        Ok(RunOne::Ran { job_id, ending })
    }

    /// Runs until `shutdown` completes, then drains (see the module doc).
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let wake = Arc::new(Notify::new());
        let stop_listening = CancellationToken::new();
        let listener = tokio::spawn(listen(
            self.listen.clone(),
            self.ctx.tls.clone(),
            wake.clone(),
            stop_listening.clone(),
        ));
        let maintenance = tokio::spawn(self.clone().maintain_forever());
        let semaphore = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        // Cancelled after the grace period: running jobs release themselves.
        let release = CancellationToken::new();
        let mut jobs = JoinSet::new();
        tokio::pin!(shutdown);
        tracing::info!(worker = %self.worker, concurrency = self.settings.concurrency, "worker started");
        'claiming: loop {
            while let Ok(permit) = semaphore.clone().try_acquire_owned() {
                match self.claim().await {
                    Ok(Some(job)) => {
                        let runner = self.clone();
                        let release = release.clone();
                        jobs.spawn(async move {
                            let _permit = permit;
                            runner.execute(job, release).await
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "claim failed; will retry");
                        break;
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => break 'claiming,
                () = wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(self.settings.poll_interval_ms)) => {}
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
            }
        }
        tracing::info!(
            running = jobs.len(),
            grace_s = self.settings.shutdown_grace_s,
            "shutting down: no new claims"
        );
        let grace = tokio::time::sleep(Duration::from_secs(self.settings.shutdown_grace_s));
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = jobs.join_next() => if next.is_none() { break },
                () = &mut grace, if !release.is_cancelled() => {
                    tracing::warn!(running = jobs.len(), "grace period over: cancelling and releasing running jobs");
                    release.cancel();
                }
            }
        }
        stop_listening.cancel();
        maintenance.abort();
        let _ = listener.await;
        tracing::info!("worker stopped");
    }

    async fn claim(&self) -> Result<Option<Claimed>, RunnerError> {
        let client = self.control.get().await?;
        Ok(queue::claim(&**client, &self.worker, &self.settings, &self.clock).await?)
    }

    /// Rescues expired leases and sweeps dead ledger rows, once.
    pub async fn maintain(&self) -> Result<Vec<queue::Rescued>, RunnerError> {
        let client = self.control.get().await?;
        let rescued = queue::rescue(&**client, &self.clock).await?;
        match crate::engine::load::ledger::abandon_dead(&**client).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                loads = n,
                "ledger: attempts whose process is gone marked abandoned"
            ),
            Err(e) => {
                tracing::warn!(error = %crate::db::describe_db(&e), "ledger sweep failed")
            }
        }
        if !rescued.is_empty() {
            crate::telemetry::record_rescues(rescued.len());
        }
        for r in &rescued {
            tracing::warn!(
                job_id = r.id,
                attempt = r.attempt,
                state = %r.state,
                session_ended = r.terminated,
                "rescue: lease expired; job handed back"
            );
        }
        Ok(rescued)
    }

    async fn maintain_forever(self: Arc<Self>) {
        let every = Duration::from_secs(self.settings.rescue_interval_s.max(1));
        let mut ticks: u64 = 0;
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.maintain().await {
                tracing::warn!(error = %e, "rescue failed");
            }
            ticks += 1;
            if ticks % 240 == 1 {
                match self.control.get().await {
                    Ok(client) => {
                        match queue::prune(&**client, &self.settings).await {
                            Ok(0) => {}
                            Ok(n) => {
                                tracing::info!(jobs = n, "pruned finished jobs past retention")
                            }
                            Err(e) => tracing::warn!(error = %e, "prune failed"),
                        }
                        // Sign-ins prune too; this covers a console nobody signs in to.
                        if let Err(e) = crate::service::sessions::prune(&**client).await {
                            tracing::warn!(error = %e, "pruning console sessions failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "prune failed"),
                }
            }
        }
    }

    /// Runs a claimed job and records its ending. A panic inside the load
    /// fails the job. Returns the ending's name.
    async fn execute(&self, job: Claimed, release: CancellationToken) -> String {
        let span = tracing::info_span!("job", job_id = job.id, dataset = %job.dataset, period = %job.period, attempt = job.attempt);
        self.execute_in_span(job, release).instrument(span).await
    }

    async fn execute_in_span(&self, job: Claimed, release: CancellationToken) -> String {
        let spec = self
            .specs
            .iter()
            .find(|s| s.dataset == job.dataset)
            .cloned();
        let Some(spec) = spec else {
            let ending = Ending::Fail {
                code: Code::UnknownDataset,
                message: format!("no dataset spec named {:?} on this worker", job.dataset),
            };
            return self.record(&job, &ending, None).await;
        };
        let snapshot = spec.kind.is_snapshot();
        let url = match job
            .url
            .as_ref()
            .map(|u| u.open(self.nis_key.as_ref()))
            .transpose()
        {
            Ok(url) => url,
            Err(e) => {
                let ending = Ending::Fail {
                    code: Code::UrlUnsealable,
                    message: e.to_string(),
                };
                return self.record(&job, &ending, None).await;
            }
        };
        let request = LoadRequest {
            spec: spec.clone(),
            period: job.period,
            url,
            force: job.force,
            // A source URL a webhook named must stay on the dataset's
            // allow-list through every redirect.
            redirect_guard: (job.enqueued_by == "webhook" && job.url.is_some())
                .then(|| crate::engine::source::allow::redirect_guard(&spec)),
        };
        let progress = Arc::new(Progress::default());
        let fence = Arc::new(JobFence::new(job.clone()));
        let cancel = CancellationToken::new();
        let reason: Arc<Mutex<Option<StopReason>>> = Arc::new(Mutex::new(None));
        let stop = |why: StopReason| {
            if let Ok(mut r) = reason.lock() {
                r.get_or_insert(why);
            }
            cancel.cancel();
        };
        let heartbeat = self.heartbeat(
            job.clone(),
            progress.clone(),
            fence.clone(),
            cancel.clone(),
            reason.clone(),
        );
        let load = {
            let ctx = self.ctx.clone();
            let nis_key = self.nis_key.clone();
            let fence = fence.clone();
            let progress = progress.clone();
            let cancel = cancel.clone();
            tokio::spawn(
                async move {
                    if snapshot {
                        // States and municipalities, or places: idempotent
                        // upserts in one transaction, completed after it (at
                        // least once, harmless); the same heartbeat, timeout
                        // and stops.
                        let url = request.url.as_deref();
                        return crate::engine::snapshot::run(
                            &ctx,
                            &request.spec,
                            url,
                            request.force,
                            cancel.cancelled_owned(),
                        )
                        .await
                        .map(Done::Snapshot);
                    }
                    pipeline::run_with(
                        &ctx,
                        &request,
                        nis_key,
                        progress,
                        cancel.cancelled_owned(),
                        Some(&*fence),
                    )
                    .await
                    .map(Done::Payments)
                }
                .instrument(tracing::Span::current()),
            )
        };
        tokio::pin!(load);
        let timeout = tokio::time::sleep(Duration::from_secs(self.settings.job_timeout_s));
        tokio::pin!(timeout);
        let result = loop {
            tokio::select! {
                result = &mut load => break result,
                () = release.cancelled(), if !cancel.is_cancelled() => stop(StopReason::Shutdown),
                () = &mut timeout, if !cancel.is_cancelled() => stop(StopReason::Timeout),
            }
        };
        heartbeat.cancel();
        let why = reason.lock().ok().and_then(|r| *r);
        let ending = match result {
            Err(join) => Some(Ending::Fail {
                code: Code::Panic,
                message: format!("the load panicked: {}", panic_text(join)),
            }),
            Ok(Ok(Done::Snapshot(report))) => Some(Ending::Succeeded {
                load_id: report.load_id,
                outcome: "published",
            }),
            Ok(Ok(Done::Payments(report))) => match report.outcome {
                // Completed by the fence inside the publish transaction.
                Outcome::Published => {
                    crate::telemetry::record_load(&job.dataset, &report);
                    crate::telemetry::record_attempt(&job.dataset, "published");
                    tracing::info!(
                        job_id = job.id,
                        load_id = report.load_id,
                        rows = report.rows_loaded,
                        "job succeeded: published"
                    );
                    return "published".into();
                }
                Outcome::Unchanged => Some(Ending::Succeeded {
                    load_id: report.load_id,
                    outcome: "unchanged",
                }),
            },
            Ok(Err(LoadError::LeaseLost { .. })) => None,
            Ok(Err(LoadError::Cancelled)) => match why {
                Some(StopReason::Operator) => Some(Ending::Cancelled {
                    message: "cancelled by an operator; the load was rolled back".into(),
                }),
                Some(StopReason::Shutdown) => Some(Ending::Release),
                Some(StopReason::LeaseLost) => None,
                Some(StopReason::Timeout) | None => Some(self.retry_or_fail(
                    &job,
                    Code::JobTimeout,
                    format!(
                        "the attempt ran past queue.job_timeout_s ({} s) and was cancelled",
                        self.settings.job_timeout_s
                    ),
                    None,
                )),
            },
            Ok(Err(error)) => Some(self.judge(&job, &error)),
        };
        match ending {
            Some(ending) => {
                let answered = progress
                    .source_status
                    .load(std::sync::atomic::Ordering::Relaxed);
                self.record(&job, &ending, (answered != 0).then_some(answered))
                    .await
            }
            None => {
                tracing::warn!(
                    job_id = job.id,
                    attempt = job.attempt,
                    "lease_lost: this attempt no longer owns the job; nothing recorded"
                );
                "lease_lost".into()
            }
        }
    }

    /// What a load error means for the job.
    fn judge(&self, job: &Claimed, error: &LoadError) -> Ending {
        let code = error.code();
        let message = error.to_string();
        if let LoadError::Busy { .. } = error {
            // Another load of the month runs (an inline `carga run`, or a
            // stale session about to be rescued): wait, without spending an
            // attempt.
            return Ending::Wait {
                after: Duration::from_secs(self.settings.retry_base_s.max(1) * 2),
                code,
                message,
            };
        }
        let slow = Duration::from_secs(self.settings.not_found_retry_s);
        match retry::classify(error, job.previous_code.as_deref()) {
            retry::Verdict::Retry => self.retry_or_fail(job, code, message, error.retry_after()),
            retry::Verdict::NotFound => Ending::NotFound {
                after: slow,
                code,
                message,
            },
            retry::Verdict::Preparing => self.preparing(job, code, error.retry_after()),
            // The Portal has served broken files for a day or two and then
            // fixed them: the slow cadence, until the dataset's deadline.
            retry::Verdict::Broken => Ending::NotFound {
                after: slow,
                message: format!(
                    "{message} (the source may fix the file: asking again every {} until the dataset's deadline)",
                    human_duration(slow)
                ),
                code,
            },
            retry::Verdict::Fatal => Ending::Fail { code, message },
        }
    }

    /// The source answered 202 (preparing the file): ask again after its
    /// `Retry-After` (else `http.preparing_poll_s`), without spending an
    /// attempt, for up to `http.preparing_limit_s` since the first 202;
    /// past that, the slow cadence of a month not yet published.
    fn preparing(&self, job: &Claimed, code: Code, retry_after: Option<Duration>) -> Ending {
        let waited = job.preparing_for.unwrap_or(Duration::ZERO);
        let limit = self.preparing_limit;
        if waited >= limit {
            let slow = Duration::from_secs(self.settings.not_found_retry_s);
            return Ending::NotFound {
                after: slow,
                message: format!(
                    "the source was still preparing the file (HTTP 202) after {} (http.preparing_limit_s); asking again in {}",
                    human_duration(waited),
                    human_duration(slow)
                ),
                code,
            };
        }
        let after = retry_after
            .unwrap_or(self.preparing_poll)
            .min(retry::retry_after_ceiling(&self.settings))
            .max(Duration::from_secs(1));
        Ending::Wait {
            after,
            message: format!(
                "waiting for the Portal to prepare the file (HTTP 202): asking again in {}, {} of {} waited",
                human_duration(after),
                human_duration(waited),
                human_duration(limit)
            ),
            code,
        }
    }

    fn retry_or_fail(
        &self,
        job: &Claimed,
        code: Code,
        message: String,
        retry_after: Option<Duration>,
    ) -> Ending {
        let seed = (job.id as u64) << 16 ^ job.attempt as u64;
        let ceiling = retry::retry_after_ceiling(&self.settings);
        let mut message = message;
        if let Some(asked) = retry_after.filter(|asked| *asked > ceiling) {
            message.push_str(&format!(
                " (the source's Retry-After asked for {} s; capped at queue.retry_max_s = {} s)",
                asked.as_secs(),
                ceiling.as_secs()
            ));
        }
        Ending::Retry {
            after: retry::backoff(&self.settings, job.attempt, retry_after, seed),
            code,
            message,
        }
    }

    async fn record(&self, job: &Claimed, ending: &Ending, source_status: Option<u16>) -> String {
        let name = match ending {
            Ending::Succeeded { outcome, .. } => outcome,
            Ending::Retry { .. } => "retry",
            Ending::NotFound { .. } => "not_found",
            Ending::Fail { .. } => "failed",
            Ending::Cancelled { .. } => "cancelled",
            Ending::Release => "released",
            Ending::Wait { .. } => "waiting",
        };
        // The ending must not be lost to a passing database error.
        for attempt in 0..5u32 {
            let written = match self.control.get().await {
                Ok(client) => queue::finish(&**client, job, ending, source_status, &self.clock)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match written {
                Ok(true) => {
                    crate::telemetry::record_attempt(&job.dataset, name);
                    match ending {
                        Ending::Fail { code, .. }
                        | Ending::Wait { code, .. }
                        | Ending::Retry { code, .. }
                        | Ending::NotFound { code, .. } => {
                            tracing::warn!(job_id = job.id, attempt = job.attempt, ending = name, code = %code, "job attempt ended");
                        }
                        _ => tracing::info!(
                            job_id = job.id,
                            attempt = job.attempt,
                            ending = name,
                            "job attempt ended"
                        ),
                    }
                    return name.into();
                }
                Ok(false) => {
                    tracing::warn!(
                        job_id = job.id,
                        "lease_lost: the job was rescued before its ending could be recorded"
                    );
                    return "lease_lost".into();
                }
                Err(e) => {
                    tracing::warn!(job_id = job.id, error = %e, "failed to record the job's ending; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        // Left running: the rescuer hands it back once the lease expires.
        "unrecorded".into()
    }

    /// Spawns the job's heartbeat; returns a token that stops it (and that
    /// it cancels itself on a lost lease, so the caller's select wakes).
    fn heartbeat(
        &self,
        job: Claimed,
        progress: Arc<Progress>,
        fence: Arc<JobFence>,
        cancel: CancellationToken,
        reason: Arc<Mutex<Option<StopReason>>>,
    ) -> CancellationToken {
        let done = CancellationToken::new();
        let control = self.control.clone();
        let settings = self.settings.clone();
        let clock = self.clock.clone();
        let every = Duration::from_secs(self.settings.heartbeat_s.max(1));
        let stopper = done.clone();
        let lease = Duration::from_secs(self.settings.lease_s.max(1));
        tokio::spawn(async move {
            let mut recorded_pid = None;
            // The last renewal the database confirmed, on this process's
            // monotonic clock: once it is older than a lease, the job is
            // (or is about to be) someone else's.
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = stopper.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                    () = fence.session_known.notified() => {}
                }
                let pid = fence.backend_pid();
                let snapshot = progress_snapshot(&progress);
                let beat = match control.get().await {
                    Ok(client) => {
                        queue::heartbeat(&**client, &job, &settings, &clock, &snapshot, pid)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                let why = match beat {
                    Ok(Beat::Held) => {
                        recorded_pid = pid.or(recorded_pid);
                        renewed = tokio::time::Instant::now();
                        continue;
                    }
                    Ok(Beat::CancelRequested) => StopReason::Operator,
                    Ok(Beat::Lost) => StopReason::LeaseLost,
                    Err(e) if renewed.elapsed() < lease => {
                        tracing::warn!(job_id = job.id, error = %e, "heartbeat failed");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(job_id = job.id, error = %e, "no heartbeat got through for a whole lease");
                        StopReason::LeaseLost
                    }
                };
                if let Ok(mut r) = reason.lock() {
                    r.get_or_insert(why);
                }
                if why == StopReason::LeaseLost {
                    tracing::warn!(
                        job_id = job.id,
                        attempt = job.attempt,
                        "lease_lost: stopping the load"
                    );
                }
                cancel.cancel();
                return;
            }
        });
        done
    }
}

fn panic_text(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into()),
        Err(join) => join.to_string(),
    }
}

/// The progress a heartbeat records.
fn progress_snapshot(progress: &Progress) -> queue::Progress {
    use std::sync::atomic::Ordering::Relaxed;
    queue::Progress {
        stage: Some(progress.stage_name().to_string()),
        bytes: Some(progress.bytes.load(Relaxed)),
        bytes_ahead: Some(progress.bytes_ahead.load(Relaxed)).filter(|b| *b > 0),
        total_bytes: Some(progress.total_bytes.load(Relaxed)),
        rows: Some(progress.rows.load(Relaxed)),
        rows_rejected: Some(progress.rows_rejected.load(Relaxed)),
    }
}

/// Holds a LISTEN connection and wakes the worker on every notification,
/// reconnecting (with a pause) when it drops.
async fn listen(
    config: tokio_postgres::Config,
    tls: crate::db::Tls,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let connected = config.connect(tls.clone()).await;
        match connected {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async { client.batch_execute(&format!("LISTEN {CHANNEL}")).await };
                // The LISTEN only completes while the connection is polled.
                let (listened, rest) = {
                    tokio::pin!(listening);
                    loop {
                        tokio::select! {
                            r = &mut listening => break (r, false),
                            m = messages.next() => if m.is_none() { break (Ok(()), true) },
                        }
                    }
                };
                if let Err(e) = listened {
                    tracing::warn!(error = %crate::db::describe_db(&e), "LISTEN failed");
                } else if !rest {
                    // Any job queued while we were away: look once.
                    wake.notify_one();
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            message = messages.next() => match message {
                                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => wake.notify_one(),
                                Some(Ok(_)) => {}
                                Some(Err(e)) => {
                                    tracing::warn!(error = %crate::db::describe_db(&e), "LISTEN connection lost");
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                }
                drop(client);
            }
            Err(e) => {
                tracing::warn!(error = %crate::db::describe_db(&e), "LISTEN connection failed")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Loads the dataset specs a worker runs.
pub fn specs(settings: &crate::config::Settings) -> Result<Vec<Spec>, dataset::SpecError> {
    dataset::load_all(&settings.load.jobs_dir)
}

/// `90 s`, `12 min`, `6 h`: for messages.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 7_200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3_600)
    }
}
