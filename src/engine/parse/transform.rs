//! The hot path: one record → a typed [`PaymentRow`] or a [`RowError`],
//! with the keyed NIS hash and the attribute JSON. Reuses its buffers: no
//! allocation per row. What a refused value's message may quote is
//! `reject.rs`'s decision.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::header::{Figure, Plan};
use super::keyed::KeyedHash;
use super::municipality::MunicipalityIndex;
use super::records::Fields;
use super::reject::{RejectReason, RowError, quotable};
use super::value;
use crate::dataset::{ColumnType, Encoding, Period, Privacy, Spec};

/// One typed payment row. Borrowed attributes live in the transformer's
/// reusable buffer until the next call.
#[derive(Debug, Clone, Copy)]
pub struct PaymentRow<'a> {
    /// Days from 2000-01-01 (PostgreSQL's date), first of the month.
    pub competence_date: Option<i32>,
    pub municipality_id: i32,
    /// Dense index of the municipality (see [`MunicipalityIndex`]).
    pub municipality: u32,
    pub beneficiary_hash: Option<[u8; 16]>,
    pub value_cents: i64,
    /// A JSON object of the kept or hashed attribute columns.
    pub attributes: Option<&'a [u8]>,
}

/// One row of a pre-aggregated file: a municipality's figures for a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TabulatedRow {
    /// `YYYYMM`.
    pub period: u32,
    /// The municipality's database id (0 in a `state_level` file).
    pub municipality_id: i32,
    /// A `state_level` row's state (database id) and key (a CNPJ); 0 else.
    pub state_id: i32,
    pub key: i64,
    /// A `state_level` row's approval, most significant first; the latest
    /// of a (key, period) wins.
    pub version: [i64; 2],
    /// A `state_level` row's part of its approval (a consumption band).
    pub part: i64,
    /// `cadunico_data` figures, by slot of `dataset::CADUNICO_MEASURES`.
    pub measures: [Option<i64>; 10],
    pub beneficiaries: Option<i64>,
    pub families: Option<i64>,
    pub value_cents: Option<i64>,
    /// The record's first line in the file.
    pub line: u64,
}

/// How a month of `column_type` is written, for a reject's reason.
fn month_shape(column_type: ColumnType) -> &'static str {
    match column_type {
        ColumnType::MmYyyy => "month (MM/YYYY)",
        ColumnType::Yyyy => "year (YYYY)",
        _ => "month (YYYYMM)",
    }
}

/// Turns records into rows for one (program, period). Holds the keyed NIS
/// hasher and reusable buffers: no allocation per row.
pub struct Transformer {
    pub(super) plan: Plan,
    pub(super) encoding: Encoding,
    municipalities: MunicipalityIndex,
    period: u32,
    /// `quality.max_payment_brl` in cents: the largest |value| of a row.
    max_payment_cents: i64,
    nis_mac: KeyedHash,
    /// The key again, for the rare hashed attribute longer than one block.
    key_for_long_values: Vec<u8>,
    last_nis: [u8; 11],
    last_hash: [u8; 16],
    /// The last competence month and its day number (most rows repeat it).
    last_month: (u32, i32),
    attributes: Vec<u8>,
    scratch: String,
    /// A `state_level` file's key (CNPJ) → state id, and its table's name.
    places: std::collections::HashMap<u64, i32>,
    places_table: String,
    /// The periods a row of a file of many periods may have.
    periods: Option<crate::dataset::PeriodFilter>,
    /// The period of the tabulated row being read, 0 until it is read.
    row_period: u32,
}

impl Transformer {
    pub fn new(
        plan: Plan,
        spec: &Spec,
        municipalities: MunicipalityIndex,
        period: Option<Period>,
        nis_key: &[u8],
    ) -> Transformer {
        let nis_mac = KeyedHash::new(nis_key);
        let key_for_long_values = nis_key.to_vec();
        Transformer {
            encoding: plan.encoding,
            plan,
            municipalities,
            period: period.map_or(0, Period::yyyymm),
            max_payment_cents: spec.quality.max_payment_cents(),
            nis_mac,
            key_for_long_values,
            last_nis: [0; 11],
            last_hash: [0; 16],
            last_month: (0, 0),
            attributes: Vec::with_capacity(256),
            scratch: String::new(),
            places: std::collections::HashMap::new(),
            places_table: String::new(),
            periods: None,
            row_period: 0,
        }
    }

