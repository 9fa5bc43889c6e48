//! Source byte streams: an HTTP(S) URL or a local path becomes a stream of
//! chunks, counted, hashed (SHA-256) and capped, with the response's
//! validators kept for the ledger. A body that breaks mid-way is resumed
//! in-stream with `Range` + `If-Range` when the server gave a strong ETag.
//! Knows nothing of ZIP or CSV.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

pub(crate) mod allow;
pub(crate) mod paged;
mod ranged;

use crate::code::Code;
use crate::config::HttpSettings;

/// How many times one download may resume after a broken body.
const MAX_RESUMES: u32 = 3;
/// How many times opening the source is tried when the request itself fails
/// (no answer): 0.5 s and 1 s between tries, so a worker slot is never held
/// long.
const MAX_OPEN_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{url}: HTTP status {status}")]
    Status {
        url: String,
        status: u16,
        /// What the server's `Retry-After` asked for, uncapped (the job
        /// queue honours it when it retries).
        retry_after: Option<Duration>,
    },
    #[error("{url}: request failed: {message}")]
    Request { url: String, message: String },
    #[error("{url}: body failed after {bytes} bytes: {message}")]
    Body {
        url: String,
        bytes: u64,
        message: String,
    },
    /// The next stage stopped reading: a consequence of its own failure,
    /// never a cause (see `pipeline::FirstFailure`).
    #[error("{url}: the reader stopped after {bytes} bytes")]
    ReaderStopped { url: String, bytes: u64 },
    #[error(
        "{url}: the download passed its deadline of {seconds} s after {bytes} bytes (http.download_deadline_s)"
    )]
    Deadline {
        url: String,
        bytes: u64,
        seconds: u64,
    },
    #[error(
        "{url}: the source sent {received} bytes in {seconds:.0} s, below the minimum of {minimum} bytes/s (http.min_bytes_per_second over http.min_throughput_window_s)"
    )]
    TooSlow {
        url: String,
        received: u64,
        seconds: f64,
        minimum: u64,
    },
    #[error("{url}: download exceeds the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: received {received} bytes but Content-Length promised {expected}")]
    Truncated {
        url: String,
        received: u64,
        expected: u64,
    },
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{url}: unsupported source (use http://, https://, file:// or a path)")]
    Unsupported { url: String },
    /// 202 Accepted: the server is preparing the file (the Portal since
    /// 2026 answers so while it builds the ZIP, then redirects to it).
    /// Never data; the job asks again later, honouring `Retry-After`.
    #[error("{url}: the source is preparing the file (HTTP 202); ask again later")]
    Preparing {
        url: String,
        retry_after: Option<Duration>,
    },
    /// 403 or 405: the source refuses this client (the Portal answers so to
    /// requests without a browser-like User-Agent). Retrying cannot help.
    #[error(
        "{url}: HTTP status {status}: the source refused carga's request (the Portal refuses clients without a browser-like User-Agent; check http.user_agent, CARGA__HTTP__USER_AGENT)"
    )]
    Refused { url: String, status: u16 },
    /// A redirect the policy refused (off the allow-list, a private
    /// address, a non-HTTP scheme, too many hops): retrying cannot help.
    #[error("{url}: redirect refused: {reason}")]
    RedirectRefused { url: String, reason: String },
    #[error("{url}: {message}")]
    Protocol { url: String, message: String },
    /// The file changed on the server while it was fetched in ranges: the
    /// attempt stops (nothing of either version is published) and is
    /// retried from the start.
    #[error(
        "{url}: the file changed on the server during the download (found at byte {offset}); retried from the start"
    )]
    Changed { url: String, offset: u64 },
    /// A paged service found nothing for the query (Solr `numFound` 0):
    /// the period is not published yet, as a 404 says of a file.
    #[error("{url}: the service has no documents for this query (numFound 0): not published yet")]
    NoDocuments { url: String },
}

impl SourceError {
    /// True when this error only says that the next stage went away.
    pub(crate) fn is_consequence(&self) -> bool {
        matches!(self, SourceError::ReaderStopped { .. })
    }

