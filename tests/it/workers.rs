//! The real binary as workers and schedulers: several processes on one
//! database, killed, frozen and stopped with real signals. Synchronised on
//! database state, never on sleeps.

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::{carga, exits, signal, wait_for_log, wait_for_state, worker};
use common::{Reply, ScriptedServer, TestApp, fast_queue, sample_zip};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn published_loads(app: &TestApp) -> i64 {
    app.client()
        .await
        .query_one(
            "SELECT count(*) FROM carga.loads WHERE status = 'published' AND program_code IS NOT NULL",
            &[],
        )
        .await
        .expect("ledger")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_run_thirty_jobs_each_exactly_once() {
    let mut app = TestApp::with_settings(fast_queue).await;
    let months: Vec<String> = (0..30)
        .map(|i| format!("{}-{:02}", 2023 + (i + 2) / 12, (i + 2) % 12 + 1))
        .collect();
    let files: Vec<(String, Vec<u8>)> = months
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("{m}.zip"), sample_zip(m, 200, i as u64)))
        .collect();
    let urls = app
        .serve(files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect())
        .await;
    let workers = [
        worker(&app, "w1").await,
        worker(&app, "w2").await,
        worker(&app, "w3").await,
    ];
    for m in &months {
        app.enqueue(m, &urls[&format!("{m}.zip")]).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: i64 = app
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM carga.jobs WHERE state = 'succeeded'",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if done == 30 {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of 30 jobs succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = app.client().await;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE attempt = 1), count(DISTINCT worker) FROM carga.jobs",
            &[],
        )
        .await
        .expect("jobs");
    let (first_attempt, workers_used): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(first_attempt, 30, "one attempt each");
    assert!(
        workers_used >= 2,
        "the work was shared ({workers_used} workers)"
    );
    let per_period: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT period FROM carga.loads
              WHERE status = 'published' AND program_code IS NOT NULL
              GROUP BY period HAVING count(*) = 1) x",
            &[],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(per_period, 30, "one published ledger row per period");
    assert_eq!(published_loads(&app).await, 30);
    for w in workers {
        signal(&w, "TERM");
        assert_eq!(exits(w).await, Some(0));
    }
}

/// SIGKILL mid-COPY: another worker rescues the job once the lease expires
/// and completes it; the period is published once; nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_workers_job_is_rescued_and_completed_by_another() {
    let app = TestApp::with_settings(fast_queue).await;
    let body = sample_zip("2024-10", 60_000, 7);
    let server =
        ScriptedServer::start("a.zip", vec![Reply::Stall(body.clone()), Reply::Body(body)]).await;
    let job = app.enqueue("2024-10", &server.url).await;
    let mut first = worker(&app, "doomed").await;
    common::wait_until(&app, common::COPYING, |n| n > 0, "the COPY never started").await;
    first.kill().await.expect("SIGKILL");
    let second = worker(&app, "rescuer").await;
    wait_for_state(
        &app,
        job.id,
        "succeeded",
        "the job was not completed by the second worker",
    )
    .await;
    let (attempt, error_code): (i32, Option<String>) = {
        let r = app
            .client()
            .await
            .query_one(
                "SELECT j.attempt, a.error_code FROM carga.jobs j
                 JOIN carga.job_attempts a ON a.job_id = j.id AND a.attempt = 1 WHERE j.id = $1",
                &[&job.id],
            )
            .await
            .expect("job");
        (r.get(0), r.get(1))
    };
    assert_eq!((attempt, error_code.as_deref()), (2, Some("lease_expired")));
    assert_eq!(published_loads(&app).await, 1);
    common::wait_until(
        &app,
        common::LEFT_BEHIND,
        |n| n == 0,
        "a COPY or lock outlived the kill",
    )
    .await;
    signal(&second, "TERM");
    assert_eq!(exits(second).await, Some(0));
}

