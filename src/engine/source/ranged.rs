//! Parallel ranged downloads: one file fetched as byte ranges over several
//! connections and handed on **in order**, so inflate, SHA-256, the parser
//! and COPY see exactly the bytes one download would give them.
//!
//! Used when the server answered the first GET with `Accept-Ranges: bytes`,
//! a `Content-Length` and a strong validator (a strong ETag, else
//! `Last-Modified`), the file is at least `http.download_parallel_min_bytes`
//! and `http.download_connections` is above 1. The file is cut into chunks
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
use reqwest::header::{self, HeaderMap};

use super::{SourceError, describe_reqwest, header_string, parse_content_range};

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
    /// The validator of a first answer, if it has a usable one.
    pub(super) fn of(etag: Option<&str>, last_modified: Option<&str>) -> Option<Validator> {
        match (etag, last_modified) {
            (Some(e), _) if !e.starts_with("W/") => Some(Validator::ETag(e.to_string())),
            (_, Some(lm)) => Some(Validator::LastModified(lm.to_string())),
            _ => None,
        }
    }

    fn if_range(&self) -> &str {
        match self {
            Validator::ETag(v) | Validator::LastModified(v) => v,
        }
    }

    /// Whether an answer's headers say it is another version of the file.
    fn differs(&self, headers: &HeaderMap) -> bool {
        let etag = header_string(headers, header::ETAG);
        let modified = header_string(headers, header::LAST_MODIFIED);
        match self {
            Validator::ETag(ours) => etag.is_some_and(|e| e != *ours),
            Validator::LastModified(ours) => modified.is_some_and(|m| m != *ours),
        }
    }
}

/// One ranged download.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) client: reqwest::Client,
    /// The final URL the first request reached.
    pub(super) url: String,
    /// For messages.
    pub(super) redacted: String,
    pub(super) length: u64,
    pub(super) validator: Validator,
    pub(super) connections: usize,
    pub(super) chunk: u64,
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

/// `bytes START-END/TOTAL`, all three.
fn content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let (start, total) = parse_content_range(value)?;
    let end = value
        .trim()
        .strip_prefix("bytes ")?
        .split_once('/')?
        .0
        .split_once('-')?
        .1
        .parse()
        .ok()?;
    Some((start, end, total))
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
                last = Some(SourceError::Request {
                    url: plan.redacted.clone(),
                    message: describe_reqwest(&e),
                });
                tokio::time::sleep(super::backoff(attempt)).await;
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
        let fits = range
            .as_deref()
            .and_then(content_range)
            .is_some_and(|(a, b, total)| a == start && b >= end && total == Some(plan.length));
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
        let served = range
            .as_deref()
            .and_then(content_range)
            .map_or(want, |(a, b, _)| b - a + 1);
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
        tokio::time::sleep(super::backoff(attempt)).await;
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
    if response.status() != StatusCode::OK
        || plan.validator.differs(&headers)
        || response.content_length() != Some(plan.length)
    {
        return Err(changed(plan, offset));
    }
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

/// Where the stream is.
enum State {
    Ranged {
        plan: Plan,
        chunks: BoxStream<'static, (u64, Result<Bytes, Miss>)>,
    },
    Single(BoxStream<'static, io::Result<Bytes>>),
    Done,
}

/// The file as one ordered byte stream (see the module's doc). An error is
/// an `io::Error` holding the [`SourceError`], which the pump reports as
/// itself.
pub(super) fn body(plan: Plan) -> BoxStream<'static, io::Result<Bytes>> {
    let (length, chunk) = (plan.length, plan.chunk.max(1));
    let starts = (0..length.div_ceil(chunk)).map(move |i| i * chunk);
    let fetching = plan.clone();
    let chunks = futures::stream::iter(starts)
        .map(move |start| {
            let plan = fetching.clone();
            async move {
                let end = (start + chunk).min(plan.length) - 1;
                (start, fetch(&plan, start, end).await)
            }
        })
        .buffered(plan.connections.max(1))
        .boxed();
    let failed = |e: SourceError| io::Error::other(e);
    futures::stream::unfold(State::Ranged { plan, chunks }, move |state| async move {
        match state {
            State::Done => None,
            State::Single(mut body) => {
                let next = body.next().await?;
                let done = next.is_err();
                Some((
                    next,
                    if done {
                        State::Done
                    } else {
                        State::Single(body)
                    },
                ))
            }
            State::Ranged { plan, mut chunks } => match chunks.next().await {
                None => None,
                Some((_, Ok(bytes))) => Some((Ok(bytes), State::Ranged { plan, chunks })),
                Some((start, Err(Miss::Ignored))) => {
                    // Every range in flight is dropped with `chunks`.
                    drop(chunks);
                    match single_from(&plan, start).await {
                        Ok(mut body) => {
                            let next = body.next().await?;
                            Some((next, State::Single(body)))
                        }
                        Err(e) => Some((Err(failed(e)), State::Done)),
                    }
                }
                Some((_, Err(Miss::Failed(e)))) => Some((Err(failed(e)), State::Done)),
            },
        }
    })
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
