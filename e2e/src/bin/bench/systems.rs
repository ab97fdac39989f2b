//! The two replication paths under test, started and stopped the same way so that each phase
//! measures one of them alone on the machine:
//! - [`PgFlo`]: `pg_flo replicator` -> NATS JetStream -> `pg_flo worker postgres` into database
//!   `target` (group `bench`, default settings);
//! - [`Native`]: PostgreSQL's own logical replication, a subscription in database `native` of
//!   the same cluster. A subscription in the cluster it reads from cannot create its slot
//!   (`CREATE_REPLICATION_SLOT` waits for the `CREATE SUBSCRIPTION` transaction itself), so the
//!   slot is made first with `pg_create_logical_replication_slot(.., 'pgoutput')` and the
//!   subscription with `create_slot = false, enabled = false`; `ALTER SUBSCRIPTION .. ENABLE`
//!   starts it.
//!
//! Both slots exist before any workload, so both read the same WAL. Stopping waits until the
//! slot is released, so the next start never meets an active slot (the apply worker would
//! wait `wal_retrieve_retry_interval` and retry).

use std::time::Duration;

use anyhow::Context as _;
use e2e::{quote_ident, wait_for_eq, Pipeline, Process};
use tokio_postgres::Client;

use crate::cpu;

/// How long a stopped pipeline may take to release its slot.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(60);

/// pg_flo for one group and its tables.
pub struct PgFlo {
    pub group: &'static str,
    pub tables: &'static str,
}

/// CPU time of a pipeline's processes over a phase, in ms.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu {
    pub replicator: Option<f64>,
    pub worker: Option<f64>,
    pub nats_server: Option<f64>,
    /// PostgreSQL backends: the walsender, and the apply worker (native) or the worker's
    /// target sessions (pg_flo).
    pub postgres_backends: Option<f64>,
}

/// A running replicator and worker.
pub struct PgFloRun {
    pub replicator: Process,
    pub worker: Process,
    nats_start_ms: Option<f64>,
}

impl PgFlo {
    /// Starts the replicator and the worker without waiting for them.
    pub fn spawn(&self, p: &Pipeline) -> anyhow::Result<PgFloRun> {
        let nats_start_ms = p.nats.pid().and_then(cpu::process_ms);
        let replicator = Pipeline::spawn(
            &format!("replicator-{}", self.group),
            &p.replicator_args(self.group, self.tables),
        )?;
        let worker = Pipeline::spawn(
            &format!("worker-{}", self.group),
            &p.pg_worker_args(self.group),
        )?;
        Ok(PgFloRun {
            replicator,
            worker,
            nats_start_ms,
        })
    }

    pub fn slot(&self) -> String {
        pg_flo_source::names::slot_name(self.group)
    }
}

impl PgFloRun {
    /// Waits until the replicator streams and the worker consumes.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        self.replicator.wait_streaming().await?;
        self.worker
            .wait_for_output("worker consuming", Duration::from_secs(60))
            .await
    }

    /// CPU time of the replicator and worker since they started, of nats-server since
    /// [`PgFlo::spawn`], and of the walsender of `slot` and the worker's target sessions.
    pub async fn cpu(&self, p: &Pipeline, src: &Client, target: &Client, group: &str) -> Cpu {
        let nats_server = match (p.nats.pid().and_then(cpu::process_ms), self.nats_start_ms) {
            (Some(now), Some(start)) => Some(now - start),
            _ => None,
        };
        let walsender = slot_backend_ms(src, &pg_flo_source::names::slot_name(group)).await;
        let sessions = backends_ms(
            target,
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            &format!("pg_flo_worker_{group}"),
        )
        .await;
        Cpu {
            replicator: cpu::process_ms(self.replicator.pid()),
            worker: cpu::process_ms(self.worker.pid()),
            nats_server,
            postgres_backends: walsender.zip(sessions).map(|(a, b)| a + b),
        }
    }

    /// Peak RSS of the replicator and the worker so far, in MiB.
    pub fn peak_rss_mib(&self) -> (Option<u64>, Option<u64>) {
        let mib = |kib: Option<u64>| kib.map(|k| k / 1024);
        (
            mib(self.replicator.peak_rss_kib()),
            mib(self.worker.peak_rss_kib()),
        )
    }

    /// Stops both (SIGTERM) and waits until they exited and the slot is released.
    pub async fn stop(mut self, src: &Client, slot: &str) -> anyhow::Result<()> {
        for proc in [&mut self.replicator, &mut self.worker] {
            proc.terminate()?;
            if proc.wait_exit(Duration::from_secs(30)).await.is_none() {
                proc.kill_9()?;
            }
        }
        wait_released(src, slot).await
    }
}

