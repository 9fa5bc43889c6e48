//! The stable failure codes: every layer names its failures with a
//! [`Code`], the ledger, the jobs table, logs and scripts see its text, and
//! the retry policy (`queue/retry.rs`) matches on the enum exhaustively, so
//! a new code forces a decision there at compile time instead of falling
//! into a `_ =>` arm. This file is the one place that maps codes to text
//! and back.

use std::borrow::Cow;
use std::fmt;

/// A failure's stable code. Its text (`as_str`) is part of carga's
/// interface: stored in `carga.loads`, `carga.jobs` and `carga.job_attempts`,
/// logged and printed. Never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    // The source (src/engine/source/).
    /// An HTTP status the source answered with and no other code covers.
    HttpStatus(u16),
    HttpRequestFailed,
    HttpBodyFailed,
    ReaderStopped,
    DownloadDeadline,
    DownloadTooSlow,
    DownloadTooLarge,
    DownloadTruncated,
    SourceFileError,
    SourceUrlNotAllowed,
    RedirectRefused,
    /// HTTP 202: the source is preparing the file.
    SourcePreparing,
    /// HTTP 403/405: the source refuses this client.
    SourceRefused,
    /// A paged service broke its own protocol mid-read (a total that
    /// changed, a page empty too early, a page served twice).
    SourceProtocol,
    /// The file changed on the server during a ranged download.
    SourceChanged,
    // The container (src/engine/decode/).
    UnexpectedContent,
    ArchiveTruncated,
    ArchiveCorrupt,
    ArchiveUnsupported,
    ZipLimitExceeded,
    RecordTooLarge,
    // The file's content and the load's checks (src/engine/parse/, the pipeline).
    CsvHeaderMismatch,
    EmptyFile,
    CsvError,
    /// A pre-aggregated file with two rows for one municipality and period.
    DuplicateRow,
    /// A value said once per approval that its parts disagree on.
    PartsDisagree,
    TooManyRejects,
    ShrinkGuard,
    PeriodOutOfBounds,
    NoReferenceData,
    NoNisKey,
    NotPayments,
    ReferenceInvalid,
    // The database and the machine.
    /// A server error by its SQLSTATE (five characters).
    SqlState([u8; 5]),
    DatabaseError,
    DatabasePool,
    LoadInProgress,
    SpillIo,
    Internal,
    StageStopped,
    // The job around the load (src/service/runner.rs, src/service/queue/).
    Cancelled,
    LeaseLost,
    LeaseExpired,
    JobTimeout,
    Panic,
    UnknownDataset,
    UrlUnsealable,
    NotPublishedByDeadline,
}

/// Every code with a fixed text (the parameterised ones aside).
const FIXED: [(Code, &str); 46] = [
    (Code::HttpRequestFailed, "http_request_failed"),
    (Code::HttpBodyFailed, "http_body_failed"),
    (Code::ReaderStopped, "reader_stopped"),
    (Code::DownloadDeadline, "download_deadline"),
    (Code::DownloadTooSlow, "download_too_slow"),
    (Code::DownloadTooLarge, "download_too_large"),
    (Code::DownloadTruncated, "download_truncated"),
    (Code::SourceFileError, "source_file_error"),
    (Code::SourceUrlNotAllowed, "source_url_not_allowed"),
    (Code::RedirectRefused, "redirect_refused"),
    (Code::SourcePreparing, "source_preparing"),
    (Code::SourceRefused, "source_refused"),
    (Code::SourceProtocol, "source_protocol"),
    (Code::SourceChanged, "source_changed"),
    (Code::UnexpectedContent, "unexpected_content"),
    (Code::ArchiveTruncated, "archive_truncated"),
    (Code::ArchiveCorrupt, "archive_corrupt"),
    (Code::ArchiveUnsupported, "archive_unsupported"),
    (Code::ZipLimitExceeded, "zip_limit_exceeded"),
    (Code::RecordTooLarge, "record_too_large"),
    (Code::CsvHeaderMismatch, "csv_header_mismatch"),
    (Code::EmptyFile, "empty_file"),
    (Code::CsvError, "csv_error"),
    (Code::DuplicateRow, "duplicate_row"),
    (Code::PartsDisagree, "parts_disagree"),
    (Code::TooManyRejects, "too_many_rejects"),
    (Code::ShrinkGuard, "shrink_guard"),
    (Code::PeriodOutOfBounds, "period_out_of_bounds"),
    (Code::NoReferenceData, "no_reference_data"),
    (Code::NoNisKey, "no_nis_key"),
    (Code::NotPayments, "not_payments"),
    (Code::ReferenceInvalid, "reference_invalid"),
    (Code::DatabaseError, "database_error"),
    (Code::DatabasePool, "database_pool"),
    (Code::LoadInProgress, "load_in_progress"),
    (Code::SpillIo, "spill_io"),
    (Code::Internal, "internal"),
    (Code::StageStopped, "stage_stopped"),
    (Code::Cancelled, "cancelled"),
    (Code::LeaseLost, "lease_lost"),
    (Code::LeaseExpired, "lease_expired"),
    (Code::JobTimeout, "job_timeout"),
    (Code::Panic, "panic"),
    (Code::UnknownDataset, "unknown_dataset"),
    (Code::UrlUnsealable, "url_unsealable"),
    (Code::NotPublishedByDeadline, "not_published_by_deadline"),
];

