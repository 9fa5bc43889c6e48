//! Dataset specs (`jobs/*.toml`): typed and validated once, at load, with
//! errors naming the file and key. A spec says where a dataset's monthly file
//! lives, how its bytes are packed and encoded, which header names map to
//! which field (with the aliases seen over the years), each column's type and
//! privacy policy, the quality gates and the schedule.

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod columns;
mod layout;
mod maps;
mod period;
mod schedule;
mod sections;

pub(crate) use columns::{Column, ColumnType, Privacy, Role, header_key};
use columns::{Shape, is_identifier, validate_columns};
pub(crate) use layout::Layout;
use layout::RawLayout;
pub(crate) use maps::StateMap;
pub(crate) use period::PeriodFilter;
pub use period::{Period, PeriodOutOfBounds};
use schedule::RawCadence;
pub(crate) use schedule::{Cadence, CatchUp, Schedule};
pub use sections::Program;
pub(crate) use sections::{
    CADUNICO_MEASURES, Container, Encoding, Kind, Protocol, Quality, Source, Target,
};
use sections::{MAX_PAYMENT_BRL_LIMIT, MAX_TOTAL_BRL_LIMIT};

/// Specs compiled into the binary, used when the jobs directory is missing.
const BUILTIN: &[(&str, &str)] = &[
    (
        "auxilio-brasil.toml",
        include_str!("../../jobs/auxilio-brasil.toml"),
    ),
    (
        "bolsa-familia-pagamentos.toml",
        include_str!("../../jobs/bolsa-familia-pagamentos.toml"),
    ),
    ("bpc.toml", include_str!("../../jobs/bpc.toml")),
    ("cadunico.toml", include_str!("../../jobs/cadunico.toml")),
    ("cras.toml", include_str!("../../jobs/cras.toml")),
    (
        "dignidade-menstrual.toml",
        include_str!("../../jobs/dignidade-menstrual.toml"),
    ),
    (
        "farmacia-popular.toml",
        include_str!("../../jobs/farmacia-popular.toml"),
    ),
    (
        "garantia-safra.toml",
        include_str!("../../jobs/garantia-safra.toml"),
    ),
    (
        "malhas-estados.toml",
        include_str!("../../jobs/malhas-estados.toml"),
    ),
    (
        "malhas-municipios.toml",
        include_str!("../../jobs/malhas-municipios.toml"),
    ),
    (
        "municipios.toml",
        include_str!("../../jobs/municipios.toml"),
    ),
    (
        "novo-bolsa-familia.toml",
        include_str!("../../jobs/novo-bolsa-familia.toml"),
    ),
    ("pnae.toml", include_str!("../../jobs/pnae.toml")),
    ("populacao.toml", include_str!("../../jobs/populacao.toml")),
    (
        "seguro-defeso.toml",
        include_str!("../../jobs/seguro-defeso.toml"),
    ),
    ("tsee.toml", include_str!("../../jobs/tsee.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("failed to read {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown dataset {name:?}; known datasets: {known}")]
    Unknown { name: String, known: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    dataset: String,
    title: String,
    kind: Kind,
    #[serde(default)]
    program: Option<Program>,
    source: Source,
    #[serde(default)]
    columns: Vec<Column>,
    #[serde(default)]
    quality: Quality,
    #[serde(default)]
    schedule: Option<Schedule>,
    #[serde(default)]
    layouts: Vec<RawLayout>,
    #[serde(default)]
    cadence: Option<RawCadence>,
    #[serde(default)]
    target: Target,
}

/// A validated dataset spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub(crate) dataset: String,
    pub(crate) title: String,
    pub(crate) kind: Kind,
    pub program: Option<Program>,
    pub(crate) source: Source,
    pub(crate) quality: Quality,
    pub(crate) schedule: Option<Schedule>,
    /// Which months the dataset has (monthly unless `[cadence]` says).
    pub(crate) cadence: Cadence,
    /// The API table an `aggregates` dataset writes.
    pub(crate) target: Target,
    /// The file's layouts, the one of `[source]` and `[[columns]]` first
    /// (payments datasets; a reference dataset has only that one).
    pub(crate) layouts: Vec<Layout>,
    pub(crate) first_period: Option<Period>,
    pub(crate) last_period: Option<Period>,
    /// A `state_level` dataset's shipped key → state table (read with the
    /// specs, see [`load_all`]).
    pub(crate) state_map: Option<std::sync::Arc<StateMap>>,
    /// Where the spec came from, for messages.
    pub(crate) origin: String,
}

impl Spec {
    pub(crate) fn parse(origin: &str, text: &str) -> Result<Spec, SpecError> {
        let invalid = |message: String| SpecError::Invalid {
            file: origin.to_string(),
            message,
        };
        let raw: RawSpec =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim().to_string()))?;
        if !is_identifier(&raw.dataset, '-') {
            return Err(invalid(format!(
                "dataset: {:?} must be lower case letters, digits and '-'",
                raw.dataset
            )));
        }
        let delimiter =
            layout::delimiter("source.delimiter", &raw.source.delimiter).map_err(invalid)?;
        let period = |key: &str, value: &Option<String>| -> Result<Option<Period>, SpecError> {
            match value {
                None => Ok(None),
                Some(v) => Period::parse(v)
                    .map(Some)
                    .ok_or_else(|| invalid(format!("source.{key}: {v:?} is not YYYY-MM"))),
            }
        };
        let first_period = period("first_period", &raw.source.first_period)?;
        let cadence = Cadence::from_raw(raw.cadence.as_ref()).map_err(invalid)?;
        let last_period = period("last_period", &raw.source.last_period)?;
        if let Some(s) = &raw.schedule {
            if s.cron.split_whitespace().count() != 6 {
                return Err(invalid(format!(
                    "schedule.cron: {:?} must have six fields (sec min hour day month weekday)",
                    s.cron
                )));
            }
            let cron = s
                .parsed()
                .map_err(|e| invalid(format!("schedule.cron: {:?}: {e}", s.cron)))?;
            // A pattern that parses may still never fire (`0 0 3 31 2 *`,
            // 31 February): it must fire within the next 30 years (28
            // years repeat the calendar, weekdays and leap days included).
            let now = chrono::Utc::now();
            let fires = cron
                .find_next_occurrence(&now, false)
                .is_ok_and(|next| next - now < chrono::Duration::days(30 * 366));
            if !fires {
                return Err(invalid(format!(
                    "schedule.cron: {:?} never fires (no such date in the next 30 years)",
                    s.cron
                )));
            }
            if s.timezone.parse::<chrono_tz::Tz>().is_err() {
                return Err(invalid(format!(
                    "schedule.timezone: unknown time zone {:?}",
                    s.timezone
                )));
            }
        }
        let q = &raw.quality;
        if !(0.0..=1.0).contains(&q.max_reject_ratio) {
            return Err(invalid(
                "quality.max_reject_ratio: must be between 0 and 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&q.max_shrink) {
            return Err(invalid(
                "quality.max_shrink: must be between 0 and 1".into(),
            ));
        }
        // A file of counts carries a place's total (a year's transfers to
        // a city), not one payment: a higher ceiling, still far from i64
        // cents and from numeric(15, 2) when summed over the country.
        let ceiling = if raw.kind == Kind::Payments {
            MAX_PAYMENT_BRL_LIMIT
        } else {
            MAX_TOTAL_BRL_LIMIT
        };
        if !(1..=ceiling).contains(&q.max_payment_brl) {
            return Err(invalid(format!(
                "quality.max_payment_brl: must be between 1 and {ceiling} (whole reais)"
            )));
        }
        if raw.kind != Kind::Reference && (raw.target.needs_program() || raw.program.is_some()) {
            let Some(program) = &raw.program else {
                return Err(invalid(format!(
                    "program: a {} dataset needs a [program] table",
                    raw.kind.as_str()
                )));
            };
            if !is_program_code(&program.code) {
                return Err(invalid(format!(
                    "program.code: {:?} must be upper case letters, digits and '_'",
                    program.code
                )));
            }
        }
        if raw.kind == Kind::Payments {
            validate_columns(
                &raw.columns,
                Shape::Payments {
                    reference_required: true,
                },
            )
            .map_err(invalid)?;
            let url = &raw.source.url;
            let has_month =
                url.contains("{yyyymm}") || (url.contains("{yyyy}") && url.contains("{mm}"));
            if !has_month {
                return Err(invalid(format!(
                    "source.url: {:?} must contain {{yyyymm}} (or {{yyyy}} and {{mm}})",
                    raw.source.url
                )));
            }
        }
        if raw.kind == Kind::Aggregates {
            validate_columns(&raw.columns, Shape::Tabulated).map_err(invalid)?;
            // A rejected part (a modality's row) would leave its place's
            // sum partial, published as the total: no reject is allowed.
            let parted = raw.columns.iter().any(|c| c.role == Some(Role::Part));
            if parted && (q.reject_allowance > 0 || q.max_reject_ratio > 0.0) {
                return Err(invalid(
                    "quality: rows in parts (a part column) allow no reject (reject_allowance = 0, max_reject_ratio = 0): a rejected part would leave its place's sum partial".into(),
                ));
            }
        }
        let has = |role: Role| raw.columns.iter().any(|c| c.role == Some(role));
        match raw.target {
            Target::CadunicoData | Target::MunicipalitiesPopulation => {
                if raw.kind != Kind::Aggregates
                    || has(Role::Beneficiaries)
                    || has(Role::Families)
                    || has(Role::Value)
                {
                    return Err(invalid(
                        "target: cadunico_data and municipalities_population are written by an aggregates dataset whose figures are measure columns".into(),
                    ));
                }
                for (i, c) in raw.columns.iter().enumerate() {
                    if let Some(m) = &c.measure {
                        if !raw.target.measures().contains(&m.as_str()) {
                            return Err(invalid(format!(
                                "columns[{i}].measure: {m:?} is not a figure this target has ({})",
                                raw.target.measures().join(", ")
                            )));
                        }
                    }
                }
            }
            Target::BeneficiaryData if has(Role::Measure) => {
                return Err(invalid(
                    "columns: measure columns need target = \"cadunico_data\"".into(),
                ));
            }
            Target::BeneficiaryData => {}
            Target::MunicipalitiesGeometry | Target::StatesGeometry => {
                if raw.kind != Kind::Boundaries {
                    return Err(invalid(
                        "target: municipalities_geometry and states_geometry are written by a boundaries dataset".into(),
                    ));
                }
            }
            Target::CrasLocations => {
                if raw.kind != Kind::Places {
                    return Err(invalid(
                        "target: cras_locations is written by a places dataset".into(),
                    ));
                }
            }
        }
        if raw.kind == Kind::Places {
            validate_columns(&raw.columns, Shape::Places).map_err(invalid)?;
            if raw.target != Target::CrasLocations {
                return Err(invalid(
                    "target: a places dataset names the table it writes (\"cras_locations\")"
                        .into(),
                ));
            }
            let fields = raw.target.place_fields();
            for (i, c) in raw.columns.iter().enumerate() {
                if let Some(f) = &c.field {
                    if f == fields[0].0 || !fields.iter().any(|(name, _)| name == f) {
                        return Err(invalid(format!(
                            "columns[{i}].field: {f:?} is not a text column this target has besides the place name ({})",
                            fields[1..]
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
            }
            if ["{yyyymm}", "{yyyy}", "{mm}"]
                .iter()
                .any(|p| raw.source.url.contains(p))
                || raw.cadence.is_some()
            {
                return Err(invalid(
                    "source.url: a places dataset is a snapshot with no period: no {yyyymm}, {yyyy}, {mm} or [cadence]".into(),
                ));
            }
        }
        if raw.kind == Kind::Boundaries {
            validate_columns(&raw.columns, Shape::Boundaries).map_err(invalid)?;
            let key_type = match raw.target {
                Target::MunicipalitiesGeometry => ColumnType::Ibge,
                Target::StatesGeometry => ColumnType::Integer,
                _ => {
                    return Err(invalid(
                        "target: a boundaries dataset writes municipalities_geometry or states_geometry".into(),
                    ));
                }
            };
            if raw.columns.iter().any(|c| c.column_type != key_type) {
                return Err(invalid(format!(
                    "columns: the key of {:?} features is of type {key_type:?}",
                    raw.target
                )));
            }
            let url = &raw.source.url;
            let plain = raw.source.container == Container::Plain
                && raw.source.encoding == Encoding::Utf8
                && raw.source.protocol == Protocol::Geojson;
            if !plain || !url.contains("{uf}") || raw.cadence.is_some() || url.contains("{yyyy") {
                return Err(invalid(format!(
                    "source: a boundaries dataset reads GeoJSON (protocol \"geojson\", container \"plain\", encoding \"utf-8\") from a url with {{uf}} (one request per state) and no period; found {url:?}"
                )));
            }
        } else if raw.source.protocol == Protocol::Geojson {
            return Err(invalid(
                "source.protocol: geojson is read by a boundaries dataset".into(),
            ));
        }
        if raw.source.protocol != Protocol::File && raw.source.protocol != Protocol::Geojson {
            let plain = raw.source.container == Container::Plain
                && raw.source.encoding == Encoding::Utf8
                && raw.source.delimiter == ",";
            let kind_reads = raw.kind.is_tabulated() || raw.kind == Kind::Places;
            if !plain || !kind_reads || !raw.layouts.is_empty() {
                return Err(invalid(
                    "source.protocol: a solr, odata or sidra source is read as one CSV (container \"plain\", encoding \"utf-8\", delimiter \",\", no [[layouts]]) by an aggregates, state_level or places dataset".into(),
                ));
            }
            let url = &raw.source.url;
            if ["start=", "rows=", "$skip=", "$top="]
                .iter()
                .any(|p| url.contains(p))
            {
                return Err(invalid(format!(
                    "source.url: {url:?} must not set start=, rows=, $skip= or $top=: carga pages the query (page_rows)"
                )));
            }
            if !(1..=100_000).contains(&raw.source.page_rows) {
                return Err(invalid(
                    "source.page_rows: must be between 1 and 100000".into(),
                ));
            }
        }
        if raw.kind == Kind::StateLevel {
            validate_columns(&raw.columns, Shape::StateLevel).map_err(invalid)?;
        }
        // The Portal redirects to the file only from the URL without a
        // trailing slash (basedosdados/pipelines issue 1598, June 2026).
        if raw.source.url.ends_with('/') {
            return Err(invalid(format!(
                "source.url: {:?} must not end in '/' (the Portal redirects to the file only without it)",
                raw.source.url
            )));
        }
        let first = Layout {
            name: raw.source.layout.clone(),
            delimiter,
            encoding: raw.source.encoding,
            columns: raw.columns.clone(),
        };
        if !is_identifier(&first.name, '-') {
            return Err(invalid(format!(
                "source.layout: {:?} must be lower case letters, digits and '-'",
                first.name
            )));
        }
        if raw.kind.is_snapshot() && !raw.layouts.is_empty() {
            return Err(invalid(format!(
                "layouts: {} data has one layout",
                raw.kind.as_str()
            )));
        }
        let shape = match raw.kind {
            Kind::Aggregates => Shape::Tabulated,
            Kind::StateLevel => Shape::StateLevel,
            _ => Shape::Payments {
                reference_required: false,
            },
        };
        let mut layouts = vec![first];
        for (i, raw_layout) in raw.layouts.into_iter().enumerate() {
            let layout = layout::build(&layouts[0], raw_layout, i, shape).map_err(invalid)?;
            if layouts.iter().any(|l| l.name == layout.name) {
                return Err(invalid(format!(
                    "layouts[{i}].name: {:?} is used twice",
                    layout.name
                )));
            }
            layouts.push(layout);
        }
        Ok(Spec {
            dataset: raw.dataset,
            title: raw.title,
            kind: raw.kind,
            program: raw.program,
            source: raw.source,
            quality: raw.quality,
            schedule: raw.schedule,
            cadence,
            target: raw.target,
            layouts,
            first_period,
            last_period,
            state_map: None,
            origin: origin.to_string(),
        })
    }

    /// One download holds every period (a file of counts whose URL names no
    /// month: Farmácia Popular's, TSEE's); a per-month query of counts
    /// (CadÚnico's, the population's) is run per period like a payments
    /// file.
    pub(crate) fn one_file(&self) -> bool {
        let url = &self.source.url;
        self.kind.is_tabulated()
            && !["{yyyymm}", "{yyyy}", "{mm}"]
                .iter()
                .any(|p| url.contains(p))
    }

    /// Whether rows come in parts summed per place (a `part` column).
    pub(crate) fn has_parts(&self) -> bool {
        self.layouts[0]
            .columns
            .iter()
            .any(|c| c.role == Some(Role::Part))
    }

    /// Whether the file has a value (money) column: a file of counts alone
    /// (Farmácia Popular) has none, and no value is ever made up for it.
    pub(crate) fn has_value(&self) -> bool {
        self.layouts
            .iter()
            .flat_map(|l| &l.columns)
            .any(|c| c.role == Some(Role::Value))
    }

    /// A `state_level` value column said once per approval (repeated on its
    /// parts): its header, for messages.
    pub(crate) fn repeated_value(&self) -> Option<String> {
        self.layouts[0]
            .columns
            .iter()
            .find(|c| c.role == Some(Role::Value) && c.repeated)
            .map(|c| c.header.clone())
    }

    /// The source URL for `period`.
    pub(crate) fn url_for(&self, period: Period) -> String {
        self.source
            .url
            .replace("{yyyymm}", &format!("{:06}", period.yyyymm()))
            .replace("{yyyy}", &format!("{:04}", period.year))
            .replace("{mm}", &format!("{:02}", period.month))
    }
}

fn is_program_code(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 40
        && text.starts_with(|c: char| c.is_ascii_uppercase())
        && text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Every spec: from `dir` when it exists (each `*.toml`), else the built-in ones.
pub fn load_all(dir: &Path) -> Result<Vec<Spec>, SpecError> {
    let mut specs = Vec::new();
    if dir.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| SpecError::Io {
                file: dir.display().to_string(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| SpecError::Io {
                file: file.display().to_string(),
                source,
            })?;
            specs.push(Spec::parse(&file.display().to_string(), &text)?);
        }
    } else {
        for (name, text) in BUILTIN {
            specs.push(Spec::parse(&format!("builtin:jobs/{name}"), text)?);
        }
    }
    for spec in &mut specs {
        let map = spec.layouts[0]
            .columns
            .iter()
            .find(|c| c.role == Some(Role::State))
            .and_then(|c| c.map.clone());
        if let Some(name) = map {
            let table = StateMap::load(dir, &name).map_err(|message| SpecError::Invalid {
                file: spec.origin.clone(),
                message: format!("columns: map {name:?}: {message}"),
            })?;
            spec.state_map = Some(std::sync::Arc::new(table));
        }
    }
    let mut seen = BTreeMap::new();
    for spec in &specs {
        if let Some(other) = seen.insert(spec.dataset.clone(), spec.origin.clone()) {
            return Err(SpecError::Invalid {
                file: spec.origin.clone(),
                message: format!("dataset: {:?} is also defined in {other}", spec.dataset),
            });
        }
    }
    Ok(specs)
}

/// The spec named `name`.
pub fn find(dir: &Path, name: &str) -> Result<Spec, SpecError> {
    let specs = load_all(dir)?;
    let known = specs
        .iter()
        .map(|s| s.dataset.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    specs
        .into_iter()
        .find(|s| s.dataset == name)
        .ok_or_else(|| SpecError::Unknown {
            name: name.chars().take(64).collect(),
            known,
        })
}

#[cfg(test)]
mod tests {

    #[test]
    fn period_ranges_cross_years() {
        let p = |t: &str| Period::parse(t).expect("period");
        let text: Vec<String> = Period::range(p("2013-11"), p("2014-02"))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(text, ["2013-11", "2013-12", "2014-01", "2014-02"]);
        assert_eq!(Period::range(p("2013-01"), p("2021-10")).len(), 106);
        assert!(Period::range(p("2014-01"), p("2013-01")).is_empty());
    }

    use super::*;

    #[test]
    fn builtin_specs_are_valid() {
        let specs = load_all(Path::new("/nonexistent")).expect("builtin specs parse");
        let names: Vec<&str> = specs.iter().map(|s| s.dataset.as_str()).collect();
        for want in [
            "novo-bolsa-familia",
            "bolsa-familia-pagamentos",
            "auxilio-brasil",
            "bpc",
            "seguro-defeso",
            "garantia-safra",
            "municipios",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }

    #[test]
    fn periods() {
        assert_eq!(
            Period::parse("2024-10"),
            Some(Period {
                year: 2024,
                month: 10
            })
        );
        assert_eq!(Period::parse("202410"), Period::parse("2024-10"));
        assert_eq!(Period::parse("2024-13"), None);
        assert_eq!(Period::parse("24-10"), None);
        assert_eq!(
            Period::parse("2024-10").map(|p| p.to_string()),
            Some("2024-10".into())
        );
    }

    #[test]
    fn header_keys_ignore_case_accents_and_spacing() {
        assert_eq!(
            header_key("Código SIAFI  Município"),
            "CODIGO SIAFI MUNICIPIO"
        );
        assert_eq!(header_key("\u{feff}MÊS REFERÊNCIA "), "MES REFERENCIA");
    }

    /// cras.toml with one more column, `extra`.
    fn cras_with(extra: &str) -> Result<Spec, SpecError> {
        let text = format!(
            "{}\n[[columns]]\n{extra}\n",
            include_str!("../../jobs/cras.toml")
        );
        Spec::parse("jobs/cras.toml", &text)
    }

    #[test]
    fn a_places_spec_keeps_a_place_name_but_never_a_person() {
        let spec = cras_with("name = \"extra\"\nheader = \"bairro2\"\ntype = \"text\"")
            .expect("cras with a dropped column");
        assert_eq!(spec.kind, Kind::Places);
        // The person in charge, kept as a field: refused.
        let err = cras_with(
            "name = \"chefe\"\nheader = \"responsavel\"\ntype = \"text\"\nrole = \"field\"\nfield = \"bairro\"\nprivacy = \"keep\"",
        )
        .expect_err("a person's name");
        assert!(err.to_string().contains("holds personal data"), "{err}");
        // A name column that is not the place's: refused.
        let err = cras_with(
            "name = \"nome_coordenador\"\nheader = \"nome\"\ntype = \"text\"\nrole = \"field\"\nfield = \"bairro\"\nprivacy = \"keep\"",
        )
        .expect_err("a person's name");
        assert!(err.to_string().contains("holds personal data"), "{err}");
        // Its staff, even as the place's name: refused.
        let err = cras_with(
            "name = \"coordenador\"\nheader = \"coordenador\"\ntype = \"text\"\nrole = \"field\"\nfield = \"bairro\"\nprivacy = \"keep\"",
        )
        .expect_err("staff");
        assert!(err.to_string().contains("holds personal data"), "{err}");
        // An email names a person more often than an office: no field.
        let err = cras_with(
            "name = \"mail\"\nheader = \"email\"\ntype = \"text\"\nrole = \"field\"\nfield = \"email\"\nprivacy = \"keep\"",
        )
        .expect_err("email");
        assert!(err.to_string().contains("not a text column"), "{err}");
        // Not a column of the target.
        let err = cras_with(
            "name = \"x\"\nheader = \"x\"\ntype = \"text\"\nrole = \"field\"\nfield = \"servicos\"\nprivacy = \"keep\"",
        )
        .expect_err("no such field");
        assert!(err.to_string().contains("columns[9].field"), "{err}");
        // A snapshot has no period.
        let text = include_str!("../../jobs/cras.toml").replace("wt=json", "wt=json&fq=ano:{yyyy}");
        let err = Spec::parse("cras.toml", &text).expect_err("a period");
        assert!(err.to_string().contains("no period"), "{err}");
    }

    /// bpc.toml with one more column, `extra`, appended to the list.
    fn bpc_with(extra: &str) -> Result<Spec, SpecError> {
        let text = include_str!("../../jobs/bpc.toml").replacen(
            "[quality]",
            &format!("[[columns]]\n{extra}\n\n[quality]"),
            1,
        );
        Spec::parse("jobs/bpc.toml", &text)
    }

    /// bolsa-familia-pagamentos with its `[[layouts]]` replaced by `layouts`.
    fn bfp_with_layouts(layouts: &str) -> Result<Spec, SpecError> {
        let text = include_str!("../../jobs/bolsa-familia-pagamentos.toml");
        let start = text.find("[[layouts]]").expect("a layout");
        let end = text.find("[quality]").expect("quality");
        let text = format!("{}{layouts}\n\n{}", &text[..start], &text[end..]);
        Spec::parse("jobs/bolsa-familia-pagamentos.toml", &text)
    }

    #[test]
    fn a_layout_is_its_differences_from_the_first() {
        let spec = bfp_with_layouts("").expect("one layout");
        assert_eq!(spec.layouts.len(), 1);
        assert_eq!(spec.layouts[0].name, "portal");
        let shipped = find(Path::new("/nonexistent"), "bolsa-familia-pagamentos").expect("spec");
        let old = &shipped.layouts[1];
        assert_eq!((old.name.as_str(), old.delimiter), ("old-portal", b'\t'));
        let names: Vec<&str> = old.columns.iter().map(|c| c.name.as_str()).collect();
        assert!(
            !names.contains(&"reference_month") && !names.contains(&"cpf"),
            "{names:?}"
        );
        let value = old
            .columns
            .iter()
            .find(|c| c.name == "value")
            .expect("value");
        assert_eq!(value.column_type, ColumnType::BrlPoint);
        // The first layout is untouched.
        let value = shipped.layouts[0]
            .columns
            .iter()
            .find(|c| c.name == "value")
            .expect("value");
        assert_eq!(value.column_type, ColumnType::Brl);
    }

    #[test]
    fn layouts_are_checked_like_columns() {
        let err = |layouts: &str| bfp_with_layouts(layouts).expect_err(layouts).to_string();
        assert!(
            err("[[layouts]]\nname = \"x\"\nabsent = [\"valor\"]")
                .contains("no column named \"valor\"")
        );
        assert!(
            err("[[layouts]]\nname = \"x\"\nabsent = [\"value\"]").contains("role Value"),
            "the value column cannot be absent"
        );
        assert!(err("[[layouts]]\nname = \"portal\"").contains("used twice"));
        assert!(
            err("[[layouts]]\nname = \"x\"\ndelimiter = \"ab\"").contains("layouts[0].delimiter")
        );
        assert!(
            err("[[layouts]]\nname = \"x\"\n[layouts.columns.value]\ntype = \"mm_yyyy\"")
                .contains("does not fit role")
        );
        assert!(
            err("[[layouts]]\nname = \"x\"\n[layouts.columns.nis]\nprivacy = \"keep\"")
                .contains("unknown field"),
            "a layout changes headers, aliases and types, never privacy"
        );
    }

    #[test]
    fn personal_columns_cannot_be_kept() {
        let columns = bpc_with("name = \"x\"\nheader = \"X\"\ntype = \"text\"")
            .expect("spec")
            .layouts[0]
            .columns
            .len();
        let key = format!("columns[{}].privacy", columns - 1);
        for (name, header, kind) in [
            ("x0", "NOME BENEFICIÁRIO", "text"),
            ("x1", "Nome do Favorecido", "text"), // recognised by its header
            ("x2", "CPF BENEFICIÁRIO", "text"),
            ("x3", "NIS REPRESENTANTE LEGAL", "text"),
            ("x4", "NIS REPRESENTANTE LEGAL", "nis"),
            ("x5", "NÚMERO BENEFÍCIO", "text"),
            ("x6", "RGP FAVORECIDO", "text"),
            ("x7", "PIS/PASEP", "text"),
            ("holder_name", "TITULAR", "text"), // recognised by its name
            ("holder_cpf", "DOCUMENTO", "text"),
        ] {
            let extra = format!(
                "name = \"{name}\"\nheader = \"{header}\"\ntype = \"{kind}\"\nprivacy = \"keep\""
            );
            let msg = bpc_with(&extra).expect_err(header).to_string();
            assert!(
                msg.starts_with("jobs/bpc.toml:") && msg.contains(&key),
                "{header}: {msg}"
            );
            // hashed or dropped, the same column is fine
            bpc_with(&extra.replace("\"keep\"", "\"hash\"")).expect(header);
        }
        // The shipped spec's own name column, switched to keep.
        let text = include_str!("../../jobs/bpc.toml").replace(
            "header = \"NOME BENEFICIÁRIO\"\ntype = \"text\"\nprivacy = \"drop\"",
            "header = \"NOME BENEFICIÁRIO\"\ntype = \"text\"\nprivacy = \"keep\"",
        );
        let msg = Spec::parse("jobs/bpc.toml", &text)
            .expect_err("name kept")
            .to_string();
        assert!(
            msg.starts_with("jobs/bpc.toml: columns[7].privacy") && msg.contains("\"name\""),
            "{msg}"
        );
        // An alias naming a person is enough.
        let msg = bpc_with(
            "name = \"x8\"\nheader = \"TITULAR\"\naliases = [\"NOME TITULAR\"]\ntype = \"text\"\nprivacy = \"keep\"",
        )
        .expect_err("alias")
        .to_string();
        assert!(msg.contains(&key), "{msg}");
        // A place's name and a yes/no flag are not personal.
        for (name, header) in [
            ("municipality_name_kept", "NOME MUNICÍPIO"),
            ("granted_in_court", "BENEFÍCIO CONCEDIDO JUDICIALMENTE"),
        ] {
            bpc_with(&format!(
                "name = \"{name}\"\nheader = \"{header}\"\ntype = \"text\"\nprivacy = \"keep\""
            ))
            .expect(header);
        }
        // Nothing said: dropped.
        let spec = bpc_with("name = \"x9\"\nheader = \"NOME MÃE\"\ntype = \"text\"").expect("spec");
        assert_eq!(
            spec.layouts[0].columns.last().map(|c| c.privacy),
            Some(Privacy::Drop)
        );
    }

    #[test]
    fn the_payment_bound_has_a_default_and_limits() {
        let spec = bpc_with("name = \"x\"\nheader = \"X\"\ntype = \"text\"").expect("spec");
        assert_eq!(spec.quality.max_payment_cents(), 1_000_000_000);
        let text = include_str!("../../jobs/bpc.toml").replacen(
            "[quality]",
            "[quality]\nmax_payment_brl = 5000",
            1,
        );
        let spec = Spec::parse("jobs/bpc.toml", &text).expect("spec");
        assert_eq!(spec.quality.max_payment_cents(), 500_000);
        for bad in ["0", "-1", "100000001"] {
            let text = include_str!("../../jobs/bpc.toml").replacen(
                "[quality]",
                &format!("[quality]\nmax_payment_brl = {bad}"),
                1,
            );
            let msg = Spec::parse("jobs/bpc.toml", &text)
                .expect_err(bad)
                .to_string();
            assert!(msg.contains("quality.max_payment_brl"), "{msg}");
        }
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let text =
            include_str!("../../jobs/bpc.toml").replace("type = \"brl\"", "type = \"money\"");
        let err = Spec::parse("jobs/bpc.toml", &text).expect_err("bad type");
        let msg = err.to_string();
        assert!(msg.starts_with("jobs/bpc.toml:"), "{msg}");
        assert!(msg.contains("money"), "{msg}");

        let text =
            include_str!("../../jobs/bpc.toml").replace("privacy = \"hash\"", "privacy = \"keep\"");
        let msg = Spec::parse("jobs/bpc.toml", &text)
            .expect_err("nis kept")
            .to_string();
        assert!(
            msg.contains("columns[") && msg.contains(".privacy"),
            "{msg}"
        );
    }
}
