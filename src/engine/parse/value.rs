//! Field parsers for the Portal's value types. Pure functions over raw
//! bytes (already unquoted by the CSV reader); no allocation. Codes are
//! taken exactly as the Portal writes them (no zero-padding of short codes).
//! [`shaped`] says whether a refused value may be quoted in a message.

use crate::dataset::ColumnType;

/// Leading and trailing ASCII spaces removed.
pub fn trim(field: &[u8]) -> &[u8] {
    let start = field.iter().position(|b| *b != b' ').unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(start, |i| i + 1);
    &field[start..end]
}

fn digits(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 18 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
    }
    Some(v)
}

/// `YYYYMM` → the number, when the month is 01–12.
pub fn yyyymm(field: &[u8]) -> Option<u32> {
    let field = trim(field);
    if field.len() != 6 {
        return None;
    }
    let v = digits(field)? as u32;
    let (year, month) = (v / 100, v % 100);
    ((1900..=2999).contains(&year) && (1..=12).contains(&month)).then_some(v)
}

/// A SIAFI code: exactly four digits, as the Portal writes it (`"0643"`).
/// A shorter code is refused, never padded: `"12"` is not `"0012"`.
pub fn siafi(field: &[u8]) -> Option<u16> {
    let field = trim(field);
    if field.len() != 4 {
        return None;
    }
    digits(field).map(|v| v as u16)
}

/// A 7-digit IBGE municipality code; its first two digits are the state
/// (11–53), so it never starts with 0: a zero-padded 6-digit code (IBGE
/// without its check digit) is refused.
pub fn ibge(field: &[u8]) -> Option<u32> {
    let field = trim(field);
    if field.len() != 7 || !(b'1'..=b'5').contains(&field[0]) {
        return None;
    }
    digits(field).map(|v| v as u32)
}

/// A 6-digit IBGE municipality code (the 7-digit one without its check
/// digit, as DATASUS writes it): the state's two digits (11–53) first, so
/// never a leading 0.
pub fn ibge6(field: &[u8]) -> Option<u32> {
    let field = trim(field);
    if field.len() != 6 || !(b'1'..=b'5').contains(&field[0]) {
        return None;
    }
    digits(field).map(|v| v as u32)
}

/// A whole count: `1268`, or the text of a float with a zero fraction
/// (`1268.0`, `1268.00`), as pandas writes an integer column that had a
/// missing value. A fraction, a sign, an exponent or an empty field is
/// refused: a count is never rounded.
pub fn count(field: &[u8]) -> Option<i64> {
    let field = trim(field);
    let whole = match memchr::memchr(b'.', field) {
        Some(dot) => {
            let fraction = &field[dot + 1..];
            if fraction.is_empty() || fraction.iter().any(|b| *b != b'0') {
                return None;
            }
            &field[..dot]
        }
        None => field,
    };
    digits(whole).and_then(|v| i64::try_from(v).ok())
}

/// A whole number of digits only: `3021` (no sign, fraction or separator).
pub fn integer(field: &[u8]) -> Option<i64> {
    digits(trim(field)).and_then(|v| i64::try_from(v).ok())
}

/// A CNPJ: exactly 14 digits, as ANEEL writes `NumCNPJAgente`. A shorter
/// one (leading zeros lost by a spreadsheet) is refused, never padded.
pub fn cnpj(field: &[u8]) -> Option<u64> {
    let field = trim(field);
    if field.len() != 14 {
        return None;
    }
    digits(field)
}

/// An ISO date, `2020-04-17`, optionally with a time (`2020-04-17 10:32:05`
/// or `T` between): seconds since 1970 (a version to order by).
pub fn iso_date(field: &[u8]) -> Option<i64> {
    let field = trim(field);
    let (date, time) = match field.len() {
        10 => (field, None),
        19 if field[10] == b' ' || field[10] == b'T' => (&field[..10], Some(&field[11..])),
        _ => return None,
    };
    let [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2] = date else {
        return None;
    };
    let year = digits(&[*y1, *y2, *y3, *y4])?;
    let month = digits(&[*m1, *m2])?;
    let day = digits(&[*d1, *d2])?;
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        u32::try_from(month).ok()?,
        u32::try_from(day).ok()?,
    )?;
    let seconds = match time {
        None => 0,
        Some([h1, h2, b':', n1, n2, b':', s1, s2]) => {
            let (h, n, s) = (
                digits(&[*h1, *h2])?,
                digits(&[*n1, *n2])?,
                digits(&[*s1, *s2])?,
            );
            if h > 23 || n > 59 || s > 59 {
                return None;
            }
            (h * 3600 + n * 60 + s) as i64
        }
        Some(_) => return None,
    };
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp() + seconds)
}

