//! Turning a validated [`Desired`] state into table publications: the running set, the diff
//! against a new config, stable ids, and Maglev tables.
//!
//! # Contract
//!
//! - **Only the difference is published.** [`diff`] compares the running services with the
//!   desired ones by name: a service is *added*, *removed*, *changed* (any field differs: key,
//!   mode, affinity, table size, a backend's address/port/MAC/weight/state, the backend set) or
//!   *unchanged* (the `health` check is not compared: it publishes nothing). Unchanged
//!   services are not rewritten: their arena blocks stay shared with the previous generation.
//!   A service whose key changed is an upsert of the new key plus a removal of the old one,
//!   in the same generation.
//! - **Stable ids** ([`Ids`]). A service's `ServiceId` and a backend's `BackendId` (unique
//!   within its service) are kept in memory for as long as the name is running, so a reload
//!   never renumbers anything, and the dataplane's conntrack entries (which store both ids)
//!   stay valid. A new name gets `xxh3(name) as u32` (0 is skipped), probing upwards past ids
//!   in use; with names taken in sorted order this is deterministic, so a restarted daemon
//!   assigns the same ids again. On restart, [`Publisher::adopt`] also reuses the id of any
//!   service already published under the same key.
//! - **Slot order.** Each service's backends are handed to the Maglev builder and to
//!   [`ServiceSpec::backends`] in one order (sorted by name); the writer maps table slots back
//!   through [`MaglevTable::backend_order`].
//! - **All or nothing.** [`Publisher::prepare`] builds everything first; the running set only
//!   changes through [`Publisher::commit`], after the writer accepted the publication.

use std::collections::{BTreeMap, BTreeSet};

use sluice_dataplane::maglev::{MaglevBackend, MaglevBuilder, MaglevError, MaglevTable};
use sluice_dataplane::tables::{
    Affinity, Backend, BackendId, Mode, ServiceId, ServiceKey, ServiceSpec, ServiceUpdate, Writer,
};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::config::{Desired, ServiceDef};

/// Seed for service ids (ASCII `"sluicesv"`).
const SERVICE_SEED: u64 = u64::from_be_bytes(*b"sluicesv");
/// Seed for backend ids (ASCII `"sluicebk"`).
const BACKEND_SEED: u64 = u64::from_be_bytes(*b"sluicebk");

/// Why a publication could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    /// Building a service's Maglev table failed (validation should have prevented it).
    #[error("service {service:?}: {source}")]
    Maglev {
        /// The service's name.
        service: String,
        /// The builder's error.
        #[source]
        source: MaglevError,
    },
}

/// What changed between the running services and the desired ones (names, sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Services to insert.
    pub added: Vec<String>,
    /// Services to replace.
    pub changed: Vec<String>,
    /// Services to remove.
    pub removed: Vec<String>,
    /// Services left as they are.
    pub unchanged: usize,
}

impl Diff {
    /// Whether nothing changes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The difference from `running` to `desired`, by service name.
#[must_use]
pub fn diff(
    running: &BTreeMap<String, ServiceDef>,
    desired: &BTreeMap<String, ServiceDef>,
) -> Diff {
    let mut d = Diff::default();
    for (name, want) in desired {
        match running.get(name) {
            None => d.added.push(name.clone()),
            Some(have) if !same_tables(have, want) => d.changed.push(name.clone()),
            Some(_) => d.unchanged += 1,
        }
    }
    d.removed = running
        .keys()
        .filter(|n| !desired.contains_key(*n))
        .cloned()
        .collect();
    d
}

/// Whether `a` and `b` publish the same tables: every field but `health` (health checks run
/// in control and never reach the dataplane). Destructured so that a new field must be
/// sorted into one group or the other.
fn same_tables(a: &ServiceDef, b: &ServiceDef) -> bool {
    let ServiceDef {
        key,
        mode,
        affinity,
        table_size,
        backends,
        health: _,
    } = a;
    *key == b.key
        && *mode == b.mode
        && *affinity == b.affinity
        && *table_size == b.table_size
        && *backends == b.backends
}

/// Stable service and backend ids (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Ids {
    services: BTreeMap<String, u32>,
    backends: BTreeMap<String, BTreeMap<String, u32>>,
}

// === impl Ids ===

