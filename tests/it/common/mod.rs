//! Test harness: a fresh database per test, cloned from a migrated template
//! that already holds the reference data, dropped afterwards; a loopback HTTP
//! server for source files; and Portal-format fixture builders.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

pub mod process;
pub mod services;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use carga::config::Settings;
use carga::dataset::{self, Period};
use carga::engine::pipeline::{self, Context, LoadError, LoadReport, LoadRequest};
use carga::engine::source::Progress;
use carga::service::http::files::FileServer;
use carga::service::queue::Clock;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

pub const NIS_KEY: &str = "test-nis-key-0123456789-abcdefghijklmnop";

pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn url_for(database: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{database}")
}

pub async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL (set TEST_DATABASE_URL)");
    tokio::spawn(conn);
    client
}

fn template_name() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut hasher = Sha256::new();
    let mut files: Vec<_> = std::fs::read_dir(format!("{root}/migrations"))
        .expect("migrations dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for f in files {
        hasher.update(std::fs::read(f).expect("migration"));
    }
    hasher.update(
        std::fs::read(format!("{root}/jobs/reference/municipios.csv")).expect("municipios"),
    );
    format!("carga_tpl_{}", &hex::encode(hasher.finalize())[..12])
}

pub fn settings_for(database_url: &str) -> Settings {
    let mut settings = Settings::load(None).expect("settings");
    settings.database_url = Some(SecretString::from(database_url.to_string()));
    settings.nis_key = Some(SecretString::from(NIS_KEY));
    settings.database.wait_timeout_ms = 10_000;
    settings
}

async fn context(database_url: &str, settings: Settings) -> Context {
    let target = carga::db::resolve(&settings).await.expect("resolve");
    let pool = carga::db::pool(&target, &settings).expect("pool");
    let _ = database_url;
    Context {
        settings,
        pool,
        tls: target.tls,
    }
}

/// Creates the template once per machine state (serialised across test
/// processes by an advisory lock).
async fn ensure_template() -> String {
    let name = template_name();
    let client = admin().await;
    client
        .execute("SELECT pg_advisory_lock(4242424242)", &[])
        .await
        .expect("lock");
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("query")
        .is_some();
    if !exists {
        let building = format!("{name}_building");
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .await
            .expect("drop stale template");
        client
            .batch_execute(&format!("CREATE DATABASE {building}"))
            .await
            .expect("create template");
        {
            let url = url_for(&building);
            let settings = settings_for(&url);
            let target = carga::db::resolve(&settings).await.expect("resolve");
            carga::db::migrate(&target).await.expect("migrate template");
            let ctx = context(&url, settings.clone()).await;
            let spec = dataset::find(&settings.load.jobs_dir, "municipios").expect("spec");
            carga::engine::snapshot::reference::run(
                &ctx,
                &spec,
                None,
                false,
                std::future::pending(),
            )
            .await
            .expect("reference data");
            ctx.pool.close();
        }
        client
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{building}'"
            ))
            .await
            .expect("disconnect template");
        client
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .await
            .expect("rename template");
    }
    client
        .execute("SELECT pg_advisory_unlock(4242424242)", &[])
        .await
        .expect("unlock");
    name
}

/// One test's world: its database, settings, pool and file server, and
/// the queue's clock that every app, runner, API and enqueue of the test
/// shares (advance it to let queue time pass instead of sleeping).
pub struct TestApp {
    pub database: String,
    pub url: String,
    pub ctx: Context,
    pub server: Option<FileServer>,
    pub clock: Clock,
}

