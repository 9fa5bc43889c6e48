//! One load, end to end: open the source, then four stages joined by
//! bounded channels — the download task (bytes, SHA-256), the inflate thread
//! (container, output caps), the parser thread (CSV, transform, tallies,
//! distinct-count spill, binary COPY encoding) and the COPY stream on the load
//! transaction — then the checks, the aggregates and the publish, all in that
//! one transaction. Any failure before COMMIT rolls everything back.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use deadpool_postgres::Pool;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;

use crate::code::Code;
use crate::config::{LimitSettings, Settings};
use crate::dataset::{Period, Spec};
use crate::engine::aggregate::{self, DistinctSpill, MunicipalTally, Tallies};
use crate::engine::decode::{ChannelReader, DecodeError, Decoded, Limited, find_decode_error};
use crate::engine::load::ledger::LedgerStatus;
use crate::engine::load::{self, copy, ledger};
use crate::engine::parse::records::RecordReader;
use crate::engine::parse::{HeaderError, MunicipalityIndex, Plan, Transformer};
use crate::engine::source::{
    self, DownloadSummary, OpenOutcome, Progress, SourceError, Validators,
};

/// Rows between two updates of the shared progress counters.
const PROGRESS_EVERY: u64 = 16 * 1024;

/// The stages whose failures race: the download, and the stream (inflate,
/// parse and COPY, whose errors all come out of the COPY future).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Source,
    Stream,
}

/// Which stage failed first, in time. When one stage fails, its neighbours
/// fail in turn ("the reader stopped", "the COPY stream stopped", a
/// forwarded body error); which of those errors reaches the caller first
/// is a matter of scheduling. Each stage records itself here at the moment
/// it fails for a reason of its own (before its neighbours can notice), so
/// the root cause is reported whatever the timing.
#[derive(Debug, Default)]
pub struct FirstFailure(std::sync::OnceLock<Stage>);

impl FirstFailure {
    /// Records `stage` unless another stage failed earlier.
    pub fn record(&self, stage: Stage) {
        let _ = self.0.set(stage);
    }

    pub fn get(&self) -> Option<Stage> {
        self.0.get().copied()
    }

    /// The root cause among the stream's and the download's results.
    pub fn root_cause<A, B>(
        &self,
        stream: Result<A, LoadError>,
        source: Result<B, LoadError>,
    ) -> Result<(A, B), LoadError> {
        match (stream, source) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
            (Err(stream), Err(source)) => Err(match self.get() {
                Some(Stage::Source) => source,
                Some(Stage::Stream) => stream,
                None if source.is_consequence() => stream,
                None => source,
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{file}: {source}")]
    Decode {
        file: String,
        #[source]
        source: DecodeError,
    },
    #[error("{file}: {source}")]
    Header {
        file: String,
        #[source]
        source: HeaderError,
    },
    #[error("{}{}: {message}", at_line(file, *line), if *byte > 0 { format!(", byte {byte}") } else { String::new() })]
    Csv {
        file: String,
        line: u64,
        byte: u64,
        message: String,
    },
    #[error(
        "{file}: {rejected} of {read} rows rejected, above the limit of {limit}; first at line {first_line}{first_column}: {first_reason}"
    )]
    TooManyRejects {
        file: String,
        rejected: u64,
        read: u64,
        limit: u64,
        first_line: u64,
        first_column: String,
        first_reason: String,
    },
    #[error("{file}: no rows (empty or header-only file)")]
    NoRows { file: String },
    #[error(
        "{file}: {rows} rows loaded, {percent:.1}% fewer than the last published load of {baseline_period} ({baseline_rows} rows); the guard allows {allowed:.0}% (use --force to publish anyway)"
    )]
    Shrink {
        file: String,
        rows: u64,
        baseline_rows: i64,
        baseline_period: String,
        percent: f64,
        allowed: f64,
    },
    #[error(
        "the distinct-count spill file in {dir}: {source} (it needs about 20 bytes per row; set load.spill_dir to a directory with room)"
    )]
    Spill {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another load of {dataset} {period} is running")]
    Busy { dataset: String, period: Period },
    #[error(transparent)]
    PeriodOutOfBounds(#[from] crate::dataset::PeriodOutOfBounds),
    #[error("the municipalities table is empty: run `carga run municipios` first")]
    NoMunicipalities,
    #[error(
        "CARGA_NIS_KEY is not set: a real load refuses to start without the secret key NIS numbers are hashed with"
    )]
    NoNisKey,
    #[error("dataset {0} is not a payments dataset")]
    NotPayments(String),
    /// A reference file that does not parse (the message names file, line, column).
    #[error("{0}")]
    Reference(String),
    /// The server's message, SQLSTATE and detail, on one line (the error
    /// is not chained as a source: its text is already here).
    #[error("database error: {}", crate::db::describe_db(.error))]
    Db { error: tokio_postgres::Error },
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("internal error: {0}")]
    Internal(String),
    /// A stage's neighbour went away: a consequence of the neighbour's own
    /// failure, never reported when that failure is known.
    #[error("{0}")]
    Stopped(&'static str),
    #[error("cancelled: the load was rolled back and the previous data is untouched")]
    Cancelled,
    /// The job's lease passed to another worker before this load could
    /// publish: the load rolled back.
    #[error(
        "lease lost: job {job_id} attempt {attempt} no longer holds its lease; the load was rolled back"
    )]
    LeaseLost { job_id: i64, attempt: i32 },
}

