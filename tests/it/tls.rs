//! TLS to PostgreSQL against a server of the test's own: `initdb` into a
//! temporary directory, `ssl = on` with a CA and a server certificate made
//! here (rcgen; no key is committed), and a pg_hba that admits TLS only
//! (`hostssl … trust`, `hostnossl … reject`). The whole path (pool, COPY,
//! publish, LISTEN, cancel) runs over `verify-full`; each way a TLS setup
//! can be wrong fails with its own one-line message and exit code.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use carga::dataset::Period;
use carga::service::runner::RunOne;
use common::{NIS_KEY, Reply, ScriptedServer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use secrecy::SecretString;

const BINARY: &str = env!("CARGO_BIN_EXE_carga");
/// A password that must never be printed (the server trusts, so it is
/// never checked).
const CANARY: &str = "CANARY-PW-7d1f";

/// A CA and the server certificate it signed (SAN: `localhost`,
/// `127.0.0.1`), as PEM files in `dir`; and a second, unrelated CA.
struct Certificates {
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: String,
    server_key: String,
}

fn make_ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert, Issuer::new(params, key))
}

fn certificates(dir: &Path) -> Certificates {
    let (ca, issuer) = make_ca("carga test CA");
    let (other_ca, _) = make_ca("an unrelated CA");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = params.signed_by(&key, &issuer).expect("server certificate");
    let ca_path = dir.join("ca.pem");
    let other_path = dir.join("other-ca.pem");
    std::fs::write(&ca_path, ca.pem()).expect("write CA");
    std::fs::write(&other_path, other_ca.pem()).expect("write other CA");
    Certificates {
        ca: ca_path,
        other_ca: other_path,
        server_cert: server.pem(),
        server_key: key.serialize_pem(),
    }
}

fn pg_binary(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| panic!("{name} not found"))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1
/// on a free port, stopped when dropped (a panicking test too). As root,
/// its binaries run as the `postgres` user (initdb refuses root).
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    as_root: bool,
}

impl Cluster {
    fn command(&self, program: &Path) -> Command {
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(&pg_binary(program))
            .args(args)
            .output()
            .expect(program);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `initdb`, the certificate and key (0600, the server's user's), TLS
    /// on, pg_hba admitting TLS only; started.
    fn start(certs: &Certificates) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let cluster = Cluster {
            dir,
            port,
            as_root: running_as_root(),
        };
        let data = cluster.data();
        if cluster.as_root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .expect("chown");
            assert!(ok.success(), "running as root needs a `postgres` user");
        }
        let data_str = data.to_string_lossy().to_string();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data_str,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        std::fs::write(data.join("server.crt"), &certs.server_cert).expect("cert");
        std::fs::write(data.join("server.key"), &certs.server_key).expect("key");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod key");
        }
        if cluster.as_root {
            for file in ["server.crt", "server.key"] {
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(data.join(file))
                    .status()
                    .expect("chown");
            }
        }
        let socket_dir = cluster.dir.path().to_string_lossy().to_string();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        conf.push_str(&format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{socket_dir}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        ));
        std::fs::write(data.join("postgresql.conf"), conf).expect("conf");
        cluster.write_hba(true);
        let log = cluster.dir.path().join("server.log");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                &data_str,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        cluster
    }

    /// TLS only (`hostnossl` rejected), or plain only with TLS off.
    fn write_hba(&self, tls_only: bool) {
        let hba = if tls_only {
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n"
        } else {
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        };
        std::fs::write(self.data().join("pg_hba.conf"), hba).expect("hba");
    }

    /// Turns TLS off (and admits plain connections), then reloads.
    async fn without_tls(&self) {
        self.write_hba(false);
        let conf_path = self.data().join("postgresql.conf");
        let conf = std::fs::read_to_string(&conf_path).expect("conf");
        std::fs::write(&conf_path, conf.replace("ssl = on", "ssl = off")).expect("conf");
        self.run("pg_ctl", &["-D", &self.data().to_string_lossy(), "reload"]);
        // The reload is asynchronous: wait until a plain connection is
        // admitted.
        let url = self.url("127.0.0.1", "postgres", "sslmode=disable");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the reload never took");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `postgresql://postgres:<canary>@<host>:<port>/<database>?<query>`,
    /// the TCP address always 127.0.0.1 (`hostaddr`), so `host` is only
    /// the name the certificate is checked against.
    fn url(&self, host: &str, database: &str, query: &str) -> String {
        format!(
            "postgresql://postgres:{CANARY}@{host}:{}/{database}?hostaddr=127.0.0.1&{query}",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command(&pg_binary("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn carga_migrate(url: &str) -> Output {
    Command::new(BINARY)
        .arg("migrate")
        .env_remove("CARGA_NIS_KEY")
        .env_remove("RUST_LOG")
        .env("DATABASE_URL", url)
        .output()
        .expect("run carga")
}

/// Exit `code`, and stderr's last line is one `carga: …` line naming
/// `needle`; nothing printed holds the password.
fn assert_fails(out: &Output, code: i32, needle: &str, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}\n{stdout}\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("carga: ") && last.contains(needle),
        "{what}: expected one line naming {needle:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains(CANARY) && !stdout.contains(CANARY),
        "{what}: password printed\n{stderr}"
    );
}

fn assert_encrypted_migrate(out: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what}\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("database connection: encrypted (TLS"),
        "{what}: {stdout}"
    );
    assert!(!stdout.contains(CANARY) && !stderr.contains(CANARY));
}

