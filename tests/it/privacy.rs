//! Personal data and wrong inputs: what a bad file can make carga print,
//! log or store, and whether `validate` and `run` agree about it. Every
//! test loads through the real pipeline (or the real binary) against a real
//! PostgreSQL.

use crate::common;

use std::path::Path;
use std::process::Output;

use carga::engine::pipeline::Outcome;
use common::{NBF_COLUMNS, NIS_KEY, TestApp, nbf_row, portal_csv, zip_bytes};

const NAME: &str = "FULANO DE TAL JOSÉ"; // what nbf_row writes as the name
const NIS: &str = "10000000001";
const OTHER_NIS: &str = "10000000002";
const CPF: &str = "***.123.456-**";

/// The personal values the fixtures carry, in any form a message could
/// hold them.
fn assert_no_personal_data(what: &str, text: &str) {
    for personal in [NAME, "FULANO", NIS, OTHER_NIS, "123.456"] {
        assert!(
            !text.contains(personal),
            "{what}: {personal:?} leaked into {text:?}"
        );
    }
}

fn nbf_zip(rows: &[Vec<&str>]) -> Vec<u8> {
    zip_bytes(
        "202410_NovoBolsaFamilia.csv",
        &portal_csv(&NBF_COLUMNS, rows),
    )
}

