//! The database: `DATABASE_URL` normalisation, redaction and parsing (its
//! TLS part into a typed [`TlsSettings`], made into the one [`Tls`]
//! connector every connection uses: see `db/tls.rs`), finding or starting a
//! local server when no URL is given, the connection pool, and migrations.
//! Owns no table's contents. No connection to PostgreSQL is opened outside
//! this module's [`connect`] and [`pool`], except the runner's LISTEN and
//! the loads' cancel requests, which take the same [`Tls`].
//!
//! The rooms: `url.rs` (the URL as text), `resolve.rs` (where the database
//! is), `cluster.rs` (the private cluster's processes), `connect.rs`
//! (connections and the pool), `migrate.rs` (migrations), `tls.rs` (TLS),
//! `error.rs` ([`DbError`], [`describe_db`]).

mod cluster;
mod connect;
mod error;
mod migrate;
mod resolve;
mod tls;
mod url;

pub use cluster::stop_private_cluster;
pub use connect::{connect, pool};
pub(crate) use error::describe_db;
pub use error::{DbError, Result};
pub use migrate::{Encryption, Migration, migrate, migrate_reporting, migration_count};
pub(crate) use migrate::{applied, encryption};
pub(crate) use resolve::resolve_existing;
pub use resolve::{Target, resolve, resolve_separate};
pub use tls::Tls;
pub(crate) use tls::{ClientCert, RootCert, SslMode, TlsSettings};
