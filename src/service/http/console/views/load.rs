//! One load: its ledger entry, stage timings as a bar, and the first
//! rejects (redacted lines only, as stored).

use maud::{Markup, PreEscaped, html};

use super::{Page, brl, count, layout};
use crate::engine::load::ledger::{LedgerStatus, LoadView};
use crate::engine::source::Progress;

/// The stages in the order a load runs them ([`Progress::STAGES`]: the
/// ledger stores `stream`, `aggregate`, `publish`); a name the pipeline
/// does not list goes last, alphabetically.
fn in_pipeline_order(stage_seconds: &serde_json::Value) -> Vec<(String, f64)> {
    let mut stages: Vec<(String, f64)> = stage_seconds
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let rank = |name: &str| {
        Progress::STAGES
            .iter()
            .position(|s| *s == name)
            .unwrap_or(Progress::STAGES.len())
    };
    stages.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then_with(|| a.0.cmp(&b.0)));
    stages
}

/// The stage timings as one horizontal stacked bar (inline SVG, a tooltip
/// per segment) and a legend under it: each stage's colour, name, seconds
/// and share, in pipeline order. The names are in the legend, not on the
/// segments, so a short stage's label never overlaps its neighbour's.
pub(crate) fn stages(stage_seconds: &serde_json::Value) -> Markup {
    let stages = in_pipeline_order(stage_seconds);
    let total: f64 = stages.iter().map(|s| s.1).sum::<f64>().max(0.001);
    let colours = ["#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#6d4c41"];
    let colour = |i: usize| colours[i % colours.len()];
    let mut x = 0.0;
    let mut svg =
        String::from(r#"<svg width="480" height="18" role="img" aria-label="stage timings">"#);
    for (i, (name, s)) in stages.iter().enumerate() {
        let name = maud::html! { (name) }.into_string(); // escaped
        let w = s / total * 480.0;
        svg.push_str(&format!(
            r##"<rect x="{x:.1}" y="0" width="{w:.1}" height="16" fill="{}"><title>{name}: {s:.2} s ({:.0} %)</title></rect>"##,
            colour(i),
            s / total * 100.0
        ));
        x += w;
    }
    svg.push_str("</svg>");
    html! {
        (PreEscaped(svg))
        ul.stages {
            @for (i, (name, s)) in stages.iter().enumerate() {
                li data-stage=(name) {
                    // An SVG fill, not a style attribute: the console's
                    // CSP allows no inline styles.
                    (PreEscaped(format!(
                        r#"<svg class="swatch" width="12" height="12" aria-hidden="true"><rect width="12" height="12" fill="{}"/></svg>"#,
                        colour(i)
                    )))
                    " " strong { (name) } " " (format!("{s:.2}")) " s (" (format!("{:.0}", s / total * 100.0)) " %)"
                }
            }
            li.muted { "total " (format!("{total:.2}")) " s" }
        }
    }
}

pub(crate) fn page(load: &LoadView, csrf: &str) -> Markup {
    let n = |v: Option<i64>| v.map_or("-".to_string(), count);
    let body = html! {
        h1 { "Load " (load.id) " — " (load.dataset) " " (load.period.as_deref().unwrap_or("")) }
        table {
            tr { th { "status" } td class=[(load.status == LedgerStatus::Failed).then_some("error")] { (load.status) @if load.forced { " (forced)" } } }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_in_pipeline_order_with_a_legend_not_labels_on_segments() {
        // As the ledger stores them (a JSON object: keys come back sorted).
        let stored =
            serde_json::json!({"publish": 0.012, "aggregate": 0.2, "stream": 3.1, "zz_extra": 0.5});
        let html = stages(&stored).into_string();
        let at = |needle: &str| {
            html.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {html}"))
        };
        let order = [
            at("data-stage=\"stream\""),
            at("data-stage=\"aggregate\""),
            at("data-stage=\"publish\""),
            at("data-stage=\"zz_extra\""),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{html}");
        let svg = &html[..at("</svg>")];
        assert!(!svg.contains("<text"), "no label drawn on a segment: {svg}");
        let tips: Vec<&str> = svg.split("<title>").skip(1).collect();
        assert!(tips[0].starts_with("stream: 3.10 s"), "{tips:?}");
        assert!(tips[2].starts_with("publish: 0.01 s"), "{tips:?}");
        assert!(html.contains("total 3.81 s"));
    }
}
