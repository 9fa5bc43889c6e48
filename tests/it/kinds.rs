//! Dataset kinds beyond payments. `aggregates`: a file already counted per
//! municipality and period, many periods in one download (OpenDataSUS'
//! Farmácia Popular `pfpbben.csv.zip`, `../shared/SOURCES.md` (f)), loaded
//! with the real binary from a loopback server; the published numbers are
//! checked against sums computed here, independently of carga.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common;

use common::services::SolrFault;
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

/// ANEEL's SCS file (`../shared/SOURCES.md` (g)): its 30 columns in the
/// order public code lists them.
const SCS_HEADER: [&str; 30] = [
    "DatGeracaoConjuntoDados",
    "AnmMesAnoCompetencia",
    "SigAgente",
    "NumCNPJAgente",
    "AnmCompetenciaDespacho",
    "NumDespacho",
    "DatRegistro",
    "IdcFaixa",
    "MdaMWhConsResTotal",
    "QtdConsResTotal",
    "VlrDMR",
    "VlrCDE",
    "VlrTarifa",
    "IdcSituacaoLote",
    "NumConsBaixaRenda",
    "NumConsIndigena",
    "NumConsQuilombola",
    "NumConsBPC",
    "NumConsMultifamiliar",
    "MdaMWhBaixaRenda",
    "MdaMWhIndigena",
    "MdaMWhQuilombola",
    "MdaMWhBPC",
    "MdaMWhMultifamiliar",
    "VlrFatRealBaixaRenda",
    "VlrFatRealIndigena",
    "VlrFatRealQuilombola",
    "VlrFatRealBPC",
    "VlrFatRealMultifamiliar",
    "VlrFatRealTotal",
];

/// One approval of one distributor's month: its five bands.
struct Approval {
    cnpj: &'static str,
    month: &'static str,
    order: &'static str,
    registered: &'static str,
    /// Households per band and modality (None: a blank field).
    households: [[Option<i64>; 5]; 5],
    dmr_cents: i64,
}

fn approval(
    cnpj: &'static str,
    month: &'static str,
    order: &'static str,
    registered: &'static str,
    seed: i64,
) -> Approval {
    let mut households = [[None; 5]; 5];
    for (band, row) in households.iter_mut().enumerate() {
        for (modality, cell) in row.iter_mut().enumerate() {
            // Multifamily is blank in the odd bands: absent, not zero.
            if modality == 4 && band % 2 == 1 {
                continue;
            }
            *cell = Some(seed * 10 + (band as i64) * 7 + (modality as i64) * 3);
        }
    }
    Approval {
        cnpj,
        month,
        order,
        registered,
        households,
        dmr_cents: seed * 100_003,
    }
}

/// Cents as ANEEL writes them: a decimal comma, no integer part when 0.
fn aneel_money(cents: i64) -> String {
    if cents < 100 {
        format!(",{cents:02}")
    } else {
        format!("{},{:02}", cents / 100, cents % 100)
    }
}

fn scs_csv(approvals: &[Approval], dmr_override: Option<(usize, usize, i64)>) -> Vec<u8> {
    let mut out = SCS_HEADER.join(";");
    out.push_str("\r\n");
    for (a, approval) in approvals.iter().enumerate() {
        for band in 0..5 {
            let dmr = match dmr_override {
                Some((at, at_band, cents)) if at == a && at_band == band => cents,
                _ => approval.dmr_cents,
            };
            let count = |m: usize| {
                approval.households[band][m]
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            };
            let fields: Vec<String> = vec![
                "2026-09-20".into(),
                approval.month.into(),
                "DIST".into(),
                approval.cnpj.into(),
                approval.month.into(),
                approval.order.into(),
                approval.registered.into(),
                (band + 1).to_string(),
                "1234,5".into(),
                "99999".into(),
                aneel_money(dmr),
                ",00".into(),
                aneel_money(dmr),
                "2".into(),
                count(0),
                count(1),
                count(2),
                count(3),
                count(4),
                ",00".into(),
                ",00".into(),
                ",00".into(),
                ",00".into(),
                String::new(),
                "10,50".into(),
                ",00".into(),
                ",00".into(),
                ",00".into(),
                String::new(),
                "1.234,56".into(),
            ];
            out.push_str(&fields.join(";"));
            out.push_str("\r\n");
        }
    }
    out.into_bytes()
}

/// (CNPJ, state) of the distributors in the fixture, from the shipped table.
const DISTRIBUTORS: [(&str, &str); 5] = [
    ("06981180000116", "MG"), // CEMIG-D
    ("03467321000199", "MT"), // Energisa MT
    ("60444437000146", "RJ"), // Light
    ("02302100000106", "SP"), // EDP SP
    ("61695227000193", "SP"), // Enel SP
];

async fn run_tsee(app: &TestApp, url: &str) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
        .args(["run", "tsee", "--url", url])
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

