//! The table task: owns the region [`Writer`] and the [`Publisher`], publishes the config at
//! start-up, applies reloads, operator commands and health changes, and keeps the heartbeat
//! and reclamation going until shutdown.
//!
//! Guarantees:
//! - what is published is always [`effective`]`(config file, overrides, health)` (see
//!   [`crate::state`]); each input change republishes only the services whose effective
//!   state changed;
//! - a reload applies a new config only after it validated completely; an invalid one is
//!   logged with file, field and reason, recorded as an event and in [`Snapshot::last_reload`],
//!   and the running config stays published. Reloads come from SIGHUP and from watching the
//!   file: a content change (checked every `watch` period) reloads once per distinct content;
//! - an operator command ([`Command`]) is answered only after its publication was accepted by
//!   the writer (so `sluicectl weight` returning means the new table is out); a command that
//!   cannot be published is undone and answered with the error;
//! - a publication that would block (workers have not acked older generations yet) is retried
//!   after [`Writer::reclaim`] with exponential back-off (10 ms doubling to 500 ms, no jitter:
//!   the only contender is the local dataplane) for at most [`Daemon::retry_budget`], then
//!   reported; the running set changes only when the publication succeeded;
//! - time comes from the [`Clock`] `main` created; nothing here reads another clock (event
//!   stamps are wall-clock Unix times, for people);
//! - on shutdown the region is left as it is, so the dataplane keeps forwarding;
//! - the [`Writer`] stays single-owner: the metrics and API servers get counters by sending a
//!   [`SnapshotRequest`] that [`Daemon::run`] answers with [`Daemon::snapshot`] between its
//!   other duties; every publication's duration is observed in [`Daemon::publish_seconds`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use sluice_dataplane::tables::{
    BackendState, Generation, PublishError, ShmError, Tick, WorkerState, Writer, WriterOptions,
};
use sluice_hugepages::Backing;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::bgp::{self, Speaker};
use crate::config::{Config, ConfigError, Desired};
use crate::health::{self, Checker, Health, Transition};
use crate::k8s::{self, Cluster};
use crate::metrics::SnapshotRequest;
use crate::publisher::{Diff, Publisher, PublisherError};
use crate::state::{
    BackendSample, EventKind, Events, HealthReport, MAX_WEIGHT, Overrides, ReloadRecord,
    ServiceSample, Snapshot, effective, unix_ms,
};

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
    /// The BGP speaker could not start.
    #[error("bgp: {0}")]
    Bgp(#[source] bgp::BgpError),
}

/// How fresh the dataplane's heartbeat must be for VIPs to be announced: a worker whose
/// heartbeat stood still this long withdraws them (with the 200 ms tick, within a second).
pub const BGP_HEARTBEAT_FRESH: Duration = Duration::from_millis(400);

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

/// Why an operator command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No running service has that name.
    #[error("no service named {0:?}")]
    NoService(String),
    /// The service has no backend of that name.
    #[error("service {service:?} has no backend named {backend:?}")]
    NoBackend {
        /// The service.
        service: String,
        /// The backend asked for.
        backend: String,
    },
    /// The weight is out of range.
    #[error("weight {0} is out of range 1–{MAX_WEIGHT} (to stop new flows, drain the backend)")]
    Weight(u32),
    /// The change could not be published; nothing changed.
    #[error("{0}; nothing changed")]
    Publish(String),
    /// Node drain without BGP peers.
    #[error("no BGP peers are configured: there is nothing to drain the node from")]
    NoBgp,
}

/// What an operator command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Set the weight (1–[`MAX_WEIGHT`]).
    Weight(u32),
    /// Drain (`true`) or undrain (`false`).
    Drain(bool),
    /// Drain (`true`) or undrain (`false`) the whole node from the routers (BGP); the
    /// command's service and backend are empty.
    DrainNode(bool),
}

/// An operator command for one backend, answered with the generation in effect afterwards.
#[derive(Debug)]
pub struct Command {
    /// The service's name.
    pub service: String,
    /// The backend's name.
    pub backend: String,
    /// What to change.
    pub change: Change,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<u64, CommandError>>,
}