/// The real binary, with only the environment given.
async fn carga(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_carga"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CARGA_NIS_KEY");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().await.expect("run carga")
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `carga validate` on `bytes`, written to a file (no database).
async fn validate(bytes: &[u8]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("202410_NovoBolsaFamilia.zip");
    std::fs::write(&path, bytes).expect("write");
    carga(
        &[
            "validate",
            "novo-bolsa-familia",
            path.to_str().expect("path"),
        ],
        &[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
    )
    .await
}

/// (line, column, reason, raw_line) of every stored reject.
async fn rejects(app: &TestApp) -> Vec<(i64, Option<String>, String, String)> {
    app.client()
        .await
        .query(
            "SELECT line, column_name, reason, raw_line FROM carga.rejects ORDER BY line",
            &[],
        )
        .await
        .expect("rejects")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// A file whose first line is a data row: the header error says how many
/// columns there were and what is missing, and quotes none of the row — not
/// on stderr (JSON log lines included), not in the ledger.
#[tokio::test]
async fn a_file_without_a_header_never_quotes_its_first_row() {
    let mut app = TestApp::new().await;
    let rows = [
        nbf_row("202410", "7107", NIS, CPF, "600,00"),
        nbf_row("202410", "7107", OTHER_NIS, CPF, "600,00"),
    ];
    let mut csv = portal_csv(&NBF_COLUMNS, &rows);
    let header_end = csv.windows(2).position(|w| w == b"\r\n").expect("crlf") + 2;
    csv.drain(..header_end);
    let urls = app
        .serve(vec![(
            "nbf.zip",
            zip_bytes("202410_NovoBolsaFamilia.csv", &csv),
        )])
        .await;

    let env = [
        ("DATABASE_URL", app.url.as_str()),
        ("CARGA_NIS_KEY", NIS_KEY),
    ];
    let out = carga(
        &[
            "run",
            "novo-bolsa-familia",
            "--period",
            "2024-10",
            "--url",
            &urls["nbf.zip"],
        ],
        &env,
    )
    .await;
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert_no_personal_data("carga run", &output);
    assert!(
        output.contains("found 9 columns") && output.contains("VALOR PARCELA"),
        "{output}"
    );

    let ledger = app
        .client()
        .await
        .query_one(
            "SELECT error_code, error FROM carga.loads ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .expect("ledger");
    let (code, error): (Option<String>, Option<String>) = (ledger.get(0), ledger.get(1));
    assert_eq!(code.as_deref(), Some("csv_header_mismatch"));
    let error = error.expect("an error");
    assert_no_personal_data("carga.loads.error", &error);
    assert!(error.contains("found 9 columns"), "{error}");

    let validated = validate(&zip_bytes("x.csv", &csv)).await;
    assert_eq!(validated.status.code(), Some(1));
    assert_no_personal_data("carga validate", &text(&validated));
}

/// Rows with a field too many or too few, and rows whose name, NIS or CPF
/// sit in a typed column: nothing personal reaches `carga.rejects`, neither
/// in the redacted line nor in the reason.
#[tokio::test]
async fn rejects_with_shifted_fields_store_no_personal_data() {
    let mut app = TestApp::new().await;
    let good = nbf_row("202410", "7107", NIS, CPF, "600,00");
    let mut extra = good.clone();
    extra.insert(5, "EXTRA"); // the name lands on VALOR PARCELA
    let mut missing = good.clone();
    missing.remove(2); // the name lands on NIS, the value on the name
    let mut swapped = good.clone();
    swapped.swap(7, 8); // the name in VALOR PARCELA
    let mut nis_in_month = good.clone();
    nis_in_month[0] = NIS;
    let cpf_in_value = nbf_row("202410", "7107", NIS, CPF, CPF);
    let nis_in_value = nbf_row("202410", "7107", NIS, CPF, NIS);
    let nis_in_code = nbf_row("202410", NIS, NIS, CPF, "1,00");
    let shaped = nbf_row("202410", "7107", NIS, CPF, "12,3,4");
    let rows = vec![
        good.clone(),
        extra,
        missing,
        swapped,
        nis_in_month,
        cpf_in_value,
        nis_in_value,
        nis_in_code,
        shaped,
    ];
    let urls = app.serve(vec![("nbf.zip", nbf_zip(&rows))]).await;
    let report = app
        .load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], false)
        .await
        .expect("load");
    assert_eq!((report.rows_loaded, report.rows_rejected), (1, 8));
    let stored = rejects(&app).await;
    assert_eq!(stored.len(), 8);
    for (line, column, reason, raw) in &stored {
        assert_no_personal_data(&format!("line {line} raw_line"), raw);
        assert_no_personal_data(&format!("line {line} reason"), reason);
        if *line <= 4 {
            assert!(reason.starts_with("field_count"), "{reason}");
            assert!(raw.starts_with("[not shown: "), "{raw}");
            assert_eq!(column, &None);
        } else {
            assert!(column.is_some(), "line {line}: no column");
        }
    }
    // A value that has its column's shape is still quoted and shown.
    let (_, _, reason, raw) = &stored[7];
    assert!(
        reason.contains("\"12,3,4\"") && raw.ends_with(";12,3,4"),
        "{reason} {raw}"
    );
}

/// `privacy = "keep"` on a name, CPF or NIS column is refused when the spec
/// is read, naming the file and the key; the shipped specs all validate.
#[tokio::test]
async fn a_spec_cannot_keep_a_personal_column() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let specs = carga::dataset::load_all(&shipped).expect("shipped jobs/*.toml validate");
    assert!(specs.len() >= 7);

    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(shipped.join("novo-bolsa-familia.toml")).expect("spec");
    for (header, key) in [
        ("NOME FAVORECIDO", "columns[7].privacy"),
        ("CPF FAVORECIDO", "columns[5].privacy"),
    ] {
        let from = format!("header = \"{header}\"\ntype = \"text\"\nprivacy = \"drop\"");
        assert!(text.contains(&from), "{header}");
        let kept = text.replace(
            &from,
            &format!("header = \"{header}\"\ntype = \"text\"\nprivacy = \"keep\""),
        );
        let file = dir.path().join("novo-bolsa-familia.toml");
        std::fs::write(&file, kept).expect("write");
        let err = carga::dataset::find(dir.path(), "novo-bolsa-familia")
            .expect_err("a personal column kept")
            .to_string();
        assert!(
            err.starts_with(&format!("{}: {key}", file.display())),
            "{err}"
        );
    }
}

