//! Prometheus metrics of the operator and its admin endpoint (`/metrics`, `/healthz`,
//! `/readyz`).
//!
//! Names follow `pg_flo_operator_<name>_<unit>[_total]`; labels are bounded: the resource kind
//! and the error category (see `controller::Error::category`).
//!
//! Per-group gauges (`pg_flo_operator_group_*`, [`group_series`]) repeat each ReplicationGroup's
//! status, so that one scrape of the operator covers every group, also the ones no runtime pod
//! measures (paused, stopped, finished copies, pods that cannot start). Labels: `namespace`,
//! `group` (the ReplicationGroup's name, as the chart's PodMonitors label the runtime series)
//! and `runtime_group` (the runtime group name of the slot and streams; empty until decided).
//! Set whenever the controller computes the group's status, removed when the group is gone.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::crd::{Phase, ReplicationGroupStatus};

/// Every phase, for the one-hot `pg_flo_operator_group_phase`.
pub const PHASES: [Phase; 8] = [
    Phase::Pending,
    Phase::Copying,
    Phase::Streaming,
    Phase::Completed,
    Phase::Paused,
    Phase::Stopped,
    Phase::Degraded,
    Phase::Deleting,
];

/// Every `wal_status` of a slot, for the one-hot `pg_flo_operator_group_slot_wal_status`.
pub const WAL_STATUSES: [&str; 4] = ["reserved", "extended", "unreserved", "lost"];

/// The per-group gauges: name, help, extra label (besides `namespace`, `group`,
/// `runtime_group`).
pub const GROUP_GAUGES: [(&str, &str, Option<&str>); 12] = [
    (
        "pg_flo_operator_group_phase",
        "1 for the group's phase (status.phase), 0 for the others",
        Some("phase"),
    ),
    (
        "pg_flo_operator_group_ready",
        "1 while the group's Ready condition is True",
        None,
    ),
    (
        "pg_flo_operator_group_pods_ready",
        "Ready pods of the group by component (replicator and worker always; copy and nats when the group has such pods)",
        Some("component"),
    ),
    (
        "pg_flo_operator_group_slot_active",
        "1 while a replication connection uses the slot (status.slot.active)",
        None,
    ),
    (
        "pg_flo_operator_group_slot_lag_bytes",
        "Source WAL after the position the replicator confirmed (status.slot.lagBytes)",
        None,
    ),
    (
        "pg_flo_operator_group_slot_retained_bytes",
        "Source WAL the slot keeps from being recycled (status.slot.retainedBytes)",
        None,
    ),
    (
        "pg_flo_operator_group_slot_safe_wal_size_bytes",
        "WAL that can still be written before the slot is lost (status.slot.safeWalSize); absent without max_slot_wal_keep_size",
        None,
    ),
    (
        "pg_flo_operator_group_slot_wal_status",
        "1 for the slot's wal_status (status.slot.walStatus), 0 for the others",
        Some("status"),
    ),
    (
        "pg_flo_operator_group_slot_read_timestamp_seconds",
        "When the slot values were read (status.slot.readAt): the source could not be read since",
        None,
    ),
    (
        "pg_flo_operator_group_consumer_pending",
        "Messages in the stream not yet delivered to the worker (status.consumer.pending)",
        None,
    ),
    (
        "pg_flo_operator_group_consumer_ack_pending",
        "Messages delivered to the worker and not yet acknowledged (status.consumer.ackPending)",
        None,
    ),
    (
        "pg_flo_operator_group_lag_seconds",
        "End-to-end lag: seconds from the source commit of the oldest change the worker has not applied to status.consumer.readAt (status.consumer.lagSeconds)",
        None,
    ),
];

/// One gauge series of a group: metric name, the value of its extra label (if it has one),
/// value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Metric name (one of [`GROUP_GAUGES`]).
    pub metric: &'static str,
    /// Value of the metric's extra label (`phase`, `status`, `component`).
    pub label: Option<String>,
    /// Value.
    pub value: f64,
}

fn series(metric: &'static str, label: Option<&str>, value: f64) -> Series {
    Series {
        metric,
        label: label.map(str::to_owned),
        value,
    }
}

