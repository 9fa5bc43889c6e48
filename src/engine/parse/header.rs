//! The header plan: the file's first line matched against the spec's
//! columns by name (accents, case and spacing ignored; aliases allowed),
//! before any row is read. A [`Plan`] says where each role and attribute
//! column sits in this file; a [`HeaderError`] says why the header does not
//! fit. What a header error may quote of the first line is decided in
//! `reject.rs`.

use std::collections::HashMap;

use super::records::Fields;
use super::reject::{Shown, header_shaped};
use crate::dataset::{Column, ColumnType, Encoding, Layout, Privacy, Role, Spec, header_key};

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
    /// No layout of the spec fits: the closest one's own error says what
    /// differs.
    #[error("the header fits none of the layouts {layouts:?}; the closest, {closest:?}: {source}")]
    NoLayout {
        layouts: Vec<String>,
        closest: String,
        source: Box<HeaderError>,
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

#[derive(Debug, Clone)]
pub(super) struct Attribute {
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) privacy: Privacy,
}

/// A counted figure's column: its position and whether an empty field
/// means "absent" (else it is a reject).
#[derive(Debug, Clone, Copy)]
pub(super) struct Figure {
    pub(super) index: usize,
    pub(super) blank_is_absent: bool,
    pub(super) column_type: ColumnType,
}

/// Where a pre-aggregated file's counts and value are, each optional, and
/// for a `state_level` file its key, approval (version) and part columns.
#[derive(Debug, Clone, Default)]
pub(super) struct Tabulated {
    /// Summed when several (`state_level`: one count per modality).
    pub(super) beneficiaries: Vec<Figure>,
    pub(super) families: Option<Figure>,
    pub(super) value: Option<(Figure, ColumnType)>,
    pub(super) state: Option<usize>,
    /// At most two, most significant first.
    pub(super) versions: Vec<(usize, ColumnType)>,
    /// A part's column and type (`count`, or `text`: a modality's name).
    pub(super) part: Option<(usize, ColumnType)>,
    /// The state abbreviation a `municipality_name` is looked up in.
    pub(super) uf: Option<usize>,
    /// Columns that may hold one value only (`equals`).
    pub(super) equals: Vec<(usize, String)>,
    /// `cadunico_data` figures: (column, its slot in `CADUNICO_MEASURES`);
    /// columns of one slot are summed.
    pub(super) measures: Vec<(Figure, usize)>,
}

/// Column positions in this file, resolved from its header.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(super) width: usize,
    /// The layout this file has (see `dataset::Layout`), and its encoding.
    pub(super) layout: String,
    pub(super) delimiter: u8,
    pub(super) encoding: Encoding,
    /// The reference month's position and type; none in a layout whose
    /// rows all belong to the period being loaded.
    pub(super) reference: Option<(usize, ColumnType)>,
    pub(super) competence: Option<(usize, ColumnType)>,
    pub(super) municipality: (usize, ColumnType),
    pub(super) beneficiary: usize,
    pub(super) value: (usize, ColumnType),
    /// A pre-aggregated file's count and value columns (`aggregates`).
    pub(super) tabulated: Tabulated,
    pub(super) sentinels: Vec<Vec<u8>>,
    pub(super) attributes: Vec<Attribute>,
    /// Per file position: what the redacted raw line shows.
    pub(super) shown: Vec<Shown>,
    /// Positions scanned for NUL bytes: all but the typed role columns,
    /// whose parsers refuse a NUL on their own.
    pub(super) nul_scanned: Vec<usize>,
    pub(super) headers: Vec<String>,
}

impl Plan {
    /// Maps the spec's first layout onto `header` (see [`Plan::for_layout`]).
    #[cfg(test)]
    pub fn new(spec: &Spec, header: &impl Fields) -> Result<Plan, HeaderError> {
        Plan::for_layout(&spec.layouts[0], header)
    }