/// SIGSTOP past the lease: another worker takes the job over (ending the
/// frozen attempt's database session, which still held the transaction,
/// the COPY and the month's lock) and publishes; SIGCONT: the first worker
/// cannot publish, and the data is the second worker's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_worker_cannot_publish_after_its_lease_passed() {
    let app = TestApp::with_settings(fast_queue).await;
    let body = sample_zip("2024-10", 60_000, 8);
    let chunk = body.len() / 100 + 1;
    let server = ScriptedServer::start(
        "a.zip",
        vec![
            Reply::Slow {
                body: body.clone(),
                chunk,
                every: Duration::from_millis(50),
            },
            Reply::Body(body),
        ],
    )
    .await;
    let job = app.enqueue("2024-10", &server.url).await;
    let frozen = worker(&app, "frozen").await;
    common::wait_until(&app, common::COPYING, |n| n > 0, "the COPY never started").await;
    signal(&frozen, "STOP");
    let other = worker(&app, "other").await;
    wait_for_state(
        &app,
        job.id,
        "succeeded",
        "the second worker did not complete the job",
    )
    .await;
    let state_after_takeover = app.visible_state().await;
    signal(&frozen, "CONT");
    // The frozen worker wakes, fails (its session was ended) and records
    // nothing over the other worker's result.
    signal(&frozen, "TERM");
    assert_eq!(exits(frozen).await, Some(0));
    assert_eq!(app.visible_state().await, state_after_takeover);
    assert_eq!(published_loads(&app).await, 1);
    let (state, attempt, worker_name): (String, i32, String) = {
        let r = app
            .client()
            .await
            .query_one(
                "SELECT j.state, j.attempt, a.worker FROM carga.jobs j
                 JOIN carga.job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt WHERE j.id = $1",
                &[&job.id],
            )
            .await
            .expect("job");
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (state.as_str(), attempt, worker_name.as_str()),
        ("succeeded", 2, "other")
    );
    common::wait_until(
        &app,
        common::LEFT_BEHIND,
        |n| n == 0,
        "a COPY or lock was left behind",
    )
    .await;
    signal(&other, "TERM");
    assert_eq!(exits(other).await, Some(0));
}

/// SIGTERM during a load: the worker cancels it, releases the job (no
/// attempt spent, no lease to wait for) and exits 0; another worker starts
/// it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_releases_the_job_for_another_worker_at_once() {
    let app = TestApp::with_settings(fast_queue).await;
    let body = sample_zip("2024-10", 60_000, 9);
    let server =
        ScriptedServer::start("a.zip", vec![Reply::Stall(body.clone()), Reply::Body(body)]).await;
    let job = app.enqueue("2024-10", &server.url).await;
    let first = worker(&app, "leaving").await;
    common::wait_until(&app, common::COPYING, |n| n > 0, "the COPY never started").await;
    signal(&first, "TERM");
    assert_eq!(exits(first).await, Some(0));
    let (state, lease, attempts_left): (String, Option<String>, i32) = {
        let r = app
            .job_row(job.id, "state, lease_token, max_attempts - attempt")
            .await;
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((state.as_str(), lease), ("available", None));
    assert_eq!(
        attempts_left, app.ctx.settings.queue.max_attempts,
        "no attempt spent"
    );
    common::wait_until(
        &app,
        common::LEFT_BEHIND,
        |n| n == 0,
        "a COPY or lock outlived the release",
    )
    .await;
    // Another worker claims it now: one run_one (which never waits) finds
    // it due, with no lease to wait out and nothing for a rescuer to do.
    let runner = app.runner();
    let ran = runner.run_one().await.expect("run");
    assert_eq!(
        ran,
        carga::service::runner::RunOne::Ran {
            job_id: job.id,
            ending: "published".into()
        }
    );
    let (attempt, error_code): (i32, Option<String>) = {
        let r = app.job_row(job.id, "attempt, error_code").await;
        (r.get(0), r.get(1))
    };
    assert_eq!((attempt, error_code), (2, None), "not a rescue");
    assert_eq!(app.job_state(job.id).await, "succeeded");
}

