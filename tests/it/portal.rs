//! The Portal as it behaves since 2026 (basedosdados/pipelines issue 1598):
//! 202 while it prepares a ZIP and then a redirect to it; 405 to clients
//! without a browser User-Agent; a ZIP that does not inflate or a CSV with
//! a header and no rows for a day. Each through the real `carga worker`
//! and the queue: the job's states, attempts and codes, and the published
//! data (untouched until the good file, exact after).

use crate::common;

use std::time::Duration;

use common::process::{carga, exits, signal, wait_for_log, wait_for_state};
use common::{Reply, ScriptedServer, TestApp, fast_queue, sample_zip};
use tokio::process::Child;

/// A worker that asks a preparing source again after 1 s, for up to
/// `preparing_limit_s`, and retries broken files every second.
async fn portal_worker(app: &TestApp, preparing_limit_s: u64, user_agent: Option<&str>) -> Child {
    let mut command = carga(app, &["worker"]);
    command
        .env("CARGA__HTTP__PREPARING_POLL_S", "1")
        .env(
            "CARGA__HTTP__PREPARING_LIMIT_S",
            preparing_limit_s.to_string(),
        )
        .env("CARGA__QUEUE__NOT_FOUND_RETRY_S", "1");
    if let Some(agent) = user_agent {
        command.env("CARGA__HTTP__USER_AGENT", agent);
    }
    let mut child = command.spawn().expect("spawn worker");
    wait_for_log(&mut child, "worker started").await;
    child
}

/// (attempt, error_code, source_status) of every attempt of `job`.
async fn attempts(app: &TestApp, job: i64) -> Vec<(i32, Option<String>, Option<i16>)> {
    app.client()
        .await
        .query(
            "SELECT attempt, error_code, source_status FROM carga.job_attempts
             WHERE job_id = $1 ORDER BY attempt",
            &[&job],
        )
        .await
        .expect("attempts")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn published_rows(app: &TestApp, period: &str) -> Option<i64> {
    app.client()
        .await
        .query_opt(
            "SELECT rows_loaded FROM carga.loads
             WHERE status = 'published' AND to_char(period, 'YYYY-MM') = $1",
            &[&period],
        )
        .await
        .expect("ledger")
        .map(|r| r.get(0))
}

/// 202 (with and without Retry-After) a few times, then a redirect to the
/// ZIP: the job waits without spending attempts and publishes the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_being_prepared_is_waited_for_then_loaded() {
    let app = TestApp::with_settings(fast_queue).await;
    let file = ScriptedServer::start(
        "202410_NovoBolsaFamilia.zip",
        vec![Reply::Body(sample_zip("2024-10", 700, 31))],
    )
    .await;
    let portal = ScriptedServer::start(
        "202410",
        vec![
            Reply::Status(202, "Retry-After: 1"),
            Reply::Status(202, ""),
            Reply::Status(202, "Retry-After: 1"),
            Reply::Redirect(file.url.clone()),
        ],
    )
    .await;
    let job = app.enqueue("2024-10", &portal.url).await;
    let worker = portal_worker(&app, 60, None).await;
    wait_for_state(
        &app,
        job.id,
        "succeeded",
        "the prepared file was never loaded",
    )
    .await;
    let seen = attempts(&app, job.id).await;
    let preparing = Some("source_preparing".to_string());
    assert_eq!(
        seen,
        [
            (1, preparing.clone(), Some(202)),
            (2, preparing.clone(), Some(202)),
            (3, preparing, Some(202)),
            (4, None, Some(200)),
        ]
    );
    // Waiting spent no attempt of the budget.
    let budget: i32 = app.job_row(job.id, "max_attempts - attempt").await.get(0);
    assert_eq!(budget, app.ctx.settings.queue.max_attempts - 1);
    assert_eq!(published_rows(&app, "2024-10").await, Some(700));
    signal(&worker, "TERM");
    assert_eq!(exits(worker).await, Some(0));
}

