//! Containers and limits: bytes in, bytes out. The source's chunks arrive
//! through a channel and are read on the parser thread (`ChannelReader`);
//! ZIP (one entry, verified against its data descriptor and central
//! directory) or gzip is decoded as a stream, and the output is capped in
//! total and per record. Nothing is ever written to disk.

mod zip;

use std::io::{self, BufRead, Read};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use crate::dataset::Container;

pub(crate) use self::zip::ZipStream;

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
    pub(crate) fn code(&self) -> crate::code::Code {
        use crate::code::Code;
        match self {
            DecodeError::WrongContainer { .. } => Code::UnexpectedContent,
            DecodeError::Truncated(_) => Code::ArchiveTruncated,
            DecodeError::Corrupt(_) => Code::ArchiveCorrupt,
            DecodeError::Unsupported(_) => Code::ArchiveUnsupported,
            DecodeError::TooLarge { .. } => Code::ZipLimitExceeded,
            DecodeError::RecordTooLarge { .. } => Code::RecordTooLarge,
        }
    }
}

impl From<DecodeError> for io::Error {
    fn from(e: DecodeError) -> io::Error {
        io::Error::other(e)
    }
}

/// Finds a [`DecodeError`] inside an io::Error chain.
pub(crate) fn find_decode_error(e: &io::Error) -> Option<&DecodeError> {
    e.get_ref()?.downcast_ref::<DecodeError>()
}

/// A blocking [`BufRead`] over the source's chunks; use it on a blocking
/// thread only. Zero-copy: `fill_buf` hands out the current chunk.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    done: bool,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
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
pub(crate) enum Decoded<R: BufRead> {
    Plain(R),
    /// The magic bytes, already read, go back in front of the stream.
    Gzip(Box<flate2::bufread::MultiGzDecoder<io::Chain<io::Cursor<[u8; 2]>, R>>>),
    Zip(Box<ZipStream<R>>),
}

impl<R: BufRead> Decoded<R> {
    /// Starts decoding: checks the container's magic bytes first, so an HTML
    /// error page served with status 200 fails here.
    pub(crate) fn open(container: Container, mut input: R) -> io::Result<Self> {
        match container {
            Container::Plain => Ok(Decoded::Plain(input)),
            Container::Gzip => {
                let (magic, got) = read_magic::<2>(&mut input)?;
                if magic != [0x1f, 0x8b] {
                    return Err(DecodeError::WrongContainer {
                        expected: "gzip",
                        found: describe_magic(&magic[..got], &mut input),
                    }
                    .into());
                }
                Ok(Decoded::Gzip(Box::new(
                    flate2::bufread::MultiGzDecoder::new(Read::chain(
                        io::Cursor::new(magic),
                        input,
                    )),
                )))
            }
            Container::Zip => Ok(Decoded::Zip(Box::new(ZipStream::open(input)?))),
        }
    }

    /// The name of the file inside the container, when it has one.
    pub(crate) fn entry_name(&self) -> Option<&str> {
        match self {
            Decoded::Zip(z) => Some(z.entry_name()),
            _ => None,
        }
    }

