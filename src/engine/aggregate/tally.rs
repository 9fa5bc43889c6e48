//! Aggregation done while the rows stream past, on the parser thread, in
//! memory that does not grow with the file: exact per-municipality sums and
//! counts. Pure: no I/O. (Distinct beneficiaries: [`super::distinct`].)
//! Every sum is checked: a sum that would pass `i64` is not wrapped but
//! kept at its last value and flagged ([`MunicipalTally::overflowed`]),
//! and [`super::prepare`] refuses to publish a flagged tally. (The parser's
//! per-row bound, `quality.max_payment_brl`, keeps real files far from it.)

use crate::engine::parse::PaymentRow;

/// One municipality's running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MunicipalTally {
    pub payments: u64,
    pub cents: i64,
    pub retro_payments: u64,
    pub retro_cents: i64,
    pub without_nis: u64,
    /// Distinct beneficiaries, filled in from `distinct` once the
    /// stream has ended.
    pub people: u64,
    /// A sum or count would have overflowed: the tally is wrong and must
    /// not be published.
    pub overflowed: bool,
}

/// Per-municipality tallies, indexed by the dense municipality index.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tallies {
    per_municipality: Vec<MunicipalTally>,
}

impl Tallies {
    pub(crate) fn new(municipalities: usize) -> Tallies {
        Tallies {
            per_municipality: vec![MunicipalTally::default(); municipalities],
        }
    }

    /// Counts one loaded row. `reference_days` is the period's first day.
    pub(crate) fn add(&mut self, row: &PaymentRow<'_>, reference_days: i32) {
        let Some(t) = self.per_municipality.get_mut(row.municipality as usize) else {
            return;
        };
        let add = |sum: &mut i64, overflowed: &mut bool| match sum.checked_add(row.value_cents) {
            Some(v) => *sum = v,
            None => *overflowed = true,
        };
        let count = |n: &mut u64, overflowed: &mut bool| match n.checked_add(1) {
            Some(v) => *n = v,
            None => *overflowed = true,
        };
        count(&mut t.payments, &mut t.overflowed);
        add(&mut t.cents, &mut t.overflowed);
        if row.competence_date.is_some_and(|d| d < reference_days) {
            count(&mut t.retro_payments, &mut t.overflowed);
            add(&mut t.retro_cents, &mut t.overflowed);
        }
        if row.beneficiary_hash.is_none() {
            count(&mut t.without_nis, &mut t.overflowed);
        }
    }

    /// (dense index, tally) of every municipality with at least one payment.
    pub(crate) fn present(&self) -> impl Iterator<Item = (u32, &MunicipalTally)> {
        self.per_municipality
            .iter()
            .enumerate()
            .filter(|(_, t)| t.payments > 0)
            .map(|(i, t)| (i as u32, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value_cents: i64, competence_date: Option<i32>) -> PaymentRow<'static> {
        PaymentRow {
            competence_date,
            municipality_id: 7,
            municipality: 0,
            beneficiary_hash: None,
            value_cents,
            attributes: None,
        }
    }

    #[test]
    fn sums_are_exact_and_overflow_is_flagged_not_wrapped() {
        let mut tallies = Tallies::new(1);
        tallies.add(&row(60_000, Some(0)), 10);
        tallies.add(&row(-5_000, Some(10)), 10);
        let (_, t) = tallies.present().next().expect("tally");
        assert_eq!(
            (t.payments, t.cents, t.retro_payments, t.retro_cents),
            (2, 55_000, 1, 60_000)
        );
        assert!(!t.overflowed);

        let mut tallies = Tallies::new(1);
        tallies.add(&row(i64::MAX, Some(0)), 10);
        tallies.add(&row(1, Some(0)), 10);
        let (_, t) = tallies.present().next().expect("tally");
        assert!(t.overflowed, "{t:?}");
        assert!(t.cents > 0, "wrapped: {t:?}");
    }
}
