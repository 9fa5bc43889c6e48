//! The municipality index: the `municipalities` table as the transformer
//! looks codes up in it (SIAFI in a flat array, IBGE in a map), with a
//! dense index per municipality (for tallies) and per state (for distinct
//! counts). Built once per load, before the first row; read-only after.

use std::collections::HashMap;

/// Municipality lookups, loaded from the `municipalities` table. Each
/// municipality also gets a dense index (0..len) for per-municipality tallies,
/// and each state a dense index for per-state distinct counts.
#[derive(Debug, Clone)]
pub struct MunicipalityIndex {
    ids: Vec<i32>,
    /// Dense state index of each municipality.
    state_of: Vec<u32>,
    /// Database id of each dense state index.
    state_ids: Vec<i32>,
    /// SIAFI code → dense index + 1 (0: unknown).
    by_siafi: Vec<u32>,
    by_ibge: HashMap<u32, u32>,
    /// The 6-digit code (the 7-digit one without its check digit).
    by_ibge6: HashMap<u32, u32>,
}

/// One municipality as the index needs it.
#[derive(Debug, Clone, Copy)]
pub struct MunicipalityEntry {
    pub id: i32,
    pub ibge: u32,
    pub siafi: Option<u16>,
    pub state_id: i32,
}

impl MunicipalityIndex {
    pub fn new(rows: impl IntoIterator<Item = MunicipalityEntry>) -> Self {
        let mut index = MunicipalityIndex {
            ids: Vec::new(),
            state_of: Vec::new(),
            state_ids: Vec::new(),
            by_siafi: vec![0; 10_000],
            by_ibge: HashMap::new(),
            by_ibge6: HashMap::new(),
        };
        let mut states: HashMap<i32, u32> = HashMap::new();
        for m in rows {
            let dense = index.ids.len() as u32;
            index.ids.push(m.id);
            let next_state = index.state_ids.len() as u32;
            let state = *states.entry(m.state_id).or_insert(next_state);
            if state == next_state {
                index.state_ids.push(m.state_id);
            }
            index.state_of.push(state);
            index.by_ibge.insert(m.ibge, dense);
            index.by_ibge6.insert(m.ibge / 10, dense);
            if let Some(slot) = m.siafi.and_then(|s| index.by_siafi.get_mut(usize::from(s))) {
                *slot = dense + 1;
            }
        }
        index
    }
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// The database id of a dense index.
    pub fn id(&self, dense: u32) -> i32 {
        self.ids.get(dense as usize).copied().unwrap_or(0)
    }
    /// Dense state index of each municipality, by dense municipality index.
    pub fn state_of(&self) -> &[u32] {
        &self.state_of
    }
    /// Database ids of the states, by dense state index.
    pub fn state_ids(&self) -> &[i32] {
        &self.state_ids
    }
    pub(super) fn siafi(&self, code: u16) -> Option<u32> {
        self.by_siafi
            .get(usize::from(code))
            .copied()
            .filter(|d| *d != 0)
            .map(|d| d - 1)
    }
    pub(super) fn ibge(&self, code: u32) -> Option<u32> {
        self.by_ibge.get(&code).copied()
    }
    pub(super) fn ibge6(&self, code: u32) -> Option<u32> {
        self.by_ibge6.get(&code).copied()
    }
}
