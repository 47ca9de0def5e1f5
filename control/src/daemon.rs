//! The table task: owns the region [`Writer`] and the [`Publisher`], publishes the config at
//! start-up, applies reloads, and keeps the heartbeat and reclamation going until shutdown.
//!
//! Guarantees:
//! - a reload applies a new config only after it validated completely; an invalid one is
//!   logged with file, field and reason and the running config stays published;
//! - a publication that would block (workers have not acked older generations yet) is retried
//!   after [`Writer::reclaim`] with exponential back-off (10 ms doubling to 500 ms, no jitter:
//!   the only contender is the local dataplane) for at most [`Daemon::retry_budget`], then
//!   reported; the running set changes only when the publication succeeded;
//! - time comes from the [`Clock`] `main` created; nothing here reads another clock;
//! - on shutdown the region is left as it is, so the dataplane keeps forwarding;
//! - the [`Writer`] stays single-owner: the metrics server gets counters by sending a
//!   [`SnapshotRequest`] that [`Daemon::run`] answers with [`Daemon::snapshot`] between its
//!   other duties; every publication's duration is observed in [`Daemon::publish_seconds`].

use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use sluice_dataplane::tables::{Generation, PublishError, ShmError, Tick, Writer, WriterOptions};
use sluice_hugepages::Backing;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::{Config, ConfigError, Desired};
use crate::metrics::{BackendSample, ServiceSample, Snapshot, SnapshotRequest};
use crate::publisher::{Diff, Publisher, PublisherError};

/// Why the table task failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The region could not be created or attached.
    #[error("table region {region:?}: {source}")]
    Region {
        /// The region name.
        region: String,
        /// The cause.
        #[source]
        source: ShmError,
    },
    /// A table could not be built.
    #[error(transparent)]
    Prepare(#[from] PublisherError),
    /// The writer refused the publication (after retrying, when it would block).
    #[error("publishing failed: {0}")]
    Publish(#[source] PublishError),
}

/// Monotonic time for the logic, measured from an origin `main` picks.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock counting from `origin`.
    #[must_use]
    pub fn new(origin: Instant) -> Self {
        Self { origin }
    }

    /// Now, as a [`Tick`].
    #[must_use]
    pub fn now(&self) -> Tick {
        Tick::from_duration(self.origin.elapsed())
    }
}

/// A successful application of a config.
#[derive(Debug, Clone)]
pub struct Applied {
    /// What changed.
    pub diff: Diff,
    /// The generation published, or the current one when nothing changed.
    pub generation: Generation,
    /// Services now running.
    pub services: usize,
}

/// The table task's state.
#[derive(Debug)]
pub struct Daemon {
    config: PathBuf,
    writer: Writer,
    publisher: Publisher,
    running: Desired,
    clock: Clock,
    /// How long a blocked publication is retried before it is reported. Default 5 s.
    pub retry_budget: Duration,
    /// Seconds from the first attempt to publish a generation until the writer accepted it
    /// (would-block retries included; acks are not awaited). Shared with the metrics server.
    pub publish_seconds: Histogram,
}

// === impl Daemon ===

impl Daemon {
    /// Opens (or creates) the region `desired` names, adopts what it already publishes, and
    /// publishes `desired` in one generation: every configured service is written (after a
    /// restart with identical content and ids, so the dataplane's flows are unaffected) and
    /// published keys the config no longer has are removed.
    ///
    /// # Errors
    ///
    /// [`DaemonError`] when the region cannot be opened or the publication fails.
    pub async fn start(
        config: PathBuf,
        desired: Desired,
        clock: Clock,
        publish_seconds: Histogram,
    ) -> Result<(Self, Applied), DaemonError> {
        let writer = Writer::open_or_create(
            &desired.region,
            desired.capacity,
            Backing::Auto,
            WriterOptions::default(),
        )
        .map_err(|source| DaemonError::Region {
            region: desired.region.clone(),
            source,
        })?;
        if writer.capacity() != desired.capacity {
            tracing::warn!(
                region = %desired.region,
                existing = ?writer.capacity(),
                configured = ?desired.capacity,
                "the region exists with another capacity; keeping it (recreate the region to resize)"
            );
        }
        let mut publisher = Publisher::new();
        publisher.adopt(&writer);
        let mut d = Self {
            config,
            writer,
            publisher,
            running: desired.clone(),
            clock,
            retry_budget: Duration::from_secs(5),
            publish_seconds,
        };
        let applied = d.apply(&desired).await?;
        d.running = desired;
        Ok((d, applied))
    }

