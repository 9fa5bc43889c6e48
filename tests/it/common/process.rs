//! The real binary as a test's child process: `carga` against the test's
//! database with short queue settings, its log, signals and exit.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::TestApp;

/// `carga <args>` against the test's database with short queue settings.
pub fn carga(app: &TestApp, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_carga"));
    command
        .args(args)
        .env("DATABASE_URL", &app.url)
        .env("CARGA_NIS_KEY", super::NIS_KEY)
        .env("CARGA__QUEUE__LEASE_S", "2")
        .env("CARGA__QUEUE__HEARTBEAT_S", "1")
        .env("CARGA__QUEUE__RESCUE_INTERVAL_S", "1")
        .env("CARGA__QUEUE__POLL_INTERVAL_MS", "200")
        .env("CARGA__QUEUE__RETRY_BASE_S", "1")
        .env("CARGA__QUEUE__RETRY_MAX_S", "1")
        .env("CARGA__QUEUE__SHUTDOWN_GRACE_S", "0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Starts `carga worker` and returns once it logged that it started.
pub async fn worker(app: &TestApp, name: &str) -> Child {
    let mut child = carga(app, &["worker"])
        .env("CARGA__QUEUE__WORKER_NAME", name)
        .spawn()
        .expect("spawn worker");
    wait_for_log(&mut child, "worker started").await;
    child
}

/// Reads the child's stderr until a line contains `text`; keeps draining
/// it afterwards so the child never blocks on a full pipe.
pub async fn wait_for_log(child: &mut Child, text: &str) {
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no {text:?} in the log"))
            .expect("read")
            .unwrap_or_else(|| panic!("exited before {text:?}"));
        if line.contains(text) {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

/// Polls the job until it is in `state`.
pub async fn wait_for_state(app: &TestApp, id: i64, state: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if app.job_state(id).await == state {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

pub async fn exits(mut child: Child) -> Option<i32> {
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits")
        .expect("status")
        .code()
}

/// `carga <args>` run to its end without a NIS key (a dataset of counts or
/// a snapshot needs none), with `jobs` as the specs directory when given:
/// its exit code and its stdout and stderr together.
pub async fn output(
    app: &TestApp,
    jobs: Option<&std::path::Path>,
    args: &[&str],
) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_carga"));
    command
        .args(args)
        .env("DATABASE_URL", &app.url)
        .env_remove("CARGA_NIS_KEY");
    if let Some(jobs) = jobs {
        command.env("CARGA__LOAD__JOBS_DIR", jobs);
    }
    let out = command.output().await.expect("run carga");
    (
        out.status.code(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
