//! Transport and archive faults, served by an in-test "evil" HTTP server
//! that writes raw bytes: a body cut mid-way (with and without a strong
//! ETag to resume from), a stalled body, corrupt and oversized archives.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{NBF_COLUMNS, TestApp, nbf_row, portal_csv, zip_bytes};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// First response: headers with the full length, then half the body, then close.
    CutOnce { etag: bool },
    /// Headers and a quarter of the body, then silence.
    Stall,
    /// The first `times` requests get `503` with `Retry-After: 0`.
    Unavailable { times: usize },
    /// Headers claim this Content-Length; the real body follows, then close.
    ClaimsLength(usize),
    /// Headers, then one byte every 50 ms (20 bytes/s).
    Trickle,
}

struct EvilServer {
    url: String,
    ranged_requests: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

async fn evil_server(body: Vec<u8>, fault: Fault) -> EvilServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/202410_NovoBolsaFamilia.zip",
        listener.local_addr().expect("addr")
    );
    let ranged_requests = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (ranged, total) = (ranged_requests.clone(), requests.clone());
    let body = Arc::new(body);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            let n = total.fetch_add(1, Ordering::SeqCst);
            let ranged = ranged.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => request.extend_from_slice(&buf[..k]),
                    }
                }
                let request = String::from_utf8_lossy(&request).to_lowercase();
                let range_start = request
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .and_then(|r| r.trim().trim_end_matches('-').parse::<usize>().ok());
                let etag_line = match fault {
                    Fault::CutOnce { etag: true } => "ETag: \"v1-strong\"\r\n",
                    _ => "",
                };
                if let Fault::Unavailable { times } = fault {
                    if n < times {
                        let _ = socket
                            .write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                }
                if let Some(start) = range_start {
                    ranged.fetch_add(1, Ordering::SeqCst);
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\n{etag_line}Accept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                        body.len() - start,
                        body.len() - 1,
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&body[start..]).await;
                    return;
                }
                let length = match fault {
                    Fault::ClaimsLength(claimed) => claimed,
                    _ => body.len(),
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n{etag_line}Accept-Ranges: bytes\r\nContent-Type: application/zip\r\nConnection: close\r\n\r\n"
                );
                let _ = socket.write_all(head.as_bytes()).await;
                match fault {
                    Fault::CutOnce { .. } if n == 0 => {
                        let _ = socket.write_all(&body[..body.len() / 2]).await;
                        let _ = socket.flush().await;
                        // close without sending the rest
                    }
                    Fault::Trickle => {
                        for byte in body.iter() {
                            if socket.write_all(&[*byte]).await.is_err() {
                                return;
                            }
                            let _ = socket.flush().await;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    Fault::Stall => {
                        let _ = socket.write_all(&body[..body.len() / 4]).await;
                        let _ = socket.flush().await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    _ => {
                        let _ = socket.write_all(&body).await;
                    }
                }
            });
        }
    });
    EvilServer {
        url,
        ranged_requests,
        requests,
    }
}

