//! Parallel ranged downloads: one file fetched as byte ranges over several
//! connections and handed on **in order**, so inflate, SHA-256, the parser
//! and COPY see exactly the bytes one download would give them.
//!
//! Used when the server answered the first GET with `Accept-Ranges: bytes`,
//! a `Content-Length` and a strong validator (a strong ETag, else
//! `Last-Modified`), the file is at least `http.download_parallel_min_bytes`
//! and `http.download_connections` is above 1. The first answer's own body
//! is timed over its first MiB: at least `http.download_fast_bytes_per_second`,
//! that connection reads the whole file (faster than the engine consumes
//! it: ranges would only add requests), and if it breaks, the rest comes in
//! ranges from where it stopped. Otherwise the ranges after its first chunk
//! start at once and it ends at that chunk; the file is cut into chunks
//! of `http.download_chunk_bytes`; at most `download_connections` of them
//! are in flight or waiting to be handed on (`futures`' `buffered`: the
//! chunks come out in order, and a slow chunk holds the window back, never
//! letting memory grow). Every range request goes to the final URL the
//! first request reached (through the same guarded client: allow-list and
//! redirect checks) and carries `If-Range`:
//!
//! - `206` whose `Content-Range` is the range asked (or from the same start
//!   to a later end: only the bytes asked for are read), of the file's
//!   length, and whose validator (when it gives one) is ours: its body
//!   (short: asked again; longer than its `Content-Range`: refused);
//! - `200` with another validator, or any sign of another version: the file
//!   changed on the server, the attempt fails as `source_changed` (retried
//!   from the start later) — never a file stitched from two versions;
//! - `200` with our validator: the server ignores `Range`; the download
//!   falls back to one connection, skipping what was already handed on;
//! - a wrong `Content-Range`: refused (`source_protocol`), never passed on;
//! - a connection error, a body that breaks or stalls (`read_timeout_s`),
//!   408, 429 or 5xx (honouring `Retry-After`, capped): that range asked
//!   again, a few times, on a fresh request.
//!
//! Dropping the stream (a failure elsewhere, cancellation) drops every
//! request in flight: their connections close at once.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::StatusCode;
#[cfg(test)]
use reqwest::header::HeaderValue;
use reqwest::header::{self, HeaderMap};

use super::{Refusal, SourceError, describe_reqwest, header_string, request_error};

/// Tries per range before the download fails.
const RANGE_ATTEMPTS: u32 = 4;
/// The longest `Retry-After` a range waits for; longer fails the attempt
/// (the job queue honours it).
const MAX_RANGE_WAIT: Duration = Duration::from_secs(30);
/// The pieces a chunk is handed on in: the channel to the inflate stage
/// counts items, so its memory stays `download_depth` × this.
const PIECE: usize = 256 * 1024;

/// What identifies the version of the file the download is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Validator {
    ETag(String),
    LastModified(String),
}

impl Validator {
    /// The strong validator of a first answer, if it has one: a strong
    /// ETag; else, when it has no ETag at all, a Last-Modified at least a
    /// second older than its `Date` (RFC 9110 §8.8.2.2: a date is strong
    /// only then; a file rewritten within its second keeps its date).
    pub(super) fn of(headers: &HeaderMap) -> Option<Validator> {
        let etag = header_string(headers, header::ETAG);
        let modified = header_string(headers, header::LAST_MODIFIED);
        match (etag, modified) {
            (Some(e), _) if !e.starts_with("W/") => Some(Validator::ETag(e)),
            (Some(_), _) => None,
            (None, Some(lm)) => {
                let date = header_string(headers, header::DATE)?;
                let at = |t: &str| chrono::DateTime::parse_from_rfc2822(t).ok();
                let (modified_at, date_at) = (at(&lm)?, at(&date)?);
                (date_at - modified_at >= chrono::Duration::seconds(1))
                    .then_some(Validator::LastModified(lm))
            }
            (None, None) => None,
        }
    }

    fn if_range(&self) -> &str {
        match self {
            Validator::ETag(v) | Validator::LastModified(v) => v,
        }
    }

    /// Whether an answer's headers say it is another version of the file:
    /// another ETag (compared weakly: `W/` aside), or another date.
    fn differs(&self, headers: &HeaderMap) -> bool {
        let etag = header_string(headers, header::ETAG);
        let modified = header_string(headers, header::LAST_MODIFIED);
        let weak = |e: &str| e.trim_start_matches("W/").to_string();
        match self {
            Validator::ETag(ours) => etag.is_some_and(|e| weak(&e) != weak(ours)),
            // The first answer had no ETag: one now is another version.
            Validator::LastModified(ours) => etag.is_some() || modified.is_some_and(|m| m != *ours),
        }
    }
}

