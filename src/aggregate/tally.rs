//! Aggregation done while the rows stream past, on the parser thread, in
//! memory that does not grow with the file: exact per-municipality sums and
//! counts, and a repeat filter that marks every row whose beneficiary *may*
//! have appeared before. Pure: no I/O.
//!
//! Distinct beneficiaries cannot be counted exactly in constant memory, but
//! they can be counted exactly from a small subset: a blocked Bloom filter
//! over the keyed NIS hashes never misses a repeat, so a hash that was never
//! flagged occurs exactly once in the file. For any group G (municipality,
//! state, country): distinct(G) = rows with NIS in G − rows in G whose hash
//! is flagged somewhere + distinct flagged hashes in G. Only the flagged
//! hashes (the real repeats, a few per cent, plus the filter's false
//! positives) are then counted in SQL.

use crate::parse::PaymentRow;

/// One municipality's running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MunicipalTally {
    pub payments: u64,
    pub cents: i64,
    pub retro_payments: u64,
    pub retro_cents: i64,
    pub without_nis: u64,
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

/// A blocked Bloom filter over 128-bit keyed hashes: 64-byte blocks (one
/// cache line), one bit per 64-bit word, eight words per block. No false
/// negatives; about 0.2 % false positives at 40 hashes per block (32 MiB
/// holds a 20 M-row month).
pub struct RepeatFilter {
    blocks: Vec<[u64; 8]>,
    mask: usize,
}

/// A filter of 0 bytes flags every row: all distinct counting then happens
/// in SQL (slower, same result; used to check that claim).
const FLAG_EVERYTHING: usize = 0;

impl RepeatFilter {
    /// `bytes` is rounded down to a power of two, at least one block; 0
    /// makes a filter that flags every hash.
    pub fn new(bytes: usize) -> RepeatFilter {
        if bytes == FLAG_EVERYTHING {
            return RepeatFilter {
                blocks: Vec::new(),
                mask: 0,
            };
        }
        let blocks = (bytes / 64).max(1);
        let blocks = 1usize << (usize::BITS - 1 - blocks.leading_zeros());
        RepeatFilter {
            blocks: vec![[0u64; 8]; blocks],
            mask: blocks - 1,
        }
    }

    /// Records `hash`; true when it may have been recorded before (always
    /// true if it was).
    #[inline]
    pub fn check_and_insert(&mut self, hash: &[u8; 16]) -> bool {
        let mut low = [0u8; 8];
        let mut high = [0u8; 8];
        low.copy_from_slice(&hash[..8]);
        high.copy_from_slice(&hash[8..]);
        let (low, high) = (u64::from_le_bytes(low), u64::from_le_bytes(high));
        let Some(block) = self.blocks.get_mut((low as usize) & self.mask) else {
            return true; // FLAG_EVERYTHING
        };
        let mut seen = true;
        for (i, word) in block.iter_mut().enumerate() {
            let bit = 1u64 << ((high >> (i * 6)) & 63);
            if *word & bit == 0 {
                seen = false;
                *word |= bit;
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Rng;

    fn hash(rng: &mut Rng) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        h[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        h
    }

    #[test]
    fn never_misses_a_repeat_and_rarely_flags_a_new_hash() {
        let mut rng = Rng::new(1);
        let mut filter = RepeatFilter::new(1 << 20);
        let hashes: Vec<[u8; 16]> = (0..20_000).map(|_| hash(&mut rng)).collect();
        let false_positives = hashes.iter().filter(|h| filter.check_and_insert(h)).count();
        assert!(false_positives < 20, "{false_positives} false positives");
        assert!(
            hashes.iter().all(|h| filter.check_and_insert(h)),
            "a repeat was missed"
        );
    }

    #[test]
    fn an_empty_filter_flags_everything() {
        let mut rng = Rng::new(3);
        let mut filter = RepeatFilter::new(0);
        assert!((0..100).all(|_| filter.check_and_insert(&hash(&mut rng))));
    }

    #[test]
    fn a_tiny_filter_still_never_misses() {
        let mut rng = Rng::new(2);
        let mut filter = RepeatFilter::new(1);
        let hashes: Vec<[u8; 16]> = (0..1_000).map(|_| hash(&mut rng)).collect();
        for h in &hashes {
            filter.check_and_insert(h);
        }
        assert!(hashes.iter().all(|h| filter.check_and_insert(h)));
    }
}
