//! Throw-away PostgreSQL clusters: the source (and sink target) databases of the tests.
//!
//! [`PgCluster::start`] runs `initdb` into a temp dir, configures logical replication on a
//! free loopback port (optionally TLS-only) and starts the server with `pg_ctl`; dropping
//! the cluster stops it (`-m immediate`, then `kill -9` from `postmaster.pid`) and removes
//! the directory. When the tests run as root the server runs as the `postgres` user
//! (see the `system` module).

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::Context as _;
use tokio_postgres::{Client, NoTls};

use crate::port::free_port;
use crate::system::{check_output, pg_bin_dir, tail, ServerUser};
use crate::tempdir::TempDir;
use crate::tls::{generate_tls, TlsFiles};

/// Superuser created by `initdb`.
const SUPERUSER: &str = "postgres";
/// Its password (scram-sha-256 over TCP; unix-socket connections are trusted).
const PASSWORD: &str = "pg-flo-e2e-password";
/// How many times start-up is retried on a fresh port when the chosen one got taken.
const START_ATTEMPTS: usize = 3;

/// The `wal_level` a cluster runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WalLevel {
    /// `wal_level = logical`: what pg_flo needs.
    #[default]
    Logical,
    /// `wal_level = replica`: for tests of the error a replicator reports.
    Replica,
}

impl WalLevel {
    fn as_str(self) -> &'static str {
        match self {
            Self::Logical => "logical",
            Self::Replica => "replica",
        }
    }
}

/// How to set up a [`PgCluster`].
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// `wal_level` (default logical).
    pub wal_level: WalLevel,
    /// Accept TCP clients over TLS only (`ssl = on`, `hostssl` in `pg_hba.conf`).
    pub tls: bool,
    /// Extra `postgresql.conf` settings, appended last (so they win), e.g.
    /// `("wal_sender_timeout", "2s")`.
    pub extra_conf: Vec<(String, String)>,
}

impl PgOptions {
    /// Options for a TLS-only cluster.
    pub fn tls() -> Self {
        Self {
            tls: true,
            ..Self::default()
        }
    }

    /// Options for a cluster with the given `wal_level`.
    pub fn wal_level(wal_level: WalLevel) -> Self {
        Self {
            wal_level,
            ..Self::default()
        }
    }
}

/// A running throw-away PostgreSQL cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    bin_dir: PathBuf,
    user: ServerUser,
    port: u16,
    tls: Option<TlsFiles>,
    running: bool,
    // Declared last: dropped after the fields above, and only after `Drop::drop` stopped
    // the server.
    dir: TempDir,
}

impl PgCluster {
    /// Creates and starts a cluster (see the module docs).
    pub async fn start(opts: PgOptions) -> anyhow::Result<Self> {
        let bin_dir = pg_bin_dir()?;
        for tool in ["initdb", "pg_ctl", "postgres"] {
            anyhow::ensure!(
                bin_dir.join(tool).is_file(),
                "{} missing; {}",
                bin_dir.join(tool).display(),
                crate::system::INSTALL_HINT
            );
        }
        let user = ServerUser::for_postgres()?;
        let dir = TempDir::new("pg")?;
        let tls = if opts.tls {
            Some(generate_tls(&dir.path().join("tls"))?)
        } else {
            None
        };
        std::fs::create_dir(dir.path().join("sock")).context("create socket dir")?;
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).context("write pwfile")?;
        user.chown(dir.path())?;

        let mut cluster = Self {
            bin_dir,
            user,
            port: 0,
            tls,
            running: false,
            dir,
        };
        let mut initdb = cluster.command("initdb");
        initdb
            .arg("-D")
            .arg(cluster.data_dir())
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = run(initdb, "initdb").await?;
        check_output("initdb", &out)?;
        cluster.write_config(&opts)?;