/// Polls `sql` (a count; `$1` is the database name) on `client` until
/// `done` holds, failing with `what` after 30 s.
async fn wait_until(
    client: &tokio_postgres::Client,
    sql: &str,
    database: &str,
    done: impl Fn(i64) -> bool,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = client
            .query_one(sql, &[&database])
            .await
            .expect("poll")
            .get(0);
        if done(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn new_job(
    period: &str,
    url: &str,
    settings: &carga::config::Settings,
) -> carga::service::queue::NewJob {
    carga::service::queue::NewJob {
        dataset: "novo-bolsa-familia".into(),
        period: Period::parse(period).expect("period"),
        url: Some(
            carga::service::queue::JobUrl::new(url, Some(&SecretString::from(NIS_KEY)))
                .expect("url"),
        ),
        force: false,
        trigger: carga::service::queue::Trigger::Operator {
            name: "tls-test".into(),
        },
        priority: carga::service::queue::Priority::Fresh,
        max_attempts: settings.queue.max_attempts,
        not_found_window: Duration::from_secs(45 * 86_400),
    }
}

/// `verify-full` with the right CA, by the name in the certificate: the
/// database is created and migrated (`carga migrate` says the session is
/// encrypted), reference data and a month load through the pool (COPY,
/// publish), a worker is woken by LISTEN (its poll interval is ten
/// minutes) on an encrypted session, and a cancelled COPY is gone from the
/// server; a cancel request sent with the pool's connector stops a running
/// statement on a TLS session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_full_runs_the_whole_path_over_tls() {
    let started = Instant::now();
    let files = tempfile::tempdir().expect("tempdir");
    let certs = certificates(files.path());
    let cluster = Cluster::start(&certs);
    let query = format!("sslmode=verify-full&sslrootcert={}", certs.ca.display());
    let url = cluster.url("localhost", "postgres", &query);

    let out = carga_migrate(&url);
    assert_encrypted_migrate(&out, "carga migrate, verify-full");

    let mut settings = common::settings_for(&url);
    settings.queue.lease_s = 2;
    settings.queue.heartbeat_s = 1;
    settings.queue.rescue_interval_s = 1;
    settings.queue.shutdown_grace_s = 0;
    // Only LISTEN can wake the worker within the test's time.
    settings.queue.poll_interval_ms = 600_000;
    let target = carga::db::resolve_separate(&settings, "carga")
        .await
        .expect("resolve over TLS, creating the database");
    assert!(target.created);
    let migration = carga::db::migrate_reporting(&target)
        .await
        .expect("migrate");
    assert!(migration.encryption.encrypted, "{:?}", migration.encryption);
    assert!(
        migration
            .encryption
            .tls_version
            .as_deref()
            .is_some_and(|v| v.starts_with("TLS")),
        "{:?}",
        migration.encryption
    );
    let app = carga::app::App::new(settings.clone(), target.clone()).expect("app");
    let runner = Arc::new(app.runner().expect("runner"));
    let ctx = runner.context().clone();
    let spec = carga::dataset::find(&settings.load.jobs_dir, "municipios").expect("spec");
    carga::engine::snapshot::reference::run(&ctx, &spec, None, false, std::future::pending())
        .await
        .expect("reference data over TLS");
    let observer = carga::db::connect(&target.config, &target.tls, "observer")
        .await
        .expect("observer");

    // A worker that only LISTEN can wake.
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn({
        let runner = runner.clone();
        let stop = stop.clone();
        async move { runner.run(stop.cancelled_owned()).await }
    });
    wait_until(
        &observer,
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
          WHERE a.datname = $1 AND a.query = 'LISTEN carga_jobs' AND s.ssl",
        "carga",
        |n| n == 1,
        "no encrypted LISTEN session",
    )
    .await;
    let server = ScriptedServer::start(
        "a.zip",
        vec![Reply::Body(common::sample_zip("2024-10", 2_000, 1))],
    )
    .await;
    let control = runner.control_pool().get().await.expect("control");
    let job = carga::service::queue::enqueue(
        &**control,
        &new_job("2024-10", &server.url, &settings),
        runner.clock(),
    )
    .await
    .expect("enqueue");
    wait_until(
        &observer,
        &format!(
            "SELECT count(*) FROM carga.jobs WHERE id = {} AND state = 'succeeded' AND $1 <> ''",
            job.id
        ),
        "carga",
        |n| n == 1,
        "the job never succeeded (LISTEN did not wake the worker?)",
    )
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .expect("the worker stops")
        .expect("worker task");
    let published: i64 = observer
        .query_one(
            "SELECT count(*) FROM carga.loads WHERE status = 'published' AND period = '2024-10-01'",
            &[],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(published, 1, "the month was not published");

    // A COPY cancelled mid-stream (the source stalls) is gone from the
    // server, and the job ends cancelled.
    let stalled = ScriptedServer::start(
        "b.zip",
        vec![Reply::Stall(common::sample_zip("2024-09", 60_000, 4))],
    )
    .await;
    let job = carga::service::queue::enqueue(
        &**control,
        &new_job("2024-09", &stalled.url, &settings),
        runner.clock(),
    )
    .await
    .expect("enqueue");
    let running = tokio::spawn({
        let runner = runner.clone();
        async move { runner.run_one().await }
    });
    wait_until(
        &observer,
        common::COPYING,
        "carga",
        |n| n > 0,
        "the COPY never started",
    )
    .await;
    assert_eq!(
        carga::service::queue::cancel(&**control, job.id)
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
    wait_until(
        &observer,
        common::LEFT_BEHIND,
        "carga",
        |n| n == 0,
        "the server-side COPY outlived the cancel",
    )
    .await;

    // The cancel request itself, with the connector the loads use, on a
    // TLS session running a statement that does not read from the client
    // (so only the cancel can stop it).
    let sleeper = carga::db::connect(&target.config, &target.tls, "sleeper")
        .await
        .expect("sleeper");
    let token = sleeper.cancel_token();
    let sleeping = tokio::spawn(async move {
        let result = sleeper.batch_execute("SELECT pg_sleep(60)").await;
        (result, sleeper)
    });
    wait_until(
        &observer,
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
          WHERE a.datname = $1 AND a.query = 'SELECT pg_sleep(60)' AND a.state = 'active' AND s.ssl",
        "carga",
        |n| n == 1,
        "the statement never started",
    )
    .await;
    token
        .cancel_query(ctx.tls.clone())
        .await
        .expect("a cancel request over TLS");
    let (result, _sleeper) = tokio::time::timeout(Duration::from_secs(10), sleeping)
        .await
        .expect("the cancel stops the statement")
        .expect("task");
    let error = result.expect_err("cancelled");
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{error}"
    );
    runner.context().pool.close();
    runner.control_pool().close();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "too slow: {:?}",
        started.elapsed()
    );
}

/// Each way the TLS setup can be wrong fails with its own one-line message,
/// exit 2 (configuration); a server that is down exits 1; `verify-ca`
/// accepts a name the certificate does not list; `require` without a CA
/// encrypts without checking; and against a server without TLS, `prefer`
/// connects plainly while `require` says the server does not offer TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tls_failure_names_its_cause() {
    let files = tempfile::tempdir().expect("tempdir");
    let certs = certificates(files.path());
    let cluster = Cluster::start(&certs);
    let ca = certs.ca.display().to_string();
    let other = certs.other_ca.display().to_string();
    let missing = files.path().join("no-such-ca.pem").display().to_string();
    for (host, query, code, needle, what) in [
        (
            "localhost",
            format!("sslmode=verify-full&sslrootcert={other}"),
            2,
            "is not trusted",
            "the wrong CA",
        ),
        (
            "db.example.test",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            2,
            "does not match the host name",
            "a host name the certificate does not list",
        ),
        (
            "localhost",
            "sslmode=disable".to_string(),
            2,
            "requires TLS",
            "sslmode=disable against a TLS-only server",
        ),
        (
            "localhost",
            format!("sslmode=verify-full&sslrootcert={missing}"),
            2,
            "cannot be read",
            "a CA file that does not exist",
        ),
        (
            "localhost",
            format!("ssl=verify-ca&sslrootcert={other}"),
            2,
            "is not trusted",
            "verify-ca with the wrong CA (asyncpg spelling)",
        ),
    ] {
        let out = carga_migrate(&cluster.url(host, "postgres", &query));
        assert_fails(&out, code, needle, what);
    }
    // A CA file that cannot be read names the file.
    let out = carga_migrate(&cluster.url(
        "localhost",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={missing}"),
    ));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-ca.pem"));

    for (host, query, what) in [
        (
            "db.example.test",
            format!("sslmode=verify-ca&sslrootcert={ca}"),
            "verify-ca ignores the host name",
        ),
        (
            "db.example.test",
            "sslmode=require".to_string(),
            "require without a CA encrypts without checking",
        ),
        (
            "localhost",
            "sslmode=prefer".to_string(),
            "prefer uses the TLS the server offers",
        ),
    ] {
        let out = carga_migrate(&cluster.url(host, "postgres", &query));
        assert_encrypted_migrate(&out, what);
    }

    // The server is down: an operational failure, exit 1.
    let down = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let down_port = down.local_addr().expect("addr").port();
    drop(down);
    let out = carga_migrate(&format!(
        "postgresql://postgres:{CANARY}@localhost:{down_port}/postgres?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"
    ));
    assert_fails(&out, 1, "connect", "a server that is down");

    // The same server without TLS.
    cluster.without_tls().await;
    let out = carga_migrate(&cluster.url("localhost", "postgres", "sslmode=prefer"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "prefer without TLS: {stdout}");
    assert!(
        stdout.contains("database connection: not encrypted"),
        "{stdout}"
    );
    let out = carga_migrate(&cluster.url("localhost", "postgres", "sslmode=require"));
    assert_fails(
        &out,
        2,
        "does not offer TLS",
        "require against a server without TLS",
    );
}
