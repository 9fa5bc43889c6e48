//! Bolsa Família over the years: each generation of the current Portal's
//! `bolsa-familia-pagamentos` file (`../shared/DOMAIN.md`, "Bolsa Família
//! over the years") loads with the real binary from a loopback server into
//! one series (program `BOLSA_FAMILIA`), and the published numbers equal
//! sums computed here, independently of carga:
//! - up to at least 2019-12: 8 columns, no `CPF FAVORECIDO`, `MÊS
//!   REFERÊNCIA` first;
//! - from 2020-01: `CPF FAVORECIDO` added before the NIS;
//! - in 2021: `MÊS COMPETÊNCIA` first.

use std::collections::{BTreeMap, BTreeSet};

use crate::common;

use common::{NIS_KEY, TestApp, portal_csv, zip_bytes};

/// (SIAFI code, IBGE code) of five capitals in the shipped reference data.
const PLACES: [(&str, &str); 5] = [
    ("7107", "3550308"), // São Paulo
    ("6001", "3304557"), // Rio de Janeiro
    ("9701", "5300108"), // Brasília
    ("1389", "2304400"), // Fortaleza
    ("0255", "1302603"), // Manaus
];

struct Generation {
    period: &'static str,
    yyyymm: &'static str,
    header: &'static [&'static str],
}

const GENERATIONS: [Generation; 3] = [
    Generation {
        period: "2017-12",
        yyyymm: "201712",
        header: &[
            "MÊS REFERÊNCIA",
            "MÊS COMPETÊNCIA",
            "UF",
            "CÓDIGO MUNICÍPIO SIAFI",
            "NOME MUNICÍPIO",
            "NIS FAVORECIDO",
            "NOME FAVORECIDO",
            "VALOR PARCELA",
        ],
    },
    Generation {
        period: "2020-03",
        yyyymm: "202003",
        header: &[
            "MÊS REFERÊNCIA",
            "MÊS COMPETÊNCIA",
            "UF",
            "CÓDIGO MUNICÍPIO SIAFI",
            "NOME MUNICÍPIO",
            "CPF FAVORECIDO",
            "NIS FAVORECIDO",
            "NOME FAVORECIDO",
            "VALOR PARCELA",
        ],
    },
    Generation {
        period: "2021-06",
        yyyymm: "202106",
        header: &[
            "MÊS COMPETÊNCIA",
            "MÊS REFERÊNCIA",
            "UF",
            "CÓDIGO MUNICÍPIO SIAFI",
            "NOME MUNICÍPIO",
            "CPF FAVORECIDO",
            "NIS FAVORECIDO",
            "NOME FAVORECIDO",
            "VALOR PARCELA",
        ],
    },
];

/// What the test expects of one municipality, computed from the rows.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    payments: i64,
    cents: i64,
    families: BTreeSet<String>,
}

/// 240 rows over the five places: some families get two parcels, some a
/// retroactive one (competence a month earlier), values of every size up
/// to thousands (`1.234,56`). Returns the file and the expected sums.
fn month(generation: &Generation) -> (Vec<u8>, BTreeMap<&'static str, Expected>) {
    let earlier = format!(
        "{}{:02}",
        &generation.yyyymm[..4],
        generation.yyyymm[4..].parse::<u32>().expect("month") - 1
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut expected: BTreeMap<&'static str, Expected> = BTreeMap::new();
    for i in 0..240u64 {
        let (siafi, ibge) = PLACES[(i % 5) as usize];
        // Every eighth row is a second parcel of the family before it.
        let family = if i % 8 == 7 { i - 5 } else { i };
        let nis = format!("{:011}", 16_000_000_000 + family * 7919);
        let cents = 4_100 + (i as i64 * 7_919) % 150_000;
        let value = brazilian(cents);
        let competence = if i % 11 == 0 {
            earlier.clone()
        } else {
            generation.yyyymm.to_string()
        };
        let by_name: BTreeMap<&str, String> = [
            ("MÊS REFERÊNCIA", generation.yyyymm.to_string()),
            ("MÊS COMPETÊNCIA", competence),
            ("UF", "XX".to_string()),
            ("CÓDIGO MUNICÍPIO SIAFI", siafi.to_string()),
            ("NOME MUNICÍPIO", "MUNICIPIO".to_string()),
            ("CPF FAVORECIDO", "***.456.789-**".to_string()),
            ("NIS FAVORECIDO", nis.clone()),
            ("NOME FAVORECIDO", "FULANA DE TAL".to_string()),
            ("VALOR PARCELA", value),
        ]
        .into_iter()
        .collect();
        rows.push(
            generation
                .header
                .iter()
                .map(|h| by_name[h].clone())
                .collect(),
        );
        let e = expected.entry(ibge).or_default();
        e.payments += 1;
        e.cents += cents;
        e.families.insert(nis);
    }
    let rows: Vec<Vec<&str>> = rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    let csv = portal_csv(generation.header, &rows);
    let entry = format!("{}_BolsaFamilia_Pagamentos.csv", generation.yyyymm);
    (zip_bytes(&entry, &csv), expected)
}

/// Cents as the Portal writes money: `1.234,56`.
fn brazilian(cents: i64) -> String {
    format!("{},{:02}", grouped(cents / 100, '.'), cents % 100)
}

/// `reais` with a thousands separator every three digits.
fn grouped(reais: i64, separator: char) -> String {
    let digits = reais.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(separator);
        }
        out.push(c);
    }
    out
}