/// One ranged download.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) client: reqwest::Client,
    /// The guarded client's last refused redirect, for its error.
    pub(super) refusal: Refusal,
    /// The final URL the first request reached.
    pub(super) url: String,
    /// For messages.
    pub(super) redacted: String,
    pub(super) length: u64,
    pub(super) validator: Validator,
    pub(super) connections: usize,
    pub(super) chunk: u64,
    /// A first answer whose first chunk comes at least this fast (bytes
    /// per second) is read whole over its own connection.
    pub(super) fast: u64,
    /// Bytes received so far, over every connection (progress).
    pub(super) fetched: Arc<AtomicU64>,
}

/// Why a range did not come.
enum Miss {
    /// The server answered the whole file with our validator.
    Ignored,
    Failed(SourceError),
}

fn changed(plan: &Plan, offset: u64) -> SourceError {
    SourceError::Changed {
        url: plan.redacted.clone(),
        offset,
    }
}

/// `bytes START-END/TOTAL`: (START, END) when END is within TOTAL, which
/// must be `length`.
fn content_range(value: &str, length: u64) -> Option<(u64, u64)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, total): (u64, u64, u64) =
        (start.parse().ok()?, end.parse().ok()?, total.parse().ok()?);
    (start <= end && end < total && total == length).then_some((start, end))
}

fn wait_for(headers: &HeaderMap, attempt: u32) -> Option<Duration> {
    let asked = super::requested_retry(headers);
    match asked {
        Some(d) if d > MAX_RANGE_WAIT => None,
        Some(d) => Some(d),
        None => Some(super::backoff(attempt)),
    }
}