/// The table task's inputs, besides its own timers.
#[derive(Debug)]
pub struct Inputs {
    /// One reload per message (SIGHUP).
    pub reloads: mpsc::Receiver<()>,
    /// Snapshot requests (metrics, API).
    pub snapshots: mpsc::Receiver<SnapshotRequest>,
    /// Operator commands (API).
    pub commands: mpsc::Receiver<Command>,
    /// Turns true at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// What the Kubernetes reconciler wants published, when it runs.
    pub cluster: Option<watch::Receiver<Arc<Cluster>>>,
}

/// The table task's state.
#[derive(Debug)]
pub struct Daemon {
    config: PathBuf,
    writer: Writer,
    publisher: Publisher,
    /// The running config file's content, validated.
    file: Desired,
    /// What the Kubernetes reconciler last sent.
    cluster: Arc<Cluster>,
    /// `file` with `cluster` merged in ([`k8s::merge`]): what is published, before overrides
    /// and health.
    merged: Desired,
    /// The content last read from the file (applied or rejected), to reload once per change.
    file_seen: Option<Vec<u8>>,
    overrides: Overrides,
    /// Health by `(service, backend)`: state and the last check's detail.
    health: BTreeMap<(String, String), (Health, String)>,
    checker: Checker,
    transitions: mpsc::Receiver<Transition>,
    events: Arc<Events>,
    workers_seen: BTreeMap<(u32, u64), WorkerState>,
    last_reload: Option<ReloadRecord>,
    speaker: Option<Speaker>,
    /// What the speaker was last told to announce.
    announced: Vec<bgp::Advertisement>,
    /// Since when the node is drained from the routers (RFC 8326), if it is.
    node_drained: Option<Tick>,
    clock: Clock,
    /// How long a blocked publication is retried before it is reported. Default 5 s.
    pub retry_budget: Duration,
    /// Peer names by address (the file's and the cluster's), for the event log.
    peer_names: Arc<parking_lot::Mutex<BTreeMap<std::net::IpAddr, String>>>,
    /// Seconds from the first attempt to publish a generation until the writer accepted it
    /// (would-block retries included; acks are not awaited). Shared with the metrics server.
    pub publish_seconds: Histogram,
}

// === impl Daemon ===

impl Daemon {
    /// Opens (or creates) the region `desired` names, adopts what it already publishes, and
    /// publishes `desired` in one generation: every configured service is written (after a
    /// restart with identical content and ids, so the dataplane's flows are unaffected) and
    /// published keys the config no longer has are removed. Starts the health checks.
    ///
    /// # Errors
    ///
    /// [`DaemonError`] when the region cannot be opened or the publication fails.
    pub async fn start(
        config: PathBuf,
        desired: Desired,
        clock: Clock,
        publish_seconds: Histogram,
        events: Arc<Events>,
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
        let (tx, transitions) = mpsc::channel(256);
        let file_seen = std::fs::read(&config).ok();
        // With Kubernetes, peers may arrive later (BGPPeer objects): start an empty speaker.
        let speaker = if desired.bgp.peers.is_empty() && desired.kubernetes.is_none() {
            None
        } else {
            let peers = desired.bgp.peers.iter().map(|p| p.config.clone()).collect();
            Some(Speaker::start(peers).map_err(DaemonError::Bgp)?)
        };
        let mut d = Self {
            config,
            writer,
            publisher,
            merged: desired.clone(),
            cluster: Arc::new(Cluster::default()),
            file: desired,
            file_seen,
            overrides: Overrides::default(),
            health: BTreeMap::new(),
            checker: Checker::new(tx),
            transitions,
            events,
            workers_seen: BTreeMap::new(),
            last_reload: None,
            speaker,
            announced: Vec::new(),
            node_drained: None,
            clock,
            retry_budget: Duration::from_secs(5),
            publish_seconds,
            peer_names: Arc::default(),
        };
        d.peer_names_update();
        let applied = d.publish().await?;
        d.checker.set_targets(health::targets(&d.file));
        if let Some(speaker) = &d.speaker {
            tokio::spawn(forward_bgp_events(
                speaker.events(),
                Arc::clone(&d.events),
                Arc::clone(&d.peer_names),
            ));
        }
        d.events.emit(
            EventKind::Started,
            "",
            "",
            format!(
                "started with {} services from {}",
                applied.services,
                d.config.display()
            ),
            applied.generation.get(),
        );
        Ok((d, applied))
    }