    /// Verifies the container's end (ZIP data descriptor, central directory
    /// and end record). Call after the output reached EOF.
    pub(crate) fn finish(self) -> io::Result<()> {
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

/// Reads the first `N` bytes of a body, however the network split them.
/// Returns them and how many there were (fewer only at the end).
pub(crate) fn read_magic<const N: usize>(input: &mut impl Read) -> io::Result<([u8; N], usize)> {
    let mut magic = [0u8; N];
    let mut got = 0;
    while let Some(rest) = magic.get_mut(got..).filter(|r| !r.is_empty()) {
        match input.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((magic, got))
}

/// Describes a body that does not start with the expected magic: the bytes
/// read, then what follows in the buffer.
pub(crate) fn describe_magic(magic: &[u8], input: &mut impl BufRead) -> String {
    let mut head = magic.to_vec();
    if let Ok(more) = input.fill_buf() {
        head.extend_from_slice(more.get(..16).unwrap_or(more));
    }
    describe_start(&head)
}

/// Printable description of the first bytes of a body.
fn describe_start(head: &[u8]) -> String {
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
///
/// When a record passes the cap, the bytes before that record are returned
/// first and the error on the next read, so the reader sees every whole
/// line before it and can name the long record's line.
pub(crate) struct Limited<R> {
    inner: R,
    max_total: u64,
    max_record: usize,
    total: u64,
    since_newline: usize,
    pending: Option<DecodeError>,
}

impl<R: Read> Limited<R> {
    pub(crate) fn new(inner: R, max_total: u64, max_record: usize) -> Self {
        Limited {
            inner,
            max_total,
            max_record,
            total: 0,
            since_newline: 0,
            pending: None,
        }
    }
    pub(crate) fn total(&self) -> u64 {
        self.total
    }
    pub(crate) fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.pending.take() {
            return Err(e.into());
        }
        let n = self.inner.read(buf)?;
        let data = buf.get(..n).unwrap_or(&[]);
        self.total += n as u64;
        if self.total > self.max_total {
            return Err(DecodeError::TooLarge {
                limit: self.max_total,
            }
            .into());
        }
        // `start`: where the current (unfinished) record begins in `data`.
        let mut start = 0;
        let mut over = false;
        for i in memchr::memchr_iter(b'\n', data) {
            if self.since_newline + (i - start) > self.max_record {
                over = true;
                break;
            }
            self.since_newline = 0;
            start = i + 1;
        }
        if over || self.since_newline + (n - start) > self.max_record {
            let error = DecodeError::RecordTooLarge {
                limit: self.max_record,
                offset: self.total - n as u64 + start as u64 - self.since_newline as u64,
            };
            if start > 0 {
                // Hand over the whole lines first; fail on the next read.
                self.pending = Some(error);
                return Ok(start);
            }
            return Err(error.into());
        }
        self.since_newline += n - start;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel fed `body` in pieces of `piece` bytes, as a network might.
    fn channel(body: &[u8], piece: usize) -> ChannelReader {
        let (tx, rx) = mpsc::channel(body.len().max(1));
        for chunk in body.chunks(piece) {
            tx.try_send(Ok(Bytes::copy_from_slice(chunk)))
                .expect("room");
        }
        ChannelReader::new(rx)
    }

    fn gzip(content: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(content).expect("write");
        e.finish().expect("finish")
    }

    fn zip(content: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::new();
        let mut w = ::zip::ZipWriter::new(io::Cursor::new(&mut out));
        w.start_file("x.csv", ::zip::write::SimpleFileOptions::default())
            .expect("start");
        w.write_all(content).expect("write");
        w.finish().expect("finish");
        out
    }

    /// The magic bytes may arrive one network read at a time.
    #[test]
    fn containers_open_whatever_the_first_read_holds() {
        let content = b"\"A\";\"B\"\r\n".repeat(100);
        for (container, body) in [
            (Container::Zip, zip(&content)),
            (Container::Gzip, gzip(&content)),
        ] {
            for piece in [1, 2, 3, 5] {
                let mut decoded = Decoded::open(container, channel(&body, piece))
                    .unwrap_or_else(|e| panic!("{container:?} in {piece}-byte reads: {e}"));
                let mut out = Vec::new();
                decoded.read_to_end(&mut out).expect("read");
                decoded.finish().expect("finish");
                assert_eq!(out, content);
            }
        }
        for piece in [1, 3] {
            let e = Decoded::open(Container::Zip, channel(b"<html>oops</html>", piece))
                .err()
                .expect("not a zip");
            let found = find_decode_error(&e).expect("decode error").to_string();
            assert!(found.contains("<htm"), "{found}");
        }
    }

    /// Lines before an over-long record are delivered before the error, and
    /// the error names the record's first byte.
    #[test]
    fn the_record_cap_hands_over_the_lines_before_it() {
        let mut body = b"ab\ncd\n".to_vec();
        body.extend_from_slice(&[b'x'; 40]);
        for piece in [1, 4, 64] {
            let mut limited = Limited::new(channel(&body, piece), 1 << 20, 16);
            let mut out = Vec::new();
            let mut buf = [0u8; 64];
            let error = loop {
                match limited.read(&mut buf) {
                    Ok(0) => panic!("no error"),
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => break e,
                }
            };
            assert!(out.starts_with(b"ab\ncd\n"), "{piece}: {out:?}");
            match find_decode_error(&error) {
                Some(DecodeError::RecordTooLarge { offset, .. }) => assert_eq!(*offset, 6),
                other => panic!("{other:?}"),
            }
        }
    }
}