    /// A stable code for the ledger and for scripts.
    pub(crate) fn code(&self) -> Code {
        match self {
            SourceError::Status { status, .. } => Code::HttpStatus(*status),
            SourceError::Request { .. } => Code::HttpRequestFailed,
            SourceError::Body { .. } => Code::HttpBodyFailed,
            SourceError::ReaderStopped { .. } => Code::ReaderStopped,
            SourceError::Deadline { .. } => Code::DownloadDeadline,
            SourceError::TooSlow { .. } => Code::DownloadTooSlow,
            SourceError::TooLarge { .. } => Code::DownloadTooLarge,
            SourceError::Truncated { .. } => Code::DownloadTruncated,
            SourceError::File { .. } => Code::SourceFileError,
            SourceError::Unsupported { .. } => Code::SourceUrlNotAllowed,
            SourceError::RedirectRefused { .. } => Code::RedirectRefused,
            SourceError::Preparing { .. } => Code::SourcePreparing,
            SourceError::Refused { .. } => Code::SourceRefused,
            SourceError::Protocol { .. } => Code::SourceProtocol,
            SourceError::Changed { .. } => Code::SourceChanged,
            SourceError::NoDocuments { .. } => Code::HttpStatus(404),
        }
    }
}

/// Validators from a previous load, for a conditional request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Validators {
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
}

/// What the response said about the body.
#[derive(Debug, Clone, Default)]
pub(crate) struct SourceMeta {
    /// Safe to log: query values and passwords redacted.
    pub(crate) url: String,
    /// Last path segment, for messages (`202410_NovoBolsaFamilia.zip`).
    pub(crate) file_name: String,
    content_length: Option<u64>,
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
}

impl SourceMeta {
    /// A strong ETag (not `W/`), usable with `If-Range` and as a version.
    fn strong_etag(&self) -> Option<&str> {
        self.etag.as_deref().filter(|e| !e.starts_with("W/"))
    }
}

/// Live counters shared with the progress display and the job's heartbeat.
#[derive(Debug, Default)]
pub struct Progress {
    pub(crate) bytes: AtomicU64,
    pub(crate) total_bytes: AtomicU64,
    /// Bytes a ranged download fetched beyond those handed on in order
    /// (ranges in flight or waiting for an earlier one); 0 otherwise.
    pub(crate) bytes_ahead: AtomicU64,
    pub(crate) rows: AtomicU64,
    pub(crate) rows_rejected: AtomicU64,
    /// One of [`Progress::STAGES`], by index.
    pub(crate) stage: std::sync::atomic::AtomicUsize,
    /// The HTTP status the source answered when opened (0: no answer yet,
    /// or not HTTP): whether the source has the period, for freshness.
    pub(crate) source_status: std::sync::atomic::AtomicU16,
}

impl Progress {
    /// The stages a load goes through, in order.
    pub(crate) const STAGES: [&'static str; 5] = ["open", "stream", "aggregate", "publish", "done"];

    pub(crate) fn set_stage(&self, stage: &str) {
        if let Some(i) = Self::STAGES.iter().position(|s| *s == stage) {
            self.stage.store(i, Ordering::Relaxed);
        }
    }

    pub(crate) fn stage_name(&self) -> &'static str {
        Self::STAGES
            .get(self.stage.load(Ordering::Relaxed))
            .copied()
            .unwrap_or("open")
    }
}

/// What bounds one download, enforced by the client: the server's
/// `statement_timeout` cannot, since it does not fire while a COPY waits for
/// client data, and an idle-read timeout resets on every byte.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DownloadLimits {
    pub(crate) max_bytes: u64,
    /// Wall-clock time from the first body read to the last.
    pub(crate) deadline: Duration,
    /// Bytes per second the network must deliver, measured over each
    /// `window` of time spent waiting for it (time the next stage holds the
    /// download back does not count).
    pub(crate) min_bytes_per_second: u64,
    pub(crate) window: Duration,
}

impl DownloadLimits {
    pub(crate) fn from_settings(settings: &HttpSettings) -> DownloadLimits {
        DownloadLimits {
            max_bytes: settings.max_download_bytes,
            deadline: Duration::from_secs(settings.download_deadline_s),
            min_bytes_per_second: settings.min_bytes_per_second,
            window: Duration::from_secs(settings.min_throughput_window_s.max(1)),
        }
    }
}

/// The outcome of a completed download.
#[derive(Debug, Clone)]
pub(crate) struct DownloadSummary {
    pub(crate) bytes: u64,
    pub(crate) sha256: [u8; 32],
}

enum Origin {
    Http {
        client: reqwest::Client,
        url: String,
    },
    File,
}

/// An opened source: metadata, and the body not yet read.
pub(crate) struct Opened {
    pub(crate) meta: SourceMeta,
    origin: Origin,
    body: BoxStream<'static, io::Result<Bytes>>,
    accept_ranges: bool,
    /// A ranged download's count of bytes fetched, in order or not.
    fetched: Option<Arc<AtomicU64>>,
}

