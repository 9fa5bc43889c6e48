//! A spec's `[schedule]`: the cron, its time zone, the publication lag and
//! how long a month the source has not published is retried.

use serde::Deserialize;

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
    pub(crate) not_found_deadline_days: u32,
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
pub(super) const DEFAULT_NOT_FOUND_DAYS: u32 = 45;

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

#[cfg(test)]
mod schedule_tests {
    use crate::dataset::Spec;

    #[test]
    fn a_source_url_ending_in_a_slash_is_refused() {
        let text = include_str!("../../jobs/novo-bolsa-familia.toml");
        let edited = text.replace("/{yyyymm}\"", "/{yyyymm}/\"");
        assert_ne!(edited, text);
        let err = Spec::parse("nbf.toml", &edited).expect_err("trailing slash");
        assert!(err.to_string().contains("must not end in '/'"), "{err}");
    }

    #[test]
    fn a_cron_that_never_fires_is_refused() {
        let text = include_str!("../../jobs/novo-bolsa-familia.toml");
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

/// Which months a dataset has: `[cadence]` in a spec. Monthly by default;
/// `every_months = 2, anchor = "2021-12"` is every other month from
/// December 2021 (Auxílio Gás); `every_months = 12` once a year. A month
/// off the cadence is not a gap: it is never scheduled, refused without
/// `--force`, and the console shows it as not paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cadence {
    pub(crate) every_months: u32,
    /// A month that is paid (required when `every_months` > 1).
    pub(crate) anchor: Option<super::Period>,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence {
            every_months: 1,
            anchor: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCadence {
    every_months: u32,
    #[serde(default)]
    anchor: Option<String>,
}

impl Cadence {
    pub(super) fn from_raw(raw: Option<&RawCadence>) -> Result<Cadence, String> {
        let Some(raw) = raw else {
            return Ok(Cadence::default());
        };
        if ![1, 2, 3, 4, 6, 12].contains(&raw.every_months) {
            return Err(format!(
                "cadence.every_months: {} must divide a year (1, 2, 3, 4, 6 or 12)",
                raw.every_months
            ));
        }
        let anchor = match &raw.anchor {
            Some(text) => Some(
                super::Period::parse(text)
                    .ok_or_else(|| format!("cadence.anchor: {text:?} is not YYYY-MM"))?,
            ),
            None if raw.every_months > 1 => {
                return Err(
                    "cadence.anchor: a month that is paid is required when every_months > 1".into(),
                );
            }
            None => None,
        };
        Ok(Cadence {
            every_months: raw.every_months,
            anchor,
        })
    }

    /// Whether `period` is one of the cadence's months.
    pub(crate) fn pays(&self, period: super::Period) -> bool {
        match self.anchor {
            None => true,
            Some(anchor) => {
                (period.index() - anchor.index()).rem_euclid(i64::from(self.every_months)) == 0
            }
        }
    }
}

impl std::fmt::Display for Cadence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.every_months, self.anchor) {
            (1, _) | (_, None) => write!(f, "monthly"),
            (12, Some(a)) => write!(f, "yearly ({a} and every 12 months)"),
            (n, Some(a)) => write!(f, "every {n} months ({a} and every {n} months from it)"),
        }
    }
}

#[cfg(test)]
mod cadence_tests {
    use super::*;
    use crate::dataset::Period;

    fn p(text: &str) -> Period {
        Period::parse(text).expect("period")
    }

    #[test]
    fn every_other_month_from_an_anchor() {
        let raw = RawCadence {
            every_months: 2,
            anchor: Some("2021-12".into()),
        };
        let gas = Cadence::from_raw(Some(&raw)).expect("cadence");
        assert!(gas.pays(p("2021-12")));
        assert!(gas.pays(p("2022-02")));
        assert!(gas.pays(p("2024-10")));
        assert!(!gas.pays(p("2024-11")));
        assert!(gas.pays(p("2021-10")), "before the anchor too, by parity");
        assert!(Cadence::default().pays(p("2024-11")));
        assert_eq!(
            gas.to_string(),
            "every 2 months (2021-12 and every 2 months from it)"
        );
    }

    #[test]
    fn a_cadence_must_divide_a_year_and_name_a_paid_month() {
        let bad = |every_months, anchor: Option<&str>| {
            Cadence::from_raw(Some(&RawCadence {
                every_months,
                anchor: anchor.map(str::to_string),
            }))
            .expect_err("refused")
        };
        assert!(bad(5, Some("2021-12")).contains("divide a year"));
        assert!(bad(2, None).contains("anchor"));
        assert!(bad(2, Some("2021-13")).contains("YYYY-MM"));
    }
}
