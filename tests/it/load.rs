//! End-to-end loads against a real PostgreSQL, fetching Portal-format files
//! over loopback HTTP.

use crate::common;

use carga::engine::pipeline::{LoadError, Outcome};
use common::{NBF_COLUMNS, TestApp, nbf_row, portal_csv, zip_bytes};

const A: &str = "10000000001";
const B: &str = "10000000002";
const C: &str = "10000000003";
const D: &str = "10000000004";
const E: &str = "10000000005";

/// Everything the issue lists: CRLF, Latin-1, thousands dots, a negative
/// value, a retroactive parcel, a repeated NIS (also across municipalities of
/// one state), an empty CPF, a row without NIS, an unknown SIAFI code and a
/// malformed value.
fn fixture_rows() -> Vec<Vec<&'static str>> {
    vec![
        nbf_row("202410", "7107", A, "***.123.456-**", "600,00"),
        nbf_row("202410", "7107", A, "", "1.412,00"),
        nbf_row("202409", "7107", B, "", "150,00"),
        nbf_row("202410", "7107", "", "", "50,00"),
        nbf_row("202410", "6291", A, "***.111.222-**", "-75,50"),
        nbf_row("202410", "6291", C, "", "1.234.567,89"),
        nbf_row("202410", "6001", D, "", "0,01"),
        nbf_row("202410", "9999", E, "", "10,00"),
        nbf_row("202410", "6001", E, "", "12,3,4"),
        nbf_row("202410", "6001", "00000000000", "", "10,00"),
    ]
}

/// A in São Paulo and B in Rio de Janeiro, with the given values.
fn two_payments_zip(value_a: &str, value_b: &str) -> Vec<u8> {
    zip_bytes(
        "202410_NovoBolsaFamilia.csv",
        &portal_csv(
            &NBF_COLUMNS,
            &[
                nbf_row("202410", "7107", A, "", value_a),
                nbf_row("202410", "6001", B, "", value_b),
            ],
        ),
    )
}

fn fixture_zip() -> Vec<u8> {
    zip_bytes(
        "202410_NovoBolsaFamilia.csv",
        &portal_csv(&NBF_COLUMNS, &fixture_rows()),
    )
}

/// The same rows with the columns in another order.
fn reordered_zip() -> Vec<u8> {
    let order = [8, 6, 0, 3, 1, 2, 7, 4, 5];
    let header: Vec<&str> = order.iter().map(|&i| NBF_COLUMNS[i]).collect();
    let rows: Vec<Vec<&str>> = fixture_rows()
        .into_iter()
        .map(|r| order.iter().map(|&i| r[i]).collect())
        .collect();
    zip_bytes("202410_NovoBolsaFamilia.csv", &portal_csv(&header, &rows))
}