#[tokio::test]
async fn a_state_level_file_maps_distributors_to_states_and_the_latest_approval_wins() {
    let mut app = TestApp::new().await;
    let mut approvals = Vec::new();
    for (d, (cnpj, _)) in DISTRIBUTORS.iter().enumerate() {
        for (m, month) in ["202401", "202402"].into_iter().enumerate() {
            approvals.push(approval(
                cnpj,
                month,
                "100/2024",
                "2024-03-10",
                (d * 2 + m) as i64 + 1,
            ));
        }
    }
    // CEMIG's January approved again later, with other figures: it wins.
    approvals.push(approval(
        "06981180000116",
        "202401",
        "120/2024",
        "2024-03-15",
        40,
    ));
    // Energisa MT's February approved twice on one day: the higher order
    // number of the year wins (12/2024 over 7/2024, not by text).
    approvals.push(approval(
        "03467321000199",
        "202402",
        "7/2024",
        "2024-04-01",
        50,
    ));
    approvals.push(approval(
        "03467321000199",
        "202402",
        "12/2024",
        "2024-04-01",
        60,
    ));
    // Expected per (YYYYMM, state): households and DMR of each
    // distributor-month's winning approval, computed here.
    let winners: [(&str, &str, i64); 10] = [
        ("06981180000116", "202401", 40),
        ("06981180000116", "202402", 2),
        ("03467321000199", "202401", 3),
        ("03467321000199", "202402", 60),
        ("60444437000146", "202401", 5),
        ("60444437000146", "202402", 6),
        ("02302100000106", "202401", 7),
        ("02302100000106", "202402", 8),
        ("61695227000193", "202401", 9),
        ("61695227000193", "202402", 10),
    ];
    let mut expected: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for (cnpj, month, seed) in winners {
        let a = approval(cnpj, month, "", "", seed);
        let uf = DISTRIBUTORS
            .iter()
            .find(|(c, _)| *c == cnpj)
            .expect("known")
            .1;
        let households: i64 = a.households.iter().flatten().flatten().sum();
        let e = expected
            .entry((month.to_string(), uf.to_string()))
            .or_default();
        e.0 += households;
        e.1 += a.dmr_cents;
    }
    let known = scs_csv(&approvals, None);
    // A distributor the shipped table does not have: its rows are rejects
    // naming it, and TSEE allows none (its state's sum would be partial).
    approvals.push(approval(
        "99999999000191",
        "202401",
        "100/2024",
        "2024-03-10",
        70,
    ));
    let urls = app
        .serve(vec![
            ("unknown.csv", scs_csv(&approvals, None)),
            ("scs.csv", known),
        ])
        .await;
    let (code, stdout, stderr) = run_tsee(&app, &urls["unknown.csv"]).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("CNPJ 99999999000191 is not in the shipped table aneel-distribuidoras"),
        "{stderr}"
    );

    let (code, stdout, stderr) = run_tsee(&app, &urls["scs.csv"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 in the file: 2 published, 0 unchanged"),
        "{stdout}"
    );
    assert!(
        stdout.contains("65 read, 65 loaded, 0 rejected"),
        "{stdout}"
    );
    let client = app.client().await;
    let states: BTreeMap<(String, String), (i64, i64)> = client
        .query(
            "SELECT to_char(s.reference_date, 'YYYYMM'), st.abbreviation::text,
                    s.total_beneficiaries::bigint, (s.total_value_brl * 100)::bigint,
                    s.municipalities IS NULL AND s.payments IS NULL
             FROM public.program_state_monthly s
             JOIN public.states st ON st.id = s.state_id
             JOIN public.programs p ON p.id = s.program_id
             WHERE p.code = 'TSEE'",
            &[],
        )
        .await
        .expect("states")
        .iter()
        .map(|r| {
            assert!(r.get::<_, bool>(4), "no municipality count, no payments");
            ((r.get(0), r.get(1)), (r.get(2), r.get(3)))
        })
        .collect();
    assert_eq!(states, expected);
    let national: Vec<(String, i64, i64, i32)> = client
        .query(
            "SELECT to_char(n.reference_date, 'YYYYMM'), n.total_beneficiaries::bigint,
                    (n.total_value_brl * 100)::bigint, n.states
             FROM public.program_national_monthly n JOIN public.programs p ON p.id = n.program_id
             WHERE p.code = 'TSEE' ORDER BY 1",
            &[],
        )
        .await
        .expect("national")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    for (month, households, cents, states) in &national {
        let of_month = expected.iter().filter(|((m, _), _)| m == month);
        assert_eq!(*households, of_month.clone().map(|(_, v)| v.0).sum::<i64>());
        assert_eq!(*cents, of_month.clone().map(|(_, v)| v.1).sum::<i64>());
        assert_eq!(*states, 4, "MG, MT, RJ, SP");
    }
    assert_eq!(national.len(), 2);
    // Never split over municipalities.
    let split: i64 = client
        .query_one(
            "SELECT count(*) FROM public.beneficiary_data b JOIN public.programs p ON p.id = b.program_id
             WHERE p.code = 'TSEE'",
            &[],
        )
        .await
        .expect("beneficiary_data")
        .get(0);
    assert_eq!(split, 0);
    // The same file again: a state_level file is always read again (its
    // shipped table may have changed), and every period's digest is the
    // published one: unchanged, nothing rewritten.
    let before: Vec<i64> = client
        .query("SELECT id FROM carga.loads WHERE dataset = 'tsee' AND status = 'published' AND period IS NOT NULL ORDER BY 1", &[])
        .await
        .expect("loads")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (code, stdout, _) = run_tsee(&app, &urls["scs.csv"]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("unchanged"), "{stdout}");
    assert!(
        stdout.contains("65 read"),
        "read again, not skipped: {stdout}"
    );
    let after: Vec<i64> = client
        .query("SELECT id FROM carga.loads WHERE dataset = 'tsee' AND status = 'published' AND period IS NOT NULL ORDER BY 1", &[])
        .await
        .expect("loads")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(before, after);
}

#[test]
fn every_distributor_of_the_fixture_is_in_the_shipped_table() {
    let table = std::fs::read_to_string("jobs/reference/aneel-distribuidoras.csv").expect("table");
    for (cnpj, uf) in DISTRIBUTORS {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(&format!("{cnpj},")) && l.split(',').nth(2) == Some(uf)),
            "{cnpj} {uf}"
        );
    }
}

