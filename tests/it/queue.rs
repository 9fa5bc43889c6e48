//! The job queue and the worker, in process, against a real PostgreSQL and
//! loopback HTTP sources: deduplication, priority, the fenced completion,
//! retries (Retry-After, the 404 cadence and its deadline), cancellation
//! of a running COPY, leases and the rescuer. Process-level faults (kill,
//! stop, SIGTERM) are in tests/workers.rs.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use carga::service::queue::{self, Priority};
use carga::service::runner::RunOne;
use common::{Reply, ScriptedServer, TestApp, fast_queue, sample_zip};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_enqueues_make_one_job() {
    let app = Arc::new(TestApp::new().await);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.enqueue("2024-10", "http://127.0.0.1:9/x.zip").await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut new = 0;
    for task in tasks {
        let enqueued = task.await.expect("task");
        ids.insert(enqueued.id);
        new += usize::from(enqueued.new);
    }
    assert_eq!(ids.len(), 1, "one job id for all: {ids:?}");
    assert_eq!(new, 1, "exactly one enqueue was new");
    let jobs: i64 = app
        .client()
        .await
        .query_one("SELECT count(*) FROM carga.jobs", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(jobs, 1);
}

#[tokio::test]
async fn a_fresh_month_runs_before_a_backfill() {
    let app = TestApp::new().await;
    for month in 1..=6 {
        app.enqueue_with(&format!("2023-{month:02}"), None, Priority::Backfill)
            .await;
    }
    let fresh = app.enqueue_with("2024-10", None, Priority::Fresh).await;
    // The same month asked again by an operator keeps its one job.
    let again = app.enqueue_with("2024-10", None, Priority::Backfill).await;
    assert_eq!((again.id, again.new), (fresh.id, false));
    // A backfill month asked for by an operator moves ahead.
    let promoted = app.enqueue_with("2023-04", None, Priority::Fresh).await;
    assert!(!promoted.new);
    let settings = app.ctx.settings.queue.clone();
    let client = app.client().await;
    let first = queue::claim(&**client, "w", &settings, &app.clock)
        .await
        .expect("claim");
    let second = queue::claim(&**client, "w", &settings, &app.clock)
        .await
        .expect("claim");
    let third = queue::claim(&**client, "w", &settings, &app.clock)
        .await
        .expect("claim");
    // Both are fresh now; between equals, the older enqueue goes first.
    assert_eq!(first.map(|j| j.id), Some(promoted.id));
    assert_eq!(second.map(|j| j.id), Some(fresh.id));
    assert_eq!(
        third.map(|j| j.period.to_string()).as_deref(),
        Some("2023-01")
    );
}

#[tokio::test]
async fn a_job_runs_publishes_and_is_completed_in_the_same_transaction() {
    let app = TestApp::with_settings(fast_queue).await;
    let server =
        ScriptedServer::start("a.zip", vec![Reply::Body(sample_zip("2024-10", 2_000, 1))]).await;
    let job = app.enqueue("2024-10", &server.url).await;
    let runner = app.runner();
    let ran = runner.run_one().await.expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "published".into()
        }
    );
    let row = app
        .client()
        .await
        .query_one(
            "SELECT j.state, j.outcome, j.attempt, l.status, j.load_id = l.id,
                    j.finished_at = l.finished_at OR l.finished_at IS NULL
             FROM carga.jobs j JOIN carga.loads l ON l.id = j.load_id WHERE j.id = $1",
            &[&job.id],
        )
        .await
        .expect("job");
    let (state, outcome, attempt, status): (String, String, i32, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        (state.as_str(), outcome.as_str(), attempt, status.as_str()),
        ("succeeded", "published", 1, "published")
    );
    // The same file again: the engine sees it unchanged; the job succeeds
    // as `unchanged` without publishing.
    let again = app.enqueue("2024-10", &server.url).await;
    assert!(again.new, "the first job is finished, so this one is new");
    let ran = runner.run_one().await.expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: again.id,
            ending: "unchanged".into()
        }
    );
    assert_eq!(runner.run_one().await.expect("run"), RunOne::Empty);
}

