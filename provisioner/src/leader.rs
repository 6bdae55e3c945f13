//! Leader election through a coordination.k8s.io/v1 Lease, as client-go's
//! leaderelection does it: the holder renews `renewTime`; a candidate takes the
//! lease once the record has not changed for a whole lease duration, judged by its
//! own clock from when it last saw the record change (no clock-skew assumptions);
//! every write is optimistic, so two candidates cannot both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::Result;

/// Which Lease to campaign for, as whom, and client-go's timings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub lease: String,
    /// This candidate's name in the Lease's holderIdentity.
    pub identity: String,
    /// How long a record may stay unrenewed before others take over (upstream: 15 s).
    pub lease_duration: Duration,
    /// The holder gives up if it could not renew for this long (upstream: 10 s).
    pub renew_deadline: Duration,
    /// Between attempts to acquire or renew (upstream: 2 s).
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// Upstream's timings.
    pub fn new(namespace: &str, lease: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            lease: lease.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// client-go's rule: lease duration > renew deadline > retry period (with jitter).
    pub fn check(&self) -> Result<(), TimingError> {
        if self.lease_duration <= self.renew_deadline {
            return Err(TimingError::LeaseNotLongerThanRenew {
                lease: self.lease_duration,
                renew: self.renew_deadline,
            });
        }
        if self.renew_deadline.as_secs_f64() <= self.retry_period.as_secs_f64() * 1.2 {
            return Err(TimingError::RenewNotLongerThanRetries {
                renew: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        Ok(())
    }
}

/// Leader election timings client-go would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// Others could take the lease before the holder gave up renewing.
    #[error("the lease duration ({lease:?}) must be longer than the renew deadline ({renew:?})")]
    LeaseNotLongerThanRenew {
        /// The lease duration.
        lease: Duration,
        /// The renew deadline.
        renew: Duration,
    },
    /// The holder would give up before it had retried a renewal.
    #[error(
        "the renew deadline ({renew:?}) must be longer than 1.2 x the retry period ({retry:?})"
    )]
    RenewNotLongerThanRetries {
        /// The renew deadline.
        renew: Duration,
        /// The retry period.
        retry: Duration,
    },
}

/// Reads and writes a release tries while the lease keeps changing under it.
const RELEASE_ATTEMPTS: usize = 5;

/// Campaigns for, holds and releases the Lease of a [`LeaderConfig`].
pub struct Elector {
    api: Api<Lease>,
    config: LeaderConfig,
    /// The last record seen (resourceVersion) and when it was first seen.
    observed: Option<(String, Instant)>,
}

impl Elector {
    /// A candidate that has not seen the Lease yet.
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// Returns once this candidate holds the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.config.lease, identity = %self.config.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(error) => tracing::debug!(%error, "lease not acquired"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews until a renewal has failed for the renew deadline; returns then.
    pub async fn hold(&mut self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => break,
                Err(error) => tracing::warn!(%error, "lease renewal failed"),
            }
            if last_renewed.elapsed() > self.config.renew_deadline {
                break;
            }
        }
        tracing::warn!(lease = %self.config.lease, "lost leadership");
    }

    /// Gives the lease up so a standby need not wait out the duration. A renewal cut
    /// short by the shutdown may still land after the read: its conflict means read
    /// again, not give up.
    pub async fn release(&mut self) {
        for _ in 0..RELEASE_ATTEMPTS {
            let Ok(Some(mut lease)) = self.api.get_opt(&self.config.lease).await else {
                return;
            };
            let spec = lease.spec.get_or_insert_default();
            if spec.holder_identity.as_deref() != Some(&self.config.identity) {
                return;
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            match self
                .api
                .replace(&self.config.lease, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                Err(error) => {
                    tracing::warn!(%error, "could not release the lease");
                    return;
                }
            }
        }
        tracing::warn!("could not release the lease: it kept changing");
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let now = MicroTime(jiff::Timestamp::now());
        let seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.lease).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.lease.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return Ok(self
                .api
                .create(&PostParams::default(), &lease)
                .await
                .is_ok());
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let observed_at = match &self.observed {
            Some((seen, at)) if *seen == version => *at,
            _ => {
                self.observed = Some((version, Instant::now()));
                Instant::now()
            }
        };
        let spec = lease.spec.get_or_insert_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds)).unwrap_or(0),
        );
        if holder.is_some() && !mine && observed_at.elapsed() < duration {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        let written = self
            .api
            .replace(&self.config.lease, &PostParams::default(), &lease)
            .await;
        match written {
            Ok(lease) => {
                self.observed = lease.metadata.resource_version.map(|v| (v, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}

/// A Lease by namespace and name: `NAMESPACE/NAME` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
}

/// A `--defer-binding-to` that is not `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not NAMESPACE/NAME")]
pub struct NotALeaseRef(String);

impl std::str::FromStr for LeaseRef {
    type Err = NotALeaseRef;

    fn from_str(text: &str) -> Result<Self, NotALeaseRef> {
        match text.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
            _ => Err(NotALeaseRef(text.to_string())),
        }
    }
}

impl std::fmt::Display for LeaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Watches whether someone else leads through a Lease this instance never takes
/// (kube-controller-manager's): held while a holder is named and the record has
/// changed within its lease duration. As the elector, it judges by its own clock
/// from when it saw the record change; at first sight, by the record's renewTime.
pub struct LeaseObserver {
    api: Api<Lease>,
    name: String,
    /// The last record seen (resourceVersion) and when it last changed.
    observed: Option<(String, Instant)>,
}

impl LeaseObserver {
    /// An observer of `lease` that has not read it yet.
    pub fn new(client: Client, lease: &LeaseRef) -> Self {
        Self {
            api: Api::namespaced(client, &lease.namespace),
            name: lease.name.clone(),
            observed: None,
        }
    }

    /// Whether the lease is held now; no lease is not held.
    pub async fn held(&mut self) -> Result<bool> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            self.observed = None;
            return Ok(false);
        };
        let spec = lease.spec.unwrap_or_default();
        let version = lease.metadata.resource_version.unwrap_or_default();
        let changed_at = match &self.observed {
            Some((seen, at)) if *seen == version => *at,
            _ => {
                let age = record_age(&spec, jiff::Timestamp::now());
                let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                self.observed = Some((version, at));
                at
            }
        };
        Ok(lease_held(&spec, changed_at.elapsed()))
    }
}

