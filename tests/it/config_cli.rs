//! The real binary's configuration and process behaviour: unknown keys, the
//! NIS key's length, exit codes for every command, asyncpg's `ssl=` values,
//! `datasets` with no database, the demo's own database, SIGTERM, the
//! terminal, and what `migrate` says when it creates the API's tables.

use crate::common;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use common::{EmptyDb, NBF_COLUMNS, NIS_KEY, TestApp, nbf_row, portal_csv, zip_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BINARY: &str = env!("CARGO_BIN_EXE_carga");

/// A server that refuses connections (nothing listens on port 1).
const DOWN_URL: &str = "postgres://postgres@127.0.0.1:1/carga";

async fn carga(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(BINARY);
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CARGA_NIS_KEY")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().await.expect("run carga")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts the exit code and that stderr's last line is one `carga: …`
/// line containing `needle`; returns stderr.
fn assert_fails(out: &Output, code: i32, needle: &str, what: &str) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}\nstdout: {stdout}\nstderr: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("carga: ") && last.contains(needle),
        "{what}: expected a line with {needle:?}:\n{stderr}"
    );
    stderr
}

fn one_row_zip(nis: &str) -> Vec<u8> {
    zip_bytes(
        "202410_NovoBolsaFamilia.csv",
        &portal_csv(
            &NBF_COLUMNS,
            &[nbf_row("202410", "7107", nis, "", "600,00")],
        ),
    )
}

#[tokio::test]
async fn unknown_keys_and_sections_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("carga.toml");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[database]\nstatement_timeout_s = 60\n").expect("write");
    for (contents, key) in [
        // A misspelt key would silently keep the 2-hour default.
        ("[database]\nstatement_timeout = 60\n", "statement_timeout"),
        ("[databse]\npool_size = 2\n", "databse"),
    ] {
        std::fs::write(&file, contents).expect("write");
        let out = carga(&["--config", file.to_str().expect("path"), "datasets"], &[]).await;
        assert_fails(&out, 2, key, contents);
    }
    for (variable, key) in [
        ("CARGA__DATABASE__STATEMENT_TIMEOUT", "statement_timeout"),
        ("CARGA__DATABSE__POOL_SIZE", "databse"),
        // One underscore after the prefix: not read by the layered config.
        ("CARGA_DATABASE__POOL_SIZE", "CARGA_DATABASE__POOL_SIZE"),
        ("CARGA_NIS_KY", "CARGA_NIS_KY"),
    ] {
        let out = carga(&["datasets"], &[(variable, "5")]).await;
        assert_fails(&out, 2, key, variable);
    }

    // Known keys, CARGA_NIS_KEY and DATABASE_URL still work.
    let app = TestApp::new().await;
    let out = carga(
        &["--config", good.to_str().expect("path"), "datasets"],
        &[
            ("DATABASE_URL", app.url.as_str()),
            ("CARGA_NIS_KEY", NIS_KEY),
            ("CARGA__DATABASE__POOL_SIZE", "2"),
            ("CARGA__HTTP__READ_TIMEOUT_S", "30"),
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("novo-bolsa-familia"), "{stdout}");
}

#[tokio::test]
async fn a_short_nis_key_exits_2_and_is_never_printed() {
    let mut app = TestApp::new().await;
    let urls = app.serve(vec![("f.zip", one_row_zip("10000000001"))]).await;
    let short = "CANARY-short-key-31-characters!";
    assert_eq!(short.chars().count(), 31);
    for key in ["k", short] {
        let out = carga(
            &[
                "run",
                "novo-bolsa-familia",
                "--period",
                "2024-10",
                "--url",
                &urls["f.zip"],
            ],
            &[("DATABASE_URL", app.url.as_str()), ("CARGA_NIS_KEY", key)],
        )
        .await;
        let stderr = assert_fails(&out, 2, "at least 32", key);
        assert!(stderr.contains("CARGA_NIS_KEY"), "{stderr}");
        let (stdout, _) = text(&out);
        assert!(
            !stderr.contains("CANARY") && !stdout.contains("CANARY"),
            "key printed: {stderr}"
        );
    }
    let n: i64 = app
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM carga.loads WHERE dataset <> 'municipios'",
            &[],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(n, 0, "a refused key must not start a load");
}

