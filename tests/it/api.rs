//! The HTTP API over real loopback HTTP and a real PostgreSQL: signed
//! webhooks (good, bad, stale, future, replayed, rotated, re-serialised),
//! allow-lists, body limits and slow clients, the operator endpoints and
//! their token and its throttle, readiness while the database goes away, metrics, OpenAPI.

use crate::common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{
    Api, OLD_SECRET, OPERATOR_TOKEN, SECRET, SENDER, TestApp, api_settings, client_from, signed,
};
use reqwest::StatusCode;

/// Webhook headers as (name, value).
type Headers = Vec<(&'static str, String)>;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn webhook(
    api: &Api,
    sender: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/{sender}", api.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    request.send().await.expect("send")
}

/// An operator request (with the token) to `path`: (status, JSON body or Null).
async fn operator(
    api: &Api,
    method: reqwest::Method,
    path: &str,
) -> (StatusCode, serde_json::Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", api.base))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("send");
    let status = r.status();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Asserts the response is the API's JSON error: `{"error": "<text>"}`
/// with `Content-Type: application/json` and nothing else in it.
async fn assert_error_body(r: reqwest::Response, what: &str) -> String {
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(kind.starts_with("application/json"), "{what}: {kind}");
    let body: serde_json::Value = r.json().await.expect("a JSON body");
    let object = body.as_object().expect("an object");
    assert_eq!(object.len(), 1, "{what}: {body}");
    let error = object["error"].as_str().expect("error is text");
    assert!(!error.is_empty(), "{what}");
    error.to_string()
}

async fn jobs(app: &TestApp) -> i64 {
    app.client()
        .await
        .query_one("SELECT count(*) FROM carga.jobs", &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn signed_webhooks_enqueue_and_everything_else_is_refused() {
    let app = TestApp::with_settings(api_settings).await;
    let api = app.api().await;
    let body = br#"{"dataset":"novo-bolsa-familia","period":"2024-10"}"#;
    // Good: 202 after the commit, with the job's id and status URL.
    let ok = webhook(&api, SENDER, &signed(SECRET, "msg_1", now(), body), body).await;
    assert_eq!(ok.status(), StatusCode::ACCEPTED);
    let accepted: serde_json::Value = ok.json().await.expect("json");
    let id = accepted["job_id"].as_i64().expect("id");
    assert_eq!(accepted["deduplicated"], false);
    assert_eq!(accepted["status_url"], format!("/v1/jobs/{id}"));
    let (by, sender): (String, String) = {
        let r = app.job_row(id, "enqueued_by, sender").await;
        (r.get(0), r.get(1))
    };
    assert_eq!((by.as_str(), sender.as_str()), ("webhook", SENDER));
    // Replayed webhook-id: the same job, nothing enqueued.
    let replay = webhook(&api, SENDER, &signed(SECRET, "msg_1", now(), body), body).await;
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    let replayed: serde_json::Value = replay.json().await.expect("json");
    assert_eq!(
        (replayed["job_id"].as_i64(), &replayed["deduplicated"]),
        (Some(id), &serde_json::json!(true))
    );
    // A new delivery of the same month: the pending job.
    let same = webhook(&api, SENDER, &signed(SECRET, "msg_2", now(), body), body).await;
    let same: serde_json::Value = same.json().await.expect("json");
    assert_eq!(same["job_id"].as_i64(), Some(id));
    // Signed with the previous secret during a rotation: accepted.
    let rotated_body = br#"{"dataset":"bpc","period":"2024-10"}"#;
    let rotated = webhook(
        &api,
        SENDER,
        &signed(OLD_SECRET, "msg_3", now(), rotated_body),
        rotated_body,
    )
    .await;
    assert_eq!(rotated.status(), StatusCode::ACCEPTED);
    assert_eq!(jobs(&app).await, 2);

    // 401, with no detail, for every signature problem and an unknown sender.
    let other = "whsec_dGhpcyBpcyBub3QgdGhlIHNlbmRlcidzIGtleQ==";
    let unauthorized: Vec<(&str, Headers, &[u8])> = vec![
        ("wrong secret", signed(other, "msg_4", now(), body), body),
        ("stale", signed(SECRET, "msg_5", now() - 330, body), body),
        // Well past the 300 s tolerance: the clock moves on between signing
        // and sending, and a second boundary crossed would bring 301 inside.
        ("future", signed(SECRET, "msg_6", now() + 330, body), body),
        (
            "no signature",
            signed(SECRET, "msg_7", now(), body)[..2].to_vec(),
            body,
        ),
        (
            "re-serialised body",
            signed(SECRET, "msg_8", now(), body),
            br#"{"dataset": "novo-bolsa-familia", "period": "2024-10"}"#,
        ),
    ];
    for (what, headers, sent) in unauthorized {
        let r = webhook(&api, SENDER, &headers, sent).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            r.json::<serde_json::Value>().await.expect("json"),
            serde_json::json!({"error": "unauthorized"}),
            "{what}: the JSON error body, with no detail"
        );
    }
    let unknown = webhook(
        &api,
        "stranger",
        &signed(SECRET, "msg_9", now(), body),
        body,
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    // Signed, but the request itself is wrong.
    let cases: Vec<(&str, &[u8], StatusCode)> = vec![
        ("malformed JSON", b"{not json", StatusCode::BAD_REQUEST),
        ("bad period", br#"{"dataset":"novo-bolsa-familia","period":"2024-13"}"#, StatusCode::BAD_REQUEST),
        ("extra field", br#"{"dataset":"novo-bolsa-familia","period":"2024-10","x":1}"#, StatusCode::BAD_REQUEST),
        ("not allowed for the sender", br#"{"dataset":"garantia-safra","period":"2024-10"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        ("a month after the current one", br#"{"dataset":"novo-bolsa-familia","period":"2999-01"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        ("URL off the allow-list", br#"{"dataset":"novo-bolsa-familia","period":"2024-09","url":"https://evil.example/x.zip"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        ("loopback URL", br#"{"dataset":"novo-bolsa-familia","period":"2024-09","url":"http://127.0.0.1:8080/x.zip"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        // PostgreSQL refuses a NUL in text: refused before SQL, not a 500.
        ("NUL in the URL", br#"{"dataset":"novo-bolsa-familia","period":"2024-09","url":"https://portaldatransparencia.gov.br/x\u0000.zip"}"#, StatusCode::BAD_REQUEST),
        ("YYYYMM period", br#"{"dataset":"novo-bolsa-familia","period":"202410"}"#, StatusCode::BAD_REQUEST),
    ];
    for (i, (what, sent, status)) in cases.into_iter().enumerate() {
        let r = webhook(
            &api,
            SENDER,
            &signed(SECRET, &format!("msg_case_{i}"), now(), sent),
            sent,
        )
        .await;
        assert_eq!(r.status(), status, "{what}");
        assert_error_body(r, what).await;
    }
    // A malformed body's error says where, never quotes what it holds.
    let odd = br#"{"dataset":"novo-bolsa-familia","period":"2024-10","FULANO DE TAL":1}"#;
    let r = webhook(&api, SENDER, &signed(SECRET, "msg_odd", now(), odd), odd).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let text = r.text().await.expect("body");
    assert!(!text.contains("FULANO"), "{text}");
    // Oversized: 413, whatever the signature.
    let big = vec![b' '; 10_000];
    let r = webhook(&api, SENDER, &signed(SECRET, "msg_big", now(), &big), &big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_body(r, "oversized").await;
    assert_eq!(jobs(&app).await, 2, "nothing else was enqueued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_webhooks_for_one_month_make_one_job() {
    let app = TestApp::with_settings(api_settings).await;
    let api = std::sync::Arc::new(app.api().await);
    let body = br#"{"dataset":"novo-bolsa-familia","period":"2024-10"}"#;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            // Half are replays of one delivery, half distinct deliveries.
            let id = if i % 2 == 0 {
                "msg_same".to_string()
            } else {
                format!("msg_{i}")
            };
            let r = webhook(&api, SENDER, &signed(SECRET, &id, now(), body), body).await;
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            let v: serde_json::Value = r.json().await.expect("json");
            v["job_id"].as_i64().expect("id")
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        ids.insert(t.await.expect("task"));
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(jobs(&app).await, 1);
}

#[tokio::test]
async fn operator_endpoints_need_the_token() {
    let app = TestApp::with_settings(api_settings).await;
    let api = app.api().await;
    let http = reqwest::Client::new();
    for token in [None, Some("wrong"), Some("")] {
        let mut r = http.get(format!("{}/v1/jobs", api.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        assert_eq!(
            r.send().await.expect("send").status(),
            StatusCode::UNAUTHORIZED,
            "{token:?}"
        );
    }
    // A webhook signature is not an operator credential.
    let r = http
        .post(format!("{}/v1/datasets/novo-bolsa-familia/loads", api.base))
        .json(&serde_json::json!({"period": "2024-10"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // With the token: trigger, read, list, cancel, retry, datasets.
    let trigger = http
        .post(format!("{}/v1/datasets/novo-bolsa-familia/loads", api.base))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&serde_json::json!({"period": "2024-10"}))
        .send()
        .await
        .expect("send");
    assert_eq!(trigger.status(), StatusCode::ACCEPTED);
    let accepted: serde_json::Value = trigger.json().await.expect("json");
    let id = accepted["job_id"].as_i64().expect("id");
    let (_, job) = operator(&api, reqwest::Method::GET, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "available");
    // The same shape as `carga job --json`.
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
        .args(["job", &id.to_string(), "--json"])
        .env("DATABASE_URL", &app.url)
        .output()
        .await
        .expect("carga job");
    let from_cli: serde_json::Value = serde_json::from_slice(&cli.stdout).expect("json");
    let keys = |v: &serde_json::Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&from_cli), keys(&job));
    let (_, listed) = operator(
        &api,
        reqwest::Method::GET,
        "/v1/jobs?state=available&limit=5",
    )
    .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let (bad_state, _) = operator(&api, reqwest::Method::GET, "/v1/jobs?state=bogus").await;
    assert_eq!(bad_state, StatusCode::BAD_REQUEST);
    let (_, cancel) = operator(
        &api,
        reqwest::Method::POST,
        &format!("/v1/jobs/{id}/cancel"),
    )
    .await;
    assert_eq!(cancel["state"], "cancelled");
    let (again, _) = operator(
        &api,
        reqwest::Method::POST,
        &format!("/v1/jobs/{id}/cancel"),
    )
    .await;
    assert_eq!(again, StatusCode::CONFLICT);
    let (retry, _) = operator(&api, reqwest::Method::POST, &format!("/v1/jobs/{id}/retry")).await;
    assert_eq!(retry, StatusCode::OK);
    let (missing, _) = operator(&api, reqwest::Method::GET, "/v1/jobs/999999").await;
    assert_eq!(missing, StatusCode::NOT_FOUND);
    let (_, datasets) = operator(&api, reqwest::Method::GET, "/v1/datasets").await;
    assert!(
        datasets
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d["dataset"] == "novo-bolsa-familia"))
    );
}

async fn with_token(http: &reqwest::Client, api: &Api, token: &str) -> reqwest::Response {
    http.get(format!("{}/v1/jobs", api.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
}

/// Guessing the token online: after five free failures an address waits a
/// growing delay before its next token is even compared (429, Retry-After,
/// a JSON error), concurrent guesses do not slip past it, other addresses
/// are not slowed down, and a success resets the address.
#[tokio::test]
async fn failed_tokens_slow_down_the_guessing_address_only() {
    let app = TestApp::with_settings(api_settings).await;
    let api = app.api().await;
    let attacker = client_from([127, 0, 0, 2]);
    let operator = client_from([127, 0, 0, 3]);
    for _ in 0..6 {
        let r = with_token(&attacker, &api, "guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right token is not compared during the wait.
    let r = with_token(&attacker, &api, OPERATOR_TOKEN).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let body: serde_json::Value = r.json().await.expect("a JSON body");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("retry")),
        "{body}"
    );
    // The operator, elsewhere, is not slowed down.
    let r = with_token(&operator, &api, OPERATOR_TOKEN).await;
    assert_eq!(r.status(), StatusCode::OK);

    // Once the wait is over the right token works, and resets the count.
    let deadline = Instant::now() + Duration::from_secs(retry_after + 10);
    loop {
        let r = with_token(&attacker, &api, OPERATOR_TOKEN).await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < deadline, "still refused after Retry-After");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        let r = with_token(&attacker, &api, "guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "reset by the success");
    }

    // Fifty guesses at once from a fresh address: five free ones and the
    // sixth are compared, the rest wait.
    let burst = client_from([127, 0, 0, 4]);
    let answers =
        futures::future::join_all((0..50).map(|_| with_token(&burst, &api, "guess"))).await;
    let compared = answers
        .iter()
        .filter(|r| r.status() == StatusCode::UNAUTHORIZED)
        .count();
    let waiting = answers
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((compared, waiting), (6, 44));
}

/// `/ready` answers 503 while the database is away and 200 once it is back;
/// `/health` answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_follows_the_database() {
    let app = TestApp::with_settings(api_settings).await;
    let proxy = common::Proxy::start().await;
    let mut settings = app.ctx.settings.clone();
    settings.database.wait_timeout_ms = 1_000;
    settings.database.create_timeout_ms = 1_000;
    let target = carga::db::Target {
        config: std::str::FromStr::from_str(&proxy.url_for(&app.url)).expect("config"),
        description: "proxy".into(),
        created: false,
        tls: app.ctx.tls.clone(),
    };
    let api = app.api_on(settings, target).await;
    let http = reqwest::Client::new();
    let ready = |http: reqwest::Client, base: String| async move {
        http.get(format!("{base}/ready"))
            .send()
            .await
            .expect("send")
    };
    let r = ready(http.clone(), api.base.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert!(body["database_encrypted"].is_boolean(), "{body}");
    assert!(body["pool"]["max_size"].as_u64().is_some_and(|n| n > 0));
    assert!(
        body["pool"]["driver"]
            .as_str()
            .is_some_and(|d| d.contains("tokio-postgres"))
    );
    proxy.cut();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ready(http.clone(), api.base.clone()).await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            let body: serde_json::Value = r.json().await.expect("json");
            assert_eq!(body["database"], "unreachable");
            break;
        }
        assert!(Instant::now() < deadline, "/ready never turned 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = http
        .get(format!("{}/health", api.base))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), StatusCode::OK);
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready(http.clone(), api.base.clone()).await.status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "/ready never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Metrics parse as Prometheus text, and their counters move after a load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_prometheus_text_and_move_after_a_load() {
    let mut app = TestApp::with_settings(api_settings).await;
    let api = app.api().await;
    let urls = app
        .serve(vec![("a.zip", common::sample_zip("2024-10", 1_000, 3))])
        .await;
    let scrape = || async {
        let text = reqwest::get(format!("{}/metrics", api.base))
            .await
            .expect("send")
            .text()
            .await
            .expect("text");
        parse_prometheus(&text)
    };
    let before = scrape().await;
    app.enqueue("2024-10", &urls["a.zip"]).await;
    let ran = app.runner().run_one().await.expect("run");
    assert!(
        matches!(ran, carga::service::runner::RunOne::Ran { ref ending, .. } if ending == "published")
    );
    let after = scrape().await;
    let sum = |m: &std::collections::HashMap<String, f64>, prefix: &str| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    // Counters are process-wide (other tests in this binary may load too).
    assert!(
        sum(&after, "carga_rows_loaded_total{")
            >= sum(&before, "carga_rows_loaded_total{") + 1_000.0
    );
    assert!(sum(&after, "carga_job_attempts_total{") > sum(&before, "carga_job_attempts_total{"));
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("carga_load_duration_seconds_bucket{"))
    );
    assert!(after.contains_key("carga_jobs{state=\"succeeded\"}"));
    assert!(after.keys().any(|k| {
        k.starts_with("carga_last_published_timestamp_seconds{dataset=\"novo-bolsa-familia\"")
    }));
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("carga_http_requests_total{"))
    );
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("carga_pool_connections{"))
    );
    // Every family, the load's too, has HELP and TYPE.
    let text = reqwest::get(format!("{}/metrics", api.base))
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert_eq!(families_without_help(&text), Vec::<String>::new(), "{text}");
}

/// Every sample line of a Prometheus text exposition, by series (name and
/// labels); fails on a line that is not a comment or a `series value`.
fn parse_prometheus(text: &str) -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        out.insert(series.to_string(), value);
    }
    out
}

/// Slow clients: headers that never finish are cut at the header timeout,
/// a body that trickles gets 408 at the request timeout, and a flood of
/// idle connections does not stop the API from answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_and_the_api_keeps_answering() {
    let app = TestApp::with_settings(|s| {
        api_settings(s);
        s.http.max_connections = 8;
    })
    .await;
    let api = app.api().await;
    let addr = api.base.trim_start_matches("http://").to_string();
    // A flood of connections that never send a whole header.
    let mut flood = Vec::new();
    for _ in 0..32 {
        let addr = addr.clone();
        flood.push(std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
            s.set_read_timeout(Some(Duration::from_secs(20))).ok();
            let started = Instant::now();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf); // returns when the server closes
            started.elapsed()
        }));
    }
    let started = Instant::now();
    let health = reqwest::Client::new()
        .get(format!("{}/health", api.base))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the API still answers");
    assert_eq!(health.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    for f in flood {
        let held = f.join().expect("thread");
        assert!(
            held < Duration::from_secs(15),
            "a slow header was held {held:?}"
        );
    }
    // A body that trickles: 408 when the request timeout passes.
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.write_all(b"POST /v1/webhooks/portal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = TestApp::with_settings(api_settings).await;
    let api = app.api().await;
    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", api.base))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/v1/webhooks/{sender}",
        "/v1/jobs",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/cancel",
        "/v1/jobs/{id}/retry",
        "/v1/datasets",
        "/v1/datasets/{dataset}/loads",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is missing");
    }
    assert!(doc["components"]["schemas"]["JobView"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // What the API accepts, in the schema: months as YYYY-MM, datasets and
    // states as enums of what is loaded, the limit's range.
    let schemas = &doc["components"]["schemas"];
    let pattern = "^(19|2[0-9])[0-9]{2}-(0[1-9]|1[0-2])$";
    assert_eq!(
        schemas["LoadBody"]["properties"]["period"]["pattern"],
        pattern
    );
    assert_eq!(
        schemas["WebhookBody"]["properties"]["period"]["pattern"],
        pattern
    );
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let payments = names(&schemas["WebhookBody"]["properties"]["dataset"]["enum"]);
    assert!(
        payments.contains(&"novo-bolsa-familia".to_string()),
        "{payments:?}"
    );
    assert!(
        !payments.contains(&"municipios".to_string()) && !payments.contains(&"cras".to_string()),
        "a webhook names a dataset with periods"
    );
    let parameter = |path: &str, method: &str, name: &str| -> serde_json::Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{path} {name}"))
    };
    // An operator may ask for any dataset, a snapshot (on demand) too.
    let load_dataset = parameter("/v1/datasets/{dataset}/loads", "post", "dataset");
    let loadable = names(&load_dataset["schema"]["enum"]);
    assert!(
        payments.iter().all(|p| loadable.contains(p))
            && loadable.contains(&"cras".to_string())
            && loadable.contains(&"municipios".to_string()),
        "{loadable:?}"
    );
    let filter = parameter("/v1/jobs", "get", "dataset");
    assert!(names(&filter["schema"]["enum"]).contains(&"municipios".to_string()));
    let state = parameter("/v1/jobs", "get", "state");
    assert_eq!(
        names(&state["schema"]["enum"]),
        carga::service::queue::STATES.to_vec()
    );
    let limit = parameter("/v1/jobs", "get", "limit");
    assert_eq!(
        (
            limit["schema"]["minimum"].as_i64(),
            limit["schema"]["maximum"].as_i64()
        ),
        (Some(1), Some(10_000))
    );
    // 503 with Retry-After wherever the database is asked.
    for (path, method) in [
        ("/v1/jobs", "get"),
        ("/v1/jobs/{id}", "get"),
        ("/v1/webhooks/{sender}", "post"),
    ] {
        let unavailable = &doc["paths"][path][method]["responses"]["503"];
        assert!(unavailable["headers"]["Retry-After"].is_object(), "{path}");
    }
    // 429 with Retry-After on every endpoint behind the operator token
    // (the throttle of wrong tokens answers it).
    for (path, method) in [
        ("/v1/jobs", "get"),
        ("/v1/jobs/{id}", "get"),
        ("/v1/jobs/{id}/cancel", "post"),
        ("/v1/jobs/{id}/retry", "post"),
        ("/v1/datasets", "get"),
        ("/v1/datasets/{dataset}/loads", "post"),
    ] {
        let throttled = &doc["paths"][path][method]["responses"]["429"];
        assert!(throttled["headers"]["Retry-After"].is_object(), "{path}");
    }
    // 409 where a request can meet a pending job it cannot merge into.
    for (path, method) in [
        ("/v1/datasets/{dataset}/loads", "post"),
        ("/v1/webhooks/{sender}", "post"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]["409"].is_object(),
            "{path}"
        );
    }
}

