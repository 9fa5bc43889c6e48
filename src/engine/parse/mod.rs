//! CSV records → typed payment rows, or row errors. No SQL, and no I/O but
//! reading an `io::Read` ([`records`]).
//! One bad row never sinks the batch: [`Transformer::row`] returns the row
//! or a [`RowError`], and the caller decides by policy. The header is
//! matched by name (accents, case and spacing ignored; aliases allowed)
//! before any row is read.

pub mod keyed;
pub mod records;
pub mod value;

use std::collections::HashMap;
use std::fmt;

use self::records::Fields;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use self::keyed::KeyedHash;

use crate::dataset::{Column, ColumnType, Encoding, Period, Privacy, Role, Spec, header_key};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// `found` lists the first line's cells only when that line is shaped
    /// like a header (every cell a header-like name, at least one of them
    /// recognised); a first line that is a data row (a file without a
    /// header) holds a person's name, NIS and CPF, so it is only counted.
    #[error(
        "header is missing {missing:?}; found {columns} columns{}",
        match found {
            Some(found) => format!(": {found:?}"),
            None => format!(
                ", {recognised} of them expected; the first line does not look like a header (a data row?), so its cells are not shown"
            ),
        }
    )]
    Missing {
        missing: Vec<String>,
        columns: usize,
        recognised: usize,
        found: Option<Vec<String>>,
    },
    #[error("header names {header:?} twice")]
    Duplicate { header: String },
    #[error("the file is empty (no header line)")]
    Empty,
}

impl HeaderError {
    pub fn code(&self) -> crate::code::Code {
        match self {
            HeaderError::Empty => crate::code::Code::EmptyFile,
            _ => crate::code::Code::CsvHeaderMismatch,
        }
    }
}

/// Municipality lookups, loaded from the `municipalities` table. Each
/// municipality also gets a dense index (0..len) for per-municipality tallies,
/// and each state a dense index for per-state distinct counts.
#[derive(Debug, Clone)]
pub struct MunicipalityIndex {
    ids: Vec<i32>,
    /// Dense state index of each municipality.
    state_of: Vec<u32>,
    /// Database id of each dense state index.
    state_ids: Vec<i32>,
    /// SIAFI code → dense index + 1 (0: unknown).
    by_siafi: Vec<u32>,
    by_ibge: HashMap<u32, u32>,
}

/// One municipality as the index needs it.
#[derive(Debug, Clone, Copy)]
pub struct MunicipalityEntry {
    pub id: i32,
    pub ibge: u32,
    pub siafi: Option<u16>,
    pub state_id: i32,
}

impl MunicipalityIndex {
    pub fn new(rows: impl IntoIterator<Item = MunicipalityEntry>) -> Self {
        let mut index = MunicipalityIndex {
            ids: Vec::new(),
            state_of: Vec::new(),
            state_ids: Vec::new(),
            by_siafi: vec![0; 10_000],
            by_ibge: HashMap::new(),
        };
        let mut states: HashMap<i32, u32> = HashMap::new();
        for m in rows {
            let dense = index.ids.len() as u32;
            index.ids.push(m.id);
            let next_state = index.state_ids.len() as u32;
            let state = *states.entry(m.state_id).or_insert(next_state);
            if state == next_state {
                index.state_ids.push(m.state_id);
            }
            index.state_of.push(state);
            index.by_ibge.insert(m.ibge, dense);
            if let Some(slot) = m.siafi.and_then(|s| index.by_siafi.get_mut(usize::from(s))) {
                *slot = dense + 1;
            }
        }
        index
    }
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// The database id of a dense index.
    pub fn id(&self, dense: u32) -> i32 {
        self.ids.get(dense as usize).copied().unwrap_or(0)
    }
    /// Dense state index of each municipality, by dense municipality index.
    pub fn state_of(&self) -> &[u32] {
        &self.state_of
    }
    /// Database ids of the states, by dense state index.
    pub fn state_ids(&self) -> &[i32] {
        &self.state_ids
    }
    fn siafi(&self, code: u16) -> Option<u32> {
        self.by_siafi
            .get(usize::from(code))
            .copied()
            .filter(|d| *d != 0)
            .map(|d| d - 1)
    }
    fn ibge(&self, code: u32) -> Option<u32> {
        self.by_ibge.get(&code).copied()
    }
}