/// A worker whose lease was taken over cannot publish: the fence in its
/// publish transaction finds another lease, and the whole load rolls back.
#[tokio::test]
async fn a_load_that_lost_its_lease_cannot_publish() {
    let app = TestApp::with_settings(fast_queue).await;
    let settings = app.ctx.settings.queue.clone();
    let server =
        ScriptedServer::start("a.zip", vec![Reply::Body(sample_zip("2024-10", 500, 2))]).await;
    let enqueued = app.enqueue("2024-10", &server.url).await;
    let client = app.client().await;
    let stale = queue::claim(&**client, "frozen", &settings, &app.clock)
        .await
        .expect("claim")
        .expect("a job");
    // The lease expires; the rescuer hands the job back; another worker
    // claims it (a new attempt and lease token).
    app.clock.advance(Duration::from_secs(settings.lease_s + 1));
    let rescued = queue::rescue(&**client, &app.clock).await.expect("rescue");
    assert_eq!(rescued.len(), 1);
    assert!(
        queue::rescue(&**client, &app.clock)
            .await
            .expect("rescue")
            .is_empty(),
        "rescued once"
    );
    // Due at once: the expired lease was its wait.
    let current = queue::claim(&**client, "alive", &settings, &app.clock)
        .await
        .expect("claim")
        .expect("the job again");
    assert_eq!(current.attempt, 2);
    // The stale attempt now runs its load to the end.
    let spec =
        carga::dataset::find(&app.ctx.settings.load.jobs_dir, "novo-bolsa-familia").expect("spec");
    let request = carga::engine::pipeline::LoadRequest {
        spec,
        period: stale.period,
        url: stale.url.as_ref().map(|u| u.shown.clone()),
        force: false,
        redirect_guard: None,
    };
    let fence = queue::JobFence::new(stale);
    let before = app.visible_state().await;
    let err = carga::engine::pipeline::run_with(
        &app.ctx,
        &request,
        Some(secrecy::SecretString::from(common::NIS_KEY)),
        Arc::new(carga::engine::source::Progress::default()),
        std::future::pending(),
        Some(&fence),
    )
    .await
    .expect_err("fenced");
    assert_eq!(err.code(), "lease_lost", "{err}");
    assert_eq!(app.visible_state().await, before, "nothing was published");
    let published: i64 = client
        .query_one("SELECT count(*) FROM carga.loads WHERE status = 'published' AND program_code IS NOT NULL", &[])
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(published, 0);
    // The job still belongs to the current attempt.
    let (state, attempt): (String, i32) = {
        let r = client
            .query_one(
                "SELECT state, attempt FROM carga.jobs WHERE id = $1",
                &[&enqueued.id],
            )
            .await
            .expect("job");
        (r.get(0), r.get(1))
    };
    assert_eq!((state.as_str(), attempt), ("running", 2));
    let _ = current;
}

/// A `Retry-After` is the queue's wait, not the worker's: the attempt ends
/// after one request, the job is not run before the time the source asked
/// for, and is run once the queue's clock passes it.
#[tokio::test]
async fn retry_after_is_honoured_then_the_job_succeeds() {
    let app = TestApp::with_settings(|s| {
        fast_queue(s);
        s.queue.retry_max_s = 3_600;
    })
    .await;
    let server = ScriptedServer::start(
        "a.zip",
        vec![
            Reply::Status(503, "Retry-After: 600"),
            Reply::Body(sample_zip("2024-10", 300, 3)),
        ],
    )
    .await;
    let job = app.enqueue("2024-10", &server.url).await;
    let runner = app.runner();
    // The wait belongs to the queue: the attempt ends at once, freeing the
    // worker's slot, after one request. (The bound only has to tell "at
    // once" from the ten minutes asked for.)
    let ran = tokio::time::timeout(Duration::from_secs(60), runner.run_one())
        .await
        .expect("the worker waited out the Retry-After itself")
        .expect("run");
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "retry".into()
        }
    );
    let (state, code, wait): (String, String, f64) = {
        let r = app
            .job_row(
                job.id,
                "state, error_code, extract(epoch FROM scheduled_at - now())::float8",
            )
            .await;
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (state.as_str(), code.as_str()),
        ("retryable", "http_status_503")
    );
    assert!(
        wait > 590.0 && wait <= 600.0,
        "Retry-After: 600 is honoured (next attempt in {wait:.2} s)"
    );
    // Not before its time: ten seconds short of it, nothing is due.
    app.clock.advance(Duration::from_secs(590));
    assert_eq!(runner.run_one().await.expect("run"), RunOne::Empty);
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Past it, the job runs and publishes.
    app.clock.advance(Duration::from_secs(11));
    let ran = runner.run_one().await.expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "published".into()
        }
    );
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    let attempts: Vec<(i32, Option<String>)> = app
        .client()
        .await
        .query(
            "SELECT attempt, error_code FROM carga.job_attempts WHERE job_id = $1 ORDER BY attempt",
            &[&job.id],
        )
        .await
        .expect("attempts")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(attempts, [(1, Some("http_status_503".into())), (2, None)]);
}

