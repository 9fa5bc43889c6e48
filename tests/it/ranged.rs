//! Parallel ranged downloads (`http.download_connections`): the real binary
//! loads a generated month from a loopback server that serves ranges (with
//! a strong ETag) and misbehaves in the ways `RangeFault` lists. Whatever
//! the ranges do, what is published is the file's own bytes (the ledger's
//! SHA-256 is the file's) or nothing at all.

use sha2::{Digest, Sha256};

use crate::common;

use common::TestApp;
use common::process::carga;
use common::services::{RangeFault, RangeServer};

/// A generated month of about 1.5 MB: two dozen 64 KiB ranges.
fn month() -> Vec<u8> {
    common::sample_zip("2024-12", 40_000, 7)
}

/// `carga run novo-bolsa-familia` over four connections of 64 KiB ranges.
fn run(app: &TestApp, url: &str, force: bool) -> tokio::process::Command {
    let mut args = vec![
        "run",
        "novo-bolsa-familia",
        "--period",
        "2024-12",
        "--url",
        url,
    ];
    if force {
        args.push("--force");
    }
    let mut command = carga(app, &args);
    command
        .env("CARGA__HTTP__DOWNLOAD_CONNECTIONS", "4")
        .env("CARGA__HTTP__DOWNLOAD_CHUNK_BYTES", "65536")
        .env("CARGA__HTTP__DOWNLOAD_PARALLEL_MIN_BYTES", "1")
        // Loopback is fast: never fast enough to skip the ranges here.
        .env(
            "CARGA__HTTP__DOWNLOAD_FAST_BYTES_PER_SECOND",
            "1000000000000000",
        )
        .env("CARGA__HTTP__READ_TIMEOUT_S", "5")
        .stdout(std::process::Stdio::piped());
    command
}

