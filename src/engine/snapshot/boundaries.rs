//! The boundaries load (`kind = "boundaries"`): GeoJSON features, one
//! request per state (`{uf}` in the spec's URL: IBGE's mesh service answers
//! a FeatureCollection per state), into the API's PostGIS geometry columns.
//!
//! Each answer is read whole (at most one answer in memory, capped) and its
//! features checked in Rust: a Polygon or MultiPolygon whose rings are
//! closed, have four positions or more and lie inside Brazil's bounding
//! box, keyed by a code that names a municipality of the state asked for
//! (or the state itself). The accepted features go to a temporary table of
//! the load's transaction; PostgreSQL then refuses what `ST_IsValid` does
//! not accept (a self-intersecting ring: never "made valid" silently), and
//! writes the rest as SRID 4326 multipolygons, with the API's simplified
//! geometry and centroid when it has those columns. A refused feature keeps
//! the geometry it had. All states commit together or not at all.
//!
//! Without PostGIS (or without the API's geometry columns) the features
//! are still fetched and checked, nothing is written, and the load says so.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde_json::Value;

use crate::dataset::{Role, Spec, Target};
use crate::engine::load::ledger::{self, Reject};
/// Brazil's territory as IBGE's meshes draw it, in degrees, with some
/// margin: wider than a CRAS's box (`value::lat_lon`) because islands
/// belong to municipalities — Trindade and Martim Vaz (Vitória, ES) reach
/// about −28.8° longitude, São Pedro e São Paulo (PE) −29.3°.
const LATITUDE: (f64, f64) = (-34.0, 5.6);
const LONGITUDE: (f64, f64) = (-74.3, -28.5);
use crate::engine::pipeline::{Context, LoadError};
use crate::engine::source::{self, SourceError, paged};

/// Rejects kept in `carga.rejects` (all are counted).
const MAX_KEPT_REJECTS: usize = 1000;

/// What a boundaries load did.
#[derive(Debug, Clone)]
pub struct BoundariesReport {
    pub(crate) load_id: i64,
    /// Features read.
    pub read: u64,
    /// Features accepted (valid geometry for a known place).
    pub accepted: u64,
    /// Geometries that changed (0 when none is written).
    pub changed: u64,
    pub rejected: u64,
    /// The geometry columns written; empty without PostGIS.
    pub columns: Vec<String>,
    pub(crate) seconds: f64,
}

/// One accepted feature.
struct Feature {
    /// Its number in the load (1-based, over every answer): the reject line.
    number: u64,
    code: String,
    geometry: String,
}

/// Why a feature is refused.
struct Refusal {
    number: u64,
    code: &'static str,
    reason: String,
}

/// Checks a GeoJSON geometry: a Polygon or MultiPolygon whose rings are
/// closed, hold four positions or more, and lie inside Brazil.
fn check_geometry(geometry: Option<&Value>) -> Result<(), String> {
    let geometry = geometry.ok_or("no geometry")?;
    let kind = geometry.get("type").and_then(Value::as_str).unwrap_or("");
    let coordinates = geometry.get("coordinates").ok_or("no coordinates")?;
    let polygons: Vec<&Value> = match kind {
        "Polygon" => vec![coordinates],
        "MultiPolygon" => coordinates
            .as_array()
            .ok_or("MultiPolygon coordinates are not an array")?
            .iter()
            .collect(),
        other => {
            return Err(format!(
                "a {other:?} geometry, not a Polygon or MultiPolygon"
            ));
        }
    };
    if polygons.is_empty() {
        return Err("an empty MultiPolygon".into());
    }
    for polygon in polygons {
        let rings = polygon.as_array().ok_or("a polygon that is not an array")?;
        if rings.is_empty() {
            return Err("a polygon with no ring".into());
        }
        for ring in rings {
            let positions = ring.as_array().ok_or("a ring that is not an array")?;
            if positions.len() < 4 {
                return Err(format!(
                    "a ring of {} positions (four or more close a ring)",
                    positions.len()
                ));
            }
            let mut points = Vec::with_capacity(positions.len());
            for position in positions {
                let pair = position.as_array().filter(|p| p.len() >= 2);
                let number = |i: usize| pair.and_then(|p| p[i].as_f64());
                let (Some(lon), Some(lat)) = (number(0), number(1)) else {
                    return Err("a position that is not [longitude, latitude]".into());
                };
                let inside = |v: f64, (low, high): (f64, f64)| (low..=high).contains(&v);
                if !inside(lon, LONGITUDE) || !inside(lat, LATITUDE) {
                    return Err(format!(
                        "a position outside Brazil ([{lon}, {lat}]; swapped coordinates?)"
                    ));
                }
                points.push((lon, lat));
            }
            if points.first() != points.last() {
                return Err("a ring that is not closed".into());
            }
        }
    }
    Ok(())
}

