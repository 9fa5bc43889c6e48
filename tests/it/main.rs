//! carga's integration tests, one binary (one link instead of one per file).
//! Each module is one area; `common` holds the harness. `TEST_LOG=1` (or
//! a filter such as `TEST_LOG=carga=debug`) prints tracing from a failing test.

mod api;
mod architecture;
mod boundaries;
mod cli;
mod common;
mod config_cli;
mod console;
mod faults;
mod generations;
mod kinds;
mod load;
mod places;
mod portal;
mod privacy;
mod queue;
mod queue_cli;
mod ranged;
mod root_cause;
mod schema;
mod tls;
mod workers;