impl From<tokio_postgres::Error> for LoadError {
    fn from(error: tokio_postgres::Error) -> Self {
        LoadError::Db { error }
    }
}

impl LoadError {
    /// True when the error only says that another stage went away.
    pub fn is_consequence(&self) -> bool {
        match self {
            LoadError::Stopped(_) => true,
            LoadError::Source(e) => e.is_consequence(),
            _ => false,
        }
    }

    /// The delay the source asked for (`Retry-After`), if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            LoadError::Source(e) => e.retry_after(),
            _ => None,
        }
    }

    /// A stable code for the ledger and for scripts.
    pub fn code(&self) -> Code {
        match self {
            LoadError::Source(e) => e.code(),
            LoadError::Decode { source, .. } => source.code(),
            LoadError::Header { source, .. } => source.code(),
            LoadError::Csv { .. } => Code::CsvError,
            LoadError::TooManyRejects { .. } => Code::TooManyRejects,
            LoadError::NoRows { .. } => Code::EmptyFile,
            LoadError::Shrink { .. } => Code::ShrinkGuard,
            LoadError::Busy { .. } => Code::LoadInProgress,
            LoadError::Spill { .. } => Code::SpillIo,
            LoadError::PeriodOutOfBounds(_) => Code::PeriodOutOfBounds,
            LoadError::NoMunicipalities => Code::NoReferenceData,
            LoadError::NoNisKey => Code::NoNisKey,
            LoadError::NotPayments(_) => Code::NotPayments,
            LoadError::Reference(_) => Code::ReferenceInvalid,
            LoadError::Db { error } => match error.code() {
                Some(c) => Code::sql_state(c.code()),
                None => Code::DatabaseError,
            },
            LoadError::Pool(_) => Code::DatabasePool,
            LoadError::Internal(_) => Code::Internal,
            LoadError::Stopped(_) => Code::StageStopped,
            LoadError::Cancelled => Code::Cancelled,
            LoadError::LeaseLost { .. } => Code::LeaseLost,
        }
    }
}

/// What the parser thread needs.
pub struct ParseInput {
    pub spec: Spec,
    pub municipalities: MunicipalityIndex,
    pub period: Option<Period>,
    pub nis_key: SecretString,
    pub limits: LimitSettings,
    pub chunk_bytes: usize,
    /// Where and on how many threads distinct beneficiaries are counted
    /// (see `aggregate::distinct`); a real load only.
    pub spill_dir: PathBuf,
    pub count_threads: usize,
    /// The source's file name, until the archive names its entry.
    pub file: String,
}

/// What the parser thread saw.
#[derive(Debug, Clone, Default)]
pub struct ParseSummary {
    pub file: String,
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    /// The first `limits.max_stored_rejects` rejects.
    pub rejects: Vec<ledger::Reject>,
    pub rejects_by_code: BTreeMap<&'static str, u64>,
    pub value_cents: i128,
    pub decompressed_bytes: u64,
    /// `YYYYMM` the rows were checked against.
    pub period: u32,
    /// Per municipality (database id): exact sums and counts.
    pub municipal: Vec<(i32, MunicipalTally)>,
    /// Distinct beneficiaries per state (database id).
    pub states: Vec<(i32, u64)>,
    /// Distinct beneficiaries in the file.
    pub distinct_beneficiaries: u64,
    /// Bytes of the distinct-count spill file.
    pub spilled_bytes: u64,
}

fn read_error<R: Read>(file: &str, reader: &RecordReader<R>, error: io::Error) -> LoadError {
    let (line, byte) = reader.position();
    io_error(file, line, byte, error)
}

fn io_error(file: &str, line: u64, byte: u64, e: io::Error) -> LoadError {
    if let Some(decode) = find_decode_error(&e) {
        return LoadError::Decode {
            file: at_line(file, line),
            source: decode.clone(),
        };
    }
    LoadError::Csv {
        file: file.to_string(),
        line,
        byte,
        message: e.to_string(),
    }
}

/// `file` with the line appended when known.
fn at_line(file: &str, line: u64) -> String {
    if line > 0 {
        format!("{file}: line {line}")
    } else {
        file.to_string()
    }
}

