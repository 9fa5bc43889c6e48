//! `carga validate`: the same source, decode and parser stages as a load,
//! with a sink that drops the rows. No database, nothing stored.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ring::rand::SecureRandom;
use secrecy::SecretString;
use tokio::sync::mpsc;

use super::error::LoadError;
use super::guards::reject_limit;
use super::parser::{CheckOnly, ParseInput, ParseSummary, Payments, Tabulated};
use super::stages::{self, FirstFailure};
use crate::config::Settings;
use crate::dataset::Spec;
use crate::engine::parse::MunicipalityIndex;
use crate::engine::source::{self, OpenOutcome, Progress};

/// What `validate` found.
#[derive(Debug, Clone)]
pub struct ValidateReport {
    pub(crate) source: String,
    pub(crate) summary: ParseSummary,
    pub(crate) bytes: u64,
    pub(crate) limit: u64,
}

/// Parses and checks a file without loading it. Municipality codes are
/// checked against `municipalities`; no database is needed.
pub async fn validate(
    settings: &Settings,
    spec: &Spec,
    location: &str,
    municipalities: MunicipalityIndex,
    progress: Arc<Progress>,
) -> Result<ValidateReport, LoadError> {
    if spec.program.is_none() {
        return Err(LoadError::NotPayments(spec.dataset.clone()));
    }
    let opened = match source::open(location, &settings.http, None).await? {
        OpenOutcome::Body(o) => o,
        OpenOutcome::NotModified(_) => return Err(LoadError::Internal("unexpected 304".into())),
    };
    let file = opened.meta.file_name.clone();
    let (byte_tx, byte_rx) = mpsc::channel(settings.load.download_depth);
    let first = Arc::new(FirstFailure::default());
    let download = stages::spawn_download(opened, byte_tx, settings, &progress, &first);
    let input = ParseInput {
        spec: spec.clone(),
        municipalities,
        period: None,
        nis_key: throwaway_key()?,
        limits: settings.limits.clone(),
        file,
        // No database: each state stands for itself (only membership is checked).
        places: super::places(spec, &every_state(spec))?,
        periods: spec
            .kind
            .is_tabulated()
            .then(|| spec.period_filter(false))
            .flatten(),
    };
    let parsed = match spec.kind {
        kind if kind.is_tabulated() => {
            let sink = || Ok(CheckOnly::<Tabulated>::new());
            super::parser::spawn_parser(byte_rx, input, sink, &progress, &first).await
        }
        _ => {
            let sink = || Ok(CheckOnly::<Payments>::new());
            super::parser::spawn_parser(byte_rx, input, sink, &progress, &first).await
        }
    };
    if parsed.is_err() && !download.is_finished() {
        download.abort();
    }
    let downloaded = stages::join_download(download).await;
    let (summary, _) = first.root_cause(parsed, downloaded)?;
    let bytes = progress.bytes.load(Ordering::Relaxed);
    Ok(ValidateReport {
        source: source::redact_source(location),
        limit: reject_limit(spec, summary.rows_read),
        summary,
        bytes,
    })
}

/// Without a database: a stand-in id for every state the spec's table names.
fn every_state(spec: &Spec) -> std::collections::HashMap<String, i32> {
    spec.state_map
        .iter()
        .flat_map(|m| m.entries.values())
        .enumerate()
        .map(|(i, uf)| (uf.clone(), i as i32 + 1))
        .collect()
}

/// The transform hashes NIS numbers as it checks them; `validate` stores
/// nothing, so it hashes with a key drawn for this run and dropped after.
fn throwaway_key() -> Result<SecretString, LoadError> {
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| LoadError::Internal("the OS random source failed".into()))?;
    Ok(SecretString::from(hex::encode(key)))
}