    /// The period of the last tabulated row, if its period was read (0 if
    /// not): its reject counts against that period.
    pub fn row_period(&self) -> u32 {
        self.row_period
    }

    /// Refuses rows of periods `filter` does not cover (a file of many
    /// periods; `None`: any period, as with `--force`).
    pub(crate) fn with_periods(mut self, filter: Option<crate::dataset::PeriodFilter>) -> Self {
        self.periods = filter;
        self
    }

    /// The key → state id table of a `state_level` file, named `table`.
    pub fn with_places(mut self, table: &str, places: std::collections::HashMap<u64, i32>) -> Self {
        self.places = places;
        self.places_table = table.to_string();
        self
    }

    pub fn municipalities(&self) -> &MunicipalityIndex {
        &self.municipalities
    }

    /// The period rows are checked against (`YYYYMM`), 0 before the first row
    /// when none was given.
    pub fn period(&self) -> u32 {
        self.period
    }

    /// A refused value of a `column_type` column: quoted only when it has
    /// that type's shape (never a name, CPF or NIS in the wrong column).
    fn bad(
        &self,
        index: usize,
        column_type: ColumnType,
        expected: &'static str,
        field: &[u8],
    ) -> RowError {
        // Typed fields are not in the NUL scan of `row`: a NUL makes them
        // unparseable, and is named here, off the hot path.
        let reason = if memchr::memchr(0, field).is_some() {
            RejectReason::NulByte
        } else {
            RejectReason::BadValue {
                expected,
                found: quotable(column_type, field),
            }
        };
        RowError {
            column: self.plan.header(index),
            reason,
        }
    }

    /// The keyed hash of a NIS: the first 128 bits of HMAC-SHA256.
    pub fn hash_nis(&mut self, nis: &[u8; 11]) -> [u8; 16] {
        if nis == &self.last_nis {
            return self.last_hash;
        }
        let digest = self.nis_mac.mac_short(nis).unwrap_or_default();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        self.last_nis = *nis;
        self.last_hash = out;
        out
    }

    /// The record's width, and no NUL outside the typed columns.
    #[inline]
    fn check_shape(&self, record: &impl Fields) -> Result<(), RowError> {
        let plan = &self.plan;
        if record.len() != plan.width {
            return Err(RowError {
                column: None,
                reason: RejectReason::FieldCount {
                    expected: plan.width,
                    found: record.len(),
                },
            });
        }
        let field = |i: usize| record.get(i).unwrap_or_default();
        // PostgreSQL refuses NUL in text and jsonb: a NUL in any field is a
        // reject, with its column, rather than a bare database error later
        // (in a kept attribute or in the reject line itself). The typed
        // fields are left out of this scan: their parsers refuse a NUL and
        // `bad` names it.
        if record.may_hold_nul() {
            for &i in &plan.nul_scanned {
                if memchr::memchr(0, field(i)).is_some() {
                    return Err(RowError {
                        column: plan.header(i),
                        reason: RejectReason::NulByte,
                    });
                }
            }
        }

        Ok(())
    }

