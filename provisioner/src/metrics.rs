//! The provisioner's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The labels of a reclaim operation's count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReclaimLabels {
    /// `delete` or `recycle`.
    pub operation: &'static str,
    /// `success` or `failure`.
    pub outcome: &'static str,
}

/// The provisioner's metrics; cheap to clone: every field is a shared handle.
#[derive(Clone)]
pub struct Metrics {
    /// Time of one binder pass.
    pub pass_seconds: Histogram,
    /// Claims left Pending after the last pass: the binder's backlog.
    pub pending_claims: Gauge,
    /// Claims bound to volumes.
    pub bindings: Counter,
    /// Reclaim operations by operation and outcome.
    pub reclaims: Family<ReclaimLabels, Counter>,
    /// Reclaim operations running now.
    pub reclaims_in_flight: Gauge,
    /// Provisioning attempts by outcome.
    pub provisions: Family<OutcomeLabels, Counter>,
    /// Time from taking a claim to its PersistentVolume made.
    pub provision_seconds: Histogram,
    /// 1 while this instance acts: it holds the lease, or runs without election.
    pub leader: Gauge,
    /// 1 while the binder stands down for another controller's Lease.
    pub binder_standing_down: Gauge,
    /// Writes the API refused because the object had changed since it was read (409).
    pub write_conflicts: Family<WriterLabels, Counter>,
}

/// The label of a write conflict's count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriterLabels {
    /// The controller whose write was refused: `binder` or `provisioner`.
    pub writer: &'static str,
}

/// The label of a provisioning attempt's count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `success` or `failure`.
    pub outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            // 100 µs to about 52 s.
            pass_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 20)),
            pending_claims: Gauge::default(),
            bindings: Counter::default(),
            reclaims: Family::default(),
            reclaims_in_flight: Gauge::default(),
            provisions: Family::default(),
            provision_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 20)),
            leader: Gauge::default(),
            binder_standing_down: Gauge::default(),
            write_conflicts: Family::default(),
        }
    }
}

impl Metrics {
    /// New metrics, registered under `stowage_provisioner_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("stowage_provisioner");
        registry.register(
            "pass_duration_seconds",
            "Time of one binder pass over every claim and volume",
            metrics.pass_seconds.clone(),
        );
        registry.register(
            "pending_claims",
            "Claims still Pending after the last binder pass",
            metrics.pending_claims.clone(),
        );
        registry.register(
            "bindings",
            "Claims bound to volumes",
            metrics.bindings.clone(),
        );
        registry.register(
            "reclaims",
            "Reclaim operations (delete, recycle) by outcome",
            metrics.reclaims.clone(),
        );
        registry.register(
            "reclaims_in_flight",
            "Reclaim operations running now",
            metrics.reclaims_in_flight.clone(),
        );
        registry.register(
            "provisions",
            "CreateVolume attempts for claims, by outcome",
            metrics.provisions.clone(),
        );
        registry.register(
            "provision_duration_seconds",
            "Time from taking a claim to its PersistentVolume created",
            metrics.provision_seconds.clone(),
        );
        registry.register(
            "leader",
            "1 while this instance acts (holds the lease, or runs without leader election)",
            metrics.leader.clone(),
        );
        registry.register(
            "binder_standing_down",
            "1 while the binder leaves binding to the holder of --defer-binding-to's Lease",
            metrics.binder_standing_down.clone(),
        );
        registry.register(
            "write_conflicts",
            "Writes refused because the object changed since it was read (HTTP 409), by writer",
            metrics.write_conflicts.clone(),
        );
        metrics
    }

    /// Counts a write of `writer` refused with a conflict.
    pub fn write_conflict(&self, writer: &'static str) {
        self.write_conflicts
            .get_or_create(&WriterLabels { writer })
            .inc();
    }

    /// The writes of `writer` refused with a conflict so far.
    pub fn write_conflicts_of(&self, writer: &'static str) -> u64 {
        self.write_conflicts
            .get_or_create(&WriterLabels { writer })
            .get()
    }

    /// Counts a provisioning attempt; a success's time goes into the histogram.
    pub fn provisioned(&self, outcome: &'static str, took: std::time::Duration) {
        self.provisions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if outcome == "success" {
            self.provision_seconds.observe(took.as_secs_f64());
        }
    }

    /// Counts a reclaim operation.
    pub fn reclaimed(&self, operation: &'static str, outcome: &'static str) {
        self.reclaims
            .get_or_create(&ReclaimLabels { operation, outcome })
            .inc();
    }
}