#[tokio::test]
async fn parts_of_one_approval_must_agree_and_never_repeat() {
    let mut app = TestApp::new().await;
    let good = vec![
        approval("06981180000116", "202401", "100/2024", "2024-03-10", 1),
        approval("60444437000146", "202401", "100/2024", "2024-03-10", 2),
    ];
    // Light's band 3 says another DMR than its other bands.
    let disagreeing = scs_csv(&good, Some((1, 2, 5)));
    // CEMIG's band 2 appears twice in one approval.
    let mut repeated = scs_csv(&good, None);
    let text = String::from_utf8(repeated.clone()).expect("ascii");
    let band2 = text.lines().nth(2).expect("CEMIG's band 2").to_string();
    repeated.extend_from_slice(format!("{band2}\r\n").as_bytes());
    let urls = app
        .serve(vec![
            ("good.csv", scs_csv(&good, None)),
            ("disagreeing.csv", disagreeing),
            ("repeated.csv", repeated),
        ])
        .await;
    let (code, stdout, stderr) = run_tsee(&app, &urls["good.csv"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");

    let (code, stdout, stderr) = run_tsee(&app, &urls["disagreeing.csv"]).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("VlrDMR differs between the parts of CNPJ 60444437000146's approval for 2024-01 (lines 7 to 11)"),
        "{stderr}"
    );
    let (code, _, stderr) = run_tsee(&app, &urls["repeated.csv"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("line 12 repeats CNPJ 06981180000116, part 2 of one approval in 2024-01 (first at line 3)"),
        "{stderr}"
    );
    // What was published stays.
    let client = app.client().await;
    let published: i64 = client
        .query_one(
            "SELECT sum(total_beneficiaries)::bigint FROM public.program_national_monthly n
             JOIN public.programs p ON p.id = n.program_id WHERE p.code = 'TSEE'",
            &[],
        )
        .await
        .expect("national")
        .get(0);
    let expected: i64 = good
        .iter()
        .map(|a| a.households.iter().flatten().flatten().sum::<i64>())
        .sum();
    assert_eq!(published, expected);
}

#[tokio::test]
async fn a_month_off_the_cadence_is_not_a_gap_and_is_never_enqueued_unforced() {
    // Auxílio Gás pays every other month, even months from 2021-12: a
    // payments spec with that cadence (its own data source is issue 19's).
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = std::fs::read_to_string("jobs/novo-bolsa-familia.toml")
        .expect("spec")
        .replace("dataset = \"novo-bolsa-familia\"", "dataset = \"gas-test\"");
    let spec = format!("{spec}\n[cadence]\nevery_months = 2\nanchor = \"2021-12\"\n");
    std::fs::write(dir.path().join("gas-test.toml"), spec).expect("write spec");
    let jobs_dir = dir.path().to_path_buf();
    let app = TestApp::with_settings(|s| s.load.jobs_dir = jobs_dir.clone()).await;
    let jobs = jobs_dir.to_string_lossy().into_owned();

    let out = common::process::carga(&app, &["datasets"])
        .env("CARGA__LOAD__JOBS_DIR", &jobs)
        .stdout(std::process::Stdio::piped())
        .output()
        .await
        .expect("datasets");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("2-monthly: 2021-12"), "{listing}");

    let out = common::process::carga(
        &app,
        &[
            "backfill", "gas-test", "--from", "2024-01", "--to", "2024-06",
        ],
    )
    .env("CARGA__LOAD__JOBS_DIR", &jobs)
    .stdout(std::process::Stdio::piped())
    .output()
    .await
    .expect("backfill");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    let client = app.client().await;
    let periods: Vec<String> = client
        .query(
            "SELECT to_char(period, 'YYYY-MM') FROM carga.jobs WHERE dataset = 'gas-test' ORDER BY 1",
            &[],
        )
        .await
        .expect("jobs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(periods, ["2024-02", "2024-04", "2024-06"]);

    let out = common::process::carga(&app, &["enqueue", "gas-test", "--period", "2024-05"])
        .env("CARGA__LOAD__JOBS_DIR", &jobs)
        .output()
        .await
        .expect("enqueue");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("gas-test has no period 2024-05: it is paid every 2 months"),
        "{stderr}"
    );

    let specs = carga::dataset::load_all(&jobs_dir).expect("specs");
    let boards = carga::service::freshness::boards(&**client, &specs, 24)
        .await
        .expect("boards");
    let months = &boards
        .iter()
        .find(|b| b.status.dataset == "gas-test")
        .expect("board")
        .months;
    let state = |p: &str| {
        months
            .iter()
            .find(|m| m.period == p)
            .map(|m| m.state)
            .expect("cell")
    };
    use carga::service::freshness::MonthState;
    assert_eq!(state("2024-05"), MonthState::NotPaid);
    assert_ne!(state("2024-04"), MonthState::NotPaid);
}

/// The loopback MiSocial core (`../shared/SOURCES.md` (a)).
async fn solr(
    docs: Vec<serde_json::Value>,
    fault: SolrFault,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    common::services::solr(
        "/sagi/servicos/misocial/?q=*:*&fq=anomes_s:202412*&fq=tipo_s:mes_mu&sort=codigo_ibge+asc&wt=json",
        docs,
        fault,
    )
    .await
}

/// MiSocial documents for 2024-12 at the five capitals: (6-digit code,
/// families, persons); `_i` fields as JSON numbers, `_s` as strings.
fn cadunico_docs() -> (Vec<serde_json::Value>, BTreeMap<String, i64>) {
    let mut docs = Vec::new();
    let mut families = BTreeMap::new();
    for (i, (ibge6, _)) in PLACES.iter().enumerate() {
        let f = 2_000 + i as i64 * 311;
        families.insert((*ibge6).to_string(), f);
        let mut doc = serde_json::json!({
            "codigo_ibge": ibge6.parse::<u32>().expect("code"),
            "anomes_s": "202412",
            "tipo_s": "mes_mu",
            "cadun_qtd_familias_cadastradas_i": f,
            "cadun_qtd_pessoas_cadastradas_i": f * 3,
            "cadun_qtde_fam_sit_extrema_pobreza_s": (f / 3).to_string(),
            "cadun_qtde_fam_sit_pobreza_s": (f / 5).to_string(),
            "cadun_qtd_familias_cadastradas_baixa_renda_i": f / 2,
        });
        if i == 4 {
            // A field absent from a document: NULL, never 0.
            doc.as_object_mut()
                .expect("object")
                .remove("cadun_qtde_fam_sit_pobreza_s");
        }
        docs.push(doc);
    }
    docs.sort_by_key(|d| d["codigo_ibge"].as_u64());
    (docs, families)
}

/// A `cadunico_data` row: total families, poor families, persons 0-5.
type CadunicoRow = (Option<i32>, Option<i32>, Option<i32>);

/// The test's jobs dir: the shipped specs, CadÚnico paged 2 at a time.
fn paged_jobs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["cadunico.toml", "farmacia-popular.toml"] {
        let mut text = std::fs::read_to_string(format!("jobs/{name}")).expect("spec");
        text = text.replace("page_rows = 1000", "page_rows = 2");
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

async fn run_in(app: &TestApp, jobs: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    common::process::output(app, Some(jobs), args).await
}

#[tokio::test]
async fn cadunico_is_read_page_by_page_and_coverage_follows_it() {
    let jobs = paged_jobs();
    let mut app = TestApp::new().await;
    // Farmácia Popular's 2024-12 first: its coverage has no denominator yet.
    let people = figures(&["202412"], 900);
    let urls = app
        .serve(vec![(
            "pf.zip",
            zip_bytes("pfpbben.csv", &csv(&people, &[])),
        )])
        .await;
    let (code, out) = run_in(
        &app,
        jobs.path(),
        &["run", "farmacia-popular", "--url", &urls["pf.zip"]],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let client = app.client().await;
    let coverage = |program: &'static str| {
        let client = &client;
        async move {
            client
                .query(
                    "SELECT left(m.ibge_code::text, 6), b.coverage_rate::text
                     FROM public.beneficiary_data b
                     JOIN public.municipalities m ON m.id = b.municipality_id
                     JOIN public.programs p ON p.id = b.program_id
                     WHERE p.code = $1 AND b.reference_date = '2024-12-01'",
                    &[&program],
                )
                .await
                .expect("coverage")
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)))
                .collect::<BTreeMap<_, _>>()
        }
    };
    assert!(
        coverage("FARMACIA_POPULAR")
            .await
            .values()
            .all(Option::is_none),
        "no CadÚnico yet: no rate, not 0"
    );

    let (docs, families) = cadunico_docs();
    let (url, seen) = solr(docs, SolrFault::None).await;
    let (code, out) = run_in(
        &app,
        jobs.path(),
        &["run", "cadunico", "--period", "2024-12", "--url", &url],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("5 read, 5 loaded, 0 rejected"), "{out}");
    // Three pages of two: start 0, 2, 4, each asking rows=2.
    let queries = seen.lock().expect("log").clone();
    assert_eq!(queries.len(), 3, "{queries:?}");
    for (query, start) in queries.iter().zip([0, 2, 4]) {
        assert!(
            query.ends_with(&format!("&start={start}&rows=2")),
            "{query}"
        );
        assert!(query.contains("fq=tipo_s:mes_mu"), "{query}");
    }
    let rows: BTreeMap<String, CadunicoRow> = client
        .query(
            "SELECT left(m.ibge_code::text, 6), c.total_families, c.families_poverty, c.persons_0_5_years
             FROM public.cadunico_data c JOIN public.municipalities m ON m.id = c.municipality_id
             WHERE c.reference_date = '2024-12-01'",
            &[],
        )
        .await
        .expect("cadunico_data")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    assert_eq!(rows.len(), 5);
    for (code6, f) in &families {
        let (total, poverty, ages) = rows[code6];
        assert_eq!(total, Some(*f as i32), "{code6}");
        assert_eq!(ages, None, "age bands are not made up");
        // Manaus (the fifth place) has no cadun_qtde_fam_sit_pobreza_s.
        let want = (code6 != "130260").then_some((*f / 5) as i32);
        assert_eq!(poverty, want, "{code6}: an absent field is NULL");
    }
    // Coverage recomputed in the CadÚnico publish: people over families,
    // capped at 1, four decimals — computed here.
    let expected: BTreeMap<String, Option<String>> = people
        .iter()
        .map(|((_, code6), n)| {
            let rate = (*n as f64 / families[code6] as f64).min(1.0);
            (code6.clone(), Some(format!("{rate:.4}")))
        })
        .collect();
    assert_eq!(coverage("FARMACIA_POPULAR").await, expected);
}