/// A file big enough to be cut in the middle of its deflate stream.
fn big_zip() -> Vec<u8> {
    zip_of_rows(20_000)
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

#[tokio::test]
async fn a_broken_body_resumes_with_range_and_if_range() {
    let app = TestApp::new().await;
    let body = big_zip();
    let server = evil_server(body.clone(), Fault::CutOnce { etag: true }).await;
    let report = app
        .load("novo-bolsa-familia", "2024-10", &server.url, false)
        .await
        .expect("resumed load");
    assert_eq!(report.rows_loaded, 20_000);
    assert_eq!(server.ranged_requests.load(Ordering::SeqCst), 1);
    let sha: Vec<u8> = app
        .client()
        .await
        .query_one(
            "SELECT sha256 FROM carga.loads WHERE id = $1",
            &[&report.load_id],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(
        sha,
        Sha256::digest(&body).to_vec(),
        "the hash spans both responses"
    );
}

/// Publishes a one-row month; returns its URL and the visible state.
async fn publish_one_row(app: &mut TestApp) -> (String, String) {
    let good = zip_bytes(
        "x.csv",
        &portal_csv(
            &NBF_COLUMNS,
            &[nbf_row("202410", "7107", "10000000001", "", "1,00")],
        ),
    );
    let urls = app.serve(vec![("good.zip", good)]).await;
    app.load("novo-bolsa-familia", "2024-10", &urls["good.zip"], false)
        .await
        .expect("good");
    (urls["good.zip"].clone(), app.visible_state().await)
}

#[tokio::test]
async fn a_broken_body_without_a_validator_fails_and_keeps_the_data() {
    let mut app = TestApp::new().await;
    let (_, before) = publish_one_row(&mut app).await;
    let server = evil_server(big_zip(), Fault::CutOnce { etag: false }).await;
    let err = app
        .load("novo-bolsa-familia", "2024-10", &server.url, true)
        .await
        .expect_err("cut");
    assert!(
        ["http_body_failed", "download_truncated"].contains(&&*err.code().as_str()),
        "{}: {err}",
        err.code()
    );
    assert_eq!(server.ranged_requests.load(Ordering::SeqCst), 0);
    assert_eq!(app.visible_state().await, before);
}

#[tokio::test]
async fn a_stalled_body_times_out_and_leaves_no_backend_behind() {
    let app = TestApp::with_settings(|s| s.http.read_timeout_s = 1).await;
    let server = evil_server(big_zip(), Fault::Stall).await;
    let started = Instant::now();
    let err = app
        .load("novo-bolsa-familia", "2024-10", &server.url, false)
        .await
        .expect_err("stall");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.code(), "http_body_failed", "{err}");
    assert!(server.requests.load(Ordering::SeqCst) >= 1);
    // The dropped transaction's ROLLBACK is sent asynchronously: give the
    // server a bounded moment to settle, then require a clean slate.
    common::wait_until(
        &app,
        common::LEFT_BEHIND,
        |n| n == 0,
        "a COPY or an advisory lock outlived the failed load",
    )
    .await;
}

/// A source that trickles (a byte every 50 ms, so the idle timeout never
/// fires) ends at the minimum throughput, and one that keeps up that rate
/// ends at the download deadline; either way the error names the limit and
/// no COPY or lock is left on the server.
#[tokio::test]
async fn trickling_sources_end_at_the_throughput_floor_or_the_deadline() {
    for (name, floor, deadline, code, says) in [
        (
            "floor",
            1_000,
            600,
            "download_too_slow",
            "http.min_bytes_per_second",
        ),
        (
            "deadline",
            1,
            2,
            "download_deadline",
            "http.download_deadline_s",
        ),
    ] {
        let app = TestApp::with_settings(|s| {
            s.http.min_bytes_per_second = floor;
            s.http.min_throughput_window_s = 1;
            s.http.download_deadline_s = deadline;
        })
        .await;
        let server = evil_server(big_zip(), Fault::Trickle).await;
        let started = Instant::now();
        let err = app
            .load("novo-bolsa-familia", "2024-10", &server.url, false)
            .await
            .expect_err(name);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{name}: took {:?}",
            started.elapsed()
        );
        assert_eq!(err.code(), code, "{name}: {err}");
        assert!(err.to_string().contains(says), "{name}: {err}");
        common::wait_until(
            &app,
            common::LEFT_BEHIND,
            |n| n == 0,
            "a COPY or an advisory lock outlived the failed load",
        )
        .await;
    }
}

