//! CSV records from a byte stream, fast for the shape the Portal's files
//! have and exactly like the `csv` crate for everything else.
//!
//! The Portal quotes every field and never puts a quote or a line break
//! inside one, so a record is `"…";"…";…;"…"` and a line ending. For such a
//! record the reader finds the line end with `memchr`, finds the line's
//! quotes eight bytes at a time (a SWAR byte compare on `u64` words) and
//! hands out the fields as ranges of its own buffer: no state machine
//! stepped per byte, no copy per field. Any record that is not
//! exactly that shape (an unquoted field, a doubled quote, a line break
//! inside quotes, a lone CR, a record longer than the buffer, the last
//! record without a line ending) is handed, from its first byte, to
//! `csv-core` — the parser inside the `csv` crate, configured as that
//! crate's `ReaderBuilder` is with `has_headers(false)` and
//! `flexible(true)` — so the records are the same whatever the input
//! (differential tests below). A leading UTF-8 byte-order mark is skipped,
//! as `csv` does.
//!
//! Positions: `line` is the line the record starts on (1-based, counting
//! line feeds), `byte` the offset of its first byte in the decoded stream,
//! `record` its 0-based index.

use std::io::{self, Read};

use csv::ByteRecord;
use csv_core::ReadRecordResult;

/// The fields of one record, wherever they are stored.
pub trait Fields {
    fn len(&self) -> usize;
    fn get(&self, i: usize) -> Option<&[u8]>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }
    /// False only when no field can hold a NUL byte (lets the caller skip
    /// its per-field scan with one pass over the record).
    fn may_hold_nul(&self) -> bool {
        true
    }
}

impl Fields for ByteRecord {
    fn len(&self) -> usize {
        ByteRecord::len(self)
    }
    fn get(&self, i: usize) -> Option<&[u8]> {
        ByteRecord::get(self, i)
    }
}

/// One record, borrowed from the reader until the next read.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    data: &'a [u8],
    bounds: &'a [(usize, usize)],
    /// The line the record starts on (1-based).
    pub line: u64,
    /// Offset of its first byte in the decoded stream.
    pub byte: u64,
    /// Physical lines it spans: more than 1 only when a quoted field holds
    /// a line break (in the Portal's files, an unbalanced quote).
    pub lines: u64,
    /// Whether a NUL byte may lie in its fields (the reader scans its input
    /// for NUL once, not once per record).
    nul: bool,
}

impl Fields for Record<'_> {
    fn len(&self) -> usize {
        self.bounds.len()
    }
    fn may_hold_nul(&self) -> bool {
        self.nul
    }
    fn get(&self, i: usize) -> Option<&[u8]> {
        let &(from, to) = self.bounds.get(i)?;
        self.data.get(from..to)
    }
}

