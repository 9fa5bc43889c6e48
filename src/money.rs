//! Brazilian number and money formatting, as summaries, the CLI and the
//! console show them (`1.234.567`, `R$ 12.345,67`), and a download's
//! figures (`3.1 of 10.6 MB (29%), …`). Formatting only: money on the load
//! path is integer cents and never passes through here, and the figures
//! are computed by whoever calls (the job read model), not here.

/// `1234567` → `1.234.567` (Brazilian thousands dots).
pub(crate) fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push('.');
        }
        grouped.push(c);
    }
    grouped
}

/// `1234567` cents → `12.345,67`.
pub fn format_brl(cents: i64) -> String {
    let abs = cents.unsigned_abs();
    format!(
        "{}{},{:02}",
        if cents < 0 { "-" } else { "" },
        group_thousands(abs / 100),
        abs % 100
    )
}

/// `12345678` cents → `R$ 123.456,78`, as summaries and the console show money.
pub(crate) fn brl(cents: i64) -> String {
    format!("R$ {}", format_brl(cents))
}

/// A download's figures for people, as `carga job`, `carga jobs`, the
/// bar of `carga enqueue --wait` and the console's jobs page show them:
/// `3.1 of 10.6 MB (29%), 120.000 rows, 0.4 MB/s, ETA 18 s`. `total` is the
/// size and the percent done, when the size is known; `eta_seconds` is left
/// out when `None`.
pub(crate) fn download_figures(
    bytes: u64,
    total: Option<(u64, f64)>,
    rows: u64,
    bytes_per_second: f64,
    eta_seconds: Option<f64>,
) -> String {
    let mut line = format!("{:.1}", bytes as f64 / 1e6);
    if let Some((total_bytes, percent)) = total {
        line.push_str(&format!(
            " of {:.1} MB ({percent:.0}%)",
            total_bytes as f64 / 1e6
        ));
    } else {
        line.push_str(" MB");
    }
    line.push_str(&format!(
        ", {} rows, {:.1} MB/s",
        group_thousands(rows),
        bytes_per_second / 1e6
    ));
    if let Some(eta) = eta_seconds {
        line.push_str(&format!(", ETA {eta:.0} s"));
    }
    line
}

/// What a ranged download fetched ahead of the bytes handed on, for a
/// progress line (empty when nothing is).
pub(crate) fn fetched_ahead(bytes: u64) -> String {
    if bytes == 0 {
        return String::new();
    }
    format!(", {:.1} MB fetched ahead", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_fetched_ahead_are_said_only_when_there_are_some() {
        assert_eq!(fetched_ahead(0), "");
        assert_eq!(fetched_ahead(12_345_678), ", 12.3 MB fetched ahead");
    }

    #[test]
    fn download_figures_in_megabytes_with_thousands_dots() {
        assert_eq!(
            download_figures(
                3_000_000,
                Some((12_000_000, 25.0)),
                120_000,
                300_000.0,
                Some(30.0)
            ),
            "3.0 of 12.0 MB (25%), 120.000 rows, 0.3 MB/s, ETA 30 s"
        );
        assert_eq!(
            download_figures(500_000, None, 0, 500_000.0, None),
            "0.5 MB, 0 rows, 0.5 MB/s"
        );
    }
}
