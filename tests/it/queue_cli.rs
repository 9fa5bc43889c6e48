//! The operator's commands on the queue, through the real binary:
//! enqueue (the id alone on stdout, deduplicated), `--wait`, backfill,
//! jobs, job --json, cancel, retry, schedule; and history retention.

use crate::common;

use std::process::Output;

use common::{Reply, ScriptedServer, TestApp, fast_queue, sample_zip};

async fn carga(app: &TestApp, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
        .args(args)
        .env("DATABASE_URL", &app.url)
        .env("CARGA_NIS_KEY", common::NIS_KEY)
        .env("CARGA__QUEUE__HEARTBEAT_S", "1")
        .env("CARGA__QUEUE__POLL_INTERVAL_MS", "200")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run carga")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test]
async fn enqueue_prints_the_job_id_and_deduplicates() {
    let app = TestApp::with_settings(fast_queue).await;
    let first = carga(
        &app,
        &["enqueue", "novo-bolsa-familia", "--period", "2024-10"],
    )
    .await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let id: i64 = stdout(&first).parse().expect("the id alone on stdout");
    assert!(stderr(&first).contains("enqueued"), "{}", stderr(&first));
    let again = carga(
        &app,
        &["enqueue", "novo-bolsa-familia", "--period", "2024-10"],
    )
    .await;
    assert_eq!(stdout(&again), id.to_string());
    assert!(
        stderr(&again).contains("deduplicated"),
        "{}",
        stderr(&again)
    );
    // Usage errors exit 2: a bad period, a reference dataset, out of bounds.
    for args in [
        &["enqueue", "novo-bolsa-familia", "--period", "2024-13"][..],
        &["enqueue", "municipios", "--period", "2024-10"][..],
        &["enqueue", "auxilio-brasil", "--period", "2024-10"][..],
        &["enqueue", "novo-bolsa-familia", "--period", "2999-01"][..],
        &["job", "999999"][..],
    ] {
        let out = carga(&app, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // job --json has a top-level state; cancel a waiting job at once.
    let json = carga(&app, &["job", &id.to_string(), "--json"]).await;
    let job: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(job["state"], "available");
    assert_eq!(job["enqueued_by"], "operator");
    let cancel = carga(&app, &["cancel", &id.to_string()]).await;
    assert_eq!(stdout(&cancel), "cancelled");
    let retry = carga(&app, &["retry", &id.to_string()]).await;
    assert_eq!(stdout(&retry), id.to_string());
    assert_eq!(app.job_state(id).await, "available");
    let listed = carga(&app, &["jobs", "--state", "available", "--json"]).await;
    let jobs: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(jobs.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn backfill_counts_new_months_and_leaves_pending_ones() {
    let app = TestApp::with_settings(fast_queue).await;
    app.enqueue("2023-05", "http://127.0.0.1:9/x.zip").await;
    let out = carga(
        &app,
        &[
            "backfill",
            "novo-bolsa-familia",
            "--from",
            "2023-03",
            "--to",
            "2023-08",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "5", "six months, one already pending");
    let priorities: Vec<(String, i16)> = app
        .client()
        .await
        .query(
            "SELECT to_char(period, 'YYYY-MM'), priority FROM carga.jobs ORDER BY period",
            &[],
        )
        .await
        .expect("jobs")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(priorities.len(), 6);
    assert!(
        priorities
            .iter()
            .all(|(p, prio)| (p == "2023-05") == (*prio == 0)),
        "{priorities:?}"
    );
    // Before the program existed: refused as a whole.
    let out = carga(
        &app,
        &[
            "backfill",
            "novo-bolsa-familia",
            "--from",
            "2022-11",
            "--to",
            "2023-04",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test]
async fn enqueue_wait_follows_the_job_to_its_end() {
    let app = TestApp::with_settings(fast_queue).await;
    let good =
        ScriptedServer::start("a.zip", vec![Reply::Body(sample_zip("2024-10", 500, 6))]).await;
    let waiting = {
        let url = app.url.clone();
        let good = good.url.clone();
        tokio::spawn(async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
                .args([
                    "enqueue",
                    "novo-bolsa-familia",
                    "--period",
                    "2024-10",
                    "--url",
                    &good,
                    "--wait",
                ])
                .env("DATABASE_URL", url)
                .env("RUST_LOG", "warn")
                .output()
                .await
                .expect("run")
        })
    };
    // A worker picks it up.
    let runner = app.runner();
    let ran = loop {
        match runner.run_one().await.expect("run") {
            carga::service::runner::RunOne::Empty => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            ran => break ran,
        }
    };
    assert!(
        matches!(ran, carga::service::runner::RunOne::Ran { ref ending, .. } if ending == "published"),
        "{ran:?}"
    );
    let out = waiting.await.expect("task");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("succeeded"), "{}", stderr(&out));
    // A job that fails: --wait exits 1 with its error.
    let bad = ScriptedServer::start("b.zip", vec![Reply::Status(403, "")]).await;
    let waiting = {
        let url = app.url.clone();
        let bad = bad.url.clone();
        tokio::spawn(async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
                .args([
                    "enqueue",
                    "novo-bolsa-familia",
                    "--period",
                    "2024-09",
                    "--url",
                    &bad,
                    "--wait",
                ])
                .env("DATABASE_URL", url)
                .env("RUST_LOG", "warn")
                .output()
                .await
                .expect("run")
        })
    };
    while let carga::service::runner::RunOne::Empty = runner.run_one().await.expect("run") {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let out = waiting.await.expect("task");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).matches("HTTP status 403").count(),
        1,
        "one line: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn schedule_shows_freshness_and_gaps() {
    let mut app = TestApp::with_settings(fast_queue).await;
    let urls = app
        .serve(vec![
            ("a.zip", sample_zip("2023-03", 300, 1)),
            ("b.zip", sample_zip("2023-05", 300, 2)),
        ])
        .await;
    app.load("novo-bolsa-familia", "2023-03", &urls["a.zip"], false)
        .await
        .expect("load");
    app.load("novo-bolsa-familia", "2023-05", &urls["b.zip"], false)
        .await
        .expect("load");
    let out = carga(&app, &["schedule", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let nbf = all
        .as_array()
        .and_then(|a| a.iter().find(|d| d["dataset"] == "novo-bolsa-familia"))
        .expect("novo-bolsa-familia");
    assert_eq!(nbf["last_published_period"], "2023-05");
    assert_eq!(nbf["gaps"], serde_json::json!(["2023-04"]));
    assert!(nbf["next_run"].is_string());
    assert!(nbf["freshness_seconds"].as_f64().is_some_and(|s| s >= 0.0));
    let text = carga(&app, &["schedule"]).await;
    assert!(stdout(&text).contains("2023-04"), "{}", stdout(&text));
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_the_retention() {
    let app = TestApp::with_settings(fast_queue).await;
    let old = app.enqueue("2023-03", "http://127.0.0.1:9/x.zip").await;
    let recent = app.enqueue("2023-04", "http://127.0.0.1:9/x.zip").await;
    let pending = app.enqueue("2023-05", "http://127.0.0.1:9/x.zip").await;
    let client = app.client().await;
    client
        .execute(
            "UPDATE carga.jobs SET state = 'succeeded',
                    finished_at = now() - make_interval(days => CASE WHEN id = $1 THEN 400 ELSE 1 END)
             WHERE id IN ($1, $2)",
            &[&old.id, &recent.id],
        )
        .await
        .expect("backdate");
    let pruned = carga::service::queue::prune(&**client, &app.ctx.settings.queue)
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    let left: Vec<i64> = client
        .query("SELECT id FROM carga.jobs ORDER BY id", &[])
        .await
        .expect("jobs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [recent.id, pending.id]);
}

/// The read-only commands (`jobs`, `job`, `schedule`) never migrate: on a
/// database without carga's schema they say so and leave it untouched; on
/// a server that is down they say it cannot be reached (not "failed to
/// migrate").
#[tokio::test]
async fn read_only_commands_check_the_schema_and_never_migrate() {
    let empty = common::EmptyDb::new().await;
    for args in [&["jobs"][..], &["job", "1"][..], &["schedule"][..]] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
            .args(args)
            .env("DATABASE_URL", &empty.url)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run carga");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("run `carga migrate`"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let schema: Option<String> = empty
        .client()
        .await
        .query_one("SELECT to_regnamespace('carga')::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(schema, None, "a read-only command created carga's schema");

    let proxy = common::Proxy::start().await;
    proxy.cut();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
        .args(["jobs"])
        .env("DATABASE_URL", proxy.url_for(&empty.url))
        .env("CARGA__DATABASE__CREATE_TIMEOUT_MS", "1000")
        .env("CARGA__DATABASE__WAIT_TIMEOUT_MS", "1000")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run carga");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed to reach the database"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("migrate"), "{}", stderr(&out));
}