async fn municipal(app: &TestApp) -> Vec<(String, i32, Option<i32>, String, i64, i64)> {
    app.client()
        .await
        .query(
            "SELECT m.ibge_code::text, b.total_beneficiaries, b.total_families, b.total_value_brl::text,
                    (b.extra_data::jsonb ->> 'payments')::bigint, (b.extra_data::jsonb ->> 'retroactive_payments')::bigint
             FROM public.beneficiary_data b JOIN public.municipalities m ON m.id = b.municipality_id
             ORDER BY 1",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

async fn states(app: &TestApp) -> Vec<(String, i32, i32, String)> {
    app.client()
        .await
        .query(
            "SELECT s.abbreviation::text, a.municipalities, a.total_beneficiaries, a.total_value_brl::text
             FROM public.program_state_monthly a JOIN public.states s ON s.id = a.state_id ORDER BY 1",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn national(app: &TestApp) -> (i32, i32, i32, Option<i32>, String, i64) {
    let r = app
        .client()
        .await
        .query_one(
            "SELECT states, municipalities, total_beneficiaries, total_families, total_value_brl::text, payments
             FROM public.program_national_monthly",
            &[],
        )
        .await
        .expect("query");
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
}

/// The fixture's aggregates, worked out by hand.
async fn assert_fixture_aggregates(app: &TestApp) {
    assert_eq!(
        municipal(app).await,
        vec![
            // Rio: 0,01 + 10,00; the all-zero NIS counts in the value, not in people
            ("3304557".into(), 1, Some(1), "10.01".into(), 2, 0),
            // Campinas: -75,50 + 1.234.567,89
            ("3509502".into(), 2, Some(2), "1234492.39".into(), 2, 0),
            // São Paulo: 600 + 1.412 + 150 (retroactive) + 50 (no NIS); A twice
            ("3550308".into(), 2, Some(2), "2212.00".into(), 4, 1),
        ]
    );
    // A is paid in São Paulo and Campinas: one person for the state.
    assert_eq!(
        states(app).await,
        vec![
            ("RJ".into(), 1, 1, "10.01".into()),
            ("SP".into(), 2, 3, "1236704.39".into())
        ]
    );
    assert_eq!(
        national(app).await,
        (2, 3, 4, Some(4), "1236714.40".into(), 8)
    );
}

#[tokio::test]
async fn aggregates_are_exact() {
    let mut app = TestApp::new().await;
    let urls = app.serve(vec![("nbf.zip", fixture_zip())]).await;
    let report = app
        .load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], false)
        .await
        .expect("load");
    assert_eq!(report.outcome, Outcome::Published);
    assert_eq!(
        (report.rows_read, report.rows_loaded, report.rows_rejected),
        (10, 8, 2)
    );
    assert_eq!(report.distinct_beneficiaries, 4);
    assert_fixture_aggregates(&app).await;

    // Rejects: line numbers count the header as line 1; personal data redacted.
    let client = app.client().await;
    let rejects = client
        .query(
            "SELECT line, column_name, reason, raw_line FROM carga.rejects ORDER BY line",
            &[],
        )
        .await
        .expect("rejects");
    assert_eq!(rejects.len(), 2);
    assert_eq!(rejects[0].get::<_, i64>(0), 9);
    assert_eq!(
        rejects[0].get::<_, Option<String>>(1).as_deref(),
        Some("CÓDIGO MUNICÍPIO SIAFI")
    );
    assert!(
        rejects[0]
            .get::<_, String>(2)
            .contains("unknown_municipality")
    );
    assert_eq!(rejects[1].get::<_, i64>(0), 10);
    assert_eq!(
        rejects[1].get::<_, Option<String>>(1).as_deref(),
        Some("VALOR PARCELA")
    );
    assert!(rejects[1].get::<_, String>(2).contains("12,3,4"));
    for r in &rejects {
        let raw: String = r.get(3);
        assert!(
            !raw.contains(E) && !raw.contains("FULANO"),
            "personal data in a reject: {raw}"
        );
    }

    // No NIS in clear anywhere in the detail table; names never stored.
    let leaked: i64 = client
        .query_one(
            "SELECT count(*) FROM carga.payments p WHERE p::text LIKE '%' || $1 || '%' OR p::text LIKE '%FULANO%'",
            &[&A],
        )
        .await
        .expect("scan")
        .get(0);
    assert_eq!(leaked, 0);
    let ledger = client
        .query_one(
            "SELECT status, rows_loaded, rows_rejected, distinct_beneficiaries, total_value_brl::text, length(sha256)
             FROM carga.loads WHERE id = $1",
            &[&report.load_id],
        )
        .await
        .expect("ledger");
    assert_eq!(ledger.get::<_, String>(0), "published");
    assert_eq!(ledger.get::<_, Option<i64>>(1), Some(8));
    assert_eq!(ledger.get::<_, Option<i64>>(2), Some(2));
    assert_eq!(ledger.get::<_, Option<i64>>(3), Some(4));
    assert_eq!(
        ledger.get::<_, Option<String>>(4).as_deref(),
        Some("1236714.40")
    );
    assert_eq!(ledger.get::<_, Option<i32>>(5), Some(32));
}

#[tokio::test]
async fn a_reordered_header_loads_the_same_numbers() {
    let mut app = TestApp::new().await;
    let urls = app
        .serve(vec![("a.zip", fixture_zip()), ("b.zip", reordered_zip())])
        .await;
    app.load("novo-bolsa-familia", "2024-10", &urls["a.zip"], false)
        .await
        .expect("canonical");
    let (m, s, n) = (
        municipal(&app).await,
        states(&app).await,
        national(&app).await,
    );
    app.load("novo-bolsa-familia", "2024-10", &urls["b.zip"], true)
        .await
        .expect("reordered");
    assert_eq!(
        (
            municipal(&app).await,
            states(&app).await,
            national(&app).await
        ),
        (m, s, n)
    );
}

#[tokio::test]
async fn rerunning_a_period_never_duplicates() {
    let mut app = TestApp::new().await;
    let urls = app.serve(vec![("nbf.zip", fixture_zip())]).await;
    let first = app
        .load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], false)
        .await
        .expect("first");
    let ids: Vec<i32> = app
        .client()
        .await
        .query("SELECT id FROM public.beneficiary_data ORDER BY id", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let before = app.visible_state().await;

    // Same bytes: skipped as unchanged (the server's strong ETag answers 304).
    let second = app
        .load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], false)
        .await
        .expect("second");
    assert_eq!(second.outcome, Outcome::Unchanged);
    assert_eq!(app.visible_state().await, before);

    // Forced: replaced, not duplicated; the API's row ids survive the upsert.
    let third = app
        .load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], true)
        .await
        .expect("forced");
    assert_eq!(third.outcome, Outcome::Published);
    assert_eq!(
        third
            .replaced_load
            .as_deref()
            .map(|n| n.ends_with(&format!("_l{}", first.load_id))),
        Some(true)
    );
    let client = app.client().await;
    let after_ids: Vec<i32> = client
        .query("SELECT id FROM public.beneficiary_data ORDER BY id", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(after_ids, ids);
    let payments: i64 = client
        .query_one("SELECT count(*) FROM carga.payments", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(payments, 8);
    let statuses: Vec<String> = client
        .query(
            "SELECT status FROM carga.loads WHERE dataset = 'novo-bolsa-familia' ORDER BY id",
            &[],
        )
        .await
        .expect("ledger")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, vec!["superseded", "skipped", "published"]);
    let leaves = app
        .carga_tables()
        .await
        .into_iter()
        .filter(|t| t.starts_with("payments_bolsa_familia_202410"))
        .count();
    assert_eq!(leaves, 1);
}

