//! The pg_flo binaries (and any other program) as child processes of a test.
//!
//! A [`Process`] writes stdout and stderr to files in its own temp dir, so tests can assert
//! on log lines while it runs; both are printed when a test panics. Dropping it kills the
//! process.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::system::send_signal;
use crate::tempdir::TempDir;
use crate::wait::{wait_for, wait_for_ok};

/// A running child process with captured output; killed on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    dir: TempDir,
}

impl Process {
    /// Spawns `cmd` (program, args, env and cwd as the caller set them), sending its stdout
    /// and stderr to files; `name` labels errors and dumps.
    pub fn spawn(name: &str, mut cmd: Command) -> anyhow::Result<Self> {
        let dir = TempDir::new("proc")?;
        let stdout =
            std::fs::File::create(dir.path().join("stdout")).context("create stdout file")?;
        let stderr =
            std::fs::File::create(dir.path().join("stderr")).context("create stderr file")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawn {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            status: None,
            dir,
        })
    }

    /// Spawns the `pg_flo` binary (see [`pg_flo_bin`]) with `args` and extra `envs`.
    pub fn spawn_pg_flo<I, S, E, K, V>(name: &str, args: I, envs: E) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
        E: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut cmd = Command::new(pg_flo_bin()?);
        cmd.args(args).envs(envs);
        Self::spawn(name, cmd)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The label given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the captured stdout.
    pub fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("stdout")
    }

    /// Path of the captured stderr.
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr")
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path())
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path())
    }

    /// stdout and stderr, labelled, for error messages.
    pub fn output_dump(&self) -> String {
        format!(
            "--- {name} stdout ---\n{}\n--- {name} stderr ---\n{}",
            self.stdout().trim_end(),
            self.stderr().trim_end(),
            name = self.name
        )
    }

    /// Waits until stdout or stderr contains `needle`.
    /// Waits until a replicator streams (after its copy, if it has one: up to 5 minutes).
    pub async fn wait_streaming(&self) -> anyhow::Result<()> {
        self.wait_for_output("streaming changes", Duration::from_secs(300))
            .await
    }

    /// Waits until the process exits non-zero with each of `needles` in its output.
    pub async fn expect_failure(&mut self, needles: &[&str]) -> anyhow::Result<()> {
        let dump = |p: &Process| format!("{}\n{}", p.name(), p.output_dump());
        let status = self
            .wait_exit(Duration::from_secs(60))
            .await
            .ok_or_else(|| anyhow::anyhow!("did not exit: {}", dump(self)))?;
        anyhow::ensure!(!status.success(), "exited 0: {}", dump(self));
        let out = format!("{}{}", self.stdout(), self.stderr());
        for n in needles {
            anyhow::ensure!(out.contains(n), "{n:?} not in the output of {}", dump(self));
        }
        Ok(())
    }

    pub async fn wait_for_output(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_for_ok(
            &format!("{} to print {needle:?}", self.name),
            timeout,
            || async {
                let (out, err) = (self.stdout(), self.stderr());
                if out.contains(needle) || err.contains(needle) {
                    Ok(())
                } else {
                    Err(format!("not yet; stderr tail: {}", last_lines(&err, 5)))
                }
            },
        )
        .await
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("poll {}", self.name))?;
        }
        Ok(self.status)
    }

    /// Sends SIGTERM (graceful shutdown); see [`Process::wait_exit`].
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        send_signal(self.pid(), "TERM")
    }

    /// Peak resident memory of the process so far (`VmHWM`), in KiB; `None` once it exited.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Freezes the process (SIGSTOP), as a paused VM or a node cut off would be.
    pub fn pause(&self) -> anyhow::Result<()> {
        send_signal(self.pid(), "STOP")
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        send_signal(self.pid(), "CONT")
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn kill_9(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_status()? {
            return Ok(status);
        }
        // Fails only if it already exited; `wait` reaps it either way.
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .with_context(|| format!("reap {}", self.name))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let what = format!("{} to exit", self.name);
        wait_for(&what, timeout, || {
            let status = self.try_status().ok().flatten();
            async move { status }
        })
        .await
        .ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.output_dump());
        }
        let _ = self.kill_9();
    }
}

/// The `pg_flo` binary: `$PG_FLO_BIN` if set, else `pg_flo` in the cargo target profile
/// directory of the running test executable (`target/<profile>/deps/..`).
pub fn pg_flo_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PG_FLO_BIN") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "PG_FLO_BIN={} does not exist",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locate the running test executable")?;
    let mut dir = exe
        .parent()
        .context("test executable has no parent directory")?;
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir = dir.parent().context("deps directory has no parent")?;
    }
    let bin = dir.join("pg_flo");
    anyhow::ensure!(
        bin.is_file(),
        "pg_flo binary not found at {}; run `cargo build --bins` first (or set PG_FLO_BIN)",
        bin.display()
    );
    Ok(bin)
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
