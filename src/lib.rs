//! carga streams Portal da Transparência payment files over HTTP into
//! PostgreSQL: download → unzip → Latin-1 CSV → typed rows → binary COPY into
//! a hidden partition → aggregates → one atomic publish. See ARCHITECTURE.md
//! for the data's path, the code map and the invariants.

pub mod aggregate;
pub mod cli;
pub mod code;
pub mod config;
pub mod dataset;
pub mod db;
pub mod decode;
pub mod freshness;
pub mod http;
pub mod load;
pub mod money;
pub mod parse;
pub mod pipeline;
pub mod queue;
pub mod reference;
pub mod runner;
pub mod sample;
pub mod schedule;
pub mod sessions;
pub mod source;
pub mod telemetry;
