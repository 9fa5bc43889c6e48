//! Rejects and redaction: the one place that decides what of a bad line
//! may reach a reject log, an error message or a log line. Names, CPF and
//! NIS never do: a refused value is quoted only when it has its column
//! type's shape ([`value::shaped`]), a reject line shows only the columns
//! the privacy policy keeps (never the beneficiary or a NIS), and a header
//! error quotes the first line only when it looks like a header.
//! Review this file (with `value::shaped`) to review the privacy surface.

use std::fmt;

use super::records::Fields;
use super::value;
use crate::dataset::{Column, ColumnType, Encoding, Privacy, Role};

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
    /// A `state_level` key (a company's CNPJ, not a person's) missing from
    /// the shipped table that maps keys to states.
    UnknownStateKey {
        key: String,
        table: String,
    },
    WrongReferenceMonth {
        found: u32,
        expected: u32,
    },
    /// A row of a file of many periods whose period the spec does not
    /// cover (before `first_period`, after the current month, or off the
    /// cadence): the reason says which.
    PeriodNotCovered {
        why: String,
    },
    /// In a layout without a reference month: a parcel of a month after
    /// the one being loaded (the file is another month's).
    CompetenceAfterPeriod {
        found: u32,
        period: u32,
    },
    InvalidText,
    /// A NUL byte in any field: PostgreSQL refuses it in text and jsonb.
    NulByte,
    /// A municipality named in a state where no municipality (or two) has
    /// that name; `name` only when it has a place name's shape.
    UnknownMunicipalityName {
        name: Option<String>,
        uf: String,
        ambiguous: bool,
    },
    /// A column that says `equals` holds another value (shown when short
    /// and shaped like a word).
    NotExpected {
        expected: String,
        found: Option<String>,
    },
}

impl RejectReason {
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::FieldCount { .. } => "field_count",
            RejectReason::BadValue { .. } => "bad_value",
            RejectReason::ValueOutOfRange { .. } => "value_out_of_range",
            RejectReason::UnknownMunicipality { .. } => "unknown_municipality",
            RejectReason::UnknownStateKey { .. } => "unknown_state_key",
            RejectReason::WrongReferenceMonth { .. } => "wrong_reference_month",
            RejectReason::PeriodNotCovered { .. } => "period_out_of_bounds",
            RejectReason::CompetenceAfterPeriod { .. } => "competence_after_period",
            RejectReason::InvalidText => "invalid_text",
            RejectReason::NulByte => "nul_byte",
            RejectReason::UnknownMunicipalityName { .. } => "unknown_municipality",
            RejectReason::NotExpected { .. } => "unexpected_value",
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
            RejectReason::UnknownStateKey { key, table } => {
                write!(
                    f,
                    "{key} is not in the shipped table {table} (jobs/reference/{table}.csv), so its state is unknown"
                )
            }
            RejectReason::PeriodNotCovered { why } => write!(f, "{why}"),
            RejectReason::WrongReferenceMonth { found, expected } => {
                write!(
                    f,
                    "reference month {found} differs from the load's period {expected}"
                )
            }
            RejectReason::CompetenceAfterPeriod { found, period } => {
                write!(
                    f,
                    "competence month {found} is after the load's period {period} (the file has no reference month: is it another month's file?)"
                )
            }
            RejectReason::InvalidText => {
                write!(f, "text is not valid in the declared encoding")
            }
            RejectReason::NulByte => write!(
                f,
                "the field holds a NUL byte, which the database refuses in text"
            ),
            RejectReason::UnknownMunicipalityName {
                name,
                uf,
                ambiguous,
            } => {
                match name {
                    Some(name) => write!(f, "municipality {name:?} of {uf:?}")?,
                    None => write!(f, "the municipality (name not shown) of {uf:?}")?,
                }
                if *ambiguous {
                    write!(
                        f,
                        " names two municipalities of that state; neither is taken"
                    )
                } else {
                    write!(
                        f,
                        " is no municipality of that state (names are compared without case, accents or punctuation; never matched in another state)"
                    )
                }
            }
            RejectReason::NotExpected { expected, found } => match found {
                Some(found) => write!(f, "{found:?} where only {expected:?} is loaded"),
                None => write!(f, "a value other than {expected:?}, the only one loaded"),
            },
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

/// What a reject line shows of one file position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shown {
    /// A typed column: shown when the value has its type's shape.
    Typed(ColumnType),
    /// A text column the policy keeps: shown unless it holds a NUL byte.
    Text,
    Hidden,
}

impl Shown {
    /// What a reject line shows of `column`: never the beneficiary or a
    /// NIS; a role column when its value has its type's shape; an
    /// attribute only when the privacy policy keeps it.
    pub(super) fn of(column: &Column) -> Shown {
        match (column.role, column.column_type) {
            (Some(Role::Beneficiary), _) | (_, ColumnType::Nis) => Shown::Hidden,
            (Some(_), column_type) => Shown::Typed(column_type),
            (None, _) if column.privacy != Privacy::Keep => Shown::Hidden,
            (None, ColumnType::Text) => Shown::Text,
            (None, column_type) => Shown::Typed(column_type),
        }
    }
}

/// The record as text for the rejects table, cut to `limit` bytes: every
/// column the privacy policy does not keep is `***`, and so is a typed
/// column whose value does not have its type's shape (a name shifted into
/// it) and any field with a NUL byte. A record whose field count differs
/// from the header's (`shown.len()`) is not shown at all: its columns are
/// not where the header says, so no position can be trusted.
pub(super) fn redacted_line(
    shown: &[Shown],
    encoding: Encoding,
    record: &impl Fields,
    limit: usize,
) -> String {
    if record.len() != shown.len() {
        return format!(
            "[not shown: {} fields where the header has {}]",
            record.len(),
            shown.len()
        );
    }
    let mut out = String::new();
    for (i, field) in record.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        let show = match shown.get(i) {
            Some(Shown::Typed(column_type)) => value::shaped(*column_type, field),
            Some(Shown::Text) => memchr::memchr(0, field).is_none(),
            _ => false,
        };
        if show {
            out.push_str(&value::decode_text(encoding, field));
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

/// Whether a header cell looks like a column name (letters, spaces and a
/// little punctuation; no digits; short), as opposed to a value.
pub(super) fn header_shaped(text: &str) -> bool {
    let text = text.trim().trim_start_matches('\u{feff}');
    !text.is_empty()
        && text.chars().count() <= 60
        && text
            .chars()
            .all(|c| c.is_alphabetic() || " _-/().ºª".contains(c))
}

/// Whole reais with thousands dots: `1000000` → `1.000.000`.
pub(super) fn thousands(reais: i64) -> String {
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
pub(super) fn quotable(column_type: ColumnType, field: &[u8]) -> Option<String> {
    value::shaped(column_type, field)
        .then(|| String::from_utf8_lossy(value::trim(field)).into_owned())
}

#[cfg(test)]
mod tests {
    use crate::engine::parse::fixtures::*;
    use crate::engine::parse::{Plan, Transformer};

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
}