/// Fetches bytes `start..=end`, asking again on a passing failure.
async fn fetch(plan: &Plan, start: u64, end: u64) -> Result<Bytes, Miss> {
    let want = end - start + 1;
    let mut last = None;
    for attempt in 1..=RANGE_ATTEMPTS {
        if attempt > 1 {
            tracing::warn!(url = %plan.redacted, start, end, attempt, "asking for a range again");
        }
        let sent = plan
            .client
            .get(&plan.url)
            .header(header::RANGE, format!("bytes={start}-{end}"))
            .header(header::IF_RANGE, plan.validator.if_range())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let e = request_error(
                    &plan.refusal,
                    SourceError::Request {
                        url: plan.redacted.clone(),
                        message: describe_reqwest(&e),
                    },
                );
                if matches!(e, SourceError::RedirectRefused { .. }) {
                    return Err(Miss::Failed(e));
                }
                last = Some(e);
                if attempt < RANGE_ATTEMPTS {
                    tokio::time::sleep(super::backoff(attempt)).await;
                }
                continue;
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        // An answer of the file (not an error page) of another version.
        let file = status == StatusCode::PARTIAL_CONTENT || status == StatusCode::OK;
        if file && plan.validator.differs(&headers) {
            return Err(Miss::Failed(changed(plan, start)));
        }
        match status {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK => {
                // If-Range with a validator the file no longer has gets
                // the whole (new) file; with ours, ranges are not served.
                return Err(
                    match header_string(&headers, header::ETAG)
                        .or_else(|| header_string(&headers, header::LAST_MODIFIED))
                    {
                        Some(_) => Miss::Ignored,
                        None => Miss::Failed(changed(plan, start)),
                    },
                );
            }
            StatusCode::RANGE_NOT_SATISFIABLE => return Err(Miss::Failed(changed(plan, start))),
            // The final URL no longer serves the file (a signed link that
            // expired, say): not the file's fault nor "not published";
            // the load is retried from the start, through the redirects.
            s if matches!(s.as_u16(), 401 | 403 | 404 | 410) => {
                return Err(Miss::Failed(SourceError::Protocol {
                    url: plan.redacted.clone(),
                    message: format!(
                        "the file's final URL answered HTTP {} to the range {start}-{end} (a link that expired?); retried from the start",
                        s.as_u16()
                    ),
                }));
            }
            s if s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::TOO_MANY_REQUESTS
                || s.is_server_error() =>
            {
                last = Some(SourceError::Status {
                    url: plan.redacted.clone(),
                    status: s.as_u16(),
                    retry_after: super::requested_retry(&headers),
                });
                match wait_for(&headers, attempt) {
                    Some(pause) if attempt < RANGE_ATTEMPTS => {
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    _ => break,
                }
            }
            s => {
                return Err(Miss::Failed(SourceError::Status {
                    url: plan.redacted.clone(),
                    status: s.as_u16(),
                    retry_after: super::requested_retry(&headers),
                }));
            }
        }
        // The range asked, or one from the same start to a later end (a
        // server that serves `START-` whatever the end): only the bytes
        // asked for are read, and the connection is dropped.
        let range = header_string(&headers, header::CONTENT_RANGE);
        let served = range.as_deref().and_then(|r| content_range(r, plan.length));
        let fits = served.is_some_and(|(a, b)| a == start && b >= end);
        if !fits {
            return Err(Miss::Failed(SourceError::Protocol {
                url: plan.redacted.clone(),
                message: format!(
                    "asked for bytes {start}-{end} of {}, the server answered Content-Range {:?}",
                    plan.length,
                    range.unwrap_or_default()
                ),
            }));
        }
        let mut body = response.bytes_stream();
        let mut buf = BytesMut::with_capacity(want as usize);
        let mut broke = None;
        let served = served.map_or(want, |(a, b)| b - a + 1);
        let mut received = 0u64;
        while let Some(piece) = body.next().await {
            match piece {
                Ok(piece) => {
                    received += piece.len() as u64;
                    if received > served {
                        return Err(Miss::Failed(SourceError::Protocol {
                            url: plan.redacted.clone(),
                            message: format!(
                                "the range {start}-{end} sent more than its Content-Range says"
                            ),
                        }));
                    }
                    let room = (want - buf.len() as u64) as usize;
                    let taken = piece.len().min(room);
                    buf.extend_from_slice(&piece[..taken]);
                    plan.fetched.fetch_add(taken as u64, Ordering::Relaxed);
                    if buf.len() as u64 == want {
                        break;
                    }
                }
                Err(e) => {
                    broke = Some(describe_reqwest(&e));
                    break;
                }
            }
        }
        if buf.len() as u64 == want {
            return Ok(buf.freeze());
        }
        // Short: the connection broke or stalled; ask again (its bytes
        // come again).
        plan.fetched.fetch_sub(buf.len() as u64, Ordering::Relaxed);
        last = Some(SourceError::Body {
            url: plan.redacted.clone(),
            bytes: start + buf.len() as u64,
            message: broke.unwrap_or_else(|| {
                format!("the range {start}-{end} ended after {} bytes", buf.len())
            }),
        });
        if attempt < RANGE_ATTEMPTS {
            tokio::time::sleep(super::backoff(attempt)).await;
        }
    }
    Err(Miss::Failed(last.unwrap_or_else(|| SourceError::Request {
        url: plan.redacted.clone(),
        message: "no answer".into(),
    })))
}

/// The file from `offset` on over one connection (the server ignores
/// `Range`): the whole file asked again, its first `offset` bytes skipped.
async fn single_from(
    plan: &Plan,
    offset: u64,
) -> Result<BoxStream<'static, io::Result<Bytes>>, SourceError> {
    tracing::warn!(url = %plan.redacted, offset, "the server ignores Range: one connection from here");
    let response = plan
        .client
        .get(&plan.url)
        .send()
        .await
        .map_err(|e| SourceError::Request {
            url: plan.redacted.clone(),
            message: describe_reqwest(&e),
        })?;
    let headers = response.headers().clone();
    let status = response.status();
    if status != StatusCode::OK {
        return Err(SourceError::Status {
            url: plan.redacted.clone(),
            status: status.as_u16(),
            retry_after: super::requested_retry(&headers),
        });
    }
    if plan.validator.differs(&headers) || response.content_length() != Some(plan.length) {
        return Err(changed(plan, offset));
    }
    // What this connection fetches is counted from here on (by the
    // caller, as it hands it on).
    plan.fetched.store(offset, Ordering::Relaxed);
    let mut skip = offset;
    let body = response
        .bytes_stream()
        .map(|r| r.map_err(|e| io::Error::other(describe_reqwest(&e))))
        .filter_map(move |piece| {
            let out = match piece {
                Ok(mut bytes) => {
                    let drop = skip.min(bytes.len() as u64) as usize;
                    skip -= drop as u64;
                    let rest = bytes.split_off(drop);
                    (!rest.is_empty()).then_some(Ok(rest))
                }
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(out)
        })
        .boxed();
    Ok(body)
}

/// How much of the first answer is timed before deciding (at most its
/// first chunk).
const SAMPLE: u64 = 1 << 20;

type Chunks = BoxStream<'static, (u64, Result<Bytes, Miss>)>;

/// Where the stream is.
enum State {
    /// The first answer's own body, `read` bytes in. Its first megabyte
    /// decides: fast, it reads the whole file; slow, the ranges after its
    /// first chunk start at once (`upcoming`) and it ends at that chunk.
    /// With `ranges`, a break goes on in ranges from where it stopped.
    Whole {
        plan: Plan,
        body: BoxStream<'static, io::Result<Bytes>>,
        read: u64,
        first_at: Option<std::time::Instant>,
        decided: bool,
        ranges: bool,
        upcoming: Option<Chunks>,
    },
    Ranged {
        plan: Plan,
        chunks: Chunks,
    },
    Done,
}

/// The bytes `from..to` in ranges of a chunk, in order. A task of its own
/// keeps `connections` ranges going from the start (each range a task, read
/// while the chunks before it are handed on), with one finished chunk
/// waiting at most; dropping the stream stops it and every range.
fn chunks(plan: &Plan, from: u64, to: u64) -> Chunks {
    let chunk = plan.chunk.max(1);
    let starts = (from..to).step_by(chunk as usize);
    let fetching = plan.clone();
    let mut ranges = futures::stream::iter(starts)
        .map(move |start| {
            let plan = fetching.clone();
            let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                let end = (start + chunk).min(to) - 1;
                fetch(&plan, start, end).await
            }));
            async move {
                let fetched = task.await.unwrap_or_else(|e| {
                    Err(Miss::Failed(SourceError::Request {
                        url: String::new(),
                        message: format!("the range task ended: {e}"),
                    }))
                });
                (start, fetched)
            }
        })
        .buffered(plan.connections.max(1));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let producer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        while let Some(item) = ranges.next().await {
            let failed = item.1.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    }));
    futures::stream::unfold((rx, producer), |(mut rx, producer)| async move {
        rx.recv().await.map(|item| (item, (rx, producer)))
    })
    .boxed()
}