#[tokio::test]
async fn archive_faults_fail_with_their_code() {
    let mut limits_app = TestApp::with_settings(|s| {
        s.limits.max_decompressed_bytes = 200_000;
        s.limits.max_record_bytes = 4_096;
    })
    .await;
    // A compressible "bomb": 2 MB of rows in a few kB.
    let many: Vec<Vec<&str>> = (0..20_000)
        .map(|_| nbf_row("202410", "7107", "10000000001", "", "1,00"))
        .collect();
    let bomb = zip_bytes("x.csv", &portal_csv(&NBF_COLUMNS, &many));
    // One 10 kB field.
    let long = "A".repeat(10_000);
    let mut long_row = nbf_row("202410", "7107", "10000000001", "", "1,00");
    long_row[7] = long.as_str();
    let long_record = zip_bytes("x.csv", &portal_csv(&NBF_COLUMNS, &[long_row]));
    // Two entries.
    let two = {
        use std::io::Write;
        let mut out = Vec::new();
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut out));
        let options = zip::write::SimpleFileOptions::default();
        for name in ["a.csv", "b.csv"] {
            w.start_file(name, options).expect("start");
            w.write_all(&portal_csv(
                &NBF_COLUMNS,
                &[nbf_row("202410", "7107", "10000000001", "", "1,00")],
            ))
            .expect("write");
        }
        w.finish().expect("finish");
        out
    };
    // A flipped byte inside the compressed data.
    let mut corrupt = zip_of_rows(1_500);
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    let urls = limits_app
        .serve(vec![
            ("bomb.zip", bomb),
            ("long.zip", long_record),
            ("two.zip", two),
            ("corrupt.zip", corrupt),
        ])
        .await;
    for (name, codes) in [
        ("bomb.zip", &["zip_limit_exceeded"][..]),
        ("long.zip", &["record_too_large"][..]),
        ("two.zip", &["archive_unsupported"][..]),
        ("corrupt.zip", &["archive_corrupt"][..]),
    ] {
        let err = limits_app
            .load("novo-bolsa-familia", "2024-10", &urls[name], false)
            .await
            .expect_err(name);
        assert!(
            codes.contains(&&*err.code().as_str()),
            "{name}: {} {err}",
            err.code()
        );
    }
    let n: i64 = limits_app
        .client()
        .await
        .query_one("SELECT count(*) FROM carga.payments", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
}

/// The real binary, set to load `url` into the test's database:
/// `carga run novo-bolsa-familia --period 2024-10 --force --url URL`, started
/// through `launcher` when given (a program that then execs the binary,
/// whose path it gets as its next argument).
fn load_command(app: &TestApp, url: &str, launcher: &[&str]) -> tokio::process::Command {
    let binary = env!("CARGO_BIN_EXE_carga");
    let mut command = match launcher.split_first() {
        Some((program, args)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(args).arg(binary);
            c
        }
        None => tokio::process::Command::new(binary),
    };
    command
        .args([
            "run",
            "novo-bolsa-familia",
            "--period",
            "2024-10",
            "--force",
            "--url",
            url,
        ])
        .env("DATABASE_URL", &app.url)
        .env("CARGA_NIS_KEY", common::NIS_KEY);
    command
}

/// Starts the real binary loading `url` and returns once its COPY has
/// written rows (seen in pg_stat_progress_copy).
async fn spawn_load_and_wait_for_copy(
    app: &TestApp,
    url: &str,
    stderr: std::process::Stdio,
) -> tokio::process::Child {
    let child = load_command(app, url, &[])
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    common::wait_until(app, common::COPYING, |n| n > 0, "the COPY never started").await;
    child
}

/// SIGKILL of the real binary mid-COPY: the previous data stays, the next
/// run publishes, and the dead attempt is marked abandoned.
#[tokio::test]
async fn a_killed_load_leaves_no_trace() {
    let mut app = TestApp::new().await;
    let (good_url, before) = publish_one_row(&mut app).await;
    let tables = app.carga_tables().await;

    let server = evil_server(zip_of_rows(60_000), Fault::Stall).await;
    let mut child =
        spawn_load_and_wait_for_copy(&app, &server.url, std::process::Stdio::null()).await;
    child.kill().await.expect("kill");
    // The server notices the client is gone and rolls back.
    common::wait_until(
        &app,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'COPY%'",
        |n| n == 0,
        "the killed backend never ended",
    )
    .await;
    assert_eq!(app.visible_state().await, before);
    assert_eq!(app.carga_tables().await, tables);

    // A next run that fails still marks the dead attempt: the mark is not
    // part of the failed load's transaction.
    let broken = evil_server(b"not a zip".to_vec(), Fault::ClaimsLength(9)).await;
    app.load("novo-bolsa-familia", "2024-10", &broken.url, true)
        .await
        .expect_err("not a zip");
    let killed: String = app
        .client()
        .await
        .query_one(
            "SELECT status FROM carga.loads ORDER BY id DESC OFFSET 1 LIMIT 1",
            &[],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(killed, "abandoned");

    let next = app
        .load("novo-bolsa-familia", "2024-10", &good_url, true)
        .await
        .expect("next run");
    assert_eq!(next.rows_loaded, 1);
    let statuses: Vec<String> = app
        .client()
        .await
        .query("SELECT status FROM carga.loads ORDER BY id", &[])
        .await
        .expect("ledger")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        statuses[statuses.len() - 4..],
        ["superseded", "abandoned", "failed", "published"]
    );
}

