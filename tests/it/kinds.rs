//! Dataset kinds beyond payments. `aggregates`: a file already counted per
//! municipality and period, many periods in one download (OpenDataSUS'
//! Farmácia Popular `pfpbben.csv.zip`, `../shared/SOURCES.md` (f)), loaded
//! with the real binary from a loopback server; the published numbers are
//! checked against sums computed here, independently of carga.

use std::collections::BTreeMap;

use crate::common;

use common::{TestApp, zip_bytes};

/// The columns public readers of the file name, in a plausible order
/// (the order is not known: carga maps them by name).
const HEADER: [&str; 15] = [
    "dt_competencia",
    "co_anomes",
    "dt_atualizacao",
    "ds_unidade_medida",
    "sg_categoria",
    "ds_categoria",
    "co_uf",
    "sg_uf",
    "no_uf",
    "no_regiao_brasil",
    "co_ibge",
    "no_municipio",
    "vl_indicador_calculado_mun",
    "vl_indicador_calculado_uf",
    "vl_indicador_calculado_br",
];

/// (6-digit IBGE code, state's 2-digit code) of five capitals.
const PLACES: [(&str, &str); 5] = [
    ("355030", "35"), // São Paulo
    ("330455", "33"), // Rio de Janeiro
    ("530010", "53"), // Brasília
    ("230440", "23"), // Fortaleza
    ("130260", "13"), // Manaus
];

/// People per (period, 6-digit code), as the test wrote them.
type Figures = BTreeMap<(String, String), i64>;