/// A source cannot park a job for years: `Retry-After` (seconds or an HTTP
/// date) is capped at `queue.retry_max_s`, and the job's error says so.
#[tokio::test]
async fn retry_after_has_a_ceiling() {
    let app = TestApp::with_settings(fast_queue).await;
    for (n, header) in [
        "Retry-After: 99999999999",
        "Retry-After: Fri, 31 Dec 9999 23:59:59 GMT",
    ]
    .into_iter()
    .enumerate()
    {
        let server = ScriptedServer::start("a.zip", vec![Reply::Status(503, header)]).await;
        let period = format!("2024-0{}", n + 1);
        let job = app.enqueue(&period, &server.url).await;
        let ran = app.runner().run_one().await.expect("run");
        assert_eq!(
            ran,
            RunOne::Ran {
                job_id: job.id,
                ending: "retry".into()
            }
        );
        let r = app
            .job_row(
                job.id,
                "state, error, extract(epoch FROM scheduled_at - now())::float8",
            )
            .await;
        let (state, error, wait): (String, String, f64) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(state, "retryable");
        assert!(wait <= 2.0, "{header}: parked for {wait} s");
        assert!(
            error.contains("capped at queue.retry_max_s = 2 s"),
            "{header}: {error}"
        );
    }
}

#[tokio::test]
async fn a_month_not_yet_published_waits_on_the_slow_cadence_until_its_deadline() {
    let app = TestApp::with_settings(fast_queue).await;
    let server = ScriptedServer::start("a.zip", vec![Reply::Status(404, "")]).await;
    let job = app.enqueue("2024-10", &server.url).await;
    let runner = app.runner();
    let ran = runner.run_one().await.expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "not_found".into()
        }
    );
    let wait: f64 = app
        .job_row(job.id, "extract(epoch FROM scheduled_at - now())::float8")
        .await
        .get(0);
    let cadence = app.ctx.settings.queue.not_found_retry_s as f64;
    assert!(
        wait > cadence - 60.0 && wait <= cadence,
        "next try in {wait} s"
    );
    assert_eq!(app.job_state(job.id).await, "retryable");
    // Not before the slow cadence's next try.
    app.clock.advance(Duration::from_secs_f64(cadence - 60.0));
    assert_eq!(runner.run_one().await.expect("run"), RunOne::Empty);
    // 46 days pass on the queue's clock: the 45-day deadline is gone, the
    // month is still missing: the job fails with that reason.
    app.clock.advance(Duration::from_secs(46 * 86_400));
    let ran = runner.run_one().await.expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "not_found".into()
        }
    );
    let (state, code, error): (String, String, String) = {
        let r = app.job_row(job.id, "state, error_code, error").await;
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (state.as_str(), code.as_str()),
        ("failed", "not_published_by_deadline")
    );
    assert!(error.contains("HTTP status 404"), "{error}");
    // Waiting for the Portal spent no attempts.
    let left: i32 = app.job_row(job.id, "max_attempts - attempt").await.get(0);
    assert_eq!(left, app.ctx.settings.queue.max_attempts);
    // A retry gets a fresh 404 window, not the spent one.
    let client = app.client().await;
    queue::retry(
        &**client,
        job.id,
        app.ctx.settings.queue.max_attempts,
        &app.clock,
    )
    .await
    .expect("retry");
    let (window, due): (f64, bool) = {
        let r = client
            .query_one(
                "SELECT extract(epoch FROM not_found_deadline - now()
                                            - make_interval(secs => $2))::float8,
                        scheduled_at <= now() + make_interval(secs => $2)
                 FROM carga.jobs WHERE id = $1",
                &[&job.id, &app.clock.skew_s()],
            )
            .await
            .expect("job");
        (r.get(0), r.get(1))
    };
    assert!(window > 44.0 * 86_400.0, "{window}");
    assert!(due, "a retried job is due now on the queue's clock");
}

