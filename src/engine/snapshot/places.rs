//! The places load (`kind = "places"`): a snapshot of service locations
//! (CRAS, from SAGI's equipment register) into the API's table, one row per
//! place by the source's natural key.
//!
//! The source (a paged Solr query or a CSV file) is read as CSV on a
//! blocking thread; each row is typed, its municipality resolved and its
//! text checked against the API's column widths (too long is a reject,
//! never cut). Then, in one transaction: places are upserted by an id
//! derived from the natural key (`md5('carga:<dataset>:' || key)`, so the
//! API's uuid primary key is the natural key and re-running never
//! duplicates), a place of this dataset gone from the source is deleted
//! (one the load rejected stays as it was), and the ledger row is
//! published. Rows carga did not write (`source` other than
//! `carga:<dataset>`) are never touched. A failed, cancelled or killed load
//! leaves the table as it was.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::config::Settings;
use crate::dataset::{Column, ColumnType, Encoding, Role, Spec};
use crate::engine::decode::ChannelReader;
use crate::engine::load::ledger::{self, Reject};
use crate::engine::parse::{HeaderError, value};
use crate::engine::pipeline::{Context, LoadError};
use crate::engine::source::{self, OpenOutcome, Progress};

/// The most rows a snapshot may have (SAGI lists about 8,900 CRAS).
const MAX_PLACES: u64 = 500_000;
/// The longest natural key.
const MAX_KEY_CHARS: usize = 64;
/// Rejects kept in `carga.rejects` (all are counted).
const MAX_KEPT_REJECTS: usize = 1000;

/// What a places load did.
#[derive(Debug, Clone)]
pub struct PlacesReport {
    pub(crate) load_id: i64,
    pub read: u64,
    pub places: u64,
    pub inserted: u64,
    pub updated: u64,
    pub removed: u64,
    pub rejected: u64,
    pub(crate) seconds: f64,
}

/// The municipalities a place may be in, by each code type.
#[derive(Default)]
struct Codes {
    ibge: HashSet<u32>,
    ibge6: HashMap<u32, u32>,
    siafi: HashMap<u16, u32>,
}

impl Codes {
    async fn load(client: &impl tokio_postgres::GenericClient) -> Result<Codes, LoadError> {
        let rows = client
            .query(
                "SELECT ibge_code::text, siafi_code::text FROM public.municipalities
                 WHERE ibge_code ~ '^[0-9]{7}$'",
                &[],
            )
            .await?;
        let mut codes = Codes::default();
        for row in rows {
            let ibge: u32 = row.get::<_, String>(0).parse().unwrap_or(0);
            codes.ibge.insert(ibge);
            codes.ibge6.insert(ibge / 10, ibge);
            if let Some(siafi) = row
                .get::<_, Option<String>>(1)
                .and_then(|s| value::siafi(s.as_bytes()))
            {
                codes.siafi.insert(siafi, ibge);
            }
        }
        Ok(codes)
    }

    /// The 7-digit code of `field` read as `column_type`: `Err(None)` when
    /// it is not a code, `Err(Some(code))` when no municipality has it.
    fn resolve(&self, column_type: ColumnType, field: &[u8]) -> Result<u32, Option<u32>> {
        let found = match column_type {
            ColumnType::Ibge => value::ibge(field).map(|c| (c, self.ibge.get(&c).copied())),
            ColumnType::Ibge6 => value::ibge6(field).map(|c| (c, self.ibge6.get(&c).copied())),
            ColumnType::Siafi => {
                value::siafi(field).map(|c| (u32::from(c), self.siafi.get(&c).copied()))
            }
            _ => None,
        };
        match found {
            Some((_, Some(ibge))) => Ok(ibge),
            Some((code, None)) => Err(Some(code)),
            None => Err(None),
        }
    }
}

/// One place as the table gets it.
struct Place {
    key: String,
    ibge: String,
    /// The target's text columns, in [`crate::dataset::Target::place_fields`]
    /// order (the name first).
    fields: Vec<Option<String>>,
    location: Option<(f64, f64)>,
}

/// What the parse saw.
#[derive(Default)]
struct Parsed {
    read: u64,
    places: Vec<Place>,
    rejected: u64,
    rejects: Vec<Reject>,
    /// Keys of rejected rows: their published places stay as they are.
    rejected_keys: Vec<String>,
}

