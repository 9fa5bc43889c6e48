//! Micro-benchmark of the record reader against the `csv` crate on the same
//! bytes, in one run (the machines are noisy: compare the ratio).
//!
//!   cargo run --release --example read_records -- bench/work/5000000_NovoBolsaFamilia.csv
//!
//! (`bench/run.sh` leaves that unzipped CSV behind when pgloader runs.)

use std::io::Read;
use std::time::Instant;

use carga::engine::parse::records::{Fields, RecordReader};

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| std::io::Error::other("usage: read_records FILE.csv"))?;
    let mut data = Vec::new();
    std::fs::File::open(&path)?.read_to_end(&mut data)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_fields, mut their_fields) = (0usize, 0usize);
    for _ in 0..3 {
        let started = Instant::now();
        let mut reader = RecordReader::new(&data[..], b';');
        our_fields = 0;
        while let Some(record) = reader.next_record()? {
            our_fields += record.len();
        }
        ours.push(started.elapsed().as_secs_f64());

        let started = Instant::now();
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b';')
            .has_headers(false)
            .flexible(true)
            .from_reader(&data[..]);
        let mut record = csv::ByteRecord::new();
        their_fields = 0;
        while reader.read_byte_record(&mut record)? {
            their_fields += record.len();
        }
        theirs.push(started.elapsed().as_secs_f64());
    }
    assert_eq!(
        our_fields, their_fields,
        "both readers must see the same fields"
    );
    let mb = data.len() as f64 / 1e6;
    let (ours, theirs) = (median(ours), median(theirs));
    println!("{:<24} {:>9} {:>8} {:>9}", "reader", "fields", "s", "MB/s");
    println!(
        "{:<24} {:>9} {:>8.3} {:>9.0}",
        "carga RecordReader",
        our_fields,
        ours,
        mb / ours
    );
    println!(
        "{:<24} {:>9} {:>8.3} {:>9.0}",
        "csv::Reader (byte)",
        their_fields,
        theirs,
        mb / theirs
    );
    println!("ratio: carga is {:.2}x the csv crate", theirs / ours);
    Ok(())
}