        for attempt in 1..=START_ATTEMPTS {
            cluster.port = free_port()?;
            append(
                &cluster.data_dir().join("postgresql.conf"),
                &format!("port = {}\n", cluster.port),
            )?;
            match cluster.pg_ctl_start().await {
                Ok(()) => return Ok(cluster),
                Err(e)
                    if attempt < START_ATTEMPTS
                        && std::fs::read_to_string(cluster.log_path())
                            .unwrap_or_default()
                            .contains("Address already in use") =>
                {
                    eprintln!("postgres port {} was taken, retrying: {e:#}", cluster.port);
                }
                Err(e) => return Err(e),
            }
        }
        anyhow::bail!("postgres did not start after {START_ATTEMPTS} attempts")
    }

    fn write_config(&self, opts: &PgOptions) -> anyhow::Result<()> {
        let data = self.data_dir();
        let mut conf = format!(
            "\n# pg-flo-e2e\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sock}'\n\
             wal_level = {wal_level}\n\
             max_replication_slots = 20\n\
             max_wal_senders = 20\n\
             wal_sender_timeout = '10s'\n\
             fsync = off\n\
             full_page_writes = off\n\
             shared_buffers = '32MB'\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n",
            sock = self.socket_dir().display(),
            wal_level = opts.wal_level.as_str(),
        );
        let host = if let Some(tls) = &self.tls {
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n",
                tls.server_cert.display(),
                tls.server_key.display(),
                tls.ca_cert.display(),
            ));
            "hostssl"
        } else {
            "host"
        };
        for (key, value) in &opts.extra_conf {
            conf.push_str(&format!("{key} = '{}'\n", value.replace('\'', "''")));
        }
        append(&data.join("postgresql.conf"), &conf)?;
        // Overwriting an existing file keeps its owner (the server user).
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 local replication all trust\n\
                 {host} all all 127.0.0.1/32 scram-sha-256\n\
                 {host} replication all 127.0.0.1/32 scram-sha-256\n"
            ),
        )
        .context("write pg_hba.conf")
    }

    async fn pg_ctl_start(&mut self) -> anyhow::Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"]);
        let out = run(cmd, "pg_ctl start").await?;
        check_output("pg_ctl start", &out).with_context(|| {
            format!(
                "postgres failed to start on port {}; server log tail:\n{}",
                self.port,
                tail(&self.log_path(), 30)
            )
        })?;
        self.running = true;
        Ok(())
    }

    async fn pg_ctl_stop(&mut self, mode: &str) -> anyhow::Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60", "stop"]);
        let out = run(cmd, "pg_ctl stop").await?;
        check_output("pg_ctl stop", &out)?;
        self.running = false;
        Ok(())
    }

    /// Stops the server (`-m fast`); [`PgCluster::start_again`] brings it back. For tests of
    /// how clients ride out an outage.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_stop("fast").await
    }

    /// Starts a stopped server again on the same port with the same data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_start().await
    }

    /// Stops (`-m fast`, if running) and starts the server again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.running {
            self.stop().await?;
        }
        self.start_again().await
    }

    /// Kills every process of the server with SIGKILL (a power loss of the database host, as
    /// far as its clients can tell); [`PgCluster::start_again`] brings it back through crash
    /// recovery.
    pub fn crash(&mut self) -> anyhow::Result<()> {
        let Some(postmaster) = self.postmaster_pid() else {
            self.running = false;
            return Ok(());
        };
        // Stopped first, the postmaster forks no new backend and restarts nothing while its
        // children are listed; then everything dies at once, postmaster first, so no child
        // lives on to recover or restart the others.
        crate::system::send_signal(postmaster, "STOP")?;
        let children = crate::system::children_of(postmaster);
        crate::system::send_signal(postmaster, "KILL")?;
        for pid in &children {
            let _ = crate::system::send_signal(*pid, "KILL");
        }
        for pid in children.into_iter().chain([postmaster]) {
            crate::system::wait_gone(pid);
        }
        // The killed postmaster may linger as a zombie (nobody reaps daemons in a container),
        // and PostgreSQL refuses to start while the pid in its lock file exists: after a real
        // crash that pid is gone, so the lock file goes too.
        std::fs::remove_file(self.data_dir().join("postmaster.pid"))
            .context("remove the crashed server's postmaster.pid")?;
        let socket_lock = self
            .socket_dir()
            .join(format!(".s.PGSQL.{}.lock", self.port));
        let _ = std::fs::remove_file(socket_lock);
        self.running = false;
        Ok(())
    }

    /// Freezes the server and every backend (SIGSTOP): connections stay open, nothing is
    /// answered, as on a host that hangs.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal_all("STOP")
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal_all("CONT")
    }

    /// Whether the server is up (started and not stopped or crashed through this handle).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Sends `signal` to the postmaster and every backend (each backend is a session of its
    /// own, so a process-group signal would miss them).
    fn signal_all(&self, signal: &str) -> anyhow::Result<()> {
        let postmaster = self
            .postmaster_pid()
            .context("postgres is not running (no postmaster.pid)")?;
        if signal == "CONT" {
            for pid in crate::system::children_of(postmaster) {
                let _ = crate::system::send_signal(pid, signal);
            }
            return crate::system::send_signal(postmaster, signal);
        }
        crate::system::send_signal(postmaster, signal)?;
        for pid in crate::system::children_of(postmaster) {
            let _ = crate::system::send_signal(pid, signal);
        }
        Ok(())
    }

    fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    }

    /// The TCP port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP host, `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The superuser name.
    pub fn user(&self) -> &'static str {
        SUPERUSER
    }

    /// The superuser's password.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// Whether the cluster accepts TCP clients over TLS only.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The CA certificate that signed the server certificate (TLS clusters only).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_cert.as_path())
    }

    /// The server log (`pg_ctl -l`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the server's unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// A keyword/value connection string for TCP as the superuser, e.g.
    /// `host=127.0.0.1 port=5433 user=postgres password=... dbname=app`; TLS clusters add
    /// `sslmode=require` (verify with [`PgCluster::ca_cert_path`]).
    pub fn conn_string(&self, dbname: &str) -> String {
        let mut s = format!(
            "host={} port={} user={} password={} dbname={dbname}",
            self.host(),
            self.port,
            SUPERUSER,
            PASSWORD
        );
        if self.tls.is_some() {
            s.push_str(" sslmode=require");
        }
        s
    }

    /// Connects to `dbname` as the superuser and spawns the connection task: over TCP with
    /// the password, or over the unix socket for TLS clusters (so no TLS client is needed).
    pub async fn client(&self, dbname: &str) -> anyhow::Result<Client> {
        let mut config = tokio_postgres::Config::new();
        config.user(SUPERUSER).dbname(dbname);
        if self.tls.is_some() {
            config.host_path(self.socket_dir()).port(self.port);
        } else {
            config.host(self.host()).port(self.port).password(PASSWORD);
        }
        let (client, connection) = config
            .connect(NoTls)
            .await
            .with_context(|| format!("connect to database {dbname} on port {}", self.port))?;
        tokio::spawn(async move {
            // The error surfaces on the client's next call.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Creates database `name`.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        let client = self.client("postgres").await?;
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await
            .with_context(|| format!("create database {name}"))?;
        Ok(())
    }

    fn command(&self, tool: &str) -> std::process::Command {
        let mut cmd = self.user.command(self.bin_dir.join(tool));
        // The test's cwd may be unreadable for the server user.
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn kill_from_pid_file(&self) {
        if let Some(pid) = self.postmaster_pid() {
            let _ = crate::system::send_signal(pid, "KILL");
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- postgres log {} (tail) ---\n{}",
                self.log_path().display(),
                tail(&self.log_path(), 40)
            );
        }
        if !self.data_dir().join("postmaster.pid").exists() {
            return;
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "10", "stop"]);
        let stopped = cmd.output().is_ok_and(|o| o.status.success());
        if !stopped {
            self.kill_from_pid_file();
        }
    }
}

/// Renders every row of `table` (`schema.table`) as text, one per line, ordered by
/// `order_by` (an SQL expression list over alias `t`, e.g. `id` or `t.a, t.b`): exact
/// source/target comparisons of whole tables.
pub async fn dump_table(client: &Client, table: &str, order_by: &str) -> anyhow::Result<String> {
    let rows = client
        .query(
            &format!("SELECT t::text FROM {table} t ORDER BY {order_by}"),
            &[],
        )
        .await
        .with_context(|| format!("dump table {table}"))?;
    let lines = rows
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("read rows of {table}"))?;
    Ok(lines.join("\n"))
}

/// `SELECT count(*)` of `table`.
pub async fn count(client: &Client, table: &str) -> anyhow::Result<i64> {
    let row = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .with_context(|| format!("count rows of {table}"))?;
    row.try_get(0)
        .with_context(|| format!("read count of {table}"))
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn run(cmd: std::process::Command, what: &str) -> anyhow::Result<Output> {
    tokio::process::Command::from(cmd)
        .output()
        .await
        .with_context(|| format!("run {what}"))
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("append to {}", path.display()))
}
