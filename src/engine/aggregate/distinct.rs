//! Exact distinct beneficiaries per municipality, per state and in the
//! country, in memory that does not grow with the file.
//!
//! While the rows stream past, each (keyed NIS hash, municipality) pair is
//! appended to one of [`PARTITIONS`] partitions by the hash's first byte
//! (the hash is an HMAC, so the split is even). A partition keeps a small
//! buffer in memory and writes full buffers to one anonymous temporary file
//! (unlinked at creation: nothing is left behind, even on SIGKILL). At the
//! end each partition is read back, sorted and walked: equal hashes are
//! adjacent, so a person is counted once in each municipality and each
//! state they were paid in, and once in the country. Partitions are
//! independent, so the walk runs on several threads.
//!
//! Costs: 20 bytes of temporary disk per row with a NIS, written and read
//! once sequentially (it stays in the page cache on any machine that can
//! hold it); memory is the partition buffers plus one partition at a time
//! per thread (rows / [`PARTITIONS`] × 44 bytes). The exactness rests only
//! on the 128-bit keyed hash, as the stored rows do.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Number of hash partitions. 128 keeps a 20 M-row month at ~160 k
/// records (≈7 MB while sorting) per partition.
const PARTITIONS: usize = 128;
/// One record: 16 bytes of hash, 4 of dense municipality index.
const RECORD: usize = 20;
/// Records per in-memory partition buffer (≈32 KiB).
const BUFFER_RECORDS: usize = 1638;
const BUFFER_BYTES: usize = BUFFER_RECORDS * RECORD;

/// Exact distinct counts, by dense index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DistinctCounts {
    /// Distinct beneficiaries per municipality (dense municipality index).
    pub(crate) per_municipality: Vec<u64>,
    /// Distinct beneficiaries per state (dense state index).
    pub(crate) per_state: Vec<u64>,
    /// Distinct beneficiaries in the whole file.
    pub(crate) national: u64,
}

impl DistinctCounts {
    fn new(municipalities: usize, states: usize) -> DistinctCounts {
        DistinctCounts {
            per_municipality: vec![0; municipalities],
            per_state: vec![0; states],
            national: 0,
        }
    }

    fn merge(&mut self, other: &DistinctCounts) {
        for (a, b) in self
            .per_municipality
            .iter_mut()
            .zip(&other.per_municipality)
        {
            *a += b;
        }
        for (a, b) in self.per_state.iter_mut().zip(&other.per_state) {
            *a += b;
        }
        self.national += other.national;
    }
}

/// The write side: pairs go in while the file streams.
pub(crate) struct DistinctSpill {
    file: File,
    buffers: Vec<Vec<u8>>,
    /// File offsets of each partition's full buffers.
    chunks: Vec<Vec<u64>>,
    written: u64,
}

impl DistinctSpill {
    /// Creates the anonymous spill file in `dir`.
    pub(crate) fn new(dir: &Path) -> io::Result<DistinctSpill> {
        Ok(DistinctSpill {
            file: tempfile::tempfile_in(dir)?,
            buffers: (0..PARTITIONS).map(|_| Vec::new()).collect(),
            chunks: vec![Vec::new(); PARTITIONS],
            written: 0,
        })
    }

    /// Records one row's beneficiary.
    #[inline]
    pub(crate) fn push(&mut self, hash: &[u8; 16], municipality: u32) -> io::Result<()> {
        let partition = usize::from(hash[0]) % PARTITIONS;
        let Some(buffer) = self.buffers.get_mut(partition) else {
            return Ok(()); // unreachable: the modulo keeps it in range
        };
        if buffer.capacity() == 0 {
            buffer.reserve_exact(BUFFER_BYTES);
        }
        buffer.extend_from_slice(hash);
        buffer.extend_from_slice(&municipality.to_le_bytes());
        if buffer.len() >= BUFFER_BYTES {
            self.file.write_all_at(buffer, self.written)?;
            if let Some(chunks) = self.chunks.get_mut(partition) {
                chunks.push(self.written);
            }
            self.written += buffer.len() as u64;
            buffer.clear();
        }
        Ok(())
    }

    /// Bytes written to the spill file so far.
    pub(crate) fn spilled_bytes(&self) -> u64 {
        self.written
    }

    /// Counts. `state_of[m]` is municipality `m`'s dense state index (below
    /// `states`); pairs naming a municipality outside `state_of` are an
    /// error. Runs on up to `threads` threads.
    pub(crate) fn finish(
        self,
        state_of: &[u32],
        states: usize,
        threads: usize,
    ) -> io::Result<DistinctCounts> {
        let threads = threads.clamp(1, PARTITIONS);
        let this = &self;
        let results: Vec<io::Result<DistinctCounts>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        let mut counts = DistinctCounts::new(state_of.len(), states);
                        let mut scratch = Scratch::default();
                        for partition in (t..PARTITIONS).step_by(threads) {
                            this.count_partition(partition, state_of, &mut scratch, &mut counts)?;
                        }
                        Ok(counts)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a counting thread panicked")))
                })
                .collect()
        });
        let mut total = DistinctCounts::new(state_of.len(), states);
        for result in results {
            total.merge(&result?);
        }
        Ok(total)
    }

    fn count_partition(
        &self,
        partition: usize,
        state_of: &[u32],
        scratch: &mut Scratch,
        counts: &mut DistinctCounts,
    ) -> io::Result<()> {
        let (Some(chunks), Some(tail)) = (self.chunks.get(partition), self.buffers.get(partition))
        else {
            return Ok(());
        };
        scratch.bytes.clear();
        scratch
            .bytes
            .resize(chunks.len() * BUFFER_BYTES + tail.len(), 0);
        let (spilled, rest) = scratch.bytes.split_at_mut(chunks.len() * BUFFER_BYTES);
        for (offset, slot) in chunks.iter().zip(spilled.chunks_exact_mut(BUFFER_BYTES)) {
            self.file.read_exact_at(slot, *offset)?;
        }
        rest.copy_from_slice(tail);
        scratch.keys.clear();
        scratch
            .keys
            .extend(scratch.bytes.chunks_exact(RECORD).map(|r| {
                let word = |range: std::ops::Range<usize>| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(r.get(range).unwrap_or(&[0; 8]));
                    u64::from_le_bytes(b)
                };
                let mut m = [0u8; 4];
                m.copy_from_slice(r.get(16..20).unwrap_or(&[0; 4]));
                (word(0..8), word(8..16), u32::from_le_bytes(m))
            }));
        scratch.keys.sort_unstable();
        count_sorted(&scratch.keys, state_of, &mut scratch.states, counts)
    }
}