/// Configuration and usage mistakes exit 2 on every command; a server that
/// does not answer is an operational failure, exit 1.
#[tokio::test]
async fn configuration_errors_exit_2_and_a_down_server_exits_1() {
    let db = EmptyDb::new().await;
    let base = db.url.rsplit_once('/').map(|(b, _)| b).expect("url base");
    let missing_database = format!("{base}/carga_no_such_database");
    let missing_role = db
        .url
        .replace("postgres://postgres@", "postgres://carga_no_such_role@");
    let key = ("CARGA_NIS_KEY", NIS_KEY);
    let run = ["run", "novo-bolsa-familia", "--period", "2024-10"];
    let commands: [&[&str]; 5] = [
        &["migrate"],
        &["datasets"],
        &run,
        &["run", "municipios"],
        &["demo", "--rows", "10"],
    ];
    for command in commands {
        for (url, code, needle) in [
            ("mysql://h/db", 2, "not a PostgreSQL URL"),
            ("postgresql://h/db?sslmode=verify-everything", 2, "SSL mode"),
            (missing_database.as_str(), 2, "does not exist"),
            (missing_role.as_str(), 2, "carga_no_such_role"),
            (DOWN_URL, 1, "onnect"),
        ] {
            let out = carga(command, &[("DATABASE_URL", url), key]).await;
            assert_fails(&out, code, needle, &format!("{command:?} with {url}"));
        }
    }
    let out = carga(&["validate", "municipios", "/nonexistent"], &[]).await;
    assert_fails(&out, 2, "reference data", "validate municipios");
    let out = carga(&["run", "municipios", "--period", "2024-10"], &[]).await;
    assert_fails(&out, 2, "--period", "run municipios --period");
    let out = carga(&["demo", "--rows", "0"], &[]).await;
    assert_fails(&out, 2, "--rows", "demo --rows 0");
    let out = carga(&["sample"], &[]).await;
    assert_fails(&out, 2, "--zip", "sample with nothing to write");
}

/// asyncpg's `ssl=` spellings: `false` (and the modes that allow a plain
/// connection) connect; `require` connects encrypted when the server offers
/// TLS and says clearly that it does not otherwise; `true` and the
/// verifying modes without a CA are refused as configuration, naming
/// `sslrootcert`; nonsense is named. (tests/tls.rs runs every mode against
/// a server of its own.)
#[tokio::test]
async fn asyncpg_ssl_values_are_understood() {
    let db = EmptyDb::new().await;
    let asyncpg = db.url.replace(
        "postgres://postgres@",
        "postgresql+asyncpg://postgres:CANARY-PW@",
    );
    for value in ["false", "disable", "allow", "prefer"] {
        let url = format!("{asyncpg}?ssl={value}");
        let out = carga(&["migrate"], &[("DATABASE_URL", url.as_str())]).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ssl={value}: {stdout}\n{stderr}"
        );
        assert!(!stdout.contains("CANARY") && !stderr.contains("CANARY"));
    }
    let url = format!("{asyncpg}?ssl=require");
    let out = carga(&["migrate"], &[("DATABASE_URL", url.as_str())]).await;
    let (stdout, stderr) = text(&out);
    match out.status.code() {
        Some(0) => assert!(
            stdout.contains("database connection: encrypted"),
            "{stdout}"
        ),
        _ => {
            assert_fails(&out, 2, "does not offer TLS", "ssl=require");
        }
    }
    assert!(!stdout.contains("CANARY") && !stderr.contains("CANARY"));
    for value in ["true", "verify-ca", "verify-full"] {
        let url = format!("{asyncpg}?ssl={value}");
        let out = carga(&["migrate"], &[("DATABASE_URL", url.as_str())]).await;
        let stderr = assert_fails(&out, 2, "sslrootcert", &format!("ssl={value}"));
        assert!(!stderr.contains("not a PostgreSQL URL"), "{stderr}");
        assert!(!stderr.contains("CANARY"), "{stderr}");
    }
    let url = format!("{asyncpg}?ssl=maybe");
    let out = carga(&["migrate"], &[("DATABASE_URL", url.as_str())]).await;
    assert_fails(&out, 2, "ssl=maybe", "ssl=maybe");
}

#[tokio::test]
async fn datasets_fails_when_the_database_is_down_and_shows_published_periods() {
    let out = carga(&["datasets"], &[("DATABASE_URL", DOWN_URL)]).await;
    let stderr = assert_fails(&out, 1, "failed to read the last published periods", "down");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        text(&out).0.is_empty(),
        "a table was printed: {:?}",
        text(&out)
    );

    let mut app = TestApp::new().await;
    let urls = app.serve(vec![("f.zip", one_row_zip("10000000001"))]).await;
    app.load("novo-bolsa-familia", "2024-10", &urls["f.zip"], false)
        .await
        .expect("load");
    let out = carga(&["datasets"], &[("DATABASE_URL", app.url.as_str())]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("novo-bolsa-familia "))
        .expect("row");
    assert!(line.trim_end().ends_with("2024-10"), "{line}");
}