    /// The writer (for status).
    #[must_use]
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// The event log.
    #[must_use]
    pub fn events(&self) -> &Arc<Events> {
        &self.events
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

    /// Publishes the effective state of the running file, overrides and health.
    async fn publish(&mut self) -> Result<Applied, DaemonError> {
        let health = &self.health;
        let want = effective(&self.merged, &self.overrides, |s, b| {
            health
                .get(&(s.to_owned(), b.to_owned()))
                .map_or(Health::Unknown, |h| h.0)
        });
        self.apply(&want).await
    }

    /// Re-reads the config file and applies it. An invalid file, or a failed publication,
    /// leaves the running config in place; either is logged and returned.
    ///
    /// # Errors
    ///
    /// [`ReloadError`].
    pub async fn reload(&mut self) -> Result<Applied, ReloadError> {
        self.file_seen = std::fs::read(&self.config).ok();
        let desired = Config::load(&self.config).map_err(ReloadError::Config)?;
        if desired.region != self.file.region {
            return Err(ReloadError::Config(ConfigError::Invalid {
                file: self.config.display().to_string(),
                field: "tables.region".into(),
                reason: format!(
                    "changing the region ({:?} → {:?}) needs a restart",
                    self.file.region, desired.region
                ),
            }));
        }
        if desired.metrics != self.file.metrics {
            tracing::warn!(
                running = %self.file.metrics,
                configured = %desired.metrics,
                "metrics.listen changes take effect only after a restart"
            );
        }
        if desired.api != self.file.api {
            tracing::warn!("[api] changes take effect only after a restart");
        }
        if desired.kubernetes != self.file.kubernetes {
            tracing::warn!("[kubernetes] changes take effect only after a restart");
        }
        if desired.capacity != self.file.capacity {
            tracing::warn!("tables capacity changes take effect only when the region is recreated");
        }
        let previous = std::mem::replace(&mut self.file, desired);
        match self.remerge().await {
            Ok(applied) => {
                self.checker.set_targets(health::targets(&self.file));
                let file = &self.file;
                self.health.retain(|(s, b), _| {
                    file.services.get(s).is_some_and(|d| {
                        d.health.is_some() && d.backends.iter().any(|x| x.name == *b)
                    })
                });
                Ok(applied)
            }
            Err(e) => {
                self.file = previous;
                Err(ReloadError::Apply(e))
            }
        }
    }

    /// `file` with `cluster` merged in; conflicts are logged.
    fn merge(&self) -> Desired {
        let (merged, conflicts) = k8s::merge(&self.file, &self.cluster);
        for c in conflicts {
            tracing::warn!("kubernetes: {c}; the config file's wins");
        }
        merged
    }

    /// Publishes what the Kubernetes reconciler now wants, with the file's services. A
    /// publication that fails keeps the previous cluster state published.
    ///
    /// # Errors
    ///
    /// [`DaemonError`] from the publication.
    pub async fn set_cluster(&mut self, cluster: Arc<Cluster>) -> Result<Applied, DaemonError> {
        let previous = std::mem::replace(&mut self.cluster, cluster);
        let r = self.remerge().await;
        if r.is_err() {
            self.cluster = previous;
        }
        r
    }

    /// Merges the file and the cluster again, keeps the overrides of what remains, and
    /// publishes. On failure `merged` and the overrides are as before (the caller restores
    /// the input it changed).
    async fn remerge(&mut self) -> Result<Applied, DaemonError> {
        let merged = self.merge();
        let previous_merged = std::mem::replace(&mut self.merged, merged);
        let mut overrides = self.overrides.clone();
        overrides.retain(&self.merged);
        let kept = std::mem::replace(&mut self.overrides, overrides);
        let r = self.publish().await;
        if r.is_err() {
            self.merged = previous_merged;
            self.overrides = kept;
            return r;
        }
        if self.merged.bgp.peers != previous_merged.bgp.peers {
            self.peer_names_update();
            if self.speaker.is_none() {
                // The first peers of a daemon that started without any.
                match Speaker::start(Vec::new()) {
                    Ok(speaker) => {
                        tokio::spawn(forward_bgp_events(
                            speaker.events(),
                            Arc::clone(&self.events),
                            Arc::clone(&self.peer_names),
                        ));
                        self.speaker = Some(speaker);
                    }
                    Err(e) => tracing::error!(error = %e, "BGP speaker could not start"),
                }
            }
            if let Some(speaker) = &self.speaker {
                let peers = self
                    .merged
                    .bgp
                    .peers
                    .iter()
                    .map(|p| p.config.clone())
                    .collect();
                match speaker.set_peers(peers).await {
                    Ok(()) => {
                        let names: Vec<&str> = self
                            .merged
                            .bgp
                            .peers
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect();
                        tracing::info!(peers = ?names, "BGP peers changed");
                    }
                    Err(e) => tracing::error!(error = %e, "BGP peers refused by the speaker"),
                }
            }
        }
        r
    }

    /// Refreshes the peer names the event log uses.
    fn peer_names_update(&self) {
        *self.peer_names.lock() = self
            .merged
            .bgp
            .peers
            .iter()
            .map(|p| (p.config.peer_address, p.name.clone()))
            .collect();
    }

    async fn log_cluster(&mut self, cluster: Arc<Cluster>) {
        let (kind, message, generation) = match self.set_cluster(cluster).await {
            Ok(a) if a.diff.is_empty() => return,
            Ok(a) => (
                EventKind::Kubernetes,
                format!(
                    "kubernetes: added {:?}, changed {:?}, removed {:?}, {} unchanged",
                    a.diff.added, a.diff.changed, a.diff.removed, a.diff.unchanged
                ),
                a.generation.get(),
            ),
            Err(e) => (
                EventKind::PublishFailed,
                format!("kubernetes: publishing failed, previous state kept: {e}"),
                0,
            ),
        };
        tracing::info!("{message}");
        self.events.emit(kind, "", "", message, generation);
    }

    /// Applies an operator command and publishes it (see [`Command`]).
    ///
    /// # Errors
    ///
    /// [`CommandError`]; nothing changed then.
    pub async fn command(
        &mut self,
        service: &str,
        backend: &str,
        change: Change,
    ) -> Result<u64, CommandError> {
        if let Change::DrainNode(drain) = change {
            return self.drain_node(drain);
        }
        let def = self
            .merged
            .services
            .get(service)
            .ok_or_else(|| CommandError::NoService(service.to_owned()))?;
        if !def.backends.iter().any(|b| b.name == backend) {
            return Err(CommandError::NoBackend {
                service: service.to_owned(),
                backend: backend.to_owned(),
            });
        }
        let before = self.overrides.get(service, backend);
        let mut after = before;
        let (kind, message) = match change {
            Change::Weight(w) if !(1..=MAX_WEIGHT).contains(&w) => {
                return Err(CommandError::Weight(w));
            }
            Change::Weight(w) => {
                after.weight = Some(w);
                (EventKind::WeightChanged, format!("weight set to {w}"))
            }
            Change::Drain(true) => {
                after.drained = Some(true);
                (
                    EventKind::Drained,
                    "drained: no new flows; established ones stay".to_owned(),
                )
            }
            Change::Drain(false) => {
                after.drained = Some(false);
                (
                    EventKind::Undrained,
                    "undrained: takes new flows".to_owned(),
                )
            }
            Change::DrainNode(_) => return Err(CommandError::NoBgp),
        };
        if after == before {
            return Ok(self.writer.generation().get());
        }
        self.overrides.set(service, backend, after);
        match self.publish().await {
            Ok(a) => {
                let g = a.generation.get();
                self.events.emit(kind, service, backend, message, g);
                Ok(g)
            }
            Err(e) => {
                self.overrides.set(service, backend, before);
                let msg = e.to_string();
                self.events
                    .emit(EventKind::PublishFailed, service, backend, msg.clone(), 0);
                Err(CommandError::Publish(msg))
            }
        }
    }

    /// Drains the node from the routers (every VIP re-announced with GRACEFUL_SHUTDOWN, then
    /// withdrawn after `bgp.graceful_shutdown_wait`) or undrains it; takes effect at the next
    /// tick.
    fn drain_node(&mut self, drain: bool) -> Result<u64, CommandError> {
        if self.speaker.is_none() {
            return Err(CommandError::NoBgp);
        }
        let generation = self.writer.generation().get();
        if drain == self.node_drained.is_some() {
            return Ok(generation);
        }
        if drain {
            self.node_drained = Some(self.clock.now());
            let wait = self.file.bgp.graceful_shutdown_wait;
            self.events.emit(
                EventKind::NodeDrained,
                "",
                "",
                format!(
                    "node drained: VIPs announced with GRACEFUL_SHUTDOWN (65535:0) for {wait:?}, then withdrawn"
                ),
                0,
            );
        } else {
            self.node_drained = None;
            self.events.emit(
                EventKind::NodeUndrained,
                "",
                "",
                "node undrained: VIPs announced again",
                0,
            );
        }
        let workers = self.writer.workers(self.clock.now());
        self.announce(&workers);
        Ok(generation)
    }

    /// Records a health transition and republishes when the backend's serving state changes.
    async fn health_changed(&mut self, t: Transition) {
        let key = (t.service.clone(), t.backend.clone());
        let Some(def) = self.file.services.get(&t.service) else {
            return;
        };
        if def.health.is_none() || !def.backends.iter().any(|b| b.name == t.backend) {
            return;
        }
        let was_down = self.health.get(&key).is_some_and(|h| h.0 == Health::Down);
        self.health.insert(key, (t.to, t.detail.clone()));
        let generation = if was_down == (t.to == Health::Down) {
            0
        } else {
            match self.publish().await {
                Ok(a) => a.generation.get(),
                Err(e) => {
                    self.events.emit(
                        EventKind::PublishFailed,
                        &t.service,
                        &t.backend,
                        format!("after a health change: {e}"),
                        0,
                    );
                    0
                }
            }
        };
        self.events.emit(
            EventKind::HealthChanged,
            &t.service,
            &t.backend,
            format!("health {:?} → {:?}: {}", t.from, t.to, t.detail),
            generation,
        );
    }

    /// Everything the API and the metrics report, now.
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
                let mut totals: BTreeMap<String, _> = self
                    .writer
                    .backend_totals(index)
                    .into_iter()
                    .map(|(id, b)| {
                        let n = ids
                            .backend_name(name, id)
                            .map_or_else(|| format!("id:{}", id.0), str::to_owned);
                        (n, b)
                    })
                    .collect();
                let file_def = self.merged.services.get(name);
                let checked = file_def.is_some_and(|d| d.health.is_some());
                let mut backends: Vec<BackendSample> = def
                    .backends
                    .iter()
                    .map(|b| {
                        let c = totals.remove(&b.name).unwrap_or_default();
                        let configured =
                            file_def.and_then(|d| d.backends.iter().find(|x| x.name == b.name));
                        let (health, detail) =
                            match self.health.get(&(name.clone(), b.name.clone())) {
                                _ if !checked => (HealthReport::Unchecked, String::new()),
                                None => (HealthReport::Unknown, String::new()),
                                Some((h, d)) => (report(*h), d.clone()),
                            };
                        BackendSample {
                            name: b.name.clone(),
                            addr: Some(b.addr),
                            port: b.port,
                            weight: b.weight,
                            configured_weight: configured.map_or(b.weight, |x| x.weight),
                            state: b.state,
                            drained: self.overrides.get(name, &b.name).drained.unwrap_or(
                                configured.is_some_and(|x| x.state == BackendState::Draining),
                            ),
                            health,
                            health_detail: detail,
                            table_share: self.publisher.table_share(name, &b.name),
                            packets: c.packets,
                            bytes: c.bytes,
                            connections: c.connections,
                        }
                    })
                    .collect();
                backends.extend(totals.into_iter().map(|(n, c)| BackendSample {
                    name: n,
                    addr: None,
                    port: 0,
                    weight: 0,
                    configured_weight: 0,
                    state: BackendState::Down,
                    drained: false,
                    health: HealthReport::Unchecked,
                    health_detail: String::new(),
                    table_share: 0.0,
                    packets: c.packets,
                    bytes: c.bytes,
                    connections: c.connections,
                }));
                Some(ServiceSample {
                    name: name.clone(),
                    key: def.key,
                    mode: def.mode,
                    table_size: def.table_size.get(),
                    packets: t.packets,
                    bytes: t.bytes,
                    connections: t.connections,
                    backends,
                })
            })
            .collect();
        Snapshot {
            node: self.file.node.clone(),
            region: self.file.region.clone(),
            config: self.config.display().to_string(),
            uptime: now.saturating_since(Tick::default()),
            generation: self.writer.generation().get(),
            services,
            workers,
            last_reload: self.last_reload.clone(),
            peers: self.speaker.as_ref().map_or_else(Vec::new, |sp| {
                sp.peers()
                    .into_iter()
                    .map(|p| {
                        let name = self
                            .merged
                            .bgp
                            .peers
                            .iter()
                            .find(|d| d.config.peer_address == p.peer_address)
                            .map_or_else(|| p.peer_address.to_string(), |d| d.name.clone());
                        (name, p)
                    })
                    .collect()
            }),
            node_drained: self.node_drained.is_some(),
        }
    }

    /// The periodic duty: bump the control heartbeat, free what workers moved past, and
    /// record workers that appeared, died or came back.
    pub fn tick(&mut self) {
        self.writer.heartbeat();
        let now = self.clock.now();
        self.writer.reclaim(now);
        let workers = self.writer.workers(now);
        for w in &workers {
            let key = (w.index, w.pid);
            let before = self.workers_seen.insert(key, w.state);
            if before != Some(w.state) {
                let what = match (before, w.state) {
                    (None, WorkerState::Live) => "attached",
                    (None, WorkerState::Dead) => "found dead (stale heartbeat)",
                    (Some(_), WorkerState::Dead) => "stopped (heartbeat stale)",
                    (Some(_), WorkerState::Live) => "heartbeat resumed",
                };
                self.events.emit(
                    EventKind::WorkerChanged,
                    "",
                    "",
                    format!("worker {} (pid {}) {what}", w.index, w.pid),
                    0,
                );
            }
        }
        self.workers_seen
            .retain(|k, _| workers.iter().any(|w| (w.index, w.pid) == *k));
        self.announce(&workers);
    }

    /// Tells the speaker what to announce now: every VIP whose service has a backend up,
    /// while some dataplane worker's heartbeat is fresh ([`BGP_HEARTBEAT_FRESH`]); nothing
    /// otherwise. Only a change reaches the speaker.
    fn announce(&mut self, workers: &[sluice_dataplane::tables::WorkerStatus]) {
        let Some(speaker) = &self.speaker else {
            return;
        };
        let fresh = workers
            .iter()
            .any(|w| w.state == WorkerState::Live && w.heartbeat_age < BGP_HEARTBEAT_FRESH);
        let mut want = if fresh {
            advertisements(&self.merged, self.publisher.running())
        } else {
            Vec::new()
        };
        if let Some(since) = self.node_drained {
            let drained_for = self.clock.now().saturating_since(since);
            if drained_for < self.file.bgp.graceful_shutdown_wait {
                for a in &mut want {
                    a.communities.push(bgp::GRACEFUL_SHUTDOWN);
                }
            } else {
                want.clear();
            }
        }
        if want == self.announced {
            return;
        }
        match speaker.set_advertisements(want.clone()) {
            Ok(()) => {
                let message = if want.is_empty() && self.node_drained.is_some() {
                    "node drained: every VIP withdrawn".to_owned()
                } else if want.is_empty() && !fresh {
                    "dataplane heartbeat stale: every VIP withdrawn".to_owned()
                } else {
                    let prefixes: Vec<String> = want.iter().map(|a| a.prefix.to_string()).collect();
                    format!(
                        "announcing {} prefixes: {}",
                        want.len(),
                        prefixes.join(", ")
                    )
                };
                tracing::info!("{message}");
                self.announced = want;
            }
            Err(e) => tracing::error!(error = %e, "advertisements refused by the speaker"),
        }
    }

    /// The BGP speaker, when peers are configured.
    #[must_use]
    pub fn speaker(&self) -> Option<&Speaker> {
        self.speaker.as_ref()
    }

    /// Reloads when the file's content differs from the content last read.
    async fn watch_file(&mut self) {
        let Ok(now) = std::fs::read(&self.config) else {
            return;
        };
        if self.file_seen.as_deref() != Some(now.as_slice()) {
            tracing::info!(config = %self.config.display(), "config file changed: reloading");
            self.log_reload().await;
        }
    }

    /// Runs until `shutdown` turns true (or its sender goes away): a reload per message on
    /// `reloads` and per change of the file's content (checked every `watch`, if any), a
    /// [`Daemon::snapshot`] per request, a [`Daemon::command`] per command, a health
    /// transition per report, [`Daemon::tick`] every `period`.
    pub async fn run(mut self, mut inputs: Inputs, period: Duration, watch: Option<Duration>) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut file_timer = tokio::time::interval(watch.unwrap_or(Duration::from_secs(3600)));
        let mut cluster = inputs.cluster.take();
        file_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                changed = inputs.shutdown.changed() => {
                    if changed.is_err() || *inputs.shutdown.borrow() {
                        break;
                    }
                }
                Some(()) = inputs.reloads.recv() => self.log_reload().await,
                Some(reply) = inputs.snapshots.recv() => {
                    // The caller may have gone away; nothing to do then.
                    let _ = reply.send(self.snapshot());
                }
                Some(c) = inputs.commands.recv() => {
                    let r = self.command(&c.service, &c.backend, c.change).await;
                    let _ = c.reply.send(r);
                }
                Some(t) = self.transitions.recv() => self.health_changed(t).await,
                _ = interval.tick() => self.tick(),
                _ = file_timer.tick(), if watch.is_some() => self.watch_file().await,
                changed = async { cluster.as_mut().expect("guarded").changed().await }, if cluster.is_some() => {
                    match changed {
                        Ok(()) => {
                            let c = Arc::clone(&cluster.as_mut().expect("guarded").borrow_and_update());
                            self.log_cluster(c).await;
                        }
                        // The reconciler stopped: keep what is published.
                        Err(_) => cluster = None,
                    }
                }
            }
        }
        if let Some(speaker) = &self.speaker {
            let wait = self.file.bgp.graceful_shutdown_wait;
            tracing::info!(
                ?wait,
                "BGP: announcing with GRACEFUL_SHUTDOWN, then withdrawing"
            );
            speaker.shutdown(Some(wait)).await;
        }
        tracing::info!(
            generation = self.writer.generation().get(),
            "table task stopped; the region stays published"
        );
    }

    async fn log_reload(&mut self) {
        let (ok, message, generation) = match self.reload().await {
            Ok(a) if a.diff.is_empty() => (
                true,
                format!("config reloaded: no change ({} services)", a.services),
                0,
            ),
            Ok(a) => (
                true,
                format!(
                    "config reloaded and applied: added {:?}, changed {:?}, removed {:?}, {} unchanged",
                    a.diff.added, a.diff.changed, a.diff.removed, a.diff.unchanged
                ),
                a.generation.get(),
            ),
            Err(ReloadError::Config(e)) => {
                tracing::error!(error = %e, field = e.field(), "config rejected; keeping the running config");
                (
                    false,
                    format!("config rejected, running config kept: {e}"),
                    0,
                )
            }
            Err(ReloadError::Apply(e)) => (
                false,
                format!("publishing the new config failed, running config kept: {e}"),
                0,
            ),
        };
        let kind = if ok {
            EventKind::ConfigApplied
        } else {
            EventKind::ConfigRejected
        };
        self.events.emit(kind, "", "", message.clone(), generation);
        self.last_reload = Some(ReloadRecord {
            unix_ms: unix_ms(),
            ok,
            message,
        });
    }
}