pub(crate) enum OpenOutcome {
    Body(Opened),
    /// The server answered 304 to the conditional request.
    NotModified(SourceMeta),
}

/// Strips userinfo and query values from a URL for logs and the ledger.
pub fn redact_source(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(mut url) if url.scheme() == "http" || url.scheme() == "https" => {
            let _ = url.set_password(None);
            let _ = url.set_username("");
            let pairs: Vec<String> = url.query_pairs().map(|(k, _)| format!("{k}=***")).collect();
            let query = pairs.join("&");
            url.set_query(if pairs.is_empty() { None } else { Some(&query) });
            url.to_string()
        }
        _ => location.to_string(),
    }
}

fn file_name_of(location: &str) -> String {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(location)
        .to_string()
}

/// Why the redirect policy last refused a hop, for the error (reqwest only
/// says "redirect error").
type Refusal = Arc<std::sync::Mutex<Option<String>>>;

fn guarded_client(
    settings: &HttpSettings,
    guard: Option<RedirectGuard>,
) -> Result<(reqwest::Client, Refusal), SourceError> {
    let max_redirects = settings.max_redirects;
    let refusal: Refusal = Arc::default();
    let refused = refusal.clone();
    let refuse = move |reason: String| {
        if let Ok(mut slot) = refused.lock() {
            *slot = Some(reason.clone());
        }
        reason
    };
    let client = reqwest::Client::builder()
        .user_agent(settings.user_agent.clone())
        .connect_timeout(settings.connect_timeout())
        .read_timeout(settings.read_timeout())
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                let reason = refuse(format!(
                    "more than {max_redirects} redirects (http.max_redirects)"
                ));
                attempt.error(reason)
            } else if !matches!(attempt.url().scheme(), "http" | "https") {
                let reason = refuse("a redirect to a non-HTTP scheme".into());
                attempt.error(reason)
            } else if let Some(Err(reason)) = guard.as_ref().map(|g| (g.0)(attempt.url())) {
                let reason = refuse(reason);
                attempt.error(reason)
            } else {
                attempt.follow()
            }
        }))
        .build()
        .map_err(|e| SourceError::Request {
            url: "-".into(),
            message: describe_reqwest(&e),
        })?;
    Ok((client, refusal))
}

/// A request error, or the redirect policy's refusal when that is what
/// stopped it.
fn request_error(refusal: &Refusal, error: SourceError) -> SourceError {
    let reason = refusal.lock().ok().and_then(|mut slot| slot.take());
    match (reason, error) {
        (Some(reason), SourceError::Request { url, .. }) => {
            SourceError::RedirectRefused { url, reason }
        }
        (_, error) => error,
    }
}

