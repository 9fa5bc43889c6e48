//! `places` datasets: CRAS from a loopback Solr core that pages as SAGI's
//! equipment register does (`../shared/SOURCES.md` (b)), loaded with the
//! real binary. What is published is checked field by field against the
//! documents the test served; a place gone from the source is removed, a
//! rejected one keeps its published row, and a failed load leaves the
//! table as it was.

use std::collections::BTreeMap;

use serde_json::json;

use crate::common;

use common::TestApp;
use common::services::{SolrFault, solr};

/// The test's jobs dir: the shipped `cras` spec, paged 2 at a time, with a
/// shrink guard loose enough for a handful of places.
fn jobs(max_shrink: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string("jobs/cras.toml")
        .expect("spec")
        .replace("page_rows = 5000", "page_rows = 2")
        .replace("max_shrink = 0.05", &format!("max_shrink = {max_shrink}"));
    std::fs::write(dir.path().join("cras.toml"), text).expect("write");
    dir
}

async fn run(app: &TestApp, jobs: &std::path::Path, url: &str) -> (Option<i32>, String) {
    common::process::output(app, Some(jobs), &["run", "cras", "--url", url]).await
}

async fn serve(docs: Vec<serde_json::Value>, fault: SolrFault) -> String {
    let (url, _) = solr(
        "/sagi/servicos/equipamentos?q=*:*&fq=tipo_equipamento:CRAS&sort=id_equipamento+asc&wt=json",
        docs,
        fault,
    )
    .await;
    url
}

/// A SAGI equipment document, with the person in charge (never read).
fn cras(id: u32, ibge6: &str, nome: &str, cep: &str, georef: Option<&str>) -> serde_json::Value {
    let mut doc = json!({
        "id_equipamento": id.to_string(),
        "tipo_equipamento": "CRAS",
        "ibge": ibge6.parse::<u32>().expect("code"),
        "nome": nome,
        "responsavel": "Maria Aparecida dos Santos",
        "endereco": format!("Rua {id}"),
        "numero": "100",
        "bairro": "Centro",
        "cep": cep,
        "telefone": "(11) 3333-4444",
    });
    if let Some(g) = georef {
        doc["georef_location"] = json!(g);
    }
    doc
}

type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<f64>,
);

/// carga's places: key (from the id) → (ibge, nome, endereco, cep, lat, lon).
async fn published(app: &TestApp) -> BTreeMap<String, Row> {
    let client = app.client().await;
    let rows = client
        .query(
            "SELECT id::text, ibge_code::text, nome::text, endereco::text, cep::text, latitude, longitude
             FROM public.cras_locations WHERE source = 'carga:cras'",
            &[],
        )
        .await
        .expect("cras");
    let ids: BTreeMap<String, String> = client
        .query(
            "SELECT md5('carga:cras:' || k)::uuid::text, k
             FROM unnest(ARRAY['1001','1002','1003','1004','1005','1006']) AS k",
            &[],
        )
        .await
        .expect("ids")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    rows.iter()
        .map(|r| {
            let id: String = r.get(0);
            (
                ids.get(&id).cloned().unwrap_or(id),
                (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)),
            )
        })
        .collect()
}

fn row(ibge: &str, nome: &str, endereco: &str, cep: &str, at: Option<(f64, f64)>) -> Row {
    (
        ibge.into(),
        nome.into(),
        Some(endereco.into()),
        Some(cep.into()),
        at.map(|a| a.0),
        at.map(|a| a.1),
    )
}

