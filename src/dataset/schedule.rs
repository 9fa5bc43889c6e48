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