/// A refused row: (column, code, reason), and its key when it could be read.
struct Refusal {
    column: String,
    code: &'static str,
    reason: String,
}

fn refuse(column: &Column, code: &'static str, reason: String) -> Refusal {
    Refusal {
        column: column.name.clone(),
        code,
        reason,
    }
}

/// A text field: trimmed, empty as `None`; not UTF-8 or a NUL byte is a
/// refusal (PostgreSQL refuses NUL in text).
fn text(column: &Column, encoding: Encoding, field: &[u8]) -> Result<Option<String>, Refusal> {
    let field = value::trim(field);
    if field.contains(&0) {
        return Err(refuse(column, "nul_byte", "a NUL byte in the field".into()));
    }
    let text = match encoding {
        Encoding::Utf8 => std::str::from_utf8(field)
            .map_err(|_| refuse(column, "invalid_text", "not UTF-8 text".into()))?
            .to_string(),
        Encoding::Windows1252 => value::decode_text(encoding, field),
    };
    Ok((!text.is_empty()).then_some(text))
}

/// Where the spec's columns are in the header, and how rows become places.
struct Plan<'a> {
    spec: &'a Spec,
    columns: Vec<(&'a Column, Option<usize>)>,
    /// Each column's slot in the target's text columns (name and fields).
    slots: Vec<Option<usize>>,
}