impl Code {
    /// The code of a PostgreSQL error by its SQLSTATE.
    pub(crate) fn sql_state(state: &str) -> Code {
        match <[u8; 5]>::try_from(state.as_bytes()) {
            Ok(bytes) => Code::SqlState(bytes),
            Err(_) => Code::DatabaseError,
        }
    }

    /// The stable text.
    pub fn as_str(&self) -> Cow<'static, str> {
        match self {
            Code::HttpStatus(status) => Cow::Owned(format!("http_status_{status}")),
            Code::SqlState(state) => {
                Cow::Owned(format!("sqlstate_{}", String::from_utf8_lossy(state)))
            }
            fixed => Cow::Borrowed(fixed.fixed_text()),
        }
    }

    /// The text of a code without parameters (exhaustive: a new code must
    /// be given its text here, and in [`FIXED`] to parse back).
    fn fixed_text(&self) -> &'static str {
        match self {
            Code::HttpStatus(_) | Code::SqlState(_) => "internal",
            Code::HttpRequestFailed => "http_request_failed",
            Code::HttpBodyFailed => "http_body_failed",
            Code::ReaderStopped => "reader_stopped",
            Code::DownloadDeadline => "download_deadline",
            Code::DownloadTooSlow => "download_too_slow",
            Code::DownloadTooLarge => "download_too_large",
            Code::DownloadTruncated => "download_truncated",
            Code::SourceFileError => "source_file_error",
            Code::SourceUrlNotAllowed => "source_url_not_allowed",
            Code::RedirectRefused => "redirect_refused",
            Code::SourcePreparing => "source_preparing",
            Code::SourceRefused => "source_refused",
            Code::SourceProtocol => "source_protocol",
            Code::SourceChanged => "source_changed",
            Code::UnexpectedContent => "unexpected_content",
            Code::ArchiveTruncated => "archive_truncated",
            Code::ArchiveCorrupt => "archive_corrupt",
            Code::ArchiveUnsupported => "archive_unsupported",
            Code::ZipLimitExceeded => "zip_limit_exceeded",
            Code::RecordTooLarge => "record_too_large",
            Code::CsvHeaderMismatch => "csv_header_mismatch",
            Code::EmptyFile => "empty_file",
            Code::CsvError => "csv_error",
            Code::DuplicateRow => "duplicate_row",
            Code::PartsDisagree => "parts_disagree",
            Code::TooManyRejects => "too_many_rejects",
            Code::ShrinkGuard => "shrink_guard",
            Code::PeriodOutOfBounds => "period_out_of_bounds",
            Code::NoReferenceData => "no_reference_data",
            Code::NoNisKey => "no_nis_key",
            Code::NotPayments => "not_payments",
            Code::ReferenceInvalid => "reference_invalid",
            Code::DatabaseError => "database_error",
            Code::DatabasePool => "database_pool",
            Code::LoadInProgress => "load_in_progress",
            Code::SpillIo => "spill_io",
            Code::Internal => "internal",
            Code::StageStopped => "stage_stopped",
            Code::Cancelled => "cancelled",
            Code::LeaseLost => "lease_lost",
            Code::LeaseExpired => "lease_expired",
            Code::JobTimeout => "job_timeout",
            Code::Panic => "panic",
            Code::UnknownDataset => "unknown_dataset",
            Code::UrlUnsealable => "url_unsealable",
            Code::NotPublishedByDeadline => "not_published_by_deadline",
        }
    }

    /// A code as stored; `None` for text no version of carga wrote.
    pub(crate) fn parse(text: &str) -> Option<Code> {
        if let Some(status) = text.strip_prefix("http_status_") {
            return status.parse().ok().map(Code::HttpStatus);
        }
        if let Some(state) = text.strip_prefix("sqlstate_") {
            return <[u8; 5]>::try_from(state.as_bytes())
                .ok()
                .map(Code::SqlState);
        }
        FIXED.iter().find(|(_, t)| *t == text).map(|(c, _)| *c)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.as_str())
    }
}

impl From<Code> for String {
    fn from(code: Code) -> String {
        code.as_str().into_owned()
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixed_code_round_trips_and_texts_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for (code, text) in FIXED {
            assert_eq!(code.as_str(), text);
            assert_eq!(Code::parse(text), Some(code), "{text}");
            assert!(seen.insert(text), "{text} twice");
        }
        for text in ["http_status_503", "sqlstate_40001", "sqlstate_57P01"] {
            assert_eq!(
                Code::parse(text).map(|c| c.to_string()).as_deref(),
                Some(text)
            );
        }
        assert_eq!(Code::parse("no_such_code"), None);
        assert_eq!(Code::parse("sqlstate_toolong"), None);
    }
}