async fn output(app: &TestApp, url: &str, force: bool) -> (Option<i32>, String) {
    let out = run(app, url, force).output().await.expect("run carga");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The last load's (status, error code, SHA-256).
async fn last_load(app: &TestApp) -> (String, Option<String>, Option<Vec<u8>>) {
    let row = app
        .client()
        .await
        .query_one(
            "SELECT status, error_code, sha256 FROM carga.loads ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .expect("ledger");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn ranges_hand_on_the_files_own_bytes_whatever_they_do() {
    let file = month();
    let sha = Sha256::digest(&file).to_vec();
    for fault in [
        RangeFault::None,
        RangeFault::OutOfOrder,
        RangeFault::CutOnce(5 * 65_536),
        RangeFault::BusyOnce(3 * 65_536),
        RangeFault::IgnoresRange,
        RangeFault::IgnoresRangeAfter(8),
    ] {
        let app = TestApp::new().await;
        let server = RangeServer::start(file.clone(), fault).await;
        let (code, out) = output(&app, &server.url, false).await;
        assert_eq!(code, Some(0), "{fault:?}: {out}");
        let (status, _, stored) = last_load(&app).await;
        assert_eq!(status, "published", "{fault:?}");
        assert_eq!(
            stored.as_deref(),
            Some(&sha[..]),
            "{fault:?}: the same bytes"
        );
        let ranges = server.ranges.load(std::sync::atomic::Ordering::SeqCst);
        // The first chunk comes over the first answer's connection.
        let chunks = (file.len() as u64).div_ceil(65_536) as usize - 1;
        match fault {
            // The first range answered 200: one connection from byte 0.
            RangeFault::IgnoresRange => assert!(ranges <= 4, "{fault:?}: {ranges}"),
            // Ranges served, then the rest over one connection, the bytes
            // already handed on skipped.
            RangeFault::IgnoresRangeAfter(n) => {
                assert!(ranges > n && ranges < chunks, "{fault:?}: {ranges}")
            }
            RangeFault::CutOnce(_) | RangeFault::BusyOnce(_) => {
                assert_eq!(ranges, chunks + 1, "{fault:?}: one range asked again")
            }
            _ => assert_eq!(ranges, chunks, "{fault:?}: each range once"),
        }
    }
}

#[tokio::test]
async fn a_file_replaced_or_misdescribed_mid_download_publishes_nothing() {
    let file = month();
    let app = TestApp::new().await;
    // The month as published before.
    let server = RangeServer::start(file.clone(), RangeFault::None).await;
    let (code, out) = output(&app, &server.url, false).await;
    assert_eq!(code, Some(0), "{out}");
    let before = app.visible_state().await;
    for (fault, code_wanted, says) in [
        (
            RangeFault::ReplacedAfter(3),
            "source_changed",
            "the file changed on the server during the download",
        ),
        (
            RangeFault::WrongContentRange(2 * 65_536),
            "source_protocol",
            "asked for bytes 131072-196607",
        ),
    ] {
        let server = RangeServer::start(file.clone(), fault).await;
        let (code, out) = output(&app, &server.url, true).await;
        assert_eq!(code, Some(1), "{fault:?}: {out}");
        assert!(out.contains(says), "{fault:?}: {out}");
        let (status, error, _) = last_load(&app).await;
        assert_eq!(
            (status.as_str(), error.as_deref()),
            ("failed", Some(code_wanted)),
            "{fault:?}"
        );
        assert_eq!(app.visible_state().await, before, "{fault:?}: data intact");
    }
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cancelling_closes_every_connection_and_a_kill_publishes_nothing() {
    use std::sync::atomic::Ordering;
    let file = month();
    for signal in ["INT", "KILL"] {
        let app = TestApp::new().await;
        let before = app.visible_state().await;
        let server = RangeServer::start(file.clone(), RangeFault::Hangs).await;
        let child = run(&app, &server.url, false).spawn().expect("spawn");
        // Four ranges in flight, each hanging half-way.
        until("four ranges asked", || {
            server.ranges.load(Ordering::SeqCst) >= 4
        })
        .await;
        until("four connections open", || {
            server.open.load(Ordering::SeqCst) >= 4
        })
        .await;
        common::process::signal(&child, signal);
        let code = common::process::exits(child).await;
        if signal == "INT" {
            // The process is alive and closes every connection itself
            // (after SIGKILL the kernel would, so that proves nothing).
            assert_eq!(code, Some(1), "a cancelled load exits 1");
            until("every connection closed", || {
                server.open.load(Ordering::SeqCst) == 0
            })
            .await;
        }
        assert_eq!(
            app.visible_state().await,
            before,
            "{signal}: nothing published"
        );
        let published: i64 = app
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM carga.loads WHERE status = 'published' AND dataset = 'novo-bolsa-familia'",
                &[],
            )
            .await
            .expect("ledger")
            .get(0);
        assert_eq!(published, 0, "{signal}");
    }
}

#[tokio::test]
async fn a_workers_progress_shows_bytes_ahead_and_cancelling_closes_every_connection() {
    // Every range hangs half-way: nothing past the first chunk can be
    // handed on in order, while half of four ranges has arrived. The job's heartbeat says so.
    let app = TestApp::new().await;
    let server = RangeServer::start(month(), RangeFault::Hangs).await;
    let id = app.enqueue("2024-12", &server.url).await.id;
    let mut worker = carga(&app, &["worker"])
        .env("CARGA__HTTP__DOWNLOAD_CONNECTIONS", "4")
        .env("CARGA__HTTP__DOWNLOAD_CHUNK_BYTES", "65536")
        .env("CARGA__HTTP__DOWNLOAD_PARALLEL_MIN_BYTES", "1")
        .env(
            "CARGA__HTTP__DOWNLOAD_FAST_BYTES_PER_SECOND",
            "1000000000000000",
        )
        .spawn()
        .expect("worker");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ahead = loop {
        let row = app
            .client()
            .await
            .query_one(
                "SELECT coalesce((progress->>'bytes_ahead')::bigint, 0),
                        coalesce((progress->>'bytes')::bigint, 0)
                 FROM carga.jobs WHERE id = $1",
                &[&id],
            )
            .await
            .expect("job");
        let (ahead, bytes): (i64, i64) = (row.get(0), row.get(1));
        if ahead > 0 {
            // Only the first chunk (the first answer's own) handed on.
            assert_eq!(bytes, 65_536, "nothing but the first chunk in order yet");
            break ahead;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no bytes ahead reported"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // Half of each of the four ranges in flight, at most.
    assert!(ahead <= 4 * 32_768, "{ahead}");
    let (code, _) = {
        let out = carga(&app, &["cancel", &id.to_string()])
            .output()
            .await
            .expect("cancel");
        (out.status.code(), ())
    };
    assert_eq!(code, Some(0));
    // The worker lives on, and has closed every range's connection.
    until("every connection closed", || {
        server.open.load(std::sync::atomic::Ordering::SeqCst) == 0
    })
    .await;
    assert!(
        worker.try_wait().expect("worker").is_none(),
        "the worker runs on"
    );
    common::process::signal(&worker, "TERM");
    let _ = worker.wait().await;
}

#[tokio::test]
async fn a_fast_first_answer_is_read_whole_and_a_break_goes_on_in_ranges() {
    let file = month();
    let sha = Sha256::digest(&file).to_vec();
    for (fault, ranges_wanted) in [(RangeFault::None, 0), (RangeFault::CutWhole, 1)] {
        let app = TestApp::new().await;
        let server = RangeServer::start(file.clone(), fault).await;
        // 1 MB/s: loopback's first chunk is far faster, so one connection
        // reads the file; when it breaks, ranges go on from where it stopped.
        let out = run(&app, &server.url, false)
            .env("CARGA__HTTP__DOWNLOAD_FAST_BYTES_PER_SECOND", "1000000")
            .output()
            .await
            .expect("run");
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{fault:?}: {text}");
        let (status, _, stored) = last_load(&app).await;
        assert_eq!(status, "published");
        assert_eq!(stored.as_deref(), Some(&sha[..]), "{fault:?}");
        let ranges = server.ranges.load(std::sync::atomic::Ordering::SeqCst);
        if ranges_wanted == 0 {
            assert_eq!(ranges, 0, "one connection, no range");
        } else {
            assert!(ranges >= ranges_wanted, "{fault:?}: went on in ranges");
        }
    }
}