/// The places a feature may name: a municipality of the state asked for,
/// or that state.
struct Known {
    target: Target,
    municipalities: HashSet<String>,
}

impl Known {
    /// Whether `code` is a place of `state` this load writes.
    fn admits(&self, code: &str, state: &str) -> Result<(), String> {
        match self.target {
            Target::StatesGeometry if code == state => Ok(()),
            Target::StatesGeometry => Err(format!("the answer for state {state} names {code}")),
            _ if code.len() != 7 || !code.bytes().all(|b| b.is_ascii_digit()) => {
                Err(format!("{code:?} is not a 7-digit IBGE code"))
            }
            _ if !code.starts_with(state) => {
                Err(format!("municipality {code} is not in state {state}"))
            }
            _ if !self.municipalities.contains(code) => {
                Err(format!("no municipality has the code {code}"))
            }
            _ => Ok(()),
        }
    }
}

/// The features of one answer, and the refused ones. Not a
/// FeatureCollection, or one with no feature, is the service's fault.
fn features(
    answer: Value,
    state: &str,
    key: &str,
    known: &Known,
    number: &mut u64,
    url: &str,
) -> Result<(Vec<Feature>, Vec<Refusal>), SourceError> {
    let protocol = |message: String| SourceError::Protocol {
        url: url.to_string(),
        message,
    };
    if answer.get("type").and_then(Value::as_str) != Some("FeatureCollection") {
        return Err(protocol(format!(
            "the answer for state {state} is not a GeoJSON FeatureCollection"
        )));
    }
    let Some(Value::Array(list)) = answer.get("features") else {
        return Err(protocol(format!(
            "the answer for state {state} has no features array"
        )));
    };
    if list.is_empty() {
        return Err(protocol(format!(
            "the answer for state {state} has no feature"
        )));
    }
    let mut accepted = Vec::with_capacity(list.len());
    let mut refused = Vec::new();
    for feature in list {
        *number += 1;
        let code = match feature.get("properties").and_then(|p| p.get(key)) {
            Some(Value::String(s)) => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let refuse = |code: &'static str, reason: String| Refusal {
            number: *number,
            code,
            reason: format!("state {state}: {reason}"),
        };
        if code.is_empty() {
            refused.push(refuse("bad_value", format!("no properties.{key}")));
            continue;
        }
        if let Err(reason) = known.admits(&code, state) {
            refused.push(refuse("unknown_municipality", reason));
            continue;
        }
        let geometry = feature.get("geometry");
        if let Err(reason) = check_geometry(geometry) {
            refused.push(refuse("invalid_geometry", format!("{code}: {reason}")));
            continue;
        }
        accepted.push(Feature {
            number: *number,
            code,
            geometry: geometry.map(Value::to_string).unwrap_or_default(),
        });
    }
    Ok((accepted, refused))
}