impl Ids {
    /// The id of service `name`, assigning one (preferring `hint` when it is free) if new.
    pub fn service(&mut self, name: &str, hint: Option<u32>) -> ServiceId {
        if let Some(&id) = self.services.get(name) {
            return ServiceId(id);
        }
        let used: BTreeSet<u32> = self.services.values().copied().collect();
        let id = match hint {
            Some(h) if h != 0 && !used.contains(&h) => h,
            _ => free_id(hash32(name, SERVICE_SEED), &used),
        };
        self.services.insert(name.to_owned(), id);
        ServiceId(id)
    }

    /// The id of backend `backend` of service `service`, assigning one if new.
    pub fn backend(&mut self, service: &str, backend: &str) -> BackendId {
        let map = self.backends.entry(service.to_owned()).or_default();
        if let Some(&id) = map.get(backend) {
            return BackendId(id);
        }
        let used: BTreeSet<u32> = map.values().copied().collect();
        let id = free_id(hash32(backend, BACKEND_SEED), &used);
        map.insert(backend.to_owned(), id);
        BackendId(id)
    }

    /// The name of the backend of service `service` with id `id`, if it is known.
    #[must_use]
    pub fn backend_name(&self, service: &str, id: BackendId) -> Option<&str> {
        self.backends
            .get(service)?
            .iter()
            .find(|&(_, &b)| b == id.0)
            .map(|(name, _)| name.as_str())
    }

    /// Forgets every service not in `keep` and every backend not in its service there.
    pub fn retain(&mut self, keep: &BTreeMap<String, ServiceDef>) {
        self.services.retain(|n, _| keep.contains_key(n));
        self.backends.retain(|n, bs| match keep.get(n) {
            Some(def) => {
                bs.retain(|b, _| def.backends.iter().any(|d| &d.name == b));
                true
            }
            None => false,
        });
    }
}

fn hash32(name: &str, seed: u64) -> u32 {
    // The low 32 bits of a 64-bit hash: truncation is the point.
    let h = xxh3_64_with_seed(name.as_bytes(), seed);
    u32::try_from(h & u64::from(u32::MAX)).unwrap_or(0)
}

/// `start` or the next id above it (wrapping, skipping 0) that is not in `used`.
fn free_id(start: u32, used: &BTreeSet<u32>) -> u32 {
    let mut id = start.max(1);
    while used.contains(&id) {
        id = id.checked_add(1).unwrap_or(1);
    }
    id
}

/// One service's prepared upsert: everything a [`ServiceSpec`] borrows.
#[derive(Debug)]
struct Built {
    key: ServiceKey,
    id: ServiceId,
    mode: Mode,
    affinity: Affinity,
    backends: Vec<Backend>,
    table: MaglevTable,
}

/// A publication ready to hand to [`Writer::publish`] (possibly several times, when it would
/// block), then to [`Publisher::commit`].
#[derive(Debug)]
pub struct Prepared {
    /// What it changes.
    pub diff: Diff,
    upserts: Vec<Built>,
    removes: Vec<ServiceKey>,
    services: BTreeMap<String, ServiceDef>,
    /// Table shares of the upserted services.
    shares: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Prepared {
    /// The changes, borrowing this value.
    #[must_use]
    pub fn updates(&self) -> Vec<ServiceUpdate<'_>> {
        let mut u: Vec<ServiceUpdate<'_>> = self
            .upserts
            .iter()
            .map(|b| {
                ServiceUpdate::Upsert(ServiceSpec {
                    key: b.key,
                    id: b.id,
                    mode: b.mode,
                    affinity: b.affinity,
                    backends: &b.backends,
                    table: &b.table,
                })
            })
            .collect();
        u.extend(self.removes.iter().map(|k| ServiceUpdate::Remove(*k)));
        u
    }

    /// Whether there is nothing to publish.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removes.is_empty()
    }
}

/// The running set and the means to move it to a new desired state.
#[derive(Debug, Default)]
pub struct Publisher {
    ids: Ids,
    running: BTreeMap<String, ServiceDef>,
    /// Keys found published in the region at start-up and not (yet) known by name.
    stale: BTreeSet<ServiceKey>,
    /// Ids found published at start-up, by key.
    hints: BTreeMap<ServiceKey, u32>,
    /// The share of its service's Maglev table each running backend owns, by service and
    /// backend name.
    shares: BTreeMap<String, BTreeMap<String, f64>>,
    builder: MaglevBuilder,
}

// === impl Publisher ===

impl Publisher {
    /// An empty publisher (nothing running).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Learns what a re-attached region already publishes: those keys are removed by the
    /// next publication unless the desired state still has them, and their service ids are
    /// reused for services with the same key.
    pub fn adopt(&mut self, writer: &Writer) {
        for (_, e) in writer.services() {
            if let Some(key) = e.key() {
                self.stale.insert(key);
                self.hints.insert(key, e.id().0);
            }
        }
    }