impl<'a> Plan<'a> {
    fn new(spec: &'a Spec, header: &csv::ByteRecord, file: &str) -> Result<Plan<'a>, LoadError> {
        let keys: Vec<String> = header
            .iter()
            .map(|h| crate::dataset::header_key(&String::from_utf8_lossy(h)))
            .collect();
        let fields = spec.target.place_fields();
        let mut columns = Vec::new();
        let mut slots = Vec::new();
        let mut missing = Vec::new();
        for c in &spec.layouts[0].columns {
            let position = keys.iter().position(|k| {
                std::iter::once(&c.header)
                    .chain(&c.aliases)
                    .any(|name| crate::dataset::header_key(name) == *k)
            });
            if position.is_none() && !c.optional {
                missing.push(c.header.clone());
            }
            columns.push((c, position));
            slots.push(match c.role {
                Some(Role::PlaceName) => Some(0),
                Some(Role::Field) => c
                    .field
                    .as_deref()
                    .and_then(|f| fields.iter().position(|(name, _)| *name == f)),
                _ => None,
            });
        }
        if !missing.is_empty() {
            return Err(LoadError::Header {
                file: file.to_string(),
                source: HeaderError::Missing {
                    missing,
                    columns: keys.len(),
                    recognised: columns.iter().filter(|(_, p)| p.is_some()).count(),
                    // A places file names places, not people.
                    found: Some(
                        header
                            .iter()
                            .map(|h| String::from_utf8_lossy(h).into_owned())
                            .collect(),
                    ),
                },
            });
        }
        Ok(Plan {
            spec,
            columns,
            slots,
        })
    }

    /// The place of one row, or why it is refused (with its key when read).
    fn place(
        &self,
        record: &csv::ByteRecord,
        codes: &Codes,
    ) -> Result<Place, (Refusal, Option<String>)> {
        let fields = self.spec.target.place_fields();
        let encoding = self.spec.source.encoding;
        let mut key = None;
        let mut ibge = None;
        let mut texts: Vec<Option<String>> = vec![None; fields.len()];
        let mut location = None;
        // The key first, so a refusal of another column can name it.
        let ordered = self
            .columns
            .iter()
            .zip(&self.slots)
            .filter(|((c, _), _)| c.role == Some(Role::Key))
            .chain(
                self.columns
                    .iter()
                    .zip(&self.slots)
                    .filter(|((c, _), _)| c.role != Some(Role::Key)),
            );
        for ((column, position), slot) in ordered {
            let raw = position.and_then(|p| record.get(p)).unwrap_or_default();
            let refused = |r: Refusal| (r, key.clone());
            match column.role {
                Some(Role::Key) => {
                    let k = match column.column_type {
                        ColumnType::Integer => {
                            value::integer(value::trim(raw)).map(|v| v.to_string())
                        }
                        _ => text(column, encoding, raw)
                            .map_err(refused)?
                            .filter(|k| k.chars().count() <= MAX_KEY_CHARS),
                    };
                    key = Some(k.ok_or_else(|| {
                        (
                            refuse(
                                column,
                                "bad_value",
                                format!(
                                    "no key (empty, or longer than {MAX_KEY_CHARS} characters)"
                                ),
                            ),
                            None,
                        )
                    })?);
                }
                Some(Role::Municipality) => {
                    let code = codes.resolve(column.column_type, raw).map_err(|code| {
                        refused(match code {
                            Some(code) => refuse(
                                column,
                                "unknown_municipality",
                                format!("no municipality has the code {code}"),
                            ),
                            None => refuse(
                                column,
                                "bad_value",
                                format!(
                                    "not a {} municipality code{}",
                                    match column.column_type {
                                        ColumnType::Ibge => "7-digit IBGE",
                                        ColumnType::Ibge6 => "6-digit IBGE",
                                        _ => "4-digit SIAFI",
                                    },
                                    if value::shaped(column.column_type, raw) {
                                        format!(
                                            " ({:?})",
                                            String::from_utf8_lossy(value::trim(raw))
                                        )
                                    } else {
                                        String::new()
                                    }
                                ),
                            ),
                        })
                    })?;
                    ibge = Some(format!("{code:07}"));
                }
                Some(Role::Location) if !value::trim(raw).is_empty() => {
                    let point = value::lat_lon(raw).ok_or_else(|| {
                        let shown = if value::shaped(ColumnType::LatLon, raw) {
                            format!(" {:?}", String::from_utf8_lossy(value::trim(raw)))
                        } else {
                            String::new()
                        };
                        refused(refuse(
                            column,
                            "bad_value",
                            format!("not a \"latitude,longitude\" pair inside Brazil{shown}"),
                        ))
                    })?;
                    location = Some(point);
                }
                Some(Role::PlaceName | Role::Field) => {
                    let Some(slot) = *slot else { continue };
                    let value = match column.column_type {
                        ColumnType::Cep if !value::trim(raw).is_empty() => {
                            Some(value::cep(raw).ok_or_else(|| {
                                refused(refuse(column, "bad_value", "not a CEP (8 digits)".into()))
                            })?)
                        }
                        ColumnType::Cep => None,
                        _ => text(column, encoding, raw).map_err(refused)?,
                    };
                    if let Some(v) = value {
                        let joined = match texts[slot].take() {
                            Some(before) => format!("{before}, {v}"),
                            None => v,
                        };
                        let (name, width) = fields[slot];
                        if joined.chars().count() > width {
                            return Err(refused(refuse(
                                column,
                                "bad_value",
                                format!(
                                    "{} characters, more than the {width} of {name} (never cut)",
                                    joined.chars().count()
                                ),
                            )));
                        }
                        texts[slot] = Some(joined);
                    }
                }
                _ => {}
            }
        }
        let (Some(key), Some(ibge)) = (key, ibge) else {
            unreachable!("a places spec has a key and a municipality column (validated)")
        };
        if texts[0].is_none() {
            let column = self
                .columns
                .iter()
                .find(|(c, _)| c.role == Some(Role::PlaceName))
                .map(|(c, _)| *c)
                .expect("a places spec has a place name column (validated)");
            return Err((
                refuse(column, "bad_value", "the place has no name".into()),
                Some(key),
            ));
        }
        Ok(Place {
            key,
            ibge,
            fields: texts,
            location,
        })
    }
}

fn csv_error(file: &str, e: &csv::Error) -> LoadError {
    let (line, byte) = e.position().map_or((0, 0), |p| (p.line(), p.byte()));
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        _ => e.to_string(),
    };
    LoadError::Csv {
        file: file.to_string(),
        line,
        byte,
        message,
    }
}

/// A reader that drops each `\r` before a `\n`: the csv crate numbers the
/// line of a record after a CRLF one short (it counts the `\n` when the
/// next record starts), and a reject must name the right line.
struct LfOnly<R> {
    inner: R,
    /// A `\r` that ended the previous read, not yet known to precede `\n`.
    pending_cr: bool,
}