/// A source that never stops answering 202: past http.preparing_limit_s
/// the job falls back to the slow cadence with its own code, and nothing
/// is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_prepared_forever_falls_back_to_the_slow_cadence() {
    let app = TestApp::with_settings(fast_queue).await;
    let portal = ScriptedServer::start("202410", vec![Reply::Status(202, "Retry-After: 1")]).await;
    let job = app.enqueue("2024-10", &portal.url).await;
    let worker = portal_worker(&app, 2, None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let error: Option<String> = app.job_row(job.id, "error").await.get(0);
        if error.is_some_and(|e| e.contains("still preparing")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job never gave up waiting for the file"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&worker, "TERM");
    assert_eq!(exits(worker).await, Some(0));
    let row = app
        .job_row(job.id, "state, error_code, preparing_since IS NOT NULL")
        .await;
    let (state, code, kept): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(state, "retryable");
    assert_eq!(code, "source_preparing");
    // The window is spent once: the next 202 goes straight back to the
    // slow cadence instead of polling for another half hour.
    assert!(kept, "the 202 window must not start over");
    assert_eq!(published_rows(&app, "2024-10").await, None);

    // Silence is a failure: the source has 2024-10 (it is preparing it)
    // and nothing is published, which every surface says.
    let specs = carga::service::runner::specs(&app.ctx.settings).expect("specs");
    let statuses = carga::service::freshness::datasets(&**app.client().await, &specs)
        .await
        .expect("statuses");
    let nbf = statuses
        .iter()
        .find(|s| s.dataset == "novo-bolsa-familia")
        .expect("nbf");
    assert_eq!(nbf.source_latest_period.as_deref(), Some("2024-10"));
    assert!(nbf.source_ahead_since.is_some());
    let boards = carga::service::freshness::boards(&**app.client().await, &specs, 24)
        .await
        .expect("boards");
    let cell = boards
        .iter()
        .find(|b| b.status.dataset == "novo-bolsa-familia")
        .and_then(|b| b.months.iter().find(|m| m.period == "2024-10"))
        .expect("the month's cell");
    assert_eq!(cell.state, carga::service::freshness::MonthState::AtSource);
    let out = carga(&app, &["schedule"]).output().await.expect("schedule");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2024-10!"), "{text}");
    assert!(text.contains("the source has had 2024-10 since"), "{text}");
    let api = app.api().await;
    let metrics = reqwest::get(format!("{}/metrics", api.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("carga_source_latest_period{dataset=\"novo-bolsa-familia\"} 202410"),
        "{metrics}"
    );
    let ahead = metrics
        .lines()
        .find(|l| l.starts_with("carga_source_ahead_seconds{dataset=\"novo-bolsa-familia\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .expect("carga_source_ahead_seconds");
    assert!(ahead > 0.0, "{ahead}");
}

/// 405 to a client without a browser User-Agent: its own code, fatal,
/// naming the setting; the default User-Agent is let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_of_the_user_agent_is_fatal_and_names_the_setting() {
    let app = TestApp::with_settings(fast_queue).await;
    let portal = ScriptedServer::start(
        "202410",
        vec![Reply::BrowsersOnly(sample_zip("2024-10", 300, 32))],
    )
    .await;
    let job = app.enqueue("2024-10", &portal.url).await;
    let worker = portal_worker(&app, 60, Some("python-requests/2.32")).await;
    wait_for_state(&app, job.id, "failed", "the refused job never failed").await;
    signal(&worker, "TERM");
    assert_eq!(exits(worker).await, Some(0));
    let row = app.job_row(job.id, "error_code, error, attempt").await;
    let (code, error, attempt): (String, String, i32) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((code.as_str(), attempt), ("source_refused", 1));
    assert!(error.contains("http.user_agent"), "{error}");

    let again = app.enqueue("2024-10", &portal.url).await;
    let worker = portal_worker(&app, 60, None).await;
    wait_for_state(
        &app,
        again.id,
        "succeeded",
        "the default User-Agent was refused",
    )
    .await;
    signal(&worker, "TERM");
    assert_eq!(exits(worker).await, Some(0));
    assert_eq!(published_rows(&app, "2024-10").await, Some(300));
}

/// A ZIP that does not inflate, and a CSV with a header and no rows, are
/// retried on the slow cadence (each with its code) while the published
/// month stays as it was; the good file then replaces it exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broken_files_are_retried_until_the_good_one_arrives() {
    let mut app = TestApp::with_settings(fast_queue).await;
    // The month as published before the Portal broke it.
    let urls = app
        .serve(vec![("before.zip", sample_zip("2024-10", 500, 33))])
        .await;
    app.load("novo-bolsa-familia", "2024-10", &urls["before.zip"], false)
        .await
        .expect("the first version");
    let before = app.visible_state().await;

    let mut corrupt = sample_zip("2024-10", 1_500, 34);
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let portal = ScriptedServer::start(
        "202410",
        vec![
            Reply::Body(corrupt.clone()),
            Reply::Body(corrupt),
            Reply::Body(sample_zip("2024-10", 0, 35)),
            Reply::Body(sample_zip("2024-10", 520, 36)),
        ],
    )
    .await;
    // Hold the worker back between attempts to look at the month: the job
    // is run one attempt at a time by `worker --once`.
    let job = app.enqueue("2024-10", &portal.url).await;
    for expected in ["archive_corrupt", "archive_corrupt", "empty_file"] {
        let out = carga(&app, &["worker", "--once"])
            .env("CARGA__QUEUE__NOT_FOUND_RETRY_S", "1")
            .output()
            .await
            .expect("worker --once");
        assert_eq!(out.status.code(), Some(1), "attempt ending {expected}");
        let row = app.job_row(job.id, "state, error_code").await;
        let (state, code): (String, String) = (row.get(0), row.get(1));
        assert_eq!((state.as_str(), code.as_str()), ("retryable", expected));
        assert_eq!(
            app.visible_state().await,
            before,
            "{expected}: the month was touched"
        );
        // Due now rather than in a second.
        app.client()
            .await
            .execute(
                "UPDATE carga.jobs SET scheduled_at = now() WHERE id = $1",
                &[&job.id],
            )
            .await
            .expect("due");
    }
    let out = carga(&app, &["worker", "--once"])
        .output()
        .await
        .expect("worker --once");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(app.job_state(job.id).await, "succeeded");
    assert_eq!(published_rows(&app, "2024-10").await, Some(520));
    let seen: Vec<Option<String>> = attempts(&app, job.id)
        .await
        .into_iter()
        .map(|(_, code, _)| code)
        .collect();
    assert_eq!(
        seen,
        [
            Some("archive_corrupt".into()),
            Some("archive_corrupt".into()),
            Some("empty_file".into()),
            None
        ]
    );
}