/// The parser stage, on a blocking thread: decode the container, read the
/// header, transform every record and, when `out` is given, encode rows as
/// binary COPY chunks of about `chunk_bytes`. No allocation per row.
pub fn parse_blocking(
    input: impl io::BufRead + Send + 'static,
    parse: ParseInput,
    out: Option<mpsc::Sender<Bytes>>,
    progress: Arc<Progress>,
) -> Result<ParseSummary, LoadError> {
    let mut file = parse.file.clone();
    let decoded =
        Decoded::open(parse.spec.source.container, input).map_err(|e| io_error(&file, 0, 0, e))?;
    if let Some(entry) = decoded.entry_name() {
        file = format!("{entry} (in {file})");
    }
    // Inflating runs on its own thread, a chunk ahead of the parser: the two
    // are the client's biggest costs and overlap on two cores.
    let (inflated_tx, inflated_rx) = mpsc::channel(INFLATED_DEPTH);
    let limits = parse.limits.clone();
    let inflater = std::thread::Builder::new()
        .name("carga-inflate".into())
        .spawn(move || inflate(decoded, &limits, &inflated_tx))
        .map_err(|e| LoadError::Internal(format!("failed to start the inflate thread: {e}")))?;
    let mut reader = RecordReader::new(ChannelReader::new(inflated_rx), parse.spec.delimiter);
    let plan = match reader.next_record() {
        Ok(Some(header)) => Plan::new(&parse.spec, &header),
        Ok(None) => Err(HeaderError::Empty),
        Err(e) => return Err(read_error(&file, &reader, e)),
    }
    .map_err(|source| LoadError::Header {
        file: file.clone(),
        source,
    })?;
    let mut transformer = Transformer::new(
        plan,
        &parse.spec,
        parse.municipalities,
        parse.period,
        parse.nis_key.expose_secret().as_bytes(),
    );
    let reference_days = parse
        .period
        .map(|p| crate::engine::parse::value::first_day_pg(p.yyyymm()));
    // Only a real load (with a period) tallies and counts beneficiaries.
    let spill_error = |source: std::io::Error| LoadError::Spill {
        dir: parse.spill_dir.display().to_string(),
        source,
    };
    let mut spill = match reference_days {
        Some(_) => Some(DistinctSpill::new(&parse.spill_dir).map_err(spill_error)?),
        None => None,
    };
    let mut tallies = Tallies::new(transformer.municipalities().len());
    let mut summary = ParseSummary {
        file: file.clone(),
        ..ParseSummary::default()
    };
    let chunk_bytes = parse.chunk_bytes;
    let mut buffer = BytesMut::with_capacity(chunk_bytes + 1024);
    buffer.extend_from_slice(copy::HEADER);
    let send = |buffer: &mut BytesMut| -> Result<(), LoadError> {
        if let Some(out) = &out {
            let chunk = buffer.split().freeze();
            buffer.reserve(chunk_bytes + 1024);
            out.blocking_send(chunk)
                .map_err(|_| LoadError::Stopped("the COPY stream stopped"))?;
        } else {
            buffer.clear();
        }
        Ok(())
    };
    loop {
        let record = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(e) => return Err(read_error(&file, &reader, e)),
        };
        if record.lines > 1 {
            // The Portal's fields never hold a line break: a quote left open
            // swallowed the following line(s). Every line is counted as read
            // and rejected, and the reject names them all.
            let lines = record.lines;
            summary.rows_read += lines;
            summary.rows_rejected += lines;
            *summary.rejects_by_code.entry(UNBALANCED_QUOTE).or_default() += lines;
            if summary.rejects.len() < parse.limits.max_stored_rejects {
                summary.rejects.push(ledger::Reject {
                    line: record.line,
                    byte_offset: record.byte,
                    column: None,
                    code: UNBALANCED_QUOTE,
                    reason: format!(
                        "unbalanced quote: one record runs over lines {} to {}",
                        record.line,
                        record.line + lines - 1
                    ),
                    raw_line: transformer.redacted_line(&record, parse.limits.reject_line_bytes),
                });
            }
            continue;
        }
        summary.rows_read += 1;
        match transformer.row(&record) {
            Ok(row) => {
                summary.rows_loaded += 1;
                summary.value_cents += i128::from(row.value_cents);
                if let (Some(days), Some(spill)) = (reference_days, spill.as_mut()) {
                    if let Some(hash) = &row.beneficiary_hash {
                        spill.push(hash, row.municipality).map_err(spill_error)?;
                    }
                    tallies.add(&row, days);
                    copy::encode_row(&mut buffer, &row);
                    if buffer.len() >= chunk_bytes {
                        send(&mut buffer)?;
                    }
                }
            }
            Err(error) => {
                summary.rows_rejected += 1;
                *summary
                    .rejects_by_code
                    .entry(error.reason.code())
                    .or_default() += 1;
                if summary.rejects.len() < parse.limits.max_stored_rejects {
                    summary.rejects.push(ledger::Reject {
                        line: record.line,
                        byte_offset: record.byte,
                        column: error.column,
                        code: error.reason.code(),
                        reason: error.reason.to_string(),
                        raw_line: transformer
                            .redacted_line(&record, parse.limits.reject_line_bytes),
                    });
                }
            }
        }
        if summary.rows_read % PROGRESS_EVERY == 0 {
            progress.rows.store(summary.rows_read, Ordering::Relaxed);
            progress
                .rows_rejected
                .store(summary.rows_rejected, Ordering::Relaxed);
        }
    }
    progress.rows.store(summary.rows_read, Ordering::Relaxed);
    progress
        .rows_rejected
        .store(summary.rows_rejected, Ordering::Relaxed);
    drop(reader);
    // The inflater verified the archive's end before closing its channel
    // (a failure would have reached the reader as an error).
    summary.decompressed_bytes = inflater
        .join()
        .map_err(|_| LoadError::Internal("the inflate thread panicked".into()))?;
    summary.period = transformer.period();
    if summary.rows_loaded > 0 {
        buffer.extend_from_slice(copy::TRAILER);
        send(&mut buffer)?;
    }
    // The server finishes the COPY while the spill is counted.
    let index = transformer.municipalities();
    let distinct = match spill {
        Some(spill) => {
            summary.spilled_bytes = spill.spilled_bytes();
            spill
                .finish(
                    index.state_of(),
                    index.state_ids().len(),
                    parse.count_threads,
                )
                .map_err(spill_error)?
        }
        None => aggregate::DistinctCounts::default(),
    };
    summary.municipal = tallies
        .present()
        .map(|(dense, t)| {
            let people = distinct.per_municipality.get(dense as usize).copied();
            let tally = MunicipalTally {
                people: people.unwrap_or(0),
                ..*t
            };
            (index.id(dense), tally)
        })
        .collect();
    summary.states = index
        .state_ids()
        .iter()
        .zip(&distinct.per_state)
        .filter(|(_, people)| **people > 0)
        .map(|(id, people)| (*id, *people))
        .collect();
    summary.distinct_beneficiaries = distinct.national;
    Ok(summary)
}