    /// The row's municipality (dense index), by the code type of the plan.
    #[inline]
    fn municipality(&self, record: &impl Fields) -> Result<u32, RowError> {
        let plan = &self.plan;
        let (mi, mtype) = plan.municipality;
        let raw = record.get(mi).unwrap_or_default();
        match mtype {
            ColumnType::Ibge => value::ibge(raw)
                .ok_or_else(|| self.bad(mi, ColumnType::Ibge, "IBGE code (7 digits)", raw))
                .and_then(|code| {
                    self.municipalities.ibge(code).ok_or_else(|| RowError {
                        column: plan.header(mi),
                        reason: RejectReason::UnknownMunicipality {
                            code: code.to_string(),
                        },
                    })
                }),
            ColumnType::Ibge6 => value::ibge6(raw)
                .ok_or_else(|| self.bad(mi, ColumnType::Ibge6, "IBGE code (6 digits)", raw))
                .and_then(|code| {
                    self.municipalities.ibge6(code).ok_or_else(|| RowError {
                        column: plan.header(mi),
                        reason: RejectReason::UnknownMunicipality {
                            code: code.to_string(),
                        },
                    })
                }),
            ColumnType::MunicipalityName => {
                let uf_raw = plan
                    .tabulated
                    .uf
                    .and_then(|u| record.get(u))
                    .unwrap_or_default();
                let uf = std::str::from_utf8(value::trim(uf_raw)).unwrap_or_default();
                let shaped = uf.len() == 2 && uf.bytes().all(|b| b.is_ascii_alphabetic());
                if !shaped {
                    let ui = plan.tabulated.uf.unwrap_or(mi);
                    return Err(self.bad(ui, ColumnType::Text, "state abbreviation (SP)", uf_raw));
                }
                let name = crate::engine::parse::value::decode_text(self.encoding, raw);
                self.municipalities
                    .by_name(uf, &name)
                    .map_err(|miss| RowError {
                        column: plan.header(mi),
                        reason: RejectReason::UnknownMunicipalityName {
                            name: value::shaped(ColumnType::MunicipalityName, raw)
                                .then(|| name.trim().to_string()),
                            uf: uf.to_ascii_uppercase(),
                            ambiguous: miss == super::municipality::NameMiss::Ambiguous,
                        },
                    })
            }
            _ => value::siafi(raw)
                .ok_or_else(|| self.bad(mi, ColumnType::Siafi, "SIAFI code (4 digits)", raw))
                .and_then(|code| {
                    self.municipalities.siafi(code).ok_or_else(|| RowError {
                        column: plan.header(mi),
                        reason: RejectReason::UnknownMunicipality {
                            code: format!("{code:04}"),
                        },
                    })
                }),
        }
    }

    /// An amount in cents, within `quality.max_payment_brl`.
    #[inline]
    fn amount(&self, vi: usize, vtype: ColumnType, raw: &[u8]) -> Result<i64, RowError> {
        let plan = &self.plan;
        let parsed = match vtype {
            ColumnType::BrlPoint => value::brl_point(raw),
            ColumnType::DecimalComma => value::decimal_comma(raw),
            _ => value::brl_comma(raw),
        };
        let Some(value_cents) = parsed else {
            let shape = match vtype {
                ColumnType::BrlPoint => "amount (BRL, e.g. 1,022.00)",
                ColumnType::DecimalComma => "amount (e.g. 1234,56 or ,00)",
                _ => "amount (BRL, e.g. 1.234,56)",
            };
            return Err(self.bad(vi, vtype, shape, raw));
        };
        if value_cents.unsigned_abs() > self.max_payment_cents.unsigned_abs() {
            return Err(RowError {
                column: plan.header(vi),
                reason: RejectReason::ValueOutOfRange {
                    found: quotable(vtype, raw),
                    limit_brl: self.max_payment_cents / 100,
                },
            });
        }
        Ok(value_cents)
    }

    /// The record as the rejects table may show it (`reject::redacted_line`:
    /// the privacy surface decides; this only hands it the plan).
    pub fn redacted_line(&self, record: &impl Fields, limit: usize) -> String {
        super::reject::redacted_line(&self.plan.shown, self.encoding, record, limit)
    }

