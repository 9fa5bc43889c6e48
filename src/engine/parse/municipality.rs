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
    /// `UF|NAME KEY` (see [`super::value::name_key`]) → dense index;
    /// [`AMBIGUOUS`] when two municipalities of a state share the key.
    by_name: HashMap<String, u32>,
}

/// A name two municipalities of one state share: it matches neither.
const AMBIGUOUS: u32 = u32::MAX;

/// Why a name did not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameMiss {
    Unknown,
    Ambiguous,
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
            by_name: HashMap::new(),
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

    /// Adds the name of the municipality with IBGE code `ibge`, in state
    /// `uf` (its abbreviation), for [`MunicipalityIndex::by_name`].
    pub fn add_name(&mut self, ibge: u32, uf: &str, name: &str) {
        let Some(&dense) = self.by_ibge.get(&ibge) else {
            return;
        };
        let key = format!(
            "{}|{}",
            uf.trim().to_ascii_uppercase(),
            super::value::name_key(name)
        );
        self.by_name
            .entry(key)
            .and_modify(|d| {
                if *d != dense {
                    *d = AMBIGUOUS;
                }
            })
            .or_insert(dense);
    }

    /// The municipality named `name` in state `uf`: never a namesake in
    /// another state, never one of two namesakes in the same state.
    pub(crate) fn by_name(&self, uf: &str, name: &str) -> Result<u32, NameMiss> {
        let key = format!(
            "{}|{}",
            uf.trim().to_ascii_uppercase(),
            super::value::name_key(name)
        );
        match self.by_name.get(&key) {
            Some(&AMBIGUOUS) => Err(NameMiss::Ambiguous),
            Some(&dense) => Ok(dense),
            None => Err(NameMiss::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_within_their_state_only_and_never_ambiguously() {
        let entry = |id: i32, ibge: u32, state_id: i32| MunicipalityEntry {
            id,
            ibge,
            siafi: None,
            state_id,
        };
        let mut index = MunicipalityIndex::new([
            entry(1, 4302303, 43),
            entry(2, 4202537, 42),
            entry(3, 2207793, 22),
            entry(4, 2200001, 22),
            entry(5, 2200002, 22),
        ]);
        index.add_name(4302303, "RS", "Bom Jesus");
        index.add_name(4202537, "SC", "Bom Jesus");
        index.add_name(2207793, "PI", "Pau D'Arco do Piauí");
        // Two of one state sharing a key (made up: IBGE has none today).
        index.add_name(2200001, "PI", "São João");
        index.add_name(2200002, "PI", "Sao-Joao");
        let id = |r: Result<u32, NameMiss>| r.map(|d| index.id(d));
        assert_eq!(id(index.by_name("rs", " BOM  JESUS ")), Ok(1));
        assert_eq!(id(index.by_name("SC", "bom jesus")), Ok(2));
        assert_eq!(index.by_name("SP", "BOM JESUS"), Err(NameMiss::Unknown));
        assert_eq!(id(index.by_name("PI", "PAU D ARCO DO PIAUI")), Ok(3));
        assert_eq!(index.by_name("PI", "SAO JOAO"), Err(NameMiss::Ambiguous));
    }
}
