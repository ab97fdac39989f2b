//! `pg-flo-operator`: command line of the pg_flo Kubernetes operator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kube::runtime::events::Reporter;
use pg_flo_config::runtime::LogFormat;
use pg_flo_operator::controller::{self, Context, RunConfig};
use pg_flo_operator::crd;
use pg_flo_operator::leader::{LeaderElector, LeaseConfig};
use pg_flo_operator::metrics::{self, Health, Metrics};

#[derive(Parser)]
#[command(
    name = "pg-flo-operator",
    version,
    about = "Kubernetes operator for pg_flo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Settings of `pg-flo-operator run`.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Namespaces to watch, comma-separated (default: all namespaces).
    #[arg(long, env = "PG_FLO_OPERATOR_WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Address of the admin endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long,
        env = "PG_FLO_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(
        long,
        env = "PG_FLO_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Elect a leader through a Lease so that several replicas can run.
    #[arg(long, env = "PG_FLO_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "PG_FLO_OPERATOR_LEASE_NAME",
        default_value = "pg-flo-operator"
    )]
    lease_name: String,
    /// Namespace of the leader Lease (default: the pod's namespace, `POD_NAMESPACE`).
    #[arg(long, env = "PG_FLO_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Image of the replicator and worker pods (default: the operator's own image, which the
    /// Helm chart sets here, so operator and runtime versions cannot skew).
    #[arg(long, env = "PG_FLO_OPERATOR_RUNTIME_IMAGE", default_value = DEFAULT_RUNTIME_IMAGE)]
    runtime_image: String,
    /// Pull Secrets (comma-separated names, in each group's namespace) of the replicator and
    /// worker pods of groups without `spec.imagePullSecrets`; the Helm chart passes its own
    /// `imagePullSecrets` here.
    #[arg(
        long,
        env = "PG_FLO_OPERATOR_RUNTIME_IMAGE_PULL_SECRETS",
        value_delimiter = ','
    )]
    runtime_image_pull_secrets: Vec<String>,
    /// Labels of the operator's own pods (comma-separated `key=value`), which the
    /// NetworkPolicy of every managed NATS admits to its client port (the status reads the
    /// worker's JetStream consumer there). The Helm chart passes its pods' selector labels.
    /// Empty: not admitted (where NetworkPolicies are enforced, `status.consumer` then reports
    /// NATS as unreachable for groups with a managed NATS).
    #[arg(long, env = "PG_FLO_OPERATOR_POD_LABELS", value_delimiter = ',', value_parser = parse_label)]
    operator_pod_labels: Vec<(String, String)>,
    /// Namespace of the operator's own pods (default: `POD_NAMESPACE`), for the same
    /// NetworkPolicies.
    #[arg(long, env = "PG_FLO_OPERATOR_NAMESPACE")]
    operator_namespace: Option<String>,
    /// How often the status of a healthy group (slot, lag) is refreshed.
    #[arg(long, env = "PG_FLO_OPERATOR_STATUS_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    status_interval: Duration,
}

/// One `key=value` label.
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// The operator's pods as the managed NATS NetworkPolicies admit them: `None` without labels
/// or namespace (logged).
fn operator_pods(
    labels: Vec<(String, String)>,
    namespace: Option<String>,
) -> Option<pg_flo_operator::resources::OperatorPods> {
    let namespace = namespace.filter(|n| !n.is_empty());
    match (labels.is_empty(), namespace) {
        (false, Some(namespace)) => Some(pg_flo_operator::resources::OperatorPods {
            namespace,
            labels: labels.into_iter().collect(),
        }),
        (empty, _) => {
            tracing::warn!(
                missing = if empty {
                    "PG_FLO_OPERATOR_POD_LABELS"
                } else {
                    "PG_FLO_OPERATOR_NAMESPACE or POD_NAMESPACE"
                },
                "managed NATS NetworkPolicies will not admit the operator: where they are \
                 enforced, the consumer status of such groups cannot be read"
            );
            None
        }
    }
}