/// An operator's cancel that a retry raced (the attempt ended before its
/// next heartbeat) still ends the job cancelled.
#[tokio::test]
async fn a_cancel_request_wins_over_a_racing_retry() {
    let app = TestApp::with_settings(fast_queue).await;
    let settings = app.ctx.settings.queue.clone();
    let job = app.enqueue("2024-10", "http://127.0.0.1:9/x.zip").await;
    let client = app.client().await;
    let claimed = queue::claim(&**client, "w", &settings, &app.clock)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(
        queue::cancel(&**client, job.id)
            .await
            .expect("cancel")
            .to_string(),
        "cancelling"
    );
    let ending = queue::Ending::Retry {
        after: Duration::from_secs(1),
        code: carga::code::Code::HttpRequestFailed,
        message: "refused".into(),
    };
    assert!(
        queue::finish(&**client, &claimed, &ending, None, &app.clock)
            .await
            .expect("finish")
    );
    assert_eq!(app.job_state(job.id).await, "cancelled");
}

/// A month another load holds (an inline `carga run`) makes the job wait,
/// without spending its attempts.
#[tokio::test]
async fn a_month_held_by_another_load_waits_without_spending_attempts() {
    let app = TestApp::with_settings(fast_queue).await;
    let server =
        ScriptedServer::start("a.zip", vec![Reply::Body(sample_zip("2024-10", 300, 8))]).await;
    let job = app.enqueue("2024-10", &server.url).await;
    // Hold the month's lock as a running load would.
    let spec =
        carga::dataset::find(&app.ctx.settings.load.jobs_dir, "novo-bolsa-familia").expect("spec");
    let mut holder = app.client().await;
    let program = carga::engine::load::ensure_program(&**holder, &spec.program.expect("program"))
        .await
        .expect("program");
    let tx = holder.transaction().await.expect("tx");
    let key = (0x6361_i64 << 48) | (i64::from(program) << 24) | 202_410;
    tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&key])
        .await
        .expect("lock");
    let ran = app.runner().run_one().await.expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "waiting".into()
        }
    );
    drop(tx);
    let (state, code, left): (String, String, i32) = {
        let r = app
            .job_row(job.id, "state, error_code, max_attempts - attempt")
            .await;
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (state.as_str(), code.as_str()),
        ("retryable", "load_in_progress")
    );
    assert_eq!(left, app.ctx.settings.queue.max_attempts);
}

#[tokio::test]
async fn a_fatal_error_fails_at_once_with_its_code() {
    let app = TestApp::with_settings(fast_queue).await;
    // 410 Gone: the month will never be there.
    let server = ScriptedServer::start("a.zip", vec![Reply::Status(410, "")]).await;
    let job = app.enqueue("2024-10", &server.url).await;
    let ran = app.runner().run_one().await.expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "failed".into()
        }
    );
    let (state, attempt, code): (String, i32, String) = {
        let r = app.job_row(job.id, "state, attempt, error_code").await;
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (state.as_str(), attempt, code.as_str()),
        ("failed", 1, "http_status_410")
    );
    // An operator retries it: a new budget, available now.
    let client = app.client().await;
    assert_eq!(
        queue::retry(
            &**client,
            job.id,
            app.ctx.settings.queue.max_attempts,
            &app.clock
        )
        .await
        .expect("retry"),
        job.id
    );
    assert_eq!(app.job_state(job.id).await, "available");
    // As many attempts as a new job gets, not a fixed three.
    let budget: i32 = app.job_row(job.id, "max_attempts - attempt").await.get(0);
    assert_eq!(budget, app.ctx.settings.queue.max_attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_running_job_ends_its_copy() {
    let app = TestApp::with_settings(fast_queue).await;
    let server = ScriptedServer::start(
        "a.zip",
        vec![Reply::Stall(sample_zip("2024-10", 60_000, 4))],
    )
    .await;
    let job = app.enqueue("2024-10", &server.url).await;
    let runner = Arc::new(app.runner());
    let running = {
        let runner = runner.clone();
        tokio::spawn(async move { runner.run_one().await })
    };
    common::wait_until(&app, common::COPYING, |n| n > 0, "the COPY never started").await;
    let client = app.client().await;
    assert_eq!(
        queue::cancel(&**client, job.id)
            .await
            .expect("cancel")
            .to_string(),
        "cancelling"
    );
    let ran = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the job ends")
        .expect("task")
        .expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "cancelled".into()
        }
    );
    assert_eq!(app.job_state(job.id).await, "cancelled");
    common::wait_until(
        &app,
        common::LEFT_BEHIND,
        |n| n == 0,
        "the server-side COPY outlived the cancel",
    )
    .await;
    // A waiting job is cancelled at once; a finished one cannot be.
    let waiting = app.enqueue("2024-09", &server.url).await;
    assert_eq!(
        queue::cancel(&**client, waiting.id)
            .await
            .expect("cancel")
            .to_string(),
        "cancelled"
    );
    assert!(queue::cancel(&**client, waiting.id).await.is_err());
}