/// A webhook may name a source on its dataset's allow-list; the download
/// then re-checks every redirect, so an allowed host cannot bounce the
/// worker to one that is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_source_cannot_redirect_off_the_allow_list() {
    let target = common::ScriptedServer::start(
        "x.zip",
        vec![common::Reply::Body(common::sample_zip("2024-10", 100, 1))],
    )
    .await;
    // The same loopback server by another name: not on the list.
    let elsewhere = target.url.replace("127.0.0.1", "localhost");
    let bouncer =
        common::ScriptedServer::start("r.zip", vec![common::Reply::Redirect(elsewhere)]).await;
    // The bouncer's own origin (host and port) is listed, as an operator
    // would list an internal mirror.
    let origin = bouncer.url.trim_end_matches("/r.zip").to_string();
    let jobs = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir("jobs").expect("jobs") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).expect("spec").replace(
                "allowed_sources = [\"https://portaldatransparencia.gov.br\"",
                &format!(
                    "allowed_sources = [\"{origin}\", \"https://portaldatransparencia.gov.br\""
                ),
            );
            std::fs::write(jobs.path().join(path.file_name().expect("name")), text).expect("write");
        }
    }
    let dir = jobs.path().to_path_buf();
    let app = TestApp::with_settings(|s| {
        api_settings(s);
        s.load.jobs_dir = dir;
    })
    .await;
    let api = app.api().await;
    let body = format!(
        r#"{{"dataset":"novo-bolsa-familia","period":"2024-10","url":"{}"}}"#,
        bouncer.url
    );
    let r = webhook(
        &api,
        SENDER,
        &signed(SECRET, "msg_r", now(), body.as_bytes()),
        body.as_bytes(),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "the listed loopback host is allowed"
    );
    let ran = app.runner().run_one().await.expect("run");
    assert!(
        matches!(ran, carga::service::runner::RunOne::Ran { .. }),
        "{ran:?}"
    );
    let (state, code, error, attempts): (String, String, String, i32) = {
        let r = app
            .client()
            .await
            .query_one(
                "SELECT state, error_code, error, attempt FROM carga.jobs",
                &[],
            )
            .await
            .expect("job");
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    // A policy refusal is fatal: no retries, and the source asked once.
    assert_eq!(
        (state.as_str(), code.as_str(), attempts),
        ("failed", "redirect_refused", 1),
        "{error}"
    );
    assert!(error.contains("redirect refused"), "{error}");
    assert_eq!(
        bouncer.requests.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        target.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "never fetched"
    );
}