/// A NUL byte in a field is a reject with its line and column in both
/// `validate` and `run`, instead of "would load" and a bare SQLSTATE 22021.
#[tokio::test]
async fn a_nul_byte_is_a_reject_in_validate_and_run() {
    let mut app = TestApp::new().await;
    let rows = vec![
        nbf_row("202410", "7107", NIS, CPF, "600,00"),
        nbf_row("202410", "7107", OTHER_NIS, "", "1,00\0"),
        nbf_row("202410", "\x007107", OTHER_NIS, "", "1,00"),
        nbf_row("202410", "6291", OTHER_NIS, "", "50,00"),
    ];
    let mut named = rows.clone();
    named[3][7] = "FULANO\0";
    let zip = nbf_zip(&named);

    let validated = validate(&zip).await;
    let output = text(&validated);
    assert_eq!(validated.status.code(), Some(0), "{output}");
    assert!(output.contains("4 read, 1 valid, 3 rejected"), "{output}");
    assert!(output.contains("3 nul_byte"), "{output}");
    assert!(!output.contains('\0'), "{output:?}");

    let urls = app.serve(vec![("nbf.zip", zip)]).await;
    let report = app
        .load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], false)
        .await
        .expect("load");
    assert_eq!(report.outcome, Outcome::Published);
    assert_eq!((report.rows_loaded, report.rows_rejected), (1, 3));
    let stored = rejects(&app).await;
    let got: Vec<(i64, Option<&str>)> = stored
        .iter()
        .map(|(line, column, reason, _)| {
            assert!(reason.starts_with("nul_byte"), "{reason}");
            (*line, column.as_deref())
        })
        .collect();
    assert_eq!(
        got,
        [
            (3, Some("VALOR PARCELA")),
            (4, Some("CÓDIGO MUNICÍPIO SIAFI")),
            (5, Some("NOME FAVORECIDO")),
        ]
    );
}

/// `92233720368547758,07` (near i64::MAX cents) and anything above one
/// payment's limit is a reject in both commands; the total stays right.
#[tokio::test]
async fn amounts_beyond_the_limit_are_rejects_in_validate_and_run() {
    let mut app = TestApp::new().await;
    let zip = nbf_zip(&[
        nbf_row("202410", "7107", NIS, "", "600,00"),
        nbf_row("202410", "7107", OTHER_NIS, "", "92233720368547758,07"),
        nbf_row("202410", "7107", OTHER_NIS, "", "92233720368547758,07"),
        nbf_row("202410", "6291", OTHER_NIS, "", "10.000.000,01"),
        nbf_row("202410", "6291", OTHER_NIS, "", "-10.000.000,01"),
        nbf_row("202410", "6291", OTHER_NIS, "", "10.000.000,00"),
    ]);

    let validated = validate(&zip).await;
    let output = text(&validated);
    assert_eq!(validated.status.code(), Some(0), "{output}");
    assert!(output.contains("6 read, 2 valid, 4 rejected"), "{output}");
    assert!(output.contains("4 value_out_of_range"), "{output}");
    assert!(output.contains("R$ 10.000.600,00"), "{output}");

    let urls = app.serve(vec![("nbf.zip", zip)]).await;
    let report = app
        .load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], false)
        .await
        .expect("load");
    assert_eq!(report.outcome, Outcome::Published);
    assert_eq!((report.rows_loaded, report.rows_rejected), (2, 4));
    assert_eq!(report.value_cents, 1_000_060_000);
    let stored = rejects(&app).await;
    assert!(
        stored
            .iter()
            .all(|(_, _, reason, _)| reason.starts_with("value_out_of_range")),
        "{stored:?}"
    );
}

/// SIAFI `33` is not `0033` (Alta Floresta D'Oeste): a reject, and nothing
/// is counted for that municipality.
#[tokio::test]
async fn a_short_siafi_code_is_a_reject_not_another_municipality() {
    let mut app = TestApp::new().await;
    let urls = app
        .serve(vec![(
            "nbf.zip",
            nbf_zip(&[
                nbf_row("202410", "7107", NIS, "", "600,00"),
                nbf_row("202410", "33", OTHER_NIS, "", "600,00"),
                nbf_row("202410", "033", OTHER_NIS, "", "600,00"),
            ]),
        )])
        .await;
    let report = app
        .load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], false)
        .await
        .expect("load");
    assert_eq!((report.rows_loaded, report.rows_rejected), (1, 2));
    let stored = rejects(&app).await;
    for (_, column, reason, _) in &stored {
        assert_eq!(column.as_deref(), Some("CÓDIGO MUNICÍPIO SIAFI"));
        assert!(reason.starts_with("bad_value"), "{reason}");
    }
    let counted: i64 = app
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM public.beneficiary_data b
             JOIN public.municipalities m ON m.id = b.municipality_id
             WHERE m.ibge_code::text = '1100015'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(counted, 0);
}

