//! The engine: one load, from bytes on a server to a published period.
//!
//! ```text
//! source ──► decode ──► parse ──► load ──► aggregate
//!  (HTTP,     (zip,      (CSV →    (binary   (per municipality,
//!   file://)   inflate)   rows)     COPY)     state, nation)
//!                 └──────── pipeline: wires the stages, publishes ───────┘
//! ```
//!
//! The engine knows datasets (`crate::dataset`), codes (`crate::code`) and
//! the database plumbing (`crate::db`); it never reaches into the service
//! around it (`crate::service`). `tests/architecture.rs` holds that.

pub mod aggregate;
pub mod decode;
pub mod load;
pub mod parse;
pub mod pipeline;
pub mod sample;
pub mod snapshot;
pub mod source;
