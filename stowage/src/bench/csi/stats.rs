//! Latency samples per RPC and per lifecycle, and their summaries.

use std::time::Duration;

use serde_json::{Value, json};

use super::super::percentile;

/// The RPCs a lifecycle may make, in lifecycle order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named as the CSI RPCs are
pub enum Rpc {
    CreateVolume,
    ControllerPublishVolume,
    NodeStageVolume,
    NodePublishVolume,
    NodeUnpublishVolume,
    NodeUnstageVolume,
    ControllerUnpublishVolume,
    DeleteVolume,
}

impl Rpc {
    pub const ALL: [Rpc; 8] = [
        Rpc::CreateVolume,
        Rpc::ControllerPublishVolume,
        Rpc::NodeStageVolume,
        Rpc::NodePublishVolume,
        Rpc::NodeUnpublishVolume,
        Rpc::NodeUnstageVolume,
        Rpc::ControllerUnpublishVolume,
        Rpc::DeleteVolume,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rpc::CreateVolume => "CreateVolume",
            Rpc::ControllerPublishVolume => "ControllerPublishVolume",
            Rpc::NodeStageVolume => "NodeStageVolume",
            Rpc::NodePublishVolume => "NodePublishVolume",
            Rpc::NodeUnpublishVolume => "NodeUnpublishVolume",
            Rpc::NodeUnstageVolume => "NodeUnstageVolume",
            Rpc::ControllerUnpublishVolume => "ControllerUnpublishVolume",
            Rpc::DeleteVolume => "DeleteVolume",
        }
    }
}

/// Samples of one kind of call: how long each success took, and how many failed.
#[derive(Default, Clone)]
pub struct Samples {
    latencies: Vec<Duration>,
    errors: usize,
}

impl Samples {
    pub fn record(&mut self, elapsed: Duration, ok: bool) {
        self.latencies.push(elapsed);
        if !ok {
            self.errors += 1;
        }
    }

    pub fn count(&self) -> usize {
        self.latencies.len()
    }

    pub fn errors(&self) -> usize {
        self.errors
    }

    fn merge(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
    }

    pub fn summary(&self) -> Summary {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        Summary {
            count: sorted.len(),
            errors: self.errors,
            p50: percentile(&sorted, 50),
            p90: percentile(&sorted, 90),
            p99: percentile(&sorted, 99),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }
}

pub struct Summary {
    pub count: usize,
    pub errors: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Everything one worker (or, merged, the whole run) measured.
#[derive(Default, Clone)]
pub struct Stats {
    rpcs: [Samples; Rpc::ALL.len()],
    pub lifecycles: Samples,
}

impl Stats {
    pub fn rpc(&mut self, rpc: Rpc) -> &mut Samples {
        &mut self.rpcs[rpc as usize]
    }

    pub fn merge(&mut self, other: Stats) {
        for (mine, theirs) in self.rpcs.iter_mut().zip(other.rpcs) {
            mine.merge(theirs);
        }
        self.lifecycles.merge(other.lifecycles);
    }

    /// The RPCs that were called at least once, in lifecycle order.
    pub fn called(&self) -> impl Iterator<Item = (Rpc, &Samples)> {
        Rpc::ALL
            .into_iter()
            .zip(&self.rpcs)
            .filter(|(_, samples)| samples.count() > 0)
    }

    pub fn to_json(&self, wall: Duration) -> Value {
        let rpcs: serde_json::Map<String, Value> = self
            .called()
            .map(|(rpc, samples)| {
                let s = samples.summary();
                let value = json!({
                    "count": s.count,
                    "errors": s.errors,
                    "p50_us": micros(s.p50),
                    "p90_us": micros(s.p90),
                    "p99_us": micros(s.p99),
                    "max_us": micros(s.max),
                });
                (rpc.name().to_string(), value)
            })
            .collect();
        let life = self.lifecycles.summary();
        json!({
            "rpcs": rpcs,
            "lifecycle": {
                "count": life.count,
                "errors": life.errors,
                "p50_us": micros(life.p50),
                "p99_us": micros(life.p99),
                "per_second": per_second(life.count - life.errors, wall),
            },
        })
    }

    pub fn table(&self, wall: Duration) -> String {
        let mut out = format!(
            "{:<26} {:>7} {:>7} {:>10} {:>10} {:>10} {:>10}\n",
            "RPC", "COUNT", "ERRORS", "P50", "P90", "P99", "MAX"
        );
        let rows = self
            .called()
            .map(|(rpc, samples)| (rpc.name(), samples))
            .chain([("lifecycle", &self.lifecycles)]);
        for (name, samples) in rows {
            let s = samples.summary();
            out.push_str(&format!(
                "{name:<26} {:>7} {:>7} {:>10} {:>10} {:>10} {:>10}\n",
                s.count,
                s.errors,
                human(s.p50),
                human(s.p90),
                human(s.p99),
                human(s.max)
            ));
        }
        let ok = self.lifecycles.count() - self.lifecycles.errors();
        out.push_str(&format!(
            "{ok} lifecycles in {:.2} s: {:.1} lifecycles/s\n",
            wall.as_secs_f64(),
            per_second(ok, wall)
        ));
        out
    }
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn per_second(count: usize, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    count as f64 / wall.as_secs_f64()
}

fn human(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_errors_and_order_percentiles() {
        let mut stats = Stats::default();
        for ms in 1..=100 {
            stats
                .rpc(Rpc::NodePublishVolume)
                .record(Duration::from_millis(ms), ms != 7);
        }
        let s = stats.rpc(Rpc::NodePublishVolume).summary();
        assert_eq!((s.count, s.errors), (100, 1));
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        let json = stats.to_json(Duration::from_secs(1));
        assert_eq!(json["rpcs"]["NodePublishVolume"]["p90_us"], 90_000);
        assert!(json["rpcs"].get("CreateVolume").is_none(), "not called");
    }
}