/// Per IBGE code: (families, cents, payments), as published in
/// `beneficiary_data` for Bolsa Família in the month starting `first_day`,
/// and the month's retroactive payments in all.
async fn published_month(
    client: &tokio_postgres::Client,
    first_day: &str,
) -> (BTreeMap<String, (i64, i64, i64)>, i64) {
    let rows = client
        .query(
            "SELECT m.ibge_code::text, b.total_families, (b.total_value_brl * 100)::bigint,
                    (b.extra_data::jsonb ->> 'payments')::bigint,
                    (b.extra_data::jsonb ->> 'retroactive_payments')::bigint
             FROM public.beneficiary_data b
             JOIN public.municipalities m ON m.id = b.municipality_id
             JOIN public.programs p ON p.id = b.program_id
             WHERE p.code = 'BOLSA_FAMILIA' AND b.reference_date = $1::text::date
             ORDER BY 1",
            &[&first_day],
        )
        .await
        .expect("beneficiary_data");
    let published = rows
        .iter()
        .map(|r| {
            let families = r.get::<_, Option<i32>>(1).map_or(-1, i64::from);
            (r.get(0), (families, r.get(2), r.get(3)))
        })
        .collect();
    (published, rows.iter().map(|r| r.get::<_, i64>(4)).sum())
}

/// The same figures, computed from the rows the test wrote.
fn computed(expected: &BTreeMap<&str, Expected>) -> BTreeMap<String, (i64, i64, i64)> {
    expected
        .iter()
        .map(|(ibge, e)| {
            let families = e.families.len() as i64;
            ((*ibge).to_string(), (families, e.cents, e.payments))
        })
        .collect()
}

#[tokio::test]
async fn every_generation_of_the_portal_file_loads_into_one_series() {
    let mut app = TestApp::new().await;
    let files: Vec<(String, Vec<u8>, BTreeMap<&str, Expected>)> = GENERATIONS
        .iter()
        .map(|g| {
            let (zip, expected) = month(g);
            (format!("{}.zip", g.yyyymm), zip, expected)
        })
        .collect();
    let urls = app
        .serve(
            files
                .iter()
                .map(|(name, zip, _)| (name.as_str(), zip.clone()))
                .collect(),
        )
        .await;
    for (generation, (name, _, expected)) in GENERATIONS.iter().zip(&files) {
        let out = run(&app, generation.period, &urls[name.as_str()]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {stdout}\n{stderr}",
            generation.period
        );
        assert!(
            stdout.contains("240 read, 240 loaded, 0 rejected"),
            "{}: {stdout}",
            generation.period
        );

        let client = app.client().await;
        let (published, _) = published_month(&client, &format!("{}-01", generation.period)).await;
        assert_eq!(published, computed(expected), "{}", generation.period);
        let national = client
            .query_one(
                "SELECT n.total_families, (n.total_value_brl * 100)::bigint, n.payments
                 FROM public.program_national_monthly n
                 JOIN public.programs p ON p.id = n.program_id
                 WHERE p.code = 'BOLSA_FAMILIA' AND n.reference_date = $1::text::date",
                &[&format!("{}-01", generation.period)],
            )
            .await
            .expect("program_national_monthly");
        let families: BTreeSet<&String> = expected.values().flat_map(|e| &e.families).collect();
        assert_eq!(
            (
                i64::from(national.get::<_, Option<i32>>(0).unwrap_or(-1)),
                national.get::<_, i64>(1),
                national.get::<_, i64>(2)
            ),
            (
                families.len() as i64,
                expected.values().map(|e| e.cents).sum::<i64>(),
                240
            ),
            "{}",
            generation.period
        );
    }
    // One series: the three months under one program, nothing else.
    let months: Vec<String> = app
        .client()
        .await
        .query(
            "SELECT DISTINCT b.reference_date::text FROM public.beneficiary_data b
             JOIN public.programs p ON p.id = b.program_id WHERE p.code = 'BOLSA_FAMILIA'
             ORDER BY 1",
            &[],
        )
        .await
        .expect("months")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(months, ["2017-12-01", "2020-03-01", "2021-06-01"]);
}