const QUOTES: u64 = 0x2222_2222_2222_2222;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `word` that is a double quote (exact: no
/// false positives, unlike the shorter has-zero-byte trick).
#[inline]
fn quote_mask(word: u64) -> u64 {
    let x = word ^ QUOTES;
    !(((x & LOW7) + LOW7) | x) & HIGH
}

/// Input buffer; a simple record longer than this takes the slow path.
const BUFFER: usize = 1 << 20;

pub struct RecordReader<R> {
    source: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    first_fill: bool,
    delimiter: u8,
    fast: bool,
    core: csv_core::Reader,
    /// Line and stream offset of `buf[start]`.
    line: u64,
    byte: u64,
    out: Vec<u8>,
    ends: Vec<usize>,
    bounds: Vec<(usize, usize)>,
    /// Where the current record's data is: the input buffer or `out`.
    in_out: bool,
    record_line: u64,
    record_byte: u64,
    record_lines: u64,
    /// See [`RecordReader::nul_between`].
    clean_to: usize,
    first_nul: Option<usize>,
}

enum Fast {
    Done,
    NeedMore,
    NotSimple,
}

impl<R: Read> RecordReader<R> {
    pub fn new(source: R, delimiter: u8) -> RecordReader<R> {
        RecordReader {
            source,
            buf: vec![0; BUFFER],
            start: 0,
            end: 0,
            eof: false,
            first_fill: true,
            delimiter,
            fast: !matches!(delimiter, b'"' | b'\r' | b'\n'),
            core: csv_core::ReaderBuilder::new().delimiter(delimiter).build(),
            line: 1,
            byte: 0,
            out: vec![0; 4096],
            ends: vec![0; 64],
            bounds: Vec::with_capacity(64),
            in_out: false,
            record_line: 0,
            record_byte: 0,
            record_lines: 1,
            clean_to: 0,
            first_nul: None,
        }
    }

    /// Where the reader is: (line, byte offset). For errors.
    pub fn position(&self) -> (u64, u64) {
        (self.line, self.byte)
    }

    /// The next record, or None at the end of the stream.
    pub fn next_record(&mut self) -> io::Result<Option<Record<'_>>> {
        if self.advance()? {
            let nul = match (self.in_out, self.bounds.first(), self.bounds.last()) {
                (false, Some(&(from, _)), Some(&(_, to))) => self.nul_between(from, to),
                (false, _, _) => false,
                (true, _, _) => true,
            };
            Ok(Some(Record {
                nul,
                data: if self.in_out { &self.out } else { &self.buf },
                bounds: &self.bounds,
                line: self.record_line,
                byte: self.record_byte,
                lines: self.record_lines,
            }))
        } else {
            Ok(None)
        }
    }

    /// Whether `buf[from..to]` holds a NUL. The buffer is scanned once:
    /// `buf[..clean_to]` is known to hold none (from where it matters), and
    /// `first_nul` is the next one found after it.
    fn nul_between(&mut self, from: usize, to: usize) -> bool {
        loop {
            if let Some(at) = self.first_nul {
                if at >= from {
                    return at < to;
                }
                // Behind us (a rejected record's): look past it.
                self.first_nul = None;
                self.clean_to = at + 1;
            }
            self.clean_to = self.clean_to.max(from);
            if self.clean_to >= to {
                return false;
            }
            let rest = self.buf.get(self.clean_to..self.end).unwrap_or(&[]);
            match memchr::memchr(0, rest) {
                Some(i) => self.first_nul = Some(self.clean_to + i),
                None => {
                    self.clean_to = self.end;
                    return false;
                }
            }
        }
    }

    /// Finds the next record and leaves its fields in `bounds`.
    fn advance(&mut self) -> io::Result<bool> {
        loop {
            self.skip_terminators();
            if self.start == self.end {
                if self.eof {
                    return Ok(false);
                }
                self.fill()?;
                continue;
            }
            if self.fast && self.buf.get(self.start) == Some(&b'"') {
                match self.fast_record() {
                    Fast::Done => return Ok(true),
                    Fast::NeedMore if !self.eof && !self.buffer_full() => {
                        self.fill()?;
                        continue;
                    }
                    Fast::NeedMore | Fast::NotSimple => {}
                }
            }
            return self.slow_record();
        }
    }

    /// A record fills the whole buffer: only csv-core can take it.
    fn buffer_full(&self) -> bool {
        self.start == 0 && self.end == BUFFER
    }

    /// Blank lines between records are skipped, as csv-core does.
    fn skip_terminators(&mut self) {
        while let Some(&b) = self.buf.get(self.start).filter(|_| self.start < self.end) {
            if b != b'\n' && b != b'\r' {
                break;
            }
            self.line += u64::from(b == b'\n');
            self.start += 1;
            self.byte += 1;
        }
    }

    /// Moves the unread bytes to the front and reads more after them.
    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.clean_to = self.clean_to.saturating_sub(self.start);
            self.first_nul = self.first_nul.and_then(|at| at.checked_sub(self.start));
            self.start = 0;
        }
        while let Some(space) = self.buf.get_mut(self.end..).filter(|s| !s.is_empty()) {
            match self.source.read(space) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // The byte-order mark is only recognised whole.
            if !(self.first_fill && self.end < 3) {
                break;
            }
        }
        if self.first_fill {
            self.first_fill = false;
            if self
                .buf
                .get(..self.end)
                .is_some_and(|b| b.starts_with(b"\xef\xbb\xbf"))
            {
                self.start = 3;
                self.byte = 3;
            }
        }
        Ok(())
    }

    /// `"…";"…";…;"…"` then LF or CRLF, wholly in the buffer.
    fn fast_record(&mut self) -> Fast {
        let data = self.buf.get(self.start..self.end).unwrap_or(&[]);
        let Some(newline) = memchr::memchr(b'\n', data) else {
            return Fast::NeedMore;
        };
        let line = data.get(..newline).unwrap_or(&[]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.bounds.clear();
        // Quotes alternate open, close; an open quote is the line's first
        // byte or follows a close quote and the delimiter.
        let mut open: Option<usize> = None;
        let mut last_close: Option<usize> = None;
        let mut simple = true;
        let mut visit = |q: usize, bounds: &mut Vec<(usize, usize)>| match open.take() {
            None => {
                let placed = match last_close {
                    None => q == 0,
                    Some(c) => q == c + 2 && line.get(c + 1) == Some(&self.delimiter),
                };
                simple &= placed;
                open = Some(q);
            }
            Some(o) => {
                bounds.push((self.start + o + 1, self.start + q));
                last_close = Some(q);
            }
        };
        // Each word's quotes, lowest first; the tail is zero-padded (a zero
        // byte is not a quote).
        let mut scan = |bytes: [u8; 8], base: usize, bounds: &mut Vec<(usize, usize)>| {
            let mut mask = quote_mask(u64::from_le_bytes(bytes));
            while mask != 0 {
                visit(base + (mask.trailing_zeros() / 8) as usize, bounds);
                mask &= mask - 1;
            }
        };
        let mut words = line.chunks_exact(8);
        let mut base = 0;
        for word in words.by_ref() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            scan(bytes, base, &mut self.bounds);
            base += 8;
        }
        let tail = words.remainder();
        let mut bytes = [0u8; 8];
        if let Some(head) = bytes.get_mut(..tail.len()) {
            head.copy_from_slice(tail);
        }
        scan(bytes, base, &mut self.bounds);
        let closed = open.is_none() && last_close.is_some_and(|c| c + 1 == line.len());
        if !(simple && closed) {
            return Fast::NotSimple;
        }
        self.in_out = false;
        self.record_line = self.line;
        self.record_byte = self.byte;
        self.record_lines = 1;
        let consumed = newline + 1;
        self.start += consumed;
        self.byte += consumed as u64;
        self.line += 1;
        Fast::Done
    }

    /// One record through csv-core, from its first byte.
    fn slow_record(&mut self) -> io::Result<bool> {
        self.core.reset();
        let (line, byte) = (self.line, self.byte);
        let (mut out_len, mut nends) = (0, 0);
        // Line feeds consumed, and whether the last byte consumed was one
        // (the record's own terminator, not a line break inside it).
        let (mut newlines, mut ends_with_newline) = (0u64, false);
        loop {
            if self.start == self.end && !self.eof {
                self.fill()?;
            }
            let input = self.buf.get(self.start..self.end).unwrap_or(&[]);
            let out = self.out.get_mut(out_len..).unwrap_or(&mut []);
            let ends = self.ends.get_mut(nends..).unwrap_or(&mut []);
            let (result, nin, nout, nend) = self.core.read_record(input, out, ends);
            let read = input.get(..nin).unwrap_or(&[]);
            let feeds = memchr::memchr_iter(b'\n', read).count() as u64;
            self.line += feeds;
            newlines += feeds;
            if let Some(&last) = read.last() {
                ends_with_newline = last == b'\n';
            }
            self.start += nin;
            self.byte += nin as u64;
            out_len += nout;
            nends += nend;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    let len = self.out.len() * 2;
                    self.out.resize(len, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len() * 2;
                    self.ends.resize(len, 0);
                }
                ReadRecordResult::Record => {
                    self.bounds.clear();
                    let mut from = 0;
                    for &to in self.ends.get(..nends).unwrap_or(&[]) {
                        self.bounds.push((from, to));
                        from = to;
                    }
                    self.in_out = true;
                    self.record_line = line;
                    self.record_byte = byte;
                    self.record_lines = 1 + newlines - u64::from(ends_with_newline && newlines > 0);
                    return Ok(true);
                }
                ReadRecordResult::End => return Ok(false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sample::Rng;

    /// Reads in pieces of at most `piece` bytes, to cut records anywhere.
    struct Pieces<'a> {
        data: &'a [u8],
        piece: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.piece.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn ours(data: &[u8], piece: usize) -> Vec<(Vec<Vec<u8>>, u64, u64)> {
        let mut reader = RecordReader::new(Pieces { data, piece }, b';');
        let mut all = Vec::new();
        while let Some(record) = reader.next_record().expect("read") {
            all.push((
                record.iter().map(<[u8]>::to_vec).collect(),
                record.line,
                record.byte,
            ));
        }
        all
    }

    fn theirs(data: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b';')
            .has_headers(false)
            .flexible(true)
            .from_reader(data);
        let mut record = ByteRecord::new();
        let mut all = Vec::new();
        while reader.read_byte_record(&mut record).expect("csv") {
            all.push(record.iter().map(<[u8]>::to_vec).collect());
        }
        all
    }

    fn fields(records: &[(Vec<Vec<u8>>, u64, u64)]) -> Vec<Vec<Vec<u8>>> {
        records.iter().map(|r| r.0.clone()).collect()
    }

    #[test]
    fn portal_records_with_lines_and_offsets() {
        let data = b"\xef\xbb\xbf\"A\";\"B\"\r\n\"1\";\"x y\"\r\n\r\n\"2\";\"\"\r\n";
        let got = ours(data, 1);
        assert_eq!(
            got,
            vec![
                (vec![b"A".to_vec(), b"B".to_vec()], 1, 3),
                (vec![b"1".to_vec(), b"x y".to_vec()], 2, 12),
                (vec![b"2".to_vec(), b"".to_vec()], 4, 25),
            ]
        );
    }

    #[test]
    fn odd_records_go_through_csv_core_and_keep_their_lines() {
        let data = b"\"a\";\"b\"\n\"say \"\"hi\"\"\";x\n\"multi\nline\";\"z\"\n\"c\";\"d\"\nlast;no;newline";
        let got = ours(data, 3);
        assert_eq!(fields(&got), theirs(data));
        let lines: Vec<u64> = got.iter().map(|r| r.1).collect();
        assert_eq!(lines, vec![1, 2, 3, 5, 6]);
    }

    /// Random mixes of every shape csv accepts, read in random piece sizes:
    /// the same records as the `csv` crate.
    #[test]
    fn same_records_as_the_csv_crate_on_random_input() {
        let mut rng = Rng::new(42);
        let alphabet: &[u8] = b"ab ;\"\r\n,\xca";
        for round in 0..3000 {
            let mut data = Vec::new();
            let mostly_portal = round % 2 == 0;
            for _ in 0..rng.below(12) {
                let fields = 1 + rng.below(5);
                for f in 0..fields {
                    if f > 0 {
                        data.push(b';');
                    }
                    let len = rng.below(6) as usize;
                    if mostly_portal && rng.below(10) > 0 {
                        data.push(b'"');
                        for _ in 0..len {
                            data.push(b"abc 1,\xca"[rng.below(7) as usize]);
                        }
                        data.push(b'"');
                    } else {
                        for _ in 0..len {
                            data.push(alphabet[rng.below(alphabet.len() as u64) as usize]);
                        }
                    }
                }
                match rng.below(4) {
                    0 => data.extend_from_slice(b"\r\n"),
                    1 => data.push(b'\n'),
                    2 => data.push(b'\r'),
                    _ => {}
                }
            }
            let piece = 1 + rng.below(20) as usize;
            assert_eq!(
                fields(&ours(&data, piece)),
                theirs(&data),
                "input {:?}",
                String::from_utf8_lossy(&data)
            );
        }
    }

    #[test]
    fn a_record_longer_than_the_buffer_is_read_whole() {
        let mut data = b"\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', BUFFER + 10));
        data.extend_from_slice(b"\";\"y\"\r\n\"z\"\r\n");
        let got = ours(&data, 100_000);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0[0].len(), BUFFER + 10);
        assert_eq!(got[1], (vec![b"z".to_vec()], 2, data.len() as u64 - 5));
    }

    #[test]
    fn errors_from_the_source_are_returned() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("cut"))
            }
        }
        let mut reader = RecordReader::new(Broken, b';');
        let err = reader.next_record().expect_err("error");
        assert_eq!(err.to_string(), "cut");
    }
}

