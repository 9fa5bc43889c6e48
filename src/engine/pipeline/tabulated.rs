//! One download of a pre-aggregated file (`aggregates` kind): the same
//! source, inflate and parser stages as a payments load, the rows COPYed
//! into the transaction's working table, then per period: the digest of its
//! rows against the published one (an unchanged period is left alone), the
//! shrink guard, the aggregate writes checked against the parser's sums,
//! and a ledger row of its own. Every period the file changed is published
//! in the one transaction, so a reader sees all of them or none.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::error::LoadError;
use super::parser::{self, ParseInput, ParseSummary, PeriodTally, RowSink, Tabulated};
use super::stages::{self, FirstFailure, Stage};
use super::{AttemptInput, Context, LoadReport, LoadRequest, PeriodOutcome, guards};
use crate::dataset::{Kind, Period, Target};
use crate::engine::aggregate::tabulated::{
    PeriodScope, write_cadunico_period, write_period, write_population_period, write_state_period,
};
use crate::engine::load::tabulated::{self as working, Grain, PeriodRecord};
use crate::engine::load::{self, copy, ledger};
use crate::engine::parse::{MunicipalityIndex, TabulatedRow};
use crate::engine::source::{OpenOutcome, Progress, Validators};

/// Encodes the file's rows as binary COPY chunks for the working table.
struct WorkingSink {
    out: mpsc::Sender<Bytes>,
    buffer: BytesMut,
    chunk_bytes: usize,
    rows: u64,
}

impl WorkingSink {
    fn send(&mut self) -> Result<(), LoadError> {
        let chunk = self.buffer.split().freeze();
        self.buffer.reserve(self.chunk_bytes + 1024);
        self.out
            .blocking_send(chunk)
            .map_err(|_| LoadError::Stopped("the COPY stream stopped"))
    }
}

impl RowSink for WorkingSink {
    type Kind = Tabulated;

    #[inline]
    fn accept(&mut self, row: &TabulatedRow) -> Result<(), LoadError> {
        working::encode_row(&mut self.buffer, row);
        self.rows += 1;
        if self.buffer.len() >= self.chunk_bytes {
            self.send()?;
        }
        Ok(())
    }

    fn finish(mut self, _: &MunicipalityIndex, _: &mut ParseSummary) -> Result<(), LoadError> {
        if self.rows > 0 {
            self.buffer.extend_from_slice(copy::TRAILER);
            self.send()?;
        }
        Ok(())
    }
}