/// Every money value carga writes has two decimals, the JSON's
/// `retroactive_value_brl` included.
#[tokio::test]
async fn money_is_stored_with_two_decimals() {
    let mut app = TestApp::new().await;
    let urls = app
        .serve(vec![(
            "nbf.zip",
            nbf_zip(&[
                nbf_row("202409", "7107", NIS, "", "700,00"),
                nbf_row("202410", "7107", OTHER_NIS, "", "0,5"),
            ]),
        )])
        .await;
    app.load("novo-bolsa-familia", "2024-10", &urls["nbf.zip"], false)
        .await
        .expect("load");
    let row = app
        .client()
        .await
        .query_one(
            "SELECT b.extra_data ->> 'retroactive_value_brl', b.total_value_brl::text,
                    (SELECT total_value_brl::text FROM public.program_state_monthly),
                    (SELECT total_value_brl::text FROM public.program_national_monthly),
                    (SELECT total_value_brl::text FROM carga.loads
                     WHERE status = 'published' AND dataset = 'novo-bolsa-familia')
             FROM public.beneficiary_data b",
            &[],
        )
        .await
        .expect("query");
    let values: Vec<String> = (0..5).map(|i| row.get(i)).collect();
    assert_eq!(values, ["700.00", "700.50", "700.50", "700.50", "700.50"]);
}

/// A total its `numeric` column cannot hold, or a tally that overflowed in
/// the worker, fails the aggregates with SQLSTATE 22003 and a message
/// saying which total, before any aggregate row is written.
#[tokio::test]
async fn totals_beyond_their_columns_fail_naming_the_total() {
    use carga::engine::aggregate::{Counted, MAX_CENTS_NUMERIC_15_2, MunicipalTally, prepare};

    let app = TestApp::new().await;
    let mut client = app.client().await;
    let ids: Vec<i32> = client
        .query(
            "SELECT id FROM public.municipalities WHERE ibge_code::text IN ('3550308', '3509502')",
            &[],
        )
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 2, "São Paulo and Campinas");
    let tally = |cents: i64, overflowed: bool| MunicipalTally {
        payments: 1,
        cents,
        overflowed,
        ..MunicipalTally::default()
    };
    let half = MAX_CENTS_NUMERIC_15_2 / 2 + 1;
    for (municipal, want) in [
        (vec![(ids[0], tally(MAX_CENTS_NUMERIC_15_2, false))], None),
        (
            vec![(ids[0], tally(MAX_CENTS_NUMERIC_15_2 + 1, false))],
            Some("municipality's or state's total"),
        ),
        // each municipality fits, their state (São Paulo) does not
        (
            vec![(ids[0], tally(half, false)), (ids[1], tally(half, false))],
            Some("municipality's or state's total"),
        ),
        (
            vec![(ids[0], tally(-MAX_CENTS_NUMERIC_15_2 - 1, false))],
            Some("municipality's or state's total"),
        ),
        (vec![(ids[0], tally(1, true))], Some("overflowed")),
    ] {
        let tx = client.transaction().await.expect("tx");
        let counted = Counted {
            municipal: &municipal,
            states: &[],
            distinct_beneficiaries: 0,
        };
        let got = prepare(&tx, &counted).await;
        match want {
            None => assert!(got.is_ok(), "{got:?}"),
            Some(message) => {
                let err = got.expect_err(message);
                let db = err.as_db_error().expect("a database error");
                assert_eq!(
                    db.code(),
                    &tokio_postgres::error::SqlState::NUMERIC_VALUE_OUT_OF_RANGE
                );
                assert!(db.message().contains(message), "{}", db.message());
            }
        }
        tx.rollback().await.expect("rollback");
    }
}
