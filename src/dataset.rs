//! Dataset specs (`jobs/*.toml`): typed and validated once, at load, with
//! errors naming the file and key. A spec says where a dataset's monthly file
//! lives, how its bytes are packed and encoded, which header names map to
//! which field (with the aliases seen over the years), each column's type and
//! privacy policy, the quality gates and the schedule.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Specs compiled into the binary, used when the jobs directory is missing.
const BUILTIN: &[(&str, &str)] = &[
    (
        "auxilio-brasil.toml",
        include_str!("../jobs/auxilio-brasil.toml"),
    ),
    (
        "bolsa-familia-pagamentos.toml",
        include_str!("../jobs/bolsa-familia-pagamentos.toml"),
    ),
    ("bpc.toml", include_str!("../jobs/bpc.toml")),
    (
        "garantia-safra.toml",
        include_str!("../jobs/garantia-safra.toml"),
    ),
    ("municipios.toml", include_str!("../jobs/municipios.toml")),
    (
        "novo-bolsa-familia.toml",
        include_str!("../jobs/novo-bolsa-familia.toml"),
    ),
    (
        "seguro-defeso.toml",
        include_str!("../jobs/seguro-defeso.toml"),
    ),
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

/// A month, the unit of idempotency of a Portal load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub(crate) year: u16,
    pub(crate) month: u8,
}

impl Period {
    /// Accepts `YYYY-MM` and `YYYYMM`.
    pub fn parse(text: &str) -> Option<Period> {
        let digits: String = text.trim().chars().filter(|c| *c != '-').collect();
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let year: u16 = digits[..4].parse().ok()?;
        let month: u8 = digits[4..].parse().ok()?;
        Period::new(year, month)
    }
    pub fn new(year: u16, month: u8) -> Option<Period> {
        ((1900..=2999).contains(&year) && (1..=12).contains(&month))
            .then_some(Period { year, month })
    }
    /// `YYYYMM` as a number, the form the files use.
    pub fn yyyymm(self) -> u32 {
        u32::from(self.year) * 100 + u32::from(self.month)
    }
    pub(crate) fn first_day(self) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(i32::from(self.year), u32::from(self.month), 1)
            .unwrap_or_default()
    }
    /// Every month from `from` to `to`, inclusive (empty when `from > to`).
    pub(crate) fn range(from: Period, to: Period) -> Vec<Period> {
        let index = |p: Period| p.yyyymm() / 100 * 12 + p.yyyymm() % 100 - 1;
        (index(from)..=index(to))
            .filter_map(|i| Period::new((i / 12) as u16, (i % 12 + 1) as u8))
            .collect()
    }

    pub(crate) fn from_date(date: chrono::NaiveDate) -> Period {
        use chrono::Datelike;
        Period {
            year: date.year() as u16,
            month: date.month() as u8,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// Monthly payment file: rows → carga.payments → aggregates.
    Payments,
    /// States and municipalities (IBGE list with SIAFI codes).
    Reference,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Container {
    Zip,
    Gzip,
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum Encoding {
    #[serde(
        rename = "windows-1252",
        alias = "latin1",
        alias = "iso-8859-1",
        alias = "cp1252"
    )]
    Windows1252,
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
}

/// What a column means to the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    ReferenceMonth,
    CompetenceMonth,
    Municipality,
    Beneficiary,
    Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ColumnType {
    /// `202410`
    Yyyymm,
    /// 4-digit SIAFI municipality code, mapped through `municipalities`.
    Siafi,
    /// 7-digit IBGE municipality code.
    Ibge,
    /// Decimal comma with optional thousands dots: `1.234,56`, `-600,00`.
    Brl,
    /// Decimal point, no thousands separator (pre-2018 layout): `227.00`.
    BrlPoint,
    /// 11-digit NIS; anything else (sentinels, masks, empty) is "no NIS".
    Nis,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    pub(crate) code: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) data_source_url: Option<String>,
    #[serde(default = "monthly")]
    pub(crate) update_frequency: String,
    /// Paid per family: `total_families` = distinct beneficiaries; else NULL.
    #[serde(default)]
    pub(crate) paid_per_family: bool,
}