/// `TEST_LOG=1` (everything at debug) or `TEST_LOG=<filter>` (an
/// `EnvFilter`, e.g. `carga::service::queue=trace`) prints the in-process
/// tracing of a test through the test harness's capture, so a failing test
/// shows it and a passing one stays quiet. Unset, nothing is installed.
pub fn test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(filter) = std::env::var("TEST_LOG") else {
            return;
        };
        let filter = if filter == "1" {
            "debug".to_owned()
        } else {
            filter
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with_settings(|_| {}).await
    }

    pub async fn with_settings(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        test_log();
        let template = ensure_template().await;
        let database = format!("carga_t_{}", hex::encode(rand_bytes()));
        let client = admin().await;
        client
            .batch_execute(&format!("CREATE DATABASE {database} TEMPLATE {template}"))
            .await
            .expect("clone template");
        let url = url_for(&database);
        let mut settings = settings_for(&url);
        adjust(&mut settings);
        let ctx = context(&url, settings).await;
        TestApp {
            database,
            url,
            ctx,
            server: None,
            clock: Clock::database(),
        }
    }

    /// Serves `files` over loopback HTTP; returns their URLs by name.
    pub async fn serve(&mut self, files: Vec<(&str, Vec<u8>)>) -> HashMap<String, String> {
        let map: HashMap<String, Bytes> = files
            .into_iter()
            .map(|(n, b)| (n.to_string(), Bytes::from(b)))
            .collect();
        let names: Vec<String> = map.keys().cloned().collect();
        let server = FileServer::start(map, 0).await.expect("file server");
        let urls = names.iter().map(|n| (n.clone(), server.url(n))).collect();
        self.server = Some(server);
        urls
    }

    pub async fn client(&self) -> deadpool_postgres::Object {
        self.ctx.pool.get().await.expect("pool")
    }

    pub async fn load(
        &self,
        dataset: &str,
        period: &str,
        url: &str,
        force: bool,
    ) -> Result<LoadReport, LoadError> {
        let spec = dataset::find(&self.ctx.settings.load.jobs_dir, dataset).expect("spec");
        let request = LoadRequest {
            spec,
            period: Period::parse(period).expect("period"),
            url: Some(url.to_string()),
            force,
            redirect_guard: None,
        };
        pipeline::run(
            &self.ctx,
            &request,
            Some(SecretString::from(NIS_KEY)),
            Arc::new(Progress::default()),
            std::future::pending(),
        )
        .await
    }

    /// A checksum of everything a reader can see for the program.
    pub async fn visible_state(&self) -> String {
        let client = self.client().await;
        let row = client
            .query_one(
                "SELECT
                   (SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t.id), '')) FROM
                      (SELECT id, municipality_id, program_id, reference_date, total_beneficiaries, total_families,
                              total_value_brl, extra_data::text FROM public.beneficiary_data) t),
                   (SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM
                      (SELECT program_id, state_id, reference_date, municipalities, total_beneficiaries,
                              total_families, total_value_brl, payments, load_id FROM public.program_state_monthly) t),
                   (SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM
                      (SELECT program_id, reference_date, states, municipalities, total_beneficiaries,
                              total_families, total_value_brl, payments, load_id FROM public.program_national_monthly) t),
                   (SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM carga.payments t)",
                &[],
            )
            .await
            .expect("checksum");
        format!(
            "{}/{}/{}/{}",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3)
        )
    }

    /// Tables in the carga schema (to catch orphans).
    pub async fn carga_tables(&self) -> Vec<String> {
        let client = self.client().await;
        client
            .query(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'carga' AND c.relkind IN ('r', 'p') ORDER BY 1",
                &[],
            )
            .await
            .expect("tables")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.ctx.pool.close();
        drop_database(&self.database);
    }
}

/// Drops a test database from a thread of its own (Drop cannot await).
fn drop_database(database: &str) {
    let database = database.to_string();
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        runtime.block_on(async {
            let _ = admin()
                .await
                .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .await;
        });
    })
    .join();
}

fn rand_bytes() -> [u8; 6] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let digest = Sha256::digest(format!("{nanos}-{n}-{}", std::process::id()));
    let mut out = [0u8; 6];
    out.copy_from_slice(&digest[..6]);
    out
}

/// Novo Bolsa Família's column names, in the Portal's order.
pub const NBF_COLUMNS: [&str; 9] = [
    "MÊS COMPETÊNCIA",
    "MÊS REFERÊNCIA",
    "UF",
    "CÓDIGO MUNICÍPIO SIAFI",
    "NOME MUNICÍPIO",
    "CPF FAVORECIDO",
    "NIS FAVORECIDO",
    "NOME FAVORECIDO",
    "VALOR PARCELA",
];

/// A Portal-format CSV: Windows-1252 bytes, every field quoted, `;`, CRLF.
pub fn portal_csv(header: &[&str], rows: &[Vec<&str>]) -> Vec<u8> {
    let mut out = Vec::new();
    let line = |out: &mut Vec<u8>, fields: &[&str]| {
        let mut first = true;
        for f in fields {
            if !first {
                out.push(b';');
            }
            first = false;
            out.push(b'"');
            let escaped = f.replace('"', "\"\"");
            let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&escaped);
            assert!(!unmappable, "fixture text must be Latin-1: {f}");
            out.extend_from_slice(&bytes);
            out.push(b'"');
        }
        out.extend_from_slice(b"\r\n");
    };
    line(&mut out, header);
    for r in rows {
        line(&mut out, r);
    }
    out
}

