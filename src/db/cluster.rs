//! The private PostgreSQL cluster `carga demo` (and a one-off `carga run`
//! on a host without a server) starts from the system's binaries: initdb,
//! pg_ctl start on a socket only, and stop.

use std::path::{Path, PathBuf};
use std::process::Command;

pub(super) fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Finds `name` (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin.
fn find_pg_binary(name: &str) -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    for root in ["/usr/lib/postgresql", "/usr/local/pgsql", "/usr/pgsql"] {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        let mut versions: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        versions.sort();
        for version in versions.iter().rev() {
            let candidate = version.join("bin").join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Starts (initialising if needed) a cluster in `dir` listening only on a
/// socket in `dir`. As root, runs the binaries as the `postgres` user through
/// `runuser`, since initdb and postgres refuse to run as root. Returns the
/// database user to connect as.
pub(super) fn start_private_cluster(dir: &Path, port: u16) -> std::result::Result<String, String> {
    let initdb =
        find_pg_binary("initdb").ok_or("initdb not found on PATH or under /usr/lib/postgresql")?;
    let pg_ctl =
        find_pg_binary("pg_ctl").ok_or("pg_ctl not found on PATH or under /usr/lib/postgresql")?;
    let as_root = running_as_root();
    let run = |program: &Path, args: &[&str]| -> std::result::Result<(), String> {
        let mut command = if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let output = command
            .args(args)
            .output()
            .map_err(|e| format!("failed to run {}: {e}", program.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed: {}",
                program.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if as_root {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .map_err(|e| format!("chown failed: {e}"))?;
        if !status.success() {
            return Err("running as root and the `postgres` user does not exist; run carga as an ordinary user or set DATABASE_URL".into());
        }
    }
    let dir_str = dir.to_string_lossy().to_string();
    if !dir.join("PG_VERSION").exists() {
        run(
            &initdb,
            &[
                "-D", &dir_str, "-A", "trust", "-U", "postgres", "-E", "UTF8",
            ],
        )?;
    }
    let options = format!("-c listen_addresses='' -k {dir_str} -p {port}");
    let log = dir.join("server.log").to_string_lossy().to_string();
    // `status` exits 0 only when a server runs on this directory (a stale
    // pid file after a reboot does not count).
    if run(&pg_ctl, &["-D", &dir_str, "status"]).is_err() {
        run(
            &pg_ctl,
            &["-D", &dir_str, "-o", &options, "-l", &log, "-w", "start"],
        )?;
    }
    tracing::warn!(dir = %dir.display(), port, "using a private PostgreSQL cluster; stop it with pg_ctl -D <dir> stop");
    Ok("postgres".into())
}

/// Stops a private cluster started by [`resolve`] (fast shutdown).
pub fn stop_private_cluster(dir: &Path) -> std::result::Result<(), String> {
    let pg_ctl = find_pg_binary("pg_ctl").ok_or("pg_ctl not found")?;
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
        c
    } else {
        Command::new(&pg_ctl)
    };
    let output = command
        .arg("-D")
        .arg(dir)
        .args(["-m", "fast", "-w", "stop"])
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}