    /// The running services.
    #[must_use]
    pub fn running(&self) -> &BTreeMap<String, ServiceDef> {
        &self.running
    }

    /// The share (0.0–1.0) of `service`'s Maglev table that `backend` owns; 0 when unknown.
    #[must_use]
    pub fn table_share(&self, service: &str, backend: &str) -> f64 {
        self.shares
            .get(service)
            .and_then(|s| s.get(backend))
            .copied()
            .unwrap_or(0.0)
    }

    /// The ids in use.
    #[must_use]
    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    /// Builds the publication that moves the running set to `desired`.
    ///
    /// # Errors
    ///
    /// [`PublisherError::Maglev`] if a table cannot be built.
    pub fn prepare(&mut self, desired: &Desired) -> Result<Prepared, PublisherError> {
        let d = diff(&self.running, &desired.services);
        let mut upserts = Vec::new();
        let mut upserted = BTreeSet::new();
        let mut shares = BTreeMap::new();
        for name in d.added.iter().chain(&d.changed) {
            let Some(def) = desired.services.get(name) else {
                continue;
            };
            let hint = self.hints.get(&def.key).copied();
            let id = self.ids.service(name, hint);
            let backends: Vec<Backend> = def
                .backends
                .iter()
                .map(|b| Backend {
                    id: self.ids.backend(name, &b.name),
                    addr: b.addr,
                    port: b.port,
                    mac: Some(b.mac),
                    next_hop: None,
                    weight: b.maglev_weight(),
                    state: b.state,
                })
                .collect();
            let inputs: Vec<MaglevBackend<'_>> = def
                .backends
                .iter()
                .map(|b| MaglevBackend::new(&b.name, b.maglev_weight()))
                .collect();
            let table = self
                .builder
                .build(def.table_size, &inputs)
                .map_err(|source| PublisherError::Maglev {
                    service: name.clone(),
                    source,
                })?;
            shares.insert(name.clone(), table_shares(def, &table));
            upserted.insert(def.key);
            upserts.push(Built {
                key: def.key,
                id,
                mode: def.mode,
                affinity: def.affinity,
                backends,
                table,
            });
        }
        // Old keys: removed services, services whose key changed, and keys left in a
        // re-attached region. A key upserted in this generation replaces itself.
        let mut removes = BTreeSet::new();
        for (name, have) in &self.running {
            let gone = desired
                .services
                .get(name)
                .is_none_or(|want| want.key != have.key);
            if gone && !upserted.contains(&have.key) {
                removes.insert(have.key);
            }
        }
        for key in &self.stale {
            let wanted = desired.services.values().any(|s| s.key == *key);
            if !wanted {
                removes.insert(*key);
            }
        }
        Ok(Prepared {
            diff: d,
            upserts,
            removes: removes.into_iter().collect(),
            services: desired.services.clone(),
            shares,
        })
    }

    /// Records `prepared` as running, once the writer has published it.
    pub fn commit(&mut self, prepared: Prepared) {
        self.running = prepared.services;
        self.shares.extend(prepared.shares);
        let running = &self.running;
        self.shares.retain(|name, _| running.contains_key(name));
        self.ids.retain(&self.running);
        self.stale.clear();
        self.hints.clear();
    }
}

/// Each backend's share of `table`, by name (`def.backends` is the order it was built from).
fn table_shares(def: &ServiceDef, table: &MaglevTable) -> BTreeMap<String, f64> {
    let mut counts = vec![0_u32; table.backend_order().len()];
    for &slot in table.as_slice() {
        if let Some(c) = counts.get_mut(usize::from(slot)) {
            *c += 1;
        }
    }
    let m = f64::from(table.size().get());
    table
        .backend_order()
        .iter()
        .zip(counts)
        .filter_map(|(&input, n)| Some((def.backends.get(input)?.name.clone(), f64::from(n) / m)))
        .collect()
}

#[cfg(test)]
mod tests {
    use sluice_dataplane::tables::{Capacity, Tick, WriterOptions};
    use sluice_hugepages::Backing;

    use super::*;
    use crate::config::Config;

    const EXAMPLE: &str = include_str!("../examples/sluice.toml");
    const DNS: &str = r#"
[[services]]
name = "dns"
vip = "10.90.0.101"
port = 53
protocol = "udp"
table_size = 251

[[services.backends]]
name = "d1"
address = "10.90.0.11"
mac = "02:90:00:00:00:0b"
"#;

