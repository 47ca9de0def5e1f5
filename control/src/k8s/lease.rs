//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does it.
//!
//! Guarantees:
//! - every write is a `replace` carrying the `resourceVersion` that was read (or a `create`),
//!   so of two contenders exactly one succeeds; the loser sees `409 Conflict` and stays a
//!   follower;
//! - a follower takes the lease over only after it has watched the holder's record stay
//!   unchanged for a whole `leaseDurationSeconds` **by its own monotonic clock** (no trust in
//!   the holder's timestamps, so clock skew cannot cause two leaders);
//! - a leader counts itself leader only until `last successful renewal + duration − margin`
//!   (the margin is a fifth of the duration), so it stops acting before anyone may take over;
//! - [`Elector::release`] (on a clean shutdown) empties `holderIdentity` so a successor need
//!   not wait for expiry.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

/// Campaigns for one Lease.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The holder record last seen and since when (our clock) it has not changed.
    observed: Option<(String, Instant)>,
    /// Leader until then (our clock).
    leading_until: Option<Instant>,
}

/// What a campaign step found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This process holds the lease.
    Leader,
    /// Someone else does (their identity), or nobody can be sure yet.
    Follower(Option<String>),
}

impl Elector {
    /// An elector for `namespace/name`, campaigning as `identity`.
    #[must_use]
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            observed: None,
            leading_until: None,
        }
    }

    /// How often [`Elector::step`] should run: a third of the duration.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.duration / 3
    }

    /// Whether this process may act as leader now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.leading_until.is_some_and(|t| Instant::now() < t)
    }

    fn secs(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    fn won(&mut self, at: Instant) -> Role {
        self.leading_until = Some(at + self.duration - self.duration / 5);
        Role::Leader
    }

    /// One campaign step: create the lease, renew it, or take over an expired one.
    ///
    /// # Errors
    ///
    /// API errors other than the expected `404` / `409`; the role is then unchanged (a
    /// leader stays leader until its lease time runs out).
    pub async fn step(&mut self) -> Result<Role, kube::Error> {
        let started = Instant::now();
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.secs()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(self.won(started)),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(self.lost(None)),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() != Some(self.identity.as_str()) {
            // Someone else's (or nobody's): wait until the record has stood still for a
            // whole duration by our own clock.
            let record = format!(
                "{:?}/{:?}",
                lease.metadata.resource_version, spec.holder_identity
            );
            let expired = match &self.observed {
                Some((r, since)) if *r == record => {
                    holder.is_none() || since.elapsed() >= self.lease_duration_of(spec)
                }
                _ => {
                    self.observed = Some((record, Instant::now()));
                    holder.is_none()
                }
            };
            if !expired {
                return Ok(self.lost(holder));
            }
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.secs());
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = None;
                Ok(self.won(started))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(self.lost(holder)),
            Err(e) => Err(e),
        }
    }

    fn lease_duration_of(&self, spec: &LeaseSpec) -> Duration {
        spec.lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.duration, Duration::from_secs)
    }

    fn lost(&mut self, holder: Option<String>) -> Role {
        self.leading_until = None;
        Role::Follower(holder)
    }

    /// Gives the lease up if this process holds it (clean shutdown).
    ///
    /// # Errors
    ///
    /// API errors; a conflict means someone else holds it already and is not an error.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        if self.leading_until.take().is_none() {
            return Ok(());
        }
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