/// Why a row was refused. Messages never contain personal data: a value is
/// quoted only when it has the shape of its column's type (digits for
/// codes and months, an amount for amounts: [`value::shaped`]), so a name,
/// CPF or NIS in the wrong column is described, never quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    FieldCount {
        expected: usize,
        found: usize,
    },
    BadValue {
        expected: &'static str,
        /// The value, when it has the column type's shape.
        found: Option<String>,
    },
    /// An amount beyond `quality.max_payment_brl`, either sign.
    ValueOutOfRange {
        /// The value, when it has an amount's shape.
        found: Option<String>,
        limit_brl: i64,
    },
    UnknownMunicipality {
        code: String,
    },
    WrongReferenceMonth {
        found: u32,
        expected: u32,
    },
    InvalidText,
    /// A NUL byte in any field: PostgreSQL refuses it in text and jsonb.
    NulByte,
}

impl RejectReason {
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::FieldCount { .. } => "field_count",
            RejectReason::BadValue { .. } => "bad_value",
            RejectReason::ValueOutOfRange { .. } => "value_out_of_range",
            RejectReason::UnknownMunicipality { .. } => "unknown_municipality",
            RejectReason::WrongReferenceMonth { .. } => "wrong_reference_month",
            RejectReason::InvalidText => "invalid_text",
            RejectReason::NulByte => "nul_byte",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::FieldCount { expected, found } => {
                write!(f, "expected {expected} fields, found {found}")
            }
            RejectReason::BadValue {
                expected,
                found: Some(found),
            } => write!(f, "invalid {expected}: {found:?}"),
            RejectReason::BadValue {
                expected,
                found: None,
            } => write!(
                f,
                "expected {expected}; the value does not have that shape and is not shown"
            ),
            RejectReason::ValueOutOfRange { found, limit_brl } => {
                match found {
                    Some(found) => write!(f, "amount {found:?}")?,
                    None => write!(f, "amount (not shown)")?,
                }
                write!(
                    f,
                    " is beyond one payment's limit of ±R$ {},00 (quality.max_payment_brl)",
                    thousands(*limit_brl)
                )
            }
            RejectReason::UnknownMunicipality { code } => {
                write!(
                    f,
                    "unknown municipality code {code:?} (not in the municipalities table)"
                )
            }
            RejectReason::WrongReferenceMonth { found, expected } => {
                write!(
                    f,
                    "reference month {found} differs from the load's period {expected}"
                )
            }
            RejectReason::InvalidText => {
                write!(f, "text is not valid in the declared encoding")
            }
            RejectReason::NulByte => write!(
                f,
                "the field holds a NUL byte, which the database refuses in text"
            ),
        }
    }
}

/// A refused row: which column, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The header name as found in the file.
    pub column: Option<String>,
    pub reason: RejectReason,
}

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

#[derive(Debug, Clone)]
struct Attribute {
    index: usize,
    name: String,
    privacy: Privacy,
}

/// Column positions in this file, resolved from its header.
#[derive(Debug, Clone)]
pub struct Plan {
    width: usize,
    reference: usize,
    competence: Option<usize>,
    municipality: (usize, ColumnType),
    beneficiary: usize,
    value: (usize, ColumnType),
    sentinels: Vec<Vec<u8>>,
    attributes: Vec<Attribute>,
    /// Per file position: what the redacted raw line shows.
    shown: Vec<Shown>,
    /// Positions scanned for NUL bytes: all but the typed role columns,
    /// whose parsers refuse a NUL on their own.
    nul_scanned: Vec<usize>,
    headers: Vec<String>,
}

/// What a reject line shows of one file position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// A typed column: shown when the value has its type's shape.
    Typed(ColumnType),
    /// A text column the policy keeps: shown unless it holds a NUL byte.
    Text,
    Hidden,
}

