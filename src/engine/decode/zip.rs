//! Streaming reader for a single-entry ZIP archive, as the Portal publishes
//! them. Reads the local header, inflates the entry while counting its CRC-32
//! and sizes, then checks the data descriptor, the central directory (exactly
//! one entry, same CRC and sizes) and the end record, so a truncated or
//! tampered archive fails instead of yielding a short file. Sizes are counted
//! on the output, never trusted from headers. ZIP64 sizes are understood.

use std::io::{self, BufRead, Read};

use flate2::bufread::DeflateDecoder;

use super::DecodeError;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;

const FLAG_ENCRYPTED: u16 = 1;
const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;

/// Counts the bytes its consumer takes from the inner [`BufRead`].
struct Counting<R> {
    inner: R,
    consumed: u64,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.consumed += amt as u64;
        self.inner.consume(amt);
    }
}

enum Body<R: BufRead> {
    Deflate(DeflateDecoder<Counting<R>>),
    Stored(io::Take<Counting<R>>),
}

struct LocalHeader {
    flags: u16,
    crc32: u32,
    compressed: u64,
    uncompressed: u64,
    zip64: bool,
}

pub(crate) struct ZipStream<R: BufRead> {
    body: Body<R>,
    header: LocalHeader,
    name: String,
    crc: crc32fast::Hasher,
    produced: u64,
}

fn truncated(what: &str) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            DecodeError::Truncated(format!("the body ends inside the {what}")).into()
        } else {
            e
        }
    }
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_le_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads ZIP64 sizes from an extra field when the 32-bit ones are saturated.
fn zip64_sizes(extra: &[u8], uncompressed: &mut u64, compressed: &mut u64) -> bool {
    let mut rest = extra;
    while rest.len() >= 4 {
        let id = u16::from_le_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
        let data = &rest[4..(4 + len).min(rest.len())];
        if id == 0x0001 {
            let mut fields = data.chunks_exact(8).map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            });
            if *uncompressed == u64::from(u32::MAX) {
                if let Some(v) = fields.next() {
                    *uncompressed = v;
                }
            }
            if *compressed == u64::from(u32::MAX) {
                if let Some(v) = fields.next() {
                    *compressed = v;
                }
            }
            return true;
        }
        rest = &rest[(4 + len).min(rest.len())..];
    }
    false
}

impl<R: BufRead> ZipStream<R> {
    /// Reads the local header of the first entry.
    pub(crate) fn open(mut input: R) -> io::Result<Self> {
        // The signature may arrive split over several network reads.
        let (magic, got) = super::read_magic::<4>(&mut input)?;
        if magic != *b"PK\x03\x04" {
            return Err(DecodeError::WrongContainer {
                expected: "ZIP",
                found: super::describe_magic(&magic[..got], &mut input),
            }
            .into());
        }
        let what = truncated("local file header");
        let _version = read_u16(&mut input).map_err(&what)?;
        let flags = read_u16(&mut input).map_err(&what)?;
        let method = read_u16(&mut input).map_err(&what)?;
        let _time = read_u32(&mut input).map_err(&what)?;
        let crc32 = read_u32(&mut input).map_err(&what)?;
        let mut compressed = u64::from(read_u32(&mut input).map_err(&what)?);
        let mut uncompressed = u64::from(read_u32(&mut input).map_err(&what)?);
        let name_len = read_u16(&mut input).map_err(&what)?;
        let extra_len = read_u16(&mut input).map_err(&what)?;
        let mut name = vec![0; usize::from(name_len)];
        input.read_exact(&mut name).map_err(&what)?;
        let mut extra = vec![0; usize::from(extra_len)];
        input.read_exact(&mut extra).map_err(&what)?;
        let zip64 = zip64_sizes(&extra, &mut uncompressed, &mut compressed);
        let name = String::from_utf8_lossy(&name).into_owned();
        if flags & FLAG_ENCRYPTED != 0 {
            return Err(DecodeError::Unsupported(format!("entry {name:?} is encrypted")).into());
        }
        let counting = Counting {
            inner: input,
            consumed: 0,
        };
        let body = match method {
            8 => Body::Deflate(DeflateDecoder::new(counting)),
            0 if flags & FLAG_DATA_DESCRIPTOR == 0 => Body::Stored(counting.take(compressed)),
            0 => {
                return Err(DecodeError::Unsupported(format!(
                    "entry {name:?} is stored with a data descriptor (its length is unknown)"
                ))
                .into());
            }
            other => {
                return Err(DecodeError::Unsupported(format!(
                    "entry {name:?} uses compression method {other} (only deflate and stored are supported)"
                ))
                .into());
            }
        };
        Ok(ZipStream {
            body,
            header: LocalHeader {
                flags,
                crc32,
                compressed,
                uncompressed,
                zip64,
            },
            name,
            crc: crc32fast::Hasher::new(),
            produced: 0,
        })
    }