#[tokio::test]
async fn a_failing_load_keeps_the_previous_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = std::fs::read_to_string("jobs/novo-bolsa-familia.toml")
        .expect("spec")
        .replace("reject_allowance = 100", "reject_allowance = 0");
    std::fs::write(dir.path().join("novo-bolsa-familia.toml"), spec).expect("write spec");
    let jobs_dir = dir.path().to_path_buf();
    let mut app = TestApp::with_settings(|s| s.load.jobs_dir = jobs_dir).await;
    let good = two_payments_zip("600,00", "1,00");
    let urls = app
        .serve(vec![("good.zip", good), ("bad.zip", fixture_zip())])
        .await;
    app.load("novo-bolsa-familia", "2024-10", &urls["good.zip"], false)
        .await
        .expect("good");
    let before = app.visible_state().await;
    let tables = app.carga_tables().await;

    let err = app
        .load("novo-bolsa-familia", "2024-10", &urls["bad.zip"], true)
        .await
        .expect_err("rejects");
    assert!(
        matches!(err, LoadError::TooManyRejects { rejected: 2, .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("202410_NovoBolsaFamilia.csv") && message.contains("line 9"),
        "{message}"
    );
    assert!(message.contains("CÓDIGO MUNICÍPIO SIAFI"), "{message}");

    assert_eq!(app.visible_state().await, before);
    assert_eq!(app.carga_tables().await, tables, "no orphan partition");
    let client = app.client().await;
    let failed = client
        .query_one(
            "SELECT status, error_code, error FROM carga.loads ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .expect("ledger");
    assert_eq!(failed.get::<_, String>(0), "failed");
    assert_eq!(
        failed.get::<_, Option<String>>(1).as_deref(),
        Some("too_many_rejects")
    );
    let rejects: i64 = client
        .query_one("SELECT count(*) FROM carga.rejects", &[])
        .await
        .expect("n")
        .get(0);
    assert_eq!(rejects, 0, "a failed load's rejects roll back with it");
}

#[tokio::test]
async fn a_truncated_zip_fails_cleanly() {
    let mut app = TestApp::new().await;
    let zip = fixture_zip();
    let cut = zip[..zip.len() * 7 / 10].to_vec();
    let urls = app
        .serve(vec![("good.zip", fixture_zip()), ("cut.zip", cut)])
        .await;
    app.load("novo-bolsa-familia", "2024-10", &urls["good.zip"], false)
        .await
        .expect("good");
    let before = app.visible_state().await;
    let err = app
        .load("novo-bolsa-familia", "2024-10", &urls["cut.zip"], true)
        .await
        .expect_err("truncated");
    assert_eq!(err.code(), "archive_truncated", "{err}");
    assert!(
        err.to_string().contains("202410_NovoBolsaFamilia.csv"),
        "{err}"
    );
    assert_eq!(app.visible_state().await, before);
}

#[tokio::test]
async fn a_missing_column_fails_before_any_row_is_written() {
    let mut app = TestApp::new().await;
    let header = &NBF_COLUMNS[..8]; // no VALOR PARCELA
    let rows: Vec<Vec<&str>> = fixture_rows()
        .into_iter()
        .map(|r| r[..8].to_vec())
        .collect();
    let urls = app
        .serve(vec![(
            "nbf.zip",
            zip_bytes("202410_NovoBolsaFamilia.csv", &portal_csv(header, &rows)),
        )])
        .await;
    let err = app
        .load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], false)
        .await
        .expect_err("header");
    assert_eq!(err.code(), "csv_header_mismatch");
    let message = err.to_string();
    assert!(message.contains("missing [\"VALOR PARCELA\"]"), "{message}");
    assert!(
        message.contains("NOME FAVORECIDO"),
        "found names listed: {message}"
    );
    let client = app.client().await;
    let read: Option<i64> = client
        .query_one(
            "SELECT rows_read FROM carga.loads ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(read, None, "no row was read");
    let n: i64 = client
        .query_one("SELECT count(*) FROM carga.payments", &[])
        .await
        .expect("n")
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn empty_and_header_only_files_fail() {
    let mut app = TestApp::new().await;
    let header_only = zip_bytes("x.csv", &portal_csv(&NBF_COLUMNS, &[]));
    let empty = zip_bytes("x.csv", b"");
    let urls = app
        .serve(vec![
            ("h.zip", header_only),
            ("e.zip", empty),
            ("z.zip", Vec::new()),
        ])
        .await;
    for name in ["h.zip", "e.zip", "z.zip"] {
        let err = app
            .load("novo-bolsa-familia", "2024-10", &urls[name], false)
            .await
            .expect_err(name);
        assert!(
            ["empty_file", "unexpected_content"].contains(&&*err.code().as_str()),
            "{name}: {} {err}",
            err.code()
        );
    }
}

#[tokio::test]
async fn a_shrinking_period_needs_force() {
    let mut app = TestApp::new().await;
    let ten: Vec<Vec<&str>> = (0..10)
        .map(|_| nbf_row("202410", "7107", A, "", "1,00"))
        .collect();
    let five: Vec<Vec<&str>> = ten[..5].to_vec();
    let urls = app
        .serve(vec![
            (
                "ten.zip",
                zip_bytes("x.csv", &portal_csv(&NBF_COLUMNS, &ten)),
            ),
            (
                "five.zip",
                zip_bytes("x.csv", &portal_csv(&NBF_COLUMNS, &five)),
            ),
        ])
        .await;
    app.load("novo-bolsa-familia", "2024-10", &urls["ten.zip"], false)
        .await
        .expect("ten");
    let err = app
        .load("novo-bolsa-familia", "2024-10", &urls["five.zip"], false)
        .await
        .expect_err("shrink");
    assert_eq!(err.code(), "shrink_guard", "{err}");
    assert!(err.to_string().contains("50.0% fewer"), "{err}");
    let forced = app
        .load("novo-bolsa-familia", "2024-10", &urls["five.zip"], true)
        .await
        .expect("forced");
    assert_eq!(forced.rows_loaded, 5);
}

#[tokio::test]
async fn http_errors_name_the_status() {
    let mut app = TestApp::new().await;
    let urls = app.serve(vec![("x.zip", fixture_zip())]).await;
    let missing = urls["x.zip"].replace("x.zip", "missing.zip");
    let err = app
        .load("novo-bolsa-familia", "2024-10", &missing, false)
        .await
        .expect_err("404");
    assert_eq!(err.code(), "http_status_404");
    assert!(err.to_string().contains("404"), "{err}");
    let html = app
        .serve(vec![(
            "page.zip",
            b"<html><body>Manutencao</body></html>".to_vec(),
        )])
        .await;
    let err = app
        .load("novo-bolsa-familia", "2024-10", &html["page.zip"], false)
        .await
        .expect_err("html");
    assert_eq!(err.code(), "unexpected_content");
    assert!(err.to_string().contains("<html>"), "{err}");
}

/// Readers see the whole old period or the whole new one, never a mix.
#[tokio::test]
async fn readers_never_see_a_mix() {
    let mut app = TestApp::new().await;
    let small = two_payments_zip("1,00", "2,00");
    let urls = app
        .serve(vec![("small.zip", small), ("big.zip", fixture_zip())])
        .await;
    app.load("novo-bolsa-familia", "2024-10", &urls["small.zip"], false)
        .await
        .expect("small");
    let observe = "SELECT (SELECT coalesce(sum(total_value_brl), 0)::text FROM public.beneficiary_data),
                          (SELECT coalesce(max(total_value_brl), 0)::text FROM public.program_national_monthly),
                          (SELECT count(*)::text FROM carga.payments)";
    let url = app.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_reader = stop.clone();
    let reader = tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("reader");
        tokio::spawn(conn);
        let mut seen = std::collections::BTreeSet::new();
        while !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
            let r = client.query_one(observe, &[]).await.expect("observe");
            seen.insert((
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
            ));
        }
        seen
    });
    app.load("novo-bolsa-familia", "2024-10", &urls["big.zip"], true)
        .await
        .expect("big");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.expect("reader");
    let before = ("3.00".to_string(), "3.00".to_string(), "2".to_string());
    let after = (
        "1236714.40".to_string(),
        "1236714.40".to_string(),
        "8".to_string(),
    );
    assert!(!seen.is_empty());
    for s in &seen {
        assert!(
            *s == before || *s == after,
            "a mixed state was visible: {s:?}"
        );
    }
}