impl<R: Read> Read for LfOnly<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.len() < 2 {
            return self.inner.read(buf);
        }
        loop {
            let start = usize::from(self.pending_cr);
            if self.pending_cr {
                buf[0] = b'\r';
            }
            let n = self.inner.read(&mut buf[start..])?;
            if n == 0 {
                self.pending_cr = false;
                return Ok(start);
            }
            let end = start + n;
            let mut out = 0;
            for i in 0..end {
                let byte = buf[i];
                if byte == b'\r' && buf.get(i + 1) == Some(&b'\n') && i + 1 < end {
                    continue;
                }
                buf[out] = byte;
                out += 1;
            }
            // A last `\r` waits for the next read to know what follows.
            self.pending_cr = out > 0 && buf[out - 1] == b'\r';
            if self.pending_cr {
                out -= 1;
            }
            if out > 0 {
                return Ok(out);
            }
        }
    }
}

/// Reads the CSV rows of a snapshot into places and refusals. A key seen
/// twice fails the load, naming both lines.
fn parse(reader: impl Read, file: &str, spec: &Spec, codes: &Codes) -> Result<Parsed, LoadError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .delimiter(spec.layouts[0].delimiter)
        .from_reader(LfOnly {
            inner: reader,
            pending_cr: false,
        });
    let header = csv.byte_headers().map_err(|e| csv_error(file, &e))?.clone();
    if header.is_empty() {
        return Err(LoadError::NoRows {
            file: file.to_string(),
        });
    }
    let plan = Plan::new(spec, &header, file)?;
    let mut parsed = Parsed::default();
    let mut lines: HashMap<String, u64> = HashMap::new();
    let mut record = csv::ByteRecord::new();
    while csv
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(file, &e))?
    {
        let (line, byte) = record.position().map_or((0, 0), |p| (p.line(), p.byte()));
        parsed.read += 1;
        if parsed.read > MAX_PLACES {
            return Err(LoadError::Csv {
                file: file.to_string(),
                line,
                byte,
                message: format!("more than {MAX_PLACES} places: not a register of places"),
            });
        }
        match plan.place(&record, codes) {
            Ok(place) => {
                if let Some(first) = lines.insert(place.key.clone(), line) {
                    return Err(LoadError::DuplicateRow {
                        file: file.to_string(),
                        line: line as i64,
                        first_line: first as i64,
                        what: format!("the place {:?}", place.key),
                        period: "the snapshot".into(),
                    });
                }
                parsed.places.push(place);
            }
            Err((refusal, key)) => {
                parsed.rejected += 1;
                parsed.rejected_keys.extend(key);
                if parsed.rejects.len() < MAX_KEPT_REJECTS {
                    parsed.rejects.push(Reject {
                        line,
                        byte_offset: byte,
                        column: Some(refusal.column),
                        code: refusal.code,
                        reason: refusal.reason,
                        // Redacted: the reason says what was wrong.
                        raw_line: String::new(),
                    });
                }
            }
        }
    }
    if parsed.read == 0 {
        return Err(LoadError::NoRows {
            file: file.to_string(),
        });
    }
    Ok(parsed)
}

/// Opens the source and parses it on a blocking thread.
async fn read(
    spec: &Spec,
    location: &str,
    settings: &Settings,
    codes: Codes,
) -> Result<(Parsed, String), LoadError> {
    let progress = Arc::new(Progress::default());
    let opened =
        match crate::engine::pipeline::open_source(spec, location, settings, None, None, &progress)
            .await?
        {
            OpenOutcome::Body(opened) => opened,
            OpenOutcome::NotModified(_) => {
                return Err(LoadError::Internal(
                    "304 to an unconditional request".into(),
                ));
            }
        };
    let file = opened.meta.url.clone();
    let (tx, rx) = mpsc::channel(8);
    let limits = source::DownloadLimits::from_settings(&settings.http);
    // Aborted if the load is dropped (cancelled): its connections close.
    let pump = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(opened.pump(
        tx,
        limits,
        progress,
        || {},
    )));
    let spec_owned = spec.clone();
    let name = file.clone();
    let parsed = tokio::task::spawn_blocking(move || {
        parse(ChannelReader::new(rx), &name, &spec_owned, &codes)
    });
    let parsed = parsed
        .await
        .map_err(|e| LoadError::Internal(format!("places parser: {e}")))?;
    let pumped = pump
        .await
        .map_err(|e| LoadError::Internal(format!("download task: {e}")))?;
    // The root cause: the download's own failure, else the parser's (the
    // download then only saw its reader stop), else the download's.
    match (pumped, parsed) {
        (Err(e), _) if !e.is_consequence() => Err(e.into()),
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e.into()),
        (Ok(_), Ok(parsed)) => Ok((parsed, file)),
    }
}