/// One step: the next bytes to hand on and the state after them, or the
/// end.
async fn step(mut state: State) -> Option<(io::Result<Bytes>, State)> {
    let failed = |e: SourceError| io::Error::other(e);
    loop {
        state = match state {
            State::Done => return None,
            State::Whole {
                plan,
                mut body,
                read,
                first_at,
                decided,
                ranges,
                upcoming,
            } => match body.next().await {
                Some(Ok(mut piece)) => {
                    let first_at = first_at.or_else(|| Some(std::time::Instant::now()));
                    let mut now = read + piece.len() as u64;
                    if now > plan.length {
                        return Some((
                            Err(failed(SourceError::Protocol {
                                url: plan.redacted.clone(),
                                message: format!(
                                    "the body is longer than its Content-Length of {}",
                                    plan.length
                                ),
                            })),
                            State::Done,
                        ));
                    }
                    let mut decided = decided;
                    let mut upcoming = upcoming;
                    let sample = SAMPLE.min(plan.chunk).min(plan.length);
                    if !decided && ranges && now >= sample {
                        decided = true;
                        let seconds = first_at.map_or(0.0, |t| t.elapsed().as_secs_f64());
                        let fast = now as f64 >= plan.fast as f64 * seconds;
                        if !fast && plan.chunk < plan.length {
                            tracing::debug!(url = %plan.redacted, rate = now as f64 / seconds.max(1e-9), "ranged download");
                            upcoming = Some(chunks(&plan, plan.chunk, plan.length));
                        }
                    }
                    if upcoming.is_some() && now >= plan.chunk {
                        // The first chunk is complete: this connection
                        // ends, the ranges after it go on.
                        piece.truncate((plan.chunk - read) as usize);
                        now = plan.chunk;
                    }
                    plan.fetched.fetch_add(now - read, Ordering::Relaxed);
                    let next = match upcoming {
                        Some(chunks) if now == plan.chunk => State::Ranged { plan, chunks },
                        upcoming => State::Whole {
                            plan,
                            body,
                            read: now,
                            first_at,
                            decided,
                            ranges,
                            upcoming,
                        },
                    };
                    return Some((Ok(piece), next));
                }
                // The whole file: the pump checks the total.
                None if read == plan.length || !ranges => return None,
                // Cut short, or broken: on in ranges from where it stopped
                // (to the first chunk's end when the ranges after it have
                // started).
                None | Some(Err(_)) if ranges => {
                    tracing::warn!(url = %plan.redacted, offset = read, "body broke; on in ranges");
                    let chunks = match upcoming {
                        Some(after) => chunks(&plan, read, plan.chunk).chain(after).boxed(),
                        None => chunks(&plan, read, plan.length),
                    };
                    State::Ranged { plan, chunks }
                }
                None => return None,
                Some(Err(e)) => return Some((Err(e), State::Done)),
            },
            State::Ranged { plan, mut chunks } => match chunks.next().await {
                None => return None,
                Some((_, Ok(bytes))) => return Some((Ok(bytes), State::Ranged { plan, chunks })),
                Some((start, Err(Miss::Ignored))) => {
                    // Every range in flight is dropped with `chunks`.
                    drop(chunks);
                    match single_from(&plan, start).await {
                        Ok(body) => State::Whole {
                            plan,
                            body,
                            read: start,
                            first_at: None,
                            decided: true,
                            ranges: false,
                            upcoming: None,
                        },
                        Err(e) => return Some((Err(failed(e)), State::Done)),
                    }
                }
                Some((_, Err(Miss::Failed(e)))) => return Some((Err(failed(e)), State::Done)),
            },
        };
    }
}