/// One attempt at a pre-aggregated file.
pub(super) async fn attempt(
    ctx: &Context,
    client: &tokio_postgres::Client,
    request: &LoadRequest,
    input: AttemptInput<'_>,
    progress: Arc<Progress>,
    stats: &mut serde_json::Value,
) -> Result<LoadReport, LoadError> {
    let started = Instant::now();
    let (spec, settings) = (&request.spec, &ctx.settings);
    let grain = match spec.kind {
        Kind::StateLevel => Grain::StateKey,
        _ => Grain::Municipality,
    };
    let mut report = LoadReport::new(input.load_id, input.redacted);
    let last = working::last_download(client, input.program_code).await?;
    // A state_level file is always read again: its shipped key → state
    // table may have changed since (the per-period digests, which include
    // the state, still leave unchanged periods alone).
    let reread = request.force || grain == Grain::StateKey;
    let conditional = match (&last, reread) {
        (Some(l), false) => Some(Validators {
            etag: l.etag.clone().filter(|e| !e.starts_with("W/")),
            last_modified: l.last_modified.clone(),
        }),
        _ => None,
    };

    // 1. The source, asked with the last published download's validators.
    let opened = stages::open_source(
        spec,
        input.location,
        settings,
        conditional.as_ref(),
        request.redirect_guard.clone(),
        &progress,
    )
    .await;
    let opened = match opened? {
        OpenOutcome::NotModified(meta) => {
            ledger::abandon_dead(client).await?;
            report.file = meta.file_name;
            return Ok(report.unchanged(started));
        }
        OpenOutcome::Body(opened) => opened,
    };
    let meta = opened.meta.clone();
    report.file = meta.file_name.clone();

    // 2. The load transaction, locked for the whole file, with its working
    // table (see pipeline::attempt for why the connection leaves the pool).
    let mut connection = super::load_connection(ctx, &input).await?;
    let tx = connection.transaction().await?;
    super::begin(&tx, settings, input.step).await?;
    if !load::session::try_lock_file(&tx, input.program_id).await? {
        return Err(LoadError::Busy {
            dataset: spec.dataset.clone(),
            period: request.period,
        });
    }
    ledger::abandon_dead(client).await?;
    working::create(&tx).await?;

    // 3. The stream: download → inflate → parse → COPY into the working table.
    progress.set_stage("stream");
    let (byte_tx, byte_rx) = mpsc::channel(settings.load.download_depth);
    let (copy_tx, copy_rx) = mpsc::channel(settings.load.channel_depth);
    let first = Arc::new(FirstFailure::default());
    let download = stages::spawn_download(opened, byte_tx, settings, &progress, &first);
    let parse_input = ParseInput {
        spec: spec.clone(),
        municipalities: input.municipalities,
        period: None,
        nis_key: input.nis_key,
        limits: settings.limits.clone(),
        file: meta.file_name.clone(),
        places: match grain {
            Grain::StateKey => super::places(spec, &load::state_ids(client).await?)?,
            Grain::Municipality => Default::default(),
        },
        // A row of a period the spec does not cover is a reject naming
        // its line, not the whole file's failure.
        periods: spec.period_filter(request.force),
    };
    let chunk_bytes = settings.load.copy_chunk_bytes;
    let sink = move || {
        let mut buffer = BytesMut::with_capacity(chunk_bytes + 1024);
        buffer.extend_from_slice(copy::HEADER);
        Ok(WorkingSink {
            out: copy_tx,
            buffer,
            chunk_bytes,
            rows: 0,
        })
    };
    let parser = parser::spawn_parser(byte_rx, parse_input, sink, &progress, &first);
    let copied = load::copy_stream(&tx, working::TARGET, "", copy_rx, parser).await;
    if let Err(LoadError::Db { .. }) = &copied {
        first.record(Stage::Stream);
    }
    if copied.is_err() && !download.is_finished() {
        download.abort();
    }
    let downloaded = stages::join_download(download).await;
    let ((copied_rows, mut summary), download) = first.root_cause(copied, downloaded)?;
    let stream_seconds = started.elapsed().as_secs_f64();
    report.bytes = download.bytes;
    report.file = summary.file.clone();
    report.rows_read = summary.rows_read;
    report.rows_loaded = summary.rows_loaded;
    report.rows_rejected = summary.rows_rejected;
    report.decompressed_bytes = summary.decompressed_bytes;
    report.rejects = summary.rejects.iter().take(20).cloned().collect();
    *stats = serde_json::json!({
        "bytes": download.bytes,
        "sha256": hex::encode(download.sha256),
        "rows_read": summary.rows_read,
        "rows_rejected": summary.rows_rejected,
        "layout": summary.layout,
        "stage_seconds": ledger::stage_seconds(&[("stream", stream_seconds)]),
    });

    // 4. The guards: the stream's, one row per municipality and period,
    // then per period: its bounds, unchanged or not, the shrink guard.
    guards::check_stream(&spec.quality, &summary, copied_rows)?;
    working::index(&tx).await?;
    let same_file = last
        .as_ref()
        .and_then(|l| l.sha256.as_deref())
        .is_some_and(|sha| sha == download.sha256);
    if same_file && !reread {
        return Ok(report.unchanged(started));
    }
    if let Some(repeat) = working::first_repeat(&tx, grain).await? {
        return Err(LoadError::DuplicateRow {
            file: summary.file.clone(),
            line: repeat.line,
            first_line: repeat.first_line,
            what: repeat.what,
            period: Period::from_date(repeat.period).to_string(),
        });
    }
    if grain == Grain::StateKey {
        // Each key's latest approval; a value said once per approval must
        // be the same on all its parts.
        let repeated = spec.repeated_value();
        if let Some(d) = working::choose_latest(&tx, repeated.is_some()).await? {
            return Err(LoadError::PartsDisagree {
                file: summary.file.clone(),
                column: repeated.unwrap_or_default(),
                key: d.key,
                period: Period::from_date(d.period).to_string(),
                first_line: d.lines.0,
                last_line: d.lines.1,
            });
        }
    }
    // A municipality's parts (PNAE's modalities) summed into one row,
    // before the digests; each period's row count checked against the
    // parser's.
    let merged = if grain == Grain::Municipality && spec.has_parts() {
        working::merge_parts(&tx).await?
    } else {
        Vec::new()
    };
    let published = working::published(client, input.program_code).await?;
    let mut changed = Vec::new();
    for found in working::periods(&tx, grain).await? {
        let before = published.iter().find(|p| p.period == found.period);
        let unchanged = before.is_some_and(|b| b.digest.as_deref() == Some(&found.digest[..]));
        if unchanged && !request.force {
            report.periods.push(PeriodOutcome {
                period: found.period,
                rows: found.rows as u64,
                published: false,
            });
            continue;
        }
        // The shrink guard's baseline: the period's own published rows, else
        // the latest earlier period's (a new month that came in partial).
        let baseline = before.or_else(|| {
            published
                .iter()
                .filter(|p| p.period < found.period)
                .max_by_key(|p| p.period)
        });
        if let (Some(before), false) = (baseline, request.force) {
            guards::check_shrink(
                &spec.quality,
                &format!("{} ({})", summary.file, found.period),
                found.rows as u64,
                before.rows,
                before.period,
            )?;
        }
        let loaded = summary
            .periods
            .iter()
            .find(|t| t.period == found.period.yyyymm())
            .map_or(found.rows as u64, |t| t.rows);
        guards::check_period_rejects(&spec.quality, &summary, found.period, loaded)?;
        changed.push(found);
    }
    if changed.is_empty() {
        return Ok(report.unchanged(started));
    }
    for m in &merged {
        let tally = summary
            .periods
            .iter_mut()
            .find(|t| t.period == m.period.yyyymm());
        if let Some(tally) = tally {
            if tally.rows as i64 != m.rows {
                return Err(LoadError::Internal(format!(
                    "{}: {} rows in the working table, {} parsed",
                    m.period, m.rows, tally.rows
                )));
            }
            // What is written: one row per municipality.
            tally.rows = m.municipalities as u64;
        }
    }

    // 5. The changed periods' aggregates and ledger rows, the download's
    // row, the caller's step, COMMIT.
    ledger::insert_rejects(&*tx, input.load_id, &summary.rejects).await?;
    progress.set_stage("aggregate");
    let aggregate_started = Instant::now();
    let data_source = format!("carga:{}", spec.dataset);
    for found in &changed {
        let tally = summary
            .periods
            .iter()
            .find(|t| t.period == found.period.yyyymm())
            .copied()
            .unwrap_or(PeriodTally::default());
        let scope = PeriodScope {
            program_id: input.program_id,
            reference_date: found.period.first_day(),
            load_id: input.load_id,
            data_source: &data_source,
        };
        let written = match (grain, spec.target) {
            (Grain::Municipality, Target::MunicipalitiesPopulation) => {
                // Only the latest period sets the population; an earlier
                // year's revision is recorded, not written over it.
                let latest = published
                    .iter()
                    .map(|p| p.period)
                    .chain(summary.periods.iter().filter_map(|t| {
                        Period::new((t.period / 100) as u16, (t.period % 100) as u8)
                    }))
                    .max()
                    .is_none_or(|l| l <= found.period);
                let written = write_population_period(&tx, &scope, latest).await?;
                guards::check_period_rows(&written, &tally)?;
                written
            }
            (Grain::Municipality, Target::CadunicoData) => {
                let written = write_cadunico_period(&tx, &scope).await?;
                guards::check_period_rows(&written, &tally)?;
                written
            }
            (Grain::Municipality, Target::BeneficiaryData) => {
                let written = write_period(&tx, &scope).await?;
                guards::check_period_totals(&written, &tally)?;
                written
            }
            // The parser saw every approval and part; what is written is
            // each key's latest approval, summed in SQL.
            (Grain::StateKey, _) => write_state_period(&tx, &scope).await?,
            (
                Grain::Municipality,
                Target::CrasLocations | Target::MunicipalitiesGeometry | Target::StatesGeometry,
            ) => {
                return Err(LoadError::Internal(
                    "places and boundaries are written by snapshot loads, not tabulated ones"
                        .into(),
                ));
            }
        };
        working::publish_period(
            &tx,
            input.load_id,
            &PeriodRecord {
                dataset: &spec.dataset,
                program_code: input.program_code,
                period: found.period,
                source_url: input.redacted,
                forced: request.force,
                digest: &found.digest,
                rows: found.rows,
                value_cents: written.value_cents,
                layout: &summary.layout,
            },
        )
        .await?;
        report.periods.push(PeriodOutcome {
            period: found.period,
            rows: found.rows as u64,
            published: true,
        });
    }
    report.periods.sort_by_key(|p| p.period);
    let aggregate_seconds = aggregate_started.elapsed().as_secs_f64();
    progress.set_stage("publish");
    let stage_pairs = [("stream", stream_seconds), ("aggregate", aggregate_seconds)];
    // The download's value: the sum of the rows read, which only means
    // something for a file of per-municipality values (a state_level file
    // repeats its value on parts and approvals; a file of counts has none).
    let value_cents = match (grain, spec.has_value()) {
        (Grain::Municipality, true) => Some(i64::try_from(summary.value_cents).map_err(|_| {
            LoadError::Internal(format!(
                "{}: the file's total value is beyond 64-bit cents",
                summary.file
            ))
        })?),
        _ => None,
    };
    working::publish_download(
        &tx,
        input.load_id,
        input.program_code,
        &ledger::PublishRecord {
            etag: meta.etag.clone(),
            last_modified: meta.last_modified.clone(),
            sha256: download.sha256.to_vec(),
            bytes_downloaded: download.bytes as i64,
            bytes_decompressed: summary.decompressed_bytes as i64,
            rows_read: summary.rows_read as i64,
            rows_loaded: summary.rows_loaded as i64,
            rows_rejected: summary.rows_rejected as i64,
            stage_seconds: ledger::stage_seconds(&stage_pairs),
            layout: summary.layout.clone(),
            ..ledger::PublishRecord::default()
        },
        value_cents,
    )
    .await?;
    if let Some(step) = input.step {
        step.before_commit(&tx, input.load_id).await?;
    }
    tx.commit().await?;
    report.stage_seconds = stage_pairs.to_vec();
    report.value_cents = value_cents.unwrap_or(0);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
