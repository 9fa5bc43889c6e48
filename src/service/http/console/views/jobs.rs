//! The jobs page: running jobs with live progress (bytes, rows, rate, ETA,
//! stage), queued and retrying ones with their next attempt, recent
//! failures with code and message; cancel and retry buttons.

use maud::{Markup, html};

use super::{Page, layout};
use crate::service::queue::{JobState, JobView, ProgressView};

fn button(action: &str, id: i64, label: &str, csrf: &str) -> Markup {
    html! {
        form.inline method="post" action={"/console/jobs/" (id) "/" (action)} {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" data-action=(action) { (label) }
        }
    }
}

/// A running job's figures, as its row shows them and the live updates
/// (`/console/jobs/live`) replace them.
pub(crate) fn figures(p: &ProgressView) -> String {
    crate::money::download_figures(
        p.bytes,
        p.percent.map(|percent| (p.total_bytes, percent)),
        p.rows,
        p.rate,
        p.eta_seconds,
    ) + &crate::money::fetched_ahead(p.ahead)
}

pub(crate) fn page(jobs: &[JobView], csrf: &str, message: Option<&str>) -> Markup {
    let running: Vec<&JobView> = jobs
        .iter()
        .filter(|j| j.state == JobState::Running)
        .collect();
    let waiting: Vec<&JobView> = jobs.iter().filter(|j| j.state.is_pending()).collect();
    let finished: Vec<&JobView> = jobs.iter().filter(|j| j.state.is_finished()).collect();
    let body = html! {
        h1 { "Jobs" }
        @if let Some(m) = message { p { (m) } }
        h2 { "Running" }
        @if running.is_empty() { p.muted { "Nothing is running." } }
        table {
            @for j in &running {
                @let p = j.progress_view();
                tr data-live-job=(j.id) {
                    td { "#" (j.id) } td { (j.dataset) " " (j.period) }
                    td data-state { (j.state.as_str()) " · " (p.stage) }
                    td { progress.bar data-bar max="100" value=(format!("{:.1}", p.percent.unwrap_or(0.0))) { (format!("{:.0}", p.percent.unwrap_or(0.0))) "%" } }
                    td data-figures { (figures(&p)) }
                    td { (button("cancel", j.id, "Cancel", csrf)) }
                }
            }
        }
        h2 { "Waiting" }
        @if waiting.is_empty() { p.muted { "No job is waiting." } }
        table {
            @for j in &waiting {
                tr {
                    td { "#" (j.id) } td { (j.dataset) " " (j.period) } td { (j.state.as_str()) }
                    td { "next attempt " (j.scheduled_at.format("%Y-%m-%d %H:%M:%S UTC")) " · attempt " (j.attempt) "/" (j.max_attempts) }
                    td.error { (j.error_code.as_deref().unwrap_or("")) }
                    td { (button("cancel", j.id, "Cancel", csrf)) }
                }
            }
        }
        h2 { "Recent" }
        table {
            tr { th { "job" } th { "month" } th { "state" } th { "finished" } th { "detail" } th {} }
            @for j in &finished {
                tr data-job=(j.id) data-job-state=(j.state.as_str()) {
                    td { "#" (j.id) } td { (j.dataset) " " (j.period) }
                    td class=[(j.state != JobState::Succeeded).then_some("error")] { (j.state.as_str()) }
                    td { (j.finished_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()) }
                    td {
                        @if let (Some(code), Some(error)) = (&j.error_code, &j.error) { span.error { (code) } ": " (error) }
                        @else if let Some(load) = j.load_id { a href={"/console/loads/" (load)} { (j.outcome.as_deref().unwrap_or("load")) " (load " (load) ")" } }
                    }
                    td { @if j.state != JobState::Succeeded { (button("retry", j.id, "Retry", csrf)) } }
                }
            }
        }
    };
    layout("Jobs", Page::Jobs, csrf, body)
}