/// Counts of a publish.
struct Written {
    inserted: u64,
    updated: u64,
    removed: u64,
}

/// Writes the snapshot in `tx`: the shrink guard, the upsert, the removal
/// of places gone from the source.
async fn write(
    tx: &tokio_postgres::Transaction<'_>,
    spec: &Spec,
    parsed: &Parsed,
    file: &str,
    force: bool,
) -> Result<Written, LoadError> {
    let owner = format!("carga:{}", spec.dataset);
    // One publish of a dataset at a time; a second waits, then re-applies
    // the same upserts (idempotent).
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&owner],
    )
    .await?;
    let existing: i64 = tx
        .query_one(
            "SELECT count(*) FROM public.cras_locations WHERE source = $1",
            &[&owner],
        )
        .await?
        .get(0);
    // A rejected place keeps its published row: it counts as still there.
    let places = parsed.places.len() as u64;
    let kept = places + parsed.rejected_keys.len() as u64;
    let floor = (1.0 - spec.quality.max_shrink) * existing as f64;
    if !force && existing > 0 && (kept as f64) < floor {
        return Err(LoadError::Shrink {
            file: file.to_string(),
            rows: places,
            baseline_rows: existing,
            baseline_period: "the current table".into(),
            percent: 100.0 * (1.0 - places as f64 / existing as f64),
            allowed: spec.quality.max_shrink * 100.0,
        });
    }
    let keys: Vec<&str> = parsed.places.iter().map(|p| p.key.as_str()).collect();
    let ibge: Vec<&str> = parsed.places.iter().map(|p| p.ibge.as_str()).collect();
    let field = |i: usize| -> Vec<Option<&str>> {
        parsed
            .places
            .iter()
            .map(|p| p.fields[i].as_deref())
            .collect()
    };
    let (nome, endereco, bairro, cep, telefone) =
        (field(0), field(1), field(2), field(3), field(4));
    let lat: Vec<Option<f64>> = parsed
        .places
        .iter()
        .map(|p| p.location.map(|l| l.0))
        .collect();
    let lon: Vec<Option<f64>> = parsed
        .places
        .iter()
        .map(|p| p.location.map(|l| l.1))
        .collect();
    let rows = tx
        .query(
            "INSERT INTO public.cras_locations AS c
                 (id, ibge_code, nome, endereco, bairro, cep, telefone, latitude, longitude,
                  source, geocode_source, created_at, updated_at)
             SELECT md5($1 || ':' || n.key)::uuid, n.ibge, n.nome, n.endereco, n.bairro, n.cep,
                    n.telefone, n.lat, n.lon, $1,
                    CASE WHEN n.lat IS NULL THEN NULL ELSE $1 END,
                    now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::float8[], $10::float8[])
                  AS n(key, ibge, nome, endereco, bairro, cep, telefone, lat, lon)
             ON CONFLICT (id) DO UPDATE SET
                 ibge_code = EXCLUDED.ibge_code, nome = EXCLUDED.nome,
                 endereco = EXCLUDED.endereco, bairro = EXCLUDED.bairro, cep = EXCLUDED.cep,
                 telefone = EXCLUDED.telefone,
                 latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
                 source = EXCLUDED.source, geocode_source = EXCLUDED.geocode_source,
                 updated_at = EXCLUDED.updated_at
             WHERE (c.ibge_code, c.nome, c.endereco, c.bairro, c.cep, c.telefone,
                    c.latitude, c.longitude, c.source, c.geocode_source)
                   IS DISTINCT FROM
                   (EXCLUDED.ibge_code, EXCLUDED.nome, EXCLUDED.endereco, EXCLUDED.bairro,
                    EXCLUDED.cep, EXCLUDED.telefone, EXCLUDED.latitude,
                    EXCLUDED.longitude, EXCLUDED.source, EXCLUDED.geocode_source)
             RETURNING (xmax = 0)",
            &[
                &owner, &keys, &ibge, &nome, &endereco, &bairro, &cep, &telefone, &lat, &lon,
            ],
        )
        .await?;
    let inserted = rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64;
    // Gone from the source: removed. A place whose row was rejected this
    // time keeps its published version.
    let kept: Vec<&str> = keys
        .iter()
        .copied()
        .chain(parsed.rejected_keys.iter().map(String::as_str))
        .collect();
    let removed = tx
        .execute(
            "DELETE FROM public.cras_locations
             WHERE source = $1
               AND id NOT IN (SELECT md5($1 || ':' || k)::uuid FROM unnest($2::text[]) AS k)",
            &[&owner, &kept],
        )
        .await?;
    Ok(Written {
        inserted,
        updated: rows.len() as u64 - inserted,
        removed,
    })
}