/// Connects to `server` from `local` (any 127/8 address: a distinct peer).
async fn connect_from(local: [u8; 4], server: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((local, 0)))
        .expect("bind a loopback source address");
    socket
        .connect(server.parse().expect("server address"))
        .await
        .expect("connect")
}

/// Reads until the server closes the connection; how long that took from
/// `since` (None: still open at `limit`).
async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = since + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {} // an HTTP/2 server's SETTINGS frame, say
        }
    }
}

/// Idle connections cannot take the HTTP side down: more silent (or
/// HTTP/2-preface-only) sockets than the server has slots, from several
/// peers, leave `/health` answering within a second; a peer gets no more
/// than its share; each idle socket is closed once the idle timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_cannot_hold_the_server() {
    const IDLE_S: u64 = 2;
    let app = TestApp::with_settings(|s| {
        api_settings(s);
        s.http.max_connections = 16;
        s.http.max_connections_per_address = 4;
        s.http.idle_timeout_s = IDLE_S;
    })
    .await;
    let api = app.api().await;
    let addr = api.base.trim_start_matches("http://").to_string();

    // A peer trying to take more than its share once half the slots are
    // taken: the extra socket is closed at once.
    let mut own_share = Vec::new();
    for _ in 0..8 {
        own_share.push(connect_from([127, 0, 0, 10], &addr).await);
    }
    let mut greedy = connect_from([127, 0, 0, 10], &addr).await;
    let greedy_opened = Instant::now();
    assert!(
        closed_within(&mut greedy, greedy_opened, Duration::from_secs(1))
            .await
            .is_some(),
        "a peer over its share must be closed at once"
    );
    drop(own_share);

    // Eight peers (127.0.0.2 ..= 127.0.0.9) × 4 idle sockets: twice the cap.
    let opened = Instant::now();
    let mut idle = Vec::new();
    for peer in 2..=9u8 {
        for n in 0..4 {
            let mut s = connect_from([127, 0, 0, peer], &addr).await;
            if n % 2 == 1 {
                use tokio::io::AsyncWriteExt;
                s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                    .await
                    .expect("preface");
            }
            idle.push(s);
        }
    }
    let started = Instant::now();
    let health = reqwest::Client::new()
        .get(format!("{}/health", api.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("the API answers while idle sockets are held");
    assert_eq!(health.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/health took {:?}",
        started.elapsed()
    );

    // Every idle socket is closed by the idle timeout (or earlier, evicted
    // to make room), never held longer.
    for (i, s) in idle.iter_mut().enumerate() {
        let held = closed_within(s, opened, Duration::from_secs(IDLE_S + 5)).await;
        assert!(
            held.is_some(),
            "idle socket {i} was still open after {:?}",
            opened.elapsed()
        );
    }
}

/// Every error an operator endpoint can give is the JSON error body, with
/// a status `/openapi.json` declares for that operation: a path id or a
/// limit out of `i64`'s range, a NUL in a filter, a body that is not JSON,
/// no token, an unknown route and a wrong method (schemathesis found
/// axum's text/plain 400 for the first ones).
#[tokio::test]
async fn every_api_error_is_the_documented_json_body() {
    let app = TestApp::with_settings(api_settings).await;
    let api = app.api().await;
    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", api.base))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let http = reqwest::Client::new();
    let too_big = "9223372036854775808";
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    // (what, method, path, documented path, status)
    let cases: Vec<(&str, reqwest::Method, String, &str, StatusCode)> = vec![
        (
            "id past i64",
            get.clone(),
            format!("/v1/jobs/{too_big}"),
            "/v1/jobs/{id}",
            StatusCode::BAD_REQUEST,
        ),
        (
            "id not a number",
            get.clone(),
            "/v1/jobs/abc".into(),
            "/v1/jobs/{id}",
            StatusCode::BAD_REQUEST,
        ),
        (
            "cancel, id past i64",
            post.clone(),
            format!("/v1/jobs/{too_big}/cancel"),
            "/v1/jobs/{id}/cancel",
            StatusCode::BAD_REQUEST,
        ),
        (
            "retry, id past i64",
            post.clone(),
            format!("/v1/jobs/{too_big}/retry"),
            "/v1/jobs/{id}/retry",
            StatusCode::BAD_REQUEST,
        ),
        (
            "limit past i64",
            get.clone(),
            format!("/v1/jobs?limit={too_big}"),
            "/v1/jobs",
            StatusCode::BAD_REQUEST,
        ),
        (
            "limit 0",
            get.clone(),
            "/v1/jobs?limit=0".into(),
            "/v1/jobs",
            StatusCode::BAD_REQUEST,
        ),
        (
            "NUL in the dataset filter",
            get.clone(),
            "/v1/jobs?dataset=bpc%00x".into(),
            "/v1/jobs",
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown dataset filter",
            get.clone(),
            "/v1/jobs?dataset=nope".into(),
            "/v1/jobs",
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown state",
            get.clone(),
            "/v1/jobs?state=bogus".into(),
            "/v1/jobs",
            StatusCode::BAD_REQUEST,
        ),
        (
            "no such job",
            get.clone(),
            "/v1/jobs/999999".into(),
            "/v1/jobs/{id}",
            StatusCode::NOT_FOUND,
        ),
    ];
    for (what, method, path, documented, status) in cases {
        let r = http
            .request(method.clone(), format!("{}{path}", api.base))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), status, "{what}");
        assert_error_body(r, what).await;
        let declared =
            &doc["paths"][documented][method.as_str().to_lowercase()]["responses"][status.as_str()];
        assert!(
            declared["content"]["application/json"]["schema"]["$ref"]
                .as_str()
                .is_some_and(|r| r.ends_with("/ErrorBody")),
            "{what}: {status} is not declared with the error body on {documented}"
        );
    }
    // Bodies: not JSON, malformed, a period that is not YYYY-MM, a NUL.
    let loads = format!("{}/v1/datasets/novo-bolsa-familia/loads", api.base);
    let bodies: Vec<(&str, &str, &str, StatusCode)> = vec![
        (
            "form body",
            "application/x-www-form-urlencoded",
            "period=2024-10",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "malformed JSON",
            "application/json",
            "{\"period\":",
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown field",
            "application/json",
            r#"{"period":"2024-10","FULANO":1}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "YYYYMM",
            "application/json",
            r#"{"period":"202410"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "NUL in the period",
            "application/json",
            r#"{"period":"2024-10\u0000"}"#,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, kind, body, status) in bodies {
        let r = http
            .post(&loads)
            .bearer_auth(OPERATOR_TOKEN)
            .header("content-type", kind)
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), status, "{what}");
        let error = assert_error_body(r, what).await;
        assert!(!error.contains("FULANO"), "where, not what: {error}");
        assert!(
            doc["paths"]["/v1/datasets/{dataset}/loads"]["post"]["responses"][status.as_str()]
                .is_object(),
            "{what}: {status} not declared"
        );
    }
    // No token: 401, still the JSON error, with its challenge.
    let r = http
        .get(format!("{}/v1/jobs", api.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_error_body(r, "no token").await;
    // An unknown route and a wrong method.
    let r = http
        .get(format!("{}/v1/nothing-here", api.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_error_body(r, "unknown route").await;
    let r = http
        .delete(format!("{}/v1/jobs", api.base))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers().contains_key("allow"));
    assert_error_body(r, "wrong method").await;
    assert_eq!(jobs(&app).await, 0, "nothing was enqueued");
}

/// While the database is away the API answers 503 with `Retry-After` and
/// the JSON error (not 500), the console a readable 503 page; once it is
/// back, 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_and_the_console_answer_503_while_the_database_is_away() {
    let app = TestApp::with_settings(api_settings).await;
    let proxy = common::Proxy::start().await;
    let mut settings = app.ctx.settings.clone();
    settings.database.wait_timeout_ms = 1_000;
    settings.database.create_timeout_ms = 1_000;
    let target = carga::db::Target {
        config: std::str::FromStr::from_str(&proxy.url_for(&app.url)).expect("config"),
        description: "proxy".into(),
        created: false,
        tls: app.ctx.tls.clone(),
    };
    let api = app.api_on(settings, target).await;
    let (status, _) = operator(&api, reqwest::Method::GET, "/v1/jobs").await;
    assert_eq!(status, StatusCode::OK);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = http
        .post(format!("{}/console/login", api.base))
        .form(&[("token", OPERATOR_TOKEN)])
        .send()
        .await
        .expect("login");
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("cookie")
        .to_string();
    proxy.cut();
    // The proxy notices the cut within milliseconds: wait for the first 503.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http
            .get(format!("{}/v1/jobs", api.base))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .expect("send");
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert_eq!(r.status(), StatusCode::OK, "never a 500");
        assert!(Instant::now() < deadline, "the API never answered 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let webhook_body = br#"{"dataset":"novo-bolsa-familia","period":"2024-10"}"#;
    let requests = [
        (reqwest::Method::GET, "/v1/jobs", None),
        (reqwest::Method::GET, "/v1/jobs/1", None),
        (reqwest::Method::GET, "/v1/datasets", None),
        (reqwest::Method::POST, "/v1/jobs/1/cancel", None),
        (reqwest::Method::POST, "/v1/jobs/1/retry", None),
        (
            reqwest::Method::POST,
            "/v1/datasets/novo-bolsa-familia/loads",
            Some(br#"{"period":"2024-10"}"#.to_vec()),
        ),
    ];
    for (method, path, body) in requests {
        let mut r = http
            .request(method, format!("{}{path}", api.base))
            .bearer_auth(OPERATOR_TOKEN);
        if let Some(body) = body {
            r = r.header("content-type", "application/json").body(body);
        }
        let r = r.send().await.expect("send");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(r.headers()["retry-after"], "5", "{path}");
        let error = assert_error_body(r, path).await;
        assert!(!error.contains("127.0.0.1"), "no detail: {error}");
    }
    let r = webhook(
        &api,
        SENDER,
        &signed(SECRET, "msg_down", now(), webhook_body),
        webhook_body,
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "webhook");
    assert!(r.headers().contains_key("retry-after"));
    assert_error_body(r, "webhook").await;
    for path in ["/console", "/console/jobs", "/console/loads/1"] {
        let r = http
            .get(format!("{}{path}", api.base))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(r.headers().contains_key("retry-after"), "{path}");
        let html = r.text().await.expect("text");
        assert!(
            html.contains("<h1>The database is unavailable</h1>"),
            "{path}: {html}"
        );
    }
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while operator(&api, reqwest::Method::GET, "/v1/jobs").await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the API never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `# HELP` and `# TYPE` for every family of a Prometheus text, and the
/// families whose samples have neither.
fn families_without_help(text: &str) -> Vec<String> {
    let declared = |kind: &str| -> std::collections::HashMap<String, String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(kind))
            .filter_map(|l| {
                let (name, rest) = l.split_once(' ')?;
                Some((name.to_string(), rest.to_string()))
            })
            .collect()
    };
    let (help, types) = (declared("# HELP "), declared("# TYPE "));
    let mut missing = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let series = line.split([' ', '{']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = series.strip_suffix(suffix)?;
                matches!(
                    types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                )
                .then_some(base)
            })
            .unwrap_or(series);
        let described = help.get(family).is_some_and(|h| !h.trim().is_empty());
        let complete = described && types.contains_key(family);
        if !complete && !missing.iter().any(|m| m == family) {
            missing.push(family.to_string());
        }
    }
    missing
}