/// One deflated entry in a ZIP archive.
pub fn zip_bytes(entry: &str, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut out));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file(entry, options).expect("start");
        w.write_all(content).expect("write");
        w.finish().expect("finish");
    }
    out
}

/// An NBF row: (competência, referência, UF, SIAFI, município, CPF, NIS, nome, valor).
pub fn nbf_row<'a>(
    competence: &'a str,
    siafi: &'a str,
    nis: &'a str,
    cpf: &'a str,
    value: &'a str,
) -> Vec<&'a str> {
    vec![
        competence,
        "202410",
        "SP",
        siafi,
        "MUNICIPIO",
        cpf,
        nis,
        "FULANO DE TAL JOSÉ",
        value,
    ]
}

/// An empty database (no template), dropped on drop.
pub struct EmptyDb {
    pub database: String,
    pub url: String,
}

impl EmptyDb {
    pub async fn new() -> EmptyDb {
        test_log();
        let database = format!("carga_e_{}", hex::encode(rand_bytes()));
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .expect("create database");
        let url = url_for(&database);
        EmptyDb { database, url }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    }

    pub async fn context(&self) -> Context {
        let settings = settings_for(&self.url);
        context(&self.url, settings).await
    }
}

impl Drop for EmptyDb {
    fn drop(&mut self) {
        drop_database(&self.database);
    }
}

/// What a [`ScriptedServer`] does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with the body, at full speed.
    Body(Vec<u8>),
    /// 200 with the body, `chunk` bytes every `every` (a slow source).
    Slow {
        body: Vec<u8>,
        chunk: usize,
        every: std::time::Duration,
    },
    /// Headers and a quarter of the body, then silence until the client goes.
    Stall(Vec<u8>),
    /// A bodiless status with optional headers (`Retry-After: 3`).
    Status(u16, &'static str),
    /// 302 to this location.
    Redirect(String),
    /// 200 with the body to a browser-like User-Agent (`Mozilla/…`), 405
    /// to anything else (the Portal since 2026).
    BrowsersOnly(Vec<u8>),
}

/// A loopback HTTP/1.1 server that answers its n-th request with the n-th
/// reply of its script (the last one repeats). Counts requests.
pub struct ScriptedServer {
    pub url: String,
    pub requests: Arc<std::sync::atomic::AtomicUsize>,
}

impl ScriptedServer {
    /// A slow source: `body` in `pieces` pieces, one every `every`.
    pub async fn slow(
        name: &str,
        body: Vec<u8>,
        pieces: usize,
        every: std::time::Duration,
    ) -> ScriptedServer {
        let chunk = body.len() / pieces.max(1) + 1;
        ScriptedServer::start(name, vec![Reply::Slow { body, chunk, every }]).await
    }

    pub async fn start(name: &str, script: Vec<Reply>) -> ScriptedServer {
        test_log();
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/{name}", listener.local_addr().expect("addr"));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = requests.clone();
        let script = Arc::new(script);
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let reply = script.get(n).or(script.last()).cloned().expect("a script");
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => request.extend_from_slice(&buf[..k]),
                        }
                    }
                    let head = |status: &str, length: usize, extra: &str| {
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: {length}\r\nContent-Type: application/zip\r\n{extra}Connection: close\r\n\r\n"
                        )
                    };
                    let reply = match reply {
                        Reply::BrowsersOnly(body) => {
                            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                            if text.contains("\r\nuser-agent: mozilla/") {
                                Reply::Body(body)
                            } else {
                                Reply::Status(405, "")
                            }
                        }
                        other => other,
                    };
                    match reply {
                        Reply::BrowsersOnly(_) => unreachable!("mapped above"),
                        Reply::Body(body) => {
                            let _ = socket
                                .write_all(head("200 OK", body.len(), "").as_bytes())
                                .await;
                            let _ = socket.write_all(&body).await;
                        }
                        Reply::Slow { body, chunk, every } => {
                            let _ = socket
                                .write_all(head("200 OK", body.len(), "").as_bytes())
                                .await;
                            for piece in body.chunks(chunk) {
                                if socket.write_all(piece).await.is_err() {
                                    return;
                                }
                                let _ = socket.flush().await;
                                tokio::time::sleep(every).await;
                            }
                        }
                        Reply::Stall(body) => {
                            let _ = socket
                                .write_all(head("200 OK", body.len(), "").as_bytes())
                                .await;
                            let _ = socket.write_all(&body[..body.len() / 4]).await;
                            let _ = socket.flush().await;
                            // Until the client hangs up.
                            let _ = socket.read(&mut buf).await;
                        }
                        Reply::Redirect(location) => {
                            let extra = format!("Location: {location}\r\n");
                            let _ = socket
                                .write_all(head("302 Found", 0, &extra).as_bytes())
                                .await;
                        }
                        Reply::Status(code, extra) => {
                            let status = format!("{code} Scripted");
                            let extra = if extra.is_empty() {
                                String::new()
                            } else {
                                format!("{extra}\r\n")
                            };
                            let _ = socket.write_all(head(&status, 0, &extra).as_bytes()).await;
                        }
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        ScriptedServer { url, requests }
    }
}