impl Plan {
    /// Maps the spec's columns onto `header` by name. Fails before any row
    /// is read, listing the expected and found names.
    pub fn new(spec: &Spec, header: &impl Fields) -> Result<Plan, HeaderError> {
        if header.is_empty() || (header.len() == 1 && header.get(0).is_some_and(<[u8]>::is_empty)) {
            return Err(HeaderError::Empty);
        }
        // A NUL would make the name unstorable as a reject's column.
        let headers: Vec<String> = header
            .iter()
            .map(|field| decode_text(spec.source.encoding, field).replace('\0', "\u{fffd}"))
            .collect();
        let keys: Vec<String> = headers.iter().map(|h| header_key(h)).collect();
        let mut positions: HashMap<&str, usize> = HashMap::new();
        let mut missing = Vec::new();
        let mut taken: HashMap<usize, &str> = HashMap::new();
        for column in &spec.columns {
            let wanted: Vec<String> = std::iter::once(&column.header)
                .chain(column.aliases.iter())
                .map(|h| header_key(h))
                .collect();
            match keys.iter().position(|k| wanted.contains(k)) {
                Some(i) => {
                    if taken.insert(i, &column.name).is_some() {
                        return Err(HeaderError::Duplicate {
                            header: headers[i].clone(),
                        });
                    }
                    if keys.iter().filter(|k| wanted.contains(k)).count() > 1 {
                        return Err(HeaderError::Duplicate {
                            header: headers[i].clone(),
                        });
                    }
                    positions.insert(&column.name, i);
                }
                None if column.optional => {}
                None => missing.push(column.header.clone()),
            }
        }
        if !missing.is_empty() {
            let looks_like_header =
                !positions.is_empty() && headers.iter().all(|h| header_shaped(h));
            return Err(HeaderError::Missing {
                missing,
                columns: headers.len(),
                recognised: positions.len(),
                found: looks_like_header.then_some(headers),
            });
        }
        let position = |role: Role| -> (usize, &Column) {
            let column = spec
                .columns
                .iter()
                .find(|c| c.role == Some(role))
                .unwrap_or(&spec.columns[0]);
            (
                positions.get(column.name.as_str()).copied().unwrap_or(0),
                column,
            )
        };
        let (reference, _) = position(Role::ReferenceMonth);
        let (municipality, municipality_column) = position(Role::Municipality);
        let (beneficiary, beneficiary_column) = position(Role::Beneficiary);
        let (value, value_column) = position(Role::Value);
        let competence = spec
            .column(Role::CompetenceMonth)
            .and_then(|c| positions.get(c.name.as_str()).copied());
        let attributes = spec
            .columns
            .iter()
            .filter(|c| c.role.is_none() && c.privacy != Privacy::Drop)
            .filter_map(|c| {
                positions.get(c.name.as_str()).map(|&index| Attribute {
                    index,
                    name: c.name.clone(),
                    privacy: c.privacy,
                })
            })
            .collect();
        let mut shown = vec![Shown::Hidden; headers.len()];
        for column in &spec.columns {
            if let Some(&i) = positions.get(column.name.as_str()) {
                shown[i] = match (column.role, column.column_type) {
                    (Some(Role::Beneficiary), _) | (_, ColumnType::Nis) => Shown::Hidden,
                    (Some(_), column_type) => Shown::Typed(column_type),
                    (None, _) if column.privacy != Privacy::Keep => Shown::Hidden,
                    (None, ColumnType::Text) => Shown::Text,
                    (None, column_type) => Shown::Typed(column_type),
                };
            }
        }
        let typed = [Some(reference), competence, Some(municipality), Some(value)];
        let nul_scanned = (0..headers.len())
            .filter(|i| !typed.contains(&Some(*i)))
            .collect();
        Ok(Plan {
            width: headers.len(),
            reference,
            competence,
            municipality: (municipality, municipality_column.column_type),
            beneficiary,
            value: (value, value_column.column_type),
            sentinels: beneficiary_column
                .sentinels
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            attributes,
            shown,
            nul_scanned,
            headers,
        })
    }

    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    fn header(&self, index: usize) -> Option<String> {
        self.headers.get(index).cloned()
    }
}