/// Drops a database when the test ends, however it ends.
struct DropDatabase(String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let _ = common::admin()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

/// `carga demo` pointed at a database holding a real published month leaves
/// it untouched: it works in a database of its own on the same server, says
/// which, and refuses a demo database that holds loads it did not make.
#[tokio::test]
async fn the_demo_never_touches_real_data() {
    let mut app = TestApp::new().await;
    let urls = app.serve(vec![("f.zip", one_row_zip("10000000001"))]).await;
    app.load("novo-bolsa-familia", "2024-10", &urls["f.zip"], false)
        .await
        .expect("real load");
    let before = app.visible_state().await;
    let ledger = || async {
        let rows = app
            .client()
            .await
            .query("SELECT id, status FROM carga.loads ORDER BY id", &[])
            .await
            .expect("ledger");
        rows.iter()
            .map(|r| format!("{}:{}", r.get::<_, i64>(0), r.get::<_, String>(1)))
            .collect::<Vec<_>>()
    };
    let loads_before = ledger().await;

    let demo_database = format!("{}_demo", app.database);
    let _cleanup = DropDatabase(demo_database.clone());
    let db_url = app
        .url
        .replace("postgres://postgres@", "postgres://postgres:CANARY-PW@");
    let env = [
        ("DATABASE_URL", db_url.as_str()),
        ("CARGA__DATABASE__DEMO_DATABASE", demo_database.as_str()),
    ];
    let out = carga(&["demo", "--rows", "500"], &env).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let said = stdout
        .lines()
        .find(|l| l.starts_with("demo database: "))
        .unwrap_or_else(|| panic!("which database? {stdout}"));
    assert!(
        said.contains(&format!("/{demo_database}")) && said.contains("created"),
        "{said}"
    );
    assert!(
        !stdout.contains("CANARY") && !stderr.contains("CANARY"),
        "password printed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("published"), "{stdout}");
    assert_eq!(
        app.visible_state().await,
        before,
        "the demo changed real data"
    );
    assert_eq!(ledger().await, loads_before);

    // Again: the demo database is reused, not created.
    let out = carga(&["demo", "--rows", "500"], &env).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains(", created"), "{stdout}");

    // A demo database holding a real load: refused, untouched.
    let out = carga(
        &["demo", "--rows", "500"],
        &[
            ("DATABASE_URL", app.url.as_str()),
            ("CARGA__DATABASE__DEMO_DATABASE", app.database.as_str()),
        ],
    )
    .await;
    assert_fails(&out, 2, "did not make", "demo into a real database");
    assert_eq!(app.visible_state().await, before);
    assert_eq!(ledger().await, loads_before);
}

/// A loopback server that sends the headers and a quarter of `body`, then
/// holds the connection open without sending more.
async fn stalling_server(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/202410_NovoBolsaFamilia.zip",
        listener.local_addr().expect("addr")
    );
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => request.extend_from_slice(&buf[..k]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/zip\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body[..body.len() / 4]).await;
                let _ = socket.flush().await;
                // Hold the connection until the client goes away.
                let _ = socket.read(&mut buf).await;
            });
        }
    });
    url
}

fn zip_of_rows(n: u64) -> Vec<u8> {
    let nis: Vec<String> = (0..n)
        .map(|i| format!("{:011}", 10_000_000_000u64 + i * 7919))
        .collect();
    let rows: Vec<Vec<&str>> = nis
        .iter()
        .map(|n| nbf_row("202410", "7107", n, "", "600,00"))
        .collect();
    zip_bytes(
        "202410_NovoBolsaFamilia.csv",
        &portal_csv(&NBF_COLUMNS, &rows),
    )
}

/// SIGTERM (`docker stop`, systemd) mid-COPY cancels like Ctrl-C: exit 1
/// with one line, the previous data untouched.
#[tokio::test]
async fn sigterm_cancels_a_running_load() {
    let mut app = TestApp::new().await;
    let urls = app
        .serve(vec![("good.zip", one_row_zip("10000000001"))])
        .await;
    app.load("novo-bolsa-familia", "2024-10", &urls["good.zip"], false)
        .await
        .expect("publish");
    let before = app.visible_state().await;
    let url = stalling_server(zip_of_rows(60_000)).await;
    let child = tokio::process::Command::new(BINARY)
        .args([
            "run",
            "novo-bolsa-familia",
            "--period",
            "2024-10",
            "--force",
            "--url",
            &url,
        ])
        .env("DATABASE_URL", &app.url)
        .env("CARGA_NIS_KEY", NIS_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    common::wait_until(
        &app,
        "SELECT count(*) FROM pg_stat_progress_copy WHERE datname = $1 AND tuples_processed > 0",
        |n| n > 0,
        "the COPY never started",
    )
    .await;
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits after SIGTERM")
        .expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or_default()
            .contains("cancelled"),
        "{stderr}"
    );
    common::wait_until(
        &app,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'COPY%' AND state <> 'idle'",
        |n| n == 0,
        "the COPY outlived the cancel",
    )
    .await;
    assert_eq!(app.visible_state().await, before);
}

