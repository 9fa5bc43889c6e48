//! PostgreSQL binary COPY encoding of payment rows, written straight into
//! the outgoing buffer (no per-row allocation, no `ToSql` dispatch).

use bytes::{BufMut, BytesMut};

use crate::engine::parse::PaymentRow;

/// Signature, flags and header-extension length.
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The file trailer: a field count of -1.
pub(crate) const TRAILER: &[u8] = &[0xff, 0xff];

/// The column list every encoded row follows, in order. `program_id` and
/// `reference_date` are constant in a leaf and come from its defaults.
pub(crate) const COLUMNS: &str =
    "competence_date, municipality_id, beneficiary_hash, value_cents, attributes";

/// Appends one tuple.
pub(crate) fn encode_row(buf: &mut BytesMut, row: &PaymentRow<'_>) {
    buf.reserve(96);
    buf.put_i16(5);
    match row.competence_date {
        Some(days) => {
            buf.put_i32(4);
            buf.put_i32(days);
        }
        None => buf.put_i32(-1),
    }
    buf.put_i32(4);
    buf.put_i32(row.municipality_id);
    match &row.beneficiary_hash {
        Some(hash) => {
            buf.put_i32(16);
            buf.put_slice(hash);
        }
        None => buf.put_i32(-1),
    }
    buf.put_i32(8);
    buf.put_i64(row.value_cents);
    match row.attributes {
        Some(json) => {
            buf.put_i32(json.len() as i32 + 1);
            buf.put_u8(1); // jsonb binary format version
            buf.put_slice(json);
        }
        None => buf.put_i32(-1),
    }
}
