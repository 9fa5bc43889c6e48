//! The parser stage: records in, typed rows out to a [`RowSink`], every
//! reject through one [`RejectLog`]. The same loop serves a load (rows go
//! to binary COPY, the tallies and the distinct-count spill) and `validate`
//! (rows are checked and dropped); the sink is the only difference.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;

use super::error::{LoadError, at_line};
use super::stages::{FirstFailure, INFLATED_DEPTH, Stage, inflate};
use crate::config::LimitSettings;
use crate::dataset::{Period, Spec};
use crate::engine::aggregate::{DistinctSpill, MunicipalTally, Tallies};
use crate::engine::decode::{ChannelReader, Decoded, find_decode_error};
use crate::engine::load::{copy, ledger};
use crate::engine::parse::records::{Record, RecordReader};
use crate::engine::parse::{
    MunicipalityIndex, PaymentRow, Plan, RowError, TabulatedRow, Transformer,
};
use crate::engine::source::Progress;

/// Rows between two updates of the shared progress counters.
const PROGRESS_EVERY: u64 = 16 * 1024;

/// The reject code of a record that spans several lines.
const UNBALANCED_QUOTE: &str = "unbalanced_quote";

/// What the parser thread needs.
pub(crate) struct ParseInput {
    pub(crate) spec: Spec,
    pub(crate) municipalities: MunicipalityIndex,
    /// The period the rows must belong to; `None` when only checking a file
    /// (the period is then read from it).
    pub(crate) period: Option<Period>,
    pub(crate) nis_key: SecretString,
    pub(crate) limits: LimitSettings,
    /// The source's file name, until the archive names its entry.
    pub(crate) file: String,
    /// A `state_level` file's shipped table: its name and key → state id.
    pub(crate) places: (String, std::collections::HashMap<u64, i32>),
    /// A file of many periods: the periods its rows may have.
    pub(crate) periods: Option<crate::dataset::PeriodFilter>,
}

/// What the parser thread saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParseSummary {
    pub(crate) file: String,
    /// The layout the file's header picked (`dataset::Layout`).
    pub(crate) layout: String,
    pub(crate) rows_read: u64,
    pub(crate) rows_loaded: u64,
    pub(crate) rows_rejected: u64,
    /// The first `limits.max_stored_rejects` rejects.
    pub(crate) rejects: Vec<ledger::Reject>,
    pub(crate) rejects_by_code: BTreeMap<&'static str, u64>,
    pub(crate) value_cents: i128,
    pub(crate) decompressed_bytes: u64,
    /// `YYYYMM` the rows were checked against.
    pub(crate) period: u32,
    /// Per municipality (database id): exact sums and counts.
    pub(crate) municipal: Vec<(i32, MunicipalTally)>,
    /// Distinct beneficiaries per state (database id).
    pub(crate) states: Vec<(i32, u64)>,
    /// Distinct beneficiaries in the file.
    pub(crate) distinct_beneficiaries: u64,
    /// Bytes of the distinct-count spill file.
    pub(crate) spilled_bytes: u64,
    /// A pre-aggregated file's figures per period, in the order first seen.
    pub(crate) periods: Vec<PeriodTally>,
    /// A pre-aggregated file's rejects per period (those whose period was
    /// read): (`YYYYMM`, count, first line).
    pub(crate) rejects_by_period: Vec<(u32, u64, u64)>,
}

/// What a file's records become: a payment (`payments` kind) or a
/// municipality's figures for a period (`aggregates`). The parser loop is
/// the same; the kind says how a record is transformed and what is tallied
/// on the way (no allocation per row either way).
pub(crate) trait RowKind: Send + 'static {
    type Row<'a>;
    /// What the loop tallies of every accepted row.
    type Tally: Default;
    fn transform<'t>(
        transformer: &'t mut Transformer,
        record: &Record<'_>,
    ) -> Result<Self::Row<'t>, RowError>;
    fn tally(tally: &mut Self::Tally, row: &Self::Row<'_>);
    fn summarise(tally: Self::Tally, summary: &mut ParseSummary);
    /// The period (`YYYYMM`) of the record just refused, when it is known
    /// and the kind counts rejects per period; 0 otherwise.
    fn reject_period(_transformer: &Transformer) -> u32 {
        0
    }
}

/// One row per payment.
pub(crate) struct Payments;

impl RowKind for Payments {
    type Row<'a> = PaymentRow<'a>;
    type Tally = i128;

