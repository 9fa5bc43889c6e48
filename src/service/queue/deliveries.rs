//! Webhook deliveries in `carga.webhook_deliveries`: which job a signed
//! delivery (sender, `webhook-id`) resolved to, so a replayed delivery
//! returns its first job. The caller records a delivery in the same
//! transaction as its [`super::enqueue`]; rows go with their job
//! (`ON DELETE CASCADE`, so [`super::prune`] removes them). This file
//! never verifies a signature (that is `http/webhook.rs`).

use tokio_postgres::GenericClient;

use super::Result;

/// The job a delivery from `sender` with this `webhook_id` resolved to,
/// when it was recorded before.
pub(crate) async fn delivered_job(
    client: &impl GenericClient,
    sender: &str,
    webhook_id: &str,
) -> Result<Option<i64>> {
    let row = client
        .query_opt(
            "SELECT job_id FROM carga.webhook_deliveries WHERE sender = $1 AND webhook_id = $2",
            &[&sender, &webhook_id],
        )
        .await?;
    Ok(row.map(|r| r.get("job_id")))
}

/// Records that the delivery resolved to `job_id`. Returns false when the
/// same delivery was recorded first by a request that raced this one
/// (nothing written: its job is the answer, see [`delivered_job`]).
pub(crate) async fn record_delivery(
    client: &impl GenericClient,
    sender: &str,
    webhook_id: &str,
    job_id: i64,
) -> Result<bool> {
    let row = client
        .query_opt(
            "INSERT INTO carga.webhook_deliveries (sender, webhook_id, job_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING RETURNING job_id",
            &[&sender, &webhook_id, &job_id],
        )
        .await?;
    Ok(row.is_some())
}