#[tokio::test]
async fn a_result_that_changes_while_paged_is_never_published() {
    let jobs = paged_jobs();
    let app = TestApp::new().await;
    for (fault, says) in [
        (SolrFault::TotalChanges, "numFound changed from 5 to 6"),
        (
            SolrFault::RepeatsAPage,
            "repeats or goes back in codigo_ibge",
        ),
    ] {
        let (docs, _) = cadunico_docs();
        let (url, _) = solr(docs, fault).await;
        let (code, out) = run_in(
            &app,
            jobs.path(),
            &["run", "cadunico", "--period", "2024-12", "--url", &url],
        )
        .await;
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(says), "{out}");
        let client = app.client().await;
        // Found on the second page, inside the stream: still the
        // service's protocol error (retried), not a broken body.
        let error_code: Option<String> = client
            .query_one(
                "SELECT error_code FROM carga.loads WHERE dataset = 'cadunico' ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .expect("ledger")
            .get(0);
        assert_eq!(error_code.as_deref(), Some("source_protocol"), "{out}");
        let written: i64 = client
            .query_one("SELECT count(*) FROM public.cadunico_data", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(written, 0, "nothing of a half or doubled result");
    }
    // A month the service has nothing for: not yet published, like a 404.
    let (url, _) = solr(Vec::new(), SolrFault::None).await;
    let (code, out) = run_in(
        &app,
        jobs.path(),
        &["run", "cadunico", "--period", "2024-12", "--url", &url],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("numFound 0"), "{out}");
}

#[tokio::test]
async fn a_row_of_a_period_the_spec_does_not_cover_is_a_reject_naming_its_line() {
    let mut app = TestApp::new().await;
    let good = figures(&["202412"], 900);
    // 2015-12 is before Farmácia Popular's first_period (2016-01).
    let early = "2015-12-01,201512,2026-01-15,\"Pessoas\",\"BEN\",\"B\",35,\"SP\",\"S\",\"R\",355030,\"Sao Paulo\",10.0,0.0,0.0";
    let urls = app
        .serve(vec![(
            "pf.zip",
            zip_bytes("pfpbben.csv", &csv(&good, &[early])),
        )])
        .await;
    let (code, stdout, stderr) = run(&app, &urls["pf.zip"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("6 read, 5 loaded, 1 rejected"), "{stdout}");
    assert!(
        stdout.contains("line 7, column \"co_anomes\": farmacia-popular has no period 2015-12"),
        "{stdout}"
    );
    assert_eq!(published(&app).await.0, good);
}

#[tokio::test]
async fn a_period_that_fails_after_others_were_written_publishes_none() {
    let mut app = TestApp::new().await;
    let first = figures(&["201612", "202412"], 500);
    let urls = app
        .serve(vec![(
            "first.zip",
            zip_bytes("pfpbben.csv", &csv(&first, &[])),
        )])
        .await;
    let (code, out, err) = run(&app, &urls["first.zip"]).await;
    assert_eq!(code, Some(0), "{out}\n{err}");
    // Both periods change; the later one's state total is beyond the API's
    // integer column, which is found only while writing it — after 2016-12
    // was written in the same transaction.
    let mut second = figures(&["201612", "202412"], 600);
    for ((period, code6), n) in second.iter_mut() {
        if period == "202412" && code6 == "355030" {
            *n = 3_000_000_000;
        }
    }
    let urls = app
        .serve(vec![(
            "second.zip",
            zip_bytes("pfpbben.csv", &csv(&second, &[])),
        )])
        .await;
    let (code, out, err) = run(&app, &urls["second.zip"]).await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("a municipality's count in 2024-12-01 is beyond"),
        "{err}"
    );
    assert_eq!(published(&app).await.0, first, "neither period changed");

    // Two São Paulo municipalities that each fit, whose state sum does not.
    let mut third = figures(&["201612", "202412"], 600);
    for ((period, code6), n) in third.iter_mut() {
        if period == "202412" && code6 == "355030" {
            *n = 1_500_000_000;
        }
    }
    let campinas = "2024-12-01,202412,2026-01-15,\"Pessoas\",\"BEN\",\"B\",35,\"SP\",\"S\",\"R\",350950,\"Campinas\",1500000000.0,0.0,0.0";
    let urls = app
        .serve(vec![(
            "third.zip",
            zip_bytes("pfpbben.csv", &csv(&third, &[campinas])),
        )])
        .await;
    let (code, out, err) = run(&app, &urls["third.zip"]).await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("a state's count or value in 2024-12-01 is beyond"),
        "{err}"
    );
    assert_eq!(published(&app).await.0, first, "neither period changed");
}

