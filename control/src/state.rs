//! Runtime state layered over the config file: operator overrides (weight, drain) and health,
//! folded into the [`Desired`] state that is actually published; the event log; and the
//! [`Snapshot`] that the API and the metrics report.
//!
//! # Contract
//!
//! - **What is published** is [`effective`]`(config, overrides, health)`: the config file's
//!   services with, per backend,
//!   1. `Down` (out of the table, its flows re-picked) while its health check says down;
//!   2. else `Draining` (out of the table, established flows stay) when drained by the API,
//!      or by the config file (`state = "draining"`) unless the API undrained it;
//!   3. else `Active` with the API's weight if one was set, else the config file's.
//!
//!   A backend whose health is not known yet (no check configured, or too few checks so far)
//!   is treated as up, so a fresh start serves at once.
//! - **Overrides survive reloads** while the backend keeps its name in the config; one whose
//!   backend left the config is forgotten ([`Overrides::retain`]). They do not survive a
//!   restart of the daemon: the config file stays the durable truth.
//! - **Events** ([`Events`]) are numbered from 1 without gaps, kept for the last
//!   [`EVENT_BACKLOG`], and broadcast to followers; a follower too slow to keep up with
//!   [`EVENT_BACKLOG`] events is told it lagged rather than silently skipping.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use sluice_dataplane::tables::{BackendState, Mode, ServiceKey, WorkerStatus};
use tokio::sync::broadcast;

use crate::config::Desired;
use crate::health::Health;

/// How many past events [`Events`] keeps.
pub const EVENT_BACKLOG: usize = 1024;

/// The largest weight the API accepts.
pub const MAX_WEIGHT: u32 = 10_000;

/// An operator's override for one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Override {
    /// A weight replacing the config file's.
    pub weight: Option<u32>,
    /// `Some(true)` drained, `Some(false)` undrained (even if the config drains it).
    pub drained: Option<bool>,
}

/// Overrides by `(service, backend)` name.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    by_backend: BTreeMap<(String, String), Override>,
}

impl Overrides {
    /// The override of one backend (default: none).
    #[must_use]
    pub fn get(&self, service: &str, backend: &str) -> Override {
        self.by_backend
            .get(&(service.to_owned(), backend.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// Replaces one backend's override (an empty one is removed).
    pub fn set(&mut self, service: &str, backend: &str, o: Override) {
        let k = (service.to_owned(), backend.to_owned());
        if o == Override::default() {
            self.by_backend.remove(&k);
        } else {
            self.by_backend.insert(k, o);
        }
    }

    /// Forgets overrides of backends `config` no longer has.
    pub fn retain(&mut self, config: &Desired) {
        self.by_backend.retain(|(s, b), _| {
            config
                .services
                .get(s)
                .is_some_and(|def| def.backends.iter().any(|x| x.name == *b))
        });
    }
}

/// The state to publish: `config` with `overrides` and `health` applied (see the module docs).
/// `health` answers `(service, backend)`.
#[must_use]
pub fn effective(
    config: &Desired,
    overrides: &Overrides,
    health: impl Fn(&str, &str) -> Health,
) -> Desired {
    let mut out = config.clone();
    for (name, def) in &mut out.services {
        for b in &mut def.backends {
            let o = overrides.get(name, &b.name);
            if let Some(w) = o.weight {
                b.weight = w;
            }
            let drained = o.drained.unwrap_or(b.state == BackendState::Draining);
            b.state = if health(name, &b.name) == Health::Down {
                BackendState::Down
            } else if drained {
                BackendState::Draining
            } else {
                BackendState::Active
            };
        }
    }
    out
}

/// What an [`Event`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The daemon started and published its config.
    Started,
    /// A reloaded config was applied.
    ConfigApplied,
    /// A reloaded config was rejected.
    ConfigRejected,
    /// A backend's health changed.
    HealthChanged,
    /// A backend was drained through the API.
    Drained,
    /// A backend was undrained through the API.
    Undrained,
    /// A backend's weight was set through the API.
    WeightChanged,
    /// A dataplane worker appeared, died or came back.
    WorkerChanged,
    /// A publication failed.
    PublishFailed,
    /// A BGP session changed state, or a NOTIFICATION went either way.
    PeerChanged,
    /// The node was drained from the routers.
    NodeDrained,
    /// The node was undrained.
    NodeUndrained,
    /// Kubernetes: a cluster change was published, the allocator role changed, or a Service
    /// could not be published as asked.
    Kubernetes,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    /// Wall-clock time, Unix milliseconds.
    pub unix_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The service concerned, or empty.
    pub service: String,
    /// The backend concerned, or empty.
    pub backend: String,
    /// Human-readable detail.
    pub message: String,
    /// The generation published because of it, 0 when none.
    pub generation: u64,
}

/// The event log: a bounded backlog plus a broadcast to followers.
#[derive(Debug)]
pub struct Events {
    inner: Mutex<Log>,
    tx: broadcast::Sender<Event>,
}

#[derive(Debug)]
struct Log {
    next: u64,
    backlog: VecDeque<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(EVENT_BACKLOG);
        Self {
            inner: Mutex::new(Log {
                next: 1,
                backlog: VecDeque::with_capacity(EVENT_BACKLOG),
            }),
            tx,
        }
    }

    /// Records an event (also logged through `tracing`) and returns its sequence number.
    pub fn emit(
        &self,
        kind: EventKind,
        service: &str,
        backend: &str,
        message: impl Into<String>,
        generation: u64,
    ) -> u64 {
        let message = message.into();
        tracing::info!(?kind, service, backend, generation, "{message}");
        let unix_ms = unix_ms();
        // Numbering, logging and broadcasting under one lock keep the three in one order.
        let mut log = self.inner.lock();
        let seq = log.next;
        log.next += 1;
        let e = Event {
            seq,
            unix_ms,
            kind,
            service: service.to_owned(),
            backend: backend.to_owned(),
            message,
            generation,
        };
        if log.backlog.len() == EVENT_BACKLOG {
            log.backlog.pop_front();
        }
        log.backlog.push_back(e.clone());
        // No follower is fine.
        let _ = self.tx.send(e);
        seq
    }

    /// The last `n` events (oldest first) and a receiver for every later one: no event is
    /// both in the backlog and received, and none falls between.
    #[must_use]
    pub fn follow(&self, n: usize) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let log = self.inner.lock();
        let rx = self.tx.subscribe();
        let skip = log.backlog.len().saturating_sub(n);
        (log.backlog.iter().skip(skip).cloned().collect(), rx)
    }
}

