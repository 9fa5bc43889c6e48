//! `boundaries` datasets: IBGE's mesh as GeoJSON, one answer per state
//! (`../shared/SOURCES.md` (d)), served over loopback and loaded with the
//! real binary, first into a database without PostGIS (the load succeeds
//! and says geometry was not written), then with the API's PostGIS columns
//! (`.ci/run` installs the distribution's postgresql-<major>-postgis-3).
//! What is written is compared with the polygons the test served.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::common;

use common::TestApp;

/// A square of 0.05° at `(lon, lat)`, as a GeoJSON Polygon.
fn square(lon: f64, lat: f64) -> Value {
    let d = 0.05;
    json!({"type": "Polygon", "coordinates": [[[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]]})
}

/// A ring that crosses itself: closed and inside Brazil, but not a valid
/// polygon (`ST_IsValid` says "Self-intersection").
fn bow_tie(lon: f64, lat: f64) -> Value {
    let d = 0.05;
    json!({"type": "Polygon", "coordinates": [[[lon, lat], [lon + d, lat + d], [lon + d, lat], [lon, lat + d], [lon, lat]]]})
}

/// Where the test puts each municipality: a grid inside Brazil.
fn spot(i: usize) -> (f64, f64) {
    (
        -60.0 + (i % 200) as f64 * 0.1,
        -20.0 + (i / 200) as f64 * 0.1,
    )
}

async fn run(app: &TestApp, dataset: &str, url: &str) -> (Option<i32>, String) {
    common::process::output(app, None, &["run", dataset, "--url", url]).await
}

/// Serves one FeatureCollection per state (`answers`, by 2-digit code);
/// returns the URL template with `{uf}`.
async fn serve(app: &mut TestApp, answers: &BTreeMap<String, Vec<u8>>) -> String {
    let files: Vec<(String, Vec<u8>)> = answers
        .iter()
        .map(|(uf, body)| (format!("malhas-{uf}.json"), body.clone()))
        .collect();
    let urls = app
        .serve(files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect())
        .await;
    urls["malhas-11.json"].replace("malhas-11.json", "malhas-{uf}.json")
}

fn collection(features: Vec<Value>) -> Vec<u8> {
    json!({"type": "FeatureCollection", "features": features})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn boundaries_are_written_to_postgis_and_an_invalid_polygon_keeps_its_old_one() {
    let mut app = TestApp::new().await;
    let client = app.client().await;
    let municipalities: Vec<(String, String)> = client
        .query(
            "SELECT m.ibge_code::text, s.ibge_code::text FROM public.municipalities m
             JOIN public.states s ON s.id = m.state_id ORDER BY m.ibge_code",
            &[],
        )
        .await
        .expect("municipalities")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let states: Vec<String> = client
        .query("SELECT ibge_code::text FROM public.states", &[])
        .await
        .expect("states")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let build = |bad: Option<&str>| -> BTreeMap<String, Vec<u8>> {
        let mut by_state: BTreeMap<String, Vec<Value>> =
            states.iter().map(|s| (s.clone(), Vec::new())).collect();
        for (i, (ibge, uf)) in municipalities.iter().enumerate() {
            let (lon, lat) = spot(i);
            let geometry = if Some(ibge.as_str()) == bad {
                bow_tie(lon, lat)
            } else {
                square(lon, lat)
            };
            by_state.get_mut(uf).expect("state").push(json!({
                "type": "Feature",
                "properties": {"codarea": ibge},
                "geometry": geometry,
            }));
        }
        // IBGE's RS mesh has had the lagoons as features: no municipality.
        by_state.get_mut("43").expect("RS").push(json!({
            "type": "Feature",
            "properties": {"codarea": "4300001"},
            "geometry": square(-52.0, -32.0),
        }));
        by_state
            .into_iter()
            .map(|(uf, features)| (uf, collection(features)))
            .collect()
    };
    let total = municipalities.len();
    let sao_paulo = "3550308";

    // No PostGIS columns: checked, nothing written, said so.
    let url = serve(&mut app, &build(Some(sao_paulo))).await;
    let (code, out) = run(&app, "malhas-municipios", &url).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "{} boundaries (0 changed; 1 of {} features rejected); geometry not written",
            total,
            total + 1
        )),
        "{out}"
    );

    // The API's PostGIS columns (DOMAIN.md 7.1).
    let postgis = client
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS postgis;
             ALTER TABLE public.municipalities
                 ADD COLUMN geometry geometry(MULTIPOLYGON, 4326),
                 ADD COLUMN geometry_simplified geometry(MULTIPOLYGON, 4326),
                 ADD COLUMN centroid geometry(POINT, 4326);
             ALTER TABLE public.states ADD COLUMN geometry geometry(MULTIPOLYGON, 4326);",
        )
        .await;
    assert!(
        postgis.is_ok(),
        "PostGIS is needed here (install the distribution's postgresql-<major>-postgis-3, as .ci/run does): {postgis:?}"
    );
    let (code, out) = run(&app, "malhas-municipios", &url).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "{} boundaries ({} changed; 2 of {} features rejected); wrote geometry, geometry_simplified, centroid",
            total - 1,
            total - 1,
            total + 1
        )),
        "{out}"
    );
    let rejects: Vec<String> = client
        .query(
            "SELECT r.reason FROM carga.rejects r JOIN carga.loads l ON l.id = r.load_id
             WHERE l.id = (SELECT max(id) FROM carga.loads WHERE dataset = 'malhas-municipios')
             ORDER BY r.line",
            &[],
        )
        .await
        .expect("rejects")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert!(
        rejects
            .iter()
            .any(|r| r.contains("3550308: not a valid polygon (Self-intersection")),
        "{rejects:?}"
    );
    assert!(
        rejects
            .iter()
            .any(|r| r.contains("no municipality has the code 4300001")),
        "{rejects:?}"
    );
    // Every geometry written is the square served, valid, SRID 4326,
    // a multipolygon; the centroid is the square's centre.
    let check = "SELECT count(*) FILTER (WHERE geometry IS NOT NULL),
                        count(*) FILTER (WHERE ST_IsValid(geometry) AND ST_SRID(geometry) = 4326
                                           AND GeometryType(geometry) = 'MULTIPOLYGON'
                                           AND ST_IsValid(geometry_simplified)),
                        count(*) FILTER (WHERE geometry IS NULL AND ibge_code = '3550308')
                 FROM public.municipalities";
    let row = client.query_one(check, &[]).await.expect("check");
    let (written, valid, sp_null): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (written, valid, sp_null),
        (total as i64 - 1, total as i64 - 1, 1)
    );
    let mut wrong = 0;
    for (i, (ibge, _)) in municipalities.iter().enumerate() {
        if ibge == sao_paulo {
            continue;
        }
        let (lon, lat) = spot(i);
        let row = client
            .query_one(
                "SELECT ST_Equals(geometry, ST_GeomFromGeoJSON($2)),
                        abs(ST_X(centroid) - $3) < 1e-9 AND abs(ST_Y(centroid) - $4) < 1e-9
                 FROM public.municipalities WHERE ibge_code = $1",
                &[
                    &ibge,
                    &square(lon, lat).to_string(),
                    &(lon + 0.025),
                    &(lat + 0.025),
                ],
            )
            .await
            .expect("compare");
        if !(row.get::<_, bool>(0) && row.get::<_, bool>(1)) {
            wrong += 1;
        }
    }
    assert_eq!(wrong, 0, "geometries differ from what was served");

    // A state answering something else than GeoJSON fails the whole load:
    // nothing of the other states is written either.
    let fixed = build(None);
    let mut broken = fixed.clone();
    broken.insert("53".into(), b"<html>busy</html>".to_vec());
    let url = serve(&mut app, &broken).await;
    let (code, out) = run(&app, "malhas-municipios", &url).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not JSON"), "{out}");
    let row = client.query_one(check, &[]).await.expect("check");
    assert_eq!(row.get::<_, i64>(2), 1, "São Paulo still has no geometry");

    // Fixed: only São Paulo changes.
    let url = serve(&mut app, &fixed).await;
    let (code, out) = run(&app, "malhas-municipios", &url).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "{total} boundaries (1 changed; 1 of {} features rejected)",
            total + 1
        )),
        "{out}"
    );

    // States: one outline per answer, keyed by the state's own code.
    let outlines: BTreeMap<String, Vec<u8>> = states
        .iter()
        .enumerate()
        .map(|(i, uf)| {
            let (lon, lat) = spot(i * 7);
            (
                uf.clone(),
                collection(vec![json!({
                    "type": "Feature",
                    "properties": {"codarea": uf},
                    "geometry": square(lon, lat),
                })]),
            )
        })
        .collect();
    let url = serve(&mut app, &outlines).await;
    let (code, out) = run(&app, "malhas-estados", &url).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("27 boundaries (27 changed; 0 of 27"), "{out}");
    let valid: i64 = client
        .query_one(
            "SELECT count(*) FROM public.states WHERE ST_IsValid(geometry) AND ST_SRID(geometry) = 4326",
            &[],
        )
        .await
        .expect("states")
        .get(0);
    assert_eq!(valid, 27);
}
