//! carga streams Portal da Transparência payment files over HTTP into
//! PostgreSQL: download → unzip → Latin-1 CSV → typed rows → binary COPY into
//! a hidden partition → aggregates → one atomic publish. See ARCHITECTURE.md
//! for the data's path, the code map and the invariants.

// Shared vocabulary, beneath both halves.
pub mod code;
pub mod config;
pub mod dataset;
pub mod db;
pub mod money;
pub(crate) mod telemetry;

// The engine: source → decode → parse → load → aggregate, wired by the pipeline.
pub mod engine;

// The service around it: queue, runner, schedule, HTTP, console.
pub mod service;

// The composition root: pools, runner, API state and scheduler, built once.
pub mod app;

// The edge: the command line (the only room that speaks anyhow).
pub mod cli;