/// A UTF-8 CSV with a BOM, comma-separated, strings quoted, one row per
/// place and period; counts written as floats (`1268.0`).
fn csv(figures: &Figures, extra: &[&str]) -> Vec<u8> {
    let mut out = "\u{feff}".as_bytes().to_vec();
    out.extend_from_slice(HEADER.join(",").as_bytes());
    out.extend_from_slice(b"\r\n");
    for ((period, ibge6), people) in figures {
        let uf = PLACES
            .iter()
            .find(|(code, _)| code == ibge6)
            .map_or("99", |(_, uf)| uf);
        let line = format!(
            "{}-{}-01,{period},2026-01-15,\"Pessoas\",\"BEN\",\"Beneficiários\",{uf},\"XX\",\"Estado\",\"Região\",{ibge6},\"Cruzeiro Do Sul\",{people}.0,0.0,0.0\r\n",
            &period[..4],
            &period[4..]
        );
        out.extend_from_slice(line.as_bytes());
    }
    for line in extra {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn figures(periods: &[&str], base: i64) -> Figures {
    let mut f = Figures::new();
    for (p, period) in periods.iter().enumerate() {
        for (i, (ibge6, _)) in PLACES.iter().enumerate() {
            let people = base + (p as i64) * 1_000 + (i as i64) * 37;
            f.insert(((*period).to_string(), (*ibge6).to_string()), people);
        }
    }
    f
}

async fn run(app: &TestApp, url: &str) -> (Option<i32>, String, String) {
    // No CARGA_NIS_KEY: a file of counts names no one and needs no key.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
        .args(["run", "farmacia-popular", "--url", url])
        .env("DATABASE_URL", &app.url)
        .env_remove("CARGA_NIS_KEY")
        .output()
        .await
        .expect("run carga");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `beneficiary_data` of Farmácia Popular: people per (YYYYMM, 6-digit
/// code), and whether any row has a value or a family count.
async fn published(app: &TestApp) -> (Figures, bool) {
    let client = app.client().await;
    let rows = client
        .query(
            "SELECT to_char(b.reference_date, 'YYYYMM'), left(m.ibge_code::text, 6),
                    b.total_beneficiaries, b.total_value_brl IS NOT NULL OR b.total_families IS NOT NULL
             FROM public.beneficiary_data b
             JOIN public.municipalities m ON m.id = b.municipality_id
             JOIN public.programs p ON p.id = b.program_id
             WHERE p.code = 'FARMACIA_POPULAR'",
            &[],
        )
        .await
        .expect("beneficiary_data");
    let invented = rows.iter().any(|r| r.get::<_, bool>(3));
    let figures = rows
        .iter()
        .map(|r| {
            (
                (r.get(0), r.get(1)),
                i64::from(r.get::<_, Option<i32>>(2).unwrap_or(-1)),
            )
        })
        .collect();
    (figures, invented)
}

/// Per period: the published ledger row's download (`file_load`).
async fn period_loads(app: &TestApp) -> BTreeMap<String, i64> {
    let client = app.client().await;
    client
        .query(
            "SELECT to_char(period, 'YYYYMM'), file_load FROM carga.loads
             WHERE program_code = 'FARMACIA_POPULAR' AND status = 'published' AND period IS NOT NULL",
            &[],
        )
        .await
        .expect("loads")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_file_of_many_periods_publishes_each_period_and_only_what_changed() {
    let mut app = TestApp::new().await;
    let first = figures(&["201612", "201712", "202510"], 1_200);
    // A month later the source keeps the Decembers and its new latest
    // month (202510 is gone from the file), and corrects 201712.
    let mut second = figures(&["201612", "201712", "202511"], 1_200);
    for ((period, _), people) in second.iter_mut() {
        if period == "201712" {
            *people += 5;
        }
    }
    let urls = app
        .serve(vec![
            ("first.zip", zip_bytes("pfpbben.csv", &csv(&first, &[]))),
            ("second.zip", zip_bytes("pfpbben.csv", &csv(&second, &[]))),
        ])
        .await;

    let (code, stdout, stderr) = run(&app, &urls["first.zip"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 in the file: 3 published, 0 unchanged"),
        "{stdout}"
    );
    let (seen, invented) = published(&app).await;
    assert_eq!(seen, first);
    assert!(!invented, "no value or family count may be made up");
    // State and national figures are the sums of the municipalities';
    // there is no money, so the value is NULL at every level.
    let client = app.client().await;
    let national = client
        .query(
            "SELECT to_char(n.reference_date, 'YYYYMM'), n.total_beneficiaries::bigint,
                    n.municipalities::bigint, n.total_value_brl IS NULL AND n.payments IS NULL
             FROM public.program_national_monthly n JOIN public.programs p ON p.id = n.program_id
             WHERE p.code = 'FARMACIA_POPULAR' ORDER BY 1",
            &[],
        )
        .await
        .expect("national");
    for row in &national {
        let period: String = row.get(0);
        let expected: i64 = first
            .iter()
            .filter(|((p, _), _)| *p == period)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(row.get::<_, i64>(1), expected, "{period}");
        assert_eq!(row.get::<_, i64>(2), 5, "{period}");
        assert!(row.get::<_, bool>(3), "{period}: no value, no payments");
    }
    assert_eq!(national.len(), 3);
    let states: i64 = client
        .query_one(
            "SELECT count(*) FROM public.program_state_monthly s JOIN public.programs p ON p.id = s.program_id
             WHERE p.code = 'FARMACIA_POPULAR' AND s.total_value_brl IS NULL",
            &[],
        )
        .await
        .expect("states")
        .get(0);
    assert_eq!(states, 15, "five states in each of three periods");
    let before = period_loads(&app).await;
    assert_eq!(before.len(), 3);
    let download = before["201612"];
    assert!(before.values().all(|l| *l == download), "{before:?}");

    // The same bytes again: nothing is rewritten.
    let (code, stdout, _) = run(&app, &urls["first.zip"]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("unchanged"), "{stdout}");
    assert_eq!(period_loads(&app).await, before);

    // The next file: 201612 unchanged (left alone), 201712 corrected,
    // 202511 new, 202510 no longer in the file (kept as published).
    let (code, stdout, stderr) = run(&app, &urls["second.zip"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 in the file: 2 published, 1 unchanged"),
        "{stdout}"
    );
    let after = period_loads(&app).await;
    assert_eq!(
        after["201612"], download,
        "an unchanged period is not rewritten"
    );
    assert_eq!(after["202510"], download, "a period the file dropped stays");
    assert_ne!(after["201712"], download);
    assert_eq!(after["201712"], after["202511"]);
    let mut expected = second.clone();
    expected.extend(
        first
            .iter()
            .filter(|((p, _), _)| p == "202510")
            .map(|(k, v)| (k.clone(), *v)),
    );
    assert_eq!(published(&app).await.0, expected);
}

#[tokio::test]
async fn codes_that_map_to_no_municipality_are_rejects_and_a_repeat_fails_naming_both_lines() {
    let mut app = TestApp::new().await;
    let good = figures(&["202412"], 900);
    let with_rejects = csv(
        &good,
        &[
            // A 6-digit code no municipality has.
            "2024-12-01,202412,2026-01-15,\"Pessoas\",\"BEN\",\"B\",35,\"SP\",\"S\",\"R\",359999,\"Nenhum\",10.0,0.0,0.0",
            // A 7-digit code in the 6-digit column: never padded or cut.
            "2024-12-01,202412,2026-01-15,\"Pessoas\",\"BEN\",\"B\",35,\"SP\",\"S\",\"R\",3550308,\"Sao Paulo\",10.0,0.0,0.0",
            // A count with a fraction: never rounded.
            "2024-12-01,202412,2026-01-15,\"Pessoas\",\"BEN\",\"B\",35,\"SP\",\"S\",\"R\",350010,\"Adamantina\",10.5,0.0,0.0",
        ],
    );
    let repeated = csv(
        &good,
        &[
            "2024-12-01,202412,2026-01-15,\"Pessoas\",\"BEN\",\"B\",33,\"RJ\",\"S\",\"R\",330455,\"Rio\",7.0,0.0,0.0",
        ],
    );
    let urls = app
        .serve(vec![
            ("rejects.zip", zip_bytes("pfpbben.csv", &with_rejects)),
            ("repeated.zip", zip_bytes("pfpbben.csv", &repeated)),
        ])
        .await;

    let (code, stdout, stderr) = run(&app, &urls["rejects.zip"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("8 read, 5 loaded, 3 rejected"), "{stdout}");
    assert_eq!(published(&app).await.0, good);
    let client = app.client().await;
    let rejects: Vec<(i64, String)> = client
        .query(
            "SELECT line, reason FROM carga.rejects r JOIN carga.loads l ON l.id = r.load_id
             WHERE l.program_code = 'FARMACIA_POPULAR' ORDER BY line",
            &[],
        )
        .await
        .expect("rejects")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rejects.len(), 3, "{rejects:?}");
    assert_eq!(rejects[0].0, 7);
    assert!(rejects[0].1.contains("359999"), "{rejects:?}");
    assert!(rejects[1].1.contains("6 digits"), "{rejects:?}");
    assert!(rejects[2].1.contains("count"), "{rejects:?}");

    // Two rows for Rio de Janeiro in 2024-12: the load fails naming both
    // lines (header is line 1; Rio, by code the third place, is line 4), and what
    // was published stays.
    let (code, stdout, stderr) = run(&app, &urls["repeated.zip"]).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("line 7 repeats municipality 3304557 in 2024-12 (first at line 4)"),
        "{stderr}"
    );
    assert!(stderr.contains("pfpbben.csv"), "{stderr}");
    assert_eq!(published(&app).await.0, good);
}

#[tokio::test]
async fn a_worker_runs_a_file_of_many_periods_and_a_backfill_is_one_job() {
    let mut app = TestApp::new().await;
    let file = figures(&["202312", "202412", "202510"], 500);
    let urls = app
        .serve(vec![(
            "pfpbben.zip",
            zip_bytes("pfpbben.csv", &csv(&file, &[])),
        )])
        .await;
    let url = &urls["pfpbben.zip"];
    let status = common::process::carga(
        &app,
        &[
            "enqueue",
            "farmacia-popular",
            "--period",
            "2025-10",
            "--url",
            url,
        ],
    )
    .output()
    .await
    .expect("enqueue");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let out = common::process::carga(&app, &["worker", "--once"])
        .output()
        .await
        .expect("worker");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = app.client().await;
    let states: Vec<String> = client
        .query(
            "SELECT state FROM carga.jobs WHERE dataset = 'farmacia-popular'",
            &[],
        )
        .await
        .expect("jobs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(states, ["succeeded"]);
    assert_eq!(published(&app).await.0, file);

    // Ten years of backfill: one job, not 120.
    let out = common::process::carga(
        &app,
        &[
            "backfill",
            "farmacia-popular",
            "--from",
            "2016-01",
            "--to",
            "2025-10",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .output()
    .await
    .expect("backfill");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM carga.jobs WHERE dataset = 'farmacia-popular' AND state = 'available'",
            &[],
        )
        .await
        .expect("pending")
        .get(0);
    assert_eq!(pending, 1);
}