/// Heartbeats keep a long load's lease: a rescuer running all along never
/// takes it, and the job succeeds on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_heartbeats_flow_is_never_rescued() {
    let app = TestApp::with_settings(fast_queue).await;
    // About 4 s of download: twice the 2 s lease.
    let server = ScriptedServer::slow(
        "a.zip",
        sample_zip("2024-10", 20_000, 5),
        40,
        Duration::from_millis(100),
    )
    .await;
    let job = app.enqueue("2024-10", &server.url).await;
    let runner = Arc::new(app.runner());
    let running = {
        let runner = runner.clone();
        tokio::spawn(async move { runner.run_one().await })
    };
    let mut rescues = 0;
    while !running.is_finished() {
        rescues += runner.maintain().await.expect("rescue").len();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ran = running.await.expect("task").expect("run");
    assert_eq!(rescues, 0);
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "published".into()
        }
    );
    let attempt: i32 = app.job_row(job.id, "attempt").await.get(0);
    assert_eq!(attempt, 1);
}

/// An attempt that runs past `queue.job_timeout_s` is cancelled (its COPY
/// with it) and retried later, never left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_attempt_past_its_timeout_is_cancelled_and_retried() {
    let app = TestApp::with_settings(|s| {
        fast_queue(s);
        s.queue.job_timeout_s = 2;
    })
    .await;
    let server = ScriptedServer::start(
        "a.zip",
        vec![Reply::Stall(sample_zip("2024-10", 60_000, 4))],
    )
    .await;
    let job = app.enqueue("2024-10", &server.url).await;
    // The ending and its code say which limit ended it (the stall would
    // otherwise end on the read timeout, with another code).
    let ran = app.runner().run_one().await.expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "retry".into()
        }
    );
    let (state, code): (String, String) = {
        let r = app.job_row(job.id, "state, error_code").await;
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (state.as_str(), code.as_str()),
        ("retryable", "job_timeout")
    );
    common::wait_until(
        &app,
        common::LEFT_BEHIND,
        |n| n == 0,
        "the timed-out COPY outlived its attempt",
    )
    .await;
}