/// The API's geometry columns this target writes that exist here (none
/// without PostGIS), as (column, SQL of the value from `g`).
async fn geometry_columns(
    client: &impl tokio_postgres::GenericClient,
    target: Target,
) -> Result<Vec<(&'static str, &'static str)>, LoadError> {
    let (table, wanted): (&str, &[(&str, &str)]) = match target {
        Target::StatesGeometry => ("states", &[("geometry", "g")]),
        _ => (
            "municipalities",
            &[
                ("geometry", "g"),
                // The API's map endpoints read it before the full geometry
                // (routers/geo.py L132-135 simplify with 0.005 when it is
                // NULL): the same tolerance, topology kept.
                (
                    "geometry_simplified",
                    "ST_Multi(ST_SimplifyPreserveTopology(g, 0.005))",
                ),
                ("centroid", "ST_Centroid(g)"),
            ],
        ),
    };
    let present: HashSet<String> = client
        .query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 AND udt_name = 'geometry'",
            &[&table],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // The others are derived from the full geometry: none without it.
    if !present.contains("geometry") {
        return Ok(Vec::new());
    }
    Ok(wanted
        .iter()
        .filter(|(column, _)| present.contains(*column))
        .copied()
        .collect())
}

/// The spec's URL (or `url`) for each state: `{uf}` is the state's 2-digit
/// IBGE code.
fn locations(template: &str, states: &[String]) -> Vec<(String, String)> {
    states
        .iter()
        .map(|s| (s.clone(), template.replace("{uf}", s)))
        .collect()
}