/// Loads a places snapshot in one transaction; `cancel` rolls it back.
pub async fn run(
    ctx: &Context,
    spec: &Spec,
    url: Option<&str>,
    force: bool,
    cancel: impl Future<Output = ()>,
) -> Result<PlacesReport, LoadError> {
    let started = Instant::now();
    let client = ctx.pool.get().await?;
    let location = url.unwrap_or(&spec.source.url).to_string();
    let redacted = source::redact_source(&location);
    let load_id = ledger::start(&**client, &spec.dataset, None, None, &redacted, force).await?;
    let counts = super::Counts::default();
    let work = async {
        let codes = Codes::load(&**client).await?;
        if codes.ibge.is_empty() {
            return Err(LoadError::NoMunicipalities);
        }
        let (parsed, file) = read(spec, &location, &ctx.settings, codes).await?;
        counts.set(parsed.read, parsed.rejected);
        let limit = crate::engine::pipeline::reject_limit(spec, parsed.read);
        if parsed.rejected > limit {
            ledger::insert_rejects(&**client, load_id, &parsed.rejects).await?;
            let first = parsed.rejects.first();
            return Err(LoadError::TooManyRejects {
                file,
                rejected: parsed.rejected,
                read: parsed.read,
                limit,
                first_line: first.map_or(0, |r| r.line),
                first_column: first
                    .and_then(|r| r.column.as_ref())
                    .map(|c| format!(", column {c:?}"))
                    .unwrap_or_default(),
                first_reason: first.map(|r| r.reason.clone()).unwrap_or_default(),
            });
        }
        let mut connection = ctx.pool.get().await?;
        let tx = connection.transaction().await?;
        let written = write(&tx, spec, &parsed, &file, force).await?;
        ledger::insert_rejects(&*tx, load_id, &parsed.rejects).await?;
        ledger::publish_snapshot(
            &*tx,
            load_id,
            &spec.dataset,
            parsed.read as i64,
            parsed.places.len() as i64,
            parsed.rejected as i64,
        )
        .await?;
        tx.commit().await?;
        Ok(PlacesReport {
            load_id,
            read: parsed.read,
            places: parsed.places.len() as u64,
            inserted: written.inserted,
            updated: written.updated,
            removed: written.removed,
            rejected: parsed.rejected,
            seconds: started.elapsed().as_secs_f64(),
        })
    };
    super::settle(&**client, load_id, &counts, work, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(input: &[u8], chunk: usize) -> Vec<u8> {
        struct Chunks<'a>(&'a [u8], usize);
        impl Read for Chunks<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        LfOnly {
            inner: Chunks(input, chunk),
            pending_cr: false,
        }
        .read_to_end(&mut out)
        .expect("read");
        out
    }

    #[test]
    fn crlf_becomes_lf_whatever_the_reads_split() {
        let input = b"a,b\r\n1,\"x\ry\"\r\n\r\r\n3,4\r";
        for chunk in 1..=input.len() {
            assert_eq!(
                through(input, chunk),
                b"a,b\n1,\"x\ry\"\n\r\n3,4\r",
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn lines_are_counted_like_an_editor_does() {
        let data = b"a,b\r\n1,2\r\n\"3\nx\",4\r\n5,6\r\n";
        let mut csv = csv::ReaderBuilder::new().from_reader(LfOnly {
            inner: &data[..],
            pending_cr: false,
        });
        let mut record = csv::ByteRecord::new();
        let mut lines = Vec::new();
        while csv.read_byte_record(&mut record).expect("record") {
            lines.push(record.position().map(|p| p.line()));
        }
        assert_eq!(lines, [Some(2), Some(3), Some(5)]);
    }
}