#[tokio::test]
async fn cras_are_upserted_by_their_key_and_a_closed_one_is_removed() {
    let app = TestApp::new().await;
    let client = app.client().await;
    // A row another writer made (the seed's job): never touched.
    client
        .execute(
            "INSERT INTO public.cras_locations (ibge_code, nome, source) VALUES ('3550308', 'CRAS Antigo', 'sagi')",
            &[],
        )
        .await
        .expect("seed row");
    let jobs = jobs("0.5");
    let first = vec![
        cras(
            1001,
            "355030",
            "CRAS Sé",
            "01310-100",
            Some("-23.5505,-46.6333"),
        ),
        cras(
            1002,
            "330455",
            "CRAS Centro",
            "20010.000",
            Some("-22.9035,-43.2096"),
        ),
        cras(1003, "530010", "CRAS Plano Piloto", "70040010", None),
        cras(
            1004,
            "230440",
            "CRAS Messejana",
            "60840-280",
            Some("-3.8320,-38.4939"),
        ),
        // No municipality has this code: a reject naming it.
        cras(1005, "359999", "CRAS Nenhum", "01310-100", None),
        // A swapped pair is outside Brazil: a reject, never a wrong pin.
        cras(
            1006,
            "130260",
            "CRAS Manaus",
            "69000-000",
            Some("-60.02,-3.10"),
        ),
    ];
    let (code, out) = run(&app, jobs.path(), &serve(first, SolrFault::None).await).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("4 places (4 new, 0 changed, 0 removed; 2 of 6 rows rejected)"),
        "{out}"
    );
    let want: BTreeMap<String, Row> = [
        (
            "1001",
            row(
                "3550308",
                "CRAS Sé",
                "Rua 1001, 100",
                "01310100",
                Some((-23.5505, -46.6333)),
            ),
        ),
        (
            "1002",
            row(
                "3304557",
                "CRAS Centro",
                "Rua 1002, 100",
                "20010000",
                Some((-22.9035, -43.2096)),
            ),
        ),
        (
            "1003",
            row(
                "5300108",
                "CRAS Plano Piloto",
                "Rua 1003, 100",
                "70040010",
                None,
            ),
        ),
        (
            "1004",
            row(
                "2304400",
                "CRAS Messejana",
                "Rua 1004, 100",
                "60840280",
                Some((-3.8320, -38.4939)),
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(published(&app).await, want);
    let rejects: Vec<(i64, String, String)> = client
        .query(
            "SELECT line, column_name, reason FROM carga.rejects r JOIN carga.loads l ON l.id = r.load_id
             WHERE l.dataset = 'cras' ORDER BY line",
            &[],
        )
        .await
        .expect("rejects")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert_eq!((rejects[0].0, rejects[0].1.as_str()), (6, "ibge6"));
    assert!(rejects[0].2.contains("359999"), "{rejects:?}");
    assert_eq!((rejects[1].0, rejects[1].1.as_str()), (7, "location"));
    // The person in charge is in every document and nowhere in the database.
    let leaked: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM public.cras_locations c WHERE c::text LIKE '%Aparecida%')
                  + (SELECT count(*) FROM carga.rejects r WHERE r::text LIKE '%Aparecida%')
                  + (SELECT count(*) FROM carga.loads l WHERE l::text LIKE '%Aparecida%')",
            &[],
        )
        .await
        .expect("leak")
        .get(0);
    assert_eq!(leaked, 0);

    // The same answer again: nothing new, nothing rewritten.
    let stamps = "SELECT string_agg(updated_at::text, ',' ORDER BY id) FROM public.cras_locations";
    let before: String = client.query_one(stamps, &[]).await.expect("stamps").get(0);
    let again = vec![
        cras(
            1001,
            "355030",
            "CRAS Sé",
            "01310-100",
            Some("-23.5505,-46.6333"),
        ),
        cras(
            1002,
            "330455",
            "CRAS Centro",
            "20010.000",
            Some("-22.9035,-43.2096"),
        ),
        cras(1003, "530010", "CRAS Plano Piloto", "70040010", None),
        cras(
            1004,
            "230440",
            "CRAS Messejana",
            "60840-280",
            Some("-3.8320,-38.4939"),
        ),
    ];
    let (code, out) = run(&app, jobs.path(), &serve(again, SolrFault::None).await).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("4 places (0 new, 0 changed, 0 removed"),
        "{out}"
    );
    let after: String = client.query_one(stamps, &[]).await.expect("stamps").get(0);
    assert_eq!(before, after, "an unchanged place is not rewritten");

    // 1002 closed, 1001 renamed, 1003 now refused (its row stays), 1006 new.
    let next = vec![
        cras(
            1001,
            "355030",
            "CRAS Sé II",
            "01310-100",
            Some("-23.5505,-46.6333"),
        ),
        cras(1003, "530010", "CRAS Plano Piloto", "7004", None),
        cras(
            1004,
            "230440",
            "CRAS Messejana",
            "60840-280",
            Some("-3.8320,-38.4939"),
        ),
        cras(
            1006,
            "130260",
            "CRAS Manaus",
            "69000-000",
            Some("-3.10,-60.02"),
        ),
    ];
    let (code, out) = run(&app, jobs.path(), &serve(next, SolrFault::None).await).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("3 places (1 new, 1 changed, 1 removed; 1 of 4 rows rejected)"),
        "{out}"
    );
    let mut want = want;
    want.remove("1002");
    want.get_mut("1001").expect("1001").1 = "CRAS Sé II".into();
    want.insert(
        "1006".into(),
        row(
            "1302603",
            "CRAS Manaus",
            "Rua 1006, 100",
            "69000000",
            Some((-3.10, -60.02)),
        ),
    );
    assert_eq!(published(&app).await, want);
    let others: i64 = client
        .query_one(
            "SELECT count(*) FROM public.cras_locations WHERE source = 'sagi'",
            &[],
        )
        .await
        .expect("others")
        .get(0);
    assert_eq!(others, 1, "another writer's row is left alone");

    // Failures leave the table exactly as it was.
    let docs = |n: u32| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| cras(2000 + i, "355030", "CRAS", "01310-100", Some("-23.5,-46.6")))
            .collect()
    };
    let cases: Vec<(Vec<serde_json::Value>, SolrFault, &str, &str)> = vec![
        (
            docs(5),
            SolrFault::TotalChanges,
            "numFound changed",
            "source_protocol",
        ),
        (
            docs(5),
            SolrFault::RepeatsAPage,
            "repeats or goes back in id_equipamento",
            "source_protocol",
        ),
        (
            docs(1),
            SolrFault::None,
            "fewer than the last published load",
            "shrink_guard",
        ),
        (
            vec![
                cras(3001, "355030", "CRAS A", "01310-100", Some("-23.5,-46.6")),
                cras(3001, "355030", "CRAS B", "01310-100", None),
                cras(3002, "355030", "CRAS C", "01310-100", None),
            ],
            SolrFault::None,
            "repeats or goes back in id_equipamento: \"3001\" after \"3001\"",
            "source_protocol",
        ),
    ];
    for (docs, fault, says, error_code) in cases {
        let (code, out) = run(&app, jobs.path(), &serve(docs, fault).await).await;
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(says), "{says}: {out}");
        let recorded: Option<String> = client
            .query_one(
                "SELECT error_code FROM carga.loads WHERE dataset = 'cras' ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .expect("ledger")
            .get(0);
        assert_eq!(recorded.as_deref(), Some(error_code), "{out}");
        assert_eq!(
            published(&app).await,
            want,
            "{says}: the table is as it was"
        );
    }
}