/// Loads a boundaries snapshot in one transaction; `cancel` rolls it back.
pub async fn run(
    ctx: &Context,
    spec: &Spec,
    url: Option<&str>,
    force: bool,
    cancel: impl Future<Output = ()>,
) -> Result<BoundariesReport, LoadError> {
    let started = Instant::now();
    let client = ctx.pool.get().await?;
    let template = url.unwrap_or(&spec.source.url).to_string();
    if !template.contains("{uf}") {
        return Err(LoadError::Reference(format!(
            "{}: a boundaries URL has {{uf}} (each state's 2-digit code: one request per state)",
            source::redact_source(&template)
        )));
    }
    let redacted = source::redact_source(&template);
    let load_id = ledger::start(&**client, &spec.dataset, None, None, &redacted, force).await?;
    let counts = super::Counts::default();
    let work = async {
        let states: Vec<String> = client
            .query(
                "SELECT ibge_code::text FROM public.states ORDER BY ibge_code",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let municipalities: HashSet<String> = client
            .query("SELECT ibge_code::text FROM public.municipalities", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if states.is_empty() || municipalities.is_empty() {
            return Err(LoadError::NoMunicipalities);
        }
        let known = std::sync::Arc::new(Known {
            target: spec.target,
            municipalities,
        });
        let key = spec.layouts[0]
            .columns
            .iter()
            .find(|c| c.role == Some(Role::Key))
            .map(|c| c.header.clone())
            .unwrap_or_default();
        let columns = geometry_columns(&**client, spec.target).await?;
        let mut connection = ctx.pool.get().await?;
        let tx = connection.transaction().await?;
        let owner = format!("carga:{}", spec.dataset);
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&owner],
        )
        .await?;
        tx.batch_execute(
            "CREATE TEMPORARY TABLE carga_shapes (number bigint, code text, geojson text)
             ON COMMIT DROP",
        )
        .await?;
        let max_bytes = paged::MAX_PAGE_BYTES.min(ctx.settings.http.max_download_bytes);
        let mut number = 0u64;
        let mut refused: Vec<Refusal> = Vec::new();
        let mut seen: HashMap<String, u64> = HashMap::new();
        for (state, location) in locations(&template, &states) {
            let answer = paged::get_json(&location, &ctx.settings.http, None, max_bytes).await?;
            let shown = source::redact_source(&location);
            // Checking and re-serialising thousands of polygons: off the
            // runtime's threads.
            let (known, key, from, url) = (known.clone(), key.clone(), number, shown.clone());
            let checked = tokio::task::spawn_blocking(move || {
                let mut number = from;
                features(answer, &state, &key, &known, &mut number, &url).map(|f| (f, number))
            })
            .await
            .map_err(|e| LoadError::Internal(format!("the feature check stopped: {e}")))?;
            let ((accepted, mut refusals), after) = checked?;
            number = after;
            refused.append(&mut refusals);
            for f in &accepted {
                if let Some(first) = seen.insert(f.code.clone(), f.number) {
                    return Err(LoadError::DuplicateRow {
                        file: shown,
                        line: f.number as i64,
                        first_line: first as i64,
                        what: format!("the feature of {}", f.code),
                        period: "the snapshot (feature numbers, not lines)".into(),
                    });
                }
            }
            let numbers: Vec<i64> = accepted.iter().map(|f| f.number as i64).collect();
            let codes: Vec<&str> = accepted.iter().map(|f| f.code.as_str()).collect();
            let shapes: Vec<&str> = accepted.iter().map(|f| f.geometry.as_str()).collect();
            tx.execute(
                "INSERT INTO carga_shapes SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
                &[&numbers, &codes, &shapes],
            )
            .await?;
        }
        if !columns.is_empty() {
            // PostGIS's own verdict: a self-intersecting ring is refused,
            // never "made valid".
            let invalid = tx
                .query(
                    "DELETE FROM carga_shapes s
                     WHERE NOT ST_IsValid(ST_GeomFromGeoJSON(s.geojson))
                     RETURNING s.number, s.code, ST_IsValidReason(ST_GeomFromGeoJSON(s.geojson))",
                    &[],
                )
                .await?;
            for row in invalid {
                let code: String = row.get(1);
                let why: String = row.get(2);
                refused.push(Refusal {
                    number: row.get::<_, i64>(0) as u64,
                    code: "invalid_geometry",
                    reason: format!("{code}: not a valid polygon ({why})"),
                });
            }
        }
        refused.sort_by_key(|r| r.number);
        counts.set(number, refused.len() as u64);
        let rejects: Vec<Reject> = refused
            .iter()
            .take(MAX_KEPT_REJECTS)
            .map(|r| Reject {
                line: r.number,
                byte_offset: 0,
                column: Some(key.clone()),
                code: r.code,
                reason: r.reason.clone(),
                raw_line: String::new(),
            })
            .collect();
        let limit = crate::engine::pipeline::reject_limit(spec, number);
        if refused.len() as u64 > limit {
            ledger::insert_rejects(&**client, load_id, &rejects).await?;
            let first = rejects.first();
            return Err(LoadError::TooManyRejects {
                file: redacted.clone(),
                rejected: refused.len() as u64,
                read: number,
                limit,
                first_line: first.map_or(0, |r| r.line),
                first_column: format!(", property {key:?}"),
                first_reason: first.map(|r| r.reason.clone()).unwrap_or_default(),
            });
        }
        let accepted = number - refused.len() as u64;
        let changed = if columns.is_empty() {
            tracing::warn!(
                dataset = %spec.dataset,
                "geometry not written: this database has no PostGIS geometry columns for {:?}",
                spec.target
            );
            0
        } else {
            write(&tx, spec, &columns, accepted, &redacted, force).await?
        };
        ledger::insert_rejects(&*tx, load_id, &rejects).await?;
        ledger::publish_snapshot(
            &*tx,
            load_id,
            &spec.dataset,
            number as i64,
            accepted as i64,
            refused.len() as i64,
        )
        .await?;
        tx.commit().await?;
        Ok(BoundariesReport {
            load_id,
            read: number,
            accepted,
            changed,
            rejected: refused.len() as u64,
            columns: columns.iter().map(|(c, _)| (*c).to_string()).collect(),
            seconds: started.elapsed().as_secs_f64(),
        })
    };
    super::settle(&**client, load_id, &counts, work, cancel).await
}