/// reqwest's Display includes the URL (which may carry a token): describe
/// the error without it.
fn describe_reqwest(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_redirect() {
        "redirect refused"
    } else if error.is_body() {
        "body error"
    } else if error.is_decode() {
        "decode error"
    } else {
        "error"
    };
    let mut message = kind.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

fn header_string(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Opens `location` (http, https, file:// or a path). A request that fails
/// to connect or times out is tried again at once, a few times with a short
/// backoff; a status the server answered (408, 429, 5xx included) is
/// returned at once with its `Retry-After`: long waits belong to the job
/// queue, which frees the worker's slot meanwhile.
pub(crate) async fn open(
    location: &str,
    settings: &HttpSettings,
    conditional: Option<&Validators>,
) -> Result<OpenOutcome, SourceError> {
    open_guarded(location, settings, conditional, None).await
}

/// Decides whether a redirect may be followed (a URL that came from
/// outside, e.g. a webhook, must stay on its dataset's allow-list on every
/// hop). `Err` carries the reason.
#[derive(Clone)]
pub struct RedirectGuard(pub(crate) Arc<RedirectCheck>);

/// `Err(reason)` refuses the redirect to that URL.
pub(crate) type RedirectCheck = dyn Fn(&url::Url) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for RedirectGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedirectGuard")
    }
}

/// [`open`], with every redirect checked by `guard`.
pub(crate) async fn open_guarded(
    location: &str,
    settings: &HttpSettings,
    conditional: Option<&Validators>,
    guard: Option<RedirectGuard>,
) -> Result<OpenOutcome, SourceError> {
    let redacted = redact_source(location);
    if location.starts_with("http://") || location.starts_with("https://") {
        let (client, refusal) = guarded_client(settings, guard)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match open_http(&client, location, &redacted, conditional, None).await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let meta = SourceMeta {
                        url: redacted.clone(),
                        file_name: file_name_of(response.url().as_str()),
                        content_length: response.content_length(),
                        etag: header_string(&headers, header::ETAG),
                        last_modified: header_string(&headers, header::LAST_MODIFIED),
                    };
                    if status == StatusCode::NOT_MODIFIED {
                        return Ok(OpenOutcome::NotModified(meta));
                    }
                    if status == StatusCode::ACCEPTED {
                        return Err(SourceError::Preparing {
                            url: redacted.clone(),
                            retry_after: requested_retry(&headers),
                        });
                    }
                    if status == StatusCode::FORBIDDEN || status == StatusCode::METHOD_NOT_ALLOWED {
                        return Err(SourceError::Refused {
                            url: redacted.clone(),
                            status: status.as_u16(),
                        });
                    }
                    if !status.is_success() {
                        return Err(SourceError::Status {
                            url: redacted.clone(),
                            status: status.as_u16(),
                            retry_after: requested_retry(&headers),
                        });
                    }
                    if let Some(length) = meta.content_length {
                        if length > settings.max_download_bytes {
                            return Err(SourceError::TooLarge {
                                url: redacted,
                                limit: settings.max_download_bytes,
                            });
                        }
                    }
                    let accept_ranges = headers
                        .get(header::ACCEPT_RANGES)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"bytes"));
                    // A large file a server serves in ranges, with a
                    // strong validator: fetched over several connections,
                    // in order (see `ranged`); the first answer's body is
                    // not read.
                    let validator = ranged::Validator::of(&headers);
                    let parallel = settings.download_connections > 1
                        && accept_ranges
                        && meta
                            .content_length
                            .is_some_and(|l| l >= settings.download_parallel_min_bytes.max(1));
                    if let (true, Some(validator), Some(length)) =
                        (parallel, validator, meta.content_length)
                    {
                        tracing::debug!(url = %redacted, length, connections = settings.download_connections, "ranged download");
                        let fetched = Arc::new(AtomicU64::new(0));
                        let plan = ranged::Plan {
                            fetched: fetched.clone(),
                            refusal: refusal.clone(),
                            client: client.clone(),
                            url: response.url().to_string(),
                            redacted: redacted.clone(),
                            length,
                            validator,
                            connections: settings.download_connections,
                            chunk: settings.download_chunk_bytes,
                            fast: settings.download_fast_bytes_per_second,
                        };
                        let first = response
                            .bytes_stream()
                            .map(|r| r.map_err(|e| io::Error::other(describe_reqwest(&e))))
                            .boxed();
                        return Ok(OpenOutcome::Body(Opened {
                            meta,
                            origin: Origin::Http {
                                client,
                                url: location.to_string(),
                            },
                            body: ranged::body(plan, first),
                            // Each range resumes itself.
                            accept_ranges: false,
                            fetched: Some(fetched),
                        }));
                    }
                    let body = response
                        .bytes_stream()
                        .map(|r| r.map_err(|e| io::Error::other(describe_reqwest(&e))))
                        .boxed();
                    return Ok(OpenOutcome::Body(Opened {
                        meta,
                        origin: Origin::Http {
                            client,
                            url: location.to_string(),
                        },
                        body,
                        accept_ranges,
                        fetched: None,
                    }));
                }
                Err(e) => {
                    let e = request_error(&refusal, e);
                    if matches!(e, SourceError::RedirectRefused { .. }) {
                        return Err(e);
                    }
                    if attempt < MAX_OPEN_ATTEMPTS {
                        tracing::warn!(url = %redacted, error = %e, attempt, "retrying");
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }
    let path = match location.strip_prefix("file://") {
        Some(p) => PathBuf::from(p),
        None if !location.contains("://") => PathBuf::from(location),
        None => return Err(SourceError::Unsupported { url: redacted }),
    };
    let file_error = |source| SourceError::File {
        path: path.display().to_string(),
        source,
    };
    let file = tokio::fs::File::open(&path).await.map_err(file_error)?;
    let length = file.metadata().await.map_err(file_error)?.len();
    let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).boxed();
    Ok(OpenOutcome::Body(Opened {
        meta: SourceMeta {
            url: redacted,
            file_name: file_name_of(&path.to_string_lossy()),
            content_length: Some(length),
            ..SourceMeta::default()
        },
        origin: Origin::File,
        body,
        accept_ranges: false,
        fetched: None,
    }))
}

