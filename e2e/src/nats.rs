//! Throw-away NATS servers with JetStream: the transport between replicator and worker.
//!
//! [`NatsServer::start`] runs `nats-server -js` on a free loopback port with its store in a
//! temp dir and waits until clients get the `INFO` line and `/healthz` reports ready.
//! [`NatsServer::restart`] brings it back on the same port and store, so streams and
//! consumers survive; dropping it kills the server and removes the directory.
//! [`NatsServer::spawn_config`] runs a server from a configuration file instead (e.g. one
//! member of a cluster, from the configuration the operator renders).

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::port::free_port;
use crate::system::{nats_server_bin, send_signal, tail};
use crate::tempdir::TempDir;
use crate::wait::wait_for;

/// How long a start waits for the server to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop waits for the server to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times start-up is retried on fresh ports when a chosen one got taken.
const START_ATTEMPTS: usize = 3;

/// How [`NatsServer::spawn_config`] runs the server.
#[derive(Debug)]
struct ConfigRun {
    file: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

/// A running throw-away `nats-server -js`; killed and deleted on drop.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    monitor_port: u16,
    child: Option<Child>,
    /// Certificates when the server requires TLS.
    tls: Option<crate::tls::TlsFiles>,
    /// User and password clients must present.
    auth: Option<(String, String)>,
    /// Run from this configuration file with these environment variables and extra
    /// arguments instead of flags.
    config: Option<ConfigRun>,
    // Declared last: removed only after `Drop::drop` killed the server.
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream (see the module docs).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(false, None).await
    }

    /// Starts a server that requires `user` and `password` from clients.
    pub async fn start_with_password(user: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_with(false, Some((user.to_owned(), password.to_owned()))).await
    }

    /// Starts a server that requires TLS from clients (certificate for `localhost` and
    /// 127.0.0.1, signed by [`NatsServer::ca_cert_path`]).
    pub async fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(true, None).await
    }

    async fn start_with(tls: bool, auth: Option<(String, String)>) -> anyhow::Result<Self> {
        let bin = nats_server_bin()?;
        let dir = TempDir::new("nats")?;
        let tls = if tls {
            let certs = dir.path().join("certs");
            std::fs::create_dir_all(&certs).context("create the certificate dir")?;
            Some(crate::tls::generate_tls(&certs)?)
        } else {
            None
        };
        let mut server = Self {
            bin,
            port: 0,
            monitor_port: 0,
            child: None,
            tls,
            auth,
            config: None,
            dir,
        };
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port()?;
            server.monitor_port = free_port()?;
            match server.start_again().await {
                Ok(()) => return Ok(server),
                Err(e)
                    if attempt < START_ATTEMPTS
                        && std::fs::read_to_string(server.log_path())
                            .unwrap_or_default()
                            .contains("address already in use") =>
                {
                    eprintln!("nats ports were taken, retrying: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
        anyhow::bail!("nats-server did not start after {START_ATTEMPTS} attempts")
    }

    /// Starts `nats-server -c <file>` without waiting for it (a clustered JetStream server is
    /// healthy only once its peers run: start them all, then [`NatsServer::wait_ready`] each).
    /// `config` gets the server's own directory (for the store and pid file) and returns the
    /// configuration text; the caller chose the ports written in it (`port`, `monitor_port`,
    /// e.g. from [`free_port`]). `env` is the server's environment (variables the
    /// configuration references as `$NAME`), `args` more arguments after `-c <file>`.
    /// [`NatsServer::start_again`] reuses all of them.
    pub fn spawn_config(
        config: impl FnOnce(&std::path::Path) -> String,
        env: Vec<(String, String)>,
        args: Vec<String>,
        port: u16,
        monitor_port: u16,
    ) -> anyhow::Result<Self> {
        let bin = nats_server_bin()?;
        let dir = TempDir::new("nats")?;
        let file = dir.path().join("nats.conf");
        std::fs::write(&file, config(dir.path())).context("write nats.conf")?;
        let mut server = Self {
            bin,
            port,
            monitor_port,
            child: None,
            tls: None,
            auth: None,
            config: Some(ConfigRun { file, env, args }),
            dir,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server certificate, for a TLS server.
    pub fn ca_cert_path(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|t| t.ca_cert.as_path())
    }

    /// The server's process id, while it runs (e.g. to read its CPU time in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring port (`/healthz`, `/jsz`, `/varz`).
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The JetStream store directory (`-sd`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// The server log (stdout and stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the server gracefully (SIGTERM, waiting for it to exit).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if child.try_wait().context("poll nats-server")?.is_none() {
            send_signal(child.id(), "TERM")?;
        }
        wait_for("nats-server to exit after SIGTERM", STOP_TIMEOUT, || {
            let exited = child.try_wait();
            async move { exited.ok().flatten() }
        })
        .await?;
        self.child = None;
        Ok(())
    }

    /// Freezes the server (SIGSTOP): clients' connections stay open, nothing is answered.
    pub fn pause(&self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("nats-server is not running")?;
        send_signal(child.id(), "STOP")
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("nats-server is not running")?;
        send_signal(child.id(), "CONT")
    }

    /// Kills the server (SIGKILL): a crash. [`NatsServer::start_again`] brings it back.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // Fails only if it already exited; `wait` reaps it either way.
            let _ = child.kill();
            child.wait().context("reap killed nats-server")?;
        }
        Ok(())
    }

    /// Stops the server (SIGTERM) if it runs and starts it again on the same port with the
    /// same JetStream store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    /// Starts a stopped or killed server on the same port with the same JetStream store and
    /// waits until it is ready.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready().await
    }

    /// Starts the process (not waiting for it).
    fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.is_running(), "nats-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("open nats-server log")?;
        let log_err = log.try_clone().context("clone nats-server log handle")?;
        let mut cmd = std::process::Command::new(&self.bin);
        if let Some(run) = &self.config {
            let child = cmd
                .arg("-c")
                .arg(&run.file)
                .args(&run.args)
                .env_clear()
                .envs(run.env.iter().map(|(k, v)| (k, v)))
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .with_context(|| format!("spawn {}", self.bin.display()))?;
            self.child = Some(child);
            return Ok(());
        }
        if let Some(tls) = &self.tls {
            cmd.arg("--tls")
                .arg("--tlscert")
                .arg(&tls.server_cert)
                .arg("--tlskey")
                .arg(&tls.server_key);
        }
        if let Some((user, password)) = &self.auth {
            cmd.arg("--user").arg(user).arg("--pass").arg(password);
        }
        let child = cmd
            .args(["-js", "-a", "127.0.0.1", "-n", "pg-flo-e2e"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor_port.to_string())
            .arg("-sd")
            .arg(self.store_dir())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server accepts clients and `/healthz` answers 200 (for a JetStream
    /// cluster member: it is current with the meta leader).
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let port = self.port;
        self.wait_ready_inner().await.with_context(|| {
            format!(
                "nats-server on port {port} not ready; log tail:\n{}",
                tail(&self.log_path(), 30)
            )
        })
    }

    async fn wait_ready_inner(&mut self) -> anyhow::Result<()> {
        let (port, monitor_port) = (self.port, self.monitor_port);
        let child = self.child.as_mut().context("nats-server process missing")?;
        let outcome = wait_for("nats-server to accept clients", READY_TIMEOUT, || {
            let exited = child.try_wait();
            async move {
                match exited {
                    Ok(Some(status)) => Some(Err(anyhow::anyhow!("nats-server exited: {status}"))),
                    Err(e) => Some(Err(anyhow::Error::new(e).context("poll nats-server"))),
                    Ok(None) => probe(port, monitor_port).await.ok().map(Ok),
                }
            }
        })
        .await?;
        if outcome.is_err() {
            self.child = None;
        }
        outcome
    }
}

/// Ready when a client gets the `INFO` line and `/healthz` answers 200.
async fn probe(port: u16, monitor_port: u16) -> anyhow::Result<()> {
    let info = read_info_line(port).await?;
    anyhow::ensure!(info.starts_with("INFO "), "unexpected greeting {info:?}");
    let mut http = TcpStream::connect(("127.0.0.1", monitor_port)).await?;
    http.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(2), http.read_to_string(&mut response)).await??;
    anyhow::ensure!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "healthz: {response}"
    );
    Ok(())
}

/// Connects to a NATS client port and returns the server's first line (`INFO {...}`).
pub async fn read_info_line(port: u16) -> anyhow::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(2),
        BufReader::new(stream).read_line(&mut line),
    )
    .await
    .context("timed out reading the INFO line")?
    .context("read the INFO line")?;
    Ok(line.trim_end().to_owned())
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- nats-server log {} (tail) ---\n{}",
                self.log_path().display(),
                tail(&self.log_path(), 40)
            );
        }
        let _ = self.kill();
    }
}