/// Runtime image used when `--runtime-image` is not set.
const DEFAULT_RUNTIME_IMAGE: &str = concat!("ghcr.io/pg-flo/pg-flo:", env!("CARGO_PKG_VERSION"));

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (ReplicationGroup, Rule, Route) against the cluster.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as multi-document YAML, or write one file per CRD.
    Crd {
        /// Write `<plural>.pgflo.io.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run(args) = cli.command {
        return run_operator(args);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Run(_) => {}
        Command::Crd { out_dir: None } => {
            print!("{}", crd::all_crds_yaml()?);
        }
        Command::Crd { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            for c in crd::all_crds() {
                let path = dir.join(crd::crd_file_name(&c));
                std::fs::write(&path, crd::crd_yaml(&c)?)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn run_operator(args: RunArgs) -> ExitCode {
    init_logs(args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(operate(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

async fn operate(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await.map_err(|e| {
        format!("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG): {e}")
    })?;
    let metrics = Arc::new(Metrics::new()?);
    let health = Health::default();
    let addr = metrics::serve(args.metrics_addr, metrics.clone(), health.clone())
        .await
        .map_err(|e| format!("cannot listen on --metrics-addr {}: {e}", args.metrics_addr))?;
    tracing::info!(%addr, "admin endpoint listening");
    let identity = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "pg-flo-operator".into());
    let reporter = Reporter {
        controller: "pg-flo-operator".into(),
        instance: Some(identity.clone()),
    };
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            args.runtime_image,
            reporter,
            metrics.clone(),
            args.status_interval,
        )
        .with_runtime_image_pull_secrets(args.runtime_image_pull_secrets)
        .with_operator_pods(operator_pods(
            args.operator_pod_labels,
            args.operator_namespace
                .or_else(|| std::env::var("POD_NAMESPACE").ok()),
        ))
        .with_watch_namespaces(args.watch_namespaces.clone()),
    );
    let run_cfg = RunConfig {
        namespaces: args.watch_namespaces,
    };
    if !args.leader_election {
        health.set_ready(true);
        metrics.leader.set(1);
        controller::run(ctx, run_cfg).await;
        return Ok(());
    }
    let namespace = args
        .lease_namespace
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .filter(|s| !s.is_empty())
        .ok_or("leader election needs --lease-namespace or POD_NAMESPACE")?;
    let elector = LeaderElector::new(
        client,
        LeaseConfig::standard(args.lease_name, namespace, identity),
    );
    // A standby is healthy and ready: it waits for the lease.
    health.set_ready(true);
    tracing::info!("waiting for the leader lease");
    let acquired = elector.acquire().await;
    metrics.leader.set(1);
    tracing::info!("leader lease acquired: reconciling");
    tokio::select! {
        () = controller::run(ctx, run_cfg) => {
            elector.release().await;
            Ok(())
        }
        () = elector.hold(acquired) => {
            metrics.leader.set(0);
            Err("lost the leader lease; exiting so that only the leader reconciles".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_parse_with_their_defaults_and_lists() {
        let cli = Cli::try_parse_from([
            "pg-flo-operator",
            "run",
            "--watch-namespaces",
            "a,b",
            "--leader-election",
            "false",
            "--log-format",
            "json",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        assert_eq!(args.watch_namespaces, vec!["a", "b"]);
        assert!(!args.leader_election);
        assert!(matches!(args.log_format, LogFormat::Json));
        assert_eq!(args.metrics_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(args.status_interval, Duration::from_secs(30));
        assert_eq!(args.runtime_image, DEFAULT_RUNTIME_IMAGE);
        assert!(args.operator_pod_labels.is_empty());
    }

    #[test]
    fn operator_pod_labels_parse_and_need_a_namespace() {
        let cli = Cli::try_parse_from([
            "pg-flo-operator",
            "run",
            "--operator-pod-labels",
            "app.kubernetes.io/name=pg-flo-operator,app.kubernetes.io/instance=flo",
            "--operator-namespace",
            "ops",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        let pods = operator_pods(args.operator_pod_labels, args.operator_namespace).unwrap();
        assert_eq!(pods.namespace, "ops");
        assert_eq!(
            pods.labels.into_iter().collect::<Vec<_>>(),
            vec![
                ("app.kubernetes.io/instance".to_string(), "flo".to_string()),
                (
                    "app.kubernetes.io/name".to_string(),
                    "pg-flo-operator".to_string()
                ),
            ]
        );
        assert_eq!(operator_pods(vec![("a".into(), "b".into())], None), None);
        assert_eq!(operator_pods(vec![], Some("ops".into())), None);
        for bad in ["novalue", "=x"] {
            assert!(
                Cli::try_parse_from(["pg-flo-operator", "run", "--operator-pod-labels", bad])
                    .is_err(),
                "{bad}"
            );
        }
    }
}