/// The reject code of a record that spans several lines.
const UNBALANCED_QUOTE: &str = "unbalanced_quote";

/// Decoded chunks in flight between the inflate thread and the parser.
const INFLATED_DEPTH: usize = 8;
/// Size of one decoded chunk.
const INFLATED_CHUNK: usize = 256 * 1024;

/// The inflate stage: reads the decoded container through the output caps
/// and sends full chunks to the parser; at the end verifies the container's
/// trailer. Any error is sent down the channel, so the parser fails with it.
/// Returns the decoded byte count.
fn inflate<R: io::BufRead>(
    decoded: Decoded<R>,
    limits: &LimitSettings,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> u64 {
    let mut limited = Limited::new(
        decoded,
        limits.max_decompressed_bytes,
        limits.max_record_bytes,
    );
    let mut eof = false;
    while !eof {
        let mut chunk = BytesMut::zeroed(INFLATED_CHUNK);
        let mut filled = 0;
        while filled < chunk.len() {
            match limited.read(&mut chunk[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) => {
                    // The lines before the failure first, so the parser
                    // reaches the failing line and can name it.
                    chunk.truncate(filled);
                    if filled > 0 && tx.blocking_send(Ok(chunk.freeze())).is_err() {
                        return limited.total();
                    }
                    let total = limited.total();
                    let e = match find_decode_error(&e) {
                        Some(DecodeError::RecordTooLarge { .. }) => {
                            archive_fault(limited.into_inner()).unwrap_or(e)
                        }
                        _ => e,
                    };
                    let _ = tx.blocking_send(Err(e));
                    return total;
                }
            }
        }
        chunk.truncate(filled);
        if filled > 0 && tx.blocking_send(Ok(chunk.freeze())).is_err() {
            return limited.total(); // the parser stopped
        }
    }
    let total = limited.total();
    if let Err(e) = limited.into_inner().finish() {
        let _ = tx.blocking_send(Err(e));
    }
    total
}

/// Starts the download task, which records itself in `first` when it fails
/// for a reason of its own.
fn spawn_download(
    opened: source::Opened,
    bytes: mpsc::Sender<io::Result<Bytes>>,
    settings: &Settings,
    progress: &Arc<Progress>,
    first: &Arc<FirstFailure>,
) -> tokio::task::JoinHandle<Result<DownloadSummary, SourceError>> {
    let failed = first.clone();
    tokio::spawn(opened.pump(
        bytes,
        source::DownloadLimits::from_settings(&settings.http),
        progress.clone(),
        move || failed.record(Stage::Source),
    ))
}

/// Starts the parser on a blocking thread (it records itself in `first`
/// when it fails for a reason of its own); the future ends with its result.
fn spawn_parser(
    bytes: mpsc::Receiver<io::Result<Bytes>>,
    input: ParseInput,
    out: Option<mpsc::Sender<Bytes>>,
    progress: &Arc<Progress>,
    first: &Arc<FirstFailure>,
) -> impl Future<Output = Result<ParseSummary, LoadError>> + use<> {
    let (progress, first) = (progress.clone(), first.clone());
    let parser = tokio::task::spawn_blocking(move || {
        let parsed = parse_blocking(ChannelReader::new(bytes), input, out, progress);
        if parsed.as_ref().is_err_and(|e| !e.is_consequence()) {
            first.record(Stage::Stream);
        }
        parsed
    });
    async move {
        parser
            .await
            .map_err(|e| LoadError::Internal(format!("parser thread failed: {e}")))?
    }
}

/// The download task's result; an abort (after the stream failed) is a
/// consequence.
async fn join_download(
    download: tokio::task::JoinHandle<Result<DownloadSummary, SourceError>>,
) -> Result<DownloadSummary, LoadError> {
    match download.await {
        Ok(r) => r.map_err(LoadError::from),
        Err(e) if e.is_cancelled() => Err(LoadError::Stopped("download cancelled")),
        Err(e) => Err(LoadError::Internal(format!("download task failed: {e}"))),
    }
}

/// Decompressed bytes read past an over-long record to find out whether the
/// archive itself is broken.
const FAULT_PROBE_BYTES: u64 = 64 << 20;

/// A corrupt deflate stream inflates to garbage with no line breaks, which
/// trips the record cap before the decoder notices. Reads on (discarding,
/// at most [`FAULT_PROBE_BYTES`]) and returns the archive's own error if it
/// has one: that, not the long "record", is the root cause.
fn archive_fault<R: io::BufRead>(mut decoded: Decoded<R>) -> Option<io::Error> {
    let mut sink = vec![0u8; INFLATED_CHUNK];
    let mut read: u64 = 0;
    while read < FAULT_PROBE_BYTES {
        match decoded.read(&mut sink) {
            Ok(0) => return decoded.finish().err(),
            Ok(n) => read += n as u64,
            Err(e) if find_decode_error(&e).is_some() => return Some(e),
            Err(_) => return None, // the source's error is reported by the source
        }
    }
    None
}

/// The limit on rejects for `rows_read` rows.
pub fn reject_limit(spec: &Spec, rows_read: u64) -> u64 {
    let by_ratio = (spec.quality.max_reject_ratio * rows_read as f64).floor() as u64;
    by_ratio.max(spec.quality.reject_allowance)
}

/// Fails when the rejects pass the spec's limit.
pub fn check_rejects(spec: &Spec, summary: &ParseSummary) -> Result<(), LoadError> {
    let limit = reject_limit(spec, summary.rows_read);
    if summary.rows_rejected > limit {
        let first = summary.rejects.first();
        return Err(LoadError::TooManyRejects {
            file: summary.file.clone(),
            rejected: summary.rows_rejected,
            read: summary.rows_read,
            limit,
            first_line: first.map_or(0, |r| r.line),
            first_column: first
                .and_then(|r| r.column.as_ref())
                .map(|c| format!(", column {c:?}"))
                .unwrap_or_default(),
            first_reason: first.map(|r| r.reason.clone()).unwrap_or_default(),
        });
    }
    Ok(())
}

/// Shared handles for loads.
#[derive(Clone)]
pub struct Context {
    pub settings: Settings,
    pub pool: Pool,
    /// The pool's TLS connector: a cancel request goes over TLS when the
    /// session does.
    pub tls: crate::db::Tls,
}

/// One load to run.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    pub spec: Spec,
    pub period: Period,
    /// Overrides the spec's URL template.
    pub url: Option<String>,
    /// Publish even when unchanged or shrunk.
    pub force: bool,
    /// Checks every redirect of the source (a URL from a webhook).
    pub redirect_guard: Option<source::RedirectGuard>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Published,
    /// Same bytes (SHA-256) or validators as the published load: nothing done.
    Unchanged,
}

