//! A month, the unit of idempotency of a load, and the periods a spec covers.

use std::fmt;

use super::Spec;
use super::schedule::DEFAULT_NOT_FOUND_DAYS;

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

    /// Months since year 0 (for distances between periods).
    pub(crate) fn index(self) -> i64 {
        i64::from(self.year) * 12 + i64::from(self.month) - 1
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

/// A period outside the spec's `first_period`..`last_period`, or one its
/// cadence does not pay (Auxílio Gás pays every other month).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct PeriodOutOfBounds {
    pub(crate) dataset: String,
    pub(crate) period: Period,
    pub(crate) first: Option<Period>,
    pub(crate) last: Option<Period>,
    /// The cadence, when the period is within bounds but off it.
    pub(crate) off_cadence: Option<String>,
}

impl PeriodOutOfBounds {
    fn describe(&self) -> String {
        match &self.off_cadence {
            Some(cadence) => format!(
                "{} has no period {}: it is paid {cadence} (use --force to load it anyway)",
                self.dataset, self.period
            ),
            None => format!(
                "{} has no period {}: its spec covers {} to {} (use --force to load it anyway)",
                self.dataset,
                self.period,
                self.first
                    .map_or("the beginning".to_string(), |p| p.to_string()),
                self.last.map_or("now".to_string(), |p| p.to_string())
            ),
        }
    }
}

/// The periods a spec covers, checked row by row in a file of many
/// periods (see [`Spec::period_filter`]).
#[derive(Debug, Clone)]
pub(crate) struct PeriodFilter {
    dataset: String,
    first: Option<Period>,
    last: Period,
    cadence: super::Cadence,
}

impl PeriodFilter {
    /// Why `yyyymm` is not one of the spec's periods, if it is not.
    pub(crate) fn refuse(&self, yyyymm: u32) -> Option<String> {
        let period = Period::new((yyyymm / 100) as u16, (yyyymm % 100) as u8)?;
        let error = PeriodOutOfBounds {
            dataset: self.dataset.clone(),
            period,
            first: self.first,
            last: Some(self.last),
            off_cadence: None,
        };
        if self.first.is_some_and(|f| period < f) || period > self.last {
            return Some(error.describe());
        }
        if !self.cadence.pays(period) {
            return Some(
                PeriodOutOfBounds {
                    off_cadence: Some(self.cadence.to_string()),
                    ..error
                }
                .describe(),
            );
        }
        None
    }
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
        let last = spec
            .last_period
            .unwrap_or_else(|| spec.current_period_at(now));
        let before = first.is_some_and(|f| period < f);
        let after = period > last;
        let off = !spec.cadence.pays(period);
        if (before || after || off) && !force {
            return Err(PeriodOutOfBounds {
                dataset: spec.dataset.clone(),
                period,
                first,
                last: Some(last),
                off_cadence: (off && !before && !after).then(|| spec.cadence.to_string()),
            });
        }
        Ok(())
    }

    /// Which periods a row of a file of many periods may have: the spec's
    /// bounds (up to the current month) and cadence; `None` when forced.
    pub(crate) fn period_filter(&self, force: bool) -> Option<PeriodFilter> {
        (!force).then(|| PeriodFilter {
            dataset: self.dataset.clone(),
            first: self.first_period,
            last: self.last_period.unwrap_or_else(|| self.current_period()),
            cadence: self.cadence,
        })
    }

    /// The current month in the spec's schedule's time zone (America/Sao_Paulo
    /// without a schedule): the latest a source can hold.
    pub(crate) fn current_period(&self) -> Period {
        self.current_period_at(chrono::Utc::now())
    }

    fn current_period_at(&self, now: chrono::DateTime<chrono::Utc>) -> Period {
        let tz = self
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