/// A slot whose tick was lost (here: its job deleted after the catch-up
/// tick, as if the tick had failed) is enqueued again by the scheduler's
/// reconciliation pass, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_reconciles_a_lost_slot() {
    let app = TestApp::with_settings(|s| {
        fast_queue(s);
        s.queue.reconcile_s = 1;
    })
    .await;
    let specs = carga::service::runner::specs(&app.ctx.settings).expect("specs");
    let due = specs
        .iter()
        .filter(|s| {
            matches!(
                carga::service::schedule::due(s, chrono::Utc::now()),
                Ok(Some(_))
            )
        })
        .count() as i64;
    let scheduler = carga::service::schedule::start(
        app.ctx.pool.clone(),
        specs,
        app.ctx.settings.queue.clone(),
        app.clock.clone(),
    )
    .await
    .expect("scheduler");
    let count = || async {
        let n: i64 = app
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM carga.jobs WHERE enqueued_by = 'schedule'",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        n
    };
    assert_eq!(count().await, due, "the catch-up tick");
    app.client()
        .await
        .execute(
            "DELETE FROM carga.jobs WHERE dataset = 'novo-bolsa-familia'",
            &[],
        )
        .await
        .expect("lose the slot");
    assert_eq!(count().await, due - 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    while count().await < due {
        assert!(
            Instant::now() < deadline,
            "the lost slot was never enqueued again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two more whole passes: the slot is done, so they enqueue nothing.
    let after = scheduler.passes() + 2;
    let deadline = Instant::now() + Duration::from_secs(15);
    while scheduler.passes() < after {
        assert!(Instant::now() < deadline, "reconciliation stopped passing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count().await, due, "reconciliation is idempotent");
    scheduler.shutdown().await.expect("shutdown");
}

/// A worker that cannot reach the database to renew its lease stops its
/// load after one lease (the job is about to be rescued): it does not hold
/// the month's lock and COPY until the download deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_cut_off_from_its_leases_stops_its_load() {
    let app = TestApp::with_settings(fast_queue).await;
    let server = ScriptedServer::start(
        "a.zip",
        vec![Reply::Stall(sample_zip("2024-10", 60_000, 4))],
    )
    .await;
    let job = app.enqueue("2024-10", &server.url).await;
    // Claims and heartbeats go through a proxy that can be cut; the load's
    // own connections do not.
    let proxy = common::Proxy::start().await;
    let config: tokio_postgres::Config =
        std::str::FromStr::from_str(&proxy.url_for(&app.url)).expect("config");
    let mut settings = app.ctx.settings.clone();
    settings.database.wait_timeout_ms = 500;
    settings.database.create_timeout_ms = 500;
    let control = carga::db::pool(
        &carga::db::Target {
            config: config.clone(),
            description: "proxy".into(),
            created: false,
            tls: app.ctx.tls.clone(),
        },
        &settings,
    )
    .expect("pool");
    let runner = Arc::new(carga::service::runner::Runner::new(
        app.ctx.clone(),
        control,
        config,
        carga::service::runner::specs(&app.ctx.settings).expect("specs"),
    ));
    let running = {
        let runner = runner.clone();
        tokio::spawn(async move { runner.run_one().await })
    };
    common::wait_until(&app, common::COPYING, |n| n > 0, "the COPY never started").await;
    proxy.cut();
    // Bounded far below the download deadline the stalled load would
    // otherwise hold its COPY and lock until; "lease_lost" says the
    // heartbeat's silence, not another limit, stopped it.
    let ran = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the load stops")
        .expect("task")
        .expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "lease_lost".into()
        }
    );
    common::wait_until(
        &app,
        common::LEFT_BEHIND,
        |n| n == 0,
        "the COPY or the month's lock outlived the lease",
    )
    .await;
}

/// A running job an operator asked to cancel, whose worker then died,
/// ends cancelled when the rescuer finds it: the request is not lost.
#[tokio::test]
async fn a_rescued_job_that_was_asked_to_cancel_ends_cancelled() {
    let app = TestApp::with_settings(fast_queue).await;
    let settings = app.ctx.settings.queue.clone();
    let job = app.enqueue("2024-10", "http://127.0.0.1:9/x.zip").await;
    let client = app.client().await;
    queue::claim(&**client, "dead", &settings, &app.clock)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(
        queue::cancel(&**client, job.id)
            .await
            .expect("cancel")
            .to_string(),
        "cancelling"
    );
    app.clock.advance(Duration::from_secs(settings.lease_s + 1));
    let rescued = queue::rescue(&**client, &app.clock).await.expect("rescue");
    assert_eq!(rescued.len(), 1);
    assert_eq!(app.job_state(job.id).await, "cancelled");
}

/// A job's, its attempt's and its load's `finished_at` are when they
/// finished, not when the publish transaction began: a load fed slowly for
/// over a second lasts over a second in every table.
#[tokio::test]
async fn finished_at_is_the_commit_time_not_the_transaction_start() {
    let app = TestApp::with_settings(fast_queue).await;
    let server = ScriptedServer::slow(
        "a.zip",
        sample_zip("2024-10", 2_000, 11),
        12,
        Duration::from_millis(120),
    )
    .await;
    let job = app.enqueue("2024-10", &server.url).await;
    let ran = app.runner().run_one().await.expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: job.id,
            ending: "published".into()
        }
    );
    let row = app
        .client()
        .await
        .query_one(
            "SELECT extract(epoch FROM j.finished_at - j.started_at)::float8,
                    extract(epoch FROM a.finished_at - a.started_at)::float8,
                    extract(epoch FROM l.finished_at - l.started_at)::float8
             FROM carga.jobs j
             JOIN carga.job_attempts a ON a.job_id = j.id
             JOIN carga.loads l ON l.id = j.load_id
             WHERE j.id = $1",
            &[&job.id],
        )
        .await
        .expect("times");
    for (what, seconds) in [
        ("job", row.get::<_, f64>(0)),
        ("attempt", row.get(1)),
        ("load", row.get(2)),
    ] {
        assert!(
            seconds >= 1.0,
            "the {what} lasted {seconds:.3} s by its own clock"
        );
    }
}

