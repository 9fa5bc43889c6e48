//! A spec's `[[columns]]`: what each column means, its type and privacy
//! policy, the checks that a spec cannot keep a personal column, and the
//! header-name key columns are matched by.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What a column means to the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    ReferenceMonth,
    CompetenceMonth,
    Municipality,
    Beneficiary,
    Value,
    /// A pre-aggregated file's count of people (`aggregates` kind).
    Beneficiaries,
    /// A pre-aggregated file's count of families (`aggregates` kind).
    Families,
    /// What maps a row to a state through a shipped table (`state_level`
    /// kind: a power distributor's CNPJ).
    State,
    /// Which approval of a (state key, period) a row belongs to; the latest
    /// wins (`state_level`: the registration date, then the order's number).
    Version,
    /// One part of an approval (`state_level`: a consumption band): parts
    /// are summed, and a part repeated within one approval fails the load.
    Part,
    /// A figure of the target table named by the column's `measure`
    /// (`target = "cadunico_data"`); columns naming one measure are summed.
    Measure,
    /// A `places` dataset's natural key (the source's id of the place).
    Key,
    /// A `places` dataset's place name (a CRAS's): names no person.
    PlaceName,
    /// A `places` dataset's text column named by `field`; columns naming
    /// one field are joined with ", " (a street and its number).
    Field,
    /// A `places` dataset's coordinates (`lat_lon`).
    Location,
    /// The state abbreviation (`SP`) a `municipality_name` is looked up in.
    Uf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ColumnType {
    /// `202410`
    Yyyymm,
    /// `10/2024` (the old portal's `Mês Competência`).
    MmYyyy,
    /// `2024`: a year, as the period of its January (yearly figures).
    Yyyy,
    /// 4-digit SIAFI municipality code, mapped through `municipalities`.
    Siafi,
    /// 7-digit IBGE municipality code.
    Ibge,
    /// 6-digit IBGE municipality code: the 7-digit one without its check
    /// digit (DATASUS files).
    Ibge6,
    /// A whole count: `1268`, or `1268.0` (a float's text with a zero
    /// fraction); anything else, a fraction or a sign included, is a reject.
    Count,
    /// A whole number written with digits only (`3021`): no sign, no
    /// fraction, no separator (`3.000` is a reject, never 3 or 3000).
    Integer,
    /// 14-digit CNPJ, digits only (`06981180000116`).
    Cnpj,
    /// `2020-04-17`, or `2020-04-17 10:32:05` (ISO 8601, a space or `T`).
    IsoDate,
    /// An order's number: `1234/2020` (ordered by year, then number) or
    /// plain digits.
    Despacho,
    /// A decimal comma with optional thousands dots, the integer part
    /// optional (ANEEL's `1234,56`, `,00`, `1.234,56`).
    DecimalComma,
    /// Decimal comma with optional thousands dots: `1.234,56`, `-600,00`.
    Brl,
    /// The old portal's US format: decimal point, thousands commas, exactly
    /// two decimals (`227.00`, `1,022.00`).
    BrlPoint,
    /// 11-digit NIS; anything else (sentinels, masks, empty) is "no NIS".
    Nis,
    /// `"-23.55,-46.63"`: latitude and longitude in degrees (SAGI's
    /// `georef_location`), inside Brazil's bounding box.
    LatLon,
    /// A postal code: 8 digits, `-` and `.` allowed between them.
    Cep,
    /// A municipality's name, looked up with the row's `uf` column (case,
    /// accents and punctuation ignored; a name two municipalities of one
    /// state share matches neither). Files of counts only (`aggregates`):
    /// such a file names places, never people.
    MunicipalityName,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Privacy {
    Keep,
    Hash,
    #[default]
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Column {
    /// Stable identifier (attribute key, reject column label).
    pub(crate) name: String,
    pub(crate) header: String,
    #[serde(default)]
    pub(crate) aliases: Vec<String>,
    #[serde(rename = "type")]
    pub(crate) column_type: ColumnType,
    #[serde(default)]
    pub(crate) role: Option<Role>,
    #[serde(default)]
    pub(crate) privacy: Privacy,
    /// Missing from the header is allowed (layouts changed over the years).
    #[serde(default)]
    pub(crate) optional: bool,
    /// Values meaning "no NIS" although they look like one.
    #[serde(default)]
    pub(crate) sentinels: Vec<String>,
    /// For the `state` role: the shipped table mapping its values to states
    /// (`jobs/reference/<map>.csv`).
    #[serde(default)]
    pub(crate) map: Option<String>,
    /// For a `state_level` value: the same on every part of an approval,
    /// taken once (ANEEL's DMR repeats on its five bands); parts that
    /// disagree fail the load.
    #[serde(default)]
    pub(crate) repeated: bool,
    /// An empty field means "absent" (NULL, never 0) instead of a reject.
    #[serde(default)]
    pub(crate) blank_is_absent: bool,
    /// For the `measure` role: the target table's column it fills.
    #[serde(default)]
    pub(crate) measure: Option<String>,
    /// For the `field` role: the target table's text column it fills.
    #[serde(default)]
    pub(crate) field: Option<String>,
    /// The only value the column may hold (`"MUNICIPAL"`): another is a
    /// reject naming it (what a query's filter should have left out).
    #[serde(default)]
    pub(crate) equals: Option<String>,
}

/// What a layout's rows are, for the roles its columns must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// One row per payment; `reference_required` for the first layout.
    Payments { reference_required: bool },
    /// One row per municipality and period, already counted.
    Tabulated,
    /// Rows that map to a state through a shipped table, in parts and
    /// approvals (`state_level`).
    StateLevel,
    /// One row per place, by a natural key (`places`).
    Places,
    /// GeoJSON features keyed by one property (`boundaries`).
    Boundaries,
}

/// Checks a layout's columns. A payments layout has exactly one
/// municipality, beneficiary and value column; the first also exactly one
/// reference month, another may have none: its rows then belong to the
/// period being loaded. A tabulated layout has exactly one reference month
/// (each row's period) and municipality, and at least one of the
/// beneficiaries, families and value columns; no NIS.
pub(super) fn validate_columns(columns: &[Column], shape: Shape) -> Result<(), String> {
    let mut names = BTreeMap::new();
    for (i, c) in columns.iter().enumerate() {
        let key = format!("columns[{i}]");
        if !is_identifier(&c.name, '_') {
            return Err(format!(
                "{key}.name: {:?} must be lower case letters, digits and '_'",
                c.name
            ));
        }
        if names.insert(c.name.clone(), i).is_some() {
            return Err(format!("{key}.name: {:?} is used twice", c.name));
        }
        if c.header.trim().is_empty() {
            return Err(format!("{key}.header: must not be empty"));
        }
        let expected: &[ColumnType] = match c.role {
            Some(Role::ReferenceMonth) | Some(Role::CompetenceMonth) => {
                &[ColumnType::Yyyymm, ColumnType::MmYyyy, ColumnType::Yyyy]
            }
            Some(Role::Municipality) => &[
                ColumnType::Siafi,
                ColumnType::Ibge,
                ColumnType::Ibge6,
                ColumnType::MunicipalityName,
            ],
            Some(Role::Uf) => &[ColumnType::Text],
            Some(Role::Beneficiary) => &[ColumnType::Nis],
            Some(Role::Value) => &[
                ColumnType::Brl,
                ColumnType::BrlPoint,
                ColumnType::DecimalComma,
            ],
            Some(Role::Beneficiaries) | Some(Role::Families) => {
                &[ColumnType::Count, ColumnType::Integer]
            }
            Some(Role::State) => &[ColumnType::Cnpj],
            Some(Role::Version) => &[ColumnType::IsoDate, ColumnType::Despacho],
            Some(Role::Part) => &[ColumnType::Count, ColumnType::Text],
            Some(Role::Measure) => &[ColumnType::Count, ColumnType::Integer],
            Some(Role::Key) => &[ColumnType::Text, ColumnType::Integer, ColumnType::Ibge],
            Some(Role::PlaceName) => &[ColumnType::Text],
            Some(Role::Field) => &[ColumnType::Text, ColumnType::Cep],
            Some(Role::Location) => &[ColumnType::LatLon],
            None => &[ColumnType::Text, ColumnType::Nis, ColumnType::Yyyymm],
        };
        if !expected.contains(&c.column_type) {
            return Err(format!(
                "{key}.type: {:?} does not fit role {:?}",
                c.column_type, c.role
            ));
        }
        if c.column_type == ColumnType::Nis && c.privacy == Privacy::Keep {
            return Err(format!(
                "{key}.privacy: NIS is personal data and is stored only as a keyed hash; use \"hash\" or \"drop\""
            ));
        }
        if c.privacy == Privacy::Keep && is_personal(c) {
            return Err(format!(
                "{key}.privacy: column {:?} ({:?}) holds personal data (a name, CPF, NIS or another identifier of a person) and cannot be \"keep\"; use \"drop\" (the default) or \"hash\"",
                c.name, c.header
            ));
        }
        if c.role == Some(Role::Beneficiary) && c.privacy != Privacy::Hash {
            return Err(format!(
                "{key}.privacy: the beneficiary column must be \"hash\""
            ));
        }
        if c.role.is_some() && c.role != Some(Role::CompetenceMonth) && c.optional {
            return Err(format!(
                "{key}.optional: a {:?} column cannot be optional",
                c.role
            ));
        }
    }
    let count = |role: Role| columns.iter().filter(|c| c.role == Some(role)).count();
    let (exactly_one, at_most_one, forbidden): (&[Role], &[Role], &[Role]) = match shape {
        Shape::Payments { .. } => (
            &[Role::Municipality, Role::Beneficiary, Role::Value],
            &[Role::ReferenceMonth, Role::CompetenceMonth],
            &[Role::Beneficiaries, Role::Families],
        ),
        Shape::Tabulated => (
            &[Role::ReferenceMonth, Role::Municipality],
            &[
                Role::Beneficiaries,
                Role::Families,
                Role::Value,
                Role::Part,
                Role::Uf,
            ],
            &[
                Role::Beneficiary,
                Role::CompetenceMonth,
                Role::State,
                Role::Version,
            ],
        ),
        Shape::Places => (
            &[Role::Key, Role::Municipality, Role::PlaceName],
            &[Role::Location],
            &[
                Role::ReferenceMonth,
                Role::CompetenceMonth,
                Role::Beneficiary,
                Role::Value,
                Role::Beneficiaries,
                Role::Families,
                Role::State,
                Role::Version,
                Role::Part,
                Role::Measure,
            ],
        ),
        Shape::Boundaries => (
            &[Role::Key],
            &[],
            &[
                Role::ReferenceMonth,
                Role::CompetenceMonth,
                Role::Municipality,
                Role::Beneficiary,
                Role::Value,
                Role::Beneficiaries,
                Role::Families,
                Role::State,
                Role::Version,
                Role::Part,
                Role::Measure,
                Role::PlaceName,
                Role::Field,
                Role::Location,
            ],
        ),
        Shape::StateLevel => (
            &[Role::ReferenceMonth, Role::State],
            &[Role::Families, Role::Value, Role::Part],
            &[
                Role::Beneficiary,
                Role::CompetenceMonth,
                Role::Municipality,
                Role::Measure,
            ],
        ),
    };
    for &role in exactly_one {
        let found = count(role);
        if found != 1 {
            return Err(format!(
                "columns: exactly one column must have role {role:?} (found {found})"
            ));
        }
    }
    for &role in at_most_one {
        let found = count(role);
        let required = role == Role::ReferenceMonth
            && shape
                == (Shape::Payments {
                    reference_required: true,
                });
        if found > 1 || (required && found == 0) {
            return Err(format!(
                "columns: {} column may have role {role:?} (found {found})",
                if required {
                    "exactly one"
                } else {
                    "at most one"
                }
            ));
        }
    }
    for &role in forbidden {
        if count(role) > 0 {
            return Err(format!(
                "columns: role {role:?} does not fit a {} dataset",
                match shape {
                    Shape::Payments { .. } => "payments",
                    Shape::Tabulated => "aggregates",
                    Shape::StateLevel => "state_level",
                    Shape::Places => "places",
                    Shape::Boundaries => "boundaries",
                }
            ));
        }
    }
    if shape == Shape::StateLevel {
        if count(Role::Version) > 2 {
            return Err("columns: at most two columns may have role Version".into());
        }
        for (i, c) in columns.iter().enumerate() {
            if c.role == Some(Role::State) && c.map.is_none() {
                return Err(format!(
                    "columns[{i}].map: the state column names the shipped table that maps it to a state"
                ));
            }
        }
    }
    for (i, c) in columns.iter().enumerate() {
        if c.repeated && (shape != Shape::StateLevel || c.role != Some(Role::Value)) {
            return Err(format!(
                "columns[{i}].repeated: only a state_level dataset's value column may be repeated"
            ));
        }
        if c.map.is_some() && c.role != Some(Role::State) {
            return Err(format!("columns[{i}].map: only the state column has a map"));
        }
        match (&c.measure, c.role) {
            (None, Some(Role::Measure)) => {
                return Err(format!(
                    "columns[{i}].measure: a measure column names the target column it fills"
                ));
            }
            (Some(_), Some(Role::Measure)) => {}
            (Some(_), _) => {
                return Err(format!(
                    "columns[{i}].measure: only a column with role \"measure\" names one"
                ));
            }
            (None, _) => {}
        }
        if c.field.is_some() != (c.role == Some(Role::Field)) {
            return Err(format!(
                "columns[{i}].field: a column with role \"field\" names the target column it fills, and only it"
            ));
        }
        let stored = matches!(c.role, Some(Role::PlaceName | Role::Field | Role::Key));
        if stored && c.privacy != Privacy::Keep {
            return Err(format!(
                "columns[{i}].privacy: a {:?} column is stored as it is: say \"keep\"",
                c.role
            ));
        }
    }
    let by_name = columns
        .iter()
        .any(|c| c.column_type == ColumnType::MunicipalityName);
    if by_name != (count(Role::Uf) == 1) || (by_name && shape != Shape::Tabulated) {
        return Err(
            "columns: a municipality_name column (aggregates only) needs exactly one column with role \"uf\", and only it"
                .into(),
        );
    }
    for (i, c) in columns.iter().enumerate() {
        if c.equals.is_some() && shape != Shape::Tabulated {
            return Err(format!(
                "columns[{i}].equals: only an aggregates dataset's column may say it"
            ));
        }
        if c.role == Some(Role::Part)
            && c.column_type != ColumnType::Count
            && shape != Shape::Tabulated
        {
            return Err(format!(
                "columns[{i}].type: a state_level part is a count (its band's number)"
            ));
        }
    }
    if matches!(shape, Shape::Places | Shape::Boundaries) {
        return Ok(());
    }
    if shape
        != (Shape::Payments {
            reference_required: true,
        })
        && shape
            != (Shape::Payments {
                reference_required: false,
            })
        && [
            Role::Beneficiaries,
            Role::Families,
            Role::Value,
            Role::Measure,
        ]
        .iter()
        .all(|r| count(*r) == 0)
    {
        return Err(
            "columns: a dataset of counts needs a Beneficiaries, Families, Value or Measure column"
                .into(),
        );
    }
    Ok(())
}

/// Words that make a column personal wherever they appear in its header, an
/// alias or its name: identifiers of a person.
const PERSONAL_WORDS: &[&str] = &[
    "CPF", "NIS", "PIS", "PASEP", "NIT", "RGP", "RG", "CNH", "TITULO", "CNS", "CAF", "DAP",
];
/// Words that make a column personal unless a place word says whose it is
/// (`NOME MUNICÍPIO` is a place's name, `NOME FAVORECIDO` a person's).
const NAME_WORDS: &[&str] = &[
    "NOME",
    "NAME",
    "FAVORECIDO",
    "BENEFICIARIO",
    "REPRESENTANTE",
    // SAGI's equipment register names the person in charge (`responsavel`).
    "RESPONSAVEL",
];
/// Words naming a place's staff: a places column that has one is about a
/// person (`nome_coordenador`, `telefone_tecnico`).
const STAFF_WORDS: &[&str] = &[
    "COORDENADOR",
    "COORDENADORA",
    "COORDENACAO",
    "TECNICO",
    "TECNICA",
    "GESTOR",
    "GESTORA",
    "DIRETOR",
    "DIRETORA",
    "SERVIDOR",
    "SERVIDORA",
    "CONTATO",
    "PESSOA",
];
const PLACE_WORDS: &[&str] = &[
    "MUNICIPIO",
    "MUNICIPALITY",
    "UF",
    "ESTADO",
    "STATE",
    "PROGRAMA",
    "PROGRAM",
];

/// Whether a spec column holds personal data: a NIS by type or role, or a
/// header, alias or name that names a person's identifier (CPF, NIS, …), a
/// person's name (`NOME …` but not a place's), or a benefit number.
/// Deliberately broad: a false positive only means the column cannot be
/// kept in clear (it can still be hashed).
pub(super) fn is_personal(column: &Column) -> bool {
    if column.column_type == ColumnType::Nis || column.role == Some(Role::Beneficiary) {
        return true;
    }
    // A place's own name (`nome` of a CRAS) names no person; an identifier
    // of a person in its header still does.
    let place_name = column.role == Some(Role::PlaceName);
    // A place's column about its staff (`nome_coordenador`,
    // `telefone_tecnico`) is about a person.
    let place_column = matches!(column.role, Some(Role::PlaceName | Role::Field));
    let names = std::iter::once(column.header.as_str())
        .chain(column.aliases.iter().map(String::as_str))
        .chain(std::iter::once(column.name.as_str()));
    names.into_iter().any(|text| {
        let key = header_key(text);
        let words: Vec<&str> = key
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let has = |list: &[&str]| words.iter().any(|w| list.contains(w));
        has(PERSONAL_WORDS)
            || (place_column && has(STAFF_WORDS))
            || (has(NAME_WORDS) && !has(PLACE_WORDS) && (!place_name || has(&NAME_WORDS[2..])))
            || (has(&["NUMERO", "NUMBER"]) && has(&["BENEFICIO", "BENEFIT"]))
    })
}

pub(super) fn is_identifier(text: &str, separator: char) -> bool {
    !text.is_empty()
        && text.len() <= 48
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == separator)
}

/// Header comparison key: upper case, accents removed, spaces collapsed.
pub(crate) fn header_key(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.trim().trim_start_matches('\u{feff}').chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        for u in c.to_uppercase() {
            out.push(strip_accent(u));
        }
    }
    out
}

fn strip_accent(c: char) -> char {
    match c {
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => 'A',
        'Ç' => 'C',
        'È' | 'É' | 'Ê' | 'Ë' => 'E',
        'Ì' | 'Í' | 'Î' | 'Ï' => 'I',
        'Ñ' => 'N',
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' => 'O',
        'Ù' | 'Ú' | 'Û' | 'Ü' => 'U',
        'Ý' => 'Y',
        other => other,
    }
}