    #[inline]
    fn transform<'t>(
        transformer: &'t mut Transformer,
        record: &Record<'_>,
    ) -> Result<PaymentRow<'t>, RowError> {
        transformer.row(record)
    }

    #[inline]
    fn tally(cents: &mut i128, row: &PaymentRow<'_>) {
        *cents += i128::from(row.value_cents);
    }

    fn summarise(cents: i128, summary: &mut ParseSummary) {
        summary.value_cents = cents;
    }
}

/// One row per municipality and period, already counted.
pub(crate) struct Tabulated;

impl RowKind for Tabulated {
    type Row<'a> = TabulatedRow;
    type Tally = PeriodTallies;

    #[inline]
    fn transform(
        transformer: &mut Transformer,
        record: &Record<'_>,
    ) -> Result<TabulatedRow, RowError> {
        let row = transformer.tabulated_row(record)?;
        Ok(TabulatedRow {
            line: record.line,
            ..row
        })
    }

    #[inline]
    fn tally(tallies: &mut PeriodTallies, row: &TabulatedRow) {
        tallies.add(row);
    }

    fn summarise(tallies: PeriodTallies, summary: &mut ParseSummary) {
        summary.value_cents = tallies.0.iter().map(|t| t.value_cents).sum();
        summary.periods = tallies.0;
    }

    fn reject_period(transformer: &Transformer) -> u32 {
        transformer.row_period()
    }
}

/// A pre-aggregated file's figures for one period, summed as rows go by:
/// what the published tables must hold (checked before COMMIT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PeriodTally {
    /// `YYYYMM`.
    pub(crate) period: u32,
    pub(crate) rows: u64,
    pub(crate) beneficiaries: i128,
    pub(crate) families: i128,
    pub(crate) value_cents: i128,
}

/// Per period, in the order first seen; the last one is looked at first
/// (rows of a period usually come together).
#[derive(Debug, Default)]
pub(crate) struct PeriodTallies(Vec<PeriodTally>);

impl PeriodTallies {
    #[inline]
    fn add(&mut self, row: &TabulatedRow) {
        let at = match self.0.iter().rposition(|t| t.period == row.period) {
            Some(at) => at,
            None => {
                self.0.push(PeriodTally {
                    period: row.period,
                    ..PeriodTally::default()
                });
                self.0.len() - 1
            }
        };
        let t = &mut self.0[at];
        t.rows += 1;
        t.beneficiaries += i128::from(row.beneficiaries.unwrap_or(0));
        t.families += i128::from(row.families.unwrap_or(0));
        t.value_cents += i128::from(row.value_cents.unwrap_or(0));
    }
}

/// Where the parser's accepted rows go.
pub(crate) trait RowSink {
    type Kind: RowKind;

    /// One accepted row (called on the hot path: no allocation per row).
    fn accept(&mut self, row: &<Self::Kind as RowKind>::Row<'_>) -> Result<(), LoadError>;

    /// After the last record: flush, and fill in what the sink counted.
    fn finish(self, index: &MunicipalityIndex, summary: &mut ParseSummary)
    -> Result<(), LoadError>;
}

/// `validate`'s sink: rows are checked by the transform and dropped.
pub(crate) struct CheckOnly<K>(std::marker::PhantomData<K>);

impl<K> CheckOnly<K> {
    pub(crate) fn new() -> CheckOnly<K> {
        CheckOnly(std::marker::PhantomData)
    }
}

impl<K: RowKind> RowSink for CheckOnly<K> {
    type Kind = K;

    fn accept(&mut self, _row: &K::Row<'_>) -> Result<(), LoadError> {
        Ok(())
    }

    fn finish(self, _: &MunicipalityIndex, _: &mut ParseSummary) -> Result<(), LoadError> {
        Ok(())
    }
}

/// A load's sink: encodes rows as binary COPY chunks of about
/// `chunk_bytes` for the COPY stream, tallies them per municipality and
/// spills beneficiary hashes for the distinct counts.
pub(crate) struct CopySink {
    out: mpsc::Sender<Bytes>,
    buffer: BytesMut,
    chunk_bytes: usize,
    reference_days: i32,
    tallies: Tallies,
    spill: DistinctSpill,
    spill_dir: PathBuf,
    count_threads: usize,
    rows: u64,
}

impl CopySink {
    pub(crate) fn new(
        out: mpsc::Sender<Bytes>,
        chunk_bytes: usize,
        period: Period,
        municipalities: usize,
        spill_dir: PathBuf,
        count_threads: usize,
    ) -> Result<CopySink, LoadError> {
        let spill = DistinctSpill::new(&spill_dir).map_err(|e| spill_error(&spill_dir, e))?;
        let mut buffer = BytesMut::with_capacity(chunk_bytes + 1024);
        buffer.extend_from_slice(copy::HEADER);
        Ok(CopySink {
            out,
            buffer,
            chunk_bytes,
            reference_days: crate::engine::parse::value::first_day_pg(period.yyyymm()),
            tallies: Tallies::new(municipalities),
            spill,
            spill_dir,
            count_threads,
            rows: 0,
        })
    }