/// The file as one ordered byte stream (see the module's doc), starting
/// with `first`, the first answer's body. An error is an `io::Error`
/// holding the [`SourceError`], which the pump reports as itself.
pub(super) fn body(
    plan: Plan,
    first: BoxStream<'static, io::Result<Bytes>>,
) -> BoxStream<'static, io::Result<Bytes>> {
    let state = State::Whole {
        plan,
        body: first,
        read: 0,
        first_at: None,
        decided: false,
        ranges: true,
        upcoming: None,
    };
    futures::stream::unfold(state, step)
        // Handed on in pieces: the next stage's channel counts items.
        .flat_map(|item| {
            let pieces: Vec<io::Result<Bytes>> = match item {
                Ok(bytes) => (0..bytes.len())
                    .step_by(PIECE)
                    .map(|at| Ok(bytes.slice(at..(at + PIECE).min(bytes.len()))))
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(pieces)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(name.clone(), HeaderValue::from_str(value).expect("value"));
        }
        h
    }

    #[test]
    fn only_a_strong_validator_allows_ranges() {
        let date = (header::DATE, "Sat, 05 Dec 2026 05:00:00 GMT");
        let strong = headers(&[(header::ETAG, "\"v1\"")]);
        assert_eq!(
            Validator::of(&strong),
            Some(Validator::ETag("\"v1\"".into()))
        );
        // A weak ETag: no strong validator (its date is not used either).
        let weak = headers(&[
            (header::ETAG, "W/\"v1\""),
            (header::LAST_MODIFIED, "Sat, 05 Dec 2026 04:00:00 GMT"),
            date.clone(),
        ]);
        assert_eq!(Validator::of(&weak), None);
        // A date is strong only a second or more before the answer's Date.
        let old = headers(&[
            (header::LAST_MODIFIED, "Sat, 05 Dec 2026 04:00:00 GMT"),
            date.clone(),
        ]);
        assert!(matches!(
            Validator::of(&old),
            Some(Validator::LastModified(_))
        ));
        let fresh = headers(&[
            (header::LAST_MODIFIED, "Sat, 05 Dec 2026 05:00:00 GMT"),
            date,
        ]);
        assert_eq!(Validator::of(&fresh), None);
        let undated = headers(&[(header::LAST_MODIFIED, "Sat, 05 Dec 2026 04:00:00 GMT")]);
        assert_eq!(Validator::of(&undated), None);
    }

    #[test]
    fn another_version_is_seen_by_any_validator() {
        let etag = Validator::ETag("\"v1\"".into());
        assert!(!etag.differs(&headers(&[(header::ETAG, "\"v1\"")])));
        assert!(!etag.differs(&headers(&[(header::ETAG, "W/\"v1\"")])));
        assert!(etag.differs(&headers(&[(header::ETAG, "\"v2\"")])));
        let date = Validator::LastModified("Sat, 05 Dec 2026 04:00:00 GMT".into());
        assert!(date.differs(&headers(&[(header::ETAG, "\"v2\"")])));
        assert!(date.differs(&headers(&[(
            header::LAST_MODIFIED,
            "Sat, 05 Dec 2026 04:30:00 GMT"
        )])));
        assert!(!date.differs(&headers(&[(
            header::LAST_MODIFIED,
            "Sat, 05 Dec 2026 04:00:00 GMT"
        )])));
    }

    #[test]
    fn a_content_range_is_within_the_file() {
        assert_eq!(content_range("bytes 0-99/100", 100), Some((0, 99)));
        assert_eq!(content_range("bytes 0-100/100", 100), None);
        assert_eq!(content_range("bytes 0-99/101", 100), None);
        assert_eq!(content_range("bytes 0-99/*", 100), None);
        assert_eq!(content_range("bytes 50-10/100", 100), None);
        assert_eq!(
            content_range(&format!("bytes 0-{}/100", u64::MAX), 100),
            None
        );
    }
}