/// `carga <args>` with the test's jobs dir; (exit code, stdout, stderr).
async fn carga_in(
    app: &TestApp,
    jobs: &std::path::Path,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let out = common::process::carga(app, args)
        .env("CARGA__LOAD__JOBS_DIR", jobs)
        .stdout(std::process::Stdio::piped())
        .output()
        .await
        .expect("run carga");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_snapshot_is_loaded_on_demand_by_a_worker_and_shows_when() {
    let app = TestApp::new().await;
    let jobs = jobs("0.5");
    let docs = vec![
        cras(
            1001,
            "355030",
            "CRAS Sé",
            "01310-100",
            Some("-23.5505,-46.6333"),
        ),
        cras(
            1002,
            "330455",
            "CRAS Centro",
            "20010-000",
            Some("-22.9035,-43.2096"),
        ),
    ];
    let url = serve(docs, SolrFault::None).await;
    // A snapshot has no period to name.
    let (code, _, err) = carga_in(
        &app,
        jobs.path(),
        &["enqueue", "cras", "--period", "2024-01", "--url", &url],
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--period does not apply"), "{err}");
    let (code, id, err) = carga_in(&app, jobs.path(), &["enqueue", "cras", "--url", &url]).await;
    assert_eq!(code, Some(0), "{err}");
    let id = id.trim().to_string();
    let (code, _, err) = carga_in(&app, jobs.path(), &["worker", "--once"]).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, job, err) = carga_in(&app, jobs.path(), &["job", &id, "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let job: serde_json::Value = serde_json::from_str(&job).expect("job json");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(published(&app).await.len(), 2);
    // `carga schedule` lists it with when it was loaded, no months.
    let (code, schedule, err) = carga_in(&app, jobs.path(), &["schedule", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let schedule: serde_json::Value = serde_json::from_str(&schedule).expect("schedule json");
    let cras = schedule
        .as_array()
        .and_then(|a| a.iter().find(|d| d["dataset"] == "cras"))
        .cloned()
        .expect("cras listed");
    assert_eq!(cras["kind"], "places", "{cras}");
    assert!(cras["last_published_at"].is_string(), "{cras}");
    assert!(cras["last_published_period"].is_null(), "{cras}");
    assert_eq!(cras["gaps"], serde_json::json!([]), "{cras}");
}

#[tokio::test]
async fn a_bad_line_of_a_large_places_file_is_named_not_the_download() {
    // The same spec read from a CSV file of 3 MB (many chunks: the
    // download is still sending when the parser fails), several times
    // over HTTP and from a path, so a race would show.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = std::fs::read_to_string("jobs/cras.toml")
        .expect("spec")
        .replace("protocol = \"solr\"\n", "")
        .replace("page_rows = 5000\n", "");
    std::fs::write(dir.path().join("cras.toml"), spec).expect("write");
    let mut csv = String::from(
        "id_equipamento,ibge,nome,endereco,numero,bairro,cep,telefone,georef_location\n",
    );
    for i in 0..40_000 {
        csv.push_str(&format!(
            "{i},355030,CRAS {i},Rua {i},1,Centro,01310-100,1133334444,\"-23.55,-46.63\"\n"
        ));
        if i == 1 {
            csv.push_str("x,355030,CRAS,Rua,1,Centro,01310-100,1133334444,\"-23.5,-46.6\",extra\n");
        }
    }
    // Over real HTTP and from a path: the bad line wins either way.
    let path = dir.path().join("cras.csv");
    std::fs::write(&path, &csv).expect("csv");
    let mut app = TestApp::new().await;
    let urls = app.serve(vec![("cras.csv", csv.into_bytes())]).await;
    let locations = [urls["cras.csv"].as_str(), path.to_str().expect("path")];
    for location in locations.iter().cycle().take(6) {
        let (code, out) = run(&app, dir.path(), location).await;
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("line 4"), "{out}");
        assert!(out.contains("10 fields where the header has 9"), "{out}");
        assert!(!out.contains("reader stopped"), "{out}");
    }
}
