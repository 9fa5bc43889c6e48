//! What a failed attempt means for its job: retry (when, honouring the
//! server's `Retry-After`), wait for a month the Portal has not published,
//! or fail. Decided on the engine's stable error codes, never on message
//! text.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::code::Code;
use crate::config::QueueSettings;
use crate::engine::pipeline::LoadError;

/// The class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transient: network, 5xx/408/429, a lost connection, a serialization
    /// failure, a deadlock, a lock or statement timeout, a restarting server,
    /// a load of the same month in progress, a full spill disk.
    Retry,
    /// The month is not published yet (404): the slow cadence.
    NotFound,
    /// The source is preparing the file (202): ask again soon, unspent.
    Preparing,
    /// The source served a broken file (a ZIP that does not inflate, a
    /// header without rows, HTML where the file should be, a file the
    /// shrink guard refuses): the slow cadence until the deadline; the
    /// Portal has fixed such files within days.
    Broken,
    /// Retrying cannot help: bad file, bad spec, a guard that needs a human.
    Fatal,
}

/// Classifies a load error by its code. `previous` is the code the job's
/// previous attempt ended with: a corrupt archive is downloaded once more
/// at once (damaged in transit) before it is treated as a file the source
/// broke.
pub fn classify(error: &LoadError, previous: Option<&str>) -> Verdict {
    verdict(error.code(), previous.and_then(Code::parse))
}

/// [`classify`] on a code as stored in the ledger and jobs; a text no
/// version of carga wrote is fatal.
pub fn classify_code(code: &str, previous: Option<&str>) -> Verdict {
    Code::parse(code).map_or(Verdict::Fatal, |code| {
        verdict(code, previous.and_then(Code::parse))
    })
}

/// The policy, one arm per code: a new code does not compile until it is
/// given a verdict here.
pub fn verdict(code: Code, previous: Option<Code>) -> Verdict {
    match code {
        Code::HttpStatus(404) => Verdict::NotFound,
        Code::HttpStatus(408 | 429) => Verdict::Retry,
        Code::HttpStatus(status) if status >= 500 => Verdict::Retry,
        Code::HttpStatus(_) => Verdict::Fatal,
        Code::SqlState(state) => {
            let state = std::str::from_utf8(&state).unwrap_or("");
            let transient = matches!(state, "40001" | "40P01" | "55P03" | "57014")
                || state.starts_with("57P")
                || state.starts_with("08")
                || state.starts_with("53");
            if transient {
                Verdict::Retry
            } else {
                Verdict::Fatal
            }
        }
        Code::HttpRequestFailed
        | Code::HttpBodyFailed
        | Code::DownloadTruncated
        | Code::DownloadDeadline
        | Code::DownloadTooSlow
        | Code::ReaderStopped
        | Code::StageStopped
        | Code::SourceProtocol
        | Code::SourceChanged
        | Code::ArchiveTruncated
        | Code::SpillIo
        | Code::LoadInProgress
        | Code::DatabaseError
        | Code::DatabasePool
        | Code::JobTimeout
        | Code::LeaseExpired => Verdict::Retry,
        // Damaged in transit once is worth one more download at once.
        Code::ArchiveCorrupt if previous != Some(Code::ArchiveCorrupt) => Verdict::Retry,
        Code::ArchiveCorrupt | Code::EmptyFile | Code::UnexpectedContent | Code::ShrinkGuard => {
            Verdict::Broken
        }
        Code::SourcePreparing => Verdict::Preparing,
        Code::NotPublishedByDeadline => Verdict::NotFound,
        Code::SourceRefused
        | Code::RedirectRefused
        | Code::SourceFileError
        | Code::SourceUrlNotAllowed
        | Code::DownloadTooLarge
        | Code::ArchiveUnsupported
        | Code::ZipLimitExceeded
        | Code::RecordTooLarge
        | Code::CsvHeaderMismatch
        | Code::CsvError
        | Code::DuplicateRow
        | Code::PartsDisagree
        | Code::TooManyRejects
        | Code::PeriodOutOfBounds
        | Code::NoReferenceData
        | Code::NoNisKey
        | Code::NotPayments
        | Code::ReferenceInvalid
        | Code::Internal
        | Code::Cancelled
        | Code::LeaseLost
        | Code::Panic
        | Code::UnknownDataset
        | Code::UrlUnsealable => Verdict::Fatal,
    }
}

