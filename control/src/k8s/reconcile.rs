//! The Kubernetes reconciler: watches the cluster, elects one allocator, writes Service
//! status, and tells the table task what this node publishes.
//!
//! Every daemon (one per LB node) runs it:
//! - reflectors (kube-rs watchers with back-off: list + watch, relisting after `410 Gone`)
//!   keep local stores of Services, EndpointSlices, Namespaces, Nodes and the pool and BGP
//!   CRDs (in `crd_group`, in `namespace`);
//! - after any change (coalesced for [`DEBOUNCE`]) and at least every lease period, one
//!   **pass** runs:
//!   1. the **allocator** — the daemon holding the Lease ([`super::lease`]) — rebuilds the
//!      allocation from the Services' `status.loadBalancer.ingress` (so it survives restarts
//!      and leader changes), assigns addresses to Services without one ([`super::ipam`]), and
//!      writes `status.loadBalancer.ingress` with the `resourceVersion` it read as a
//!      precondition (a competing write makes it re-read instead of overwriting). Failures
//!      become Kubernetes Events on the Service (`AllocationFailed`), successes too
//!      (`IPAllocated`); the pools' status gets counts and conditions;
//!   2. **every** daemon translates the Services that have addresses and their EndpointSlices
//!      into this node's services ([`super::translate`]) and sends them, with the pools and
//!      the BGP advertisements that select this node, to the table task, which publishes them
//!      and announces the VIPs.
//! - Only the allocator writes to the API (status, events about allocation); followers only
//!   read, plus `NotPublished` events for what they cannot publish.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use super::Cluster;
use super::crd::{IPAddressPoolStatus, PeerPassword};
use super::ipam::{Allocator, Pool, Request};
use super::lease::{Elector, Role};
use super::manifest::{self, Manifest};
use super::translate::{self, Problem, View};
use crate::config::{AddressBlock, AdvertisementDef, KubeConfig, PeerDef};
use crate::state::{EventKind, Events};

/// How long changes are collected before a pass runs.
pub const DEBOUNCE: Duration = Duration::from_millis(30);

/// The name events and status writes are reported under.
pub const CONTROLLER: &str = "sluice.io/control";

/// A kube client for `cfg`: its kubeconfig file, or the usual inference.
///
/// # Errors
///
/// The file cannot be read or names no usable cluster.
pub async fn client(cfg: &KubeConfig) -> anyhow::Result<Client> {
    use anyhow::Context;
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig given and none could be inferred")?,
    };
    Client::try_from(config).context("kube client")
}

/// The CRDs' API resources in `group`.
fn crd_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: format!("{group}/{version}"),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

/// Starts a reflector for `api`; every change notifies `notify`.
fn reflect<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    notify: Arc<Notify>,
    what: &'static str,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            match stream.try_next().await {
                Ok(Some(_)) => notify.notify_one(),
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "kubernetes watch of {what}: retrying"),
            }
        }
    });
    store
}

/// Like [`reflect`] for a CRD read as [`DynamicObject`]s.
fn reflect_dynamic(
    client: &Client,
    namespace: &str,
    resource: &ApiResource,
    notify: Arc<Notify>,
    what: &'static str,
) -> Store<DynamicObject> {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, resource);
    reflect(api, resource.clone(), notify, what)
}

/// The reconciler's stores.
struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    namespaces: Store<Namespace>,
    nodes: Store<Node>,
    pools: Store<DynamicObject>,
    advertisements: Store<DynamicObject>,
    peers: Store<DynamicObject>,
    secrets: Store<Secret>,
}

