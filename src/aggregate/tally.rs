//! Aggregation done while the rows stream past, on the parser thread, in
//! memory that does not grow with the file: exact per-municipality sums and
//! counts. Pure: no I/O. (Distinct beneficiaries: [`super::distinct`].)

use crate::parse::PaymentRow;

/// One municipality's running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MunicipalTally {
    pub payments: u64,
    pub cents: i64,
    pub retro_payments: u64,
    pub retro_cents: i64,
    pub without_nis: u64,
    /// Distinct beneficiaries, filled in from [`super::distinct`] once the
    /// stream has ended.
    pub people: u64,
}

/// Per-municipality tallies, indexed by the dense municipality index.
#[derive(Debug, Clone, Default)]
pub struct Tallies {
    per_municipality: Vec<MunicipalTally>,
}

impl Tallies {
    pub fn new(municipalities: usize) -> Tallies {
        Tallies {
            per_municipality: vec![MunicipalTally::default(); municipalities],
        }
    }

    /// Counts one loaded row. `reference_days` is the period's first day.
    pub fn add(&mut self, row: &PaymentRow<'_>, reference_days: i32) {
        let Some(t) = self.per_municipality.get_mut(row.municipality as usize) else {
            return;
        };
        t.payments += 1;
        t.cents += row.value_cents;
        if row.competence_date.is_some_and(|d| d < reference_days) {
            t.retro_payments += 1;
            t.retro_cents += row.value_cents;
        }
        if row.beneficiary_hash.is_none() {
            t.without_nis += 1;
        }
    }

    /// (dense index, tally) of every municipality with at least one payment.
    pub fn present(&self) -> impl Iterator<Item = (u32, &MunicipalTally)> {
        self.per_municipality
            .iter()
            .enumerate()
            .filter(|(_, t)| t.payments > 0)
            .map(|(i, t)| (i as u32, t))
    }
}