/// An archived file of the old portal (`YYYYMM_BolsaFamiliaFolhaPagamento`,
/// layout `old-portal` of the same spec): tab-separated, unquoted, 12
/// columns, no reference month, `Mês Competência` as `MM/YYYY`, money as
/// `1,022.00`, with a row holding a NUL and a record split over two lines
/// (both reported by people who read these files). Published into the same
/// series, with the sums of the rows that are not rejected.
fn old_portal_month() -> (Vec<u8>, BTreeMap<&'static str, Expected>) {
    let header = [
        "UF",
        "Código SIAFI Município",
        "Nome Município",
        "Código Função",
        "Código Subfunção",
        "Código Programa",
        "Código Ação",
        "NIS Favorecido",
        "Nome Favorecido",
        "Fonte-Finalidade",
        "Valor Parcela",
        "Mês Competência",
    ];
    let mut text = header.join("\t");
    text.push_str("\r\n");
    let mut expected: BTreeMap<&'static str, Expected> = BTreeMap::new();
    for i in 0..120u64 {
        let (siafi, ibge) = PLACES[(i % 5) as usize];
        let nis = format!("{:011}", 17_000_000_000 + i * 104_729);
        let cents = 7_000 + (i as i64 * 104_729) % 180_000;
        let competence = if i % 13 == 0 { "04/2014" } else { "05/2014" };
        let fields = [
            "SP",
            siafi,
            "MUNICIPIO",
            "08",
            "244",
            "1335",
            "8442",
            nis.as_str(),
            "FULANA DE TAL",
            "CAIXA-Programa Bolsa familia",
            &us_money(cents),
            competence,
        ];
        text.push_str(&fields.join("\t"));
        text.push_str("\r\n");
        let e = expected.entry(ibge).or_default();
        e.payments += 1;
        e.cents += cents;
        e.families.insert(nis);
    }
    // A NUL inside a name, and a record broken after the name: rejects.
    text.push_str("SP\t7107\tMUNICIPIO\t08\t244\t1335\t8442\t17999999991\tFULANA\0 DE TAL\tCAIXA-Programa Bolsa familia\t100.00\t05/2014\r\n");
    text.push_str("SP\t7107\tMUNICIPIO\t08\t244\t1335\t8442\t17999999992\tFULANA DE TAL\r\n");
    text.push_str("\tCAIXA-Programa Bolsa familia\t100.00\t05/2014\r\n");
    let (latin1, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
    assert!(!unmappable);
    (
        zip_bytes("201405_BolsaFamiliaFolhaPagamento.csv", &latin1),
        expected,
    )
}

/// Cents as the old portal wrote money: `1,022.00`.
fn us_money(cents: i64) -> String {
    format!("{}.{:02}", grouped(cents / 100, ','), cents % 100)
}

async fn run(app: &TestApp, period: &str, url: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
        .args([
            "run",
            "bolsa-familia-pagamentos",
            "--period",
            period,
            "--url",
            url,
        ])
        .env("DATABASE_URL", &app.url)
        .env("CARGA_NIS_KEY", NIS_KEY)
        .output()
        .await
        .expect("run carga")
}

#[tokio::test]
async fn an_archived_old_portal_file_loads_as_its_own_layout() {
    let mut app = TestApp::new().await;
    let (zip, expected) = old_portal_month();
    let (current, _) = month(&GENERATIONS[0]);
    // A file of neither layout: the current one without its value column.
    let broken = zip_bytes(
        "201712_BolsaFamilia_Pagamentos.csv",
        &portal_csv(
            &GENERATIONS[0].header[..7],
            &[vec![
                "201712",
                "201712",
                "SP",
                "7107",
                "MUNICIPIO",
                "12345678901",
                "FULANA",
            ]],
        ),
    );
    let urls = app
        .serve(vec![
            ("old.zip", zip),
            ("new.zip", current),
            ("broken.zip", broken),
        ])
        .await;

    let out = run(&app, "2014-05", &urls["old.zip"]).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("123 read, 120 loaded, 3 rejected"),
        "{stdout}"
    );
    for person in ["FULANA", "17999999991", "17999999992"] {
        assert!(
            !stdout.contains(person) && !stderr.contains(person),
            "{person} leaked"
        );
    }
    let client = app.client().await;
    let (published, retroactive) = published_month(&client, "2014-05-01").await;
    assert_eq!(published, computed(&expected));
    // MM/YYYY was read: the rows of competence 04/2014 are retroactive.
    assert_eq!(retroactive, (0..120).filter(|i| i % 13 == 0).count() as i64);

    // Loaded as another month, the old file (which names no reference
    // month) is refused: its parcels' competence is after that month.
    let out = run(&app, "2014-04", &urls["old.zip"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("competence month 201405 is after the load's period 201404"),
        "{stderr}"
    );

    // A current-Portal file of the same spec still loads, as "portal".
    let out = run(&app, "2017-12", &urls["new.zip"]).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", out);
    let layouts: Vec<(String, Option<String>)> = client
        .query(
            "SELECT period::text, layout FROM carga.loads
             WHERE dataset = 'bolsa-familia-pagamentos' AND status = 'published' ORDER BY period",
            &[],
        )
        .await
        .expect("ledger")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        layouts,
        [
            ("2014-05-01".to_string(), Some("old-portal".to_string())),
            ("2017-12-01".to_string(), Some("portal".to_string())),
        ]
    );

    // A file of neither layout fails before any row, naming the closest
    // layout and what it lacks.
    let out = run(&app, "2017-12", &urls["broken.zip"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fits none of the layouts [\"portal\", \"old-portal\"]")
            && stderr.contains("the closest, \"portal\"")
            && stderr.contains("VALOR PARCELA"),
        "{stderr}"
    );
    assert!(!stderr.contains("12345678901"), "{stderr}");
}

/// `carga validate` of a local file (no database).
async fn validate(
    dir: &std::path::Path,
    name: &str,
    bytes: &[u8],
) -> (Option<i32>, String, String) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"))
        .args([
            "validate",
            "bolsa-familia-pagamentos",
            path.to_str().expect("path"),
        ])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .await
        .expect("run carga");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The header line that picks the layout is read like any record: blank
/// lines before it are skipped, and a first line beyond the record cap
/// fails as an over-long record (the root cause), not as a header that
/// fits no layout.
#[tokio::test]
async fn the_header_line_is_read_like_a_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut csv = b"\r\n\r\n".to_vec();
    let plain = {
        portal_csv(
            GENERATIONS[1].header,
            &[vec![
                "202003",
                "202003",
                "SP",
                "7107",
                "MUNICIPIO",
                "***.456.789-**",
                "12345678901",
                "FULANA",
                "1.022,00",
            ]],
        )
    };
    csv.extend_from_slice(&plain);
    let (code, stdout, stderr) = validate(
        dir.path(),
        "blank.zip",
        &zip_bytes("202003_BolsaFamilia_Pagamentos.csv", &csv),
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("layout          portal"), "{stdout}");
    assert!(stdout.contains("ok: the file would load"), "{stdout}");

    let mut long = vec![b'X'; 200 * 1024];
    long.extend_from_slice(b"\r\n");
    let (code, stdout, stderr) = validate(
        dir.path(),
        "long.zip",
        &zip_bytes("202003_BolsaFamilia_Pagamentos.csv", &long),
    )
    .await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("a record is longer than"), "{stderr}");
    assert!(!stderr.contains("layouts"), "{stderr}");
}