    /// The writer (for status).
    #[must_use]
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Publishes what differs between the running set and `desired`.
    ///
    /// # Errors
    ///
    /// [`DaemonError::Prepare`] or [`DaemonError::Publish`]; the running set is unchanged.
    pub async fn apply(&mut self, desired: &Desired) -> Result<Applied, DaemonError> {
        let prepared = self.publisher.prepare(desired)?;
        let diff = prepared.diff.clone();
        let generation = if prepared.is_empty() {
            self.writer.generation()
        } else {
            let updates = prepared.updates();
            let start = self.clock.now();
            let mut backoff = Duration::from_millis(10);
            let published = loop {
                self.writer.reclaim(self.clock.now());
                match self.writer.publish(&updates) {
                    Ok(p) => break p,
                    Err(e)
                        if e.is_would_block()
                            && self.clock.now().saturating_since(start) < self.retry_budget =>
                    {
                        tracing::debug!(error = %e, ?backoff, "publication would block; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                    Err(e) => return Err(DaemonError::Publish(e)),
                }
            };
            drop(updates);
            self.publish_seconds
                .observe(self.clock.now().saturating_since(start).as_secs_f64());
            published.generation
        };
        self.publisher.commit(prepared);
        Ok(Applied {
            diff,
            generation,
            services: self.publisher.running().len(),
        })
    }

    /// Re-reads the config file and applies it. An invalid file, or a failed publication,
    /// leaves the running config in place; either is logged and returned.
    ///
    /// # Errors
    ///
    /// [`ReloadError`].
    pub async fn reload(&mut self) -> Result<Applied, ReloadError> {
        let desired = Config::load(&self.config).map_err(ReloadError::Config)?;
        if desired.region != self.running.region {
            return Err(ReloadError::Config(ConfigError::Invalid {
                file: self.config.display().to_string(),
                field: "tables.region".into(),
                reason: format!(
                    "changing the region ({:?} → {:?}) needs a restart",
                    self.running.region, desired.region
                ),
            }));
        }
        if desired.metrics != self.running.metrics {
            tracing::warn!(
                running = %self.running.metrics,
                configured = %desired.metrics,
                "metrics.listen changes take effect only after a restart"
            );
        }
        if desired.capacity != self.running.capacity {
            tracing::warn!("tables capacity changes take effect only when the region is recreated");
        }
        let applied = self.apply(&desired).await.map_err(ReloadError::Apply)?;
        self.running = desired;
        Ok(applied)
    }

    /// The region's counters now, labelled with the running config's names.
    pub fn snapshot(&mut self) -> Snapshot {
        let now = self.clock.now();
        let workers = self.writer.workers(now);
        let ids = self.publisher.ids();
        let services = self
            .publisher
            .running()
            .iter()
            .filter_map(|(name, def)| {
                let (index, _) = self.writer.service(&def.key)?;
                let t = self.writer.service_totals(index);
                let backends = self
                    .writer
                    .backend_totals(index)
                    .into_iter()
                    .map(|(id, b)| BackendSample {
                        name: ids
                            .backend_name(name, id)
                            .map_or_else(|| format!("id:{}", id.0), str::to_owned),
                        packets: b.packets,
                        bytes: b.bytes,
                    })
                    .collect();
                Some(ServiceSample {
                    name: name.clone(),
                    packets: t.packets,
                    bytes: t.bytes,
                    backends,
                })
            })
            .collect();
        Snapshot {
            generation: self.writer.generation().get(),
            services,
            workers,
        }
    }

    /// The periodic duty: bump the control heartbeat and free what workers moved past.
    pub fn tick(&mut self) {
        self.writer.heartbeat();
        self.writer.reclaim(self.clock.now());
    }

    /// Runs until `shutdown` turns true (or its sender goes away): a reload per message on
    /// `reloads`, a [`Daemon::snapshot`] per request on `snapshots`, [`Daemon::tick`] every
    /// `period`.
    pub async fn run(
        mut self,
        mut reloads: mpsc::Receiver<()>,
        mut snapshots: mpsc::Receiver<SnapshotRequest>,
        mut shutdown: watch::Receiver<bool>,
        period: Duration,
    ) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                Some(()) = reloads.recv() => self.log_reload().await,
                Some(reply) = snapshots.recv() => {
                    // The scrape may have gone away; nothing to do then.
                    let _ = reply.send(self.snapshot());
                }
                _ = interval.tick() => self.tick(),
            }
        }
        tracing::info!(
            generation = self.writer.generation().get(),
            "table task stopped; the region stays published"
        );
    }

    async fn log_reload(&mut self) {
        match self.reload().await {
            Ok(a) if a.diff.is_empty() => {
                tracing::info!(services = a.services, "config reloaded: no change");
            }
            Ok(a) => tracing::info!(
                generation = a.generation.get(),
                added = ?a.diff.added,
                changed = ?a.diff.changed,
                removed = ?a.diff.removed,
                unchanged = a.diff.unchanged,
                "config reloaded and applied"
            ),
            Err(ReloadError::Config(e)) => tracing::error!(
                error = %e,
                field = e.field(),
                "config rejected; keeping the running config"
            ),
            Err(ReloadError::Apply(e)) => tracing::error!(
                error = %e,
                "publishing the new config failed; keeping the running config"
            ),
        }
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid.
    #[error(transparent)]
    Config(ConfigError),
    /// It was valid but could not be published.
    #[error(transparent)]
    Apply(DaemonError),
}
