//! The datasets page: per dataset, its freshness, a month grid (published,
//! unchanged, running, queued, failed, missing, not yet due), trends of
//! rows and value per month, and a "load a month" form.

use maud::{Markup, PreEscaped, html};

use super::{Page, brl, count, layout};
use crate::service::freshness::{DatasetBoard, MonthCell, MonthState};

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or("never".into(), |t| {
        t.format("%Y-%m-%d %H:%M UTC").to_string()
    })
}

/// This month in São Paulo, `YYYY-MM`: a snapshot job's label.
fn this_month() -> String {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::America::Sao_Paulo)
        .format("%Y-%m")
        .to_string()
}

fn class(state: MonthState) -> &'static str {
    match state {
        MonthState::NotDue => "not-due",
        MonthState::AtSource => "at-source",
        MonthState::NotAtSource => "not-at-source",
        MonthState::NotPaid => "not-paid",
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

/// Whole reais with thousands dots (an axis label; the tooltips keep cents).
fn reais(cents: i64) -> String {
    format!("R$ {}", count(cents / 100))
}

/// One labelled bar chart as inline SVG: a bar per month with its value in
/// a tooltip (`<title>`), a y axis labelled at its bottom, middle and top,
/// and month labels under the bars. The axis starts at 90 % of the smallest
/// month, not at zero, so that a change of a few per cent is visible; the
/// chart says so under the axis.
fn chart(
    title: &str,
    points: &[(&str, i64)],
    exact: &dyn Fn(i64) -> String,
    axis: &dyn Fn(i64) -> String,
) -> Markup {
    const LEFT: f64 = 110.0;
    const PLOT_W: f64 = 400.0;
    const TOP: f64 = 6.0;
    const PLOT_H: f64 = 80.0;
    let (Some(min), Some(max)) = (
        points.iter().map(|p| p.1).min(),
        points.iter().map(|p| p.1).max(),
    ) else {
        return html! {};
    };
    let base = if min > 0 { min - min / 10 } else { min.min(0) };
    let top = if max > base { max } else { base + 1 };
    let y = |v: i64| TOP + PLOT_H - (v - base) as f64 / (top - base) as f64 * PLOT_H;
    let bar = PLOT_W / points.len() as f64;
    let every = (30.0 / bar).ceil().max(1.0) as usize;
    let mut svg = format!(
        r#"<svg class="chart" width="{}" height="{}" role="img" aria-label="{title}">"#,
        LEFT + PLOT_W + 4.0,
        TOP + PLOT_H + 38.0
    );
    // The axis: bottom (base), middle and top, with grid lines.
    for v in [base, base + (top - base) / 2, top] {
        svg.push_str(&format!(
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + PLOT_W,
            LEFT - 4.0,
            y(v) + 3.0,
            axis(v),
            y = y(v),
        ));
    }
    for (i, (period, v)) in points.iter().enumerate() {
        let height = (TOP + PLOT_H - y(*v)).max(2.0);
        let x = LEFT + i as f64 * bar;
        svg.push_str(&format!(
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{height:.1}" fill="#546e7a" data-period="{period}"><title>{period}: {}</title></rect>"##,
            x + 1.0,
            TOP + PLOT_H - height,
            (bar - 2.0).max(1.0),
            exact(*v),
        ));
        if i % every == 0 || i + 1 == points.len() {
            // `MM/YY` under the bar.
            let label = format!("{}/{}", &period[5..7], &period[2..4]);
            svg.push_str(&format!(
                r#"<text class="month" x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
                x + bar / 2.0,
                TOP + PLOT_H + 11.0
            ));
        }
    }
    let (last_period, last) = points[points.len() - 1];
    let note = if base > 0 {
        format!(" · axis from {}, not zero", axis(base))
    } else {
        String::new()
    };
    svg.push_str(&format!(
        r#"<text x="{LEFT}" y="{:.1}">{title}: {} in {last_period}{note}</text></svg>"#,
        TOP + PLOT_H + 30.0,
        exact(last),
    ));
    html! { (PreEscaped(svg)) }
}

/// Two charts (rows, value) over the published months: a month that
/// shrank or doubled stands out.
pub(crate) fn trends(months: &[MonthCell]) -> Markup {
    let points: Vec<(&str, i64, i64)> = months
        .iter()
        .filter_map(|m| Some((m.period.as_str(), m.rows?, m.value_cents?)))
        .collect();
    if points.is_empty() {
        return html! { p.muted { "No published month yet." } };
    }
    let rows: Vec<(&str, i64)> = points.iter().map(|p| (p.0, p.1)).collect();
    let value: Vec<(&str, i64)> = points.iter().map(|p| (p.0, p.2)).collect();
    html! {
        div.trends {
            (chart("rows per month", &rows, &|v| format!("{} rows", count(v)), &count))
            (chart("value per month", &value, &brl, &reais))
        }
    }
}

pub(crate) fn page(boards: &[DatasetBoard], csrf: &str, message: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Datasets" }
        @if let Some(m) = message { p { (m) } }
        p.legend {
            @for s in [MonthState::Published, MonthState::Unchanged, MonthState::Running, MonthState::Queued, MonthState::Failed, MonthState::AtSource, MonthState::Missing, MonthState::NotAtSource, MonthState::NotPaid, MonthState::NotDue] {
                span { span class={"cell " (class(s))} {} " " (s.as_str()) }
            }
        }
        @for b in boards {
            @let s = &b.status;
            @let gaps = b.months.iter().filter(|m| m.state == MonthState::Missing).count();
            @let failed = b.months.iter().filter(|m| m.state == MonthState::Failed).count();
            @let waiting = b.months.iter().filter(|m| m.state == MonthState::AtSource).count();
            section.dataset id=(s.dataset) {
                h2 {
                    (s.title) " "
                    small.muted { (s.dataset) }
                    @if failed > 0 { " " span.error { (failed) " failed" } }
                    @if gaps > 0 { " " span.error { (gaps) " missing" } }
                    @if waiting > 0 { " " span.error { (waiting) " at the source, not loaded" } }
                }
                @if s.snapshot {
                    div.facts {
                        span { "a snapshot (" (s.kind) "): no months, loaded whole" }
                        span { "last loaded: " strong { (when(s.last_published_at)) } }
                        span { "last success: " (when(s.last_success_at)) }
                        span { "next run: " @if s.cron.is_some() { (when(s.next_run)) } @else { "on demand" } }
                    }
                    form method="post" action={"/console/datasets/" (s.dataset) "/loads"} {
                        input type="hidden" name="csrf" value=(csrf);
                        // The job's label: the month it was asked in.
                        input type="hidden" name="period" value=(this_month());
                        label { input type="checkbox" name="force" value="true"; " force" }
                        " "
                        button type="submit" { "Load now" }
                    }
                } @else {
                div.facts {
                    span { "last published: " strong { (s.last_published_period.as_deref().unwrap_or("none")) } }
                    span { "published at: " (when(s.last_published_at)) }
                    span { "last success: " (when(s.last_success_at)) }
                    span { "last check: " (when(s.last_check_at)) }
                    span { "next run: " (when(s.next_run)) }
                    span { "latest at the source: " strong { (s.source_latest_period.as_deref().unwrap_or("unknown")) } }
                    @if let Some(since) = s.source_ahead_since {
                        span.error { "the source is ahead of us since " (when(Some(since))) }
                    }
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
        }
    };
    layout("Datasets", Page::Datasets, csrf, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn month(period: &str, rows: i64, value_cents: i64) -> MonthCell {
        MonthCell {
            period: period.into(),
            state: MonthState::Published,
            load_id: Some(1),
            job_id: None,
            rows: Some(rows),
            value_cents: Some(value_cents),
            error_code: None,
        }
    }

    /// The heights of the bars, in order (the first chart's).
    fn heights(svg: &str) -> Vec<f64> {
        let first = svg.split("</svg>").next().unwrap_or_default();
        first
            .split("<rect ")
            .skip(1)
            .map(|r| {
                let at = r.find("height=\"").expect("height") + 8;
                r[at..]
                    .split('"')
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .expect("number")
            })
            .collect()
    }

    #[test]
    fn a_change_of_one_per_cent_is_visible_and_every_month_is_labelled() {
        let months = [
            month("2024-01", 1_000_000, 1_000_000_000),
            month("2024-02", 1_010_000, 1_010_000_000),
            month("2024-03", 1_000_000, 1_000_000_000),
        ];
        let html = trends(&months).into_string();
        let h = heights(&html);
        assert_eq!(h.len(), 3);
        assert!(h[1] - h[0] >= 5.0, "a 1 % rise must show: {h:?}");
        assert_eq!(h[0], h[2]);
        // Each month's value in a tooltip, exact.
        assert!(
            html.contains("<title>2024-02: 1.010.000 rows</title>"),
            "{html}"
        );
        assert!(
            html.contains("<title>2024-02: R$ 10.100.000,00</title>"),
            "{html}"
        );
        // A labelled axis that says where it starts, and month labels.
        assert!(html.contains(">1.010.000</text>"), "the top of the axis");
        assert!(html.contains(">900.000</text>"), "the bottom of the axis");
        assert!(html.contains("axis from 900.000, not zero"));
        assert!(
            html.contains(">R$ 9.000.000</text>"),
            "the value axis in reais"
        );
        for label in ["01/24", "02/24", "03/24"] {
            assert!(html.contains(&format!(">{label}</text>")), "{label}");
        }
    }

    #[test]
    fn equal_months_and_a_single_month_still_draw() {
        let one = trends(&[month("2024-01", 500, 100)]).into_string();
        assert_eq!(heights(&one).len(), 1);
        let same = trends(&[month("2024-01", 500, 100), month("2024-02", 500, 100)]).into_string();
        let h = heights(&same);
        assert_eq!(h[0], h[1]);
        assert!(h[0] > 2.0);
        let zero = trends(&[month("2024-01", 0, 0), month("2024-02", 10, 10)]).into_string();
        assert!(heights(&zero)[1] > heights(&zero)[0]);
    }
}
