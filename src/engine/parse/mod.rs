//! CSV records → typed payment rows, or row errors. No SQL, and no I/O but
//! reading an `io::Read` ([`records`]).
//! One bad row never sinks the batch: `Transformer::row` returns the row
//! or a `RowError`, and the caller decides by policy. The header is
//! matched by name (accents, case and spacing ignored; aliases allowed)
//! before any row is read.
//!
//! The rooms: `header.rs` (the header plan), `municipality.rs` (code →
//! municipality), `transform.rs` (the hot path: record → typed row),
//! `reject.rs` (what of a bad line may be shown: the privacy surface),
//! [`records`] (the record reader), [`value`] (field parsers) and [`keyed`]
//! (the keyed NIS hash).

mod header;
mod keyed;
mod municipality;
pub mod records;
mod reject;
mod transform;
pub(crate) mod value;

#[cfg(test)]
mod fixtures;

pub(crate) use header::{HeaderError, Plan};
pub(crate) use municipality::{MunicipalityEntry, MunicipalityIndex};
pub(crate) use reject::RowError;
pub(crate) use transform::{PaymentRow, TabulatedRow, Transformer};
