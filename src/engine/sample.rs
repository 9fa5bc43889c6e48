//! A deterministic generator of Portal-format payment files (no real person
//! in them): Latin-1, fully quoted `;` fields, CRLF, decimal comma with
//! thousands dots, real SIAFI codes from the shipped municipality list,
//! repeated NIS (several parcels, retroactive competências), empty CPFs and
//! negative values. Used by `carga demo` and the benchmark, which also asks
//! for the same rows as an already-clean CSV.

use crate::money::format_brl;
use std::io::{self, Seek, Write};

use crate::dataset::Period;
use crate::engine::snapshot::reference;

/// Novo Bolsa Família's header, as the Portal writes it (Windows-1252).
pub const NBF_HEADER: &[u8] = b"\"M\xcaS COMPET\xcaNCIA\";\"M\xcaS REFER\xcaNCIA\";\"UF\";\"C\xd3DIGO MUNIC\xcdPIO SIAFI\";\"NOME MUNIC\xcdPIO\";\"CPF FAVORECIDO\";\"NIS FAVORECIDO\";\"NOME FAVORECIDO\";\"VALOR PARCELA\"\r\n";

/// splitmix64: small, fast and deterministic.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[derive(Debug, Clone)]
pub struct Place {
    pub(crate) siafi: String,
    pub(crate) uf: String,
    /// Upper case without accents, as the Portal writes it.
    pub(crate) name: String,
    pub(crate) ibge: u32,
}

/// The shipped municipalities, in file order.
pub fn places() -> Vec<Place> {
    let states = reference::parse_states(reference::ESTADOS_CSV, "estados.csv").unwrap_or_default();
    reference::parse_municipalities(reference::MUNICIPIOS_CSV, "municipios.csv")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let uf = states
                .iter()
                .find(|s| s.ibge_code == m.state_code)?
                .abbreviation
                .clone();
            Some(Place {
                siafi: m.siafi_code?,
                uf,
                name: crate::dataset::header_key(&m.name),
                ibge: m.ibge_code.parse().ok()?,
            })
        })
        .collect()
}

/// One generated payment.
#[derive(Debug, Clone, Copy)]
pub struct Payment {
    pub(crate) competence: u32,
    pub place: usize,
    pub(crate) nis: u64,
    has_cpf: bool,
    pub(crate) cents: i64,
}

/// The generated rows of one period.
pub struct Generator {
    rng: Rng,
    period: Period,
    places: usize,
    row: u64,
    rows: u64,
    recent: [u64; 64],
}

impl Generator {
    pub fn new(seed: u64, period: Period, places: usize, rows: u64) -> Generator {
        Generator {
            rng: Rng::new(seed),
            period,
            places: places.max(1),
            row: 0,
            rows,
            recent: [0; 64],
        }
    }
}

fn previous_month(yyyymm: u32, back: u32) -> u32 {
    let months = (yyyymm / 100) * 12 + (yyyymm % 100 - 1) - back;
    (months / 12) * 100 + months % 12 + 1
}

impl Iterator for Generator {
    type Item = Payment;
    fn next(&mut self) -> Option<Payment> {
        if self.row >= self.rows {
            return None;
        }
        self.row += 1;
        let r = self.rng.below(1000);
        // ~4% a second parcel of a recent person; ~3% of those retroactive
        let repeat = r < 40;
        let nis = if repeat {
            self.recent[self.rng.below(64) as usize]
        } else {
            10_000_000_000 + self.rng.below(89_999_999_999)
        };
        let slot = self.rng.below(64) as usize;
        self.recent[slot] = nis;
        let competence = if repeat && r < 30 {
            previous_month(self.period.yyyymm(), 1 + self.rng.below(6) as u32)
        } else {
            self.period.yyyymm()
        };
        let cents = match self.rng.below(1000) {
            0 => -(self.rng.below(60_000) as i64 + 1),
            1..=100 => 100_000 + self.rng.below(200_000) as i64,
            _ => {
                [60_000, 65_000, 70_000, 75_000, 80_000, 15_000, 5_000][self.rng.below(7) as usize]
            }
        };
        // Skewed (a few big municipalities, a long tail), but every one can
        // appear; the skew is spread over the list by a fixed permutation.
        let a = self.rng.below(self.places as u64);
        let b = self.rng.below(self.places as u64);
        let place = (a.min(b) * 7919 + 13) % self.places as u64;
        Some(Payment {
            competence,
            place: place as usize,
            nis,
            has_cpf: self.rng.below(100) >= 21,
            cents,
        })
    }
}