fn monthly() -> String {
    "MONTHLY".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Source {
    /// Template with `{yyyymm}`, `{yyyy}`, `{mm}`; `builtin:` for shipped files.
    pub(crate) url: String,
    pub(crate) container: Container,
    pub(crate) encoding: Encoding,
    #[serde(default = "semicolon")]
    pub(crate) delimiter: String,
    #[serde(default)]
    pub(crate) first_period: Option<String>,
    #[serde(default)]
    pub(crate) last_period: Option<String>,
    /// Where a webhook may point this dataset's source: `scheme://host[:port]`
    /// entries. Empty: the scheme and host of `url` only. Loopback,
    /// link-local and private addresses are refused unless listed here.
    #[serde(default)]
    pub(crate) allowed_sources: Vec<String>,
}

fn semicolon() -> String {
    ";".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Quality {
    /// The load fails when rejects exceed max(reject_allowance, ratio × rows read).
    #[serde(default = "default_reject_ratio")]
    pub(crate) max_reject_ratio: f64,
    #[serde(default = "default_reject_allowance")]
    pub(crate) reject_allowance: u64,
    /// Fail (unless --force) when rows loaded fall by more than this fraction
    /// against the last published load. 1.0 disables the guard.
    #[serde(default = "default_shrink")]
    pub(crate) max_shrink: f64,
    /// The largest amount one row may carry, in whole reais, either sign: a
    /// row beyond it is a reject (`value_out_of_range`). The programmes pay
    /// tens to thousands of reais a month, so the default (R$ 10 million) is
    /// loose enough never to refuse a real payment and still refuses what
    /// is not one: a value near `i64::MAX` cents, or a NIS or CPF shifted
    /// into the amount column (R$ 12 billion and up). It also keeps every sum
    /// far from `i64` and from the `numeric` columns' limits.
    #[serde(default = "default_max_payment_brl")]
    pub(crate) max_payment_brl: i64,
}

impl Quality {
    /// [`Quality::max_payment_brl`] in cents.
    pub(crate) fn max_payment_cents(&self) -> i64 {
        self.max_payment_brl.saturating_mul(100)
    }
}

impl Default for Quality {
    fn default() -> Self {
        Quality {
            max_reject_ratio: default_reject_ratio(),
            reject_allowance: default_reject_allowance(),
            max_shrink: default_shrink(),
            max_payment_brl: default_max_payment_brl(),
        }
    }
}

fn default_reject_ratio() -> f64 {
    0.001
}
fn default_reject_allowance() -> u64 {
    100
}
fn default_shrink() -> f64 {
    0.30
}
/// R$ 10.000.000,00: see [`Quality::max_payment_brl`].
const DEFAULT_MAX_PAYMENT_BRL: i64 = 10_000_000;
/// The highest `quality.max_payment_brl` a spec may set (R$ 100 million;
/// 900 million rows at that value still sum within `i64` cents, 100 000 in
/// one municipality within its `numeric(15, 2)` total, and every sum is
/// checked anyway).
const MAX_PAYMENT_BRL_LIMIT: i64 = 100_000_000;
fn default_max_payment_brl() -> i64 {
    DEFAULT_MAX_PAYMENT_BRL
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Schedule {
    /// Six fields: sec min hour day-of-month month day-of-week.
    pub(crate) cron: String,
    pub(crate) timezone: String,
    /// Months between a period and its publication.
    pub(crate) lag_months: u32,
    /// How long a scheduled month the Portal has not published yet (HTTP
    /// 404) keeps being retried, from its slot, before the job fails.
    #[serde(default = "default_not_found_days")]
    not_found_deadline_days: u32,
    /// After downtime: `latest` enqueues the latest missed slot, `none`
    /// waits for the next one.
    #[serde(default)]
    pub(crate) catch_up: CatchUp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CatchUp {
    #[default]
    Latest,
    None,
}

fn default_not_found_days() -> u32 {
    DEFAULT_NOT_FOUND_DAYS
}

/// `schedule.not_found_deadline_days` when the spec has no schedule.
const DEFAULT_NOT_FOUND_DAYS: u32 = 45;

/// A period outside the spec's `first_period`..`last_period`.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{dataset} has no period {period}: its spec covers {} to {} (use --force to load it anyway)",
    first.map_or("the beginning".to_string(), |p| p.to_string()),
    last.map_or("now".to_string(), |p| p.to_string())
)]
pub struct PeriodOutOfBounds {
    pub(crate) dataset: String,
    pub(crate) period: Period,
    pub(crate) first: Option<Period>,
    pub(crate) last: Option<Period>,
}

impl Spec {
    /// Refuses a period outside the spec's `first_period`..`last_period` (a
    /// program that did not exist then: any file found there is another
    /// program's) unless forced.
    pub(crate) fn check_period(
        &self,
        period: Period,
        force: bool,
    ) -> Result<(), PeriodOutOfBounds> {
        self.check_period_at(period, force, chrono::Utc::now())
    }

    /// [`Spec::check_period`] at `now`. A spec without `last_period` covers up to the
    /// current month in its schedule's time zone (America/Sao_Paulo without a
    /// schedule): no month after that can have been published, and the current
    /// one is the margin over the publication lag (the scheduler asks for the
    /// current month minus `lag_months`).
    fn check_period_at(
        &self,
        period: Period,
        force: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), PeriodOutOfBounds> {
        let spec = self;
        let first = spec.first_period;
        let last = spec.last_period.unwrap_or_else(|| {
            let tz = spec
                .schedule
                .as_ref()
                .map_or(chrono_tz::America::Sao_Paulo, |s| s.tz());
            let today = now.with_timezone(&tz);
            Period::new(
                u16::try_from(chrono::Datelike::year(&today)).unwrap_or(u16::MAX),
                u8::try_from(chrono::Datelike::month(&today)).unwrap_or(12),
            )
            .unwrap_or(Period {
                year: u16::MAX,
                month: 12,
            })
        });
        let before = first.is_some_and(|f| period < f);
        let after = period > last;
        if (before || after) && !force {
            return Err(PeriodOutOfBounds {
                dataset: spec.dataset.clone(),
                period,
                first,
                last: Some(last),
            });
        }
        Ok(())
    }

    /// How long a month of this dataset that the Portal has not published
    /// (HTTP 404) keeps being retried.
    pub(crate) fn not_found_window(&self) -> std::time::Duration {
        let days = self
            .schedule
            .as_ref()
            .map_or(DEFAULT_NOT_FOUND_DAYS, |s| s.not_found_deadline_days);
        std::time::Duration::from_secs(u64::from(days) * 86_400)
    }
}

impl Schedule {
    /// The parsed cron (validated when the spec was loaded).
    pub(crate) fn parsed(&self) -> Result<croner::Cron, String> {
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .build()
            .parse(&self.cron)
            .map_err(|e| e.to_string())
    }

    pub(crate) fn tz(&self) -> chrono_tz::Tz {
        self.timezone
            .parse()
            .unwrap_or(chrono_tz::America::Sao_Paulo)
    }
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
}

/// A validated dataset spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub(crate) dataset: String,
    pub(crate) title: String,
    pub(crate) kind: Kind,
    pub program: Option<Program>,
    pub(crate) source: Source,
    pub(crate) delimiter: u8,
    pub(crate) columns: Vec<Column>,
    pub(crate) quality: Quality,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) first_period: Option<Period>,
    pub(crate) last_period: Option<Period>,
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
        let delimiter = match raw.source.delimiter.as_bytes() {
            [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => *b,
            _ => {
                return Err(invalid(format!(
                    "source.delimiter: {:?} must be one ASCII character other than a quote or line break",
                    raw.source.delimiter
                )));
            }
        };
        let period = |key: &str, value: &Option<String>| -> Result<Option<Period>, SpecError> {
            match value {
                None => Ok(None),
                Some(v) => Period::parse(v)
                    .map(Some)
                    .ok_or_else(|| invalid(format!("source.{key}: {v:?} is not YYYY-MM"))),
            }
        };
        let first_period = period("first_period", &raw.source.first_period)?;
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
        if !(1..=MAX_PAYMENT_BRL_LIMIT).contains(&q.max_payment_brl) {
            return Err(invalid(format!(
                "quality.max_payment_brl: must be between 1 and {MAX_PAYMENT_BRL_LIMIT} (whole reais)"
            )));
        }
        if raw.kind == Kind::Payments {
            let Some(program) = &raw.program else {
                return Err(invalid(
                    "program: a payments dataset needs a [program] table".into(),
                ));
            };
            if !is_program_code(&program.code) {
                return Err(invalid(format!(
                    "program.code: {:?} must be upper case letters, digits and '_'",
                    program.code
                )));
            }
            validate_columns(&raw.columns).map_err(invalid)?;
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
        // The Portal redirects to the file only from the URL without a
        // trailing slash (basedosdados/pipelines issue 1598, June 2026).
        if raw.source.url.ends_with('/') {
            return Err(invalid(format!(
                "source.url: {:?} must not end in '/' (the Portal redirects to the file only without it)",
                raw.source.url
            )));
        }
        Ok(Spec {
            dataset: raw.dataset,
            title: raw.title,
            kind: raw.kind,
            program: raw.program,
            source: raw.source,
            delimiter,
            columns: raw.columns,
            quality: raw.quality,
            schedule: raw.schedule,
            first_period,
            last_period,
            origin: origin.to_string(),
        })
    }

    /// The source URL for `period`.
    pub(crate) fn url_for(&self, period: Period) -> String {
        self.source
            .url
            .replace("{yyyymm}", &format!("{:06}", period.yyyymm()))
            .replace("{yyyy}", &format!("{:04}", period.year))
            .replace("{mm}", &format!("{:02}", period.month))
    }

    pub(crate) fn column(&self, role: Role) -> Option<&Column> {
        self.columns.iter().find(|c| c.role == Some(role))
    }
}

fn validate_columns(columns: &[Column]) -> Result<(), String> {
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
            Some(Role::ReferenceMonth) | Some(Role::CompetenceMonth) => &[ColumnType::Yyyymm],
            Some(Role::Municipality) => &[ColumnType::Siafi, ColumnType::Ibge],
            Some(Role::Beneficiary) => &[ColumnType::Nis],
            Some(Role::Value) => &[ColumnType::Brl, ColumnType::BrlPoint],
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
    for role in [
        Role::ReferenceMonth,
        Role::Municipality,
        Role::Beneficiary,
        Role::Value,
    ] {
        let count = columns.iter().filter(|c| c.role == Some(role)).count();
        if count != 1 {
            return Err(format!(
                "columns: exactly one column must have role {role:?} (found {count})"
            ));
        }
    }
    if columns
        .iter()
        .filter(|c| c.role == Some(Role::CompetenceMonth))
        .count()
        > 1
    {
        return Err("columns: at most one column may have role CompetenceMonth".into());
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
fn is_personal(column: &Column) -> bool {
    if column.column_type == ColumnType::Nis || column.role == Some(Role::Beneficiary) {
        return true;
    }
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
            || (has(NAME_WORDS) && !has(PLACE_WORDS))
            || (has(&["NUMERO", "NUMBER"]) && has(&["BENEFICIO", "BENEFIT"]))
    })
}

fn is_identifier(text: &str, separator: char) -> bool {
    !text.is_empty()
        && text.len() <= 48
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == separator)
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

    /// bpc.toml with one more column, `extra`, appended to the list.
    fn bpc_with(extra: &str) -> Result<Spec, SpecError> {
        let text = include_str!("../jobs/bpc.toml").replacen(
            "[quality]",
            &format!("[[columns]]\n{extra}\n\n[quality]"),
            1,
        );
        Spec::parse("jobs/bpc.toml", &text)
    }

    #[test]
    fn personal_columns_cannot_be_kept() {
        let columns = bpc_with("name = \"x\"\nheader = \"X\"\ntype = \"text\"")
            .expect("spec")
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
        let text = include_str!("../jobs/bpc.toml").replace(
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
        assert_eq!(spec.columns.last().map(|c| c.privacy), Some(Privacy::Drop));
    }

    #[test]
    fn the_payment_bound_has_a_default_and_limits() {
        let spec = bpc_with("name = \"x\"\nheader = \"X\"\ntype = \"text\"").expect("spec");
        assert_eq!(spec.quality.max_payment_cents(), 1_000_000_000);
        let text = include_str!("../jobs/bpc.toml").replacen(
            "[quality]",
            "[quality]\nmax_payment_brl = 5000",
            1,
        );
        let spec = Spec::parse("jobs/bpc.toml", &text).expect("spec");
        assert_eq!(spec.quality.max_payment_cents(), 500_000);
        for bad in ["0", "-1", "100000001"] {
            let text = include_str!("../jobs/bpc.toml").replacen(
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
        let text = include_str!("../jobs/bpc.toml").replace("type = \"brl\"", "type = \"money\"");
        let err = Spec::parse("jobs/bpc.toml", &text).expect_err("bad type");
        let msg = err.to_string();
        assert!(msg.starts_with("jobs/bpc.toml:"), "{msg}");
        assert!(msg.contains("money"), "{msg}");

        let text =
            include_str!("../jobs/bpc.toml").replace("privacy = \"hash\"", "privacy = \"keep\"");
        let msg = Spec::parse("jobs/bpc.toml", &text)
            .expect_err("nis kept")
            .to_string();
        assert!(
            msg.contains("columns[") && msg.contains(".privacy"),
            "{msg}"
        );
    }
}

#[cfg(test)]
mod schedule_tests {
    use super::*;

    #[test]
    fn a_source_url_ending_in_a_slash_is_refused() {
        let text = include_str!("../jobs/novo-bolsa-familia.toml");
        let edited = text.replace("/{yyyymm}\"", "/{yyyymm}/\"");
        assert_ne!(edited, text);
        let err = Spec::parse("nbf.toml", &edited).expect_err("trailing slash");
        assert!(err.to_string().contains("must not end in '/'"), "{err}");
    }

    #[test]
    fn a_cron_that_never_fires_is_refused() {
        let text = include_str!("../jobs/novo-bolsa-familia.toml");
        let cron_line = text
            .lines()
            .find(|l| l.trim_start().starts_with("cron"))
            .expect("the spec has a cron");
        Spec::parse("nbf.toml", text).expect("the shipped spec is valid");
        for (cron, ok) in [
            ("0 0 3 31 2 *", false), // 31 February
            ("0 0 3 30 2 *", false),
            ("0 0 3 29 2 *", true), // leap years
            ("0 0 3 * * *", true),
        ] {
            let edited = text.replace(cron_line, &format!("cron = \"{cron}\""));
            let parsed = Spec::parse("nbf.toml", &edited);
            assert_eq!(parsed.is_ok(), ok, "{cron}: {parsed:?}");
            if let Err(e) = parsed {
                assert!(e.to_string().contains("never fires"), "{e}");
            }
        }
    }
}

#[cfg(test)]
mod period_tests {
    use super::*;

    fn at(text: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn periods_after_the_current_month_need_force() {
        let spec =
            crate::dataset::find(std::path::Path::new("jobs"), "novo-bolsa-familia").expect("spec");
        let period = |t: &str| Period::parse(t).expect("period");
        // 1 December 01:00 UTC is still November in São Paulo (UTC−3).
        let now = at("2026-12-01T01:00:00Z");
        assert!(spec.check_period_at(period("2026-11"), false, now).is_ok());
        let refused = spec
            .check_period_at(period("2026-12"), false, now)
            .expect_err("December has not begun in São Paulo");

        assert!(refused.to_string().contains("to 2026-11"), "{refused}");
        assert!(spec.check_period_at(period("2999-01"), false, now).is_err());
        assert!(spec.check_period_at(period("2999-01"), true, now).is_ok());
        assert!(
            spec.check_period_at(period("2026-12"), false, at("2026-12-01T04:00:00Z"))
                .is_ok()
        );
    }
}
