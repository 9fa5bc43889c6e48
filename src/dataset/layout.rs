//! Layouts: the shapes a dataset's file has had over the years. The spec's
//! `[source]` and `[[columns]]` are its first layout; each `[[layouts]]`
//! entry is another, written as its differences from the first: another
//! delimiter or encoding, columns the file does not have (`absent`), and
//! per column another header, aliases or type. A load picks the first
//! layout whose columns the file's header has, and the ledger records it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::columns::{Column, ColumnType, Shape, validate_columns};
use super::sections::Encoding;

/// One shape of the file: how to split and decode it, and its columns.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) name: String,
    pub(crate) delimiter: u8,
    pub(crate) encoding: Encoding,
    pub(crate) columns: Vec<Column>,
}

/// A `[[layouts]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLayout {
    name: String,
    #[serde(default)]
    delimiter: Option<String>,
    #[serde(default)]
    encoding: Option<Encoding>,
    /// Columns of the first layout this one's files do not have.
    #[serde(default)]
    absent: Vec<String>,
    /// Per column name: what differs in this layout.
    #[serde(default)]
    columns: BTreeMap<String, ColumnChange>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnChange {
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    aliases: Option<Vec<String>>,
    #[serde(default, rename = "type")]
    column_type: Option<ColumnType>,
}

/// A delimiter as a spec writes it: one ASCII character (`"\t"` for tab)
/// that is not a quote or a line break.
pub(super) fn delimiter(key: &str, text: &str) -> Result<u8, String> {
    match text.as_bytes() {
        [b] if b.is_ascii() && *b != b'"' && *b != b'\n' && *b != b'\r' => Ok(*b),
        _ => Err(format!(
            "{key}: {text:?} must be one ASCII character other than a quote or line break"
        )),
    }
}

/// The layout `raw` describes, from the first layout `first`; `index` is
/// its place in `[[layouts]]`, for messages.
pub(super) fn build(
    first: &Layout,
    raw: RawLayout,
    index: usize,
    shape: Shape,
) -> Result<Layout, String> {
    let key = format!("layouts[{index}]");
    if !super::columns::is_identifier(&raw.name, '-') {
        return Err(format!(
            "{key}.name: {:?} must be lower case letters, digits and '-'",
            raw.name
        ));
    }
    let delimiter = match &raw.delimiter {
        Some(d) => delimiter(&format!("{key}.delimiter"), d)?,
        None => first.delimiter,
    };
    for name in raw.absent.iter().chain(raw.columns.keys()) {
        if !first.columns.iter().any(|c| &c.name == name) {
            return Err(format!("{key}: no column named {name:?} in [[columns]]"));
        }
    }
    let mut columns = Vec::new();
    for column in &first.columns {
        if raw.absent.contains(&column.name) {
            continue;
        }
        let mut column = column.clone();
        if let Some(change) = raw.columns.get(&column.name) {
            if let Some(header) = &change.header {
                column.header.clone_from(header);
            }
            if let Some(aliases) = &change.aliases {
                column.aliases.clone_from(aliases);
            }
            if let Some(column_type) = change.column_type {
                column.column_type = column_type;
            }
        }
        columns.push(column);
    }
    validate_columns(&columns, shape).map_err(|e| format!("{key} ({}): {e}", raw.name))?;
    Ok(Layout {
        name: raw.name,
        delimiter,
        encoding: raw.encoding.unwrap_or(first.encoding),
        columns,
    })
}
