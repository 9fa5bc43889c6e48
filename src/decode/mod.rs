//! Containers and limits: bytes in, bytes out. The source's chunks arrive
//! through a channel and are read on the parser thread ([`ChannelReader`]);
//! ZIP (one entry, verified against its data descriptor and central
//! directory) or gzip is decoded as a stream, and the output is capped in
//! total and per record. Nothing is ever written to disk.

mod zip;

use std::io::{self, BufRead, Read};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use crate::dataset::Container;

pub use self::zip::ZipStream;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    #[error("not a {expected} archive: the body starts with {found}")]
    WrongContainer {
        expected: &'static str,
        found: String,
    },
    #[error("archive truncated: {0}")]
    Truncated(String),
    #[error("archive corrupt: {0}")]
    Corrupt(String),
    #[error("archive unsupported: {0}")]
    Unsupported(String),
    #[error("decompressed output exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("a record is longer than {limit} bytes (no line break found) at byte {offset}")]
    RecordTooLarge { limit: usize, offset: u64 },
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::WrongContainer { .. } => "unexpected_content",
            DecodeError::Truncated(_) => "archive_truncated",
            DecodeError::Corrupt(_) => "archive_corrupt",
            DecodeError::Unsupported(_) => "archive_unsupported",
            DecodeError::TooLarge { .. } => "zip_limit_exceeded",
            DecodeError::RecordTooLarge { .. } => "record_too_large",
        }
    }
}

impl From<DecodeError> for io::Error {
    fn from(e: DecodeError) -> io::Error {
        io::Error::other(e)
    }
}

/// Finds a [`DecodeError`] inside an io::Error chain.
pub fn find_decode_error(e: &io::Error) -> Option<&DecodeError> {
    e.get_ref()?.downcast_ref::<DecodeError>()
}

/// A blocking [`BufRead`] over the source's chunks; use it on a blocking
/// thread only. Zero-copy: `fill_buf` hands out the current chunk.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    done: bool,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
            done: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() && !self.done {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => self.done = true,
            }
        }
        Ok(&self.current)
    }
    fn consume(&mut self, amt: usize) {
        self.current.advance(amt);
    }
}

/// The decoded byte stream of one source, with its end-of-stream checks.
pub enum Decoded<R: BufRead> {
    Plain(R),
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zip(Box<ZipStream<R>>),
}

impl<R: BufRead> Decoded<R> {
    /// Starts decoding: checks the container's magic bytes first, so an HTML
    /// error page served with status 200 fails here.
    pub fn open(container: Container, mut input: R) -> io::Result<Self> {
        match container {
            Container::Plain => Ok(Decoded::Plain(input)),
            Container::Gzip => {
                let head = input.fill_buf()?;
                if !head.starts_with(&[0x1f, 0x8b]) {
                    return Err(DecodeError::WrongContainer {
                        expected: "gzip",
                        found: describe_start(head),
                    }
                    .into());
                }
                Ok(Decoded::Gzip(Box::new(
                    flate2::bufread::MultiGzDecoder::new(input),
                )))
            }
            Container::Zip => Ok(Decoded::Zip(Box::new(ZipStream::open(input)?))),
        }
    }

    /// The name of the file inside the container, when it has one.
    pub fn entry_name(&self) -> Option<&str> {
        match self {
            Decoded::Zip(z) => Some(z.entry_name()),
            _ => None,
        }
    }

    /// Verifies the container's end (ZIP data descriptor, central directory
    /// and end record). Call after the output reached EOF.
    pub fn finish(self) -> io::Result<()> {
        match self {
            Decoded::Plain(_) | Decoded::Gzip(_) => Ok(()),
            Decoded::Zip(z) => z.finish(),
        }
    }
}

impl<R: BufRead> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Plain(r) => r.read(buf),
            Decoded::Gzip(r) => r.read(buf).map_err(|e| match find_decode_error(&e) {
                Some(_) => e,
                None if e.kind() == io::ErrorKind::UnexpectedEof => {
                    DecodeError::Truncated(format!("gzip stream ended early: {e}")).into()
                }
                None if e.kind() == io::ErrorKind::InvalidInput
                    || e.kind() == io::ErrorKind::InvalidData =>
                {
                    DecodeError::Corrupt(format!("gzip: {e}")).into()
                }
                None => e,
            }),
            Decoded::Zip(r) => r.read(buf),
        }
    }
}

/// Printable description of the first bytes of a body.
pub(crate) fn describe_start(head: &[u8]) -> String {
    if head.is_empty() {
        return "nothing (empty body)".into();
    }
    let shown: String = head
        .iter()
        .take(16)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    format!("{shown:?}")
}

/// Caps the decoded output (total bytes, and bytes between two line feeds)
/// and counts it. csv has no record-size limit of its own.
pub struct Limited<R> {
    inner: R,
    max_total: u64,
    max_record: usize,
    total: u64,
    since_newline: usize,
}

impl<R: Read> Limited<R> {
    pub fn new(inner: R, max_total: u64, max_record: usize) -> Self {
        Limited {
            inner,
            max_total,
            max_record,
            total: 0,
            since_newline: 0,
        }
    }
    pub fn total(&self) -> u64 {
        self.total
    }
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = &buf[..n];
        self.total += n as u64;
        if self.total > self.max_total {
            return Err(DecodeError::TooLarge {
                limit: self.max_total,
            }
            .into());
        }
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', data) {
            if self.since_newline + (i - start) > self.max_record {
                break;
            }
            self.since_newline = 0;
            start = i + 1;
        }
        self.since_newline += n - start;
        if self.since_newline > self.max_record {
            return Err(DecodeError::RecordTooLarge {
                limit: self.max_record,
                offset: self.total - self.since_newline as u64,
            }
            .into());
        }
        Ok(n)
    }
}
