//! The load's one error type and the stable code each variant reports.

use crate::code::Code;
use crate::dataset::Period;
use crate::engine::decode::DecodeError;
use crate::engine::parse::HeaderError;
use crate::engine::source::SourceError;

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
    #[error(
        "{file}: line {line} repeats {what} in {period} (first at line {first_line}); such a file has one row per key and period"
    )]
    DuplicateRow {
        file: String,
        line: i64,
        first_line: i64,
        what: String,
        period: String,
    },
    #[error(
        "{file}: {column} differs between the parts of {key}'s approval for {period} (lines {first_line} to {last_line}); it is taken once per approval, so the parts must agree"
    )]
    PartsDisagree {
        file: String,
        column: String,
        key: String,
        period: String,
        first_line: i64,
        last_line: i64,
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
    pub(crate) fn is_consequence(&self) -> bool {
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
            LoadError::DuplicateRow { .. } => Code::DuplicateRow,
            LoadError::PartsDisagree { .. } => Code::PartsDisagree,
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

/// `file` with the line appended when known.
pub(super) fn at_line(file: &str, line: u64) -> String {
    if line > 0 {
        format!("{file}: line {line}")
    } else {
        file.to_string()
    }
}
