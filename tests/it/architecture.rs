//! The layering, held by a test that reads the sources (as rust-analyzer's
//! tidy tests do): the engine (source → decode → parse → load → aggregate,
//! driven by the pipeline, with the spec, the codes and the database
//! plumbing beneath) never reaches into the service around it (queue,
//! runner, schedule, freshness, http, cli); `anyhow` lives at the edge
//! (`cli`, `main.rs`) only; configuration depends on nothing above it.

use std::path::{Path, PathBuf};

/// The engine and the shared vocabulary beneath it.
const ENGINE: [&str; 8] = [
    "src/engine",
    "src/dataset.rs",
    "src/code.rs",
    "src/money.rs",
    "src/db",
    "src/config.rs",
    "src/telemetry.rs",
    "src/lib.rs",
];

/// The service and the edge: they drive the engine, never the reverse.
const SERVICE: [&str; 2] = ["crate::service", "crate::cli"];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Lines of `file` outside comments that contain `needle`.
fn uses(file: &Path, needle: &str) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("read source");
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let code = l.trim_start();
            !code.starts_with("//") && code.contains(needle)
        })
        .map(|(i, l)| format!("{}:{}: {}", file.display(), i + 1, l.trim()))
        .collect()
}

#[test]
fn the_engine_never_imports_the_service() {
    let mut files = Vec::new();
    for room in ENGINE {
        rust_files(&root().join(room), &mut files);
    }
    assert!(files.len() > 20, "the engine's files were not found");
    let violations: Vec<String> = files
        .iter()
        .flat_map(|f| SERVICE.iter().flat_map(move |s| uses(f, s)))
        .collect();
    assert!(
        violations.is_empty(),
        "the engine reaches into the service:\n{}",
        violations.join("\n")
    );
}

#[test]
fn anyhow_only_at_the_edge() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let violations: Vec<String> = files
        .iter()
        .filter(|f| {
            let f = f.strip_prefix(root()).expect("under the root");
            !f.starts_with("src/cli") && f != Path::new("src/main.rs")
        })
        .flat_map(|f| uses(f, "anyhow"))
        .collect();
    assert!(
        violations.is_empty(),
        "anyhow outside cli/ and main.rs (use the module's own error type):\n{}",
        violations.join("\n")
    );
}