/// A fresh `carga serve` (its own process, so no other test's counts):
/// every family on `/metrics` has `# HELP` and `# TYPE` (promtool refuses
/// a family without HELP), and the counters alert rules take `increase()`
/// of are there at 0 before anything happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_describes_every_metric_and_starts_alerted_counters_at_zero() {
    use tokio::io::AsyncBufReadExt;
    let app = TestApp::new().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
        .args(["serve", "--listen", "127.0.0.1:0", "--concurrency", "0"])
        .env("DATABASE_URL", &app.url)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("carga serve");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["message"] == "API listening" {
                return event["address"].as_str().map(str::to_string);
            }
        }
        None
    })
    .await
    .expect("serve reported its address in time")
    .expect("an address");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    let missing = families_without_help(&text);
    assert!(missing.is_empty(), "no HELP or TYPE: {missing:?}\n{text}");
    let samples = parse_prometheus(&text);
    for series in [
        "carga_job_rescues_total",
        "carga_job_retries_total{dataset=\"novo-bolsa-familia\"}",
        "carga_job_retries_total{dataset=\"bpc\"}",
        "carga_job_attempts_total{dataset=\"novo-bolsa-familia\",ending=\"failed\"}",
        "carga_job_attempts_total{dataset=\"bpc\",ending=\"retry\"}",
        "carga_job_attempts_total{dataset=\"bpc\",ending=\"published\"}",
    ] {
        assert_eq!(samples.get(series), Some(&0.0), "{series} at 0\n{text}");
    }
    for family in [
        "carga_job_rescues_total",
        "carga_job_attempts_total",
        "carga_jobs",
    ] {
        assert!(text.contains(&format!("# HELP {family} ")), "{family}");
    }
    child.kill().await.expect("stop serve");
}
