//! A whole pipeline for end-to-end tests: one PostgreSQL cluster holding the source and target
//! databases, one NATS server, and `pg_flo replicator` / `pg_flo worker` processes.

use std::path::Path;
use std::time::Duration;

use tokio_postgres::Client;

use crate::{dump_table, wait_for_eq, NatsServer, PgCluster, PgOptions, Process};

/// How long a test waits for changes to arrive.
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Pipeline {
    pub pg: PgCluster,
    pub nats: NatsServer,
    pub source_db: String,
    pub target_db: String,
}

impl Pipeline {
    /// Starts PostgreSQL (with databases `source` and `target`) and NATS.
    pub async fn start(opts: PgOptions) -> anyhow::Result<Self> {
        let pg = PgCluster::start(opts).await?;
        let nats = NatsServer::start().await?;
        pg.create_database("source").await?;
        pg.create_database("target").await?;
        Ok(Pipeline {
            pg,
            nats,
            source_db: "source".into(),
            target_db: "target".into(),
        })
    }

    pub async fn source(&self) -> anyhow::Result<Client> {
        self.pg.client(&self.source_db).await
    }

    pub async fn target(&self) -> anyhow::Result<Client> {
        self.pg.client(&self.target_db).await
    }

    /// Runs `sql` on both databases (creating the same schema in each).
    pub async fn both(&self, sql: &str) -> anyhow::Result<()> {
        self.source().await?.batch_execute(sql).await?;
        self.target().await?.batch_execute(sql).await?;
        Ok(())
    }

    fn sslmode(&self) -> &'static str {
        if self.pg.is_tls() {
            "verify-full"
        } else {
            "disable"
        }
    }

    /// Flags of `pg_flo replicator` for `group` and `tables` (comma-separated, may be empty).
    pub fn replicator_args(&self, group: &str, tables: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "replicator".into(),
            "--host".into(),
            if self.pg.is_tls() {
                "localhost".into()
            } else {
                self.pg.host().into()
            },
            "--port".into(),
            self.pg.port().to_string(),
            "--dbname".into(),
            self.source_db.clone(),
            "--user".into(),
            self.pg.user().into(),
            "--password".into(),
            self.pg.password().into(),
            "--group".into(),
            group.into(),
            "--nats-url".into(),
            self.nats.url(),
            "--sslmode".into(),
            self.sslmode().into(),
        ];
        if let Some(ca) = self.pg.ca_cert_path() {
            args.push("--sslrootcert".into());
            args.push(ca.display().to_string());
        }
        if !tables.is_empty() {
            args.push("--tables".into());
            args.push(tables.into());
        }
        args
    }

    /// Flags of `pg_flo worker postgres` for `group`.
    pub fn pg_worker_args(&self, group: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "worker".into(),
            "postgres".into(),
            "--group".into(),
            group.into(),
            "--nats-url".into(),
            self.nats.url(),
            "--target-host".into(),
            if self.pg.is_tls() {
                "localhost".into()
            } else {
                self.pg.host().into()
            },
            "--target-port".into(),
            self.pg.port().to_string(),
            "--target-dbname".into(),
            self.target_db.clone(),
            "--target-user".into(),
            self.pg.user().into(),
            "--target-password".into(),
            self.pg.password().into(),
            "--target-sslmode".into(),
            self.sslmode().into(),
        ];
        if let Some(ca) = self.pg.ca_cert_path() {
            args.push("--target-sslrootcert".into());
            args.push(ca.display().to_string());
        }
        args
    }

    /// Flags of `pg_flo worker file` for `group`.
    pub fn file_worker_args(&self, group: &str, dir: &Path) -> Vec<String> {
        vec![
            "worker".into(),
            "file".into(),
            "--group".into(),
            group.into(),
            "--nats-url".into(),
            self.nats.url(),
            "--file-output-dir".into(),
            dir.display().to_string(),
        ]
    }

    pub fn spawn(name: &str, args: &[String]) -> anyhow::Result<Process> {
        Process::spawn_pg_flo(name, args, [("PG_FLO_LOG_LEVEL", "info")])
    }

    /// Starts a replicator and waits until it streams.
    pub async fn start_replicator(&self, group: &str, tables: &str) -> anyhow::Result<Process> {
        self.start_replicator_with(group, tables, &[]).await
    }

    /// Starts a replicator with `extra` arguments and waits until it streams.
    pub async fn start_replicator_with(
        &self,
        group: &str,
        tables: &str,
        extra: &[&str],
    ) -> anyhow::Result<Process> {
        let mut args = self.replicator_args(group, tables);
        args.extend(extra.iter().map(|a| a.to_string()));
        let p = Self::spawn(&format!("replicator-{group}"), &args)?;
        p.wait_streaming().await?;
        Ok(p)
    }

    /// Starts a postgres worker and waits until it consumes.
    pub async fn start_pg_worker(&self, group: &str) -> anyhow::Result<Process> {
        let p = Self::spawn(&format!("worker-{group}"), &self.pg_worker_args(group))?;
        p.wait_for_output("worker consuming", Duration::from_secs(60))
            .await?;
        Ok(p)
    }

    /// Waits until `table` (ordered by `order_by`) is the same in source and target.
    pub async fn wait_equal(&self, table: &str, order_by: &str) -> anyhow::Result<()> {
        let source = self.source().await?;
        let target = self.target().await?;
        let expected = dump_table(&source, table, order_by).await?;
        wait_for_eq(
            &format!("target {table} equal to source"),
            ARRIVAL_TIMEOUT,
            expected,
            || dump_table(&target, table, order_by),
        )
        .await
    }
}