/// A backend's health as reported (the checker's state, or that none is configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthReport {
    /// The service has no health check.
    Unchecked,
    /// Checked, but neither `rise` nor `fall` reached yet (served meanwhile).
    Unknown,
    /// Passing.
    Up,
    /// Failing: out of the table.
    Down,
}

/// The outcome of the last reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRecord {
    /// When, Unix milliseconds.
    pub unix_ms: u64,
    /// Whether it was applied.
    pub ok: bool,
    /// What changed, or why it was rejected.
    pub message: String,
}

/// One backend as the table task sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSample {
    /// The backend's config name (`id:<n>` for an id in the region control does not know).
    pub name: String,
    /// Its address (`None` for an unknown id).
    pub addr: Option<IpAddr>,
    /// Port after NAT; 0 keeps the client's.
    pub port: u16,
    /// The weight in effect (override, else config).
    pub weight: u32,
    /// The config file's weight.
    pub configured_weight: u32,
    /// As published.
    pub state: BackendState,
    /// Drained by the config or the API.
    pub drained: bool,
    /// Health-check state.
    pub health: HealthReport,
    /// The last check's detail (empty when unchecked).
    pub health_detail: String,
    /// Share of the service's Maglev table it owns.
    pub table_share: f64,
    /// Client → backend packets, over all workers.
    pub packets: u64,
    /// Client → backend bytes, over all workers.
    pub bytes: u64,
    /// New flows assigned to it, over all workers.
    pub connections: u64,
}

/// One published service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSample {
    /// The service's config name.
    pub name: String,
    /// What it matches.
    pub key: ServiceKey,
    /// Forwarding mode.
    pub mode: Mode,
    /// Maglev table size.
    pub table_size: u32,
    /// Packets, both directions.
    pub packets: u64,
    /// Bytes, both directions.
    pub bytes: u64,
    /// New flows.
    pub connections: u64,
    /// Its backends, by name (unknown ids last).
    pub backends: Vec<BackendSample>,
}