/// What a finished load reports.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub load_id: i64,
    pub outcome: Outcome,
    pub source: String,
    pub file: String,
    pub bytes: u64,
    pub decompressed_bytes: u64,
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    pub distinct_beneficiaries: i64,
    pub municipalities: i64,
    pub value_cents: i64,
    pub seconds: f64,
    pub stage_seconds: Vec<(&'static str, f64)>,
    pub rejects: Vec<ledger::Reject>,
    pub replaced_load: Option<String>,
}

impl LoadReport {
    pub fn rows_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.rows_read as f64 / self.seconds
        } else {
            0.0
        }
    }
}

fn lock_key(program_id: i32, period: Period) -> i64 {
    (0x6361_i64 << 48) | (i64::from(program_id) << 24) | i64::from(period.yyyymm())
}

/// Runs one load of a payments dataset and records it in the ledger.
///
/// When `cancel` completes first, the attempt is dropped (its transaction
/// rolls back, the COPY aborts), the ledger records `cancelled`, and
/// [`LoadError::Cancelled`] is returned.
pub async fn run(
    ctx: &Context,
    request: &LoadRequest,
    nis_key: Option<SecretString>,
    progress: Arc<Progress>,
    cancel: impl Future<Output = ()>,
) -> Result<LoadReport, LoadError> {
    run_with(ctx, request, nis_key, progress, cancel, None).await
}

/// What a caller (the job runner) adds to a load without the pipeline
/// learning about it: it hears which database session runs the load, and
/// adds a step to the publish transaction (the job's fenced completion).
pub trait PublishStep: Send + Sync {
    /// A name for the load's session in `pg_stat_activity` (set for its
    /// transaction only), so others can tell it apart.
    fn application_name(&self) -> String;

    /// The load's transaction runs on this backend (known before the COPY).
    fn load_session(&self, backend_pid: i32);

    /// Runs in the publish transaction, after the ledger is written and
    /// before COMMIT. An error rolls the whole load back.
    fn before_commit<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        load_id: i64,
    ) -> futures::future::BoxFuture<'a, Result<(), LoadError>>;
}

