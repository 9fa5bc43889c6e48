//! The stream's stages around the parser: the download task, the inflate
//! thread, and [`FirstFailure`], which tells the root cause from its
//! consequences when they race (the parser's own thread starts in
//! `parser.rs`).

use std::io::{self, Read};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::error::LoadError;
use crate::config::{LimitSettings, Settings};
use crate::engine::decode::{DecodeError, Decoded, Limited, find_decode_error};
use crate::engine::source::{self, DownloadSummary, Progress, SourceError};

/// The stages whose failures race: the download, and the stream (inflate,
/// parse and COPY, whose errors all come out of the COPY future).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
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
pub(crate) struct FirstFailure(std::sync::OnceLock<Stage>);

impl FirstFailure {
    /// Records `stage` unless another stage failed earlier.
    pub(crate) fn record(&self, stage: Stage) {
        let _ = self.0.set(stage);
    }

    pub(crate) fn get(&self) -> Option<Stage> {
        self.0.get().copied()
    }

    /// The root cause among the stream's and the download's results.
    pub(crate) fn root_cause<A, B>(
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

/// Decoded chunks in flight between the inflate thread and the parser.
pub(super) const INFLATED_DEPTH: usize = 8;
/// Size of one decoded chunk.
const INFLATED_CHUNK: usize = 256 * 1024;

/// The inflate stage: reads the decoded container through the output caps
/// and sends full chunks to the parser; at the end verifies the container's
/// trailer. Any error is sent down the channel, so the parser fails with it.
/// Returns the decoded byte count.
pub(super) fn inflate<R: io::BufRead>(
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
/// Opens the spec's source at `location` by its protocol: a file (asked
/// with `conditional` validators), a paged service read as one CSV stream,
/// or a SIDRA answer. The status the source answered goes to `progress`.
pub(crate) async fn open_source(
    spec: &crate::dataset::Spec,
    location: &str,
    settings: &Settings,
    conditional: Option<&source::Validators>,
    guard: Option<source::RedirectGuard>,
    progress: &Progress,
) -> Result<source::OpenOutcome, SourceError> {
    use crate::dataset::{Protocol, Role};
    use source::paged::{Dialect, MAX_PAGE_BYTES, SolrPaging};
    let columns = &spec.layouts[0].columns;
    let fields = || columns.iter().map(|c| c.header.clone()).collect();
    let page_bytes = MAX_PAGE_BYTES.min(settings.http.max_download_bytes);
    let opened = match spec.source.protocol {
        Protocol::File => source::open_guarded(location, &settings.http, conditional, guard).await,
        Protocol::Solr | Protocol::Odata => {
            let paging = SolrPaging {
                dialect: match spec.source.protocol {
                    Protocol::Odata => Dialect::Odata,
                    _ => Dialect::Solr,
                },
                rows: spec.source.page_rows,
                fields: fields(),
                // The key the query sorts by: a place's own key, else its
                // municipality or state column.
                key: columns
                    .iter()
                    .find(|c| c.role == Some(Role::Key))
                    .or_else(|| {
                        columns
                            .iter()
                            .find(|c| matches!(c.role, Some(Role::Municipality | Role::State)))
                    })
                    .map(|c| c.header.clone())
                    .unwrap_or_default(),
                max_page_bytes: page_bytes,
            };
            source::paged::open_paged(location, &settings.http, guard, paging).await
        }
        Protocol::Sidra => {
            source::paged::open_sidra(location, &settings.http, guard, fields(), page_bytes).await
        }
        // Features, not rows: read by the boundaries load itself.
        Protocol::Geojson => Err(SourceError::Protocol {
            url: source::redact_source(location),
            message: "a GeoJSON source is read by a boundaries dataset".into(),
        }),
    };
    if let Some(status) = source::answered_status(&opened) {
        progress
            .source_status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }
    opened
}

/// The download task, aborted when its handle is dropped: a load that is
/// cancelled (or fails) closes its connections at once, instead of leaving
/// the task to wait for a stalled server.
pub(super) type Download = AbortOnDropHandle<Result<DownloadSummary, SourceError>>;

pub(super) fn spawn_download(
    opened: source::Opened,
    bytes: mpsc::Sender<io::Result<Bytes>>,
    settings: &Settings,
    progress: &Arc<Progress>,
    first: &Arc<FirstFailure>,
) -> Download {
    let failed = first.clone();
    AbortOnDropHandle::new(tokio::spawn(opened.pump(
        bytes,
        source::DownloadLimits::from_settings(&settings.http),
        progress.clone(),
        move || failed.record(Stage::Source),
    )))
}

/// The download task's result; an abort (after the stream failed) is a
/// consequence.
pub(super) async fn join_download(download: Download) -> Result<DownloadSummary, LoadError> {
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
