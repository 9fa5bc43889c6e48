//! HTTP servers carga runs itself. For now: the loopback file server that
//! `carga demo` (and the tests) fetch Portal-format files from, so the real
//! HTTP download path runs end to end.

pub mod files;