/// A Portal ZIP of `rows` generated rows for `period` (seeded).
pub fn sample_zip(period: &str, rows: u64, seed: u64) -> Vec<u8> {
    let period = Period::parse(period).expect("period");
    let mut zip = std::io::Cursor::new(Vec::new());
    carga::engine::sample::write_zip(
        &mut zip,
        period,
        rows,
        seed,
        &format!("{:06}_NovoBolsaFamilia.csv", period.yyyymm()),
    )
    .expect("sample");
    zip.into_inner()
}

impl TestApp {
    /// The app (the composition root `serve` and `worker` use) over this
    /// test's database, with `settings`, on the test's clock.
    pub fn app(&self, settings: Settings) -> carga::app::App {
        carga::app::App::new(settings, self.target())
            .expect("app")
            .with_clock(self.clock.clone())
    }

    /// This test's database as the app resolves one.
    pub fn target(&self) -> carga::db::Target {
        use std::str::FromStr;
        carga::db::Target {
            config: tokio_postgres::Config::from_str(&self.url).expect("config"),
            description: "test".into(),
            created: false,
            tls: self.ctx.tls.clone(),
        }
    }

    /// An in-process worker on this test's database, with its settings.
    pub fn runner(&self) -> carga::service::runner::Runner {
        self.app(self.ctx.settings.clone())
            .runner()
            .expect("runner")
    }

    /// Enqueues an operator job for novo-bolsa-familia `period` from `url`.
    pub async fn enqueue(&self, period: &str, url: &str) -> carga::service::queue::Enqueued {
        self.enqueue_with(period, Some(url), carga::service::queue::Priority::Fresh)
            .await
    }

    pub async fn enqueue_with(
        &self,
        period: &str,
        url: Option<&str>,
        priority: carga::service::queue::Priority,
    ) -> carga::service::queue::Enqueued {
        self.enqueue_sealed(period, url, priority, NIS_KEY).await
    }

    /// [`TestApp::enqueue_with`], a URL's secrets sealed under `nis_key`
    /// (the key of the process that will run the job).
    pub async fn enqueue_sealed(
        &self,
        period: &str,
        url: Option<&str>,
        priority: carga::service::queue::Priority,
        nis_key: &str,
    ) -> carga::service::queue::Enqueued {
        let job = carga::service::queue::NewJob {
            dataset: "novo-bolsa-familia".into(),
            period: Period::parse(period).expect("period"),
            url: url.map(|u| {
                carga::service::queue::JobUrl::new(
                    u,
                    Some(&SecretString::from(nis_key.to_string())),
                )
                .expect("url")
            }),
            force: false,
            trigger: carga::service::queue::Trigger::Operator {
                name: "test".into(),
            },
            priority,
            max_attempts: self.ctx.settings.queue.max_attempts,
            not_found_window: std::time::Duration::from_secs(45 * 86_400),
        };
        carga::service::queue::enqueue(&**self.client().await, &job, &self.clock)
            .await
            .expect("enqueue")
    }

    /// `SELECT <columns> FROM carga.jobs WHERE id = <id>`.
    pub async fn job_row(&self, id: i64, columns: &str) -> tokio_postgres::Row {
        self.client()
            .await
            .query_one(
                &format!("SELECT {columns} FROM carga.jobs WHERE id = $1"),
                &[&id],
            )
            .await
            .expect("job")
    }

    /// The job's state.
    pub async fn job_state(&self, id: i64) -> String {
        self.client()
            .await
            .query_one("SELECT state FROM carga.jobs WHERE id = $1", &[&id])
            .await
            .expect("job")
            .get(0)
    }
}