    /// Maps `layout`'s columns onto `header` by name. Fails before any row
    /// is read, listing the expected and found names.
    pub(crate) fn for_layout(layout: &Layout, header: &impl Fields) -> Result<Plan, HeaderError> {
        if header.is_empty() || (header.len() == 1 && header.get(0).is_some_and(<[u8]>::is_empty)) {
            return Err(HeaderError::Empty);
        }
        // A NUL would make the name unstorable as a reject's column.
        let headers: Vec<String> = header
            .iter()
            .map(|field| {
                super::value::decode_text(layout.encoding, field).replace('\0', "\u{fffd}")
            })
            .collect();
        let keys: Vec<String> = headers.iter().map(|h| header_key(h)).collect();
        let mut positions: HashMap<&str, usize> = HashMap::new();
        let mut missing = Vec::new();
        let mut taken: HashMap<usize, &str> = HashMap::new();
        for column in &layout.columns {
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
            let column = layout
                .columns
                .iter()
                .find(|c| c.role == Some(role))
                .unwrap_or(&layout.columns[0]);
            (
                positions.get(column.name.as_str()).copied().unwrap_or(0),
                column,
            )
        };
        let typed_position = |role: Role| -> Option<(usize, ColumnType)> {
            let column = layout.columns.iter().find(|c| c.role == Some(role))?;
            positions
                .get(column.name.as_str())
                .map(|&i| (i, column.column_type))
        };
        let reference = typed_position(Role::ReferenceMonth);
        let (municipality, municipality_column) = position(Role::Municipality);
        let (beneficiary, beneficiary_column) = position(Role::Beneficiary);
        let (value, value_column) = position(Role::Value);
        let competence = typed_position(Role::CompetenceMonth);
        let figures = |role: Role| -> Vec<(Figure, ColumnType)> {
            layout
                .columns
                .iter()
                .filter(|c| c.role == Some(role))
                .filter_map(|c| {
                    positions.get(c.name.as_str()).map(|&index| {
                        let figure = Figure {
                            index,
                            blank_is_absent: c.blank_is_absent,
                            column_type: c.column_type,
                        };
                        (figure, c.column_type)
                    })
                })
                .collect()
        };
        let tabulated = Tabulated {
            beneficiaries: figures(Role::Beneficiaries)
                .into_iter()
                .map(|f| f.0)
                .collect(),
            families: figures(Role::Families).first().map(|f| f.0),
            value: figures(Role::Value).first().copied(),
            state: typed_position(Role::State).map(|p| p.0),
            versions: figures(Role::Version)
                .into_iter()
                .map(|(f, t)| (f.index, t))
                .collect(),
            part: typed_position(Role::Part),
            uf: typed_position(Role::Uf).map(|p| p.0),
            equals: layout
                .columns
                .iter()
                .filter_map(|c| {
                    let expected = c.equals.clone()?;
                    positions.get(c.name.as_str()).map(|&i| (i, expected))
                })
                .collect(),
            measures: layout
                .columns
                .iter()
                .filter(|c| c.role == Some(Role::Measure))
                .filter_map(|c| {
                    // The slot: the measure's place in its target's list.
                    let name = c.measure.as_deref()?;
                    let slot = [
                        crate::dataset::Target::CadunicoData,
                        crate::dataset::Target::MunicipalitiesPopulation,
                    ]
                    .iter()
                    .find_map(|t| t.measures().iter().position(|m| *m == name))?;
                    positions.get(c.name.as_str()).map(|&index| {
                        let figure = Figure {
                            index,
                            blank_is_absent: c.blank_is_absent,
                            column_type: c.column_type,
                        };
                        (figure, slot)
                    })
                })
                .collect(),
        };
        let attributes = layout
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
        for column in &layout.columns {
            if let Some(&i) = positions.get(column.name.as_str()) {
                shown[i] = Shown::of(column);
            }
        }
        let mut typed = vec![
            reference.map(|r| r.0),
            competence.map(|c| c.0),
            layout
                .columns
                .iter()
                .any(|c| c.role == Some(Role::Municipality))
                .then_some(municipality),
            tabulated.value.map(|v| v.0.index),
            tabulated.families.map(|f| f.index),
            tabulated.state,
            tabulated.part.map(|p| p.0),
        ];
        typed.extend(tabulated.beneficiaries.iter().map(|f| Some(f.index)));
        typed.extend(tabulated.versions.iter().map(|v| Some(v.0)));
        typed.extend(tabulated.measures.iter().map(|m| Some(m.0.index)));
        let nul_scanned = (0..headers.len())
            .filter(|i| !typed.contains(&Some(*i)))
            .collect();
        Ok(Plan {
            width: headers.len(),
            layout: layout.name.clone(),
            delimiter: layout.delimiter,
            encoding: layout.encoding,
            reference,
            competence,
            municipality: (municipality, municipality_column.column_type),
            beneficiary,
            value: (value, value_column.column_type),
            tabulated,
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

    /// The plan of the first of `spec`'s layouts that `first_line` (the
    /// file's header line, as raw bytes) fits, each layout splitting it with
    /// its own delimiter. With one layout its error is returned as it is;
    /// with several, [`HeaderError::NoLayout`] names the closest (the one
    /// missing the fewest columns) and its error.
    pub(crate) fn choose(spec: &Spec, first_line: &[u8]) -> Result<Plan, HeaderError> {
        let mut closest: Option<(usize, &Layout, HeaderError)> = None;
        for layout in &spec.layouts {
            let mut reader = super::records::RecordReader::new(first_line, layout.delimiter);
            let error = match reader.next_record() {
                Ok(Some(header)) => match Plan::for_layout(layout, &header) {
                    Ok(plan) => return Ok(plan),
                    Err(e) => e,
                },
                Ok(None) | Err(_) => HeaderError::Empty,
            };
            let distance = match &error {
                HeaderError::Missing { missing, .. } => missing.len(),
                HeaderError::Duplicate { .. } => 1,
                _ => usize::MAX,
            };
            if closest.as_ref().is_none_or(|(d, _, _)| distance < *d) {
                closest = Some((distance, layout, error));
            }
        }
        match closest {
            Some((_, _, error)) if spec.layouts.len() == 1 => Err(error),
            Some((_, _, HeaderError::Empty)) | None => Err(HeaderError::Empty),
            Some((_, layout, error)) => Err(HeaderError::NoLayout {
                layouts: spec.layouts.iter().map(|l| l.name.clone()).collect(),
                closest: layout.name.clone(),
                source: Box::new(error),
            }),
        }
    }

    /// The name of the layout this plan maps.
    pub(crate) fn layout(&self) -> &str {
        &self.layout
    }

    /// The delimiter of this plan's layout.
    pub(crate) fn delimiter(&self) -> u8 {
        self.delimiter
    }

    pub(super) fn header(&self, index: usize) -> Option<String> {
        self.headers.get(index).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::parse::fixtures::*;

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
}