    pub(crate) fn entry_name(&self) -> &str {
        &self.name
    }

    /// Checks the entry's trailer, the central directory and the end record.
    /// Call once `read` has returned 0.
    pub(crate) fn finish(self) -> io::Result<()> {
        let ZipStream {
            body,
            header,
            name,
            crc,
            produced,
        } = self;
        let crc = crc.finalize();
        let (mut input, consumed) = match body {
            Body::Deflate(d) => {
                let c = d.into_inner();
                (c.inner, c.consumed)
            }
            Body::Stored(t) => {
                let c = t.into_inner();
                (c.inner, c.consumed)
            }
        };
        let (mut expected_crc, mut expected_compressed, mut expected_size) =
            (header.crc32, header.compressed, header.uncompressed);
        if header.flags & FLAG_DATA_DESCRIPTOR != 0 {
            let what = truncated("data descriptor");
            let mut first = read_u32(&mut input).map_err(&what)?;
            if first == DATA_DESCRIPTOR {
                first = read_u32(&mut input).map_err(&what)?;
            }
            expected_crc = first;
            if header.zip64 {
                expected_compressed = read_u64(&mut input).map_err(&what)?;
                expected_size = read_u64(&mut input).map_err(&what)?;
            } else {
                expected_compressed = u64::from(read_u32(&mut input).map_err(&what)?);
                expected_size = u64::from(read_u32(&mut input).map_err(&what)?);
            }
        }
        let wrap32 = |v: u64| if header.zip64 { v } else { v & 0xffff_ffff };
        // The whole entry and its sizes were read: a mismatch is damaged
        // data, not a short body (that ends the deflate stream early).
        if wrap32(produced) != expected_size || consumed != expected_compressed {
            return Err(DecodeError::Corrupt(format!(
                "entry {name:?}: inflated {produced} bytes from {consumed}, the archive declares {expected_size} from {expected_compressed}"
            ))
            .into());
        }
        if crc != expected_crc {
            return Err(DecodeError::Corrupt(format!(
                "entry {name:?}: CRC-32 {crc:08x} does not match the declared {expected_crc:08x}"
            ))
            .into());
        }
        // Central directory: exactly one entry, agreeing with what we read.
        let what = truncated("central directory");
        let signature = read_u32(&mut input).map_err(&what)?;
        if signature == LOCAL_HEADER {
            return Err(DecodeError::Unsupported(format!(
                "the archive holds more than one file (expected only {name:?})"
            ))
            .into());
        }
        if signature != CENTRAL_HEADER {
            return Err(DecodeError::Corrupt(format!(
                "expected the central directory after entry {name:?}, found signature {signature:08x}"
            ))
            .into());
        }
        let mut fixed = [0u8; 42];
        input.read_exact(&mut fixed).map_err(&what)?;
        let cd_crc = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
        let mut cd_compressed = u64::from(u32::from_le_bytes([
            fixed[16], fixed[17], fixed[18], fixed[19],
        ]));
        let mut cd_size = u64::from(u32::from_le_bytes([
            fixed[20], fixed[21], fixed[22], fixed[23],
        ]));
        let name_len = u16::from_le_bytes([fixed[24], fixed[25]]);
        let extra_len = u16::from_le_bytes([fixed[26], fixed[27]]);
        let comment_len = u16::from_le_bytes([fixed[28], fixed[29]]);
        let mut cd_name = vec![0; usize::from(name_len)];
        input.read_exact(&mut cd_name).map_err(&what)?;
        let mut extra = vec![0; usize::from(extra_len)];
        input.read_exact(&mut extra).map_err(&what)?;
        zip64_sizes(&extra, &mut cd_size, &mut cd_compressed);
        skip(&mut input, u64::from(comment_len)).map_err(&what)?;
        if cd_crc != crc
            || cd_size != produced
            || cd_compressed != consumed
            || cd_name != name.as_bytes()
        {
            return Err(DecodeError::Corrupt(format!(
                "the central directory does not match entry {name:?} (CRC, sizes or name differ)"
            ))
            .into());
        }
        // End records.
        let what = truncated("end of central directory");
        loop {
            let signature = read_u32(&mut input).map_err(&what)?;
            match signature {
                CENTRAL_HEADER => {
                    return Err(DecodeError::Unsupported(
                        "the central directory lists more than one file".into(),
                    )
                    .into());
                }
                ZIP64_END => {
                    let size = read_u64(&mut input).map_err(&what)?;
                    skip(&mut input, size).map_err(&what)?;
                }
                ZIP64_LOCATOR => skip(&mut input, 16).map_err(&what)?,
                END_OF_CENTRAL_DIRECTORY => {
                    let mut fixed = [0u8; 18];
                    input.read_exact(&mut fixed).map_err(&what)?;
                    let entries = u16::from_le_bytes([fixed[6], fixed[7]]);
                    let comment_len = u16::from_le_bytes([fixed[16], fixed[17]]);
                    skip(&mut input, u64::from(comment_len)).map_err(&what)?;
                    if entries != 1 && entries != u16::MAX {
                        return Err(DecodeError::Unsupported(format!(
                            "the archive declares {entries} files (expected one)"
                        ))
                        .into());
                    }
                    break;
                }
                other => {
                    return Err(DecodeError::Corrupt(format!(
                        "unexpected record {other:08x} in the central directory"
                    ))
                    .into());
                }
            }
        }
        if !input.fill_buf()?.is_empty() {
            return Err(DecodeError::Corrupt(
                "unexpected bytes after the end of the archive".into(),
            )
            .into());
        }
        Ok(())
    }
}