/// [`run`], with the caller's [`PublishStep`].
#[tracing::instrument(skip_all, fields(dataset = %request.spec.dataset, period = %request.period))]
pub async fn run_with(
    ctx: &Context,
    request: &LoadRequest,
    nis_key: Option<SecretString>,
    progress: Arc<Progress>,
    cancel: impl Future<Output = ()>,
    step: Option<&dyn PublishStep>,
) -> Result<LoadReport, LoadError> {
    let spec = &request.spec;
    let program = spec
        .program
        .clone()
        .ok_or_else(|| LoadError::NotPayments(spec.dataset.clone()))?;
    let nis_key = nis_key.ok_or(LoadError::NoNisKey)?;
    spec.check_period(request.period, request.force)?;
    let client = ctx.pool.get().await?;
    let program_id = load::ensure_program(&**client, &program).await?;
    load::ensure_program_partition(&**client, program_id, &program.code).await?;
    let municipalities = load::municipality_index(&**client).await?;
    if municipalities.is_empty() {
        return Err(LoadError::NoMunicipalities);
    }
    let location = request
        .url
        .clone()
        .unwrap_or_else(|| spec.url_for(request.period));
    let redacted = source::redact_source(&location);
    let load_id = ledger::start(
        &**client,
        &spec.dataset,
        Some(&program.code),
        Some(request.period),
        &redacted,
        request.force,
    )
    .await?;
    tracing::info!(load_id, dataset = %spec.dataset, period = %request.period, source = %redacted, "load started");
    let mut stats = serde_json::json!({});
    let session = Arc::new(std::sync::Mutex::new(None));
    let attempt = attempt(
        ctx,
        &client,
        request,
        AttemptInput {
            program_id,
            program_code: &program.code,
            paid_per_family: program.paid_per_family,
            municipalities,
            location: &location,
            redacted: &redacted,
            load_id,
            nis_key,
            session: session.clone(),
            step,
        },
        progress,
        &mut stats,
    );
    let result = tokio::select! {
        result = attempt => result,
        () = cancel => {
            // Dropping the attempt queues a ROLLBACK behind whatever the
            // server is running (a COPY, an aggregate); cancel that first so
            // the transaction, its leaf and the month's lock go now.
            let token = session.lock().ok().and_then(|mut t| t.take());
            if let Some(token) = token {
                if let Err(e) = token.cancel_query(ctx.tls.clone()).await {
                    tracing::warn!(error = %crate::db::describe_db(&e), "failed to cancel the load's statement");
                }
            }
            Err(LoadError::Cancelled)
        }
    };
    match &result {
        Ok(report) if report.outcome == Outcome::Unchanged => {
            ledger::finish_unpublished(
                &**client,
                load_id,
                LedgerStatus::Skipped,
                Some("unchanged"),
                None,
                &stats,
            )
            .await?;
            tracing::info!(
                load_id,
                "source unchanged since the published load; skipped"
            );
        }
        Ok(report) => {
            tracing::info!(
                load_id,
                rows = report.rows_loaded,
                seconds = report.seconds,
                "load published"
            );
        }
        Err(error) => {
            let message = error.to_string();
            let status = match error {
                LoadError::Cancelled => LedgerStatus::Cancelled,
                _ => LedgerStatus::Failed,
            };
            if let Err(e) = ledger::finish_unpublished(
                &**client,
                load_id,
                status,
                Some(&*error.code().as_str()),
                Some(&message),
                &stats,
            )
            .await
            {
                tracing::error!(error = %crate::db::describe_db(&e), "failed to record the failure in the ledger");
            }
            tracing::error!(load_id, code = %error.code(), error = %message, "load failed");
        }
    }
    result
}

struct AttemptInput<'a> {
    program_id: i32,
    program_code: &'a str,
    paid_per_family: bool,
    municipalities: MunicipalityIndex,
    location: &'a str,
    redacted: &'a str,
    load_id: i64,
    nis_key: SecretString,
    /// Filled with the load connection's cancel token once it has one.
    session: Arc<std::sync::Mutex<Option<tokio_postgres::CancelToken>>>,
    step: Option<&'a dyn PublishStep>,
}