/// A SIDRA values answer (`../shared/SOURCES.md` (c)): a header row, then
/// one row per municipality, every value a string.
fn sidra(year: &str, rows: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![serde_json::json!({
        "NC": "Nível Territorial (Código)", "NN": "Nível Territorial",
        "MC": "Unidade de Medida (Código)", "MN": "Unidade de Medida", "V": "Valor",
        "D1C": "Município (Código)", "D1N": "Município", "D2C": "Variável (Código)",
        "D2N": "Variável", "D3C": "Ano (Código)", "D3N": "Ano"
    })];
    for (code7, value) in rows {
        out.push(serde_json::json!({
            "NC": "6", "NN": "Município", "MC": "45", "MN": "Pessoas", "V": value,
            "D1C": code7, "D1N": "Cidade (XX)", "D2C": "9324",
            "D2N": "População residente estimada", "D3C": year, "D3N": year
        }));
    }
    serde_json::to_vec(&out).expect("json")
}

#[tokio::test]
async fn population_comes_from_sidra_and_only_the_newest_year_sets_it() {
    let mut app = TestApp::new().await;
    let y2024 = [
        ("3550308", "11895578"),
        ("3304557", "6729894"),
        ("5300108", "2982818"),
        ("2304400", "2574412"),
        ("1302603", "..."), // not available: a reject, never 0
    ];
    let y2023: Vec<(&str, &str)> = y2024.iter().map(|(c, _)| (*c, "1000")).collect();
    let urls = app
        .serve(vec![
            ("2024.json", sidra("2024", &y2024)),
            ("2023.json", sidra("2023", &y2023)),
        ])
        .await;
    let population = || async {
        app.client()
            .await
            .query(
                "SELECT ibge_code::text, population FROM public.municipalities
                 WHERE ibge_code IN ('3550308', '3304557', '5300108', '2304400', '1302603')",
                &[],
            )
            .await
            .expect("municipalities")
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, Option<i32>>(1)))
            .collect::<BTreeMap<_, _>>()
    };
    let before = population().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
        .args([
            "run",
            "populacao",
            "--period",
            "2024-01",
            "--url",
            &urls["2024.json"],
        ])
        .env("DATABASE_URL", &app.url)
        .env_remove("CARGA_NIS_KEY")
        .output()
        .await
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("5 read, 4 loaded, 1 rejected"), "{stdout}");
    let after = population().await;
    for (code, value) in y2024 {
        let want = value.parse::<i32>().ok().or(before[code]);
        assert_eq!(after[code], want, "{code}");
    }
    // An older year afterwards: recorded, but the population stays 2024's.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
        .args([
            "run",
            "populacao",
            "--period",
            "2023-01",
            "--url",
            &urls["2023.json"],
        ])
        .env("DATABASE_URL", &app.url)
        .env_remove("CARGA_NIS_KEY")
        .output()
        .await
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(population().await, after);
    let periods: Vec<String> = app
        .client()
        .await
        .query(
            "SELECT to_char(period, 'YYYY-MM') FROM carga.loads
             WHERE dataset = 'populacao' AND status = 'published' AND period IS NOT NULL ORDER BY 1",
            &[],
        )
        .await
        .expect("loads")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(periods, ["2023-01", "2024-01"]);
}