/// A killed load's `running` ledger row never survives: the next run of its
/// month that the source answers 304 sweeps it (that path takes no month
/// lock), and so does the workers' maintenance pass for any month.
#[tokio::test]
async fn dead_running_ledger_rows_are_swept_on_304_and_by_maintenance() {
    let mut app = TestApp::with_settings(fast_queue).await;
    let urls = app
        .serve(vec![("a.zip", sample_zip("2024-10", 300, 12))])
        .await;
    let url = urls["a.zip"].clone();
    let runner = app.runner();
    let first = app.enqueue("2024-10", &url).await;
    assert!(
        matches!(runner.run_one().await.expect("run"), RunOne::Ran { job_id, ref ending } if job_id == first.id && ending == "published")
    );

    // A load "killed mid-COPY": its row says running, its connection is gone.
    let dead_row = || async {
        let (client, connection) = tokio_postgres::connect(&app.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(connection);
        let (id, pid): (i64, i32) = {
            let r = client
                .query_one(
                    "INSERT INTO carga.loads (dataset, program_code, period, status, source_url, forced, owner_pid)
                     SELECT dataset, program_code, period, 'running', source_url, false, pg_backend_pid()
                     FROM carga.loads WHERE status = 'published' AND program_code IS NOT NULL
                     RETURNING id, owner_pid",
                    &[],
                )
                .await
                .expect("insert");
            (r.get(0), r.get(1))
        };
        drop(client);
        let _ = task.await;
        common::wait_until(
            &app,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND datname = $1"),
            |n| n == 0,
            "the killed load's backend to go",
        )
        .await;
        id
    };
    let status = |id: i64| {
        let app = &app;
        async move {
            app.client()
                .await
                .query_one("SELECT status FROM carga.loads WHERE id = $1", &[&id])
                .await
                .expect("row")
                .get::<_, String>(0)
        }
    };

    let swept_by_304 = dead_row().await;
    let again = app.enqueue("2024-10", &url).await;
    let ran = runner.run_one().await.expect("run");
    assert_eq!(
        ran,
        RunOne::Ran {
            job_id: again.id,
            ending: "unchanged".into()
        }
    );
    assert_eq!(status(swept_by_304).await, "abandoned");

    let swept_by_maintenance = dead_row().await;
    runner.maintain().await.expect("maintain");
    assert_eq!(status(swept_by_maintenance).await, "abandoned");
}

/// The stronger intent of a second request for a pending month is merged
/// into its job or refused, never dropped: `force` and an explicit URL
/// are taken on by a job that has not started; a different URL, or force
/// for a job already running, is a conflict that names the job.
#[tokio::test]
async fn a_stronger_request_is_merged_or_refused_never_dropped() {
    let app = TestApp::with_settings(fast_queue).await;
    let client = app.client().await;
    let settings = app.ctx.settings.queue.clone();
    let spec =
        carga::dataset::find(&app.ctx.settings.load.jobs_dir, "novo-bolsa-familia").expect("spec");
    let request = |period: &str, url: Option<&str>, force: bool| {
        let mut job = queue::NewJob::for_spec(
            &spec,
            carga::dataset::Period::parse(period).expect("period"),
            queue::Trigger::Operator {
                name: "test".into(),
            },
            Priority::Fresh,
            &settings,
        );
        job.url = url.map(|u| queue::JobUrl::new(u, None).expect("a plain URL"));
        job.force = force;
        job
    };
    let row = |id: i64| {
        let app = &app;
        async move {
            let r = app.job_row(id, "force, url").await;
            (r.get::<_, bool>(0), r.get::<_, Option<String>>(1))
        }
    };

    // Pending, from the spec's URL without force: --force and a URL merge.
    let first = queue::enqueue(&**client, &request("2024-10", None, false), &app.clock)
        .await
        .expect("enqueue");
    let again = queue::enqueue(
        &**client,
        &request("2024-10", Some("http://127.0.0.1:9/a.zip"), true),
        &app.clock,
    )
    .await
    .expect("merged");
    assert_eq!((again.id, again.new), (first.id, false));
    assert_eq!(
        row(first.id).await,
        (true, Some("http://127.0.0.1:9/a.zip".into()))
    );

    // Another URL for it: refused, naming the job.
    let other = queue::enqueue(
        &**client,
        &request("2024-10", Some("http://127.0.0.1:9/b.zip"), false),
        &app.clock,
    )
    .await
    .expect_err("another URL");
    assert!(
        matches!(other, queue::QueueError::Conflict { id, .. } if id == first.id),
        "{other}"
    );
    assert!(other.to_string().contains("another URL"), "{other}");

    // Running without force: a forced request is refused, not merged away.
    let second = queue::enqueue(&**client, &request("2024-11", None, false), &app.clock)
        .await
        .expect("enqueue");
    client
        .execute(
            "UPDATE carga.jobs SET state = 'running', attempt = 1 WHERE id = $1",
            &[&second.id],
        )
        .await
        .expect("run it");
    let forced = queue::enqueue(&**client, &request("2024-11", None, true), &app.clock)
        .await
        .expect_err("running without force");
    assert!(forced.to_string().contains("--force"), "{forced}");
    assert_eq!(row(second.id).await, (false, None));
    // The same request without more intent still converges on it.
    let plain = queue::enqueue(&**client, &request("2024-11", None, false), &app.clock)
        .await
        .expect("deduplicated");
    assert_eq!((plain.id, plain.new), (second.id, false));

    // Two URLs that show alike (their tokens are `***`) are still told
    // apart: the second is refused, not merged into the first.
    let key = secrecy::SecretString::from(common::NIS_KEY);
    let tokenised = |token: &str| {
        queue::JobUrl::new(
            &format!("http://127.0.0.1:9/c.zip?token={token}"),
            Some(&key),
        )
        .expect("sealed")
    };
    let mut with_token = request("2024-09", None, false);
    with_token.url = Some(tokenised("one"));
    let third = queue::enqueue(&**client, &with_token, &app.clock)
        .await
        .expect("enqueue");
    with_token.url = Some(tokenised("two"));
    let other_token = queue::enqueue(&**client, &with_token, &app.clock)
        .await
        .expect_err("another token");
    assert!(matches!(other_token, queue::QueueError::Conflict { id, .. } if id == third.id));
    with_token.url = Some(tokenised("one"));
    let same = queue::enqueue(&**client, &with_token, &app.clock)
        .await
        .expect("the same URL");
    assert_eq!((same.id, same.new), (third.id, false));
    // A job left pending across the V6 upgrade may hold its URL in clear:
    // a refusal never repeats its token.
    client
        .execute(
            "UPDATE carga.jobs SET url = 'http://127.0.0.1:9/c.zip?token=clear-canary-7',
                                   url_sealed = NULL, url_fingerprint = NULL
             WHERE id = $1",
            &[&third.id],
        )
        .await
        .expect("an old row");
    with_token.url = Some(tokenised("two"));
    let refused = queue::enqueue(&**client, &with_token, &app.clock)
        .await
        .expect_err("another URL");
    assert!(!refused.to_string().contains("clear-canary-7"), "{refused}");

    // A scheduled job waiting on the slow cadence takes on a webhook's URL:
    // it becomes the webhook's (so its redirects are checked) and due now.
    let slot = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut scheduled = request("2024-08", None, false);
    scheduled.trigger = queue::Trigger::Schedule { slot };
    let waiting = queue::enqueue(&**client, &scheduled, &app.clock)
        .await
        .expect("enqueue");
    client
        .execute(
            "UPDATE carga.jobs SET state = 'retryable', scheduled_at = now() + interval '6 hours' WHERE id = $1",
            &[&waiting.id],
        )
        .await
        .expect("wait");
    let mut hooked = request("2024-08", Some("http://127.0.0.1:9/d.zip"), false);
    hooked.trigger = queue::Trigger::Webhook {
        sender: "portal".into(),
    };
    let merged = queue::enqueue(&**client, &hooked, &app.clock)
        .await
        .expect("merged");
    assert_eq!(merged.id, waiting.id);
    let r = app
        .job_row(
            waiting.id,
            "enqueued_by, sender, url, scheduled_at <= now()",
        )
        .await;
    let (by, sender, url, due): (String, Option<String>, Option<String>, bool) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!(
        (by.as_str(), sender.as_deref(), url.as_deref(), due),
        (
            "webhook",
            Some("portal"),
            Some("http://127.0.0.1:9/d.zip"),
            true
        )
    );
}