#[tracing::instrument(skip_all, fields(load_id = input.load_id))]
async fn attempt(
    ctx: &Context,
    client: &tokio_postgres::Client,
    request: &LoadRequest,
    input: AttemptInput<'_>,
    progress: Arc<Progress>,
    stats: &mut serde_json::Value,
) -> Result<LoadReport, LoadError> {
    let started = Instant::now();
    let spec = &request.spec;
    let period = request.period;
    let settings = &ctx.settings;
    let current = ledger::current(client, input.program_code, period).await?;
    let conditional = match (&current, request.force) {
        (Some(c), false) => Some(Validators {
            etag: c.etag.clone().filter(|e| !e.starts_with("W/")),
            last_modified: c.last_modified.clone(),
        }),
        _ => None,
    };
    let mut report = LoadReport {
        load_id: input.load_id,
        outcome: Outcome::Published,
        source: input.redacted.to_string(),
        file: String::new(),
        bytes: 0,
        decompressed_bytes: 0,
        rows_read: 0,
        rows_loaded: 0,
        rows_rejected: 0,
        distinct_beneficiaries: 0,
        municipalities: 0,
        value_cents: 0,
        seconds: 0.0,
        stage_seconds: Vec::new(),
        rejects: Vec::new(),
        replaced_load: None,
    };
    let opened = source::open_guarded(
        input.location,
        &settings.http,
        conditional.as_ref(),
        request.redirect_guard.clone(),
    )
    .await;
    if let Some(status) = source::answered_status(&opened) {
        progress
            .source_status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }
    let opened = match opened? {
        OpenOutcome::NotModified(meta) => {
            // No lock is taken on this path: sweep dead attempts here too.
            ledger::abandon_dead(client).await?;
            report.outcome = Outcome::Unchanged;
            report.file = meta.file_name;
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        OpenOutcome::Body(opened) => opened,
    };
    let meta = opened.meta.clone();
    report.file = meta.file_name.clone();

    // Taken out of the pool: when a cancel drops this attempt mid-statement,
    // the connection closes (the server rolls back) instead of going back to
    // the pool with a ROLLBACK queued, where the cancel request sent next
    // could hit another task's statement on the same backend.
    let mut connection = deadpool_postgres::Object::take(ctx.pool.get().await?);
    if let Ok(mut slot) = input.session.lock() {
        *slot = Some(connection.cancel_token());
    }
    let tx = connection.transaction().await?;
    if let Some(step) = input.step {
        let pid: i32 = tx
            .query_one(
                "SELECT pg_backend_pid() FROM set_config('application_name', $1, true)",
                &[&step.application_name()],
            )
            .await?
            .get(0);
        step.load_session(pid);
    }
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '{}s'; SET LOCAL lock_timeout = '{}ms'",
        settings.database.statement_timeout_s, settings.database.lock_timeout_ms
    ))
    .await?;
    let locked: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1)",
            &[&lock_key(input.program_id, period)],
        )
        .await?
        .get(0);
    if !locked {
        return Err(LoadError::Busy {
            dataset: spec.dataset.clone(),
            period,
        });
    }
    // Holding the lock: 'running' rows whose process is gone are dead
    // attempts. Marked on the ledger connection, so a later failure or skip
    // of this load does not roll the mark back.
    ledger::abandon_stale(client, input.program_code, period, input.load_id).await?;
    let leaf = load::create_leaf(
        &tx,
        input.program_code,
        input.program_id,
        period,
        input.load_id,
    )
    .await?;

    progress.set_stage("stream");
    let (byte_tx, byte_rx) = mpsc::channel(settings.load.download_depth);
    let (copy_tx, copy_rx) = mpsc::channel(settings.load.channel_depth);
    let first = Arc::new(FirstFailure::default());
    let download = spawn_download(opened, byte_tx, settings, &progress, &first);
    let parse_input = ParseInput {
        spec: spec.clone(),
        municipalities: input.municipalities,
        period: Some(period),
        nis_key: input.nis_key,
        limits: settings.limits.clone(),
        chunk_bytes: settings.load.copy_chunk_bytes,
        spill_dir: settings.load.spill_dir(),
        count_threads: settings.load.count_threads(),
        file: meta.file_name.clone(),
    };
    let parser = spawn_parser(byte_rx, parse_input, Some(copy_tx), &progress, &first);
    let copied = load::copy_into(&tx, &leaf, copy_rx, parser).await;
    if let Err(LoadError::Db { .. }) = &copied {
        // The server refused the COPY; the parser then fails to send.
        first.record(Stage::Stream);
    }
    if copied.is_err() && !download.is_finished() {
        download.abort();
    }
    let downloaded = join_download(download).await;
    let ((copied_rows, summary), download) = first.root_cause(copied, downloaded)?;
    report.bytes = download.bytes;
    *stats = serde_json::json!({ "bytes": download.bytes, "sha256": hex::encode(download.sha256) });
    let stream_seconds = started.elapsed().as_secs_f64();
    report.file = summary.file.clone();
    report.rows_read = summary.rows_read;
    report.rows_loaded = summary.rows_loaded;
    report.rows_rejected = summary.rows_rejected;
    report.decompressed_bytes = summary.decompressed_bytes;
    report.rejects = summary.rejects.iter().take(20).cloned().collect();
    stats["rows_read"] = summary.rows_read.into();
    stats["rows_rejected"] = summary.rows_rejected.into();
    stats["spilled_bytes"] = summary.spilled_bytes.into();
    tracing::debug!(
        seconds = stream_seconds,
        spilled_bytes = summary.spilled_bytes,
        "stream finished"
    );
    stats["stage_seconds"] = ledger::stage_seconds(&[("stream", stream_seconds)]);

    if summary.rows_read == 0 {
        return Err(LoadError::NoRows { file: summary.file });
    }
    check_rejects(spec, &summary)?;
    if summary.rows_loaded == 0 {
        return Err(LoadError::NoRows { file: summary.file });
    }
    if copied_rows != summary.rows_loaded {
        return Err(LoadError::Internal(format!(
            "COPY stored {copied_rows} rows but the parser produced {}",
            summary.rows_loaded
        )));
    }
    let unchanged = current
        .as_ref()
        .and_then(|c| c.sha256.as_deref())
        .is_some_and(|sha| sha == download.sha256);
    if unchanged && !request.force {
        report.outcome = Outcome::Unchanged;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report); // the transaction rolls back on drop
    }
    if !request.force {
        if let Some(baseline) = ledger::baseline(client, input.program_code, period).await? {
            let floor = (1.0 - spec.quality.max_shrink) * baseline.rows_loaded as f64;
            if (summary.rows_loaded as f64) < floor {
                let percent =
                    100.0 * (1.0 - summary.rows_loaded as f64 / baseline.rows_loaded as f64);
                return Err(LoadError::Shrink {
                    file: summary.file.clone(),
                    rows: summary.rows_loaded,
                    baseline_rows: baseline.rows_loaded,
                    baseline_period: Period::from_date(baseline.period).to_string(),
                    percent,
                    allowed: spec.quality.max_shrink * 100.0,
                });
            }
        }
    }
    ledger::insert_rejects(&*tx, input.load_id, &summary.rejects).await?;

    progress.set_stage("aggregate");
    let aggregate_started = Instant::now();
    let data_source = format!("portal_transparencia:{}", spec.dataset);
    let scope = aggregate::Scope {
        program_id: input.program_id,
        reference_date: period.first_day(),
        load_id: input.load_id,
        paid_per_family: input.paid_per_family,
        data_source: &data_source,
    };
    let counted = aggregate::Counted {
        municipal: &summary.municipal,
        states: &summary.states,
        distinct_beneficiaries: summary.distinct_beneficiaries,
    };
    aggregate::prepare(&tx, &counted).await?;
    aggregate::municipal(&tx, &scope).await?;
    aggregate::state(&tx, &scope).await?;
    let totals = aggregate::national(&tx, &scope, summary.distinct_beneficiaries).await?;
    // The totals come from the tallies joined to `municipalities`: a
    // municipality lost in that join would silently drop its rows.
    if totals.payments as u64 != summary.rows_loaded
        || i128::from(totals.value_cents) != summary.value_cents
    {
        return Err(LoadError::Internal(format!(
            "aggregates disagree with the stream: {} rows / {} cents aggregated, {} rows / {} cents parsed",
            totals.payments, totals.value_cents, summary.rows_loaded, summary.value_cents
        )));
    }
    let aggregate_seconds = aggregate_started.elapsed().as_secs_f64();

    progress.set_stage("publish");
    let publish_started = Instant::now();
    report.replaced_load = load::swap(&tx, input.program_code, period, &leaf).await?;
    let stage_pairs = [
        ("stream", stream_seconds),
        ("aggregate", aggregate_seconds),
        ("publish", publish_started.elapsed().as_secs_f64()),
    ];
    ledger::publish(
        &*tx,
        input.load_id,
        input.program_code,
        period,
        &ledger::PublishRecord {
            etag: meta.etag.clone(),
            last_modified: meta.last_modified.clone(),
            sha256: download.sha256.to_vec(),
            bytes_downloaded: download.bytes as i64,
            bytes_decompressed: summary.decompressed_bytes as i64,
            rows_read: summary.rows_read as i64,
            rows_loaded: summary.rows_loaded as i64,
            rows_rejected: summary.rows_rejected as i64,
            distinct_beneficiaries: totals.distinct_beneficiaries,
            value_cents: totals.value_cents,
            partition_name: leaf.clone(),
            stage_seconds: ledger::stage_seconds(&stage_pairs),
        },
    )
    .await?;
    if let Some(step) = input.step {
        step.before_commit(&tx, input.load_id).await?;
    }
    tx.commit().await?;
    report.stage_seconds = stage_pairs.to_vec();
    report.stage_seconds[2].1 = publish_started.elapsed().as_secs_f64();
    report.distinct_beneficiaries = totals.distinct_beneficiaries;
    report.municipalities = totals.municipalities;
    report.value_cents = totals.value_cents;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What `validate` found.
#[derive(Debug, Clone)]
pub struct ValidateReport {
    pub source: String,
    pub summary: ParseSummary,
    pub bytes: u64,
    pub limit: u64,
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
    let download = spawn_download(opened, byte_tx, settings, &progress, &first);
    let input = ParseInput {
        spec: spec.clone(),
        municipalities,
        period: None,
        nis_key: SecretString::from("validate: nothing is stored"),
        limits: settings.limits.clone(),
        chunk_bytes: settings.load.copy_chunk_bytes,
        spill_dir: PathBuf::new(),
        count_threads: 1,
        file,
    };
    let parsed = spawn_parser(byte_rx, input, None, &progress, &first).await;
    if parsed.is_err() && !download.is_finished() {
        download.abort();
    }
    let downloaded = join_download(download).await;
    let (summary, _) = first.root_cause(parsed, downloaded)?;
    let bytes = progress.bytes.load(Ordering::Relaxed);
    Ok(ValidateReport {
        source: source::redact_source(location),
        limit: reject_limit(spec, summary.rows_read),
        summary,
        bytes,
    })
}
