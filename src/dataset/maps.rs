//! Shipped tables that map a row's key to a state (`state_level` datasets):
//! `jobs/reference/<name>.csv`, data with its evidence, never substring
//! matching of names. Read with the specs and checked once: every key
//! well-formed and listed once, every state one of the 27.

use std::collections::BTreeMap;
use std::path::Path;

/// The tables compiled into the binary, used when the jobs directory is
/// missing.
const BUILTIN: &[(&str, &str)] = &[(
    "aneel-distribuidoras",
    include_str!("../../jobs/reference/aneel-distribuidoras.csv"),
)];

/// The 27 federative units.
const STATES: [&str; 27] = [
    "AC", "AL", "AM", "AP", "BA", "CE", "DF", "ES", "GO", "MA", "MG", "MS", "MT", "PA", "PB", "PE",
    "PI", "PR", "RJ", "RN", "RO", "RR", "RS", "SC", "SE", "SP", "TO",
];

/// Key (a CNPJ's 14 digits as a number) → state abbreviation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StateMap {
    pub(crate) name: String,
    pub(crate) entries: BTreeMap<u64, String>,
}

impl StateMap {
    /// Reads `name` from `dir/reference/<name>.csv` when that file exists
    /// (an operator's edited copy), else the built-in copy. The file: a
    /// header `cnpj,sigla,uf,evidence`, then one row per key.
    pub(crate) fn load(dir: &Path, name: &str) -> Result<StateMap, String> {
        let path = dir.join("reference").join(format!("{name}.csv"));
        let text = if path.is_file() {
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| (*t).to_string())
                .ok_or_else(|| format!("no shipped table named {name:?}"))?
        };
        StateMap::parse(name, &text)
    }

    fn parse(name: &str, text: &str) -> Result<StateMap, String> {
        let mut entries = BTreeMap::new();
        let mut lines = text.lines().enumerate();
        let header = lines.next().map(|(_, l)| l.trim_start_matches('\u{feff}'));
        if header != Some("cnpj,sigla,uf,evidence") {
            return Err(format!(
                "reference/{name}.csv: line 1 must be \"cnpj,sigla,uf,evidence\""
            ));
        }
        for (i, line) in lines {
            let at = || format!("reference/{name}.csv, line {}", i + 1);
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.splitn(4, ',');
            let (Some(cnpj), Some(_sigla), Some(uf), Some(evidence)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("{}: expected 4 fields", at()));
            };
            let key = (cnpj.len() == 14)
                .then(|| cnpj.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| format!("{}: {cnpj:?} is not a 14-digit CNPJ", at()))?;
            if !STATES.contains(&uf) {
                return Err(format!("{}: {uf:?} is not a state", at()));
            }
            if evidence.trim().is_empty() {
                return Err(format!("{}: every row cites its evidence", at()));
            }
            if entries.insert(key, uf.to_string()).is_some() {
                return Err(format!("{}: CNPJ {cnpj} is listed twice", at()));
            }
        }
        Ok(StateMap {
            name: name.to_string(),
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_is_well_formed() {
        let map = StateMap::load(Path::new("no-such-dir"), "aneel-distribuidoras")
            .expect("shipped table");
        assert!(map.entries.len() >= 30, "{}", map.entries.len());
        assert_eq!(
            map.entries.get(&6_981_180_000_116).map(String::as_str),
            Some("MG")
        );
    }

    #[test]
    fn bad_rows_are_refused_naming_the_line() {
        let header = "cnpj,sigla,uf,evidence\n";
        for (row, says) in [
            ("0698118000011,X,MG,e", "14-digit"),
            ("06981180000116,X,ZZ,e", "not a state"),
            ("06981180000116,X,MG,", "evidence"),
            ("06981180000116,X,MG,e\n06981180000116,Y,SP,e", "twice"),
        ] {
            let error = StateMap::parse("t", &format!("{header}{row}")).expect_err(row);
            assert!(
                error.contains("line 2") || error.contains("line 3"),
                "{error}"
            );
            assert!(error.contains(says), "{error}");
        }
    }
}