/// The delay before attempt `attempt + 1`: exponential from
/// `retry_base_s`, capped at `retry_max_s`, with jitter (half fixed, half
/// random, so workers that failed together do not return together). A
/// server's `Retry-After` wins when it asks for longer, up to
/// `retry_max_s`: a source cannot park a job for years (see
/// [`retry_after_ceiling`]).
pub fn backoff(
    settings: &QueueSettings,
    attempt: i32,
    retry_after: Option<Duration>,
    seed: u64,
) -> Duration {
    let exponent = attempt.saturating_sub(1).clamp(0, 30) as u32;
    let ceiling = settings
        .retry_base_s
        .saturating_mul(1u64 << exponent)
        .min(settings.retry_max_s)
        .max(1) as f64;
    let random = std::collections::hash_map::RandomState::new().build_hasher();
    let mut hasher = random;
    hasher.write_u64(seed);
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    let delay = Duration::from_secs_f64(ceiling / 2.0 + unit * ceiling / 2.0);
    match retry_after {
        Some(asked) => delay.max(asked.min(retry_after_ceiling(settings))),
        None => delay,
    }
}

/// The longest a server's `Retry-After` may delay a job: `retry_max_s`.
pub fn retry_after_ceiling(settings: &QueueSettings) -> Duration {
    Duration::from_secs(settings.retry_max_s.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> QueueSettings {
        crate::config::Settings::defaults().queue
    }

    #[test]
    fn codes_are_classified() {
        for (code, verdict) in [
            ("http_status_503", Verdict::Retry),
            ("http_status_429", Verdict::Retry),
            ("http_status_408", Verdict::Retry),
            ("http_status_404", Verdict::NotFound),
            ("http_status_403", Verdict::Fatal),
            ("http_status_410", Verdict::Fatal),
            ("http_request_failed", Verdict::Retry),
            ("download_too_slow", Verdict::Retry),
            ("sqlstate_40001", Verdict::Retry),
            ("sqlstate_40P01", Verdict::Retry),
            ("sqlstate_55P03", Verdict::Retry),
            ("sqlstate_57P01", Verdict::Retry),
            ("sqlstate_08006", Verdict::Retry),
            ("sqlstate_53100", Verdict::Retry),
            ("sqlstate_22021", Verdict::Fatal),
            ("sqlstate_42P01", Verdict::Fatal),
            ("load_in_progress", Verdict::Retry),
            ("csv_header_mismatch", Verdict::Fatal),
            ("too_many_rejects", Verdict::Fatal),
            ("shrink_guard", Verdict::Broken),
            ("unexpected_content", Verdict::Broken),
            ("empty_file", Verdict::Broken),
            ("source_preparing", Verdict::Preparing),
            ("source_refused", Verdict::Fatal),
            ("period_out_of_bounds", Verdict::Fatal),
            ("internal", Verdict::Fatal),
            ("redirect_refused", Verdict::Fatal),
        ] {
            assert_eq!(classify_code(code, None), verdict, "{code}");
        }
        assert_eq!(classify_code("archive_corrupt", None), Verdict::Retry);
        // After 404s or 202s, a damaged download still gets its quick retry.
        assert_eq!(
            classify_code("archive_corrupt", Some("http_status_404")),
            Verdict::Retry
        );
        assert_eq!(
            classify_code("archive_corrupt", Some("archive_corrupt")),
            Verdict::Broken
        );
    }

    #[test]
    fn backoff_grows_is_capped_jittered_and_honours_retry_after() {
        let s = settings();
        for attempt in 1..12 {
            let ceiling = (s.retry_base_s << (attempt - 1)).min(s.retry_max_s) as f64;
            for seed in 0..20 {
                let d = backoff(&s, attempt, None, seed).as_secs_f64();
                assert!(d >= ceiling / 2.0 && d <= ceiling, "{attempt}: {d}");
            }
        }
        let asked = Duration::from_secs(1_800);
        assert_eq!(backoff(&s, 1, Some(asked), 1), asked);
        assert!(backoff(&s, 1, Some(Duration::from_secs(1)), 1) >= Duration::from_secs(15));
        // Retry-After: 99999999999 (the year 5195) waits retry_max_s.
        let forever = Duration::from_secs(99_999_999_999);
        assert_eq!(
            backoff(&s, 1, Some(forever), 1),
            Duration::from_secs(s.retry_max_s)
        );
    }
}