async fn open_http(
    client: &reqwest::Client,
    location: &str,
    redacted: &str,
    conditional: Option<&Validators>,
    range: Option<(u64, &str)>,
) -> Result<reqwest::Response, SourceError> {
    let mut request = client.get(location);
    if let Some(v) = conditional {
        if let Some(etag) = &v.etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &v.last_modified {
            request = request.header(header::IF_MODIFIED_SINCE, lm);
        }
    }
    if let Some((from, etag)) = range {
        request = request
            .header(header::RANGE, format!("bytes={from}-"))
            .header(header::IF_RANGE, etag);
    }
    request.send().await.map_err(|e| SourceError::Request {
        url: redacted.to_string(),
        message: describe_reqwest(&e),
    })
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500 * 2u64.pow(attempt.saturating_sub(1).min(6)))
}

/// `Retry-After` as the server wrote it: delay-seconds or an HTTP-date
/// (RFC 9110 §10.2.3), as a delay from now.
fn requested_retry(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delay = when.signed_duration_since(chrono::Utc::now());
    Some(delay.to_std().unwrap_or(Duration::ZERO))
}

/// The status an open answered with: 200 for a body (a file too), 304,
/// or the refusal's status; `None` when no answer came.
pub(crate) fn answered_status(opened: &Result<OpenOutcome, SourceError>) -> Option<u16> {
    match opened {
        Ok(OpenOutcome::Body(opened)) => match opened.origin {
            Origin::File => None,
            Origin::Http { .. } => Some(200),
        },
        Ok(OpenOutcome::NotModified(_)) => Some(304),
        Err(SourceError::Status { status, .. } | SourceError::Refused { status, .. }) => {
            Some(*status)
        }
        Err(SourceError::Preparing { .. }) => Some(202),
        Err(_) => None,
    }
}

