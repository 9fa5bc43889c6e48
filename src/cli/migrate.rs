//! `carga migrate`: create or upgrade the schema, and say when it created
//! the dashboard API's tables instead of adopting them.

use super::CliResult;
use crate::config::Settings;

pub(crate) async fn run(settings: Settings) -> CliResult {
    let target = super::resolve(&settings).await?;
    let migration = super::migrate(&target).await?;
    if migration.applied.is_empty() {
        println!("schema up to date ({})", target.description);
    } else {
        for m in &migration.applied {
            println!("applied {m}");
        }
    }
    println!("database connection: {}", migration.encryption);
    if !migration.created_api_tables.is_empty() {
        println!("{}", created_api_tables_note(&migration.created_api_tables));
    }
    Ok(())
}

/// What creating the API-facing tables means for the dashboard API.
pub(crate) fn created_api_tables_note(tables: &[&str]) -> String {
    format!(
        "created the API-facing tables {} (they did not exist, so carga created them instead of adopting the API's). \
         The dashboard API's own `alembic upgrade head` will now fail on them (relation already exists): \
         run the API's migrations before carga's, or, on this database, mark them applied with `alembic stamp head` \
         (see README, \"Pointing carga at the API's database\")",
        tables.join(", ")
    )
}