    fn desired(text: &str) -> Desired {
        Config::parse(text, "t.toml").expect("valid")
    }

    /// A region on /dev/shm, removed on drop.
    struct Region(Option<Writer>, String);

    impl Region {
        fn new(tag: &str) -> Self {
            let name = format!("ctl-unit-{tag}-{}", std::process::id());
            let _ = Writer::remove(&name);
            let cap = Capacity {
                max_services: 8,
                max_workers: 2,
                dir_slots: 4,
                arena_bytes: 4 << 20,
            };
            let w =
                Writer::create(&name, cap, Backing::Shm, WriterOptions::default()).expect("region");
            Region(Some(w), name)
        }
        fn w(&mut self) -> &mut Writer {
            self.0.as_mut().expect("writer")
        }
    }

    impl Drop for Region {
        fn drop(&mut self) {
            self.0 = None;
            let _ = Writer::remove(&self.1);
        }
    }

    fn publish(p: &mut Publisher, w: &mut Writer, d: &Desired) -> (Diff, usize) {
        let prep = p.prepare(d).expect("prepare");
        let n = prep.updates().len();
        if !prep.is_empty() {
            w.reclaim(Tick::default());
            w.publish(&prep.updates()).expect("publish");
        }
        let diff = prep.diff.clone();
        p.commit(prep);
        (diff, n)
    }

    #[test]
    fn diff_sees_added_changed_removed_and_unchanged() {
        let a = desired(&format!("{EXAMPLE}{DNS}"));
        let d = diff(&BTreeMap::new(), &a.services);
        assert_eq!(
            (d.added.clone(), d.unchanged),
            (vec!["dns".to_owned(), "web".to_owned()], 0)
        );
        assert!(diff(&a.services, &a.services).is_empty());
        assert_eq!(diff(&a.services, &a.services).unchanged, 2);
        // web loses b3, dns goes, api arrives.
        let b_text = EXAMPLE
            .replacen("name = \"web\"", "name = \"api\"\nvip = \"10.90.0.102\"\nport = 80\n[[services.backends]]\nname = \"a\"\naddress = \"10.90.0.11\"\nmac = \"02:90:00:00:00:0b\"\n[[services]]\nname = \"web\"", 1);
        let b_text = &b_text[..b_text.rfind("[[services.backends]]").unwrap()];
        let b = desired(b_text);
        let d = diff(&a.services, &b.services);
        assert_eq!(d.added, ["api"]);
        assert_eq!(d.changed, ["web"]);
        assert_eq!(d.removed, ["dns"]);
        assert_eq!(d.unchanged, 0);
        // A weight, state, MAC, mode, affinity or table size change is a change.
        for (from, to) in [
            (
                "mac = \"02:90:00:00:00:0c\"",
                "mac = \"02:90:00:00:00:0c\"\nweight = 2",
            ),
            (
                "mac = \"02:90:00:00:00:0c\"",
                "mac = \"02:90:00:00:00:0c\"\nstate = \"draining\"",
            ),
            ("mac = \"02:90:00:00:00:0c\"", "mac = \"02:90:00:00:00:0e\""),
            ("mode = \"nat\"", "mode = \"dsr\""),
            (
                "mode = \"nat\"",
                "mode = \"nat\"\nsession_affinity = \"client_ip\"",
            ),
            ("table_size = 65537", "table_size = 131071"),
        ] {
            let c = desired(&format!("{EXAMPLE}{DNS}").replacen(from, to, 1));
            let d = diff(&a.services, &c.services);
            assert_eq!(
                (d.changed.clone(), d.unchanged),
                (vec!["web".to_owned()], 1),
                "{to}"
            );
        }
        // A health check alone is no change: it publishes nothing.
        for (from, to) in [
            ("kind = \"http\"\npath = \"/\"", "kind = \"tcp\"\nport = 9"),
            ("rise = 2", "rise = 5"),
        ] {
            let c = desired(&format!("{EXAMPLE}{DNS}").replacen(from, to, 1));
            assert_ne!(c.services["web"].health, a.services["web"].health);
            let d = diff(&a.services, &c.services);
            assert!(d.is_empty(), "{to}: {d:?}");
            assert_eq!(d.unchanged, 2);
        }
        let start = EXAMPLE.find("[services.health]").unwrap();
        let end = EXAMPLE[start..]
            .find("\n\n")
            .map_or(EXAMPLE.len(), |n| start + n);
        let mut no_health = format!("{EXAMPLE}{DNS}");
        no_health.replace_range(start..end, "");
        let c = desired(&no_health);
        assert_eq!(c.services["web"].health, None);
        assert!(diff(&a.services, &c.services).is_empty());
        // File order alone is no change.
        let moved = desired(&format!(
            "[node]\nname = \"lb1\"\n{DNS}\n{}",
            &EXAMPLE[EXAMPLE.find("[[services]]").unwrap()..]
        ));
        assert_eq!(diff(&a.services, &moved.services).unchanged, 2);
    }

