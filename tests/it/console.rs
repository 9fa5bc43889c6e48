//! The operator console over real HTTP and a real PostgreSQL: what the
//! pages show (a gap and a failure where the database has them, money in
//! Brazilian format, no personal data), signing in and out, the session
//! cookie's attributes, CSRF, sessions shared and ended across processes,
//! security headers, and the assets.

use crate::common;

use common::{OPERATOR_TOKEN, TestApp, api_settings, client_from, sample_zip};
use reqwest::StatusCode;
use reqwest::redirect::Policy;

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// Signs in; returns the `Cookie` header value.
async fn sign_in(base: &str) -> String {
    sign_in_with(base, OPERATOR_TOKEN).await
}

async fn sign_in_with(base: &str, token: &str) -> String {
    let r = browser()
        .post(format!("{base}/console/login"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag");
    set.split(';').next().expect("cookie").to_string()
}

async fn page(base: &str, path: &str, cookie: &str) -> (StatusCode, String) {
    let r = browser()
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("get");
    (r.status(), r.text().await.expect("text"))
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().expect("value").to_string()
}

#[tokio::test]
async fn the_datasets_page_shows_gaps_failures_and_money() {
    let mut app = TestApp::with_settings(api_settings).await;
    let urls = app
        .serve(vec![
            ("a.zip", sample_zip("2023-03", 400, 1)),
            ("b.zip", sample_zip("2023-05", 400, 2)),
        ])
        .await;
    app.load("novo-bolsa-familia", "2023-03", &urls["a.zip"], false)
        .await
        .expect("load");
    let may = app
        .load("novo-bolsa-familia", "2023-05", &urls["b.zip"], false)
        .await
        .expect("load");
    let failed = app.enqueue("2023-06", "http://127.0.0.1:9/x.zip").await;
    app.client()
        .await
        .execute(
            "UPDATE carga.jobs SET state = 'failed', error_code = 'http_status_403', finished_at = now() WHERE id = $1",
            &[&failed.id],
        )
        .await
        .expect("fail");
    let api = app.api().await;
    let cookie = sign_in(&api.base).await;
    let (status, html) = page(&api.base, "/console", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    for (period, state) in [
        ("2023-03", "published"),
        ("2023-04", "missing"),
        ("2023-05", "published"),
        ("2023-06", "failed"),
    ] {
        assert!(
            html.contains(&format!("data-period=\"{period}\" data-state=\"{state}\"")),
            "{period} should be {state}"
        );
    }
    assert!(
        html.contains("1 failed") && html.contains("missing"),
        "the failure and the gap stand out"
    );
    // Money as the summary prints it: R$ 1.234,56.
    let value = carga::money::format_brl(may.value_cents);
    assert!(html.contains(&format!("R$ {value}")), "R$ {value}");
    assert!(html.contains("<svg"), "trends");
    // No personal data: the sample's synthetic names and NIS never appear.
    assert!(
        !html.contains("BENEFICI") && !html.contains("SINT"),
        "a name"
    );
    assert!(
        !html
            .chars()
            .collect::<Vec<_>>()
            .windows(11)
            .any(|w| w.iter().all(char::is_ascii_digit)),
        "an 11-digit number"
    );
    // The load page: ledger entry, stage bar; rejects are redacted lines.
    let (status, html) = page(
        &api.base,
        &format!("/console/loads/{}", may.load_id),
        &cookie,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("SHA-256") && html.contains("stage timings"));
    assert!(html.contains(&format!("R$ {value}")));
}

#[tokio::test]
async fn signing_in_and_out_cookies_and_csrf() {
    let app = TestApp::with_settings(api_settings).await;
    let api = app.api().await;
    let http = browser();
    // Without a session: pages send to the sign-in form; anything else is 401.
    let r = http
        .get(format!("{}/console", api.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/console/login");
    let r = http
        .get(format!("{}/console/jobs/live", api.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A wrong token.
    let r = http
        .post(format!("{}/console/login", api.base))
        .form(&[("token", "nope")])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());
    // A forged cookie.
    let (status, _) = page(&api.base, "/console", "carga_session=9999999999.AAAA.AAAA").await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    let cookie = sign_in(&api.base).await;
    let (_, html) = page(&api.base, "/console/jobs", &cookie).await;
    let csrf = csrf_in(&html);
    let job = app.enqueue("2024-10", "http://127.0.0.1:9/x.zip").await;
    // A form without the CSRF token, or with another's, is refused.
    for token in ["", "not-the-token"] {
        let r = http
            .post(format!("{}/console/jobs/{}/cancel", api.base, job.id))
            .header("cookie", &cookie)
            .form(&[("csrf", token)])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{token:?}");
    }
    assert_eq!(app.job_state(job.id).await, "available");
    // With it: cancelled.
    let r = http
        .post(format!("{}/console/jobs/{}/cancel", api.base, job.id))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.job_state(job.id).await, "cancelled");
    // The load form enqueues.
    let r = http
        .post(format!(
            "{}/console/datasets/novo-bolsa-familia/loads",
            api.base
        ))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("period", "2024-09")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let queued: i64 = app
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM carga.jobs WHERE period = '2024-09-01' AND sender = 'console'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(queued, 1);
    // Sign out: the cookie is cleared.
    let r = http
        .post(format!("{}/console/logout", api.base))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cleared = r.headers()["set-cookie"].to_str().expect("cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // Behind a TLS proxy the cookie is Secure.
    let r = http
        .post(format!("{}/console/login", api.base))
        .header("x-forwarded-proto", "https")
        .form(&[("token", OPERATOR_TOKEN)])
        .send()
        .await
        .expect("login");
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .contains("Secure")
    );
}

#[tokio::test]
async fn assets_are_embedded_and_cacheable() {
    let app = TestApp::with_settings(api_settings).await;
    let api = app.api().await;
    for (file, kind) in [
        ("console.css", "text/css"),
        ("console.js", "text/javascript"),
    ] {
        let r = reqwest::get(format!("{}/console/assets/{file}", api.base))
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .expect("type")
                .starts_with(kind)
        );
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .expect("cache")
                .contains("max-age")
        );
    }
    let r = reqwest::get(format!("{}/console/assets/../Cargo.toml", api.base))
        .await
        .expect("get");
    assert_ne!(r.status(), StatusCode::OK);
}

/// `carga serve --concurrency 0` with `token` on `listen`.
fn serve_command(app: &TestApp, listen: &str, token: Option<&str>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"));
    command
        .args(["serve", "--listen", listen, "--concurrency", "0"])
        .env("DATABASE_URL", &app.url)
        .env_remove("CARGA__HTTP__OPERATOR_TOKEN")
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("CARGA__HTTP__OPERATOR_TOKEN", token);
    }
    command
}

#[tokio::test]
async fn serve_refuses_a_public_address_without_a_strong_token() {
    let app = TestApp::new().await;
    // 31 characters: one short of the minimum.
    let weak = "weak-token-canary-0123456789abc";
    assert_eq!(weak.len(), 31);
    for (listen, token, says) in [
        ("0.0.0.0:0", Some(weak), "at least 32"),
        ("[::]:0", Some(weak), "at least 32"),
        ("0.0.0.0:0", None, "not set"),
    ] {
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            serve_command(&app, listen, token).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{listen}: serve did not refuse to start"))
        .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{listen}: {stderr}");
        assert!(
            stderr.contains("operator_token") && stderr.contains(says),
            "{listen}: {stderr}"
        );
        // Refused before anything else is done (nothing logged first).
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            !stderr.contains(weak) && !String::from_utf8_lossy(&out.stdout).contains(weak),
            "the token was printed"
        );
    }
}

#[tokio::test]
async fn serve_takes_a_short_token_on_any_loopback_address() {
    use tokio::io::AsyncBufReadExt;
    let app = TestApp::new().await;
    // 127.0.0.2 is loopback too (127.0.0.0/8).
    let mut child = serve_command(&app, "127.0.0.2:0", Some("short"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let listening = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.contains("API listening") {
                return true;
            }
        }
        false
    })
    .await
    .expect("serve started within 60 s");
    assert!(listening, "serve exited without listening");
    child.kill().await.expect("kill");
}

