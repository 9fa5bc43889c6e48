//! The real binary: exit codes, one-line errors, summaries, and secrets that
//! never reach the output.

use crate::common;

use std::process::Output;

use common::{NBF_COLUMNS, NIS_KEY, TestApp, nbf_row, portal_csv, zip_bytes};

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

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn fixture() -> Vec<u8> {
    zip_bytes(
        "202410_NovoBolsaFamilia.csv",
        &portal_csv(
            &NBF_COLUMNS,
            &[
                nbf_row("202410", "7107", "10000000001", "", "600,00"),
                nbf_row("202410", "9999", "10000000002", "", "1,00"),
            ],
        ),
    )
}

#[tokio::test]
async fn bad_usage_exits_2() {
    let out = carga(&["run", "novo-bolsa-familia", "--period", "2024-13"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(text(&out).1.contains("not YYYY-MM"));
    let out = carga(
        &["run", "x\"; DROP TABLE jobs;--", "--period", "2024-10"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("unknown dataset"), "{:?}", text(&out));
    let out = carga(&["frobnicate"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    // A real load refuses to start without the NIS key.
    let out = carga(&["run", "novo-bolsa-familia", "--period", "2024-10"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("CARGA_NIS_KEY"), "{:?}", text(&out));
}

#[tokio::test]
async fn run_publishes_then_skips_and_failures_exit_1() {
    let mut app = TestApp::new().await;
    let urls = app.serve(vec![("f.zip", fixture())]).await;
    // The API's URL form, with a password that must never be printed.
    let db_url = app.url.replace(
        "postgres://postgres@",
        "postgresql+asyncpg://postgres:CANARY-PW@",
    );
    let env = [
        ("DATABASE_URL", db_url.as_str()),
        ("CARGA_NIS_KEY", NIS_KEY),
    ];
    let args = ["run", "novo-bolsa-familia", "--period", "2024-10", "--url"];

    let url = format!("{}?token=CANARY-TOKEN", urls["f.zip"]);
    let out = carga(&[&args[..], &[url.as_str()]].concat(), &env).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("published"), "{stdout}");
    assert!(stdout.contains("2 read, 1 loaded, 1 rejected"), "{stdout}");
    assert!(stdout.contains("R$ 600,00"), "{stdout}");
    for canary in ["CANARY-PW", "CANARY-TOKEN", NIS_KEY, "10000000001"] {
        assert!(
            !stdout.contains(canary) && !stderr.contains(canary),
            "{canary} leaked:\n{stdout}\n{stderr}"
        );
    }

    let out = carga(&[&args[..], &[url.as_str()]].concat(), &env).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).0.contains("unchanged"), "{:?}", text(&out));

    let missing = urls["f.zip"].replace("f.zip", "202411.zip?token=CANARY-TOKEN");
    let out = carga(
        &[
            "run",
            "novo-bolsa-familia",
            "--period",
            "2024-11",
            "--url",
            &missing,
        ],
        &env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("carga: ") && last.contains("404"),
        "{stderr}"
    );
    assert!(!stderr.contains("CANARY"), "{stderr}");
}

#[tokio::test]
async fn validate_prints_the_reject_report_without_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("202410_NovoBolsaFamilia.zip");
    std::fs::write(&path, fixture()).expect("write");
    let out = carga(
        &[
            "validate",
            "novo-bolsa-familia",
            path.to_str().expect("path"),
        ],
        &[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("2 read, 1 valid, 1 rejected"), "{stdout}");
    assert!(
        stdout.contains("line 3") && stdout.contains("unknown municipality code \"9999\""),
        "{stdout}"
    );
    assert!(!stdout.contains("10000000002"), "NIS printed: {stdout}");
}

#[tokio::test]
async fn datasets_lists_every_spec() {
    let app = TestApp::new().await;
    let out = carga(&["datasets"], &[("DATABASE_URL", app.url.as_str())]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for name in [
        "novo-bolsa-familia",
        "bolsa-familia-pagamentos",
        "auxilio-brasil",
        "bpc",
        "seguro-defeso",
        "garantia-safra",
        "municipios",
    ] {
        assert!(stdout.contains(name), "{name} missing:\n{stdout}");
    }
    assert!(stdout.contains("America/Sao_Paulo"));
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_string()
    };
    let bf = line("bolsa-familia-pagamentos");
    assert!(
        bf.contains(" payments ") && bf.contains(" portal,old-portal "),
        "{bf}"
    );
    assert!(line("municipios").contains(" reference "), "{stdout}");
    assert!(line("bpc").contains(" default "), "one layout: {stdout}");
}