/// Writes the accepted geometries (`carga_shapes`) to the target's
/// columns, after the shrink guard; returns how many places changed.
async fn write(
    tx: &tokio_postgres::Transaction<'_>,
    spec: &Spec,
    columns: &[(&str, &str)],
    accepted: u64,
    file: &str,
    force: bool,
) -> Result<u64, LoadError> {
    let (table, code) = match spec.target {
        Target::StatesGeometry => ("states", "ibge_code"),
        _ => ("municipalities", "ibge_code"),
    };
    let existing: i64 = tx
        .query_one(
            &format!("SELECT count(*) FROM public.{table} WHERE geometry IS NOT NULL"),
            &[],
        )
        .await?
        .get(0);
    let floor = (1.0 - spec.quality.max_shrink) * existing as f64;
    if !force && existing > 0 && (accepted as f64) < floor {
        return Err(LoadError::Shrink {
            file: file.to_string(),
            rows: accepted,
            baseline_rows: existing,
            baseline_period: "the places that have a geometry now".into(),
            percent: 100.0 * (1.0 - accepted as f64 / existing as f64),
            allowed: spec.quality.max_shrink * 100.0,
        });
    }
    let sets: Vec<String> = columns
        .iter()
        .map(|(column, expression)| format!("{column} = {expression}"))
        .collect();
    // A place whose geometry is the same is rewritten only when a derived
    // column (simplified, centroid) is missing.
    let stale: Vec<String> = columns
        .iter()
        .filter(|(column, _)| *column != "geometry")
        .map(|(column, _)| format!(" OR t.{column} IS NULL"))
        .collect();
    let changed = tx
        .execute(
            &format!(
                "UPDATE public.{table} t SET {}, updated_at = now() AT TIME ZONE 'UTC'
                 FROM (SELECT code, ST_Multi(ST_SetSRID(ST_GeomFromGeoJSON(geojson), 4326)) AS g
                       FROM carga_shapes) s
                 WHERE t.{code} = s.code AND (t.geometry IS DISTINCT FROM s.g{})",
                sets.join(", "),
                stale.concat()
            ),
            &[],
        )
        .await?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn square(lon: f64, lat: f64) -> Value {
        json!({"type": "Polygon", "coordinates": [[[lon, lat], [lon + 0.1, lat], [lon + 0.1, lat + 0.1], [lon, lat + 0.1], [lon, lat]]]})
    }

    #[test]
    fn geometries_are_closed_polygons_inside_brazil() {
        assert_eq!(check_geometry(Some(&square(-47.0, -15.0))), Ok(()));
        let multi = json!({"type": "MultiPolygon", "coordinates": [square(-47.0, -15.0)["coordinates"], square(-48.0, -16.0)["coordinates"]]});
        assert_eq!(check_geometry(Some(&multi)), Ok(()));
        let refused = |g: Value| check_geometry(Some(&g)).expect_err("refused");
        assert!(refused(square(-15.0, -47.0)).contains("outside Brazil"));
        assert!(
            refused(json!({"type": "Point", "coordinates": [-47.0, -15.0]})).contains("\"Point\"")
        );
        assert!(
            refused(json!({"type": "Polygon", "coordinates": [[[-47.0, -15.0], [-46.9, -15.0], [-46.9, -14.9], [-47.0, -14.9]]]}))
                .contains("not closed")
        );
        assert!(
            refused(json!({"type": "Polygon", "coordinates": [[[-47.0, -15.0], [-46.9, -15.0], [-47.0, -15.0]]]}))
                .contains("3 positions")
        );
        assert!(check_geometry(None).is_err());
        // Trindade (Vitória, ES) and São Pedro e São Paulo (PE): Brazil.
        assert_eq!(check_geometry(Some(&square(-29.35, -20.55))), Ok(()));
        assert_eq!(check_geometry(Some(&square(-29.4, 0.9))), Ok(()));
    }

    #[test]
    fn a_feature_names_a_place_of_the_state_asked_for() {
        let known = Known {
            target: Target::MunicipalitiesGeometry,
            municipalities: ["3550308".to_string()].into(),
        };
        assert!(known.admits("3550308", "35").is_ok());
        assert!(known.admits("3550308", "33").is_err());
        assert!(known.admits("4300001", "43").is_err());
        assert!(known.admits("355030", "35").is_err());
        let states = Known {
            target: Target::StatesGeometry,
            municipalities: HashSet::new(),
        };
        assert!(states.admits("35", "35").is_ok());
        assert!(states.admits("33", "35").is_err());
    }
}