/// The gauges of one group for its status: what the status knows, nothing for what it does
/// not (no slot read yet, no consumer yet, a source without `max_slot_wal_keep_size`).
pub fn group_series(status: &ReplicationGroupStatus) -> Vec<Series> {
    let mut out = Vec::new();
    if let Some(phase) = status.phase {
        for p in PHASES {
            out.push(series(
                "pg_flo_operator_group_phase",
                Some(&format!("{p:?}")),
                f64::from(u8::from(p == phase)),
            ));
        }
    }
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == crate::controller::conditions::READY && c.status == "True");
    out.push(series(
        "pg_flo_operator_group_ready",
        None,
        f64::from(u8::from(ready)),
    ));
    let mut ready_pods: BTreeMap<&str, u32> = [("replicator", 0), ("worker", 0)].into();
    for p in &status.pods {
        *ready_pods.entry(p.component.as_str()).or_default() += u32::from(p.ready);
    }
    for (component, n) in ready_pods {
        out.push(series(
            "pg_flo_operator_group_pods_ready",
            Some(component),
            f64::from(n),
        ));
    }
    let bytes = |v: Option<i64>| v.map(|b| b as f64);
    if let Some(slot) = &status.slot {
        let values = [
            (
                "pg_flo_operator_group_slot_active",
                slot.active.map(|a| f64::from(u8::from(a))),
            ),
            (
                "pg_flo_operator_group_slot_lag_bytes",
                bytes(slot.lag_bytes),
            ),
            (
                "pg_flo_operator_group_slot_retained_bytes",
                bytes(slot.retained_bytes),
            ),
            (
                "pg_flo_operator_group_slot_safe_wal_size_bytes",
                bytes(slot.safe_wal_size),
            ),
            (
                "pg_flo_operator_group_slot_read_timestamp_seconds",
                slot.read_at.as_ref().map(|t| t.0.as_second() as f64),
            ),
        ];
        out.extend(
            values
                .into_iter()
                .filter_map(|(m, v)| Some(series(m, None, v?))),
        );
        if let Some(wal) = &slot.wal_status {
            for s in WAL_STATUSES {
                out.push(series(
                    "pg_flo_operator_group_slot_wal_status",
                    Some(s),
                    f64::from(u8::from(s == wal)),
                ));
            }
        }
    }
    if let Some(c) = &status.consumer {
        let values = [
            ("pg_flo_operator_group_consumer_pending", bytes(c.pending)),
            (
                "pg_flo_operator_group_consumer_ack_pending",
                bytes(c.ack_pending),
            ),
            ("pg_flo_operator_group_lag_seconds", bytes(c.lag_seconds)),
        ];
        out.extend(
            values
                .into_iter()
                .filter_map(|(m, v)| Some(series(m, None, v?))),
        );
    }
    out
}

/// Label values of one series as set: metric, `[namespace, group, runtime_group, extra?]`.
type SetSeries = (&'static str, Vec<String>);

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: HistogramVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// The per-group gauges by name.
    group_gauges: HashMap<&'static str, GaugeVec>,
    /// The series set per group (`namespace/name`), to remove what a new status lacks.
    groups: Mutex<HashMap<String, Vec<SetSeries>>>,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "pg_flo_operator_reconciles_total",
                "Reconciles run, by kind",
            ),
            &["kind"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "pg_flo_operator_reconcile_errors_total",
                "Reconciles that failed, by kind and error category",
            ),
            &["kind", "category"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "pg_flo_operator_reconcile_duration_seconds",
                "Duration of a reconcile, by kind",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["kind"],
        )?;
        let leader = IntGauge::new(
            "pg_flo_operator_leader",
            "1 while this replica holds the leader Lease",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        let mut group_gauges = HashMap::new();
        for (name, help, extra) in GROUP_GAUGES {
            let mut labels = vec!["namespace", "group", "runtime_group"];
            labels.extend(extra);
            let g = GaugeVec::new(Opts::new(name, help), &labels)?;
            registry.register(Box::new(g.clone()))?;
            group_gauges.insert(name, g);
        }
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            group_gauges,
            groups: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the gauges of group `namespace/name` to what `status` says ([`group_series`]) and
    /// removes its series the status no longer has (another runtime group name, a slot
    /// without `safeWalSize` now, ...).
    pub fn observe_group(&self, namespace: &str, name: &str, status: &ReplicationGroupStatus) {
        let runtime_group = status.group_name.clone().unwrap_or_default();
        let new: Vec<(SetSeries, f64)> = group_series(status)
            .into_iter()
            .map(|s| {
                let mut labels = vec![namespace.to_owned(), name.to_owned(), runtime_group.clone()];
                labels.extend(s.label);
                ((s.metric, labels), s.value)
            })
            .collect();
        let Ok(mut groups) = self.groups.lock() else {
            return;
        };
        let key = format!("{namespace}/{name}");
        for old in groups.remove(&key).unwrap_or_default() {
            if !new.iter().any(|(s, _)| *s == old) {
                self.remove_series(&old);
            }
        }
        for ((metric, labels), value) in &new {
            if let Some(g) = self.group_gauges.get(metric) {
                let values: Vec<&str> = labels.iter().map(String::as_str).collect();
                g.with_label_values(&values).set(*value);
            }
        }
        groups.insert(key, new.into_iter().map(|(s, _)| s).collect());
    }

    /// Removes every series of group `namespace/name` (deleted).
    pub fn forget_group(&self, namespace: &str, name: &str) {
        let Ok(mut groups) = self.groups.lock() else {
            return;
        };
        for old in groups
            .remove(&format!("{namespace}/{name}"))
            .unwrap_or_default()
        {
            self.remove_series(&old);
        }
    }

    fn remove_series(&self, (metric, labels): &SetSeries) {
        if let Some(g) = self.group_gauges.get(metric) {
            let values: Vec<&str> = labels.iter().map(String::as_str).collect();
            // Absent already: nothing to do.
            let _ = g.remove_label_values(&values);
        }
    }

    /// Counts one reconcile of `kind` that took `took` and failed with `error` (a category).
    pub fn observe_reconcile(&self, kind: &str, took: Duration, error: Option<&str>) {
        self.reconciles.with_label_values(&[kind]).inc();
        self.duration
            .with_label_values(&[kind])
            .observe(took.as_secs_f64());
        if let Some(category) = error {
            self.errors.with_label_values(&[kind, category]).inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// Readiness of the process: ready once the controllers run (as leader or standby).
pub use pg_flo_admin::Health;

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until the process ends.
/// Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
) -> std::io::Result<SocketAddr> {
    pg_flo_admin::serve(addr, health, move || metrics.render()).await
}
