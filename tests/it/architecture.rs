//! The layering, held by a test that reads the sources (as rust-analyzer's
//! tidy tests do): the engine (source → decode → parse → load → aggregate,
//! driven by the pipeline, with the spec, the codes and the database
//! plumbing beneath) never reaches into the service around it (queue,
//! runner, schedule, freshness, http, cli); `anyhow` lives at the edge
//! (`cli`, `main.rs`) only; SQL lives in the rooms that own its tables;
//! job states are named by the queue's state module, not spelled around it.

use std::path::{Path, PathBuf};

/// The engine and the shared vocabulary beneath it.
const ENGINE: [&str; 8] = [
    "src/engine",
    "src/dataset",
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

/// The rooms that may hold SQL text, each with the tables it owns. SQL
/// anywhere else is a room reaching into another's tables: add a function
/// to the owner instead.
const SQL_ROOMS: [(&str, &str); 7] = [
    (
        "src/db",
        "the schema: migrations, databases, schema history",
    ),
    (
        "src/engine/load",
        "payments partitions, the ledger, the load's session",
    ),
    ("src/engine/aggregate", "the dashboard's aggregate tables"),
    (
        "src/engine/snapshot",
        "snapshots: states, municipalities, places (CRAS)",
    ),
    (
        "src/service/queue",
        "jobs, attempts, webhook deliveries, the clock",
    ),
    ("src/service/sessions.rs", "console sessions"),
    (
        "src/service/freshness.rs",
        "the datasets read model (ledger × jobs)",
    ),
];

/// Whether `line` opens a string literal that is an SQL statement.
fn is_sql(line: &str) -> bool {
    const STARTS: [&str; 12] = [
        "SELECT ",
        "INSERT INTO ",
        "UPDATE ",
        "DELETE FROM ",
        "CREATE ",
        "ALTER TABLE ",
        "DROP ",
        "TRUNCATE ",
        "WITH ",
        "SET LOCAL ",
        "LOCK TABLE ",
        "COPY ",
    ];
    line.split('"').skip(1).step_by(2).any(|literal| {
        let literal = literal.trim_start();
        STARTS.iter().any(|k| literal.starts_with(k)) && !literal.starts_with("COPY stored") // a message, not a statement
    })
}

#[test]
fn sql_lives_in_the_rooms_that_own_it() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut violations = Vec::new();
    let mut seen = [false; SQL_ROOMS.len()];
    for file in &files {
        let relative = file.strip_prefix(root()).expect("under the root");
        let room = SQL_ROOMS
            .iter()
            .position(|(room, _)| relative.starts_with(room));
        let text = std::fs::read_to_string(file).expect("read source");
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") || !is_sql(line) {
                continue;
            }
            match room {
                Some(r) => seen[r] = true,
                None => {
                    violations.push(format!("{}:{}: {}", relative.display(), i + 1, line.trim()))
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "SQL outside the rooms that own its tables (see SQL_ROOMS):\n{}",
        violations.join("\n")
    );
    // The detector still sees SQL where it is.
    assert!(seen.iter().all(|s| *s), "a room lost its SQL: {seen:?}");
}

const JOB_STATES: [&str; 6] = [
    "available",
    "running",
    "retryable",
    "succeeded",
    "failed",
    "cancelled",
];

/// Job states are `JobState`: outside the queue, SQL compares `state` with
/// a parameter (`JobState` is `ToSql`) and Rust never spells a state where
/// a state is meant. Words that are another vocabulary's (a pool's
/// "available" connections) are listed with their reason.
#[test]
fn job_states_are_named_by_the_queue_only() {
    const OTHER_VOCABULARY: [(&str, &str); 1] = [(
        "src/service/http/metrics.rs",
        "\"state\" => \"available\"", // deadpool's idle connections
    )];
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(root()).expect("under the root");
        if relative.starts_with("src/service/queue") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") || !code.contains("state") {
                continue;
            }
            let spelled = JOB_STATES
                .iter()
                .any(|s| code.contains(&format!("'{s}'")) || code.contains(&format!("\"{s}\"")));
            let excused = OTHER_VOCABULARY
                .iter()
                .any(|(f, snippet)| relative == Path::new(f) && code.contains(snippet));
            if spelled && !excused {
                violations.push(format!("{}:{}: {}", relative.display(), i + 1, code));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "a job state spelled outside src/service/queue (use JobState):\n{}",
        violations.join("\n")
    );
}
