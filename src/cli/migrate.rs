//! `carga migrate`: create or upgrade the schema.

use anyhow::Context as _;

use super::CliResult;
use crate::config::Settings;

pub async fn run(settings: Settings) -> CliResult {
    let target = crate::db::resolve(&settings)
        .await
        .context("failed to reach the database")?;
    let applied = crate::db::migrate(&target.config)
        .await
        .context("failed to migrate the schema")?;
    if applied.is_empty() {
        println!("schema up to date ({})", target.description);
    } else {
        for m in applied {
            println!("applied {m}");
        }
    }
    Ok(())
}