/// The worker's distinct counts (hash-partitioned spill, counted on
/// several threads) and sums against the obvious SQL over the rows it
/// stored, on
/// generated rows where people are paid again in other municipalities and
/// other states.
#[tokio::test]
async fn distinct_counts_match_count_distinct_over_the_stored_rows() {
    let spill = tempfile::tempdir().expect("spill dir");
    let spill_dir = spill.path().to_path_buf();
    let mut app = TestApp::with_settings(|s| {
        s.load.count_threads = 3;
        s.load.spill_dir = spill_dir;
    })
    .await;
    let period = carga::dataset::Period::new(2024, 10).expect("period");
    let mut zip = std::io::Cursor::new(Vec::new());
    carga::engine::sample::write_zip(&mut zip, period, 40_000, 5, "202410_NovoBolsaFamilia.csv")
        .expect("sample");
    let urls = app.serve(vec![("sample.zip", zip.into_inner())]).await;
    let report = app
        .load("novo-bolsa-familia", "2024-10", &urls["sample.zip"], false)
        .await
        .expect("load");
    let client = app.client().await;
    let cross_state: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT p.beneficiary_hash FROM carga.payments p
                 JOIN public.municipalities m ON m.id = p.municipality_id
                 GROUP BY 1 HAVING count(DISTINCT m.state_id) > 1) x",
            &[],
        )
        .await
        .expect("cross-state")
        .get(0);
    assert!(
        cross_state > 100,
        "the sample must repeat people across states"
    );
    let national: i64 = client
        .query_one(
            "SELECT count(DISTINCT beneficiary_hash) FROM carga.payments",
            &[],
        )
        .await
        .expect("national")
        .get(0);
    assert_eq!(report.distinct_beneficiaries, national);
    assert_eq!(
        std::fs::read_dir(spill.path()).expect("ls").count(),
        0,
        "the spill leaves no file behind"
    );
    let mismatches = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query(sql, &[])
                .await
                .expect("compare")
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    let municipal = mismatches(
        "SELECT format('%s: %s vs %s, %s vs %s', coalesce(o.municipality_id, b.municipality_id),
                       o.n, b.total_beneficiaries, o.cents, b.total_value_brl)
         FROM (SELECT municipality_id, count(DISTINCT beneficiary_hash) AS n,
                      sum(value_cents)::numeric / 100 AS cents
               FROM carga.payments GROUP BY 1) o
         FULL JOIN public.beneficiary_data b USING (municipality_id)
         WHERE o.n IS DISTINCT FROM b.total_beneficiaries::bigint
            OR o.cents IS DISTINCT FROM b.total_value_brl",
    )
    .await;
    assert!(municipal.is_empty(), "municipal: {municipal:?}");
    let state = mismatches(
        "SELECT format('%s: %s vs %s', coalesce(o.state_id, s.state_id), o.n, s.total_beneficiaries)
         FROM (SELECT m.state_id, count(DISTINCT p.beneficiary_hash) AS n
               FROM carga.payments p JOIN public.municipalities m ON m.id = p.municipality_id
               GROUP BY 1) o
         FULL JOIN public.program_state_monthly s USING (state_id)
         WHERE o.n IS DISTINCT FROM s.total_beneficiaries::bigint",
    )
    .await;
    assert!(state.is_empty(), "state: {state:?}");
    let stored: i64 = client
        .query_one(
            "SELECT total_beneficiaries::bigint FROM public.program_national_monthly",
            &[],
        )
        .await
        .expect("national row")
        .get(0);
    assert_eq!(stored, national);
}