    /// Transforms one record of a payments file.
    #[inline]
    pub fn row(&mut self, record: &impl Fields) -> Result<PaymentRow<'_>, RowError> {
        self.check_shape(record)?;
        let plan = &self.plan;
        let field = |i: usize| record.get(i).unwrap_or_default();
        // A layout without a reference month: every row belongs to the
        // period being loaded.
        if let Some((ri, rtype)) = plan.reference {
            let raw = field(ri);
            let Some(reference_month) = value::month(rtype, raw) else {
                return Err(self.bad(ri, rtype, month_shape(rtype), raw));
            };
            if self.period == 0 {
                // validate without a period: the first valid row sets it
                self.period = reference_month;
            }
            if reference_month != self.period {
                return Err(RowError {
                    column: plan.header(ri),
                    reason: RejectReason::WrongReferenceMonth {
                        found: reference_month,
                        expected: self.period,
                    },
                });
            }
        }
        let competence_date = match plan.competence {
            None => None,
            Some((i, ctype)) => {
                let raw = field(i);
                match value::month(ctype, raw) {
                    // Without a reference month the competence is the only
                    // month the row names: a parcel cannot be paid before
                    // its month, so a later one means another month's file.
                    Some(m) if plan.reference.is_none() && self.period != 0 && m > self.period => {
                        return Err(RowError {
                            column: plan.header(i),
                            reason: RejectReason::CompetenceAfterPeriod {
                                found: m,
                                period: self.period,
                            },
                        });
                    }
                    Some(m) if m == self.last_month.0 => Some(self.last_month.1),
                    Some(m) => {
                        let day = value::first_day_pg(m);
                        self.last_month = (m, day);
                        Some(day)
                    }
                    None if value::trim(raw).is_empty() => None,
                    None => return Err(self.bad(i, ctype, month_shape(ctype), raw)),
                }
            }
        };
        let municipality = self.municipality(record)?;
        let (vi, vtype) = plan.value;
        let value_cents = self.amount(vi, vtype, field(vi))?;
        let nis_raw = value::trim(field(plan.beneficiary));
        let beneficiary_hash = match value::nis(nis_raw) {
            Some(nis) if !plan.sentinels.iter().any(|s| s == nis) => {
                let nis: [u8; 11] = nis.try_into().unwrap_or([b'0'; 11]);
                Some(self.hash_nis(&nis))
            }
            _ => None,
        };
        let has_attributes = !self.plan.attributes.is_empty();
        if has_attributes {
            self.encode_attributes(record)?;
        }
        Ok(PaymentRow {
            competence_date,
            municipality_id: self.municipalities.id(municipality),
            municipality,
            beneficiary_hash,
            value_cents,
            attributes: has_attributes.then_some(&self.attributes[..]),
        })
    }

    /// Transforms one record of a pre-aggregated file: its period, its
    /// municipality, and whichever of the counts and the value the layout
    /// has (the others are `None`: never a number made up).
    #[inline]
    pub fn tabulated_row(&mut self, record: &impl Fields) -> Result<TabulatedRow, RowError> {
        self.row_period = 0;
        self.check_shape(record)?;
        let plan = &self.plan;
        let field = |i: usize| record.get(i).unwrap_or_default();
        // An aggregates layout always has its period column (the spec's
        // validation requires it); were it missing, column 0 read as a month
        // would reject every row, never misdate one.
        let (ri, rtype) = plan.reference.unwrap_or((0, ColumnType::Yyyymm));
        let raw = field(ri);
        let Some(period) = value::month(rtype, raw) else {
            return Err(self.bad(ri, rtype, month_shape(rtype), raw));
        };
        self.row_period = period;
        let plan = &self.plan;
        if let Some(why) = self.periods.as_ref().and_then(|f| f.refuse(period)) {
            return Err(RowError {
                column: plan.header(ri),
                reason: RejectReason::PeriodNotCovered { why },
            });
        }
        let tab = &plan.tabulated;
        let (municipality_id, state_id, key) = match tab.state {
            None => (self.municipalities.id(self.municipality(record)?), 0, 0),
            Some(si) => {
                let raw = field(si);
                let Some(key) = value::cnpj(raw) else {
                    return Err(self.bad(si, ColumnType::Cnpj, "CNPJ (14 digits)", raw));
                };
                let Some(&state_id) = self.places.get(&key) else {
                    return Err(RowError {
                        column: plan.header(si),
                        reason: RejectReason::UnknownStateKey {
                            key: format!("CNPJ {key:014}"),
                            table: self.places_table.clone(),
                        },
                    });
                };
                (0, state_id, key as i64)
            }
        };
        let figure = |f: Figure| -> Result<Option<i64>, RowError> {
            let raw = field(f.index);
            if f.blank_is_absent && value::trim(raw).is_empty() {
                return Ok(None);
            }
            let parsed = match f.column_type {
                ColumnType::Integer => value::integer(raw),
                _ => value::count(raw),
            };
            parsed.map(Some).ok_or_else(|| {
                let shape = match f.column_type {
                    ColumnType::Integer => "whole number, digits only (e.g. 3021)",
                    _ => "count (e.g. 1268)",
                };
                self.bad(f.index, f.column_type, shape, raw)
            })
        };
        // Several beneficiaries columns are summed; all absent is absent.
        let mut beneficiaries: Option<i64> = None;
        for f in &tab.beneficiaries {
            if let Some(n) = figure(*f)? {
                beneficiaries = Some(beneficiaries.unwrap_or(0).saturating_add(n));
            }
        }
        let families = match tab.families {
            Some(f) => figure(f)?,
            None => None,
        };
        let value_cents = match tab.value {
            Some((f, _)) if f.blank_is_absent && value::trim(field(f.index)).is_empty() => None,
            Some((f, vtype)) => Some(self.amount(f.index, vtype, field(f.index))?),
            None => None,
        };
        let mut version = [0i64; 2];
        for (slot, (vi, vtype)) in version.iter_mut().zip(&tab.versions) {
            let raw = field(*vi);
            let parsed = match vtype {
                ColumnType::IsoDate => value::iso_date(raw),
                _ => value::despacho(raw),
            };
            *slot = parsed.ok_or_else(|| {
                let shape = match vtype {
                    ColumnType::IsoDate => "date (YYYY-MM-DD)",
                    _ => "order number (N/YYYY)",
                };
                self.bad(*vi, *vtype, shape, raw)
            })?;
        }
        let mut measures = [None; 10];
        for (f, slot) in &tab.measures {
            if let (Some(n), Some(cell)) = (figure(*f)?, measures.get_mut(*slot)) {
                *cell = Some(cell.unwrap_or(0i64).saturating_add(n));
            }
        }
        for (ei, expected) in &tab.equals {
            let raw = value::trim(field(*ei));
            if raw != expected.as_bytes() {
                let found = std::str::from_utf8(raw)
                    .ok()
                    .filter(|t| t.len() <= 24 && t.chars().all(|c| c.is_alphabetic() || c == ' '));
                return Err(RowError {
                    column: plan.header(*ei),
                    reason: RejectReason::NotExpected {
                        expected: expected.clone(),
                        found: found.map(str::to_string),
                    },
                });
            }
        }
        let part = match tab.part {
            Some((pi, ColumnType::Text)) => {
                // A modality's name: its key's FNV-1a hash (two names that
                // collide would fail the load as a repeated part, loudly).
                let name = value::name_key(&value::decode_text(self.encoding, field(pi)));
                if name.is_empty() {
                    return Err(self.bad(pi, ColumnType::Text, "part name", field(pi)));
                }
                name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                }) as i64
            }
            Some((pi, _)) => {
                let raw = field(pi);
                value::count(raw)
                    .ok_or_else(|| self.bad(pi, ColumnType::Count, "part number", raw))?
            }
            None => 0,
        };
        Ok(TabulatedRow {
            period,
            municipality_id,
            state_id,
            key,
            version,
            part,
            measures,
            beneficiaries,
            families,
            value_cents,
            line: 0,
        })
    }

    fn encode_attributes(&mut self, record: &impl Fields) -> Result<(), RowError> {
        self.attributes.clear();
        self.attributes.push(b'{');
        for (n, attribute) in self.plan.attributes.iter().enumerate() {
            let raw = record.get(attribute.index).unwrap_or_default();
            if n > 0 {
                self.attributes.push(b',');
            }
            json_string(&mut self.attributes, &attribute.name);
            self.attributes.push(b':');
            // (NUL bytes were refused in `row`, before any attribute.)
            let invalid = || RowError {
                column: self.plan.header(attribute.index),
                reason: RejectReason::InvalidText,
            };
            match attribute.privacy {
                Privacy::Hash => {
                    let value = value::trim(raw);
                    let digest = self.nis_mac.mac_short(value).unwrap_or_else(|| {
                        let mut mac =
                            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key_for_long_values)
                                .unwrap_or_else(|_| {
                                    <Hmac<Sha256> as KeyInit>::new_from_slice(b"")
                                        .expect("empty key")
                                });
                        mac.update(value);
                        mac.finalize().into_bytes().into()
                    });
                    self.scratch.clear();
                    for b in &digest[..16] {
                        use std::fmt::Write;
                        let _ = write!(self.scratch, "{b:02x}");
                    }
                    json_string(&mut self.attributes, &self.scratch);
                }
                _ => match self.encoding {
                    Encoding::Utf8 => {
                        let text = std::str::from_utf8(raw).map_err(|_| invalid())?;
                        json_string(&mut self.attributes, text.trim());
                    }
                    Encoding::Windows1252 => {
                        // Into the reused scratch string: no allocation per row
                        // even when the text has accents.
                        self.scratch.clear();
                        self.scratch.reserve(raw.len() * 3);
                        let mut decoder =
                            encoding_rs::WINDOWS_1252.new_decoder_without_bom_handling();
                        let _ = decoder.decode_to_string(raw, &mut self.scratch, true);
                        json_string(&mut self.attributes, self.scratch.trim());
                    }
                },
            }
        }
        self.attributes.push(b'}');
        Ok(())
    }
}

