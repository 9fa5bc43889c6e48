//! The root cause wins, whatever the timing. A failing stage makes its
//! neighbours fail in turn (the download's "reader stopped", the parser's
//! "COPY stream stopped"); on a file larger than the channel buffers which
//! of those errors arrives first is a matter of scheduling. Each fault here
//! is served as a file of several MB over real loopback HTTP (and from a
//! local path) and loaded many times: every run must report the real error,
//! in the error, its code and the ledger.

use crate::common;

use std::io::Write;

use carga::dataset::{self, Period};
use carga::engine::source::Progress;
use common::{TestApp, zip_bytes};

/// Runs of each fault: enough to catch a race that lost about half the time.
const RUNS: usize = 8;

/// A valid Portal CSV of `rows` generated rows (Windows-1252, CRLF).
fn big_csv(rows: u64) -> Vec<u8> {
    let period = Period::new(2024, 10).expect("period");
    let places = carga::engine::sample::places();
    let mut out = Vec::with_capacity(rows as usize * 120);
    out.extend_from_slice(carga::engine::sample::NBF_HEADER);
    for p in carga::engine::sample::Generator::new(11, period, places.len(), rows) {
        carga::engine::sample::write_portal_row(&mut out, &p, &places[p.place], period.yyyymm())
            .expect("row");
    }
    out
}

/// Offset of the first byte of 1-based `line`.
fn line_start(csv: &[u8], line: usize) -> usize {
    csv.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(line - 2)
        .map(|(i, _)| i + 1)
        .expect("line exists")
}

struct Fault {
    name: &'static str,
    body: Vec<u8>,
    code: &'static str,
    /// Text the message must contain.
    says: &'static str,
}

