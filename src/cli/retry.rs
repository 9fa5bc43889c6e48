//! `carga retry <id>`: run a failed or cancelled job again (with a fresh
//! budget of attempts), or a retryable one now. Prints the job id that will
//! run (another job's, when one of the same month is already pending).

use clap::Args;

use super::CliResult;
use crate::config::Settings;
use crate::service::queue;

#[derive(Debug, Args)]
pub(crate) struct RetryArgs {
    pub(crate) id: i64,
}

pub(crate) async fn run(settings: Settings, args: RetryArgs) -> CliResult {
    let client = super::database(&settings).await?;
    let id = queue::retry(
        &**client,
        args.id,
        settings.queue.max_attempts,
        &queue::Clock::database(),
    )
    .await
    .map_err(super::job::queue_failure)?;
    println!("{id}");
    Ok(())
}