/// The spill file cannot be created: the load fails naming the directory
/// and the setting, and the published period stays as it was.
#[tokio::test]
async fn an_unusable_spill_directory_fails_the_load_and_keeps_the_old_data() {
    let mut app = TestApp::new().await;
    let urls = app.serve(vec![("nbf.zip", fixture_zip())]).await;
    app.load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], false)
        .await
        .expect("first load");
    let before = app.visible_state().await;
    app.ctx.settings.load.spill_dir = "/nonexistent/carga-spill".into();
    let err = app
        .load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], true)
        .await
        .expect_err("no spill directory");
    assert_eq!(err.code(), "spill_io", "{err}");
    let message = err.to_string();
    assert!(
        message.contains("/nonexistent/carga-spill") && message.contains("load.spill_dir"),
        "{message}"
    );
    assert_eq!(app.visible_state().await, before);
}

/// `carga run municipios --url …`: the reference list over HTTP; a file
/// missing a column fails naming it, and a much shorter list needs --force.
#[tokio::test]
async fn the_reference_load_reads_a_url_and_guards_its_size() {
    let mut app = TestApp::new().await;
    let full = carga::engine::snapshot::reference::MUNICIPIOS_CSV
        .as_bytes()
        .to_vec();
    let short: Vec<u8> = carga::engine::snapshot::reference::MUNICIPIOS_CSV
        .lines()
        .take(101)
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes();
    let broken = carga::engine::snapshot::reference::MUNICIPIOS_CSV
        .replacen("siafi_id", "siafi", 1)
        .into_bytes();
    let urls = app
        .serve(vec![
            ("full.csv", full),
            ("short.csv", short),
            ("broken.csv", broken),
        ])
        .await;
    let spec = carga::dataset::find(&app.ctx.settings.load.jobs_dir, "municipios").expect("spec");
    let report = carga::engine::snapshot::reference::run(
        &app.ctx,
        &spec,
        Some(&urls["full.csv"]),
        false,
        std::future::pending(),
    )
    .await
    .expect("full list");
    assert_eq!(
        (report.states, report.municipalities, report.with_siafi),
        (27, 5571, 5571)
    );
    let err = carga::engine::snapshot::reference::run(
        &app.ctx,
        &spec,
        Some(&urls["broken.csv"]),
        false,
        std::future::pending(),
    )
    .await
    .expect_err("missing column");
    assert!(err.to_string().contains("siafi_id"), "{err}");
    let err = carga::engine::snapshot::reference::run(
        &app.ctx,
        &spec,
        Some(&urls["short.csv"]),
        false,
        std::future::pending(),
    )
    .await
    .expect_err("shrunk");
    assert_eq!(err.code(), "shrink_guard", "{err}");
    let forced = carga::engine::snapshot::reference::run(
        &app.ctx,
        &spec,
        Some(&urls["short.csv"]),
        true,
        std::future::pending(),
    )
    .await
    .expect("forced");
    assert_eq!(forced.municipalities, 100);
}