/// Writes one Portal-format CSV row (Windows-1252 bytes, CRLF).
pub fn write_portal_row(
    out: &mut impl Write,
    p: &Payment,
    place: &Place,
    reference: u32,
) -> io::Result<()> {
    write!(
        out,
        "\"{}\";\"{}\";\"{}\";\"{}\";\"{}\";\"",
        p.competence, reference, place.uf, place.siafi, place.name
    )?;
    if p.has_cpf {
        write!(
            out,
            "***.{:03}.{:03}-**",
            p.nis % 1000,
            (p.nis / 1000) % 1000
        )?;
    }
    write!(out, "\";\"{:011}\";\"", p.nis)?;
    // Synthetic name, with Latin-1 accented bytes as in the real files.
    out.write_all(b"BENEFICI\xc1RIO SINT\xc9TICO ")?;
    write!(out, "{}\";\"{}\"\r\n", p.nis % 100_000, format_brl(p.cents))
}

/// Writes `rows` generated rows as a Portal ZIP (one deflated CSV entry).
/// Returns the number of rows written.
pub fn write_zip<W: Write + Seek>(
    out: W,
    period: Period,
    rows: u64,
    seed: u64,
    entry: &str,
) -> io::Result<u64> {
    let places = places();
    let mut zip = zip::ZipWriter::new(out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(rows > 15_000_000);
    zip.start_file(entry, options).map_err(io::Error::other)?;
    let mut writer = io::BufWriter::with_capacity(1 << 20, &mut zip);
    writer.write_all(NBF_HEADER)?;
    let mut count = 0;
    for p in Generator::new(seed, period, places.len(), rows) {
        write_portal_row(&mut writer, &p, &places[p.place], period.yyyymm())?;
        count += 1;
    }
    writer.flush()?;
    drop(writer);
    zip.finish().map_err(io::Error::other)?;
    Ok(count)
}

/// Writes the same rows as an already-clean CSV (UTF-8, `,`, numeric with a
/// dot, integer codes, ISO dates): the shape a plain `COPY … CSV` loads.
/// Columns: program_id, reference_date, competence_date, municipality_ibge,
/// nis, value.
pub(crate) fn write_clean_csv(
    out: &mut impl Write,
    period: Period,
    rows: u64,
    seed: u64,
) -> io::Result<u64> {
    let places = places();
    let mut count = 0;
    let reference = format!("{}-01", period);
    for p in Generator::new(seed, period, places.len(), rows) {
        let sign = if p.cents < 0 { "-" } else { "" };
        writeln!(
            out,
            "1,{reference},{:04}-{:02}-01,{},{:011},{sign}{}.{:02}",
            p.competence / 100,
            p.competence % 100,
            places[p.place].ibge,
            p.nis,
            p.cents.unsigned_abs() / 100,
            p.cents.unsigned_abs() % 100
        )?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brl_formatting_round_trips() {
        for cents in [0, 5, 60_000, 141_200, 123_456_789, -283_664] {
            let text = format_brl(cents);
            assert_eq!(
                crate::engine::parse::value::brl_comma(text.as_bytes()),
                Some(cents),
                "{text}"
            );
        }
        assert_eq!(format_brl(141_200), "1.412,00");
    }

    #[test]
    fn months_go_back() {
        assert_eq!(previous_month(202401, 1), 202312);
        assert_eq!(previous_month(202410, 6), 202404);
    }

    #[test]
    fn generator_is_deterministic() {
        let p = Period::new(2024, 10).expect("period");
        let a: Vec<u64> = Generator::new(7, p, 100, 50).map(|x| x.nis).collect();
        let b: Vec<u64> = Generator::new(7, p, 100, 50).map(|x| x.nis).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 50);
    }
}