/// The headers every console response must carry, whatever its status.
fn assert_console_headers(r: &reqwest::Response, what: &str) {
    let h = r.headers();
    let policy = h
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    ] {
        assert!(policy.contains(directive), "{what}: {policy}");
    }
    assert!(!policy.contains("unsafe"), "{what}: {policy}");
    assert_eq!(
        h.get("x-frame-options").map(|v| v.as_bytes()),
        Some(&b"DENY"[..]),
        "{what}"
    );
    assert_eq!(
        h.get("x-content-type-options").map(|v| v.as_bytes()),
        Some(&b"nosniff"[..]),
        "{what}"
    );
    assert_eq!(
        h.get("referrer-policy").map(|v| v.as_bytes()),
        Some(&b"no-referrer"[..]),
        "{what}"
    );
}

/// What the policy would block in a page: inline script, inline style,
/// event-handler attributes, `javascript:` links.
fn assert_fits_the_policy(html: &str, what: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(
        !lower.contains(" style="),
        "{what}: an inline style attribute"
    );
    assert!(!lower.contains("<style"), "{what}: an inline stylesheet");
    assert!(!lower.contains("javascript:"), "{what}: a javascript: URL");
    for (at, _) in lower.match_indices("<script") {
        let tag = &lower[at..at + lower[at..].find('>').expect("tag end")];
        assert!(tag.contains(" src="), "{what}: an inline script");
    }
    for handler in [
        " onclick=",
        " onload=",
        " onsubmit=",
        " onchange=",
        " onerror=",
    ] {
        assert!(!lower.contains(handler), "{what}: {handler}");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_pages_fit_the_policy() {
    let app = TestApp::with_settings(api_settings).await;
    let api = app.api().await;
    let http = browser();
    // A running job, so the jobs page draws a progress bar.
    let job = app.enqueue("2024-10", "http://127.0.0.1:9/x.zip").await;
    app.client()
        .await
        .execute(
            "UPDATE carga.jobs SET state = 'running', attempt = 1, worker = 'w', lease_token = 't',
                    started_at = now(), lease_expires_at = now() + interval '1 hour',
                    progress = '{\"stage\": \"copy\", \"bytes\": 10, \"bytes_total\": 40}'
             WHERE id = $1",
            &[&job.id],
        )
        .await
        .expect("running");

    let r = http
        .get(format!("{}/console", api.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_console_headers(&r, "the redirect to sign in");
    let r = http
        .get(format!("{}/console/login", api.base))
        .send()
        .await
        .expect("get");
    assert_console_headers(&r, "the sign-in page");
    assert_fits_the_policy(&r.text().await.expect("text"), "the sign-in page");
    let r = http
        .post(format!("{}/console/login", api.base))
        .form(&[("token", "nope")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_console_headers(&r, "a refused sign-in");
    let r = http
        .get(format!("{}/console/jobs/live", api.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_console_headers(&r, "a 401");
    for asset in ["console.css", "console.js", "nothing.txt"] {
        let r = http
            .get(format!("{}/console/assets/{asset}", api.base))
            .send()
            .await
            .expect("get");
        assert_console_headers(&r, asset);
    }

    let cookie = sign_in(&api.base).await;
    for path in ["/console", "/console/jobs", "/console/jobs/live"] {
        let r = http
            .get(format!("{}{path}", api.base))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_console_headers(&r, path);
        assert_fits_the_policy(&r.text().await.expect("text"), path);
    }
    let (_, html) = page(&api.base, "/console/jobs", &cookie).await;
    assert!(
        html.contains(&format!("data-live-job=\"{}\"", job.id)) && html.contains("<progress"),
        "the running job's bar"
    );

    // The API and the other endpoints: not sniffed, not framed.
    for (path, token) in [
        ("/v1/jobs", Some(OPERATOR_TOKEN)),
        ("/v1/jobs", None),
        ("/health", None),
        ("/metrics", None),
        ("/nothing-here", None),
    ] {
        let mut request = http.get(format!("{}{path}", api.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.expect("get");
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        let policy = h["content-security-policy"].to_str().expect("policy");
        assert!(
            policy.contains("default-src 'none'") && policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
    }
}

async fn session_count(app: &TestApp) -> i64 {
    app.client()
        .await
        .query_one("SELECT count(*) FROM carga.console_sessions", &[])
        .await
        .expect("count")
        .get(0)
}

async fn sign_out(base: &str, cookie: &str) {
    let (_, html) = page(base, "/console", cookie).await;
    let r = browser()
        .post(format!("{base}/console/logout"))
        .header("cookie", cookie)
        .form(&[("csrf", csrf_in(&html))])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

/// Sessions live in the database, so two `serve` processes over one
/// database (here two servers, each with its own state) agree on them:
/// signing out on one ends the session on both, rotating the operator
/// token ends every session made with the old one, and expired sessions
/// are refused and pruned.
#[tokio::test]
async fn sessions_end_on_sign_out_and_token_rotation_on_every_process() {
    let app = TestApp::with_settings(api_settings).await;
    let one = app.api().await;
    let two = app.api().await;

    // Made on one, good on the other, forms included.
    let cookie = sign_in(&one.base).await;
    let (status, _) = page(&two.base, "/console", &cookie).await;
    assert_eq!(status, StatusCode::OK, "a session made by another process");
    // Signed out on two: over on one too, for pages and for the live feed.
    sign_out(&two.base, &cookie).await;
    for base in [&one.base, &two.base] {
        let (status, _) = page(base, "/console", &cookie).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "a signed-out session");
        let (status, _) = page(base, "/console/jobs/live", &cookie).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a signed-out session");
    }
    assert_eq!(session_count(&app).await, 0);

    // The token is rotated: a process started with the new one refuses
    // sessions made with the old, and the old token.
    let old_session = sign_in(&one.base).await;
    let new_token = "rotated-operator-token-7c41d09e2f85";
    let mut settings = app.ctx.settings.clone();
    settings.http.operator_token = secrecy::SecretString::from(new_token);
    let rotated = app.api_on(settings, app.target()).await;
    let (status, _) = page(&rotated.base, "/console", &old_session).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "a session of the old token");
    let r = browser()
        .post(format!("{}/console/login", rotated.base))
        .form(&[("token", OPERATOR_TOKEN)])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the old token");
    let new_session = sign_in_with(&rotated.base, new_token).await;
    let (status, _) = page(&rotated.base, "/console", &new_session).await;
    assert_eq!(status, StatusCode::OK);
    // (A process still on the old token does not take the new sessions.)
    let (status, _) = page(&one.base, "/console", &new_session).await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    // Expired (by the database's clock): refused, then pruned at the next sign-in.
    app.client()
        .await
        .execute(
            "UPDATE carga.console_sessions SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .expect("expire");
    let (status, _) = page(&rotated.base, "/console", &new_session).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "an expired session");
    assert_eq!(session_count(&app).await, 2);
    sign_in_with(&rotated.base, new_token).await;
    assert_eq!(session_count(&app).await, 1, "expired sessions pruned");
    // The table holds no cookie value.
    let value = new_session.split_once('=').expect("cookie").1;
    let stored: i64 = app
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM carga.console_sessions WHERE id_hash = convert_to($1, 'UTF8')",
            &[&value],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 0);
}

async fn sign_in_from(http: &reqwest::Client, base: &str, token: &str) -> reqwest::Response {
    http.post(format!("{base}/console/login"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("login")
}

/// Guessing the token through the sign-in form: after five free failures
/// the address waits before its next token is even compared (429 with
/// Retry-After and a readable page, no cookie even for the right token);
/// another address signs in at once.
#[tokio::test]
async fn failed_sign_ins_slow_down_the_guessing_address_only() {
    let app = TestApp::with_settings(api_settings).await;
    let api = app.api().await;
    let attacker = client_from([127, 0, 0, 2]);
    for _ in 0..6 {
        let r = sign_in_from(&attacker, &api.base, "guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = sign_in_from(&attacker, &api.base, OPERATOR_TOKEN).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.headers().contains_key("retry-after"));
    assert_console_headers(&r, "a throttled sign-in");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
    let html = r.text().await.expect("text");
    assert!(html.contains("Too many failed sign-ins") && html.contains("try again"));
    assert!(!html.contains(OPERATOR_TOKEN));
    assert_eq!(session_count(&app).await, 0);
    // The operator, elsewhere, signs in.
    let r = sign_in_from(&client_from([127, 0, 0, 3]), &api.base, OPERATOR_TOKEN).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(session_count(&app).await, 1);
}