/// Whether a header cell looks like a column name (letters, spaces and a
/// little punctuation; no digits; short), as opposed to a value.
fn header_shaped(text: &str) -> bool {
    let text = text.trim().trim_start_matches('\u{feff}');
    !text.is_empty()
        && text.chars().count() <= 60
        && text
            .chars()
            .all(|c| c.is_alphabetic() || " _-/().ºª".contains(c))
}

fn decode_text(encoding: Encoding, field: &[u8]) -> String {
    match encoding {
        Encoding::Windows1252 => encoding_rs::WINDOWS_1252
            .decode_without_bom_handling(field)
            .0
            .into_owned(),
        Encoding::Utf8 => String::from_utf8_lossy(field).into_owned(),
    }
}

/// Turns records into rows for one (program, period). Holds the keyed NIS
/// hasher and reusable buffers: no allocation per row.
pub struct Transformer {
    plan: Plan,
    encoding: Encoding,
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
            plan,
            encoding: spec.source.encoding,
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
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
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

    /// Transforms one record.
    #[inline]
    pub fn row(&mut self, record: &impl Fields) -> Result<PaymentRow<'_>, RowError> {
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

        let reference = field(plan.reference);
        let Some(reference_month) = value::yyyymm(reference) else {
            return Err(self.bad(
                plan.reference,
                ColumnType::Yyyymm,
                "month (YYYYMM)",
                reference,
            ));
        };
        if self.period == 0 {
            // validate without a period: the first valid row sets it
            self.period = reference_month;
        }
        if reference_month != self.period {
            return Err(RowError {
                column: plan.header(plan.reference),
                reason: RejectReason::WrongReferenceMonth {
                    found: reference_month,
                    expected: self.period,
                },
            });
        }
        let competence_date = match plan.competence {
            None => None,
            Some(i) => {
                let raw = field(i);
                match value::yyyymm(raw) {
                    Some(m) if m == self.last_month.0 => Some(self.last_month.1),
                    Some(m) => {
                        let day = value::first_day_pg(m);
                        self.last_month = (m, day);
                        Some(day)
                    }
                    None if value::trim(raw).is_empty() => None,
                    None => return Err(self.bad(i, ColumnType::Yyyymm, "month (YYYYMM)", raw)),
                }
            }
        };
        let (mi, mtype) = plan.municipality;
        let raw = field(mi);
        let municipality = match mtype {
            ColumnType::Ibge => value::ibge(raw)
                .ok_or_else(|| self.bad(mi, ColumnType::Ibge, "IBGE code (7 digits)", raw))
                .and_then(|code| {
                    self.municipalities.ibge(code).ok_or_else(|| RowError {
                        column: plan.header(mi),
                        reason: RejectReason::UnknownMunicipality {
                            code: code.to_string(),
                        },
                    })
                })?,
            _ => value::siafi(raw)
                .ok_or_else(|| self.bad(mi, ColumnType::Siafi, "SIAFI code (4 digits)", raw))
                .and_then(|code| {
                    self.municipalities.siafi(code).ok_or_else(|| RowError {
                        column: plan.header(mi),
                        reason: RejectReason::UnknownMunicipality {
                            code: format!("{code:04}"),
                        },
                    })
                })?,
        };
        let (vi, vtype) = plan.value;
        let raw = field(vi);
        let parsed = match vtype {
            ColumnType::BrlPoint => value::brl_point(raw),
            _ => value::brl_comma(raw),
        };
        let Some(value_cents) = parsed else {
            return Err(self.bad(vi, vtype, "amount (BRL, e.g. 1.234,56)", raw));
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

    /// The record as text for the rejects table, cut to `limit` bytes: every
    /// column the privacy policy does not keep is `***`, and so is a typed
    /// column whose value does not have its type's shape (a name shifted
    /// into it) and any field with a NUL byte. A record whose field count
    /// differs from the header's is not shown at all: its columns are not
    /// where the header says, so no position can be trusted.
    pub fn redacted_line(&self, record: &impl Fields, limit: usize) -> String {
        if record.len() != self.plan.width {
            return format!(
                "[not shown: {} fields where the header has {}]",
                record.len(),
                self.plan.width
            );
        }
        let mut out = String::new();
        for (i, field) in record.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            let show = match self.plan.shown.get(i) {
                Some(Shown::Typed(column_type)) => value::shaped(*column_type, field),
                Some(Shown::Text) => memchr::memchr(0, field).is_none(),
                _ => false,
            };
            if show {
                out.push_str(&decode_text(self.encoding, field));
            } else {
                out.push_str("***");
            }
            if out.len() > limit {
                break;
            }
        }
        if out.len() > limit {
            let mut cut = limit;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
        out
    }
}

/// Whole reais with thousands dots: `1000000` → `1.000.000`.
fn thousands(reais: i64) -> String {
    let digits = reais.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if reais < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('.');
        }
        out.push(c);
    }
    out
}