fn faults() -> Vec<Fault> {
    let csv = big_csv(150_000);
    let header_end = line_start(&csv, 2);
    // The header without its last column ("VALOR PARCELA").
    let mut missing = csv.clone();
    let cut = missing[..header_end]
        .iter()
        .rposition(|b| *b == b';')
        .expect("a delimiter");
    missing.splice(cut..header_end - 2, std::iter::empty());
    // Line 1001's first field made 100 kB long (the cap is 64 KiB).
    let mut long = csv.clone();
    let at = line_start(&long, 1001) + 1;
    long.splice(at..at, std::iter::repeat_n(b'7', 100_000));
    // The header line itself 100 kB long: it is read before the record
    // reader starts (it picks the layout), and must fail the same way.
    let mut long_header = csv.clone();
    long_header.splice(1..1, std::iter::repeat_n(b'M', 100_000));
    let zipped = zip_bytes("202410_NovoBolsaFamilia.csv", &csv);
    assert!(zipped.len() > 3_000_000, "{} bytes", zipped.len());
    let mut encrypted = zipped.clone();
    encrypted[6] |= 1; // general-purpose flag bit 0: encrypted
    let mut corrupt = zipped.clone();
    let middle = corrupt.len() / 3;
    for b in &mut corrupt[middle..middle + 64] {
        *b ^= 0x5a;
    }
    // Damage in the deflate stream's first bytes, inside the header line
    // (the local header is 30 bytes and the entry's 27-byte name).
    let mut corrupt_start = zipped.clone();
    for b in &mut corrupt_start[60..124] {
        *b ^= 0x5a;
    }
    vec![
        Fault {
            name: "missing-column.zip",
            body: zip_bytes("202410_NovoBolsaFamilia.csv", &missing),
            code: "csv_header_mismatch",
            says: "VALOR PARCELA",
        },
        Fault {
            name: "long-record.zip",
            body: zip_bytes("202410_NovoBolsaFamilia.csv", &long),
            code: "record_too_large",
            says: "line 1001",
        },
        Fault {
            name: "long-header.zip",
            body: zip_bytes("202410_NovoBolsaFamilia.csv", &long_header),
            code: "record_too_large",
            says: "line 1",
        },
        Fault {
            name: "corrupt-start.zip",
            body: corrupt_start,
            code: "archive_corrupt",
            says: "archive corrupt",
        },
        Fault {
            name: "not-a-zip.zip",
            body: csv,
            code: "unexpected_content",
            says: "not a ZIP archive",
        },
        Fault {
            name: "encrypted.zip",
            body: encrypted,
            code: "archive_unsupported",
            says: "encrypted",
        },
        Fault {
            name: "corrupt.zip",
            body: corrupt,
            code: "archive_corrupt",
            says: "archive corrupt",
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_failure_is_reported_every_time() {
    let mut app = TestApp::new().await;
    let faults = faults();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for fault in &faults {
        let path = dir.path().join(fault.name);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&fault.body))
            .expect("write");
        files.push((fault.name, fault.body.clone()));
    }
    let urls = app.serve(files).await;
    let spec = dataset::find(&app.ctx.settings.load.jobs_dir, "novo-bolsa-familia").expect("spec");
    for fault in &faults {
        let local = dir.path().join(fault.name).display().to_string();
        for (how, location) in [("http", urls[fault.name].as_str()), ("path", &local)] {
            for run in 0..RUNS {
                let err = app
                    .load("novo-bolsa-familia", "2024-10", location, false)
                    .await
                    .expect_err(fault.name);
                let message = err.to_string();
                assert_eq!(
                    err.code(),
                    fault.code,
                    "{} over {how}, run {run}: {message}",
                    fault.name
                );
                assert!(
                    message.contains(fault.says),
                    "{} over {how}, run {run}: {message}",
                    fault.name
                );
                // The ledger says the same.
                let row = app
                    .client()
                    .await
                    .query_one(
                        "SELECT error_code, error FROM carga.loads ORDER BY id DESC LIMIT 1",
                        &[],
                    )
                    .await
                    .expect("ledger");
                let (code, stored): (Option<String>, Option<String>) = (row.get(0), row.get(1));
                assert_eq!(code.as_deref(), Some(fault.code), "{}", fault.name);
                assert!(
                    stored.is_some_and(|s| s.contains(fault.says)),
                    "{}",
                    fault.name
                );
                // `validate` reads the same bytes through the same stages.
                if run % 4 == 0 {
                    let index = carga::engine::load::municipality_index(&**app.client().await)
                        .await
                        .expect("index");
                    let err = carga::engine::pipeline::validate(
                        &app.ctx.settings,
                        &spec,
                        location,
                        index,
                        std::sync::Arc::new(Progress::default()),
                    )
                    .await
                    .expect_err(fault.name);
                    assert_eq!(err.code(), fault.code, "validate {}: {err}", fault.name);
                }
            }
        }
    }
    let stored: i64 = app
        .client()
        .await
        .query_one("SELECT count(*) FROM carga.payments", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 0);
}

/// A quote left open swallows the next line: both lines are named, and
/// both are counted as read and rejected.
#[tokio::test]
async fn an_unbalanced_quote_names_both_lines() {
    let mut app = TestApp::new().await;
    let mut csv = big_csv(2_000);
    // Line 10: drop the closing quote of its last field, so the field runs
    // on through the line break into line 11.
    let end = line_start(&csv, 11) - 3;
    assert_eq!(csv[end], b'"');
    csv.remove(end);
    let urls = app
        .serve(vec![(
            "q.zip",
            zip_bytes("202410_NovoBolsaFamilia.csv", &csv),
        )])
        .await;
    let report = app
        .load("novo-bolsa-familia", "2024-10", &urls["q.zip"], false)
        .await
        .expect("a few rejects are allowed");
    assert_eq!(report.rows_read, 2_000, "every line is counted");
    assert_eq!(report.rows_loaded + report.rows_rejected, 2_000);
    let first = report.rejects.first().expect("a reject");
    assert_eq!(first.line, 10);
    assert!(first.reason.contains("lines 10 to 11"), "{}", first.reason);
}

/// A database error keeps the server's message, SQLSTATE and detail, on
/// one line (the ledger and stderr used to say just "db error").
#[tokio::test]
async fn database_errors_say_what_the_server_said_on_one_line() {
    let app = TestApp::new().await;
    let client = app.client().await;
    let error = client
        .batch_execute(
            "DO $$ BEGIN RAISE EXCEPTION 'first line\nsecond line'
                 USING ERRCODE = '22012', DETAIL = 'some\ndetail'; END $$",
        )
        .await
        .expect_err("raises");
    let text = carga::engine::pipeline::LoadError::from(error).to_string();
    assert_eq!(
        text,
        "database error: first line second line (SQLSTATE 22012); detail: some detail"
    );
}

/// A period outside the spec's bounds (Auxílio Brasil ran 2021-11 to
/// 2023-02) is refused before anything is fetched or written, unless forced.
#[tokio::test]
async fn periods_outside_the_spec_are_refused_unless_forced() {
    let app = TestApp::new().await;
    for (dataset, period) in [
        ("auxilio-brasil", "2024-10"),
        ("novo-bolsa-familia", "2023-02"),
    ] {
        let err = app
            .load(
                dataset,
                period,
                "http://127.0.0.1:9/never-fetched.zip",
                false,
            )
            .await
            .expect_err(dataset);
        assert_eq!(err.code(), "period_out_of_bounds", "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
    }
    let ledger: i64 = app
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM carga.loads WHERE program_code IS NOT NULL",
            &[],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(ledger, 0, "nothing was started");
    // Forced, it goes on to fetch (and here fails on the closed port).
    let err = app
        .load(
            "auxilio-brasil",
            "2024-10",
            "http://127.0.0.1:9/x.zip",
            true,
        )
        .await
        .expect_err("closed port");
    assert_ne!(err.code(), "period_out_of_bounds");
}

/// A damaged entry that inflates to a long run without line breaks trips
/// the record cap before its CRC is checked: the archive's own error is
/// the root cause, not "a record is longer than the limit".
#[tokio::test]
async fn a_damaged_entry_is_reported_as_such_not_as_a_long_record() {
    let mut app = TestApp::new().await;
    let mut csv = carga::engine::sample::NBF_HEADER.to_vec();
    csv.extend(std::iter::repeat_n(b'x', 200_000));
    let mut damaged = zip_bytes("202410_NovoBolsaFamilia.csv", &csv);
    // The entry's CRC-32, in its local header (offset 14) and in the
    // central directory (16 bytes into its record).
    let crc = damaged[14..18].to_vec();
    damaged[14] ^= 0xff;
    let central = damaged
        .windows(4)
        .rposition(|w| w == b"PK\x01\x02")
        .expect("central directory");
    assert_eq!(damaged[central + 16..central + 20], crc[..]);
    damaged[central + 16] ^= 0xff;
    let urls = app.serve(vec![("d.zip", damaged)]).await;
    for _ in 0..4 {
        let err = app
            .load("novo-bolsa-familia", "2024-10", &urls["d.zip"], false)
            .await
            .expect_err("damaged");
        assert_eq!(err.code(), "archive_corrupt", "{err}");
        assert!(err.to_string().contains("CRC-32"), "{err}");
    }
}
