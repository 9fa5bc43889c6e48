//! The reference load: the 27 states and the municipalities with their IBGE
//! and SIAFI codes, upserted into the API's tables by IBGE code (ids, names
//! the API set and its other columns are kept). The shipped copies of the
//! kelvins/municipios-brasileiros lists are compiled in; `--url` loads a
//! municipios.csv of the same layout instead.

use std::collections::HashMap;
use std::time::Instant;

use bytes::BytesMut;

use crate::config::Settings;
use crate::dataset::Spec;
use crate::engine::load::ledger;
use crate::engine::pipeline::{Context, LoadError};
use crate::engine::source::{self, OpenOutcome};

pub const MUNICIPIOS_CSV: &str = include_str!("../../../jobs/reference/municipios.csv");
pub(crate) const ESTADOS_CSV: &str = include_str!("../../../jobs/reference/estados.csv");

/// Largest reference file accepted (the real one is 390 kB).
const MAX_REFERENCE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) ibge_code: String,
    pub(crate) abbreviation: String,
    pub(crate) name: String,
    region: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Municipality {
    pub(crate) ibge_code: String,
    pub(crate) name: String,
    pub(crate) state_code: String,
    pub(crate) siafi_code: Option<String>,
}

fn region_code(name: &str) -> Option<&'static str> {
    Some(match name.trim() {
        "Norte" => "N",
        "Nordeste" => "NE",
        "Sudeste" => "SE",
        "Sul" => "S",
        "Centro-Oeste" => "CO",
        _ => return None,
    })
}

fn reader(text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes())
}

fn columns(headers: &csv::StringRecord, file: &str, wanted: &[&str]) -> Result<Vec<usize>, String> {
    wanted
        .iter()
        .map(|w| {
            headers.iter().position(|h| h.trim() == *w).ok_or_else(|| {
                format!(
                    "{file}: header is missing {w:?}; found {:?}",
                    headers.iter().collect::<Vec<_>>()
                )
            })
        })
        .collect()
}

/// Parses `estados.csv` (`codigo_uf,uf,nome,latitude,longitude,regiao`).
pub(crate) fn parse_states(text: &str, file: &str) -> Result<Vec<State>, String> {
    let mut r = reader(text);
    let headers = r.headers().map_err(|e| format!("{file}: {e}"))?.clone();
    let idx = columns(&headers, file, &["codigo_uf", "uf", "nome", "regiao"])?;
    let mut out = Vec::new();
    for (n, record) in r.records().enumerate() {
        let record = record.map_err(|e| format!("{file}: {e}"))?;
        let line = n + 2;
        let get = |i: usize| record.get(idx[i]).unwrap_or("").trim().to_string();
        let code = get(0);
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{file}: line {line}, column \"codigo_uf\": invalid state code {code:?}"
            ));
        }
        let region = region_code(&get(3)).ok_or_else(|| {
            format!(
                "{file}: line {line}, column \"regiao\": unknown region {:?}",
                get(3)
            )
        })?;
        out.push(State {
            ibge_code: code,
            abbreviation: get(1),
            name: get(2),
            region: region.to_string(),
        });
    }
    Ok(out)
}

/// Parses `municipios.csv` (kelvins layout).
pub(crate) fn parse_municipalities(text: &str, file: &str) -> Result<Vec<Municipality>, String> {
    let mut r = reader(text);
    let headers = r.headers().map_err(|e| format!("{file}: {e}"))?.clone();
    let idx = columns(
        &headers,
        file,
        &["codigo_ibge", "nome", "codigo_uf", "siafi_id"],
    )?;
    let mut out = Vec::new();
    for (n, record) in r.records().enumerate() {
        let record = record.map_err(|e| format!("{file}: {e}"))?;
        let line = n + 2;
        let get = |i: usize| record.get(idx[i]).unwrap_or("").trim().to_string();
        let ibge = get(0);
        if ibge.len() != 7 || !ibge.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{file}: line {line}, column \"codigo_ibge\": invalid IBGE code {ibge:?}"
            ));
        }
        let siafi = get(3);
        let siafi = if siafi.is_empty() {
            None
        } else if crate::engine::parse::value::siafi(siafi.as_bytes()).is_some() {
            // Four digits, as the Portal writes them: "12" is not "0012".
            Some(siafi)
        } else {
            return Err(format!(
                "{file}: line {line}, column \"siafi_id\": invalid SIAFI code {siafi:?} (four digits expected)"
            ));
        };
        let state_code = get(2);
        if !ibge.starts_with(&state_code) {
            return Err(format!(
                "{file}: line {line}: IBGE code {ibge} does not belong to state {state_code}"
            ));
        }
        out.push(Municipality {
            ibge_code: ibge,
            name: get(1),
            state_code,
            siafi_code: siafi,
        });
    }
    Ok(out)
}