/// Copies the speaker's session events into the event log (peer names from the config).
async fn forward_bgp_events(
    mut rx: tokio::sync::broadcast::Receiver<bgp::BgpEvent>,
    events: Arc<Events>,
    names: Arc<parking_lot::Mutex<BTreeMap<std::net::IpAddr, String>>>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let name = |a: &std::net::IpAddr| {
        names
            .lock()
            .get(a)
            .cloned()
            .unwrap_or_else(|| a.to_string())
    };
    loop {
        let message = match rx.recv().await {
            Ok(bgp::BgpEvent::StateChanged { peer, from, to }) => format!(
                "BGP peer {} ({peer}): {} → {}",
                name(&peer),
                from.as_str(),
                to.as_str()
            ),
            Ok(bgp::BgpEvent::NotificationSent {
                peer,
                code,
                subcode,
            }) => format!(
                "BGP peer {} ({peer}): NOTIFICATION sent, code {code} subcode {subcode}",
                name(&peer)
            ),
            Ok(bgp::BgpEvent::NotificationReceived {
                peer,
                code,
                subcode,
            }) => format!(
                "BGP peer {} ({peer}): NOTIFICATION received, code {code} subcode {subcode}",
                name(&peer)
            ),
            Err(RecvError::Lagged(n)) => format!("{n} BGP events were lost (too many at once)"),
            Err(RecvError::Closed) => return,
        };
        events.emit(EventKind::PeerChanged, "", "", message, 0);
    }
}