/// A native subscription (in its own database) to a publication of its own on the source.
pub struct Native {
    pub name: String,
}

impl Native {
    /// Creates publication `<name>_pub` for `tables` and slot `<name>` on the source, and a
    /// disabled subscription `<name>` in `sub_db` (see the module docs). `copy_data` selects
    /// the initial sync.
    pub async fn create(
        src: &Client,
        sub_db: &Client,
        source_conn: &str,
        name: &str,
        tables: &[&str],
        copy_data: bool,
    ) -> anyhow::Result<Self> {
        let publication = format!("{name}_pub");
        src.batch_execute(&format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_ident(&publication),
            tables.join(", ")
        ))
        .await
        .context("create the native publication")?;
        src.execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&name],
        )
        .await
        .context("create the native slot")?;
        sub_db
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {sub} CONNECTION '{conn}' PUBLICATION {publication}
                 WITH (connect = true, create_slot = false, slot_name = '{name}',
                       enabled = false, copy_data = {copy_data})",
                sub = quote_ident(name),
                conn = source_conn.replace('\'', "''"),
                publication = quote_ident(&publication),
            ))
            .await
            .context("create the native subscription")?;
        Ok(Self { name: name.into() })
    }

    pub async fn enable(&self, sub_db: &Client) -> anyhow::Result<()> {
        sub_db
            .batch_execute(&format!(
                "ALTER SUBSCRIPTION {} ENABLE",
                quote_ident(&self.name)
            ))
            .await
            .context("enable the native subscription")
    }

    /// Disables the subscription and waits until its slot is released.
    pub async fn disable(&self, sub_db: &Client, src: &Client) -> anyhow::Result<()> {
        sub_db
            .batch_execute(&format!(
                "ALTER SUBSCRIPTION {} DISABLE",
                quote_ident(&self.name)
            ))
            .await
            .context("disable the native subscription")?;
        wait_released(src, &self.name).await
    }

    /// CPU time of the walsender of its slot and of its apply worker, since they started
    /// (at [`Native::enable`]).
    pub async fn cpu(&self, src: &Client, sub_db: &Client) -> Cpu {
        let walsender = slot_backend_ms(src, &self.name).await;
        let apply = backends_ms(
            sub_db,
            "SELECT pid FROM pg_stat_subscription WHERE subname = $1 AND pid IS NOT NULL",
            &self.name,
        )
        .await;
        Cpu {
            postgres_backends: walsender.zip(apply).map(|(a, b)| a + b),
            ..Cpu::default()
        }
    }
}

/// CPU time of the walsender holding `slot`.
async fn slot_backend_ms(src: &Client, slot: &str) -> Option<f64> {
    backends_ms(
        src,
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
        slot,
    )
    .await
}

/// Sum of the CPU time of the backends whose pids `query` (one text parameter) returns.
async fn backends_ms(client: &Client, query: &str, param: &str) -> Option<f64> {
    let rows = client.query(query, &[&param]).await.ok()?;
    if rows.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for row in rows {
        let pid: i32 = row.try_get(0).ok()?;
        total += cpu::process_ms(u32::try_from(pid).ok()?)?;
    }
    Some(total)
}

/// Waits until no walsender holds `slot`.
async fn wait_released(src: &Client, slot: &str) -> anyhow::Result<()> {
    wait_for_eq(
        &format!("slot {slot} released"),
        RELEASE_TIMEOUT,
        Some(false),
        || async {
            let row = src
                .query_opt(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await?;
            row.map(|r| r.try_get::<_, bool>(0)).transpose()
        },
    )
    .await
}
