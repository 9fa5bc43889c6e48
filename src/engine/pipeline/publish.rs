//! The publish: the last steps of the load transaction, after the guards
//! passed. Rejects, aggregates (checked against the stream), the swap of
//! the leaf, the ledger row, the caller's step, COMMIT.

use std::time::Instant;

use super::error::LoadError;
use super::parser::ParseSummary;
use super::{LoadReport, PublishStep, guards};
use crate::dataset::{Period, Spec};
use crate::engine::aggregate;
use crate::engine::load::{self, ledger};
use crate::engine::source::{DownloadSummary, Progress, SourceMeta};

/// Everything the publish writes.
pub(super) struct Publish<'a> {
    pub(crate) spec: &'a Spec,
    pub(crate) period: Period,
    pub(crate) program_id: i32,
    pub(crate) program_code: &'a str,
    pub(crate) paid_per_family: bool,
    pub(crate) load_id: i64,
    pub(crate) leaf: &'a str,
    pub(crate) meta: &'a SourceMeta,
    pub(crate) download: &'a DownloadSummary,
    pub(crate) summary: &'a ParseSummary,
    pub(crate) stream_seconds: f64,
    pub(crate) step: Option<&'a dyn PublishStep>,
}

impl Publish<'_> {
    /// Runs the steps and commits; on any error the transaction rolls back
    /// on drop and the published period stays as it was.
    pub(crate) async fn run(
        self,
        tx: deadpool_postgres::Transaction<'_>,
        progress: &Progress,
        report: &mut LoadReport,
    ) -> Result<(), LoadError> {
        let summary = self.summary;
        ledger::insert_rejects(&*tx, self.load_id, &summary.rejects).await?;

        progress.set_stage("aggregate");
        let aggregate_started = Instant::now();
        let data_source = format!("portal_transparencia:{}", self.spec.dataset);
        let scope = aggregate::Scope {
            program_id: self.program_id,
            reference_date: self.period.first_day(),
            load_id: self.load_id,
            paid_per_family: self.paid_per_family,
            data_source: &data_source,
        };
        let counted = aggregate::Counted {
            municipal: &summary.municipal,
            states: &summary.states,
            distinct_beneficiaries: summary.distinct_beneficiaries,
        };
        aggregate::prepare(&tx, &counted).await?;
        aggregate::municipal(&tx, &scope).await?;
        aggregate::state(&tx, &scope).await?;
        let totals = aggregate::national(&tx, &scope, summary.distinct_beneficiaries).await?;
        guards::check_totals(&totals, summary)?;
        let aggregate_seconds = aggregate_started.elapsed().as_secs_f64();

        progress.set_stage("publish");
        let publish_started = Instant::now();
        report.replaced_load = load::swap(&tx, self.program_code, self.period, self.leaf).await?;
        let stage_pairs = [
            ("stream", self.stream_seconds),
            ("aggregate", aggregate_seconds),
            ("publish", publish_started.elapsed().as_secs_f64()),
        ];
        ledger::publish(
            &*tx,
            self.load_id,
            self.program_code,
            self.period,
            &ledger::PublishRecord {
                etag: self.meta.etag.clone(),
                last_modified: self.meta.last_modified.clone(),
                sha256: self.download.sha256.to_vec(),
                bytes_downloaded: self.download.bytes as i64,
                bytes_decompressed: summary.decompressed_bytes as i64,
                rows_read: summary.rows_read as i64,
                rows_loaded: summary.rows_loaded as i64,
                rows_rejected: summary.rows_rejected as i64,
                distinct_beneficiaries: totals.distinct_beneficiaries,
                value_cents: totals.value_cents,
                partition_name: self.leaf.to_string(),
                stage_seconds: ledger::stage_seconds(&stage_pairs),
                layout: summary.layout.clone(),
            },
        )
        .await?;
        if let Some(step) = self.step {
            step.before_commit(&tx, self.load_id).await?;
        }
        tx.commit().await?;
        report.stage_seconds = stage_pairs.to_vec();
        report.stage_seconds[2].1 = publish_started.elapsed().as_secs_f64();
        report.distinct_beneficiaries = totals.distinct_beneficiaries;
        report.municipalities = totals.municipalities;
        report.value_cents = totals.value_cents;
        Ok(())
    }
}