    fn send(&mut self) -> Result<(), LoadError> {
        let chunk = self.buffer.split().freeze();
        self.buffer.reserve(self.chunk_bytes + 1024);
        self.out
            .blocking_send(chunk)
            .map_err(|_| LoadError::Stopped("the COPY stream stopped"))
    }
}

fn spill_error(dir: &std::path::Path, source: io::Error) -> LoadError {
    LoadError::Spill {
        dir: dir.display().to_string(),
        source,
    }
}

impl RowSink for CopySink {
    type Kind = Payments;

    #[inline]
    fn accept(&mut self, row: &PaymentRow<'_>) -> Result<(), LoadError> {
        if let Some(hash) = &row.beneficiary_hash {
            self.spill
                .push(hash, row.municipality)
                .map_err(|e| spill_error(&self.spill_dir, e))?;
        }
        self.tallies.add(row, self.reference_days);
        copy::encode_row(&mut self.buffer, row);
        self.rows += 1;
        if self.buffer.len() >= self.chunk_bytes {
            self.send()?;
        }
        Ok(())
    }

    fn finish(
        mut self,
        index: &MunicipalityIndex,
        summary: &mut ParseSummary,
    ) -> Result<(), LoadError> {
        if self.rows > 0 {
            self.buffer.extend_from_slice(copy::TRAILER);
            self.send()?;
        }
        // The server finishes the COPY while the spill is counted.
        summary.spilled_bytes = self.spill.spilled_bytes();
        let distinct = self
            .spill
            .finish(
                index.state_of(),
                index.state_ids().len(),
                self.count_threads,
            )
            .map_err(|e| spill_error(&self.spill_dir, e))?;
        summary.municipal = self
            .tallies
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
        Ok(())
    }
}

/// Every reject goes through here: counted (in total and by code) and,
/// up to `limits.max_stored_rejects`, kept with its redacted line.
struct RejectLog {
    max_stored: usize,
    line_bytes: usize,
    rejected: u64,
    by_code: BTreeMap<&'static str, u64>,
    kept: Vec<ledger::Reject>,
    /// Per period (`YYYYMM`): rejects and the first one's line.
    by_period: BTreeMap<u32, (u64, u64)>,
}

impl RejectLog {
    /// Records `count` rejected lines starting at `record`. The reason is
    /// built only when the reject is kept.
    fn record(
        &mut self,
        transformer: &Transformer,
        record: &Record<'_>,
        count: u64,
        column: Option<String>,
        code: &'static str,
        reason: impl FnOnce() -> String,
    ) {
        self.rejected += count;
        *self.by_code.entry(code).or_default() += count;
        if self.kept.len() < self.max_stored {
            self.kept.push(ledger::Reject {
                line: record.line,
                byte_offset: record.byte,
                column,
                code,
                reason: reason(),
                raw_line: transformer.redacted_line(record, self.line_bytes),
            });
        }
    }

    /// Counts one reject of a row whose period was read.
    fn in_period(&mut self, period: u32, line: u64) {
        if period != 0 {
            let entry = self.by_period.entry(period).or_insert((0, line));
            entry.0 += 1;
        }
    }