#[tokio::test]
async fn a_state_sum_missing_one_municipality_is_null_not_partial() {
    // Farmácia Popular with an empty count meaning "absent": São Paulo's
    // state (one municipality blank) has no total; the others do; the
    // country has none.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = std::fs::read_to_string("jobs/farmacia-popular.toml")
        .expect("spec")
        .replace(
            "role = \"beneficiaries\"",
            "role = \"beneficiaries\"\nblank_is_absent = true",
        );
    std::fs::write(dir.path().join("farmacia-popular.toml"), spec).expect("write");
    let mut app = TestApp::new().await;
    let mut rows = figures(&["202412"], 700);
    rows.remove(&("202412".to_string(), "355030".to_string()));
    let blank = "2024-12-01,202412,2026-01-15,\"Pessoas\",\"BEN\",\"B\",35,\"SP\",\"S\",\"R\",355030,\"Sao Paulo\",,0.0,0.0";
    // A second São Paulo municipality (Campinas) with a figure.
    let campinas = "2024-12-01,202412,2026-01-15,\"Pessoas\",\"BEN\",\"B\",35,\"SP\",\"S\",\"R\",350950,\"Campinas\",40.0,0.0,0.0";
    let urls = app
        .serve(vec![(
            "pf.zip",
            zip_bytes("pfpbben.csv", &csv(&rows, &[blank, campinas])),
        )])
        .await;
    let (code, out) = run_in(
        &app,
        dir.path(),
        &["run", "farmacia-popular", "--url", &urls["pf.zip"]],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let client = app.client().await;
    let states: BTreeMap<String, Option<i32>> = client
        .query(
            "SELECT st.abbreviation::text, s.total_beneficiaries
             FROM public.program_state_monthly s JOIN public.states st ON st.id = s.state_id
             JOIN public.programs p ON p.id = s.program_id WHERE p.code = 'FARMACIA_POPULAR'",
            &[],
        )
        .await
        .expect("states")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        states["SP"], None,
        "one of SP's municipalities has no figure"
    );
    let rio = rows[&("202412".to_string(), "330455".to_string())];
    assert_eq!(states["RJ"], Some(rio as i32));
    let national: Option<i32> = client
        .query_one(
            "SELECT n.total_beneficiaries FROM public.program_national_monthly n
             JOIN public.programs p ON p.id = n.program_id WHERE p.code = 'FARMACIA_POPULAR'",
            &[],
        )
        .await
        .expect("national")
        .get(0);
    assert_eq!(national, None);
}

#[tokio::test]
async fn the_reject_limit_holds_for_each_period_not_only_the_file() {
    // 30 % of the rows may be rejects, with no allowance: the file's 4 of
    // 14 pass, but all four fall on 2025-10 (4 of its 9), above its 2.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = std::fs::read_to_string("jobs/farmacia-popular.toml")
        .expect("spec")
        .replace("max_reject_ratio = 0.001", "max_reject_ratio = 0.3")
        .replace("reject_allowance = 10", "reject_allowance = 0");
    std::fs::write(dir.path().join("farmacia-popular.toml"), spec).expect("write");
    let mut app = TestApp::new().await;
    let good = figures(&["202412", "202510"], 800);
    let unknown: Vec<String> = (0..4)
        .map(|i| {
            format!(
                "2025-10-01,202510,2026-01-15,\"Pessoas\",\"BEN\",\"B\",35,\"SP\",\"S\",\"R\",35999{i},\"Nenhum\",10.0,0.0,0.0"
            )
        })
        .collect();
    let extra: Vec<&str> = unknown.iter().map(String::as_str).collect();
    let urls = app
        .serve(vec![(
            "pf.zip",
            zip_bytes("pfpbben.csv", &csv(&good, &extra)),
        )])
        .await;
    let (code, out) = run_in(
        &app,
        dir.path(),
        &["run", "farmacia-popular", "--url", &urls["pf.zip"]],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("pfpbben.csv (in pf.zip) (2025-10): 4 of 9 rows rejected, above the limit of 2; first at line 12"),
        "{out}"
    );
    assert!(published(&app).await.0.is_empty(), "nothing published");
}

/// A loopback OData service: `$skip`/`$top` from the query, `{"value":
/// [...]}`, no count. `ignores_skip`: always the first page (pagination
/// that would never end).
/// How the loopback OData service pages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Paging {
    /// `$skip`/`$top` as asked.
    Asked,
    /// Ignores `$skip`: the first page again and again.
    IgnoresSkip,
    /// Pages itself, two documents a page whatever `$top` says, and links
    /// the next one (`@odata.nextLink`, relative, with a `$skiptoken`).
    Linked,
    /// Links every page to the second one.
    LinksInACircle,
    /// Links to another server.
    LinksAway,
    /// Serves at most two documents a page whatever `$top` asks, and no
    /// link: a server's own cap.
    Capped,
}

async fn odata(docs: Vec<serde_json::Value>, paging: Paging) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/odata/v1/Recursos?$filter=Ano%20eq%20'2024'&$format=json",
        listener.local_addr().expect("addr")
    );
    let docs = Arc::new(docs);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let query = common::services::query_of(&common::services::read_head(&mut socket).await);
            let param = |name: &str| common::services::param(&query, name);
            let linked = !matches!(paging, Paging::Asked | Paging::IgnoresSkip | Paging::Capped);
            let (skip, top) = match paging {
                Paging::Asked => (param("$skip"), param("$top")),
                Paging::IgnoresSkip => (0, param("$top")),
                Paging::Capped => (param("$skip"), param("$top").min(2)),
                _ => (param("$skiptoken"), 2),
            };
            let page: Vec<serde_json::Value> = docs.iter().skip(skip).take(top).cloned().collect();
            let mut body =
                serde_json::json!({"@odata.context": "$metadata#Recursos", "value": page});
            if linked && skip + top < docs.len() {
                let token = if paging == Paging::LinksInACircle {
                    2
                } else {
                    skip + top
                };
                body["@odata.nextLink"] = match paging {
                    Paging::LinksAway => {
                        serde_json::json!(format!(
                            "http://192.0.2.1/odata/v1/Recursos?$skiptoken={token}"
                        ))
                    }
                    _ => serde_json::json!(format!("Recursos?$format=json&$skiptoken={token}")),
                };
            }
            let body = body.to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    url
}