impl<R: BufRead> Read for ZipStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.body {
            Body::Deflate(d) => d.read(buf).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof || e.to_string().contains("incomplete")
                {
                    io::Error::from(DecodeError::Truncated(format!(
                        "entry {:?}: the deflate stream ends early ({e})",
                        self.name
                    )))
                } else if super::find_decode_error(&e).is_some()
                    || e.kind() == io::ErrorKind::Other && e.get_ref().is_some()
                {
                    e
                } else {
                    io::Error::from(DecodeError::Corrupt(format!(
                        "entry {:?}: invalid deflate data ({e})",
                        self.name
                    )))
                }
            })?,
            Body::Stored(s) => s.read(buf)?,
        };
        self.crc.update(&buf[..n]);
        self.produced += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn archive(content: &[u8], entries: usize) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = ::zip::ZipWriter::new(io::Cursor::new(&mut out));
            let options = ::zip::write::SimpleFileOptions::default()
                .compression_method(::zip::CompressionMethod::Deflated);
            for i in 0..entries {
                w.start_file(format!("f{i}.csv"), options).expect("start");
                w.write_all(content).expect("write");
            }
            w.finish().expect("finish");
        }
        out
    }

    fn read_all(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut z = ZipStream::open(io::BufReader::with_capacity(7, bytes))?;
        let mut out = Vec::new();
        z.read_to_end(&mut out)?;
        z.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trip() {
        let content = b"\"A\";\"B\"\r\n\"1\";\"2\"\r\n".repeat(1000);
        assert_eq!(read_all(&archive(&content, 1)).expect("valid"), content);
    }

    #[test]
    fn every_truncation_fails() {
        let content = b"\"A\";\"B\"\r\n\"1\";\"2\"\r\n".repeat(200);
        let zip = archive(&content, 1);
        for cut in 1..zip.len() {
            assert!(
                read_all(&zip[..cut]).is_err(),
                "cut at {cut} of {} passed",
                zip.len()
            );
        }
    }

    #[test]
    fn flipped_bytes_fail() {
        let content = b"\"A\";\"B\"\r\n\"1\";\"2\"\r\n".repeat(200);
        let zip = archive(&content, 1);
        for i in (0..zip.len()).step_by(7) {
            let mut bad = zip.clone();
            bad[i] ^= 0x55;
            if let Ok(out) = read_all(&bad) {
                assert_eq!(
                    out, content,
                    "byte {i} flipped changed the content silently"
                );
            }
        }
    }

    #[test]
    fn two_entries_fail() {
        let err = read_all(&archive(b"x\n", 2)).expect_err("two entries");
        assert!(err.to_string().contains("more than one"), "{err}");
    }

    #[test]
    fn html_is_not_a_zip() {
        let err = read_all(b"<html><body>error</body></html>").expect_err("html");
        assert!(err.to_string().contains("not a ZIP"), "{err}");
    }
}