/// On a terminal, `carga run` prints the summary and nothing of the
/// database's chatter (NOTICEs, refinery's version lines) or an empty bar;
/// without a terminal the JSON log stays complete.
#[tokio::test]
async fn the_terminal_shows_the_summary_and_not_the_chatter() {
    // A migrated database: `run` migrates again (the NOTICE for the
    // existing schema) and finds nothing to apply.
    let mut app = TestApp::new().await;
    let urls = app.serve(vec![("f.zip", one_row_zip("10000000001"))]).await;
    let command = format!(
        "{BINARY} run novo-bolsa-familia --period 2024-10 --url {}",
        urls["f.zip"]
    );
    let out = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("DATABASE_URL", &app.url)
        .env("CARGA_NIS_KEY", NIS_KEY)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run under script(1)");
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{terminal}");
    assert!(terminal.contains("published"), "{terminal}");
    for chatter in [
        "NOTICE",
        "already exists",
        "no migrations to apply",
        "current version",
        "INFO",
        "0 B/0 B",
    ] {
        assert!(
            !terminal.contains(chatter),
            "{chatter:?} on the terminal:\n{terminal}"
        );
    }

    // Not a terminal: JSON lines, the load's INFO events included, and
    // still no NOTICEs at the default level.
    let out = carga(
        &[
            "run",
            "novo-bolsa-familia",
            "--period",
            "2024-10",
            "--force",
            "--url",
            &urls["f.zip"],
        ],
        &[
            ("DATABASE_URL", app.url.as_str()),
            ("CARGA_NIS_KEY", NIS_KEY),
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(messages.contains(&"load started"), "{stderr}");
    assert!(!stderr.contains("NOTICE"), "{stderr}");
}

/// `carga migrate` on a database without the API's tables creates them and
/// says what that means for the API's Alembic; on the API's schema it
/// adopts them and says nothing of the kind.
#[tokio::test]
async fn migrate_says_when_it_created_the_api_tables() {
    let fresh = EmptyDb::new().await;
    let out = carga(&["migrate"], &[("DATABASE_URL", fresh.url.as_str())]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "created the API-facing tables states, municipalities, programs, beneficiary_data"
        ) && stdout.contains("alembic stamp head"),
        "{stdout}"
    );
    // Once: a second migrate created nothing.
    let out = carga(&["migrate"], &[("DATABASE_URL", fresh.url.as_str())]).await;
    let (stdout, _) = text(&out);
    assert!(stdout.contains("schema up to date"), "{stdout}");
    assert!(!stdout.contains("created the API-facing"), "{stdout}");

    let api = EmptyDb::new().await;
    api.client()
        .await
        .batch_execute(include_str!("fixtures/api_schema.sql"))
        .await
        .expect("API schema");
    let out = carga(&["migrate"], &[("DATABASE_URL", api.url.as_str())]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("applied"), "{stdout}");
    assert!(!stdout.contains("created the API-facing"), "{stdout}");
}

/// `worker` and `serve` never start a private cluster of their own: with
/// no `DATABASE_URL` and no local server to use, they exit 2 saying so,
/// and leave no cluster directory behind.
#[tokio::test]
async fn services_without_a_database_exit_2_and_start_no_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = dir.path().join("pgdata");
    let cluster_dir = cluster.to_str().expect("path").to_string();
    for args in [&["worker"][..], &["serve", "--listen", "127.0.0.1:0"][..]] {
        let out = carga(
            args,
            &[
                ("CARGA_NIS_KEY", "test-nis-key-0123456789-abcdefghijklmnop"),
                ("CARGA__DATABASE__USE_SYSTEM_SERVER", "false"),
                ("CARGA__DATABASE__LOCAL_CLUSTER_DIR", &cluster_dir),
            ],
        )
        .await;
        assert_fails(&out, 2, "set DATABASE_URL", &format!("{args:?}"));
        assert!(!cluster.exists(), "{args:?} started a private cluster");
    }
}