#[cfg(test)]
mod nul_tests {
    use super::*;

    /// The reader's one-pass NUL tracking agrees with scanning each record,
    /// whatever the read sizes, with NULs anywhere (several per buffer, at
    /// record edges, none at all).
    #[test]
    fn nul_tracking_matches_a_scan_of_each_record() {
        let mut rng = crate::engine::sample::Rng::new(9);
        for round in 0..200 {
            let mut data = Vec::new();
            let mut expected = Vec::new();
            let rows = 1 + rng.below(300) as usize;
            for _ in 0..rows {
                let mut has = false;
                let fields = 1 + rng.below(5) as usize;
                for f in 0..fields {
                    if f > 0 {
                        data.push(b';');
                    }
                    data.push(b'"');
                    for _ in 0..rng.below(12) {
                        let nul = round % 3 != 0 && rng.below(40) == 0;
                        has |= nul;
                        data.push(if nul { 0 } else { b'a' + rng.below(26) as u8 });
                    }
                    data.push(b'"');
                }
                data.extend_from_slice(b"\r\n");
                expected.push(has);
            }
            let piece = 1 + rng.below(64) as usize;
            let mut reader = RecordReader::new(tests_support::Pieces { data: &data, piece }, b';');
            let mut seen = Vec::new();
            while let Some(record) = reader.next_record().expect("read") {
                seen.push(record.may_hold_nul());
            }
            assert_eq!(seen, expected, "round {round}, pieces of {piece}");
        }
    }
}

#[cfg(test)]
mod tests_support {
    use std::io::{self, Read};

    /// Reads in pieces of at most `piece` bytes.
    pub struct Pieces<'a> {
        pub data: &'a [u8],
        pub piece: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.piece.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }
}