/// Ctrl-C (SIGINT) mid-COPY: the load rolls back, the ledger says
/// `cancelled`, the process exits 1 with one line, the data is untouched.
#[tokio::test]
async fn an_interrupted_load_is_cancelled_cleanly() {
    let mut app = TestApp::new().await;
    let (_, before) = publish_one_row(&mut app).await;
    let server = evil_server(zip_of_rows(60_000), Fault::Stall).await;
    let child = spawn_load_and_wait_for_copy(&app, &server.url, std::process::Stdio::piped()).await;
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits after SIGINT")
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
    assert_eq!(app.visible_state().await, before);
    let (status, code): (String, Option<String>) = {
        let row = app
            .client()
            .await
            .query_one(
                "SELECT status, error_code FROM carga.loads ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .expect("ledger");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("cancelled", Some("cancelled"))
    );
}

/// A gzip container (for datasets published as .csv.gz): loads, and a cut
/// gzip stream (no CRC/ISIZE trailer) fails as truncated.
#[tokio::test]
async fn gzip_sources_load_and_a_cut_one_fails() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = std::fs::read_to_string("jobs/novo-bolsa-familia.toml")
        .expect("spec")
        .replace("container = \"zip\"", "container = \"gzip\"");
    std::fs::write(dir.path().join("novo-bolsa-familia.toml"), spec).expect("write");
    let jobs_dir = dir.path().to_path_buf();
    let mut app = TestApp::with_settings(|s| s.load.jobs_dir = jobs_dir).await;
    let csv = portal_csv(
        &NBF_COLUMNS,
        &(0..2_000)
            .map(|_| nbf_row("202410", "7107", "10000000001", "", "1,00"))
            .collect::<Vec<_>>(),
    );
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&csv).expect("gzip");
    let gz = encoder.finish().expect("gzip");
    let cut = gz[..gz.len() - 6].to_vec();
    let urls = app.serve(vec![("f.csv.gz", gz), ("cut.csv.gz", cut)]).await;
    let report = app
        .load("novo-bolsa-familia", "2024-10", &urls["f.csv.gz"], false)
        .await
        .expect("gzip load");
    assert_eq!(
        (report.rows_loaded, report.distinct_beneficiaries),
        (2_000, 1)
    );
    let before = app.visible_state().await;
    let err = app
        .load("novo-bolsa-familia", "2024-10", &urls["cut.csv.gz"], true)
        .await
        .expect_err("cut gzip");
    assert_eq!(err.code(), "archive_truncated", "{err}");
    assert_eq!(app.visible_state().await, before);
}

/// Two loads of the same month at once: the second fails fast with
/// `load_in_progress` instead of waiting or interleaving.
#[tokio::test]
async fn a_second_load_of_the_same_month_is_refused_while_one_runs() {
    let mut app = TestApp::new().await;
    let (good_url, before) = publish_one_row(&mut app).await;
    let server = evil_server(zip_of_rows(60_000), Fault::Stall).await;
    let mut first =
        spawn_load_and_wait_for_copy(&app, &server.url, std::process::Stdio::null()).await;
    let err = app
        .load("novo-bolsa-familia", "2024-10", &good_url, true)
        .await
        .expect_err("busy");
    assert_eq!(err.code(), "load_in_progress", "{err}");
    first.kill().await.expect("kill");
    assert_eq!(app.visible_state().await, before);
}