#[derive(Default)]
struct Scratch {
    bytes: Vec<u8>,
    keys: Vec<(u64, u64, u32)>,
    states: Vec<u32>,
}

/// Walks (hash, municipality) pairs sorted by hash then municipality.
fn count_sorted(
    keys: &[(u64, u64, u32)],
    state_of: &[u32],
    states: &mut Vec<u32>,
    counts: &mut DistinctCounts,
) -> io::Result<()> {
    let unknown = |m: u32| io::Error::other(format!("municipality index {m} out of range"));
    for person in keys.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        counts.national += 1;
        states.clear();
        let mut previous = None;
        for &(_, _, m) in person {
            if previous == Some(m) {
                continue;
            }
            previous = Some(m);
            let slot = counts
                .per_municipality
                .get_mut(m as usize)
                .ok_or_else(|| unknown(m))?;
            *slot += 1;
            let state = *state_of.get(m as usize).ok_or_else(|| unknown(m))?;
            if !states.contains(&state) {
                states.push(state);
            }
        }
        for state in states.iter() {
            *counts
                .per_state
                .get_mut(*state as usize)
                .ok_or_else(|| io::Error::other(format!("state index {state} out of range")))? += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sample::Rng;
    use std::collections::{BTreeMap, BTreeSet};

    /// The obvious way: sets of hashes per group.
    fn oracle(pairs: &[([u8; 16], u32)], state_of: &[u32], states: usize) -> DistinctCounts {
        let mut muni: BTreeMap<u32, BTreeSet<[u8; 16]>> = BTreeMap::new();
        let mut state: BTreeMap<u32, BTreeSet<[u8; 16]>> = BTreeMap::new();
        let mut all = BTreeSet::new();
        for (h, m) in pairs {
            muni.entry(*m).or_default().insert(*h);
            state.entry(state_of[*m as usize]).or_default().insert(*h);
            all.insert(*h);
        }
        let mut counts = DistinctCounts::new(state_of.len(), states);
        for (m, set) in muni {
            counts.per_municipality[m as usize] = set.len() as u64;
        }
        for (s, set) in state {
            counts.per_state[s as usize] = set.len() as u64;
        }
        counts.national = all.len() as u64;
        counts
    }

    fn hash(rng: &mut Rng) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        h[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        h
    }

    /// People paid several times, in the same municipality, in another
    /// municipality of the same state and in another state; enough rows to
    /// fill and spill every partition's buffer several times.
    #[test]
    fn matches_the_obvious_count_on_repeats_across_municipalities_and_states() {
        let mut rng = Rng::new(11);
        let state_of: Vec<u32> = (0..50).map(|m| m / 10).collect(); // 5 states
        let mut people: Vec<[u8; 16]> = Vec::new();
        let mut pairs = Vec::new();
        for _ in 0..600_000 {
            let h = if !people.is_empty() && rng.below(10) < 3 {
                people[rng.below(people.len() as u64) as usize]
            } else {
                let h = hash(&mut rng);
                people.push(h);
                h
            };
            pairs.push((h, rng.below(50) as u32));
        }
        let dir = tempfile::tempdir().expect("dir");
        let mut spill = DistinctSpill::new(dir.path()).expect("spill");
        for (h, m) in &pairs {
            spill.push(h, *m).expect("push");
        }
        assert!(spill.spilled_bytes() > 0, "the test must exercise the file");
        let counts = spill.finish(&state_of, 5, 2).expect("finish");
        assert_eq!(counts, oracle(&pairs, &state_of, 5));
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            0,
            "the spill file is anonymous"
        );
    }

    #[test]
    fn the_same_person_twice_in_one_place_counts_once_everywhere() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spill = DistinctSpill::new(dir.path()).expect("spill");
        let person = [7u8; 16];
        let other = [9u8; 16];
        for (h, m) in [
            (person, 0),
            (person, 0),
            (person, 1),
            (person, 2),
            (other, 2),
        ] {
            spill.push(&h, m).expect("push");
        }
        // municipalities 0 and 1 in state 0, 2 in state 1
        let counts = spill.finish(&[0, 0, 1], 2, 3).expect("finish");
        assert_eq!(counts.per_municipality, vec![1, 1, 2]);
        assert_eq!(counts.per_state, vec![1, 2]);
        assert_eq!(counts.national, 2);
    }

    #[test]
    fn an_unknown_municipality_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spill = DistinctSpill::new(dir.path()).expect("spill");
        spill.push(&[1; 16], 5).expect("push");
        assert!(spill.finish(&[0], 1, 1).is_err());
    }

    #[test]
    fn no_rows_no_counts() {
        let dir = tempfile::tempdir().expect("dir");
        let spill = DistinctSpill::new(dir.path()).expect("spill");
        let counts = spill.finish(&[0, 0], 1, 2).expect("finish");
        assert_eq!(counts, DistinctCounts::new(2, 1));
    }
}