#[tokio::test]
async fn an_odata_service_is_paged_until_a_short_page_and_one_that_never_ends_fails() {
    // A spec of counts read over OData, two documents a page: five
    // documents make pages of 2, 2 and 1.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = r#"
dataset = "odata-test"
title = "OData test"
kind = "aggregates"

[program]
code = "ODATA_TEST"
name = "OData test"

[source]
url = "http://127.0.0.1/odata"
protocol = "odata"
page_rows = 2
container = "plain"
encoding = "utf-8"
delimiter = ","
allowed_sources = ["http://127.0.0.1"]

[[columns]]
name = "code"
header = "Codigo"
type = "ibge6"
role = "municipality"

[[columns]]
name = "month"
header = "AnoMes"
type = "yyyymm"
role = "reference_month"

[[columns]]
name = "people"
header = "Pessoas"
type = "integer"
role = "beneficiaries"
"#;
    std::fs::write(dir.path().join("odata-test.toml"), spec).expect("write");
    let app = TestApp::new().await;
    let docs: Vec<serde_json::Value> = PLACES
        .iter()
        .enumerate()
        .map(|(i, (code6, _))| {
            serde_json::json!({"Codigo": code6, "AnoMes": "202412", "Pessoas": 100 + i})
        })
        .collect();
    let mut sorted = docs.clone();
    sorted.sort_by_key(|d| d["Codigo"].as_str().map(str::to_string));
    let url = odata(sorted.clone(), Paging::Asked).await;
    let (code, out) = run_in(
        &app,
        dir.path(),
        &["run", "odata-test", "--period", "2024-12", "--url", &url],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("5 read, 5 loaded, 0 rejected"), "{out}");
    // A service that pages itself (two a page, whatever $top says) and
    // links its pages: followed to the end, the same five documents.
    let mut wide = std::fs::read_to_string(dir.path().join("odata-test.toml")).expect("spec");
    wide = wide.replace("page_rows = 2", "page_rows = 3");
    std::fs::write(dir.path().join("odata-test.toml"), &wide).expect("write");
    let linked = odata(sorted.clone(), Paging::Linked).await;
    let (code, out) = run_in(
        &app,
        dir.path(),
        &[
            "run",
            "odata-test",
            "--period",
            "2024-12",
            "--url",
            &linked,
            "--force",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("5 read, 5 loaded, 0 rejected"), "{out}");
    // A server that caps $top below what was asked (3): a short page is
    // not the end; paging goes on to an empty one.
    let capped = odata(sorted.clone(), Paging::Capped).await;
    let (code, out) = run_in(
        &app,
        dir.path(),
        &[
            "run",
            "odata-test",
            "--period",
            "2024-12",
            "--url",
            &capped,
            "--force",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("5 read, 5 loaded, 0 rejected"), "{out}");
    for (paging, says) in [
        (
            Paging::LinksInACircle,
            "links to a page already read: the pagination does not end",
        ),
        (Paging::LinksAway, "links to another server"),
    ] {
        let url = odata(sorted.clone(), paging).await;
        let (code, out) = run_in(
            &app,
            dir.path(),
            &[
                "run",
                "odata-test",
                "--period",
                "2024-12",
                "--url",
                &url,
                "--force",
            ],
        )
        .await;
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(says), "{says}: {out}");
    }
    std::fs::write(dir.path().join("odata-test.toml"), spec).expect("write");
    let total: i64 = app
        .client()
        .await
        .query_one(
            "SELECT sum(b.total_beneficiaries)::bigint FROM public.beneficiary_data b
             JOIN public.programs p ON p.id = b.program_id WHERE p.code = 'ODATA_TEST'",
            &[],
        )
        .await
        .expect("sum")
        .get(0);
    assert_eq!(total, (0..5).map(|i| 100 + i).sum::<i64>());

    let endless = odata(sorted, Paging::IgnoresSkip).await;
    let (code, out) = run_in(
        &app,
        dir.path(),
        &[
            "run",
            "odata-test",
            "--period",
            "2024-12",
            "--url",
            &endless,
            "--force",
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("repeats or goes back in Codigo"), "{out}");
}

#[tokio::test]
async fn a_later_page_refused_with_429_reaches_the_queue_as_itself() {
    // The second page is answered 429 with Retry-After: the attempt ends
    // with that status and wait (what the queue schedules the retry by),
    // not as a broken body, and nothing is published.
    let jobs = paged_jobs();
    let app = TestApp::new().await;
    let (docs, _) = cadunico_docs();
    let (url, _) = solr(docs, SolrFault::RateLimited).await;
    let (code, out) = run_in(
        &app,
        jobs.path(),
        &["run", "cadunico", "--period", "2024-12", "--url", &url],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("HTTP status 429"), "{out}");
    let client = app.client().await;
    let error_code: Option<String> = client
        .query_one(
            "SELECT error_code FROM carga.loads WHERE dataset = 'cadunico' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(error_code.as_deref(), Some("http_status_429"));
    let written: i64 = client
        .query_one("SELECT count(*) FROM public.cadunico_data", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(written, 0);
}

#[tokio::test]
async fn a_page_that_never_comes_times_out_and_publishes_nothing() {
    let jobs = paged_jobs();
    let app = TestApp::new().await;
    let (docs, _) = cadunico_docs();
    let (url, seen) = solr(docs, SolrFault::Stalls).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
        .args(["run", "cadunico", "--period", "2024-12", "--url", &url])
        .env("DATABASE_URL", &app.url)
        .env("CARGA__LOAD__JOBS_DIR", jobs.path())
        .env("CARGA__HTTP__READ_TIMEOUT_S", "1")
        .env_remove("CARGA_NIS_KEY")
        .output()
        .await
        .expect("run carga");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        seen.lock().expect("log").len() >= 2,
        "the second page was asked for"
    );
    let client = app.client().await;
    let error_code: Option<String> = client
        .query_one(
            "SELECT error_code FROM carga.loads WHERE dataset = 'cadunico' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .expect("ledger")
        .get(0);
    // Retried (every page goes through the download's retries), then the
    // request's own failure: a timeout, said so.
    assert_eq!(error_code.as_deref(), Some("http_request_failed"), "{text}");
    assert!(text.contains("timed out"), "{text}");
    let written: i64 = client
        .query_one("SELECT count(*) FROM public.cadunico_data", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(written, 0);
}

/// FNDE's PNAE rows (`../shared/SOURCES.md` (e)) for 2024: municipalities by
/// name and state, one row per teaching modality, values with a decimal
/// comma. Returns the documents and the value (cents) each municipality
/// should get, computed here.
fn pnae_docs() -> (Vec<serde_json::Value>, BTreeMap<String, i64>) {
    let places = [
        ("3550308", "SP", "SAO PAULO"),
        ("3304557", "RJ", "Rio de Janeiro"),
        ("5300108", "DF", "BRASÍLIA"),
        ("4302303", "RS", "BOM JESUS"),
        ("2207793", "PI", "PAU D'ARCO DO PIAUÍ"),
    ];
    let modalities = ["ENSINO FUNDAMENTAL", "CRECHE", "PRÉ-ESCOLA"];
    let mut docs = Vec::new();
    let mut want = BTreeMap::new();
    let mut code = 1000;
    for (i, (ibge, uf, name)) in places.iter().enumerate() {
        for (j, modality) in modalities.iter().enumerate() {
            let cents = 123_456_789 * (i as i64 + 1) + 100_000 * j as i64 + 7;
            *want.entry((*ibge).to_string()).or_insert(0) += cents;
            code += 1;
            docs.push(serde_json::json!({
                "Co_recursos_repassados": code.to_string(),
                "Ano": "2024",
                "Estado": uf,
                "Municipio": name,
                "Esfera_governo": "MUNICIPAL",
                "Modalidade_ensino": modality,
                "Vl_total_escolas": carga_brl(cents),
            }));
        }
    }
    (docs, want)
}

/// `1.234.567,89` for 123456789 cents.
fn carga_brl(cents: i64) -> String {
    let reais = (cents / 100).to_string();
    let mut grouped = String::new();
    for (k, c) in reais.chars().enumerate() {
        if k > 0 && (reais.len() - k) % 3 == 0 {
            grouped.push('.');
        }
        grouped.push(c);
    }
    format!("{grouped},{:02}", cents % 100)
}

fn pnae_jobs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string("jobs/pnae.toml")
        .expect("spec")
        .replace("page_rows = 10000", "page_rows = 4");
    std::fs::write(dir.path().join("pnae.toml"), text).expect("write");
    dir
}

#[tokio::test]
async fn pnae_rows_are_matched_by_name_within_their_state_and_summed_per_municipality() {
    let app = TestApp::new().await;
    let jobs = pnae_jobs();
    let (docs, want) = pnae_docs();
    let url = odata(docs, Paging::Asked).await;
    let (code, out) = run_in(
        &app,
        jobs.path(),
        &["run", "pnae", "--period", "2024-01", "--url", &url],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let client = app.client().await;
    let rows = client
        .query(
            "SELECT m.ibge_code::text, (b.total_value_brl * 100)::bigint, b.total_beneficiaries, b.total_families
             FROM public.beneficiary_data b
             JOIN public.municipalities m ON m.id = b.municipality_id
             JOIN public.programs p ON p.id = b.program_id
             WHERE p.code = 'PNAE' AND b.reference_date = DATE '2024-01-01'",
            &[],
        )
        .await
        .expect("pnae");
    let mut got = BTreeMap::new();
    for r in &rows {
        assert_eq!(
            r.get::<_, Option<i32>>(2),
            None,
            "no invented student count"
        );
        assert_eq!(r.get::<_, Option<i32>>(3), None);
        got.insert(r.get::<_, String>(0), r.get::<_, i64>(1));
    }
    assert_eq!(got, want);
    let national: i64 = client
        .query_one(
            "SELECT (n.total_value_brl * 100)::bigint FROM public.program_national_monthly n
             JOIN public.programs p ON p.id = n.program_id
             WHERE p.code = 'PNAE' AND n.reference_date = DATE '2024-01-01'",
            &[],
        )
        .await
        .expect("national")
        .get(0);
    assert_eq!(national, want.values().sum::<i64>());
    // One row refused makes its municipality's sum partial: the load
    // fails naming it, and the year published stays as it was.
    let extra = |uf: &str, name: &str, sphere: &str, value: serde_json::Value| {
        serde_json::json!({
            "Co_recursos_repassados": "2001", "Ano": "2024", "Estado": uf,
            "Municipio": name, "Esfera_governo": sphere,
            "Modalidade_ensino": "CRECHE", "Vl_total_escolas": value,
        })
    };
    for (row, says) in [
        // Namesakes elsewhere (SC, RS, PI, RN, PB), none in SP: never matched.
        (
            extra("SP", "BOM JESUS", "MUNICIPAL", "10,00".into()),
            "municipality \"BOM JESUS\" of \"SP\" is no municipality of that state",
        ),
        // A state's transfer, which the query's filter should have left out.
        (
            extra("SP", "SAO PAULO", "ESTADUAL", "10,00".into()),
            "\"ESTADUAL\" where only \"MUNICIPAL\" is loaded",
        ),
        // A JSON number: 1.5 reais or 1500? Never guessed.
        (
            extra("RJ", "NITEROI", "MUNICIPAL", serde_json::json!(1.5)),
            "expected amount (e.g. 1234,56 or ,00)",
        ),
    ] {
        let (mut docs, _) = pnae_docs();
        docs.push(row);
        let url = odata(docs, Paging::Asked).await;
        let (code, out) = run_in(
            &app,
            jobs.path(),
            &[
                "run", "pnae", "--period", "2024-01", "--url", &url, "--force",
            ],
        )
        .await;
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("first at line 17"), "{out}");
        assert!(out.contains(says), "{says}: {out}");
    }

    // The same modality twice for one municipality: the load fails naming
    // both lines, and the published year stays as it was.
    let (mut docs, _) = pnae_docs();
    let mut again = docs[0].clone();
    again["Co_recursos_repassados"] = serde_json::json!("9999");
    docs.push(again);
    let url = odata(docs, Paging::Asked).await;
    let (code, out) = run_in(
        &app,
        jobs.path(),
        &[
            "run", "pnae", "--period", "2024-01", "--url", &url, "--force",
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "line 17 repeats municipality 3550308, the same part in 2024-01 (first at line 2)"
        ),
        "{out}"
    );
    let total: i64 = client
        .query_one(
            "SELECT (sum(b.total_value_brl) * 100)::bigint FROM public.beneficiary_data b
             JOIN public.programs p ON p.id = b.program_id WHERE p.code = 'PNAE'",
            &[],
        )
        .await
        .expect("total")
        .get(0);
    assert_eq!(total, want.values().sum::<i64>());
}
