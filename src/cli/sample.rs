//! `carga sample`: write a generated Portal-format ZIP (and optionally the
//! same rows as a clean CSV) for benchmarks.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use clap::Args;

use super::{CliResult, usage};
use crate::dataset::Period;

#[derive(Debug, Args)]
pub(crate) struct SampleArgs {
    /// Rows to generate.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) rows: u64,
    /// The month the rows belong to, YYYY-MM.
    #[arg(long, default_value = "2024-10")]
    pub(crate) period: String,
    /// Same seed, same rows.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Where to write the Portal ZIP.
    #[arg(long)]
    pub(crate) zip: Option<PathBuf>,
    /// Where to write the clean CSV of the same rows.
    #[arg(long)]
    clean_csv: Option<PathBuf>,
}

pub(crate) fn run(args: SampleArgs) -> CliResult {
    let period =
        Period::parse(&args.period).ok_or_else(|| usage(anyhow!("--period is not YYYY-MM")))?;
    if args.zip.is_none() && args.clean_csv.is_none() {
        return Err(usage(anyhow!(
            "nothing to write: give --zip FILE and/or --clean-csv FILE"
        )));
    }
    if let Some(path) = &args.zip {
        let file = std::fs::File::create(path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        let entry = format!("{:06}_NovoBolsaFamilia.csv", period.yyyymm());
        let n = crate::engine::sample::write_zip(file, period, args.rows, args.seed, &entry)
            .with_context(|| format!("failed to write {}", path.display()))?;
        println!("wrote {n} rows to {}", path.display());
    }
    if let Some(path) = &args.clean_csv {
        let file = std::fs::File::create(path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let n = crate::engine::sample::write_clean_csv(&mut out, period, args.rows, args.seed)
            .with_context(|| format!("failed to write {}", path.display()))?;
        std::io::Write::flush(&mut out).context("failed to flush the clean CSV")?;
        println!("wrote {n} rows to {}", path.display());
    }
    Ok(())
}