/// An order's number, `1234/2020` or `1234`: ordered by year, then number
/// (`year × 10⁹ + number`; no year sorts first).
pub fn despacho(field: &[u8]) -> Option<i64> {
    let field = trim(field);
    match memchr::memchr(b'/', field) {
        Some(slash) => {
            let number = digits(&field[..slash])?;
            let year = &field[slash + 1..];
            if year.len() != 4 || number >= 1_000_000_000 {
                return None;
            }
            Some(digits(year)? as i64 * 1_000_000_000 + number as i64)
        }
        None if field.len() <= 9 => digits(field).map(|n| n as i64),
        None => None,
    }
}

/// ANEEL's and FNDE's amounts: a decimal comma, optional thousands dots,
/// and the integer part may be empty (`1234,56`, `,00`, `1.234,56`), in
/// cents. Dots without a comma are refused: `1.234` could be a thousand
/// reais or a JSON number's one real and 234 thousandths, never guessed.
pub fn decimal_comma(field: &[u8]) -> Option<i64> {
    let trimmed = trim(field);
    if trimmed.contains(&b'.') && !trimmed.contains(&b',') {
        return None;
    }
    // `,50` is `0,50`: the fraction alone (no allocation per row).
    let fraction = |digits: &[u8]| -> Option<i64> {
        match digits {
            [a] if a.is_ascii_digit() => Some(i64::from(a - b'0') * 10),
            [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
                Some(i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            }
            _ => None,
        }
    };
    match trimmed {
        [b',', rest @ ..] => fraction(rest),
        [b'-', b',', rest @ ..] => fraction(rest).map(|c| -c),
        _ => amount(trimmed, b',', Some(b'.')),
    }
}

/// `MM/YYYY` (the old portal's `Mês Competência`) as `YYYYMM`: exactly
/// two digits, a slash and four (`10/2024` → 202410; `1/2024` is refused).
pub fn mm_yyyy(field: &[u8]) -> Option<u32> {
    match trim(field) {
        [m1, m2, b'/', y @ ..] if y.len() == 4 => {
            let month = digits(&[*m1, *m2])?;
            let year = digits(y)?;
            ((1900..=2999).contains(&year) && (1..=12).contains(&month))
                .then_some((year * 100 + month) as u32)
        }
        _ => None,
    }
}

/// A year, `2024`, as the `YYYYMM` of its January.
pub fn yyyy(field: &[u8]) -> Option<u32> {
    let field = trim(field);
    if field.len() != 4 {
        return None;
    }
    let year = digits(field)? as u32;
    (1900..=2999).contains(&year).then_some(year * 100 + 1)
}

/// A month in a column of type `column_type` (`Yyyymm`, `MmYyyy`, or
/// `Yyyy`: a year's January).
#[inline]
pub fn month(column_type: ColumnType, field: &[u8]) -> Option<u32> {
    match column_type {
        ColumnType::MmYyyy => mm_yyyy(field),
        ColumnType::Yyyy => yyyy(field),
        _ => yyyymm(field),
    }
}

/// Exactly 11 digits, not all zeros: a NIS. Anything else means "no NIS".
pub fn nis(field: &[u8]) -> Option<&[u8]> {
    let field = trim(field);
    (field.len() == 11 && field.iter().all(u8::is_ascii_digit) && field.iter().any(|b| *b != b'0'))
        .then_some(field)
}

/// A BRL amount with a decimal comma and optional thousands dots, in
/// cents: `1.234,56` → 123456, `-600,00` → -60000, `600` → 60000,
/// `0,5` → 50. Thousands groups must have three digits; more than two
/// decimals is an error (it would be rounded otherwise).
pub fn brl_comma(field: &[u8]) -> Option<i64> {
    amount(field, b',', Some(b'.'))
}

/// A BRL amount in the old portal's US format (`../shared/SOURCES.md`,
/// (i): public readers of `BolsaFamiliaFolhaPagamento` strip a thousands
/// comma before parsing): a decimal point, optional thousands commas in
/// three-digit groups, and exactly two decimals — `227.00` → 22700,
/// `1,022.00` → 102200. Every value seen has two decimals, so anything
/// else (`1,022`, `227`, `5.5`) is ambiguous against the decimal-comma
/// format and refused: a reject, never a silent factor of 100.
pub fn brl_point(field: &[u8]) -> Option<i64> {
    let trimmed = trim(field);
    let two_decimals = trimmed.len() >= 3
        && trimmed[trimmed.len() - 3] == b'.'
        && trimmed[trimmed.len() - 2..].iter().all(u8::is_ascii_digit);
    if !two_decimals {
        return None;
    }
    amount(trimmed, b'.', Some(b','))
}

fn amount(field: &[u8], decimal: u8, thousands: Option<u8>) -> Option<i64> {
    let field = trim(field);
    let (negative, body) = match field.first() {
        Some(b'-') => (true, &field[1..]),
        Some(b'+') => (false, &field[1..]),
        _ => (false, field),
    };
    let (int_part, frac_part) = match body.iter().position(|b| *b == decimal) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if int_part.is_empty() {
        return None;
    }
    let mut units: i64 = 0;
    let mut group_len = 0usize;
    let mut saw_separator = false;
    for (i, &b) in int_part.iter().enumerate() {
        if Some(b) == thousands {
            // the first group has 1–3 digits, every later one exactly 3
            if i == 0 || (saw_separator && group_len != 3) || (!saw_separator && group_len > 3) {
                return None;
            }
            saw_separator = true;
            group_len = 0;
            continue;
        }
        if !b.is_ascii_digit() {
            return None;
        }
        units = units.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
        group_len += 1;
    }
    if saw_separator && group_len != 3 {
        return None;
    }
    let cents = match frac_part {
        None => 0,
        Some([]) => return None,
        Some([a]) if a.is_ascii_digit() => i64::from(a - b'0') * 10,
        Some([a, b]) if a.is_ascii_digit() && b.is_ascii_digit() => {
            i64::from(a - b'0') * 10 + i64::from(b - b'0')
        }
        Some(_) => return None,
    };
    let total = units.checked_mul(100)?.checked_add(cents)?;
    Some(if negative { -total } else { total })
}

/// Longest value [`shaped`] accepts: anything longer is not quoted.
const SHAPED_MAX_LEN: usize = 24;
/// Codes and months shorter than a NIS or a CPF (11 digits): a digit
/// string that long is never quoted.
const CODE_MAX_DIGITS: usize = 7;

/// Whether `field` has the shape of a `column_type` value, so a message
/// about it may quote it: digits (at most seven) for codes and months; a
/// sign, digits, dots and commas with the decimal separator for amounts.
/// A name, a CPF or a NIS never has one of these shapes; text and NIS
/// columns never do. Cheap and allocation-free; only called for refused
/// values and reject lines.
pub fn shaped(column_type: ColumnType, field: &[u8]) -> bool {
    let field = trim(field);
    if field.is_empty() || field.len() > SHAPED_MAX_LEN {
        return false;
    }
    match column_type {
        ColumnType::Yyyymm | ColumnType::Siafi | ColumnType::Ibge | ColumnType::Ibge6 => {
            field.len() <= CODE_MAX_DIGITS && field.iter().all(u8::is_ascii_digit)
        }
        ColumnType::Cnpj => false,
        ColumnType::Integer => {
            field.len() <= CODE_MAX_DIGITS && field.iter().all(u8::is_ascii_digit)
        }
        ColumnType::IsoDate => iso_date(field).is_some(),
        ColumnType::Despacho => despacho(field).is_some(),
        ColumnType::DecimalComma => decimal_comma(field).is_some(),
        ColumnType::Count => {
            let whole = field.split(|b| *b == b'.').next().unwrap_or_default();
            whole.len() <= CODE_MAX_DIGITS
                && field.iter().filter(|b| **b == b'.').count() <= 1
                && field.iter().all(|b| b.is_ascii_digit() || *b == b'.')
        }
        ColumnType::MmYyyy => mm_yyyy(field).is_some(),
        ColumnType::Yyyy => yyyy(field).is_some(),
        ColumnType::Brl | ColumnType::BrlPoint => {
            let decimal = if column_type == ColumnType::Brl {
                b','
            } else {
                b'.'
            };
            let body = match field {
                [b'-' | b'+', rest @ ..] => rest,
                _ => field,
            };
            body.iter().any(u8::is_ascii_digit)
                && body.contains(&decimal)
                && body
                    .iter()
                    .all(|b| b.is_ascii_digit() || *b == b'.' || *b == b',')
        }
        // Coordinates and postal codes are places', never a person's.
        ColumnType::LatLon => field
            .iter()
            .all(|b| b.is_ascii_digit() || b"-+.,\\ ".contains(b)),
        ColumnType::Cep => field
            .iter()
            .all(|b| b.is_ascii_digit() || b"-.".contains(b)),
        // A file of counts (the only kind that may have this column) names
        // places, not people: a short name of letters may be quoted.
        ColumnType::MunicipalityName => std::str::from_utf8(field).is_ok_and(|t| {
            t.chars()
                .all(|c| c.is_alphabetic() || c == ' ' || c == '-' || c == '\'')
        }),
        ColumnType::Nis | ColumnType::Text => false,
    }
}

/// A municipality's name as a lookup key: upper case, accents removed,
/// every run of anything but letters and digits one space (`Pingo-d'Água`
/// and `PINGO D AGUA` are one key).
pub fn name_key(text: &str) -> String {
    let upper = crate::dataset::header_key(text);
    let mut out = String::with_capacity(upper.len());
    for word in upper
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Brazil's bounding box, in degrees, with a quarter degree of margin: the
/// seed's `ingest_cras.py` L40-43 (-33.75 to 5.27 latitude, -73.99 to
/// -32.39 longitude: Chuí, Monte Caburaí, the Serra do Divisor, Fernando de
/// Noronha).
pub(crate) const LATITUDE: (f64, f64) = (-34.0, 5.52);
pub(crate) const LONGITUDE: (f64, f64) = (-74.24, -32.14);

/// `"-23.5505,-46.6333"` (SAGI's `georef_location`: latitude, a comma,
/// longitude; the comma escaped as `\,` in Solr's CSV writer) inside
/// Brazil's bounding box, as (latitude, longitude). A point outside it (a
/// swapped pair, a zero) is `None`: a reject, never a wrong pin.
pub fn lat_lon(field: &[u8]) -> Option<(f64, f64)> {
    let text = std::str::from_utf8(trim(field)).ok()?;
    let (lat, lon) = text.split_once(',')?;
    let lat = lat.strip_suffix('\\').unwrap_or(lat);
    let number = |t: &str| -> Option<f64> {
        let t = t.trim();
        let plain = !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+');
        t.parse::<f64>().ok().filter(|v| plain && v.is_finite())
    };
    let (lat, lon) = (number(lat)?, number(lon)?);
    let inside = |v: f64, (low, high): (f64, f64)| (low..=high).contains(&v);
    (inside(lat, LATITUDE) && inside(lon, LONGITUDE)).then_some((lat, lon))
}

/// A postal code (`01310-100`, `01.310-100`, `01310100`) as its 8 digits.
pub fn cep(field: &[u8]) -> Option<String> {
    let field = trim(field);
    let digits: String = field
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| char::from(*b))
        .collect();
    let only = field
        .iter()
        .all(|b| b.is_ascii_digit() || *b == b'-' || *b == b'.');
    (only && digits.len() == 8).then_some(digits)
}

/// Days from 2000-01-01 to the first day of `yyyymm` (PostgreSQL's binary
/// date). Howard Hinnant's days_from_civil.
pub fn first_day_pg(yyyymm: u32) -> i32 {
    let (year, month) = ((yyyymm / 100) as i64, (yyyymm % 100) as i64);
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let unix_days = era * 146_097 + doe - 719_468;
    (unix_days - 10_957) as i32
}

/// `field` as text in the file's declared encoding (lossy).
pub(crate) fn decode_text(encoding: crate::dataset::Encoding, field: &[u8]) -> String {
    match encoding {
        crate::dataset::Encoding::Windows1252 => encoding_rs::WINDOWS_1252
            .decode_without_bom_handling(field)
            .0
            .into_owned(),
        crate::dataset::Encoding::Utf8 => String::from_utf8_lossy(field).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: PartialEq + std::fmt::Debug>(
        f: fn(&[u8]) -> Option<T>,
        cases: &[(&str, Option<T>)],
    ) {
        for (input, want) in cases {
            assert_eq!(&f(input.as_bytes()), want, "input {input:?}");
        }
    }

    #[test]
    fn coordinates_are_a_pair_inside_brazil() {
        check(
            lat_lon,
            &[
                ("-23.5505,-46.6333", Some((-23.5505, -46.6333))),
                (" -3.1,-60.02 ", Some((-3.1, -60.02))),
                ("-23.5505\\,-46.6333", Some((-23.5505, -46.6333))),
                ("-46.6333,-23.5505", None), // swapped
                ("0,0", None),
                ("-23.5505", None),
                ("-23.5505;-46.6333", None),
                ("1e1,-46", None),
                ("NaN,-46", None),
                ("", None),
            ],
        );
    }

    #[test]
    fn postal_codes_are_eight_digits() {
        let own = |s: &str| Some(s.to_string());
        check(
            cep,
            &[
                ("01310-100", own("01310100")),
                ("01.310-100", own("01310100")),
                ("01310100", own("01310100")),
                ("1310-100", None),
                ("01310-1000", None),
                ("0131O100", None),
            ],
        );
    }

    #[test]
    fn counts_are_whole_or_refused() {
        check(
            count,
            &[
                ("1268", Some(1268)),
                ("1268.0", Some(1268)),
                (" 0.00 ", Some(0)),
                ("1268.5", None),
                ("1268.", None),
                ("-3", None),
                ("1e3", None),
                ("1.268", None),
                ("", None),
            ],
        );
    }

    #[test]
    fn aneel_fields() {
        check(
            cnpj,
            &[
                ("06981180000116", Some(6_981_180_000_116)),
                ("6981180000116", None),
                ("06.981.180/0001-16", None),
            ],
        );
        check(
            decimal_comma,
            &[
                (",00", Some(0)),
                ("1234,56", Some(123_456)),
                ("1.234,56", Some(123_456)),
                ("-,50", Some(-50)),
                ("45.678.901,23", Some(4_567_890_123)),
                ("45678901", Some(4_567_890_100)),
                ("12,345", None),
                // A JSON number's text: its dot is no thousands separator.
                ("1.234", None),
                ("45678901.23", None),
                ("", None),
            ],
        );
        check(
            despacho,
            &[
                ("1234/2020", Some(2020 * 1_000_000_000 + 1234)),
                ("99/2021", Some(2021 * 1_000_000_000 + 99)),
                ("1234", Some(1234)),
                ("12/20", None),
            ],
        );
        assert!(despacho(b"99/2021") > despacho(b"1234/2020"));
        assert_eq!(iso_date(b"1970-01-02"), Some(86_400));
        assert_eq!(iso_date(b"1970-01-01 00:01:05"), Some(65));
        assert_eq!(iso_date(b"1970-01-01T00:01:05"), Some(65));
        assert_eq!(iso_date(b"2020-02-30"), None);
        assert_eq!(iso_date(b"17/04/2020"), None);
    }

    #[test]
    fn integers_are_digits_only() {
        check(
            integer,
            &[
                ("3021", Some(3021)),
                (" 7 ", Some(7)),
                ("3.000", None),
                ("3,000", None),
                ("1268.0", None),
                ("-1", None),
                ("", None),
            ],
        );
    }

    #[test]
    fn six_digit_ibge_codes() {
        check(
            ibge6,
            &[
                ("355030", Some(355030)),
                ("3550308", None),
                ("035503", None),
                ("35503", None),
            ],
        );
    }

    #[test]
    fn brl_amounts() {
        check(
            brl_comma,
            &[
                ("600,00", Some(60000)),
                ("1.412,00", Some(141200)),
                ("1.234.567,89", Some(123456789)),
                ("-2.836,64", Some(-283664)),
                ("0,00", Some(0)),
                ("0,5", Some(50)),
                ("600", Some(60000)),
                (" 12,30 ", Some(1230)),
                ("12,345", None),
                ("1.23,00", None),
                ("1234.567,00", None),
                (".123,00", None),
                ("12,", None),
                (",50", None),
                ("", None),
                ("-", None),
                ("abc", None),
                ("1,2,3", None),
                ("227.00", None),
                ("99999999999999999999,00", None),
            ],
        );
        check(
            brl_point,
            &[
                ("227.00", Some(22700)),
                ("1,022.00", Some(102200)),
                ("12,345,678.90", Some(1234567890)),
                ("-1,022.50", Some(-102250)),
                (" 0.05 ", Some(5)),
                // Ambiguous or malformed: refused, never read as another amount.
                ("-5.5", None),
                ("227", None),
                ("1,022", None),
                ("1,02.00", None),
                ("1022,000.00", None),
                (",022.00", None),
                ("1.234,00", None),
                ("1,00", None),
                ("1.022.00", None),
            ],
        );
    }

    #[test]
    fn old_portal_months() {
        check(
            mm_yyyy,
            &[
                ("10/2024", Some(202410)),
                (" 01/2013 ", Some(201301)),
                ("1/2024", None),
                ("13/2024", None),
                ("00/2024", None),
                ("10/24", None),
                ("202410", None),
                ("10-2024", None),
            ],
        );
    }

    #[test]
    fn codes() {
        check(
            yyyymm,
            &[
                ("202410", Some(202410)),
                ("202413", None),
                ("20241", None),
                ("2024-1", None),
            ],
        );
        check(
            siafi,
            &[
                ("0643", Some(643)),
                ("9701", Some(9701)),
                (" 9701 ", Some(9701)),
                ("12345", None),
                ("", None),
                ("06a3", None),
                // never padded: a short code is another municipality's
                ("12", None),
                ("643", None),
                ("0", None),
            ],
        );
        check(
            ibge,
            &[
                ("5300108", Some(5300108)),
                ("530010", None),
                ("53001080", None),
                ("0530010", None),
                ("1100015", Some(1100015)),
            ],
        );
        for (input, valid) in [
            ("12345678901", true),
            ("00000000000", false),
            ("-1", false),
            ("", false),
            ("***Titular menor de 16 anos***", false),
            ("1234567890a", false),
        ] {
            assert_eq!(nis(input.as_bytes()).is_some(), valid, "{input:?}");
        }
    }

    #[test]
    fn only_values_shaped_like_their_type_may_be_quoted() {
        use ColumnType::*;
        for (column_type, input, quotable) in [
            (Yyyymm, "202413", true),
            (Yyyymm, "2024", true),
            (Yyyymm, "12345678901", false), // a NIS
            (Yyyymm, "MARIA DA SILVA", false),
            (Siafi, "12", true),
            (Siafi, "12345", true),
            (Siafi, "123.456.789-01", false), // a CPF
            (Siafi, "12345678901", false),
            (Ibge, "53001080", false),
            (Brl, "12,3,4", true),
            (Brl, "92233720368547758,07", true),
            (Brl, "-1.234,56", true),
            (Brl, "12345678901", false), // no decimal comma: a NIS
            (Brl, "123.456.789-01", false),
            (Brl, "***.456.789-**", false),
            (Brl, "JOSE", false),
            (Brl, ",", false),
            (Brl, "1,00\0", false),
            (BrlPoint, "227.001", true),
            (BrlPoint, "12345678901", false),
            (Nis, "12345678901", false),
            (Text, "Sim", false),
            (Brl, "", false),
        ] {
            assert_eq!(
                shaped(column_type, input.as_bytes()),
                quotable,
                "{column_type:?} {input:?}"
            );
        }
    }

    #[test]
    fn dates_match_chrono() {
        let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).expect("date");
        for year in [1999, 2000, 2013, 2020, 2024, 2100] {
            for month in 1..=12u32 {
                let d = chrono::NaiveDate::from_ymd_opt(year, month, 1).expect("date");
                let want = (d - epoch).num_days() as i32;
                assert_eq!(
                    first_day_pg(year as u32 * 100 + month),
                    want,
                    "{year}-{month}"
                );
            }
        }
    }
}