/// Appends `text` as a JSON string literal.
fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::parse::fixtures::*;
    use crate::engine::parse::reject::thousands;
    use crate::engine::parse::{MunicipalityEntry, MunicipalityIndex};

    const NBF_ROW_500_01: [&[u8]; 9] = [
        b"202410",
        b"202410",
        b"SP",
        b"7107",
        b"SAO PAULO",
        b"",
        b"12345678901",
        b"X",
        b"500,01",
    ];

    #[test]
    fn rows_are_typed_or_rejected() {
        let spec = spec("novo-bolsa-familia");
        let mut t = transformer(&spec, NBF_HEADER);
        let row = |comp: &'static [u8],
                   refm: &'static [u8],
                   siafi: &'static [u8],
                   nis: &'static [u8],
                   v: &'static [u8]| {
            vec![
                comp,
                refm,
                &b"SP"[..],
                siafi,
                &b"SAO PAULO"[..],
                &b""[..],
                nis,
                &b"FULANO"[..],
                v,
            ]
        };
        check(
            &mut t,
            &row(b"202410", b"202410", b"7107", b"12345678901", b"1.234,56"),
            Ok((123456, true)),
        );
        check(
            &mut t,
            &row(b"202312", b"202410", b"7107", b"", b"-50,00"),
            Ok((-5000, false)),
        );
        check(
            &mut t,
            &row(b"202410", b"202410", b"9999", b"12345678901", b"1,00"),
            Err("unknown_municipality"),
        );
        check(
            &mut t,
            &row(b"202410", b"202410", b"7107", b"12345678901", b"1,2,3"),
            Err("bad_value"),
        );
        check(
            &mut t,
            &row(b"202410", b"202409", b"7107", b"12345678901", b"1,00"),
            Err("wrong_reference_month"),
        );
        check(
            &mut t,
            &row(b"2024", b"202410", b"7107", b"12345678901", b"1,00"),
            Err("bad_value"),
        );
        check(&mut t, &[b"202410", b"202410"], Err("field_count"));
    }

    #[test]
    fn amounts_beyond_one_payments_limit_are_rejects() {
        let spec = spec("novo-bolsa-familia");
        let mut t = transformer(&spec, NBF_HEADER);
        for (value, want) in [
            ("10.000.000,00", Ok(1_000_000_000)),
            ("-10.000.000,00", Ok(-1_000_000_000)),
            ("10.000.000,01", Err("value_out_of_range")),
            ("-10.000.000,01", Err("value_out_of_range")),
            ("92233720368547758,07", Err("value_out_of_range")),
            ("-92233720368547758,08", Err("bad_value")),
        ] {
            let got = t
                .row(&as_record(&nbf_fields("7107", value)))
                .map(|r| r.value_cents)
                .map_err(|e| e.reason.code());
            assert_eq!(got, want, "{value}");
        }
        let err = t
            .row(&as_record(&nbf_fields("7107", "92233720368547758,07")))
            .expect_err("beyond");
        assert_eq!(
            err.reason.to_string(),
            "amount \"92233720368547758,07\" is beyond one payment's limit of ±R$ 10.000.000,00 (quality.max_payment_brl)"
        );
        assert_eq!(
            (thousands(500), thousands(1_000), thousands(-12_345_678)),
            ("500".into(), "1.000".into(), "-12.345.678".into())
        );
        // The bound is the spec's.
        let mut tight = spec.clone();
        tight.quality.max_payment_brl = 500;
        let plan = Plan::new(&tight, &record(NBF_HEADER)).expect("header");
        let index = MunicipalityIndex::new([MunicipalityEntry {
            id: 7,
            ibge: 3550308,
            siafi: Some(7107),
            state_id: 35,
        }]);
        let mut t = Transformer::new(plan, &tight, index, Period::new(2024, 10), b"k");
        check(&mut t, &NBF_ROW_500_01, Err("value_out_of_range"));
    }

    #[test]
    fn short_codes_are_not_padded_into_another_municipality() {
        let spec = spec("novo-bolsa-familia");
        let plan = Plan::new(&spec, &record(NBF_HEADER)).expect("header");
        let index = MunicipalityIndex::new([MunicipalityEntry {
            id: 12,
            ibge: 1100015,
            siafi: Some(12),
            state_id: 11,
        }]);
        let mut t = Transformer::new(plan, &spec, index, Period::new(2024, 10), b"k");
        let code = |t: &mut Transformer, siafi: &'static str| {
            t.row(&as_record(&nbf_fields(siafi, "1,00")))
                .map(|r| r.municipality_id)
                .map_err(|e| e.reason.code())
        };
        assert_eq!(code(&mut t, "0012"), Ok(12));
        assert_eq!(code(&mut t, "12"), Err("bad_value"));
        assert_eq!(code(&mut t, "012"), Err("bad_value"));
    }

    #[test]
    fn sentinels_are_not_people_and_nis_is_keyed() {
        let spec = spec("bpc");
        let mut t = transformer(&spec, BPC_HEADER);
        let mut fields: Vec<&[u8]> = vec![
            b"202410",
            b"202410",
            b"SP",
            b"7107",
            b"SAO PAULO",
            b"99999990003",
            b"",
            b"NAME",
            b"",
            b"",
            b"",
            b"123",
            b"N\xe3o",
            b"1.412,00",
        ];
        check(&mut t, &fields, Ok((141200, false)));
        let row = t.row(&record(&fields)).expect("row");
        assert_eq!(row.attributes, Some("{\"judicial\":\"Não\"}".as_bytes()));
        fields[5] = b"12345678901";
        let a = t.row(&record(&fields)).expect("row").beneficiary_hash;
        let other_key = {
            let plan = t.plan.clone();
            let mut u = Transformer::new(
                plan,
                &spec,
                MunicipalityIndex::new([MunicipalityEntry {
                    id: 7,
                    ibge: 3550308,
                    siafi: Some(7107),
                    state_id: 35,
                }]),
                Period::new(2024, 10),
                b"other",
            );
            u.row(&record(&fields)).expect("row").beneficiary_hash
        };
        assert!(a.is_some() && a != other_key);
        let line = t.redacted_line(&record(&fields), 512);
        assert!(
            !line.contains("12345678901") && !line.contains("NAME"),
            "{line}"
        );
        assert!(line.contains("1.412,00") && line.contains("7107"), "{line}");
    }
}