/// Runs the reconciler until `shutdown` turns true; sends what this node publishes on `out`.
/// Gives the Lease up on the way out.
pub async fn run(
    client: Client,
    cfg: KubeConfig,
    node: String,
    node_ipv4: Option<std::net::Ipv4Addr>,
    out: watch::Sender<Arc<Cluster>>,
    events: Arc<Events>,
    mut shutdown: watch::Receiver<bool>,
) {
    let notify = Arc::new(Notify::new());
    let group = cfg.crd_group.as_str();
    let stores = Stores {
        services: reflect(
            Api::all(client.clone()),
            (),
            Arc::clone(&notify),
            "services",
        ),
        slices: reflect(
            Api::all(client.clone()),
            (),
            Arc::clone(&notify),
            "endpointslices",
        ),
        namespaces: reflect(
            Api::all(client.clone()),
            (),
            Arc::clone(&notify),
            "namespaces",
        ),
        nodes: reflect(Api::all(client.clone()), (), Arc::clone(&notify), "nodes"),
        pools: reflect_dynamic(
            &client,
            &cfg.namespace,
            &crd_resource(group, "v1beta1", "IPAddressPool", "ipaddresspools"),
            Arc::clone(&notify),
            "ipaddresspools",
        ),
        advertisements: reflect_dynamic(
            &client,
            &cfg.namespace,
            &crd_resource(group, "v1beta1", "BGPAdvertisement", "bgpadvertisements"),
            Arc::clone(&notify),
            "bgpadvertisements",
        ),
        peers: reflect_dynamic(
            &client,
            &cfg.namespace,
            &crd_resource(group, "v1beta2", "BGPPeer", "bgppeers"),
            Arc::clone(&notify),
            "bgppeers",
        ),
        // BGPPeer passwordSecret: Secrets of the namespace only.
        secrets: reflect(
            Api::namespaced(client.clone(), &cfg.namespace),
            (),
            Arc::clone(&notify),
            "secrets",
        ),
    };
    let mut reconciler = Reconciler {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER.to_owned(),
                instance: Some(node.clone()),
            },
        ),
        elector: cfg.allocate.then(|| {
            Elector::new(
                client.clone(),
                &cfg.namespace,
                &cfg.lease_name,
                &node,
                cfg.lease_duration,
            )
        }),
        client,
        cfg,
        node,
        node_ipv4,
        events,
        reported: BTreeMap::new(),
        failures: BTreeMap::new(),
        invalid: BTreeMap::new(),
        written: BTreeMap::new(),
        stats: BTreeMap::new(),
        leader: false,
    };
    // Wait until every store has its first list, so the first pass sees the whole cluster.
    let ready = {
        let (a, b, c) = (
            stores.services.clone(),
            stores.slices.clone(),
            stores.namespaces.clone(),
        );
        let (d, e, f) = (
            stores.nodes.clone(),
            stores.pools.clone(),
            stores.advertisements.clone(),
        );
        let (g, h) = (stores.peers.clone(), stores.secrets.clone());
        async move {
            let _ = g.wait_until_ready().await;
            let _ = h.wait_until_ready().await;
            let _ = a.wait_until_ready().await;
            let _ = b.wait_until_ready().await;
            let _ = c.wait_until_ready().await;
            let _ = d.wait_until_ready().await;
            let _ = e.wait_until_ready().await;
            let _ = f.wait_until_ready().await;
        }
    };
    tokio::select! {
        () = ready => {}
        _ = shutdown.changed() => return,
    }
    tracing::info!(
        services = stores.services.state().len(),
        "kubernetes: initial lists received"
    );
    let period = reconciler
        .elector
        .as_ref()
        .map_or(Duration::from_secs(5), Elector::period);
    let mut timer = tokio::time::interval(period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        reconciler.pass(&stores, &out).await;
        tokio::select! {
            () = notify.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = timer.tick() => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
    }
    if let Some(e) = &mut reconciler.elector
        && let Err(err) = e.release().await
    {
        tracing::warn!(error = %err, "kubernetes: could not release the lease");
    }
}

/// The reconciler's state between passes.
struct Reconciler {
    client: Client,
    cfg: KubeConfig,
    node: String,
    node_ipv4: Option<std::net::Ipv4Addr>,
    recorder: Recorder,
    elector: Option<Elector>,
    events: Arc<Events>,
    /// Problems already reported, by service, so each is reported once.
    reported: BTreeMap<String, BTreeSet<String>>,
    /// Allocation failures already reported, by service.
    failures: BTreeMap<String, String>,
    /// Pools and advertisements already reported invalid, by name, with the reason.
    invalid: BTreeMap<String, String>,
    /// Services whose status this daemon wrote: the resourceVersion it wrote against and the
    /// object the API returned, until the watch delivers a newer one.
    written: BTreeMap<String, (Option<String>, Arc<Service>)>,
    /// The pools' counters from the last allocation pass.
    stats: BTreeMap<String, super::ipam::PoolStats>,
    leader: bool,
}

/// A valid pool with its object.
struct PoolEntry {
    pool: Pool,
    labels: BTreeMap<String, String>,
}