    /// `session_affinity` reaches the published entry, and changing it republishes.
    #[test]
    fn affinity_is_published_and_its_change_republishes() {
        let mut r = Region::new("affinity");
        let mut p = Publisher::new();
        let sticky = EXAMPLE.replacen(
            "mode = \"nat\"",
            "mode = \"nat\"\nsession_affinity = \"client_ip\"",
            1,
        );
        let d = desired(&sticky);
        publish(&mut p, r.w(), &d);
        let key = d.services["web"].key;
        assert_eq!(
            r.w().service(&key).expect("web").1.affinity(),
            Affinity::ClientIp
        );
        let (diff, n) = publish(&mut p, r.w(), &desired(EXAMPLE));
        assert_eq!((diff.changed, n), (vec!["web".to_owned()], 1));
        assert_eq!(
            r.w().service(&key).expect("web").1.affinity(),
            Affinity::None
        );
    }

    #[test]
    fn ids_are_stable_deterministic_and_unique() {
        let mut ids = Ids::default();
        let web = ids.service("web", None);
        assert_eq!(
            web,
            ids.service("web", Some(7)),
            "a known name keeps its id"
        );
        assert_ne!(web.0, 0);
        let mut fresh = Ids::default();
        assert_eq!(
            fresh.service("web", None),
            web,
            "same name, same id in a new process"
        );
        assert_eq!(fresh.backend("web", "b1"), ids.backend("web", "b1"));
        assert_eq!(
            ids.service("other", Some(42)),
            ServiceId(42),
            "a free hint is used"
        );
        assert_ne!(ids.service("third", Some(42)).0, 42, "a taken hint is not");
        // Collisions probe upwards, skipping 0.
        let used: BTreeSet<u32> = [5, 6, u32::MAX, 1].into();
        assert_eq!(free_id(5, &used), 7);
        assert_eq!(free_id(u32::MAX, &used), 2);
        assert_eq!(free_id(0, &BTreeSet::new()), 1);
        // Backend ids are per service, and map back to their names.
        let b = ids.backend("web", "b1");
        assert_eq!(ids.backend_name("web", b), Some("b1"));
        assert_eq!(ids.backend_name("nope", b), None);
        assert_eq!(ids.backend("other", "b1"), b);
        assert_eq!(ids.backend("web", "b1"), b);
    }

    #[test]
    fn reloads_publish_only_the_difference_and_keep_ids() {
        let mut r = Region::new("diff");
        let mut p = Publisher::new();
        let a = desired(&format!("{EXAMPLE}{DNS}"));
        let (d, n) = publish(&mut p, r.w(), &a);
        assert_eq!((d.added.len(), n), (2, 2));
        let g1 = r.w().generation();
        let web_key = a.services["web"].key;
        let (_, e) = r.w().service(&web_key).expect("web published");
        let web_id = e.id();
        let web_version = e.version();
        let dns_version = r
            .w()
            .service(&a.services["dns"].key)
            .expect("dns")
            .1
            .version();
        let b3 = p.ids.backend("web", "b3");

        // The same config again: nothing to publish.
        let (d, n) = publish(&mut p, r.w(), &a);
        assert!(d.is_empty());
        assert_eq!((n, r.w().generation()), (0, g1));

        // Drop b3 from web: one upsert; dns keeps its block; web keeps its id, b1/b2 theirs.
        let b1 = p.ids.backend("web", "b1");
        let without_b3 = format!("{EXAMPLE}{DNS}").replacen(
            "[[services.backends]]\nname = \"b3\"\naddress = \"10.90.0.13\"\nmac = \"02:90:00:00:00:0d\"\n",
            "",
            1,
        );
        let b = desired(&without_b3);
        assert_eq!(b.services["web"].backends.len(), 2);
        let (d, n) = publish(&mut p, r.w(), &b);
        assert_eq!(
            (d.changed.clone(), d.unchanged, n),
            (vec!["web".to_owned()], 1, 1)
        );
        let (_, e) = r.w().service(&web_key).expect("web");
        assert_eq!(e.id(), web_id);
        assert!(e.version() > web_version);
        assert_eq!(e.n_backends, 2);
        assert_eq!(
            r.w()
                .service(&b.services["dns"].key)
                .expect("dns")
                .1
                .version(),
            dns_version
        );
        assert_eq!(p.ids.backend("web", "b1"), b1);
        // b3 was forgotten; it comes back with the same (hash-derived) id.
        assert_eq!(p.ids.backend("web", "b3"), b3);

        // Remove dns and move web to another VIP: upsert new key, remove both old keys.
        let moved = EXAMPLE.replacen("vip = \"10.90.0.100\"", "vip = \"10.90.0.99\"", 1);
        let c = desired(&moved);
        let (d, n) = publish(&mut p, r.w(), &c);
        assert_eq!(
            (d.changed.clone(), d.removed.clone(), n),
            (vec!["web".to_owned()], vec!["dns".to_owned()], 3)
        );
        assert!(r.w().service(&web_key).is_none());
        assert_eq!(
            r.w().service(&c.services["web"].key).expect("moved").1.id(),
            web_id
        );
        assert_eq!(r.w().services().count(), 1);
    }