/// Everything the API and the metrics report, read by the table task at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `node.name`.
    pub node: String,
    /// The region's name.
    pub region: String,
    /// The config file.
    pub config: String,
    /// Time since the daemon started.
    pub uptime: Duration,
    /// The published generation.
    pub generation: u64,
    /// The running services, by name.
    pub services: Vec<ServiceSample>,
    /// The attached worker blocks.
    pub workers: Vec<WorkerStatus>,
    /// The last reload attempt.
    pub last_reload: Option<ReloadRecord>,
    /// The BGP sessions, with their config names.
    pub peers: Vec<(String, crate::bgp::PeerStatus)>,
    /// Whether the node is drained from the routers.
    pub node_drained: bool,
}

impl Snapshot {
    /// An empty snapshot (tests).
    #[must_use]
    pub fn empty() -> Self {
        Self {
            node: String::new(),
            region: String::new(),
            config: String::new(),
            uptime: Duration::ZERO,
            generation: 0,
            services: Vec::new(),
            workers: Vec::new(),
            last_reload: None,
            peers: Vec::new(),
            node_drained: false,
        }
    }
}

/// Unix time now, in milliseconds (for event and reload stamps).
#[must_use]
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const EXAMPLE: &str = include_str!("../examples/sluice.toml");

    fn config() -> Desired {
        Config::parse(EXAMPLE, "t.toml").expect("valid")
    }

    fn states(d: &Desired) -> Vec<(String, BackendState, u32)> {
        d.services["web"]
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.state, b.maglev_weight()))
            .collect()
    }

    fn set(o: &mut Overrides, backend: &str, weight: Option<u32>, drained: Option<bool>) {
        o.set("web", backend, Override { weight, drained });
    }

    #[test]
    fn health_beats_drain_beats_weight() {
        let c = config();
        let mut o = Overrides::default();
        set(&mut o, "b1", Some(5), None);
        set(&mut o, "b2", Some(5), Some(true));
        set(&mut o, "b3", None, Some(true));
        let d = effective(
            &c,
            &o,
            |_, b| {
                if b == "b3" { Health::Down } else { Health::Up }
            },
        );
        assert_eq!(
            states(&d),
            vec![
                ("b1".into(), BackendState::Active, 5),
                ("b2".into(), BackendState::Draining, 0),
                ("b3".into(), BackendState::Down, 0),
            ]
        );
        // Unknown health serves.
        let d = effective(&c, &Overrides::default(), |_, _| Health::Unknown);
        assert!(states(&d).iter().all(|s| s.1 == BackendState::Active));
    }

    #[test]
    fn undrain_overrides_a_config_drain_and_retain_forgets_gone_backends() {
        let p = "address = \"10.90.0.12\"";
        let text = EXAMPLE.replacen(p, &format!("{p}\nstate = \"draining\""), 1);
        let c = Config::parse(&text, "t.toml").expect("valid");
        let mut o = Overrides::default();
        assert_eq!(
            states(&effective(&c, &o, |_, _| Health::Up))[1].1,
            BackendState::Draining
        );
        set(&mut o, "b2", None, Some(false));
        set(&mut o, "gone", Some(2), None);
        assert_eq!(
            states(&effective(&c, &o, |_, _| Health::Up))[1].1,
            BackendState::Active
        );
        o.retain(&c);
        assert_eq!(o.get("web", "gone"), Override::default());
        assert_eq!(o.get("web", "b2").drained, Some(false));
        // Setting an empty override removes it.
        o.set("web", "b2", Override::default());
        assert!(o.by_backend.is_empty());
    }

    #[tokio::test]
    async fn events_are_numbered_bounded_and_followed_without_gaps() {
        let ev = Events::new();
        for i in 0..(EVENT_BACKLOG + 10) {
            ev.emit(EventKind::Started, "", "", format!("e{i}"), 0);
        }
        let (backlog, mut rx) = ev.follow(5);
        let seqs: Vec<u64> = backlog.iter().map(|e| e.seq).collect();
        let last = u64::try_from(EVENT_BACKLOG + 10).expect("fits");
        assert_eq!(seqs, (last - 4..=last).collect::<Vec<_>>());
        let (all, _) = ev.follow(usize::MAX);
        assert_eq!(all.len(), EVENT_BACKLOG);
        ev.emit(EventKind::Drained, "web", "b1", "drained", 7);
        let e = rx.recv().await.expect("event");
        assert_eq!(
            (e.seq, e.kind, e.generation),
            (last + 1, EventKind::Drained, 7)
        );
    }
}
