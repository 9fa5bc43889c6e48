//! A spec's plain sections: its kind, `[program]`, `[source]` (where the
//! file is and how its bytes are packed and encoded) and `[quality]`.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// Monthly payment file: rows → carga.payments → aggregates.
    Payments,
    /// A file already counted per municipality and period, perhaps many
    /// periods in one file: each period found is published on its own.
    Aggregates,
    /// Rows per something that maps to a state through a shipped table (a
    /// power distributor), in approvals (the latest wins) and parts
    /// (summed): written to the state and national tables only, never
    /// split over municipalities.
    StateLevel,
    /// States and municipalities (IBGE list with SIAFI codes).
    Reference,
    /// A snapshot of places (CRAS), one row each by a natural key: upserted,
    /// and a place gone from the source removed, in one transaction.
    Places,
    /// Boundaries (GeoJSON features, one request per state) written to the
    /// API's PostGIS geometry columns.
    Boundaries,
}

impl Kind {
    /// A file already counted (`aggregates`, `state_level`): it may hold
    /// many periods, each published on its own, and names no one.
    pub(crate) const fn is_tabulated(self) -> bool {
        matches!(self, Kind::Aggregates | Kind::StateLevel)
    }

    /// A snapshot of the source with no period (`reference`, `places`):
    /// loaded whole in one transaction, on demand or on a schedule.
    pub(crate) const fn is_snapshot(self) -> bool {
        matches!(self, Kind::Reference | Kind::Places | Kind::Boundaries)
    }

    /// As a spec writes it.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Kind::Payments => "payments",
            Kind::Aggregates => "aggregates",
            Kind::StateLevel => "state_level",
            Kind::Reference => "reference",
            Kind::Places => "places",
            Kind::Boundaries => "boundaries",
        }
    }
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

/// How the source is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Protocol {
    /// One file (HTTP or a path).
    #[default]
    File,
    /// A Solr core read in pages (`start`/`rows`), its documents as CSV
    /// rows whose columns are the spec's headers (the JSON field names).
    Solr,
    /// IBGE SIDRA's values API: one JSON array whose first element is a
    /// header row, its other elements the rows (CSV as for `solr`).
    Sidra,
    /// An OData service read in pages (`$skip`/`$top`, the `value` array),
    /// ending at a page shorter than asked (CSV as for `solr`).
    Odata,
    /// A GeoJSON FeatureCollection per request (a `boundaries` dataset).
    Geojson,
}

/// The API table an `aggregates` dataset writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Target {
    /// `beneficiary_data` (municipality × program × month), with the state
    /// and national sums.
    #[default]
    BeneficiaryData,
    /// `cadunico_data` (municipality × month): the CadÚnico register's
    /// counts, the denominator of `coverage_rate`.
    CadunicoData,
    /// `municipalities.population`: from the latest period only.
    MunicipalitiesPopulation,
    /// `cras_locations` (a `places` dataset): one row per CRAS.
    CrasLocations,
    /// `municipalities.geometry` (+ `geometry_simplified`, `centroid`), a
    /// `boundaries` dataset's features keyed by the 7-digit IBGE code.
    MunicipalitiesGeometry,
    /// `states.geometry`, a `boundaries` dataset's features keyed by the
    /// state's 2-digit IBGE code.
    StatesGeometry,
}

impl Target {
    /// The figures a `measure` column may name for this target, in the
    /// working table's slot order.
    pub(crate) fn measures(self) -> &'static [&'static str] {
        match self {
            Target::BeneficiaryData => &[],
            Target::CadunicoData => &CADUNICO_MEASURES,
            Target::MunicipalitiesPopulation => &["population"],
            Target::CrasLocations | Target::MunicipalitiesGeometry | Target::StatesGeometry => &[],
        }
    }

    /// The text columns a `places` dataset's `field` columns may fill, with
    /// the API's widths (the seed's alembic 006_add_cras_locations.py): a
    /// longer value is a reject, never cut.
    pub(crate) fn place_fields(self) -> &'static [(&'static str, usize)] {
        match self {
            Target::CrasLocations => &CRAS_FIELDS,
            _ => &[],
        }
    }

    /// Whether the target's rows belong to a program (`beneficiary_data`
    /// does; the register and the population do not need one).
    pub(crate) fn needs_program(self) -> bool {
        self == Target::BeneficiaryData
    }
}

/// `cras_locations`' text columns and widths, `nome` (the place name)
/// first. Not `email`: an address names a person more often than an
/// office, so no spec may fill it.
pub(crate) const CRAS_FIELDS: [(&str, usize); 5] = [
    ("nome", 255),
    ("endereco", 500),
    ("bairro", 100),
    ("cep", 8),
    ("telefone", 20),
];

/// `cadunico_data`'s figure columns a `measure` may name (the API's schema:
/// the seed's alembic 001_initial_schema.py), in the working table's order.
pub(crate) const CADUNICO_MEASURES: [&str; 10] = [
    "total_families",
    "total_persons",
    "families_extreme_poverty",
    "families_poverty",
    "families_low_income",
    "persons_0_5_years",
    "persons_6_14_years",
    "persons_15_17_years",
    "persons_18_64_years",
    "persons_65_plus",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Source {
    /// Template with `{yyyymm}`, `{yyyy}`, `{mm}`; `builtin:` for shipped files.
    pub(crate) url: String,
    pub(crate) container: Container,
    pub(crate) encoding: Encoding,
    #[serde(default = "semicolon")]
    pub(crate) delimiter: String,
    /// The name of the layout `[source]` and `[[columns]]` describe (the
    /// first one tried; see `[[layouts]]`).
    #[serde(default = "first_layout")]
    pub(crate) layout: String,
    #[serde(default)]
    pub(crate) first_period: Option<String>,
    #[serde(default)]
    pub(crate) last_period: Option<String>,
    /// Where a webhook may point this dataset's source: `scheme://host[:port]`
    /// entries. Empty: the scheme and host of `url` only. Loopback,
    /// link-local and private addresses are refused unless listed here.
    #[serde(default)]
    pub(crate) allowed_sources: Vec<String>,
    /// `file` (default) or `solr`.
    #[serde(default)]
    pub(crate) protocol: Protocol,
    /// Documents per page of a paged protocol.
    #[serde(default = "default_page_rows")]
    pub(crate) page_rows: u64,
}

fn default_page_rows() -> u64 {
    1000
}

fn semicolon() -> String {
    ";".into()
}

fn first_layout() -> String {
    "default".into()
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
pub(super) const MAX_PAYMENT_BRL_LIMIT: i64 = 100_000_000;
/// The highest `quality.max_payment_brl` of a dataset of totals (R$ 100
/// billion a row: a row fits `numeric(15, 2)`, 5,570 such rows sum within
/// `i64` cents; a state or national sum beyond what its column holds makes
/// the database refuse the publish, never a truncated figure).
pub(super) const MAX_TOTAL_BRL_LIMIT: i64 = 100_000_000_000;
fn default_max_payment_brl() -> i64 {
    DEFAULT_MAX_PAYMENT_BRL
}
