//! One load: its ledger entry, stage timings as a bar, and the first
//! rejects (redacted lines only, as stored).

use maud::{Markup, PreEscaped, html};

use super::{Page, brl, count, layout};
use crate::load::ledger::LoadView;

/// The stage timings as one horizontal stacked bar (inline SVG).
pub fn stages(stage_seconds: &serde_json::Value) -> Markup {
    let stages: Vec<(String, f64)> = stage_seconds
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let total: f64 = stages.iter().map(|s| s.1).sum::<f64>().max(0.001);
    let colours = ["#1e88e5", "#43a047", "#fb8c00", "#8e24aa"];
    let mut x = 0.0;
    let mut svg =
        String::from(r#"<svg width="480" height="34" role="img" aria-label="stage timings">"#);
    for (i, (name, s)) in stages.iter().enumerate() {
        let name = maud::html! { (name) }.into_string(); // escaped
        let w = s / total * 480.0;
        svg.push_str(&format!(
            r##"<rect x="{x:.1}" y="0" width="{w:.1}" height="16" fill="{}"><title>{name}: {s:.2} s</title></rect><text x="{:.1}" y="29">{name} {s:.2}s</text>"##,
            colours[i % colours.len()],
            x + 2.0
        ));
        x += w;
    }
    svg.push_str("</svg>");
    html! { (PreEscaped(svg)) }
}

pub fn page(load: &LoadView, csrf: &str) -> Markup {
    let n = |v: Option<i64>| v.map_or("-".to_string(), count);
    let body = html! {
        h1 { "Load " (load.id) " — " (load.dataset) " " (load.period.as_deref().unwrap_or("")) }
        table {
            tr { th { "status" } td class=[(load.status == "failed").then_some("error")] { (load.status) @if load.forced { " (forced)" } } }
            @if let (Some(code), Some(error)) = (&load.error_code, &load.error) { tr { th { "error" } td.error { (code) ": " (error) } } }
            tr { th { "source" } td { (load.source_url) } }
            tr { th { "ETag / Last-Modified" } td { (load.etag.as_deref().unwrap_or("-")) " / " (load.last_modified.as_deref().unwrap_or("-")) } }
            tr { th { "SHA-256" } td { code { (load.sha256.as_deref().unwrap_or("-")) } } }
            tr { th { "bytes" } td { (n(load.bytes_downloaded)) " downloaded, " (n(load.bytes_decompressed)) " decompressed" } }
            tr { th { "rows" } td { (n(load.rows_read)) " read, " (n(load.rows_loaded)) " loaded, " (n(load.rows_rejected)) " rejected" } }
            tr { th { "beneficiaries" } td { (n(load.distinct_beneficiaries)) " distinct" } }
            tr { th { "value" } td.money { (load.value_cents.map_or("-".to_string(), brl)) } }
            tr { th { "started / finished" } td { (load.started_at.format("%Y-%m-%d %H:%M:%S UTC")) " / " (load.finished_at.map(|t| t.format("%H:%M:%S UTC").to_string()).unwrap_or_default()) } }
        }
        h2 { "Stages" }
        (stages(&load.stage_seconds))
        h2 { "First rejects" }
        @if load.rejects.is_empty() { p.muted { "None stored." } }
        table {
            @if !load.rejects.is_empty() { tr { th { "line" } th { "column" } th { "reason" } th { "line (redacted)" } } }
            @for r in &load.rejects {
                tr { td { (r.line) } td { (r.column.as_deref().unwrap_or("")) } td { (r.reason) } td { pre { (r.raw_line.as_deref().unwrap_or("")) } } }
            }
        }
    };
    layout(&format!("Load {}", load.id), Page::Other, csrf, body)
}