impl SourceError {
    /// The delay the server asked for before the next try, if any.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Status { retry_after, .. }
            | SourceError::Preparing { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl Opened {
    /// Reads the whole body into `tx`, hashing and counting it; resumes a
    /// broken HTTP body with `Range`/`If-Range` when the server allows it.
    /// Errors are also sent down `tx` so the reader sees where the bytes
    /// stopped. Returns when the body is complete and verified against
    /// `Content-Length`.
    pub(crate) async fn pump(
        mut self,
        tx: mpsc::Sender<io::Result<Bytes>>,
        limits: DownloadLimits,
        progress: Arc<Progress>,
        failed: impl FnOnce() + Send,
    ) -> Result<DownloadSummary, SourceError> {
        // A ranged download fetches ahead of what is handed on in order,
        // also while the next chunk in order is still missing: a ticker
        // keeps the progress's figure current (stopped with the pump).
        let _ahead = self.fetched.clone().map(|fetched| {
            let progress = progress.clone();
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                loop {
                    let handed = progress.bytes.load(Ordering::Relaxed);
                    let ahead = fetched.load(Ordering::Relaxed).saturating_sub(handed);
                    progress.bytes_ahead.store(ahead, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }))
        });
        let result = self.pump_inner(&tx, limits, &progress).await;
        progress.bytes_ahead.store(0, Ordering::Relaxed);
        if let Err(e) = &result {
            if !e.is_consequence() {
                // Recorded before the reader can see it and fail in turn.
                failed();
                // The reader fails with this message instead of a silent EOF.
                let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
            }
        }
        result
    }

    async fn pump_inner(
        &mut self,
        tx: &mpsc::Sender<io::Result<Bytes>>,
        limits: DownloadLimits,
        progress: &Progress,
    ) -> Result<DownloadSummary, SourceError> {
        let mut hasher = Sha256::new();
        let mut bytes: u64 = 0;
        let mut resumes = 0;
        if let Some(total) = self.meta.content_length {
            progress.total_bytes.store(total, Ordering::Relaxed);
        }
        let deadline = tokio::time::Instant::now() + limits.deadline;
        // Network time and bytes in the current throughput window.
        let (mut window_wait, mut window_bytes) = (Duration::ZERO, 0u64);
        loop {
            let asked = tokio::time::Instant::now();
            let next = match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(SourceError::Deadline {
                        url: self.meta.url.clone(),
                        bytes,
                        seconds: limits.deadline.as_secs(),
                    });
                }
            };
            window_wait += asked.elapsed();
            if let Some(Ok(chunk)) = &next {
                window_bytes += chunk.len() as u64;
            }
            if window_wait >= limits.window {
                let seconds = window_wait.as_secs_f64();
                if (window_bytes as f64) < limits.min_bytes_per_second as f64 * seconds {
                    return Err(SourceError::TooSlow {
                        url: self.meta.url.clone(),
                        received: window_bytes,
                        seconds,
                        minimum: limits.min_bytes_per_second,
                    });
                }
                (window_wait, window_bytes) = (Duration::ZERO, 0);
            }
            match next {
                Some(Ok(chunk)) => {
                    bytes += chunk.len() as u64;
                    if bytes > limits.max_bytes {
                        return Err(SourceError::TooLarge {
                            url: self.meta.url.clone(),
                            limit: limits.max_bytes,
                        });
                    }
                    hasher.update(&chunk);
                    progress.bytes.store(bytes, Ordering::Relaxed);
                    if tx.send(Ok(chunk)).await.is_err() {
                        // The reader stopped (it failed and reports why).
                        return Err(SourceError::ReaderStopped {
                            url: self.meta.url.clone(),
                            bytes,
                        });
                    }
                }
                Some(Err(e)) => {
                    // A stream built from requests of its own (a paged
                    // service) hands its request's error over as it is:
                    // its code, not a body error's, decides what follows.
                    if e.get_ref().is_some_and(|inner| inner.is::<SourceError>()) {
                        if let Some(Ok(source)) =
                            e.into_inner().map(|inner| inner.downcast::<SourceError>())
                        {
                            return Err(*source);
                        }
                        return Err(SourceError::Body {
                            url: self.meta.url.clone(),
                            bytes,
                            message: "a request of the stream failed".into(),
                        });
                    }
                    let message = e.to_string();
                    if resumes < MAX_RESUMES && self.resume(bytes, &message).await? {
                        resumes += 1;
                        continue;
                    }
                    return Err(SourceError::Body {
                        url: self.meta.url.clone(),
                        bytes,
                        message,
                    });
                }
                None => break,
            }
        }
        if let Some(expected) = self.meta.content_length {
            if bytes != expected {
                return Err(SourceError::Truncated {
                    url: self.meta.url.clone(),
                    received: bytes,
                    expected,
                });
            }
        }
        Ok(DownloadSummary {
            bytes,
            sha256: hasher.finalize().into(),
        })
    }

    /// Tries to continue the body at `offset`. Ok(false) when resuming is
    /// impossible (no strong ETag, no ranges, not HTTP).
    async fn resume(&mut self, offset: u64, why: &str) -> Result<bool, SourceError> {
        let Origin::Http { client, url } = &self.origin else {
            return Ok(false);
        };
        let Some(etag) = self.meta.strong_etag().map(str::to_string) else {
            return Ok(false);
        };
        if !self.accept_ranges {
            return Ok(false);
        }
        tracing::warn!(url = %self.meta.url, offset, reason = why, "body broke; resuming with Range");
        let response =
            match open_http(client, url, &self.meta.url, None, Some((offset, &etag))).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "resume request failed");
                    return Ok(false);
                }
            };
        if response.status() != StatusCode::PARTIAL_CONTENT {
            tracing::warn!(
                status = response.status().as_u16(),
                "server did not resume the range"
            );
            return Ok(false);
        }
        let range_ok = header_string(response.headers(), header::CONTENT_RANGE)
            .and_then(|v| parse_content_range(&v))
            .is_some_and(|(start, total)| {
                start == offset
                    && self
                        .meta
                        .content_length
                        .is_none_or(|len| total == Some(len))
            });
        if !range_ok {
            tracing::warn!("resumed range does not start where the body broke");
            return Ok(false);
        }
        self.body = response
            .bytes_stream()
            .map(|r| r.map_err(|e| io::Error::other(describe_reqwest(&e))))
            .boxed();
        Ok(true)
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((start.parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_tokens_and_passwords() {
        let r = redact_source("https://user:pw@example.org/a/b.zip?token=CANARY&x=1");
        assert!(!r.contains("CANARY") && !r.contains("pw"), "{r}");
        assert!(r.contains("token=***"), "{r}");
        assert_eq!(
            file_name_of("http://h/x/202410_NovoBolsaFamilia.zip?t=1"),
            "202410_NovoBolsaFamilia.zip"
        );
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 5-9/10"), None);
    }
}
