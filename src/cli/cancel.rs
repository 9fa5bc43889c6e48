//! `carga cancel <id>`: a waiting job is cancelled at once; a running one
//! is asked to stop (its worker cancels the load and its server-side
//! statement on the next heartbeat, and the job ends `cancelled`).

use clap::Args;

use super::CliResult;
use crate::config::Settings;
use crate::service::queue;

#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    pub(crate) id: i64,
}

pub(crate) async fn run(settings: Settings, args: CancelArgs) -> CliResult {
    let client = super::database(&settings).await?;
    let state = queue::cancel(&**client, args.id)
        .await
        .map_err(super::job::queue_failure)?;
    println!("{state}");
    Ok(())
}