/// `field` as text for a message, when it has `column_type`'s shape.
fn quotable(column_type: ColumnType, field: &[u8]) -> Option<String> {
    value::shaped(column_type, field)
        .then(|| String::from_utf8_lossy(value::trim(field)).into_owned())
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
    use csv::ByteRecord;
    use std::path::Path;

    fn spec(name: &str) -> Spec {
        crate::dataset::find(Path::new("/nonexistent"), name).expect("builtin spec")
    }

    fn record(fields: &[&[u8]]) -> ByteRecord {
        let mut r = ByteRecord::new();
        for f in fields {
            r.push_field(f);
        }
        r
    }

    const NBF_HEADER: &[&[u8]] = &[
        b"M\xcaS COMPET\xcaNCIA",
        b"M\xcaS REFER\xcaNCIA",
        b"UF",
        b"C\xd3DIGO MUNIC\xcdPIO SIAFI",
        b"NOME MUNIC\xcdPIO",
        b"CPF FAVORECIDO",
        b"NIS FAVORECIDO",
        b"NOME FAVORECIDO",
        b"VALOR PARCELA",
    ];

    const BPC_HEADER: &[&[u8]] = &[
        b"M\xcaS COMPET\xcaNCIA",
        b"M\xcaS REFER\xcaNCIA",
        b"UF",
        b"C\xd3DIGO MUNIC\xcdPIO SIAFI",
        b"NOME MUNIC\xcdPIO",
        b"NIS BENEFICI\xc1RIO",
        b"CPF BENEFICI\xc1RIO",
        b"NOME BENEFICI\xc1RIO",
        b"NIS REPRESENTANTE LEGAL",
        b"CPF REPRESENTANTE LEGAL",
        b"NOME REPRESENTANTE LEGAL",
        b"N\xdaMERO BENEF\xcdCIO",
        b"BENEF\xcdCIO CONCEDIDO JUDICIALMENTE",
        b"VALOR PARCELA",
    ];

    const BPC_ROW: &[&[u8]] = &[
        b"202410",
        b"202410",
        b"SP",
        b"7107",
        b"SAO PAULO",
        b"12345678901",
        b"",
        b"NAME",
        b"",
        b"",
        b"",
        b"123",
        b"N\xe3o",
        b"1.412,00",
    ];

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

    fn transformer(spec: &Spec, header: &[&[u8]]) -> Transformer {
        let plan = Plan::new(spec, &record(header)).expect("header");
        let index = MunicipalityIndex::new([MunicipalityEntry {
            id: 7,
            ibge: 3550308,
            siafi: Some(7107),
            state_id: 35,
        }]);
        Transformer::new(plan, spec, index, Period::new(2024, 10), b"k")
    }

    /// Data-driven row checks: (fields, Ok(value cents, has NIS) | Err(code)).
    fn check(t: &mut Transformer, fields: &[&[u8]], want: Result<(i64, bool), &str>) {
        let got = t
            .row(&record(fields))
            .map(|r| (r.value_cents, r.beneficiary_hash.is_some()))
            .map_err(|e| e.reason.code());
        assert_eq!(got, want, "fields {fields:?}");
    }

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
    fn reordered_and_renamed_headers_map_by_name() {
        let spec = spec("novo-bolsa-familia");
        let header: Vec<&[u8]> = vec![
            b"VALOR PARCELA",
            b"Nis Favorecido",
            b"NOME FAVORECIDO",
            b"M\xcaS REFER\xcaNCIA",
            b"M\xcaS COMPET\xcaNCIA",
            b"C\xd3DIGO SIAFI MUNIC\xcdPIO",
            b"UF",
            b"NOME MUNIC\xcdPIO",
        ];
        let mut t = transformer(&spec, &header);
        check(
            &mut t,
            &[
                b"10,00",
                b"12345678901",
                b"X",
                b"202410",
                b"202410",
                b"7107",
                b"SP",
                b"SAO PAULO",
            ],
            Ok((1000, true)),
        );
    }

    #[test]
    fn missing_columns_name_expected_and_found() {
        let spec = spec("novo-bolsa-familia");
        let err = Plan::new(&spec, &record(&NBF_HEADER[..8])).expect_err("no value column");
        let msg = err.to_string();
        assert!(
            msg.contains("VALOR PARCELA") && msg.contains("NOME FAVORECIDO"),
            "{msg}"
        );
    }

    const NAME: &str = "MARIA JOSÉ DA SILVA";
    const NIS: &str = "12345678901";
    const CPF: &str = "***.456.789-**";

    /// An NBF data row (competência, referência, UF, SIAFI, município, CPF,
    /// NIS, nome, valor) with `value` as its last field.
    fn nbf_fields(siafi: &'static str, value: &'static str) -> Vec<Vec<u8>> {
        let (name, _, _) = encoding_rs::WINDOWS_1252.encode(NAME);
        vec![
            b"202410".to_vec(),
            b"202410".to_vec(),
            b"SP".to_vec(),
            siafi.as_bytes().to_vec(),
            b"SAO PAULO".to_vec(),
            CPF.as_bytes().to_vec(),
            NIS.as_bytes().to_vec(),
            name.into_owned(),
            value.as_bytes().to_vec(),
        ]
    }

    fn as_record(fields: &[Vec<u8>]) -> ByteRecord {
        let slices: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        record(&slices)
    }

    fn assert_no_personal_data(text: &str) {
        for personal in [NAME, "MARIA", NIS, "456.789", "SILVA"] {
            assert!(!text.contains(personal), "{personal:?} in {text:?}");
        }
    }

    #[test]
    fn a_file_without_a_header_is_refused_without_quoting_its_first_row() {
        let spec = spec("novo-bolsa-familia");
        let err = Plan::new(&spec, &as_record(&nbf_fields("7107", "600,00")))
            .expect_err("a data row is no header");
        assert_eq!(err.code(), "csv_header_mismatch");
        let msg = err.to_string();
        assert_no_personal_data(&msg);
        assert!(
            msg.contains("found 9 columns") && msg.contains("VALOR PARCELA"),
            "{msg}"
        );
        // A real header that lacks a column still lists what it has.
        let err = Plan::new(&spec, &record(&NBF_HEADER[..8])).expect_err("no value");
        assert!(err.to_string().contains("\"NOME FAVORECIDO\""), "{err}");
        // A header with one data cell among names is not quoted either.
        let mut header: Vec<&[u8]> = NBF_HEADER[..8].to_vec();
        header[7] = NIS.as_bytes();
        let msg = Plan::new(&spec, &record(&header))
            .expect_err("no value")
            .to_string();
        assert_no_personal_data(&msg);
    }

    #[test]
    fn rows_whose_fields_do_not_match_the_header_are_not_shown() {
        let spec = spec("novo-bolsa-familia");
        let t = transformer(&spec, NBF_HEADER);
        // A field missing before the name: the name lands on VALOR PARCELA.
        let mut short = nbf_fields("7107", "600,00");
        short.remove(5);
        let mut long = nbf_fields("7107", "600,00");
        long.insert(5, b"EXTRA".to_vec());
        for fields in [short, long] {
            let line = t.redacted_line(&as_record(&fields), 512);
            assert_no_personal_data(&line);
            assert!(line.starts_with("[not shown: "), "{line}");
        }
        // Same count, name and value swapped: the typed column is hidden.
        let mut swapped = nbf_fields("7107", "600,00");
        swapped.swap(7, 8);
        let line = t.redacted_line(&as_record(&swapped), 512);
        assert_no_personal_data(&line);
        assert!(line.contains("7107") && line.contains("202410"), "{line}");
    }

    #[test]
    fn row_errors_quote_only_values_shaped_like_their_column() {
        let spec = spec("novo-bolsa-familia");
        let mut t = transformer(&spec, NBF_HEADER);
        let message = |t: &mut Transformer, fields: &[Vec<u8>]| {
            let err = t.row(&as_record(fields)).expect_err("reject");
            format!("{}: {}", err.reason.code(), err.reason)
        };
        // The name in the value column, the NIS in the month and SIAFI
        // columns, the CPF in the value column.
        let mut swapped = nbf_fields("7107", "600,00");
        swapped.swap(7, 8);
        let mut nis_month = nbf_fields("7107", "600,00");
        nis_month[1] = NIS.as_bytes().to_vec();
        let mut nis_competence = nbf_fields("7107", "600,00");
        nis_competence[0] = NIS.as_bytes().to_vec();
        let nis_siafi = nbf_fields(NIS, "600,00");
        let cpf_value = nbf_fields("7107", CPF);
        let nis_value = nbf_fields("7107", NIS); // R$ 12 bilhões: out of range
        for fields in [
            swapped,
            nis_month,
            nis_competence,
            nis_siafi,
            cpf_value,
            nis_value,
        ] {
            let msg = message(&mut t, &fields);
            assert_no_personal_data(&msg);
            assert!(
                msg.contains("expected") || msg.contains("not shown"),
                "{msg}"
            );
        }
        // Values that have the shape are still quoted, for the operator.
        let msg = message(&mut t, &nbf_fields("7107", "12,3,4"));
        assert!(msg.contains("\"12,3,4\""), "{msg}");
        let msg = message(&mut t, &nbf_fields("71", "1,00"));
        assert!(msg.contains("\"71\""), "{msg}");
    }

    #[test]
    fn a_nul_byte_is_a_reject_naming_its_column() {
        let spec = spec("bpc");
        let mut t = transformer(&spec, BPC_HEADER);
        for (i, column) in [
            (0, "M\u{ca}S COMPET\u{ca}NCIA"),
            (1, "M\u{ca}S REFER\u{ca}NCIA"),
            (3, "C\u{d3}DIGO MUNIC\u{cd}PIO SIAFI"),
            (5, "NIS BENEFICI\u{c1}RIO"),
            (7, "NOME BENEFICI\u{c1}RIO"),
            (12, "BENEF\u{cd}CIO CONCEDIDO JUDICIALMENTE"),
            (13, "VALOR PARCELA"),
        ] {
            let mut fields: Vec<Vec<u8>> = BPC_ROW.iter().map(|f| f.to_vec()).collect();
            fields[i].push(0);
            let err = t.row(&as_record(&fields)).expect_err("NUL");
            assert_eq!(
                (err.reason.code(), err.column.as_deref()),
                ("nul_byte", Some(column))
            );
            let text = format!(
                "{} {}",
                err.reason,
                t.redacted_line(&as_record(&fields), 512)
            );
            assert!(!text.contains('\0'), "{text:?}");
        }
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
        let header: Vec<&[u8]> = vec![
            b"M\xcaS COMPET\xcaNCIA",
            b"M\xcaS REFER\xcaNCIA",
            b"UF",
            b"C\xd3DIGO MUNIC\xcdPIO SIAFI",
            b"NOME MUNIC\xcdPIO",
            b"NIS BENEFICI\xc1RIO",
            b"CPF BENEFICI\xc1RIO",
            b"NOME BENEFICI\xc1RIO",
            b"NIS REPRESENTANTE LEGAL",
            b"CPF REPRESENTANTE LEGAL",
            b"NOME REPRESENTANTE LEGAL",
            b"N\xdaMERO BENEF\xcdCIO",
            b"BENEF\xcdCIO CONCEDIDO JUDICIALMENTE",
            b"VALOR PARCELA",
        ];
        let mut t = transformer(&spec, &header);
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
            let plan = t.plan().clone();
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
