//! Locating the server binaries and running them as the right OS user.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (containers, CI), the
//! cluster's files are chowned to the `postgres` system user (created if missing) and
//! `initdb` / `pg_ctl` run through `runuser -u postgres --`; otherwise they run as the
//! current user. The effective uid is read from `/proc/self/status` (falling back to
//! `id -u`), so no `libc` dependency is needed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::Context as _;

/// How to install the servers the harness needs; part of every "binary missing" error.
pub const INSTALL_HINT: &str =
    "install them with `sudo apt-get install -y postgresql nats-server` \
     (or run `bash scripts/setup.sh`)";

/// The unprivileged user the PostgreSQL server runs as when the tests run as root.
const SERVER_USER_WHEN_ROOT: &str = "postgres";

/// The effective uid of this process.
pub(crate) fn euid() -> anyhow::Result<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        // "Uid:\t<real>\t<effective>\t<saved>\t<fs>"
        if let Some(euid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
        {
            return Ok(euid);
        }
    }
    let out = std::process::Command::new("id")
        .arg("-u")
        .output()
        .context("run `id -u`")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("parse output of `id -u`")
}

/// Finds `name`: the path in `env_var` if set, else on `PATH`, else in `extra_dirs`.
pub(crate) fn find_program(
    name: &str,
    env_var: Option<&str>,
    extra_dirs: &[&str],
) -> Option<PathBuf> {
    if let Some(p) = env_var.and_then(std::env::var_os) {
        return Some(PathBuf::from(p));
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `$PG_BIN_DIR`, else the newest
/// `/usr/lib/postgresql/<major>/bin`, else the directory of `initdb` on `PATH`.
pub(crate) fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        anyhow::ensure!(
            dir.join("initdb").is_file(),
            "PG_BIN_DIR={} has no initdb; {INSTALL_HINT}",
            dir.display()
        );
        return Ok(dir);
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let major = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((major, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    majors.sort();
    if let Some((_, bin)) = majors.pop() {
        return Ok(bin);
    }
    find_program("initdb", None, &[])
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .with_context(|| {
            format!(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; {INSTALL_HINT}"
            )
        })
}

/// The `nats-server` binary: `$NATS_SERVER_BIN`, else on `PATH`, else `/usr/sbin`.
pub(crate) fn nats_server_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from) {
        anyhow::ensure!(
            path.is_file(),
            "NATS_SERVER_BIN={} does not exist; {INSTALL_HINT}",
            path.display()
        );
        return Ok(path);
    }
    find_program(
        "nats-server",
        Some("NATS_SERVER_BIN"),
        &["/usr/sbin", "/usr/local/bin"],
    )
    .with_context(|| format!("`nats-server` not found; {INSTALL_HINT}"))
}

/// The OS user a server process runs as.
#[derive(Debug, Clone)]
pub(crate) enum ServerUser {
    /// The user running the tests.
    Current,
    /// Another user, switched to with `runuser` (we are root).
    Other { name: String, runuser: PathBuf },
}

impl ServerUser {
    /// The user PostgreSQL must run as: `postgres` (created when missing) if we are root.
    pub(crate) fn for_postgres() -> anyhow::Result<Self> {
        if euid()? != 0 {
            return Ok(Self::Current);
        }
        let name = SERVER_USER_WHEN_ROOT;
        let exists = std::process::Command::new("id")
            .args(["-u", name])
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            let out = std::process::Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home"])
                .args(["--shell", "/usr/sbin/nologin", name])
                .output()
                .context("run useradd to create the postgres system user")?;
            check_output("useradd", &out)?;
        }
        let runuser = find_program("runuser", None, &["/usr/sbin", "/sbin"]).context(
            "running as root needs `runuser` (util-linux) to start PostgreSQL as `postgres`",
        )?;
        Ok(Self::Other {
            name: name.to_owned(),
            runuser,
        })
    }

    /// A command running `program` as this user.
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> std::process::Command {
        match self {
            Self::Current => std::process::Command::new(program),
            Self::Other { name, runuser } => {
                let mut cmd = std::process::Command::new(runuser);
                cmd.args([OsStr::new("-u"), OsStr::new(name), OsStr::new("--")])
                    .arg(program);
                cmd
            }
        }
    }

    /// Hands `path` (recursively) to this user.
    pub(crate) fn chown(&self, path: &Path) -> anyhow::Result<()> {
        let Self::Other { name, .. } = self else {
            return Ok(());
        };
        let out = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{name}:"))
            .arg(path)
            .output()
            .context("run chown")?;
        check_output("chown", &out)
    }
}

/// Turns a failed command into an error carrying its stdout and stderr.
pub(crate) fn check_output(what: &str, out: &Output) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    anyhow::bail!(
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// Sends `signal` (e.g. `TERM`, `KILL`) to `pid` with the `kill` command.
pub(crate) fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .output()
        .with_context(|| format!("run kill -{signal} {pid}"))?;
    check_output(&format!("kill -{signal} {pid}"), &out)
}

/// The last `n` lines of the file at `path` (empty if unreadable).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The pids of the direct children of `pid` (from `/proc/<pid>/task/*/children`).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Waits (up to 10 s) until process `pid` is gone or a zombie.
pub(crate) fn wait_gone(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // "pid (comm) S ...": the state follows the last ')'.
        let gone = state
            .rsplit_once(')')
            .is_none_or(|(_, rest)| rest.trim_start().starts_with('Z'));
        if gone {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
