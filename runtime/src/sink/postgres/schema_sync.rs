//! `--target-sync-schema`: `pg_dump --schema-only` of the source piped into `psql` on the
//! target, as pg_flo does. psql runs without `ON_ERROR_STOP`, so SQL errors such as "already
//! exists" (a re-run, or objects created beforehand) are tolerated; only failing to run either
//! program, or a non-zero exit, is an error.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use secrecy::ExposeSecret;

use crate::config::{PgConnConfig, PostgresSinkConfig, SslMode};
use crate::sink::SinkError;

/// Copies the source's schema to the target.
pub(super) async fn sync_schema(cfg: &PostgresSinkConfig) -> Result<(), SinkError> {
    let source = cfg.source.clone().ok_or_else(|| {
        SinkError::Invalid(
            "--target-sync-schema needs the source database (--source-host, --source-dbname, \
             --source-user, ...)"
                .into(),
        )
    })?;
    let target = cfg.target.clone();
    let pg_dump = find_tool("pg_dump")?;
    let psql = find_tool("psql")?;
    tokio::task::spawn_blocking(move || run(&pg_dump, &psql, &source, &target))
        .await
        .map_err(|e| SinkError::Invalid(format!("the schema sync task failed: {e}")))?
}

/// `name` on `PATH`, else the newest `/usr/lib/postgresql/<version>/bin/<name>`.
fn find_tool(name: &str) -> Result<PathBuf, SinkError> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let candidate = entry.path().join("bin").join(name);
            candidate.is_file().then_some((version, candidate))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).ok_or_else(|| {
        SinkError::Invalid(format!(
            "--target-sync-schema needs {name}, found neither on PATH nor in \
             /usr/lib/postgresql/*/bin (install the PostgreSQL client, e.g. \
             `apt-get install postgresql-client`)"
        ))
    })
}

fn sslmode(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

/// Points libpq at `conn` through `PG*` variables (the password never appears in arguments
/// or logs).
fn pg_env(cmd: &mut Command, conn: &PgConnConfig) {
    for var in ["PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGPASSFILE"] {
        cmd.env_remove(var);
    }
    cmd.env("PGHOST", &conn.host)
        .env("PGPORT", conn.port.to_string())
        .env("PGDATABASE", &conn.dbname)
        .env("PGUSER", &conn.user)
        .env("PGPASSWORD", conn.password.expose_secret())
        .env("PGSSLMODE", sslmode(conn.sslmode))
        .env("PGCONNECT_TIMEOUT", "30");
    match &conn.sslrootcert {
        Some(path) => cmd.env("PGSSLROOTCERT", path),
        None => cmd.env_remove("PGSSLROOTCERT"),
    };
}

fn spawn_error(tool: &Path, source: std::io::Error) -> SinkError {
    SinkError::Io {
        what: format!("running {} for --target-sync-schema", tool.display()),
        source,
    }
}

fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn run(
    pg_dump: &Path,
    psql: &Path,
    source: &PgConnConfig,
    target: &PgConnConfig,
) -> Result<(), SinkError> {
    tracing::info!(
        source = %source.describe(),
        target = %target.describe(),
        "copying the source schema to the target (pg_dump --schema-only | psql)"
    );
    let mut dump_cmd = Command::new(pg_dump);
    dump_cmd
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--no-publications",
            "--no-subscriptions",
            // pg_flo's own capture objects (DDL tracking) belong to the source only.
            "--exclude-schema=internal_pg_flo",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    pg_env(&mut dump_cmd, source);
    let mut dump = dump_cmd.spawn().map_err(|e| spawn_error(pg_dump, e))?;
    let (Some(dump_out), Some(mut dump_err)) = (dump.stdout.take(), dump.stderr.take()) else {
        let _ = dump.kill();
        return Err(SinkError::Invalid(format!(
            "{} started without its output pipes",
            pg_dump.display()
        )));
    };
    let dump_err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = dump_err.read_to_end(&mut buf);
        buf
    });

    let mut psql_cmd = Command::new(psql);
    psql_cmd
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=0"])
        .stdin(Stdio::from(dump_out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    pg_env(&mut psql_cmd, target);
    let psql_out = match psql_cmd.spawn() {
        Ok(child) => child.wait_with_output(),
        Err(e) => {
            let _ = dump.kill();
            let _ = dump.wait();
            return Err(spawn_error(psql, e));
        }
    };
    let dump_status = dump.wait().map_err(|e| spawn_error(pg_dump, e))?;
    let dump_stderr = dump_err_reader.join().unwrap_or_default();
    let psql_out = psql_out.map_err(|e| spawn_error(psql, e))?;

    if !dump_status.success() {
        return Err(SinkError::Invalid(format!(
            "{} of the source ({}) failed ({dump_status}): {}",
            pg_dump.display(),
            source.describe(),
            tail(&dump_stderr)
        )));
    }
    if !psql_out.status.success() {
        return Err(SinkError::Invalid(format!(
            "{} into the target ({}) failed ({}): {}",
            psql.display(),
            target.describe(),
            psql_out.status,
            tail(&psql_out.stderr)
        )));
    }
    let stderr = String::from_utf8_lossy(&psql_out.stderr);
    let errors = stderr.lines().filter(|l| l.contains("ERROR:")).count();
    if errors > 0 {
        tracing::info!(
            errors,
            "schema sync: psql reported SQL errors (tolerated, such as objects that already exist)"
        );
        tracing::debug!(stderr = %stderr, "schema sync: psql errors");
    }
    Ok(())
}
