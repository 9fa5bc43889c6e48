//! The service: everything that decides *when* the engine runs and shows
//! what it did.
//!
//! ```text
//! schedule ─┐                        ┌──► engine::pipeline (one attempt)
//! webhook  ─┼──► queue (Postgres) ──► runner
//! operator ─┘     ▲ leases, fencing,  └──► ledger, progress, metrics
//!   (http, cli)   │ retries, rescue
//!                 └── freshness, console, API read it back
//! ```
//!
//! The service calls into the engine; the engine never calls back.

pub mod freshness;
pub mod http;
pub mod queue;
pub mod runner;
pub mod schedule;
pub(crate) mod sessions;
