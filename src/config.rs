//! Settings: `config/default.toml` (compiled in) → `--config FILE` →
//! `CARGA__SECTION__KEY` environment variables, plus `DATABASE_URL` and
//! `CARGA_NIS_KEY` read directly. Raw values become typed settings once, here,
//! failing with the key's name. Secrets are wrapped so they never print.
//! Unknown keys and sections are refused (a misspelt key would otherwise
//! silently keep its default), as are `CARGA_…` variables that are neither
//! `CARGA__SECTION__KEY` nor `CARGA_NIS_KEY`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The shortest `CARGA_NIS_KEY` accepted. The key is all that stands between
/// a stored hash and the NIS it came from: there are only 10^11 NIS numbers,
/// so a short key can be recovered by trying keys against one known NIS.
pub(crate) const MIN_NIS_KEY_CHARS: usize = 32;

/// `CARGA_…` variables read directly (not `CARGA__SECTION__KEY`).
const DIRECT_VARIABLES: [&str; 1] = ["CARGA_NIS_KEY"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("invalid configuration: {key}: {reason}")]
    Key { key: &'static str, reason: String },
    #[error(
        "invalid configuration: unknown environment variable {0} (settings are CARGA__SECTION__KEY, two underscores; see config/default.toml)"
    )]
    UnknownVariable(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub limits: LimitSettings,
    pub load: LoadSettings,
    pub queue: QueueSettings,
    #[serde(default)]
    pub webhooks: WebhookSettings,
    /// `DATABASE_URL`, normalised later by [`crate::db`].
    #[serde(skip)]
    pub database_url: Option<SecretString>,
    /// `CARGA_NIS_KEY`: the key NIS numbers are hashed with.
    #[serde(skip)]
    pub nis_key: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub(crate) pool_size: usize,
    pub wait_timeout_ms: u64,
    pub create_timeout_ms: u64,
    pub(crate) recycle_timeout_ms: u64,
    pub(crate) statement_timeout_s: u64,
    pub(crate) lock_timeout_ms: u64,
    /// Look for a system server before starting a private cluster.
    pub use_system_server: bool,
    pub local_cluster_dir: PathBuf,
    pub local_cluster_port: u16,
    /// The database `carga demo` works in, on the same server (created if
    /// missing); never the one real loads use.
    pub(crate) demo_database: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    connect_timeout_s: u64,
    pub read_timeout_s: u64,
    pub(crate) user_agent: String,
    pub(crate) max_redirects: usize,
    pub max_download_bytes: u64,
    /// Wall-clock bound on one download.
    pub download_deadline_s: u64,
    /// The slowest source tolerated, averaged over each window of
    /// `min_throughput_window_s` seconds of waiting for the network.
    pub min_bytes_per_second: u64,
    pub min_throughput_window_s: u64,
    /// Connections one download may use when the server serves ranges of a
    /// file with a strong validator (`CARGA__HTTP__DOWNLOAD_CONNECTIONS`;
    /// 1: one connection, as before).
    pub download_connections: usize,
    /// The size of one range; `download_connections` of them are in
    /// flight or waiting to be handed on at most.
    pub download_chunk_bytes: u64,
    /// Files smaller than this are fetched over one connection.
    pub download_parallel_min_bytes: u64,
    /// A first answer that brings its first chunk at least this fast
    /// (bytes per second) is read whole over its own connection: ranges
    /// would only add requests where one connection outruns the engine.
    pub download_fast_bytes_per_second: u64,
    /// `carga serve`'s API: where it listens (`--listen` overrides).
    pub(crate) listen: String,
    /// Bearer token for the operator endpoints (set it through
    /// `CARGA__HTTP__OPERATOR_TOKEN`); empty: those endpoints answer 401.
    #[serde(default = "empty_secret")]
    pub operator_token: SecretString,
    /// A source answering 202 (preparing the file) is asked again after its
    /// `Retry-After`, else after this.
    pub(crate) preparing_poll_s: u64,
    /// How long a job waits for a file being prepared (since the first
    /// 202) before it falls back to `queue.not_found_retry_s`.
    pub(crate) preparing_limit_s: u64,
    /// A request's headers must arrive within this (slow-loris guard).
    pub header_read_timeout_s: u64,
    /// A whole request, body included, must be answered within this.
    pub request_timeout_s: u64,
    /// Larger request bodies are refused with 413 before they are read.
    pub max_body_bytes: usize,
    /// Connections served at once (see `http::connections` for who gets
    /// a slot when they are all taken).
    pub max_connections: usize,
    /// Connections one client address may hold once half the slots are
    /// taken (0: no limit).
    pub max_connections_per_address: usize,
    /// A connection with no request in flight for this long is closed
    /// (before its first request, between keep-alive requests, an HTTP/2
    /// connection without streams).
    pub idle_timeout_s: u64,
}

fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}

/// Signed webhooks (Standard Webhooks 1.0): one entry per sender.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// How far a signature's timestamp may be from this server's clock.
    #[serde(default = "default_tolerance")]
    pub(crate) tolerance_s: u64,
    #[serde(default)]
    pub senders: std::collections::BTreeMap<String, WebhookSender>,
}

fn default_tolerance() -> u64 {
    300
}

/// One upstream system allowed to call `POST /v1/webhooks/{name}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSender {
    /// `whsec_<base64>` secrets; several during a rotation. From the
    /// environment, one string of secrets separated by spaces or commas.
    #[serde(deserialize_with = "secrets")]
    pub secrets: Vec<SecretString>,
    /// The datasets this sender may trigger (from the environment, one
    /// string separated by spaces or commas).
    #[serde(deserialize_with = "list")]
    pub datasets: Vec<String>,
}

/// A list, or one string of items separated by spaces or commas (how an
/// environment variable writes a list).
fn list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split([' ', ','])
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

fn secrets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    let all = list(d)?;
    Ok(all.into_iter().map(SecretString::from).collect())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_decompressed_bytes: u64,
    pub max_record_bytes: usize,
    pub(crate) max_stored_rejects: usize,
    pub(crate) reject_line_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSettings {
    pub jobs_dir: PathBuf,
    pub(crate) channel_depth: usize,
    pub(crate) copy_chunk_bytes: usize,
    pub(crate) download_depth: usize,
    /// Directory of the distinct-count spill file; empty: the system's.
    pub spill_dir: PathBuf,
    /// Threads counting the spill at the end of a load; 0: one per core.
    pub count_threads: usize,
}

/// The job runner: leases, retries, history. Times are whole seconds
/// unless the name says otherwise; every one of them is measured on the
/// database's clock.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// `carga worker`'s own `/metrics` and `/health` listener (empty: off).
    pub(crate) metrics_listen: String,
    /// Loads one worker process runs at once.
    pub(crate) concurrency: usize,
    /// A worker's name in the jobs table; empty: host name and pid.
    worker_name: String,
    /// How long a claim lasts without a heartbeat.
    pub lease_s: u64,
    pub heartbeat_s: u64,
    /// How often expired leases are looked for.
    pub rescue_interval_s: u64,
    /// How often the scheduler enqueues every dataset's current slot again
    /// (a missed or failed cron tick is caught up by the next pass).
    pub reconcile_s: u64,
    /// Polling fallback for LISTEN/NOTIFY.
    pub poll_interval_ms: u64,
    /// A job's attempt is cancelled after this long.
    pub job_timeout_s: u64,
    pub max_attempts: i32,
    /// Exponential backoff with full jitter: base × 2^(attempt−1), capped.
    pub retry_base_s: u64,
    pub retry_max_s: u64,
    /// A month the Portal has not published (404) is retried this often.
    pub not_found_retry_s: u64,
    /// Finished jobs are kept this long.
    pub(crate) retention_days: u64,
    /// On SIGTERM: how long running loads may go on before they are
    /// cancelled and released.
    pub shutdown_grace_s: u64,
}

impl QueueSettings {
    /// The worker's name: `worker_name`, else `host:pid`.
    pub(crate) fn worker_id(&self) -> String {
        if !self.worker_name.is_empty() {
            return self.worker_name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "carga".into());
        format!("{host}:{}", std::process::id())
    }
}

impl LoadSettings {
    /// The directory the distinct-count spill file goes to.
    pub(crate) fn spill_dir(&self) -> PathBuf {
        if self.spill_dir.as_os_str().is_empty() {
            std::env::temp_dir()
        } else {
            self.spill_dir.clone()
        }
    }
    /// Threads for the distinct count.
    pub(crate) fn count_threads(&self) -> usize {
        match self.count_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

impl HttpSettings {
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_s)
    }
    pub(crate) fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout_s)
    }
}