/// Reads a small reference file from a URL or path, capped.
async fn fetch(location: &str, settings: &Settings) -> Result<String, LoadError> {
    let opened = match source::open(location, &settings.http, None).await? {
        OpenOutcome::Body(o) => o,
        OpenOutcome::NotModified(_) => return Err(LoadError::Internal("unexpected 304".into())),
    };
    let url = opened.meta.url.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let progress = std::sync::Arc::new(source::Progress::default());
    let limits = source::DownloadLimits {
        max_bytes: MAX_REFERENCE_BYTES as u64,
        ..source::DownloadLimits::from_settings(&settings.http)
    };
    // Aborted if the load is dropped (cancelled): its connections close.
    let pump = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(opened.pump(
        tx,
        limits,
        progress,
        || {},
    )));
    let mut body = BytesMut::new();
    // An error item ends the body; the pump reports it below.
    while let Some(Ok(chunk)) = rx.recv().await {
        body.extend_from_slice(&chunk);
    }
    pump.await
        .map_err(|e| LoadError::Internal(e.to_string()))??;
    // A file in another encoding is the file's fault, not the transfer's.
    String::from_utf8(body.to_vec()).map_err(|e| {
        LoadError::Reference(format!(
            "{url}: not UTF-8 text (first invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// What the reference load did.
#[derive(Debug, Clone)]
pub struct ReferenceReport {
    pub(crate) load_id: i64,
    pub states: usize,
    pub municipalities: usize,
    pub with_siafi: usize,
    pub(crate) seconds: f64,
}

/// Loads states and municipalities in one transaction.
///
/// When `cancel` completes first, the transaction rolls back and the ledger
/// records the attempt `cancelled`.
pub async fn run(
    ctx: &Context,
    spec: &Spec,
    url: Option<&str>,
    force: bool,
    cancel: impl Future<Output = ()>,
) -> Result<ReferenceReport, LoadError> {
    let started = Instant::now();
    let client = ctx.pool.get().await?;
    let source_label = url
        .map(source::redact_source)
        .unwrap_or_else(|| "builtin:jobs/reference/municipios.csv".into());
    let load_id = ledger::start(&**client, &spec.dataset, None, None, &source_label, force).await?;
    let counts = super::Counts::default();
    let work = async {
        let text = match url {
            Some(u) => fetch(u, &ctx.settings).await?,
            None => MUNICIPIOS_CSV.to_string(),
        };
        let states = parse_states(ESTADOS_CSV, "estados.csv").map_err(LoadError::Reference)?;
        let municipalities =
            parse_municipalities(&text, &source_label).map_err(LoadError::Reference)?;
        let mut connection = ctx.pool.get().await?;
        let tx = connection.transaction().await?;
        let existing: i64 = tx
            .query_one(
                "SELECT count(*) FROM public.municipalities WHERE siafi_code IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        let floor = (1.0 - spec.quality.max_shrink) * existing as f64;
        if !force && (municipalities.len() as f64) < floor {
            return Err(LoadError::Shrink {
                file: source_label.clone(),
                rows: municipalities.len() as u64,
                baseline_rows: existing,
                baseline_period: "the current table".into(),
                percent: 100.0 * (1.0 - municipalities.len() as f64 / existing as f64),
                allowed: spec.quality.max_shrink * 100.0,
            });
        }
        for s in &states {
            tx.execute(
                "INSERT INTO public.states (ibge_code, name, abbreviation, region, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
                 ON CONFLICT (ibge_code) DO UPDATE SET name = EXCLUDED.name,
                     abbreviation = EXCLUDED.abbreviation, region = EXCLUDED.region,
                     updated_at = EXCLUDED.updated_at",
                &[&s.ibge_code, &s.name, &s.abbreviation, &s.region],
            )
            .await?;
        }
        let state_ids: HashMap<String, i32> = tx
            .query("SELECT ibge_code, id FROM public.states", &[])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let mut codes = Vec::new();
        let mut names = Vec::new();
        let mut states_of = Vec::new();
        let mut siafis = Vec::new();
        for m in &municipalities {
            let Some(state_id) = state_ids.get(&m.state_code) else {
                return Err(LoadError::Internal(format!(
                    "municipality {} names unknown state {}",
                    m.ibge_code, m.state_code
                )));
            };
            codes.push(m.ibge_code.as_str());
            names.push(m.name.as_str());
            states_of.push(*state_id);
            siafis.push(m.siafi_code.as_deref());
        }
        // A SIAFI code moving between municipalities must not trip the
        // unique index half-way: clear the codes being reassigned first.
        tx.execute(
            "UPDATE public.municipalities m SET siafi_code = NULL
             FROM unnest($1::text[], $2::text[]) AS n(ibge, siafi)
             WHERE m.siafi_code = n.siafi AND m.ibge_code <> n.ibge",
            &[&codes, &siafis],
        )
        .await?;
        tx.execute(
            "INSERT INTO public.municipalities (ibge_code, name, state_id, siafi_code, created_at, updated_at)
             SELECT ibge, name, state_id, siafi, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
             FROM unnest($1::text[], $2::text[], $3::int[], $4::text[]) AS n(ibge, name, state_id, siafi)
             ON CONFLICT (ibge_code) DO UPDATE SET name = EXCLUDED.name, state_id = EXCLUDED.state_id,
                 siafi_code = EXCLUDED.siafi_code, updated_at = EXCLUDED.updated_at",
            &[&codes, &names, &states_of, &siafis],
        )
        .await?;
        ledger::publish_reference(&*tx, load_id, &spec.dataset, municipalities.len() as i64)
            .await?;
        tx.commit().await?;
        Ok(ReferenceReport {
            load_id,
            states: states.len(),
            municipalities: municipalities.len(),
            with_siafi: municipalities
                .iter()
                .filter(|m| m.siafi_code.is_some())
                .count(),
            seconds: started.elapsed().as_secs_f64(),
        })
    };
    super::settle(&**client, load_id, &counts, work, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_reference_data_parses() {
        let states = parse_states(ESTADOS_CSV, "estados.csv").expect("states");
        assert_eq!(states.len(), 27);
        assert!(
            states
                .iter()
                .any(|s| s.abbreviation == "DF" && s.region == "CO")
        );
        let m = parse_municipalities(MUNICIPIOS_CSV, "municipios.csv").expect("municipalities");
        assert_eq!(m.len(), 5571);
        assert!(m.iter().all(|m| m.siafi_code.is_some()));
        let brasilia = m
            .iter()
            .find(|m| m.ibge_code == "5300108")
            .expect("Brasília");
        assert_eq!(brasilia.siafi_code.as_deref(), Some("9701"));
    }
}
