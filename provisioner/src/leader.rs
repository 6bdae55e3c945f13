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

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease: String,
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
    pub fn check(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "the lease duration ({:?}) must be longer than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        if self.renew_deadline.as_secs_f64() <= self.retry_period.as_secs_f64() * 1.2 {
            return Err(format!(
                "the renew deadline ({:?}) must be longer than 1.2 x the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        Ok(())
    }
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaderConfig,
    /// The last record seen (resourceVersion) and when it was first seen.
    observed: Option<(String, Instant)>,
}

impl Elector {
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

    /// Gives the lease up so a standby need not wait out the duration.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.lease).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(&self.config.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(error) = self
            .api
            .replace(&self.config.lease, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(%error, "could not release the lease");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
