//! Brazilian number and money formatting, as summaries, the CLI and the
//! console show them (`1.234.567`, `R$ 12.345,67`). Formatting only: money
//! on the load path is integer cents and never passes through here.

/// `1234567` → `1.234.567` (Brazilian thousands dots).
pub fn group_thousands(n: u64) -> String {
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
pub fn brl(cents: i64) -> String {
    format!("R$ {}", format_brl(cents))
}
