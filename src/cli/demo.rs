//! `carga demo`: the README's first command. Migrates, loads the reference
//! data, generates a Portal-format ZIP (synthetic people only), serves it
//! from a loopback HTTP server so the real download path runs, loads it and
//! prints the top rows of the aggregates. Uses a fixed, public demo NIS key.
//!
//! It must never touch real data: it runs in its own database
//! (`database.demo_database`, default `carga_demo`, created if missing) on
//! the server `DATABASE_URL` names (or the local one), never in the database
//! the URL names, and refuses to run when that database holds a published
//! load the demo did not make.

use std::collections::HashMap;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use secrecy::SecretString;

use super::{CliResult, brl};
use crate::config::Settings;
use crate::dataset::{self, Period};
use crate::engine::pipeline::LoadRequest;
use crate::service::http::files::FileServer;

/// Public on purpose: demo data only. Real loads need CARGA_NIS_KEY. As long
/// as the minimum a real key must have (`config::MIN_NIS_KEY_CHARS`).
const DEMO_NIS_KEY: &str = "carga-demo-nis-key:public,for-synthetic-data-only";

/// The demo's period and file.
const DEMO_YEAR: u16 = 2024;
const DEMO_MONTH: u8 = 10;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Rows in the generated file.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) rows: u64,
}

pub(crate) async fn run(settings: Settings, args: DemoArgs) -> CliResult {
    if args.rows == 0 {
        return Err(super::usage(anyhow::anyhow!("--rows must be at least 1")));
    }
    let cancel = super::cancel_on_signal();
    let database = &settings.database.demo_database;
    let target = crate::db::resolve_separate(&settings, database)
        .await
        .map_err(|e| {
            super::db_failure(
                e,
                &format!("failed to open or create the demo database {database}"),
            )
        })?;
    println!(
        "demo database: {}{} (the demo never writes anywhere else)",
        target.description,
        if target.created { ", created" } else { "" }
    );
    let ctx = super::connect_to(&settings, &target).await?;
    refuse_real_data(&ctx, &target.description).await?;
    let reference_spec =
        dataset::find(&settings.load.jobs_dir, "municipios").map_err(super::usage)?;
    let reference = super::run::load_snapshot(&ctx, &reference_spec, None, false, &cancel)
        .await
        .map_err(|failure| match failure {
            super::Failure::Failed(e) => {
                super::Failure::Failed(e.context("failed to load the reference data"))
            }
            usage => usage,
        })?;
    println!("reference data: {}", reference.summary);
    let period =
        Period::new(DEMO_YEAR, DEMO_MONTH).ok_or_else(|| anyhow::anyhow!("bad demo period"))?;
    let name = format!("{:06}_NovoBolsaFamilia.zip", period.yyyymm());
    let rows = args.rows;
    let zip = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut cursor = std::io::Cursor::new(Vec::new());
        crate::engine::sample::write_zip(
            &mut cursor,
            period,
            rows,
            2024,
            &name.replace(".zip", ".csv"),
        )?;
        Ok(cursor.into_inner())
    })
    .await
    .context("generator failed")?
    .context("failed to generate the sample")?;
    let file_name = format!("{:06}_NovoBolsaFamilia.zip", period.yyyymm());
    let server = FileServer::start(HashMap::from([(file_name.clone(), Bytes::from(zip))]), 0)
        .await
        .context("failed to start the loopback file server")?;
    println!(
        "serving a generated sample ({rows} rows, synthetic people) at {}",
        server.url(&file_name)
    );
    println!(
        "NIS hashing uses the fixed demo key (public, demo only); real loads need CARGA_NIS_KEY"
    );
    let spec =
        dataset::find(&settings.load.jobs_dir, "novo-bolsa-familia").map_err(super::usage)?;
    let request = LoadRequest {
        spec,
        period,
        url: Some(server.url(&file_name)),
        force: true,
        redirect_guard: None,
    };
    let report = super::run::run_with_progress(
        &ctx,
        &request,
        Some(SecretString::from(DEMO_NIS_KEY)),
        &cancel,
    )
    .await?;
    super::run::print_report(&request, &report);
    print_aggregates(&ctx, period).await?;
    Ok(())
}

/// Refuses a database holding a published load the demo did not make: the
/// builtin reference data, or the demo month served from loopback.
async fn refuse_real_data(ctx: &crate::engine::pipeline::Context, description: &str) -> CliResult {
    let client = ctx.pool.get().await.map_err(anyhow::Error::from)?;
    let demo_source =
        format!("http://127.0.0.1:%/{DEMO_YEAR:04}{DEMO_MONTH:02}_NovoBolsaFamilia.zip");
    let demo_period =
        chrono::NaiveDate::from_ymd_opt(i32::from(DEMO_YEAR), u32::from(DEMO_MONTH), 1);
    let foreign =
        crate::engine::load::ledger::foreign_to_demo(&**client, demo_period, &demo_source)
            .await
            .map_err(anyhow::Error::from)?;
    if foreign > 0 {
        return Err(super::usage(anyhow::anyhow!(
            "the demo database {description} holds {foreign} published load(s) the demo did not make; \
             the demo would overwrite them with synthetic rows, so it refuses. \
             Set database.demo_database (CARGA__DATABASE__DEMO_DATABASE) to a database of its own"
        )));
    }
    Ok(())
}

async fn print_aggregates(ctx: &crate::engine::pipeline::Context, period: Period) -> CliResult {
    use crate::engine::aggregate::read;
    let client = ctx.pool.get().await.map_err(anyhow::Error::from)?;
    let (program, date) = ("BOLSA_FAMILIA", period.first_day());
    let national = read::national(&**client, program, date)
        .await
        .map_err(anyhow::Error::from)?;
    println!("\nprogram_national_monthly, BOLSA_FAMILIA {period}:");
    println!(
        "  {} families, {} payments, {} in {} states and {} municipalities",
        national.families,
        national.payments,
        brl(national.value_cents),
        national.states,
        national.municipalities
    );
    println!("\nprogram_state_monthly, top 5 states by value:");
    for row in read::top_states(&**client, program, date, 5)
        .await
        .map_err(anyhow::Error::from)?
    {
        println!(
            "  {:<3} {:>8} families {:>22}  ({} municipalities)",
            row.abbreviation,
            row.families,
            brl(row.value_cents),
            row.municipalities
        );
    }
    println!("\nbeneficiary_data, top 10 municipalities by value:");
    for row in read::top_municipalities(&**client, program, date, 10)
        .await
        .map_err(anyhow::Error::from)?
    {
        println!(
            "  {:<32} {:<3} {} {:>7} families {:>18}",
            row.name,
            row.state,
            row.ibge_code,
            row.families,
            brl(row.value_cents)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_key_is_as_long_as_a_real_key_must_be() {
        crate::config::check_nis_key(super::DEMO_NIS_KEY).expect("demo key long enough");
    }
}
