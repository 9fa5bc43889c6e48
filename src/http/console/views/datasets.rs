//! The datasets page: per dataset, its freshness, a month grid (published,
//! unchanged, running, queued, failed, missing, not yet due), trends of
//! rows and value per month, and a "load a month" form.

use maud::{Markup, PreEscaped, html};

use super::{Page, brl, count, layout};
use crate::freshness::{DatasetBoard, MonthCell, MonthState};

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or("never".into(), |t| {
        t.format("%Y-%m-%d %H:%M UTC").to_string()
    })
}

fn class(state: MonthState) -> &'static str {
    match state {
        MonthState::NotDue => "not-due",
        s => s.as_str(),
    }
}

fn cell(c: &MonthCell) -> Markup {
    let title = match (c.state, c.rows, c.value_cents, &c.error_code) {
        (_, Some(rows), Some(v), _) => format!(
            "{} {}: {} rows, {}",
            c.period,
            c.state.as_str(),
            count(rows),
            brl(v)
        ),
        (MonthState::Failed, _, _, Some(code)) => format!("{} failed: {code}", c.period),
        _ => format!("{} {}", c.period, c.state.as_str()),
    };
    let label = &c.period[2..];
    html! {
        @if let Some(load) = c.load_id {
            a class={"cell " (class(c.state))} href={"/console/loads/" (load)} title=(title) data-period=(c.period) data-state=(c.state.as_str()) { (label) }
        } @else {
            span class={"cell " (class(c.state))} title=(title) data-period=(c.period) data-state=(c.state.as_str()) { (label) }
        }
    }
}

/// Two small bar charts (rows, value) over the published months, as inline
/// SVG: a month that shrank or doubled stands out.
pub fn trends(months: &[MonthCell]) -> Markup {
    let points: Vec<(&str, i64, i64)> = months
        .iter()
        .filter_map(|m| Some((m.period.as_str(), m.rows?, m.value_cents?)))
        .collect();
    if points.is_empty() {
        return html! { p.muted { "No published month yet." } };
    }
    let chart = |title: &str, values: Vec<i64>, show: &dyn Fn(i64) -> String| -> Markup {
        let (w, h, bar) = (480.0_f64, 60.0_f64, 480.0 / values.len().max(1) as f64);
        let max = values.iter().copied().max().unwrap_or(1).max(1) as f64;
        let mut svg = format!(
            r#"<svg width="{w}" height="{}" role="img" aria-label="{title}">"#,
            h + 14.0
        );
        for (i, v) in values.iter().enumerate() {
            let height = (*v.max(&0) as f64 / max * h).max(1.0);
            svg.push_str(&format!(
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#546e7a"><title>{}: {}</title></rect>"##,
                i as f64 * bar + 1.0,
                h - height,
                (bar - 2.0).max(1.0),
                height,
                points[i].0,
                show(*v)
            ));
        }
        let last = values.last().copied().unwrap_or(0);
        svg.push_str(&format!(
            r#"<text x="0" y="{}">{title}: last {}</text></svg>"#,
            h + 12.0,
            show(last)
        ));
        html! { (PreEscaped(svg)) }
    };
    html! {
        div.trends {
            (chart("rows per month", points.iter().map(|p| p.1).collect(), &count))
            (chart("value per month", points.iter().map(|p| p.2).collect(), &brl))
        }
    }
}

pub fn page(boards: &[DatasetBoard], csrf: &str, message: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Datasets" }
        @if let Some(m) = message { p { (m) } }
        p.legend {
            @for s in [MonthState::Published, MonthState::Unchanged, MonthState::Running, MonthState::Queued, MonthState::Failed, MonthState::Missing, MonthState::NotDue] {
                span { span class={"cell " (class(s))} {} " " (s.as_str()) }
            }
        }
        @for b in boards {
            @let s = &b.status;
            @let gaps = b.months.iter().filter(|m| m.state == MonthState::Missing).count();
            @let failed = b.months.iter().filter(|m| m.state == MonthState::Failed).count();
            section.dataset id=(s.dataset) {
                h2 {
                    (s.title) " "
                    small.muted { (s.dataset) }
                    @if failed > 0 { " " span.error { (failed) " failed" } }
                    @if gaps > 0 { " " span.error { (gaps) " missing" } }
                }
                div.facts {
                    span { "last published: " strong { (s.last_published_period.as_deref().unwrap_or("none")) } }
                    span { "published at: " (when(s.last_published_at)) }
                    span { "last success: " (when(s.last_success_at)) }
                    span { "last check: " (when(s.last_check_at)) }
                    span { "next run: " (when(s.next_run)) }
                }
                div.grid { @for m in &b.months { (cell(m)) } }
                (trends(&b.months))
                form method="post" action={"/console/datasets/" (s.dataset) "/loads"} {
                    input type="hidden" name="csrf" value=(csrf);
                    label { "Load a month " input type="month" name="period" required; }
                    " "
                    label { input type="checkbox" name="force" value="true"; " force" }
                    " "
                    button type="submit" { "Enqueue" }
                }
            }
        }
    };
    layout("Datasets", Page::Datasets, csrf, body)
}