/// Two `carga serve` processes start in the same slot: each ticks every
/// scheduled dataset, and each (dataset, slot) gets exactly one job; a
/// restart within the slot makes no second one, even after the first
/// finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_make_one_job_per_slot() {
    let app = TestApp::with_settings(fast_queue).await;
    let now = chrono::Utc::now();
    let scheduled = carga::dataset::load_all(std::path::Path::new("jobs"))
        .expect("specs")
        .iter()
        .filter(|s| matches!(carga::service::schedule::due(s, now), Ok(Some(_))))
        .count() as i64;
    assert!(scheduled >= 2, "{scheduled} datasets are due");
    let serve = |name: &str| {
        let mut c = carga(
            &app,
            &["serve", "--concurrency", "0", "--listen", "127.0.0.1:0"],
        );
        c.env("CARGA__QUEUE__WORKER_NAME", name);
        c
    };
    let mut a = serve("a").spawn().expect("spawn");
    let mut b = serve("b").spawn().expect("spawn");
    wait_for_log(&mut a, "scheduler started").await;
    wait_for_log(&mut b, "scheduler started").await;
    let count = |sql: &'static str| {
        let app = &app;
        async move {
            let n: i64 = app
                .client()
                .await
                .query_one(sql, &[])
                .await
                .expect("count")
                .get(0);
            n
        }
    };
    assert_eq!(count("SELECT count(*) FROM carga.jobs").await, scheduled);
    assert_eq!(
        count(
            "SELECT count(DISTINCT (dataset, slot)) FROM carga.jobs WHERE enqueued_by = 'schedule'"
        )
        .await,
        scheduled
    );
    // The jobs finish; a restart within the slot enqueues nothing new.
    app.client()
        .await
        .execute(
            "UPDATE carga.jobs SET state = 'succeeded', finished_at = now()",
            &[],
        )
        .await
        .expect("finish");
    signal(&a, "TERM");
    assert_eq!(exits(a).await, Some(0));
    let mut again = serve("a2").spawn().expect("spawn");
    wait_for_log(&mut again, "scheduler started").await;
    assert_eq!(count("SELECT count(*) FROM carga.jobs").await, scheduled);
    for child in [b, again] {
        signal(&child, "TERM");
        assert_eq!(exits(child).await, Some(0));
    }
}

/// `carga serve` as deployed: its logs (JSON) carry the request id on a
/// request's lines and job id on a load's, and never a secret: the
/// database password, webhook secrets, the operator token, the NIS key, a
/// source URL's token, an Authorization header, or a person's name or NIS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_logs_hold_no_secrets_or_personal_data() {
    let mut app = TestApp::with_settings(fast_queue).await;
    let password_url = app
        .url
        .replace("postgres@", "postgres:db-password-canary-77@");
    let webhook_secret = "whsec_Y2FuYXJ5LXNlY3JldC1jYW5hcnktc2VjcmV0LTEyMzQ=";
    let token = "operator-canary-token-9d8c7b6a";
    let nis_key = "nis-key-canary-0123456789abcdef0123456789";
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let zip = sample_zip("2024-09", 300, 5);
    let urls = app.serve(vec![("a.zip", zip)]).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_carga"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &password_url)
        .env("CARGA_NIS_KEY", nis_key)
        .env("CARGA__HTTP__OPERATOR_TOKEN", token)
        .env("CARGA__WEBHOOKS__SENDERS__PORTAL__SECRETS", webhook_secret)
        .env(
            "CARGA__WEBHOOKS__SENDERS__PORTAL__DATASETS",
            "novo-bolsa-familia",
        )
        .env("CARGA__QUEUE__POLL_INTERVAL_MS", "200")
        .env("CARGA__QUEUE__SHUTDOWN_GRACE_S", "0")
        .env(
            "RUST_LOG",
            "debug,hyper=info,reqwest=info,h2=info,rustls=info,tokio_postgres=info",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let log = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "serve never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A wrong token, a right one, a bad and a good signature, with a
    // tokenised source URL: every path that handles a secret.
    let _ = http
        .get(format!("{base}/v1/jobs"))
        .bearer_auth("wrong-canary-bearer")
        .send()
        .await;
    let _ = http
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(token)
        .send()
        .await;
    let body = br#"{"dataset":"novo-bolsa-familia","period":"2024-10"}"#;
    let now = chrono::Utc::now().timestamp();
    let mut headers = common::signed(webhook_secret, "msg_canary", now, body);
    let _ = http
        .post(format!("{base}/v1/webhooks/portal"))
        .header("webhook-id", "msg_bad")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl")
        .body(body.to_vec())
        .send()
        .await;
    let mut request = http
        .post(format!("{base}/v1/webhooks/portal"))
        .body(body.to_vec());
    for (k, v) in headers.drain(..) {
        request = request.header(k, v);
    }
    assert_eq!(request.send().await.expect("webhook").status(), 202);
    // An operator load from a URL with a token in its query string (the
    // webhook's own job points at the Portal, unreachable here: it fails).
    let tokenised = format!("{}?token=url-token-canary-31", urls["a.zip"]);
    let load = app
        .enqueue_sealed(
            "2024-09",
            Some(&tokenised),
            carga::service::queue::Priority::Fresh,
            nis_key,
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state: String = app.job_row(load.id, "state").await.get(0);
        if state == "succeeded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job never succeeded ({state})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, "TERM");
    assert_eq!(exits(child).await, Some(0));
    // Nor in a table: the job keeps its URL redacted, the token sealed.
    let stored: i64 = app
        .client()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM carga.jobs WHERE url LIKE '%canary%' OR url_sealed::text LIKE '%canary%')
                  + (SELECT count(*) FROM carga.loads WHERE source_url LIKE '%canary%')",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(stored, 0, "the URL's token was stored in clear");
    let lines = log.await.expect("log");
    let text = lines.join("\n");
    for canary in [
        "db-password-canary-77",
        "Y2FuYXJ5LXNlY3JldC1jYW5hcnktc2VjcmV0LTEyMzQ",
        "operator-canary-token",
        "wrong-canary-bearer",
        "nis-key-canary",
        "url-token-canary-31",
        "BENEFICI",
        "SINT\u{c9}TICO",
    ] {
        assert!(!text.contains(canary), "{canary} appears in the log");
    }
    // Request lines carry a request id; load lines the job id.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"request_id\"") && l.contains("/v1/webhooks")),
        "no request line with its id"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("load published") && l.contains("\"job_id\"")),
        "no load line with its job id"
    );
}

