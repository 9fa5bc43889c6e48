//! Settings: `config/default.toml` (compiled in) → `--config FILE` →
//! `CARGA__SECTION__KEY` environment variables, plus `DATABASE_URL` and
//! `CARGA_NIS_KEY` read directly. Raw values become typed settings once, here,
//! failing with the key's name. Secrets are wrapped so they never print.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("invalid configuration: {key}: {reason}")]
    Key { key: &'static str, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub limits: LimitSettings,
    pub load: LoadSettings,
    /// `DATABASE_URL`, normalised later by [`crate::db`].
    #[serde(skip)]
    pub database_url: Option<SecretString>,
    /// `CARGA_NIS_KEY`: the key NIS numbers are hashed with.
    #[serde(skip)]
    pub nis_key: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub pool_size: usize,
    pub wait_timeout_ms: u64,
    pub create_timeout_ms: u64,
    pub recycle_timeout_ms: u64,
    pub statement_timeout_s: u64,
    pub lock_timeout_ms: u64,
    /// Look for a system server before starting a private cluster.
    pub use_system_server: bool,
    pub local_cluster_dir: PathBuf,
    pub local_cluster_port: u16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub connect_timeout_s: u64,
    pub read_timeout_s: u64,
    pub user_agent: String,
    pub max_redirects: usize,
    pub max_download_bytes: u64,
    /// Wall-clock bound on one download.
    pub download_deadline_s: u64,
    /// The slowest source tolerated, averaged over each window of
    /// `min_throughput_window_s` seconds of waiting for the network.
    pub min_bytes_per_second: u64,
    pub min_throughput_window_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    pub max_decompressed_bytes: u64,
    pub max_record_bytes: usize,
    pub max_stored_rejects: usize,
    pub reject_line_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoadSettings {
    pub jobs_dir: PathBuf,
    pub channel_depth: usize,
    pub copy_chunk_bytes: usize,
    pub download_depth: usize,
    /// Directory of the distinct-count spill file; empty: the system's.
    pub spill_dir: PathBuf,
    /// Threads counting the spill at the end of a load; 0: one per core.
    pub count_threads: usize,
}

impl LoadSettings {
    /// The directory the distinct-count spill file goes to.
    pub fn spill_dir(&self) -> PathBuf {
        if self.spill_dir.as_os_str().is_empty() {
            std::env::temp_dir()
        } else {
            self.spill_dir.clone()
        }
    }
    /// Threads for the distinct count.
    pub fn count_threads(&self) -> usize {
        match self.count_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

impl HttpSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_s)
    }
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.read_timeout_s)
    }
}

impl Settings {
    /// Loads the layered settings. `file` is the global `--config` flag.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
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
                .try_parsing(true),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.database_url = non_empty_env("DATABASE_URL").map(SecretString::from);
        settings.nis_key = non_empty_env("CARGA_NIS_KEY").map(SecretString::from);
        settings.validate()?;
        Ok(settings)
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
        Ok(())
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