    fn into_summary(self, summary: &mut ParseSummary) {
        summary.rows_rejected = self.rejected;
        summary.rejects_by_period = self
            .by_period
            .into_iter()
            .map(|(period, (count, line))| (period, count, line))
            .collect();
        summary.rejects_by_code = self.by_code;
        summary.rejects = self.kept;
    }
}

fn read_error<R: Read>(file: &str, reader: &RecordReader<R>, error: io::Error) -> LoadError {
    let (line, byte) = reader.position();
    io_error(file, line, byte, error)
}

pub(super) fn io_error(file: &str, line: u64, byte: u64, e: io::Error) -> LoadError {
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

/// The parser stage, on a blocking thread: decode the container, read the
/// header, transform every record and hand accepted rows to `sink`. No
/// allocation per row.
pub(crate) fn parse_blocking<S: RowSink>(
    input: impl io::BufRead + Send + 'static,
    parse: ParseInput,
    mut sink: S,
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
    // The header line picks the layout (and so the delimiter) before the
    // record reader starts: read here (blank lines before it skipped, as
    // the reader does; an error on the way, a cut archive or an over-long
    // record, reported as it would be), then handed back to the reader.
    let mut input = ChannelReader::new(inflated_rx);
    let mut prefix = Vec::new();
    let header_at = loop {
        let start = prefix.len();
        match input.read_until(b'\n', &mut prefix) {
            Ok(0) => break start,
            Ok(_) => {}
            Err(e) => {
                let line = prefix.iter().filter(|b| **b == b'\n').count() as u64 + 1;
                return Err(io_error(&file, line, prefix.len() as u64, e));
            }
        }
        let line = &prefix[start..];
        let line = line
            .strip_prefix(b"\xef\xbb\xbf".as_slice())
            .unwrap_or(line);
        if !line.iter().all(|b| *b == b'\r' || *b == b'\n') {
            break start;
        }
    };
    let plan =
        Plan::choose(&parse.spec, &prefix[header_at..]).map_err(|source| LoadError::Header {
            file: file.clone(),
            source,
        })?;
    let mut reader = RecordReader::new(io::Cursor::new(prefix).chain(input), plan.delimiter());
    match reader.next_record() {
        Ok(_) => {}
        Err(e) => return Err(read_error(&file, &reader, e)),
    }
    let layout = plan.layout().to_string();
    let mut transformer = Transformer::new(
        plan,
        &parse.spec,
        parse.municipalities,
        parse.period,
        parse.nis_key.expose_secret().as_bytes(),
    )
    .with_places(&parse.places.0, parse.places.1)
    .with_periods(parse.periods);
    let mut rejects = RejectLog {
        max_stored: parse.limits.max_stored_rejects,
        line_bytes: parse.limits.reject_line_bytes,
        rejected: 0,
        by_code: BTreeMap::new(),
        kept: Vec::new(),
        by_period: BTreeMap::new(),
    };
    let mut summary = ParseSummary {
        file: file.clone(),
        layout,
        ..ParseSummary::default()
    };
    let mut tally = <S::Kind as RowKind>::Tally::default();
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
            rejects.record(&transformer, &record, lines, None, UNBALANCED_QUOTE, || {
                format!(
                    "unbalanced quote: one record runs over lines {} to {}",
                    record.line,
                    record.line + lines - 1
                )
            });
            continue;
        }
        summary.rows_read += 1;
        // The row borrows the transformer; the reject needs it back.
        let refused = match S::Kind::transform(&mut transformer, &record) {
            Ok(row) => {
                summary.rows_loaded += 1;
                S::Kind::tally(&mut tally, &row);
                sink.accept(&row)?;
                None
            }
            Err(error) => Some(error),
        };
        if let Some(error) = refused {
            rejects.in_period(S::Kind::reject_period(&transformer), record.line);
            let code = error.reason.code();
            rejects.record(&transformer, &record, 1, error.column, code, || {
                error.reason.to_string()
            });
        }
        if summary.rows_read % PROGRESS_EVERY == 0 {
            progress.rows.store(summary.rows_read, Ordering::Relaxed);
            progress
                .rows_rejected
                .store(rejects.rejected, Ordering::Relaxed);
        }
    }
    progress.rows.store(summary.rows_read, Ordering::Relaxed);
    progress
        .rows_rejected
        .store(rejects.rejected, Ordering::Relaxed);
    rejects.into_summary(&mut summary);
    drop(reader);
    // The inflater verified the archive's end before closing its channel
    // (a failure would have reached the reader as an error).
    summary.decompressed_bytes = inflater
        .join()
        .map_err(|_| LoadError::Internal("the inflate thread panicked".into()))?;
    summary.period = transformer.period();
    S::Kind::summarise(tally, &mut summary);
    sink.finish(transformer.municipalities(), &mut summary)?;
    Ok(summary)
}

/// Starts the parser on a blocking thread (it records itself in `first`
/// when it fails for a reason of its own); the future ends with its result.
/// The sink is built on that thread, before the first record.
pub(super) fn spawn_parser<S, F>(
    bytes: mpsc::Receiver<io::Result<Bytes>>,
    input: ParseInput,
    sink: F,
    progress: &Arc<Progress>,
    first: &Arc<FirstFailure>,
) -> impl Future<Output = Result<ParseSummary, LoadError>> + use<S, F>
where
    S: RowSink,
    F: FnOnce() -> Result<S, LoadError> + Send + 'static,
{
    let (progress, first) = (progress.clone(), first.clone());
    let parser = tokio::task::spawn_blocking(move || {
        let parsed = sink()
            .and_then(|sink| parse_blocking(ChannelReader::new(bytes), input, sink, progress));
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