/// 503 with `Retry-After` ends the load at once, naming the status and
/// carrying the server's delay for the queue (which schedules the next
/// attempt and frees the worker meanwhile); the published data stays.
#[tokio::test]
async fn an_unavailable_source_fails_at_once_with_its_status() {
    let mut app = TestApp::new().await;
    let (_, before) = publish_one_row(&mut app).await;
    let down = evil_server(zip_of_rows(100), Fault::Unavailable { times: usize::MAX }).await;
    let started = std::time::Instant::now();
    let err = app
        .load("novo-bolsa-familia", "2024-10", &down.url, true)
        .await
        .expect_err("503");
    assert_eq!(err.code(), "http_status_503", "{err}");
    assert!(
        err.retry_after().is_some(),
        "the server's Retry-After is kept"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(down.requests.load(Ordering::SeqCst), 1);
    assert_eq!(app.visible_state().await, before);
}

/// A body whose Content-Length passes `http.max_download_bytes` is refused
/// before it is read: the server claims 1 MB but sends 100 bytes, so only
/// the up-front check can answer `download_too_large` (reading would end in
/// a truncated body instead).
#[tokio::test]
async fn an_oversized_download_is_refused_before_reading() {
    let app = TestApp::with_settings(|s| s.http.max_download_bytes = 10_000).await;
    let server = evil_server(vec![b'P'; 100], Fault::ClaimsLength(1_000_000)).await;
    let err = app
        .load("novo-bolsa-familia", "2024-10", &server.url, false)
        .await
        .expect_err("too large");
    assert_eq!(err.code(), "download_too_large", "{err}");
}

/// A source without validators (a local path) is skipped as unchanged by
/// its SHA-256 when it matches the published load.
#[tokio::test]
async fn an_unchanged_file_is_recognised_by_its_hash() {
    let app = TestApp::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("202410_NovoBolsaFamilia.zip");
    std::fs::write(&path, zip_of_rows(50)).expect("write");
    let path = path.to_str().expect("path").to_string();
    let first = app
        .load("novo-bolsa-familia", "2024-10", &path, false)
        .await
        .expect("first");
    assert_eq!(first.outcome, carga::engine::pipeline::Outcome::Published);
    let before = app.visible_state().await;
    let second = app
        .load("novo-bolsa-familia", "2024-10", &path, false)
        .await
        .expect("second");
    assert_eq!(second.outcome, carga::engine::pipeline::Outcome::Unchanged);
    assert_eq!(app.visible_state().await, before);
    let status: String = app
        .client()
        .await
        .query_one(
            "SELECT status FROM carga.loads WHERE id = $1",
            &[&second.load_id],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(status, "skipped");
}

/// The spill file hits the file-size limit (`ulimit -f`, SIGXFSZ ignored so
/// the write fails with EFBIG, as a full disk fails with ENOSPC): the real
/// binary exits 1 naming the spill and the setting, the ledger says
/// `spill_io`, and the published month is untouched.
#[tokio::test]
async fn a_spill_write_that_fails_fails_the_load_and_keeps_the_data() {
    let mut app = TestApp::new().await;
    let (_, before) = publish_one_row(&mut app).await;
    let tables = app.carga_tables().await;
    // Enough people to fill the partition buffers several times over.
    let urls = app.serve(vec![("big.zip", zip_of_rows(300_000))]).await;
    let launcher = [
        "sh",
        "-c",
        "trap '' XFSZ; ulimit -f 256 && exec \"$0\" \"$@\"",
    ];
    // The spill fails mid-stream while the download is still running: the
    // download's "reader stopped" must never win the race, so try thrice.
    for _ in 0..3 {
        let output = load_command(&app, &urls["big.zip"], &launcher)
            .output()
            .await
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains("spill file") && last.contains("load.spill_dir"),
            "{stderr}"
        );
        assert_eq!(app.visible_state().await, before);
        assert_eq!(app.carga_tables().await, tables);
        let code: Option<String> = app
            .client()
            .await
            .query_one(
                "SELECT error_code FROM carga.loads ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .expect("ledger")
            .get(0);
        assert_eq!(code.as_deref(), Some("spill_io"));
    }
}