/// How old a record first seen is: since its renewTime (never negative).
fn record_age(spec: &LeaseSpec, now: jiff::Timestamp) -> Duration {
    spec.renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .and_then(|t| now.duration_since(t.0).try_into().ok())
        .unwrap_or(Duration::ZERO)
}

/// A holder is named and the record changed less than its duration ago.
pub fn lease_held(spec: &LeaseSpec, unchanged_for: Duration) -> bool {
    let holder = spec
        .holder_identity
        .as_deref()
        .is_some_and(|h| !h.is_empty());
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    holder && unchanged_for < duration
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_held_while_named_and_fresh() {
        let spec = |holder: Option<&str>, seconds: i32| LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(seconds),
            ..Default::default()
        };
        let cases = [
            (
                "named, changed 1 s ago, 15 s lease",
                spec(Some("kcm"), 15),
                1,
                true,
            ),
            (
                "named, unchanged for 15 s",
                spec(Some("kcm"), 15),
                15,
                false,
            ),
            (
                "named, unchanged for 20 s",
                spec(Some("kcm"), 15),
                20,
                false,
            ),
            ("released: no holder", spec(None, 15), 0, false),
            ("released: an empty holder", spec(Some(""), 15), 0, false),
            ("no duration", spec(Some("kcm"), 0), 0, false),
        ];
        for (what, spec, unchanged, held) in cases {
            assert_eq!(
                lease_held(&spec, Duration::from_secs(unchanged)),
                held,
                "{what}"
            );
        }
    }

    #[test]
    fn a_record_first_seen_is_as_old_as_its_renewal() {
        let now: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().expect("time");
        let at = |t: &str| Some(MicroTime(t.parse().expect("time")));
        let cases = [
            ("renewed 20 s ago", at("2026-01-01T00:00:40Z"), None, 20),
            (
                "only acquired, 60 s ago",
                None,
                at("2026-01-01T00:00:00Z"),
                60,
            ),
            (
                "renewed in the future (skew)",
                at("2026-01-01T00:02:00Z"),
                None,
                0,
            ),
            ("never renewed", None, None, 0),
        ];
        for (what, renew_time, acquire_time, seconds) in cases {
            let spec = LeaseSpec {
                renew_time,
                acquire_time,
                ..Default::default()
            };
            assert_eq!(
                record_age(&spec, now),
                Duration::from_secs(seconds),
                "{what}"
            );
        }
    }

    #[test]
    fn lease_references_are_namespace_slash_name() {
        let parsed: Result<LeaseRef, NotALeaseRef> = "kube-system/kube-controller-manager".parse();
        assert_eq!(
            parsed,
            Ok(LeaseRef {
                namespace: "kube-system".into(),
                name: "kube-controller-manager".into()
            })
        );
        for bad in ["kube-controller-manager", "/name", "ns/", "a/b/c", ""] {
            assert!(bad.parse::<LeaseRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn timings_must_nest_as_client_go_requires() {
        let config = |lease, renew, retry| LeaderConfig {
            lease_duration: Duration::from_millis(lease),
            renew_deadline: Duration::from_millis(renew),
            retry_period: Duration::from_millis(retry),
            ..LeaderConfig::new("ns", "lease", "me")
        };
        assert_eq!(LeaderConfig::new("ns", "lease", "me").check(), Ok(()));
        assert_eq!(config(2000, 1500, 200).check(), Ok(()));
        assert!(config(1500, 1500, 200).check().is_err());
        assert!(config(2000, 1500, 1300).check().is_err());
    }
}