impl Reconciler {
    async fn pass(&mut self, stores: &Stores, out: &watch::Sender<Arc<Cluster>>) {
        let mut services = stores.services.state();
        // Our own status writes the watch has not delivered yet.
        self.written.retain(|_, (seen_rv, _)| {
            services
                .iter()
                .any(|s| s.metadata.resource_version == *seen_rv)
        });
        for s in &mut services {
            if let Some((rv, newer)) = self.written.get(&translate::object_key(&s.metadata))
                && s.metadata.resource_version == *rv
            {
                *s = Arc::clone(newer);
            }
        }
        let pool_objects = stores.pools.state();
        let pools = self.pools(&pool_objects);
        self.campaign().await;
        if self.leader {
            self.allocate(&services, &stores.namespaces.state(), &pools)
                .await;
            self.pool_status(&pool_objects, &pools).await;
        }
        let slices = stores.slices.state();
        let nodes = stores.nodes.state();
        let (published, problems) = translate::node_services(
            &self.cfg,
            View {
                services: &services,
                slices: &slices,
                nodes: &nodes,
            },
        );
        self.report(&services, problems).await;
        let node_labels = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(self.node.as_str()))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        let cluster = Cluster {
            services: published,
            pools: pools
                .iter()
                .map(|p| {
                    let blocks = p
                        .pool
                        .blocks
                        .iter()
                        .map(|&(first, last)| AddressBlock { first, last });
                    (p.pool.name.clone(), blocks.collect())
                })
                .collect(),
            advertisements: self.advertisements(
                &stores.advertisements.state(),
                &pools,
                &node_labels,
            ),
            peers: self.peers(&stores.peers.state(), &stores.secrets, &node_labels),
        };
        out.send_if_modified(|c| {
            if **c == cluster {
                false
            } else {
                *c = Arc::new(cluster);
                true
            }
        });
    }

    /// One election step (when this daemon may allocate); logs role changes.
    async fn campaign(&mut self) {
        let Some(elector) = &mut self.elector else {
            return;
        };
        let role = match elector.step().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "kubernetes: lease step failed");
                if elector.is_leader() {
                    Role::Leader
                } else {
                    Role::Follower(None)
                }
            }
        };
        let leader = role == Role::Leader && elector.is_leader();
        if leader != self.leader {
            let message = if leader {
                format!(
                    "kubernetes: this daemon ({}) holds lease {}/{} and allocates addresses",
                    self.node, self.cfg.namespace, self.cfg.lease_name
                )
            } else {
                format!(
                    "kubernetes: this daemon ({}) no longer allocates (lease held by {})",
                    self.node,
                    match &role {
                        Role::Follower(Some(h)) => h.as_str(),
                        _ => "someone else",
                    }
                )
            };
            tracing::info!("{message}");
            self.events.emit(EventKind::Kubernetes, "", "", message, 0);
            self.leader = leader;
        }
    }

    /// Reports each new problem once: in the log, the event log and as a Service event.
    async fn report(&mut self, services: &[Arc<Service>], problems: Vec<Problem>) {
        let mut now: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in problems {
            now.entry(p.service).or_default().insert(p.reason);
        }
        for (svc, reasons) in &now {
            let old = self.reported.get(svc);
            for reason in reasons {
                if old.is_some_and(|o| o.contains(reason)) {
                    continue;
                }
                tracing::warn!(service = %svc, "kubernetes: {reason}");
                self.events
                    .emit(EventKind::Kubernetes, svc, "", reason.clone(), 0);
                if let Some(s) = services
                    .iter()
                    .find(|s| translate::object_key(&s.metadata) == *svc)
                {
                    self.event(s, EventType::Warning, "NotPublished", reason)
                        .await;
                }
            }
        }
        self.reported = now;
    }

    /// Publishes a Kubernetes Event about `svc` (failures are logged only).
    async fn event(&self, svc: &Service, type_: EventType, reason: &str, note: &str) {
        let ev = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: if reason == "NotPublished" {
                "Publish".to_owned()
            } else {
                "Allocate".to_owned()
            },
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &svc.object_ref(&())).await {
            tracing::warn!(error = %e, "kubernetes: could not record an event");
        }
    }

    /// Reports an invalid pool or advertisement once (log, event log).
    fn invalid(&mut self, what: String, reason: String) {
        if self.invalid.get(&what) != Some(&reason) {
            tracing::warn!("kubernetes: {what} is invalid and ignored: {reason}");
            self.events.emit(
                EventKind::Kubernetes,
                "",
                "",
                format!("{what} is invalid and ignored: {reason}"),
                0,
            );
            self.invalid.insert(what, reason);
        }
    }

    /// The valid pools among `objects` (invalid ones are reported and left out).
    fn pools(&mut self, objects: &[Arc<DynamicObject>]) -> Vec<PoolEntry> {
        let mut out = Vec::new();
        for o in objects {
            let name = o.metadata.name.clone().unwrap_or_default();
            let pool = load(o, |m| match m {
                Manifest::IPAddressPool(p) => Pool::from_crd(&p).map_err(|e| e.to_string()),
                m => Err(format!("unexpected kind {}", m.kind())),
            });
            match pool {
                Ok(pool) => {
                    self.invalid.remove(&format!("IPAddressPool {name}"));
                    out.push(PoolEntry {
                        pool,
                        labels: o.metadata.labels.clone().unwrap_or_default(),
                    });
                }
                Err(e) => self.invalid(format!("IPAddressPool {name}"), e),
            }
        }
        out
    }

    /// The BGP advertisements that apply to this node, each naming the pools it selects.
    fn advertisements(
        &mut self,
        objects: &[Arc<DynamicObject>],
        pools: &[PoolEntry],
        node_labels: &BTreeMap<String, String>,
    ) -> Vec<AdvertisementDef> {
        let mut out = Vec::new();
        for o in objects {
            let name = o.metadata.name.clone().unwrap_or_default();
            let what = format!("BGPAdvertisement {name}");
            let settings = load(o, |m| match m {
                Manifest::BGPAdvertisement(a) => a.validate().map_err(|e| e.to_string()),
                m => Err(format!("unexpected kind {}", m.kind())),
            });
            let settings = match settings {
                Ok(s) => s,
                Err(e) => {
                    self.invalid(what, e);
                    continue;
                }
            };
            let (communities, large_communities) = match settings.communities(&BTreeMap::new()) {
                Ok(c) => c,
                Err(e) => {
                    self.invalid(what, e.to_string());
                    continue;
                }
            };
            if !settings.peers.is_empty() {
                self.invalid(
                    what,
                    "spec.peers: advertising to a subset of peers is not supported yet".into(),
                );
                continue;
            }
            self.invalid.remove(&what);
            if !settings.applies_to_node(node_labels) {
                continue;
            }
            let selected: Vec<String> = pools
                .iter()
                .filter(|p| settings.selects_pool(&p.pool.name, &p.labels))
                .map(|p| p.pool.name.clone())
                .collect();
            if selected.is_empty() {
                continue;
            }
            out.push(AdvertisementDef {
                pools: selected,
                communities,
                large_communities,
                local_pref: settings.local_pref,
                aggregation_length: settings.aggregation_length,
                aggregation_length_v6: settings.aggregation_length_v6,
            });
        }
        out
    }

    /// The BGP peers that apply to this node (invalid ones are reported and left out).
    fn peers(
        &mut self,
        objects: &[Arc<DynamicObject>],
        secrets: &Store<Secret>,
        node_labels: &BTreeMap<String, String>,
    ) -> Vec<PeerDef> {
        let mut out = Vec::new();
        for o in objects {
            let name = o.metadata.name.clone().unwrap_or_default();
            let what = format!("BGPPeer {name}");
            let settings = load(o, |m| match m {
                Manifest::BGPPeer(p) => p.validate().map_err(|e| e.to_string()),
                m => Err(format!("unexpected kind {}", m.kind())),
            });
            let settings = match settings {
                Ok(s) => s,
                Err(e) => {
                    self.invalid(what, e);
                    continue;
                }
            };
            if !settings.applies_to_node(node_labels) {
                self.invalid.remove(&what);
                continue;
            }
            let secret = match &settings.password {
                PeerPassword::Secret { name: s, namespace } => {
                    let ns = namespace.as_deref().unwrap_or(&self.cfg.namespace);
                    let password = (ns == self.cfg.namespace)
                        .then(|| secrets.get(&reflector::ObjectRef::new(s).within(ns)))
                        .flatten()
                        .and_then(|sec| {
                            let b = sec.data.as_ref()?.get("password")?;
                            String::from_utf8(b.0.clone()).ok()
                        });
                    if password.is_none() {
                        self.invalid(
                            what,
                            format!(
                                "spec.passwordSecret: no Secret {ns}/{s} with a `password` key \
                                 (Secrets are read in {} only)",
                                self.cfg.namespace
                            ),
                        );
                        continue;
                    }
                    password
                }
                _ => None,
            };
            match settings.to_peer_config(self.node_ipv4, secret.as_deref()) {
                Ok((config, warnings)) => {
                    self.invalid.remove(&what);
                    for w in warnings {
                        tracing::debug!("kubernetes: {what}: {w}");
                    }
                    out.push(PeerDef { name, config });
                }
                Err(e) => self.invalid(what, e.to_string()),
            }
        }
        out
    }

    /// The allocator's pass (module docs, step 1).
    async fn allocate(
        &mut self,
        services: &[Arc<Service>],
        namespaces: &[Arc<Namespace>],
        pools: &[PoolEntry],
    ) {
        let mut alloc = match Allocator::new(pools.iter().map(|p| p.pool.clone()).collect()) {
            Ok(a) => {
                self.invalid.remove("the pools");
                a
            }
            Err(e) => {
                self.invalid("the pools".into(), e.to_string());
                return;
            }
        };
        let no_labels = BTreeMap::new();
        let ns_labels: BTreeMap<&str, &BTreeMap<String, String>> = namespaces
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.labels.as_ref()?)))
            .collect();
        let mut ours: Vec<&Arc<Service>> = services
            .iter()
            .filter(|s| translate::is_ours(&self.cfg, s))
            .collect();
        // Oldest first: after a conflict the older Service keeps its address.
        ours.sort_by(|a, b| {
            let t = |s: &Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(a).cmp(&t(b)).then_with(|| {
                translate::object_key(&a.metadata).cmp(&translate::object_key(&b.metadata))
            })
        });
        let mut failures: BTreeMap<String, String> = BTreeMap::new();
        let mut pending: Vec<(&Arc<Service>, Request)> = Vec::new();
        let mut writes: Vec<(&Arc<Service>, Vec<std::net::IpAddr>)> = Vec::new();
        for svc in &ours {
            let key = translate::object_key(&svc.metadata);
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let held = translate::ingress_ips(svc);
            let req = match Request::from_service(
                svc,
                ns_labels.get(ns).copied().unwrap_or(&no_labels),
            ) {
                Ok(r) => r,
                Err(e) => {
                    failures.insert(key, e.to_string());
                    if !held.is_empty() {
                        writes.push((svc, Vec::new()));
                    }
                    continue;
                }
            };
            if held.is_empty() {
                pending.push((svc, req));
                continue;
            }
            if let Err(e) = alloc.restore(&req, &held) {
                tracing::info!(service = %key, "kubernetes: status address no longer valid ({e}); allocating again");
                pending.push((svc, req));
            }
        }
        let mut allocated = Vec::new();
        for (svc, req) in pending {
            let key = translate::object_key(&svc.metadata);
            let held = translate::ingress_ips(svc);
            match alloc.assign(&req) {
                Ok(a) => {
                    if a.addresses != held {
                        writes.push((svc, a.addresses.clone()));
                        allocated.push((svc, a));
                    }
                }
                Err(e) => {
                    failures.insert(key, e.to_string());
                    if !held.is_empty() {
                        writes.push((svc, Vec::new()));
                    }
                }
            }
        }
        // Status writes, 32 at a time.
        let client = self.client.clone();
        let results: Vec<(String, Result<Service, kube::Error>)> = futures_util::stream::iter(
            writes
                .iter()
                .map(|(svc, ips)| (Arc::clone(svc), ips.clone()))
                .collect::<Vec<_>>(),
        )
        .map(move |(svc, ips)| write_ingress(client.clone(), svc, ips))
        .buffer_unordered(32)
        .collect()
        .await;
        let mut ok = BTreeSet::new();
        for ((key, r), (svc, _)) in results.into_iter().zip(writes.iter()) {
            match r {
                Ok(updated) => {
                    self.written.insert(
                        key.clone(),
                        (svc.metadata.resource_version.clone(), Arc::new(updated)),
                    );
                    ok.insert(key);
                }
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                    tracing::debug!(service = %key, "kubernetes: status write raced a change ({}); next pass redoes it", e.code);
                }
                Err(e) => {
                    tracing::warn!(service = %key, error = %e, "kubernetes: status write failed")
                }
            }
        }
        for (svc, a) in allocated {
            let key = translate::object_key(&svc.metadata);
            if !ok.contains(&key) {
                continue;
            }
            let ips: Vec<String> = a.addresses.iter().map(ToString::to_string).collect();
            let note = format!("assigned {} from pool {}", ips.join(", "), a.pool);
            tracing::info!(service = %key, "kubernetes: {note}");
            self.events
                .emit(EventKind::Kubernetes, &key, "", note.clone(), 0);
            self.event(svc, EventType::Normal, "IPAllocated", &note)
                .await;
        }
        for (key, reason) in &failures {
            if self.failures.get(key) == Some(reason) {
                continue;
            }
            tracing::warn!(service = %key, "kubernetes: no address: {reason}");
            self.events.emit(
                EventKind::Kubernetes,
                key,
                "",
                format!("no address: {reason}"),
                0,
            );
            if let Some(svc) = ours
                .iter()
                .find(|s| translate::object_key(&s.metadata) == *key)
            {
                self.event(svc, EventType::Warning, "AllocationFailed", reason)
                    .await;
            }
        }
        self.failures = failures;
        self.stats = alloc.pool_stats();
    }

    /// Writes each pool's counters and conditions when they changed.
    async fn pool_status(&mut self, objects: &[Arc<DynamicObject>], pools: &[PoolEntry]) {
        let group = self.cfg.crd_group.clone();
        let ar = crd_resource(&group, "v1beta1", "IPAddressPool", "ipaddresspools");
        let api =
            Api::<DynamicObject>::namespaced_with(self.client.clone(), &self.cfg.namespace, &ar);
        for o in objects {
            let name = o.metadata.name.clone().unwrap_or_default();
            let valid = pools.iter().find(|p| p.pool.name == name);
            let mut status = match valid.and_then(|p| self.stats.get(&p.pool.name)) {
                Some(s) => IPAddressPoolStatus::from(*s),
                None => IPAddressPoolStatus::default(),
            };
            let invalid = self.invalid.get(&format!("IPAddressPool {name}")).cloned();
            let overlapping = self.invalid.get("the pools").cloned();
            let (ready, reason, message) = match (valid, invalid, overlapping) {
                (_, Some(why), _) => (false, "Invalid", why),
                (_, _, Some(why)) => (false, "Conflict", why),
                (Some(_), None, None) => {
                    (true, "Accepted", "the pool serves allocations".to_owned())
                }
                (None, None, None) => (false, "Invalid", "not a valid pool".to_owned()),
            };
            let exhausted = ready && status.available_ipv4 == 0 && status.available_ipv6 == 0;
            let old = o
                .data
                .get("status")
                .and_then(|s| serde_json::from_value::<IPAddressPoolStatus>(s.clone()).ok());
            let condition = |type_: &str, on: bool, reason: &str, message: &str| {
                let since = old
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
                    .filter(|c| c.status == if on { "True" } else { "False" })
                    .map_or_else(
                        || {
                            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                                k8s_openapi::jiff::Timestamp::now(),
                            )
                        },
                        |c| c.last_transition_time.clone(),
                    );
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    type_: type_.to_owned(),
                    status: if on { "True" } else { "False" }.to_owned(),
                    reason: reason.to_owned(),
                    message: message.to_owned(),
                    last_transition_time: since,
                    observed_generation: o.metadata.generation,
                }
            };
            status.conditions = vec![
                condition("Ready", ready, reason, &message),
                condition(
                    "Exhausted",
                    exhausted,
                    if exhausted {
                        "NoFreeAddresses"
                    } else {
                        "FreeAddresses"
                    },
                    &format!(
                        "{} IPv4 and {} IPv6 addresses free",
                        status.available_ipv4, status.available_ipv6
                    ),
                ),
            ];
            if old.as_ref() == Some(&status) {
                continue;
            }
            let patch = serde_json::json!({ "status": status });
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(pool = %name, error = %e, "kubernetes: pool status write failed");
            }
        }
    }
}

/// Writes `status.loadBalancer.ingress` of `svc` to `ips`, with its resourceVersion as a
/// precondition; returns the Service's key and the updated object.
async fn write_ingress(
    client: Client,
    svc: Arc<Service>,
    ips: Vec<std::net::IpAddr>,
) -> (String, Result<Service, kube::Error>) {
    let key = translate::object_key(&svc.metadata);
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or("");
    let api: Api<Service> = Api::namespaced(client, ns);
    let ingress: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| serde_json::json!({ "ip": ip.to_string(), "ipMode": "VIP" }))
        .collect();
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": svc.metadata.resource_version },
        "status": { "loadBalancer": { "ingress": ingress } },
    });
    let r = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    (key, r)
}

/// A CRD object from a watch, loaded and checked like a manifest, then `check`ed.
fn load<T>(
    o: &DynamicObject,
    check: impl FnOnce(Manifest) -> Result<T, String>,
) -> Result<T, String> {
    let v = serde_json::to_value(o).map_err(|e| e.to_string())?;
    check(manifest::from_value(&v).map_err(|e| e.to_string())?)
}