/// `carga serve` started while the database is down: it serves (`/health`
/// live, `/ready` 503), keeps trying, and becomes ready and runs jobs once
/// the database is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_starts_while_the_database_is_down_and_becomes_ready() {
    let app = TestApp::with_settings(fast_queue).await;
    let proxy = common::Proxy::start().await;
    proxy.cut();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut child = carga(&app, &["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", proxy.url_for(&app.url))
        .env("CARGA__DATABASE__CREATE_TIMEOUT_MS", "1000")
        .env("CARGA__DATABASE__WAIT_TIMEOUT_MS", "1000")
        .spawn()
        .expect("spawn");
    wait_for_log(&mut child, "API listening").await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let live = http
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("live");
    assert_eq!(live.status(), 200);
    let ready = http
        .get(format!("{base}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 503, "not ready while the database is down");
    assert!(child.try_wait().expect("wait").is_none(), "serve exited");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = http
            .get(format!("{base}/ready"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready ({status})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And its workers run jobs.
    let server =
        ScriptedServer::start("a.zip", vec![Reply::Body(sample_zip("2024-10", 300, 21))]).await;
    let job = app.enqueue("2024-10", &server.url).await;
    wait_for_state(&app, job.id, "succeeded", "the job never succeeded").await;
    signal(&child, "TERM");
    assert_eq!(exits(child).await, Some(0));
}

/// `carga worker --metrics-listen` serves the process's own counters: a
/// retry done by a worker is counted where Prometheus can scrape it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_exposes_its_own_metrics() {
    let app = TestApp::with_settings(fast_queue).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let server = ScriptedServer::start(
        "a.zip",
        vec![
            Reply::Status(503, ""),
            Reply::Body(sample_zip("2024-10", 300, 22)),
        ],
    )
    .await;
    let mut child = carga(
        &app,
        &["worker", "--metrics-listen", &format!("127.0.0.1:{port}")],
    )
    .spawn()
    .expect("spawn");
    wait_for_log(&mut child, "worker started").await;
    let job = app.enqueue("2024-10", &server.url).await;
    wait_for_state(&app, job.id, "succeeded", "the job never succeeded").await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(value("carga_job_retries_total") >= 1.0, "{text}");
    // Its other answers are the API's JSON error body, with its headers.
    let missing = http
        .get(format!("http://127.0.0.1:{port}/nowhere"))
        .send()
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing
            .headers()
            .get("x-content-type-options")
            .map(|v| v.as_bytes()),
        Some(&b"nosniff"[..])
    );
    let body: serde_json::Value = missing.json().await.expect("a JSON error body");
    assert!(body["error"].is_string(), "{body}");
    assert!(
        value("carga_job_attempts_total{dataset=\"novo-bolsa-familia\",ending=\"published\"}")
            >= 1.0,
        "{text}"
    );
    signal(&child, "TERM");
    assert_eq!(exits(child).await, Some(0));
}