impl Settings {
    /// Loads the layered settings. `file` is the global `--config` flag.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        check_variables(std::env::vars_os().map(|(name, _)| name))?;
        let mut settings = Self::layered(file, None)?;
        settings.database_url = non_empty_env("DATABASE_URL").map(SecretString::from);
        settings.nis_key = non_empty_env("CARGA_NIS_KEY").map(SecretString::from);
        settings.validate()?;
        Ok(settings)
    }

    /// The compiled-in defaults alone (no file, no environment), for tests.
    #[cfg(test)]
    pub(crate) fn defaults() -> Settings {
        Self::layered(None, Some(config::Map::new()))
            .unwrap_or_else(|e| panic!("config/default.toml is invalid: {e}"))
    }

    /// default.toml → `file` → `CARGA__…` variables (from `environment`
    /// when given, else the process's).
    fn layered(
        file: Option<&Path>,
        environment: Option<config::Map<String, String>>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file.to_path_buf())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("CARGA")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(environment),
        );
        Ok(builder.build()?.try_deserialize()?)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("database.pool_size", self.database.pool_size as u64),
            ("load.channel_depth", self.load.channel_depth as u64),
            ("load.copy_chunk_bytes", self.load.copy_chunk_bytes as u64),
            ("load.download_depth", self.load.download_depth as u64),
            (
                "limits.max_record_bytes",
                self.limits.max_record_bytes as u64,
            ),
            ("http.max_download_bytes", self.http.max_download_bytes),
            (
                "limits.max_decompressed_bytes",
                self.limits.max_decompressed_bytes,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Key {
                    key,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        if !(1..=32).contains(&self.http.download_connections) {
            return Err(ConfigError::Key {
                key: "http.download_connections",
                reason: "must be between 1 (one connection) and 32".into(),
            });
        }
        if !(64 * 1024..=64 * 1024 * 1024).contains(&self.http.download_chunk_bytes) {
            return Err(ConfigError::Key {
                key: "http.download_chunk_bytes",
                reason: "must be between 65536 (64 KiB) and 67108864 (64 MiB)".into(),
            });
        }
        // What a ranged download may hold: the window, one chunk waiting for
        // the reader, the one being handed on and one more in the channel
        // to the inflate stage.
        let window = (self.http.download_connections as u64 + 3) * self.http.download_chunk_bytes;
        if window > 256 * 1024 * 1024 {
            return Err(ConfigError::Key {
                key: "http.download_chunk_bytes",
                reason: format!(
                    "(download_connections + 3) × download_chunk_bytes is {} MiB, above the 256 MiB a download may hold",
                    window >> 20
                ),
            });
        }
        if let Some(key) = &self.nis_key {
            check_nis_key(key.expose_secret())?;
        }
        for (name, sender) in &self.webhooks.senders {
            if sender.secrets.is_empty() {
                return Err(ConfigError::Key {
                    key: "webhooks.senders.<name>.secrets",
                    reason: format!("sender {name:?} has no secret"),
                });
            }
            for secret in &sender.secrets {
                if decode_secret(secret.expose_secret()).is_none() {
                    return Err(ConfigError::Key {
                        key: "webhooks.senders.<name>.secrets",
                        reason: format!(
                            "a secret of sender {name:?} is not whsec_ followed by base64 of 24 to 64 bytes (the secret itself is not shown)"
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Refuses a NIS key too short to protect the hashes (never echoes it).
pub(crate) fn check_nis_key(key: &str) -> Result<(), ConfigError> {
    let chars = key.chars().count();
    if chars < MIN_NIS_KEY_CHARS {
        return Err(ConfigError::Key {
            key: "CARGA_NIS_KEY",
            reason: format!(
                "too short ({chars} characters): at least {MIN_NIS_KEY_CHARS} are required, because a short key lets anyone holding the stored hashes recover it by trial and then every NIS (there are only 10^11 of them); use e.g. `openssl rand -base64 48`"
            ),
        });
    }
    Ok(())
}

/// `CARGA_` variables that carga would ignore: a setting written with one
/// underscore after the prefix (`CARGA_DATABASE__POOL_SIZE`) or a misspelt
/// direct variable (`CARGA_NIS_KY`). `CARGA__…` ones are checked by serde.
fn check_variables(names: impl Iterator<Item = std::ffi::OsString>) -> Result<(), ConfigError> {
    for name in names {
        let Some(name) = name.to_str() else { continue };
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("CARGA_")
            && !upper.starts_with("CARGA__")
            && !DIRECT_VARIABLES.contains(&upper.as_str())
        {
            return Err(ConfigError::UnknownVariable(name.to_string()));
        }
    }
    Ok(())
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A `whsec_` secret's key bytes (24 to 64 of them, as the Standard
/// Webhooks specification says).
pub fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let encoded = secret.strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> config::Map<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn webhook_senders_come_from_a_file_or_the_environment() {
        let from_env = Settings::layered(
            None,
            Some(env(&[
                (
                    "CARGA__WEBHOOKS__SENDERS__PORTAL__SECRETS",
                    "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                ),
                (
                    "CARGA__WEBHOOKS__SENDERS__PORTAL__DATASETS",
                    "novo-bolsa-familia,bpc",
                ),
            ])),
        )
        .expect("settings");
        let portal = &from_env.webhooks.senders["portal"];
        assert_eq!(portal.secrets.len(), 2);
        assert_eq!(portal.datasets, ["novo-bolsa-familia", "bpc"]);
        from_env.validate().expect("valid");
        let f =
            file("[webhooks.senders.mds]\nsecrets = [\"whsec_c2hvcnQ=\"]\ndatasets = [\"bpc\"]\n");
        let short = Settings::layered(Some(f.path()), Some(env(&[]))).expect("parses");
        let message = short.validate().expect_err("too short a key").to_string();
        assert!(
            message.contains("mds") && !message.contains("c2hvcnQ"),
            "{message}"
        );
    }

    #[test]
    fn the_defaults_load() {
        let s = Settings::layered(None, Some(env(&[]))).expect("defaults");
        assert_eq!(s.database.pool_size, 4);
    }

    #[test]
    fn known_keys_layer_from_file_and_environment() {
        let f = file("[database]\npool_size = 7\n[http]\nread_timeout_s = 9\n");
        let s = Settings::layered(
            Some(f.path()),
            Some(env(&[("CARGA__DATABASE__POOL_SIZE", "8")])),
        )
        .expect("valid");
        assert_eq!(s.database.pool_size, 8);
        assert_eq!(s.http.read_timeout_s, 9);
    }

    #[test]
    fn unknown_keys_and_sections_are_refused_with_their_name() {
        for (text, name) in [
            ("[database]\nstatement_timeout = 10\n", "statement_timeout"),
            ("[databse]\npool_size = 2\n", "databse"),
            ("pool_size = 2\n", "pool_size"),
        ] {
            let f = file(text);
            let e = Settings::layered(Some(f.path()), Some(env(&[])))
                .expect_err(text)
                .to_string();
            assert!(e.contains(name), "{text}: {e}");
        }
        for (var, name) in [
            ("CARGA__DATABASE__POOL_SIZ", "pool_siz"),
            ("CARGA__HTTP__READ_TIMEOUT", "read_timeout"),
            ("CARGA__NOPE", "nope"),
        ] {
            let e = Settings::layered(None, Some(env(&[(var, "5")])))
                .expect_err(var)
                .to_string();
            assert!(e.contains(name), "{var}: {e}");
        }
    }

    #[test]
    fn stray_carga_variables_are_refused_but_the_direct_ones_pass() {
        let names = |list: &[&str]| {
            list.iter()
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert!(
            check_variables(names(&[
                "CARGA_NIS_KEY",
                "CARGA__DATABASE__POOL_SIZE",
                "DATABASE_URL",
                "CARGO_HOME",
                "CARGAX"
            ]))
            .is_ok()
        );
        for bad in ["CARGA_DATABASE__POOL_SIZE", "CARGA_NIS_KY", "carga_nis_ky"] {
            let e = check_variables(names(&[bad])).expect_err(bad).to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn a_short_nis_key_is_refused_without_being_echoed() {
        let e = check_nis_key("k").expect_err("short").to_string();
        assert!(
            e.contains("CARGA_NIS_KEY") && e.contains("at least 32"),
            "{e}"
        );
        let secret = "s3cr3t-but-far-too-short-31char";
        assert_eq!(secret.chars().count(), 31);
        let e = check_nis_key(secret).expect_err("31 chars").to_string();
        assert!(!e.contains(secret), "{e}");
        assert!(check_nis_key(&"x".repeat(32)).is_ok());
        // Characters, not bytes: 32 accented letters are 64 bytes.
        assert!(check_nis_key(&"é".repeat(31)).is_err());
    }
}
