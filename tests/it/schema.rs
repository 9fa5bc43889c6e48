//! Migrations: adopting the API's existing tables, and two processes
//! migrating one database at once.

use crate::common;

use std::sync::Arc;

use carga::dataset::{self, Period};
use carga::engine::pipeline::{self, LoadRequest};
use carga::engine::source::Progress;
use common::{EmptyDb, NBF_COLUMNS, NIS_KEY, nbf_row, portal_csv, zip_bytes};
use secrecy::SecretString;

#[tokio::test]
async fn migrations_adopt_the_api_schema_without_rewriting_it() {
    let db = EmptyDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(include_str!("fixtures/api_schema.sql"))
        .await
        .expect("API schema");
    let settings = common::settings_for(&db.url);
    let target = carga::db::resolve(&settings).await.expect("resolve");
    let applied = carga::db::migrate(&target).await.expect("migrate");
    assert_eq!(applied.len(), carga::db::migration_count());
    assert!(carga::db::migrate(&target).await.expect("again").is_empty());

    // The API's columns and types are untouched; the SIAFI code was added.
    let columns = |table: &'static str| {
        let client = &client;
        async move {
            client
                .query(
                    "SELECT column_name::text || ':' || data_type FROM information_schema.columns
                     WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                    &[&table],
                )
                .await
                .expect("columns")
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    let municipalities = columns("municipalities").await;
    assert!(municipalities.contains(&"geometry:bytea".to_string()));
    assert!(municipalities.contains(&"population:integer".to_string()));
    assert_eq!(
        municipalities.last().map(String::as_str),
        Some("siafi_code:character varying")
    );
    assert!(
        columns("beneficiary_data")
            .await
            .contains(&"extra_data:json".to_string())
    );
    let alembic: String = client
        .query_one("SELECT version_num FROM alembic_version", &[])
        .await
        .expect("alembic")
        .get(0);
    assert_eq!(alembic, "006");

    // Reference data and a load work on it, keeping what the API set.
    let ctx = db.context().await;
    let spec = dataset::find(&ctx.settings.load.jobs_dir, "municipios").expect("spec");
    carga::engine::snapshot::reference::run(&ctx, &spec, None, false, std::future::pending())
        .await
        .expect("reference");
    let sp: (i32, Option<i32>, Option<String>) = {
        let r = client
            .query_one(
                "SELECT id, population, siafi_code FROM municipalities WHERE ibge_code = '3550308'",
                &[],
            )
            .await
            .expect("sp");
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(sp, (1, Some(12_325_232), Some("7107".into())));

    let file = zip_bytes(
        "202410_NovoBolsaFamilia.csv",
        &portal_csv(
            &NBF_COLUMNS,
            &[nbf_row("202410", "7107", "10000000001", "", "600,00")],
        ),
    );
    let server = carga::service::http::files::FileServer::start(
        std::collections::HashMap::from([("f.zip".to_string(), bytes::Bytes::from(file))]),
        0,
    )
    .await
    .expect("server");
    // The register's latest month at or before the load's: 4 families.
    client
        .execute(
            "INSERT INTO cadunico_data (municipality_id, reference_date, total_families)
             VALUES (1, '2024-08-01', 9), (1, '2024-09-01', 4), (1, '2024-11-01', 1)",
            &[],
        )
        .await
        .expect("cadunico_data");
    let request = LoadRequest {
        spec: dataset::find(&ctx.settings.load.jobs_dir, "novo-bolsa-familia").expect("spec"),
        period: Period::parse("2024-10").expect("period"),
        url: Some(server.url("f.zip")),
        force: false,
        redirect_guard: None,
    };
    pipeline::run(
        &ctx,
        &request,
        Some(SecretString::from(NIS_KEY)),
        Arc::new(Progress::default()),
        std::future::pending(),
    )
    .await
    .expect("load");
    let row = client
        .query_one(
            "SELECT b.id, b.total_families, b.total_value_brl::text, b.coverage_rate::text,
                    b.extra_data::jsonb ->> 'payments', p.name
             FROM beneficiary_data b JOIN programs p ON p.id = b.program_id",
            &[],
        )
        .await
        .expect("row");
    assert_eq!(
        row.get::<_, i32>(0),
        1,
        "the API's row was updated in place"
    );
    assert_eq!(row.get::<_, Option<i32>>(1), Some(1));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("600.00"));
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("0.2500"),
        "coverage_rate recomputed: 1 family over the register's 4 of 2024-09 (the latest month not after 2024-10)"
    );
    assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("1"));
    assert_eq!(row.get::<_, String>(5), "Programa Bolsa Família (API)");
    ctx.pool.close();
}

#[tokio::test]
async fn concurrent_migrations_apply_once() {
    let db = EmptyDb::new().await;
    let settings = common::settings_for(&db.url);
    let target = carga::db::resolve(&settings).await.expect("resolve");
    let (a, b) = tokio::join!(carga::db::migrate(&target), carga::db::migrate(&target));
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(
        a.len() + b.len(),
        carga::db::migration_count(),
        "applied once: {a:?} {b:?}"
    );
    let n: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM carga.schema_history", &[])
        .await
        .expect("history")
        .get(0);
    assert_eq!(n as usize, carga::db::migration_count());
}

/// With no DATABASE_URL and no system server to use, carga initialises and
/// starts a private cluster from the system's binaries (as root, through
/// `runuser -u postgres`), creates its database and migrates it.
#[tokio::test]
async fn a_private_cluster_is_started_when_no_server_is_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data = dir.path().join("pgdata");
    let mut settings = common::settings_for("unused");
    settings.database_url = None;
    settings.database.use_system_server = false;
    settings.database.local_cluster_dir = data.clone();
    settings.database.local_cluster_port = 55_000 + (std::process::id() % 1000) as u16;
    let target = carga::db::resolve(&settings)
        .await
        .expect("private cluster");
    assert!(
        target.description.contains("private cluster"),
        "{}",
        target.description
    );
    carga::db::migrate(&target).await.expect("migrate");
    // Resolving again reuses the running cluster.
    let again = carga::db::resolve(&settings).await.expect("again");
    let client = carga::db::connect(&again.config, &again.tls, "private")
        .await
        .expect("connect");
    let n: i64 = client
        .query_one("SELECT count(*) FROM carga.schema_history", &[])
        .await
        .expect("history")
        .get(0);
    assert_eq!(n as usize, carga::db::migration_count());
    drop(client);
    carga::db::stop_private_cluster(&data).expect("stop");
}