/// Queue settings for tests: short leases, fast rescues and retries.
pub fn fast_queue(s: &mut Settings) {
    s.queue.lease_s = 2;
    s.queue.heartbeat_s = 1;
    s.queue.rescue_interval_s = 1;
    s.queue.poll_interval_ms = 200;
    s.queue.retry_base_s = 1;
    s.queue.retry_max_s = 2;
    s.queue.shutdown_grace_s = 0;
}

/// The webhook sender every API test configures.
pub const SENDER: &str = "portal";
/// Its current and previous (rotated-out) secrets.
pub const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
pub const OLD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const OPERATOR_TOKEN: &str = "operator-token-canary-5f1e0c2b9d";

/// Settings for the API tests: one sender with two secrets, an operator
/// token, short timeouts.
pub fn api_settings(s: &mut Settings) {
    fast_queue(s);
    s.http.operator_token = SecretString::from(OPERATOR_TOKEN);
    s.http.header_read_timeout_s = 1;
    s.http.request_timeout_s = 2;
    s.http.max_body_bytes = 4096;
    s.webhooks.senders.insert(
        SENDER.into(),
        carga::config::WebhookSender {
            secrets: vec![SecretString::from(SECRET), SecretString::from(OLD_SECRET)],
            datasets: vec!["novo-bolsa-familia".into(), "bpc".into()],
        },
    );
}

/// A running API on a loopback port; stops on drop.
pub struct Api {
    pub base: String,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    /// Serves the API, assembled by the app, with `settings` over `target`
    /// (a proxy to this test's database, say).
    pub async fn api_on(&self, settings: Settings, target: carga::db::Target) -> Api {
        let app = carga::app::App::new(settings, target)
            .expect("app")
            .with_clock(self.clock.clone());
        let state = app.api_state().expect("API state");
        let server = carga::service::http::Server::bind("127.0.0.1:0", state)
            .await
            .expect("bind");
        let base = format!("http://{}", server.local_addr().expect("addr"));
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(server.serve(stop.clone()));
        Api { base, stop }
    }

    pub async fn api(&self) -> Api {
        self.api_on(self.ctx.settings.clone(), self.target()).await
    }
}

/// Signs `body` as the standard's senders do, at `timestamp`.
pub fn signed(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = carga::config::decode_secret(secret).expect("secret");
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            carga::service::http::webhook::sign(&key, id, timestamp, body),
        ),
    ]
}

/// A TCP proxy to the test PostgreSQL that can be cut (connections closed
/// and refused) and restored, to make the database "go away".
pub struct Proxy {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    pub async fn start() -> Proxy {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (up2, generation2) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let born = generation2.load(Ordering::SeqCst);
                let generation = generation2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await
                    else {
                        return;
                    };
                    let cut = async {
                        while generation.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut => {}
                    }
                });
            }
        });
        Proxy {
            port,
            up,
            generation,
        }
    }

    /// Closes every proxied connection and refuses new ones.
    pub fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// `url` (a postgres:// URL on 127.0.0.1:5432) through this proxy.
    pub fn url_for(&self, url: &str) -> String {
        url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", self.port))
    }
}

/// Polls `sql` (one count; `$1` is the test's database name, read on the
/// admin connection) until `done` holds, failing with `what` after 30 s.
/// Server-side effects of a killed or failed client (rollback, backend
/// exit) are asynchronous: tests wait for them on the database's state.
pub async fn wait_until(app: &TestApp, sql: &str, done: impl Fn(i64) -> bool, what: &str) {
    let admin = admin().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let n: i64 = admin
            .query_one(sql, &[&app.database])
            .await
            .expect("poll")
            .get(0);
        if done(n) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// COPYs in the test's database that have written rows.
pub const COPYING: &str =
    "SELECT count(*) FROM pg_stat_progress_copy WHERE datname = $1 AND tuples_processed > 0";

/// An active COPY or an advisory lock left in the test's database.
pub const LEFT_BEHIND: &str = "SELECT (SELECT count(*) FROM pg_stat_activity
                  WHERE datname = $1 AND query ILIKE 'COPY%' AND state = 'active')
              + (SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                  WHERE l.locktype = 'advisory' AND d.datname = $1)";

/// An HTTP client whose connections come from `address` (any of
/// 127.0.0.0/8 reaches the API on 127.0.0.1), to act as several client
/// addresses; redirects are not followed.
pub fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(address))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}