/// What to announce for `running` (the effective, published services): each VIP with at
/// least one backend that is not down (draining ones count: their flows must keep arriving), once per advertisement whose pools hold it, aggregated as it
/// says, with the node's address of the VIP's family as next hop (VIPs of a family the node
/// has no address for are skipped).
fn advertisements(
    file: &Desired,
    running: &BTreeMap<String, crate::config::ServiceDef>,
) -> Vec<bgp::Advertisement> {
    let mut out = Vec::new();
    for def in running.values() {
        if def.backends.iter().all(|b| b.state == BackendState::Down) {
            continue;
        }
        let vip = def.key.vip();
        let next_hop = match vip {
            std::net::IpAddr::V4(_) => file.node_ipv4.map(std::net::IpAddr::V4),
            std::net::IpAddr::V6(_) => file.node_ipv6.map(std::net::IpAddr::V6),
        };
        let Some(next_hop) = next_hop else {
            continue;
        };
        for a in &file.bgp.advertisements {
            let in_pools = a.pools.is_empty()
                || a.pools.iter().any(|p| {
                    file.pools
                        .get(p)
                        .is_some_and(|blocks| blocks.iter().any(|b| b.contains(vip)))
                });
            if !in_pools {
                continue;
            }
            let len = if vip.is_ipv4() {
                a.aggregation_length
            } else {
                a.aggregation_length_v6
            };
            let Ok(mut ad) = bgp::Advertisement::aggregated(vip, len, next_hop) else {
                continue;
            };
            ad.communities.clone_from(&a.communities);
            ad.large_communities.clone_from(&a.large_communities);
            ad.local_pref = a.local_pref;
            out.push(ad);
        }
    }
    out.sort_by(|a, b| {
        a.prefix
            .cmp(&b.prefix)
            .then_with(|| a.communities.cmp(&b.communities))
    });
    out.dedup();
    out
}

fn report(h: Health) -> HealthReport {
    match h {
        Health::Unknown => HealthReport::Unknown,
        Health::Up => HealthReport::Up,
        Health::Down => HealthReport::Down,
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