    #[test]
    fn a_renamed_service_on_the_same_key_replaces_it_in_one_publication() {
        let mut r = Region::new("rename");
        let mut p = Publisher::new();
        publish(&mut p, r.w(), &desired(EXAMPLE));
        let renamed = desired(&EXAMPLE.replacen("name = \"web\"", "name = \"www\"", 1));
        let (d, n) = publish(&mut p, r.w(), &renamed);
        assert_eq!(
            (d.added, d.removed, n),
            (vec!["www".to_owned()], vec!["web".to_owned()], 1)
        );
        assert_eq!(r.w().services().count(), 1);
    }

    #[test]
    fn adopting_a_region_reuses_ids_and_removes_stale_services() {
        let mut r = Region::new("adopt");
        let mut first = Publisher::new();
        let a = desired(&format!("{EXAMPLE}{DNS}"));
        publish(&mut first, r.w(), &a);
        let web_key = a.services["web"].key;
        let web_id = r.w().service(&web_key).expect("web").1.id();
        // A restarted daemon whose config renamed web and dropped dns.
        let mut second = Publisher::new();
        second.adopt(r.w());
        let b = desired(&EXAMPLE.replacen("name = \"web\"", "name = \"web2\"", 1));
        let (d, n) = publish(&mut second, r.w(), &b);
        assert_eq!(
            (d.added, n),
            (vec!["web2".to_owned()], 2),
            "upsert web2, remove dns"
        );
        assert_eq!(
            r.w().service(&web_key).expect("web2").1.id(),
            web_id,
            "id reused by key"
        );
        assert_eq!(r.w().services().count(), 1);
    }

    #[test]
    fn draining_backends_stay_listed_with_no_table_entries() {
        let p3 = "mac = \"02:90:00:00:00:0d\"";
        let d = desired(&EXAMPLE.replacen(p3, &format!("{p3}\nstate = \"draining\""), 1));
        let mut p = Publisher::new();
        let prep = p.prepare(&d).expect("prepare");
        let built = &prep.upserts[0];
        assert_eq!(built.backends.len(), 3);
        let b3 = built
            .backends
            .iter()
            .position(|b| b.state == sluice_dataplane::tables::BackendState::Draining)
            .expect("b3");
        assert_eq!(built.backends[b3].weight, 0);
        // Slot s names backends[backend_order[s]]; b3's slot owns no entry.
        let slot = built
            .table
            .backend_order()
            .iter()
            .position(|&i| i == b3)
            .expect("slot");
        let slot = u16::try_from(slot).expect("small");
        assert!(!built.table.as_slice().contains(&slot));
        // Its share is 0; the two active ones split the table.
        let shares = &prep.shares["web"];
        assert_eq!(shares["b3"], 0.0);
        assert!((shares["b1"] + shares["b2"] - 1.0).abs() < 1e-9);
        assert!((shares["b1"] - 0.5).abs() < 0.01, "{shares:?}");
        let b1 = shares["b1"];
        p.commit(prep);
        assert_eq!(p.table_share("web", "b1"), b1);
        assert_eq!(p.table_share("web", "nope"), 0.0);
    }
}
