//! The deploy manifests (`deploy/`) checked against the code they deploy:
//!
//! - every YAML document under `deploy/manifests/`, `deploy/examples/` and `deploy/sluice.yaml`
//!   parses into its k8s-openapi type (Namespace, ServiceAccount, ClusterRole, Role, their
//!   bindings, ConfigMap, DaemonSet, Service, CustomResourceDefinition) **without losing a
//!   field** (a misspelt field, which the API server would drop or refuse, fails here), and
//!   the `sluice.io` objects load with `parse_manifests` (the CRD schema and MetalLB's rules);
//! - RBAC: no `*` anywhere, and the ClusterRole and Role grant exactly the
//!   (group, resource, verb) set of [`NEEDED`], which names the code behind each entry;
//! - the DaemonSet: both containers mount the same hugetlbfs volume (and the same `/dev/shm`
//!   fallback) at the same paths, ask for hugepages enough for the region control.toml
//!   describes and for DPDK's memory; the control container has no capability, the
//!   dataplane only the documented ones and is not privileged; only control gets the API
//!   token; the probes hit control's metrics port; the init container renders `${NODE_NAME}`
//!   and `${NODE_IP}` from the downward API;
//! - the ConfigMap's control.toml passes `sluice_control::config::Config::parse` and its
//!   dataplane.toml `sluice_dataplane::config::DataplaneConfig::parse` once rendered for a
//!   node, and the two agree with each other and with the manifests (region name, namespace,
//!   CRD group, Lease name, worker count, metrics port);
//! - `deploy/sluice.yaml` is the CRDs followed by `deploy/manifests/*` (and
//!   `deploy/kustomization.yaml` lists the same files); `deploy/helm/sluice/crds/*` are
//!   byte-identical copies of `deploy/crds/*`; the chart's templates use only values that
//!   `values.yaml` defines and its defaults match the plain manifests.
//!
//! After `deploy/crds/` or `deploy/manifests/` change, rewrite the bundle and the chart's CRD
//! copies with:
//!
//! ```text
//! SLUICE_BLESS=1 cargo test -p sluice-control --test k8s_deploy
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Service, ServiceAccount, Volume,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_control::config::{Config, Desired};
use sluice_control::k8s::ipam::Pool;
use sluice_control::k8s::manifest::{Manifest, parse_manifests};
use sluice_dataplane::config::DataplaneConfig;
use sluice_dataplane::tables::layout::Geometry;

/// Set to `1` to rewrite `deploy/sluice.yaml` and `deploy/helm/sluice/crds/`.
const BLESS_VAR: &str = "SLUICE_BLESS";

/// Whether an RBAC entry is granted cluster-wide (ClusterRole) or in Sluice's namespace
/// (Role).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// A ClusterRole: every namespace, or a cluster-scoped resource.
    Cluster,
    /// A Role in `[kubernetes] namespace`.
    Namespace,
}

/// Every API request sluice-control makes, as (API group, resource, verb, scope), and the code
/// that makes it. The ClusterRole and Role must grant exactly this set: nothing missing (the
/// daemon would fail), nothing more (least privilege). `sluice.io` stands for
/// `[kubernetes] crd_group`, which the test checks is `sluice.io` in the shipped config.
const NEEDED: &[(&str, &str, &str, Scope)] = &[
    // reconcile.rs `run`: `reflect(Api::<Service>::all(..))`, a kube-runtime watcher
    // (list, then watch; relist after 410 Gone) over all namespaces.
    ("", "services", "list", Scope::Cluster),
    ("", "services", "watch", Scope::Cluster),
    // reconcile.rs `write_ingress`: `Api::<Service>::patch_status` (merge patch of
    // status.loadBalancer.ingress with a resourceVersion precondition).
    ("", "services/status", "patch", Scope::Cluster),
    // reconcile.rs `run`: `reflect(Api::<EndpointSlice>::all(..))`.
    ("discovery.k8s.io", "endpointslices", "list", Scope::Cluster),
    (
        "discovery.k8s.io",
        "endpointslices",
        "watch",
        Scope::Cluster,
    ),
    // reconcile.rs `run`: `reflect(Api::<Namespace>::all(..))`, for the pools'
    // serviceAllocation namespace selectors (`allocate`).
    ("", "namespaces", "list", Scope::Cluster),
    ("", "namespaces", "watch", Scope::Cluster),
    // reconcile.rs `run`: `reflect(Api::<Node>::all(..))`, for node backends (translate.rs)
    // and this node's labels (BGPAdvertisement nodeSelectors).
    ("", "nodes", "list", Scope::Cluster),
    ("", "nodes", "watch", Scope::Cluster),
    // reconcile.rs `event`: kube-runtime `Recorder::publish` creates an events.k8s.io/v1
    // Event in the Service's namespace ...
    ("events.k8s.io", "events", "create", Scope::Cluster),
    // ... and merge-patches it (its series) when the same event repeats.
    ("events.k8s.io", "events", "patch", Scope::Cluster),
    // lease.rs `Elector::step` / `release`: `Api::<Lease>::get_opt` in `namespace`.
    ("coordination.k8s.io", "leases", "get", Scope::Namespace),
    // lease.rs `Elector::step`: `create` when the Lease does not exist yet.
    ("coordination.k8s.io", "leases", "create", Scope::Namespace),
    // lease.rs `Elector::step` / `release`: `replace` (PUT) to renew, take over, release.
    ("coordination.k8s.io", "leases", "update", Scope::Namespace),
    // reconcile.rs `run`: `reflect_dynamic(.., "ipaddresspools")`, namespaced watcher.
    ("sluice.io", "ipaddresspools", "list", Scope::Namespace),
    ("sluice.io", "ipaddresspools", "watch", Scope::Namespace),
    // reconcile.rs `pool_status`: `patch_status` of each IPAddressPool (counters, conditions).
    (
        "sluice.io",
        "ipaddresspools/status",
        "patch",
        Scope::Namespace,
    ),
    // reconcile.rs `run`: `reflect_dynamic(.., "bgpadvertisements")`.
    ("sluice.io", "bgpadvertisements", "list", Scope::Namespace),
    ("sluice.io", "bgpadvertisements", "watch", Scope::Namespace),
    // reconcile.rs `run`: `reflect_dynamic(.., "bgppeers")` (peers at run time).
    ("sluice.io", "bgppeers", "list", Scope::Namespace),
    ("sluice.io", "bgppeers", "watch", Scope::Namespace),
    // reconcile.rs `run`: `reflect(.., "secrets")`, a BGPPeer's passwordSecret (namespace only).
    ("", "secrets", "list", Scope::Namespace),
    ("", "secrets", "watch", Scope::Namespace),
];

/// The node a ConfigMap template is rendered for in these tests.
const NODE_NAME: &str = "lb-1";
/// Its address (TEST-NET-1).
const NODE_IP: &str = "192.0.2.10";

// === files ===

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The `.yaml` files directly in `dir`, sorted by name.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// The bundle `kubectl apply -f deploy/sluice.yaml` installs: the CRDs, then the manifests.
fn bundle() -> String {
    let mut out = String::from(
        "# Sluice: the CRDs (deploy/crds/) and the manifests (deploy/manifests/) in one file, for\n\
         # `kubectl apply -f deploy/sluice.yaml`. Generated by control/tests/k8s_deploy.rs; do not\n\
         # edit. Regenerate: SLUICE_BLESS=1 cargo test -p sluice-control --test k8s_deploy\n",
    );
    let dirs = [deploy().join("crds"), deploy().join("manifests")];
    for path in dirs.iter().flat_map(|d| yaml_files(d)) {
        let text = read(&path);
        out.push_str("---\n");
        out.push_str(text.strip_prefix("---\n").unwrap_or(&text));
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn bless() -> bool {
    std::env::var_os(BLESS_VAR).is_some_and(|v| v == "1")
}

// === YAML into API types ===

/// The documents of a (multi-document) YAML text, as JSON values; empty documents skipped.
fn documents(origin: &str, text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .filter_map(|(i, doc)| {
            let yaml: serde_yaml::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{origin}: document {i}: not YAML: {e}"));
            (!yaml.is_null()).then(|| {
                serde_json::to_value(&yaml)
                    .unwrap_or_else(|e| panic!("{origin}: document {i}: not JSON-like: {e}"))
            })
        })
        .collect()
}

/// The first path where `a` and `b` differ, if any.
fn difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .find_map(|(k, p)| match y.get(k) {
                Some(q) => difference(p, q, &format!("{path}.{k}")),
                None => Some(format!("{path}.{k}")),
            })
            .or_else(|| {
                y.keys()
                    .find(|k| !x.contains_key(*k))
                    .map(|k| format!("{path}.{k}"))
            }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| difference(p, q, &format!("{path}[{i}]"))),
        _ => (a != b).then(|| path.to_owned()),
    }
}

/// `doc` as a `T`, refusing any field `T` does not have (k8s-openapi ignores unknown fields;
/// the round trip shows them).
fn strict<T: DeserializeOwned + Serialize>(origin: &str, doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{origin}: not a valid {}: {e}", kind(doc)));
    let back = serde_json::to_value(&typed).expect("serialize");
    if let Some(path) = difference(doc, &back, "") {
        panic!(
            "{origin}: {} {:?}: field {path} is not part of the API type (misspelt or misplaced?)",
            kind(doc),
            name(doc)
        );
    }
    typed
}

fn kind(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn name(doc: &Value) -> &str {
    doc.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Everything one or more files define, typed.
#[derive(Debug, Default)]
struct Objects {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    config_maps: Vec<ConfigMap>,
    daemon_sets: Vec<DaemonSet>,
    crds: Vec<CustomResourceDefinition>,
    services: Vec<Service>,
    /// `sluice.io` objects (loaded by `parse_manifests`).
    custom: Vec<Manifest>,
}

impl Objects {
    /// Loads every document of every file; panics naming the file on anything unknown.
    fn load(files: &[PathBuf]) -> Self {
        let mut o = Objects::default();
        for path in files {
            let text = read(path);
            let origin = path.display().to_string();
            let mut custom = false;
            for doc in documents(&origin, &text) {
                let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
                let at = format!("{origin} ({} {:?})", kind(&doc), name(&doc));
                match (api, kind(&doc)) {
                    ("v1", "Namespace") => o.namespaces.push(strict(&at, &doc)),
                    ("v1", "ServiceAccount") => o.service_accounts.push(strict(&at, &doc)),
                    ("v1", "ConfigMap") => o.config_maps.push(strict(&at, &doc)),
                    ("v1", "Service") => o.services.push(strict(&at, &doc)),
                    ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                        o.cluster_roles.push(strict(&at, &doc));
                    }
                    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                        o.cluster_role_bindings.push(strict(&at, &doc));
                    }
                    ("rbac.authorization.k8s.io/v1", "Role") => o.roles.push(strict(&at, &doc)),
                    ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                        o.role_bindings.push(strict(&at, &doc));
                    }
                    ("apps/v1", "DaemonSet") => o.daemon_sets.push(strict(&at, &doc)),
                    ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                        o.crds.push(strict(&at, &doc));
                    }
                    (a, _) if a.starts_with("sluice.io/") => custom = true,
                    (a, k) => panic!("{at}: no check knows {a} {k}"),
                }
            }
            if custom {
                let loaded = parse_manifests(&text).unwrap_or_else(|e| panic!("{origin}: {e}"));
                o.custom.extend(
                    loaded
                        .into_iter()
                        .filter(|m| !matches!(m, Manifest::Other { .. })),
                );
            }
        }
        o
    }

    /// The one object of a kind (the manifests define exactly one of each).
    fn one<'a, T>(list: &'a [T], what: &str) -> &'a T {
        assert_eq!(list.len(), 1, "expected exactly one {what}");
        &list[0]
    }
}

fn manifests() -> Objects {
    Objects::load(&yaml_files(&deploy().join("manifests")))
}

// === the config files ===

/// A ConfigMap template rendered as the init container does.
fn render(template: &str) -> String {
    let text = template
        .replace("${NODE_NAME}", NODE_NAME)
        .replace("${NODE_IP}", NODE_IP);
    if let Some(i) = text.find("${") {
        let rest: String = text[i..].chars().take(40).collect();
        panic!("the config templates may use only ${{NODE_NAME}} and ${{NODE_IP}}, not {rest:?}");
    }
    text
}

/// The ConfigMap's two files, rendered and validated.
fn configs(o: &Objects) -> (Desired, DataplaneConfig) {
    let cm = Objects::one(&o.config_maps, "ConfigMap");
    let data = cm.data.as_ref().expect("ConfigMap data");
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["control.toml", "dataplane.toml"], "ConfigMap keys");
    let control = Config::parse(&render(&data["control.toml"]), "control.toml")
        .unwrap_or_else(|e| panic!("ConfigMap control.toml: {e}"));
    let dataplane = DataplaneConfig::parse(&render(&data["dataplane.toml"]))
        .unwrap_or_else(|e| panic!("ConfigMap dataplane.toml: {e}"));
    (control, dataplane)
}

/// Bytes of a quantity with a binary suffix (`128Mi`, `1Gi`) or none.
fn bytes(q: &Quantity) -> u64 {
    let s = q.0.as_str();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        other => panic!("quantity {s}: unit {other:?} not handled here"),
    };
    digits.parse::<u64>().expect("quantity digits") << shift
}

// === the DaemonSet ===

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("DaemonSet pod spec")
}

fn container<'a>(spec: &'a PodSpec, name: &str) -> &'a Container {
    spec.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn volume<'a>(spec: &'a PodSpec, name: &str) -> &'a Volume {
    spec.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The container's mounts: volume name → (path, read-only).
fn mounts(c: &Container) -> BTreeMap<&str, (&str, bool)> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            (
                m.name.as_str(),
                (m.mount_path.as_str(), m.read_only.unwrap_or(false)),
            )
        })
        .collect()
}

fn limit<'a>(c: &'a Container, resource: &str) -> Option<&'a Quantity> {
    c.resources.as_ref()?.limits.as_ref()?.get(resource)
}

fn request<'a>(c: &'a Container, resource: &str) -> Option<&'a Quantity> {
    c.resources.as_ref()?.requests.as_ref()?.get(resource)
}

fn added_capabilities(c: &Container) -> BTreeSet<String> {
    c.security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn dropped_capabilities(c: &Container) -> Vec<String> {
    c.security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.drop.clone())
        .unwrap_or_default()
}

// === RBAC ===

/// Every (group, resource, verb) a set of rules grants, after checking it has no wildcard.
fn grants(rules: &[PolicyRule], origin: &str) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let lists = [
            r.api_groups.clone().unwrap_or_default(),
            r.resources.clone().unwrap_or_default(),
            r.verbs.clone(),
            r.resource_names.clone().unwrap_or_default(),
            r.non_resource_urls.clone().unwrap_or_default(),
        ];
        assert!(
            lists.iter().flatten().all(|s| !s.contains('*')),
            "{origin} rule {i}: wildcard in {r:?}"
        );
        assert!(
            r.non_resource_urls.is_none(),
            "{origin} rule {i}: no non-resource URLs are needed"
        );
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    out
}

fn needed(scope: Scope, crd_group: &str) -> BTreeSet<(String, String, String)> {
    NEEDED
        .iter()
        .filter(|n| n.3 == scope)
        .map(|&(g, r, v, _)| {
            let g = if g == "sluice.io" { crd_group } else { g };
            (g.to_owned(), r.to_owned(), v.to_owned())
        })
        .collect()
}

// === tests ===

#[test]
fn bundle_is_the_crds_followed_by_the_manifests() {
    let path = deploy().join("sluice.yaml");
    let want = bundle();
    if bless() {
        fs::write(&path, &want).expect("write deploy/sluice.yaml");
    }
    assert!(
        fs::read_to_string(&path).ok().as_deref() == Some(want.as_str()),
        "deploy/sluice.yaml is not deploy/crds/* + deploy/manifests/*; run `{BLESS_VAR}=1 cargo \
         test -p sluice-control --test k8s_deploy`"
    );
    // The kustomization lists the same files in the same order.
    let k = documents(
        "kustomization.yaml",
        &read(&deploy().join("kustomization.yaml")),
    );
    let listed: Vec<&str> = k[0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|v| v.as_str().expect("a path"))
        .collect();
    let files: Vec<String> = ["crds", "manifests"]
        .iter()
        .flat_map(|d| {
            yaml_files(&deploy().join(d))
                .into_iter()
                .map(move |p| format!("{d}/{}", file_name(&p)))
        })
        .collect();
    assert_eq!(listed, files, "deploy/kustomization.yaml resources");
    // And it parses into the same objects as the manifests.
    let all = Objects::load(&[path]);
    let m = manifests();
    assert_eq!(all.crds.len(), yaml_files(&deploy().join("crds")).len());
    assert_eq!(
        (
            all.daemon_sets,
            all.config_maps,
            all.cluster_roles,
            all.roles
        ),
        (m.daemon_sets, m.config_maps, m.cluster_roles, m.roles)
    );
}

#[test]
fn manifests_and_examples_parse_into_api_types() {
    let m = manifests();
    assert_eq!(
        [
            m.namespaces.len(),
            m.service_accounts.len(),
            m.cluster_roles.len(),
            m.cluster_role_bindings.len(),
            m.roles.len(),
            m.role_bindings.len(),
            m.config_maps.len(),
            m.daemon_sets.len(),
        ],
        [1; 8],
        "one Namespace, ServiceAccount, ClusterRole(Binding), Role(Binding), ConfigMap and \
         DaemonSet"
    );
    assert!(m.crds.is_empty() && m.custom.is_empty() && m.services.is_empty());
    // Everything namespaced lives in the namespace the manifests create.
    let ns = m.namespaces[0]
        .metadata
        .name
        .clone()
        .expect("namespace name");
    let metas = m
        .service_accounts
        .iter()
        .map(|o| &o.metadata)
        .chain(m.roles.iter().map(|o| &o.metadata))
        .chain(m.role_bindings.iter().map(|o| &o.metadata))
        .chain(m.config_maps.iter().map(|o| &o.metadata))
        .chain(m.daemon_sets.iter().map(|o| &o.metadata));
    for meta in metas {
        assert_eq!(meta.namespace.as_ref(), Some(&ns), "{:?}", meta.name);
    }
    let labels = m.namespaces[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("privileged"),
        "host networking and added capabilities need the privileged Pod Security level"
    );

    let e = Objects::load(&yaml_files(&deploy().join("examples")));
    let kinds: BTreeSet<&str> = e.custom.iter().map(Manifest::kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["BGPAdvertisement", "BGPPeer", "IPAddressPool"])
    );
    assert_eq!(e.services.len(), 1, "the example Service");
}

#[test]
fn rbac_grants_exactly_what_the_reconciler_uses() {
    let m = manifests();
    let (control, _) = configs(&m);
    let k = control.kubernetes.as_ref().expect("[kubernetes]");
    assert_eq!(
        k.crd_group, "sluice.io",
        "the Role is written for the sluice.io group; change it with crd_group"
    );
    let cluster_role = Objects::one(&m.cluster_roles, "ClusterRole");
    assert!(cluster_role.aggregation_rule.is_none());
    let role = Objects::one(&m.roles, "Role");
    let cluster = grants(
        cluster_role.rules.as_deref().unwrap_or_default(),
        "ClusterRole",
    );
    let namespaced = grants(role.rules.as_deref().unwrap_or_default(), "Role");
    assert_eq!(
        cluster,
        needed(Scope::Cluster, &k.crd_group),
        "ClusterRole vs NEEDED"
    );
    assert_eq!(
        namespaced,
        needed(Scope::Namespace, &k.crd_group),
        "Role vs NEEDED"
    );
    // The Role lives where the daemon looks for its Lease and CRDs.
    assert_eq!(
        role.metadata.namespace.as_deref(),
        Some(k.namespace.as_str())
    );
    // Rules limited by name name the configured Lease.
    for r in role.rules.iter().flatten() {
        if let Some(names) = &r.resource_names {
            assert_eq!(r.resources.as_deref(), Some(&["leases".to_owned()][..]));
            assert_eq!(
                names.as_slice(),
                std::slice::from_ref(&k.lease_name),
                "Lease name"
            );
            assert!(
                !r.verbs.contains(&"create".to_owned()),
                "create has no name"
            );
        }
    }

    // The bindings tie those roles to the DaemonSet's ServiceAccount.
    let sa = Objects::one(&m.service_accounts, "ServiceAccount");
    let sa_name = sa.metadata.name.clone().expect("ServiceAccount name");
    let spec = pod_spec(Objects::one(&m.daemon_sets, "DaemonSet"));
    assert_eq!(spec.service_account_name.as_ref(), Some(&sa_name));
    let crb = Objects::one(&m.cluster_role_bindings, "ClusterRoleBinding");
    let rb = Objects::one(&m.role_bindings, "RoleBinding");
    assert_eq!(
        (crb.role_ref.kind.as_str(), Some(&crb.role_ref.name)),
        ("ClusterRole", cluster_role.metadata.name.as_ref())
    );
    assert_eq!(
        (rb.role_ref.kind.as_str(), Some(&rb.role_ref.name)),
        ("Role", role.metadata.name.as_ref())
    );
    for subjects in [&crb.subjects, &rb.subjects] {
        let s: Vec<_> = subjects
            .iter()
            .flatten()
            .map(|s| (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()))
            .collect();
        assert_eq!(
            s,
            [(
                "ServiceAccount",
                sa_name.as_str(),
                Some(k.namespace.as_str())
            )]
        );
    }
}

#[test]
fn daemonset_shares_the_region_between_its_containers() {
    let m = manifests();
    let (control_cfg, dataplane_cfg) = configs(&m);
    let spec = pod_spec(Objects::one(&m.daemon_sets, "DaemonSet"));
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["dataplane", "control"]);
    let dataplane = container(spec, "dataplane");
    let control = container(spec, "control");

    // Host network, dedicated nodes.
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert!(
        spec.node_selector
            .as_ref()
            .is_some_and(|s| s.contains_key("sluice.io/lb-node"))
    );
    assert!(
        spec.tolerations
            .iter()
            .flatten()
            .any(|t| t.key.as_deref() == Some("sluice.io/lb-node"))
    );

    // The region: one hugetlbfs volume mounted at the same path in both containers, and one
    // /dev/shm volume for the fallback, likewise.
    let huge = volume(spec, "hugepages")
        .empty_dir
        .as_ref()
        .expect("hugepages is an emptyDir");
    assert_eq!(huge.medium.as_deref(), Some("HugePages-2Mi"));
    let shm = volume(spec, "shm")
        .empty_dir
        .as_ref()
        .expect("shm emptyDir");
    assert_eq!(shm.medium.as_deref(), Some("Memory"));
    let (dm, cm) = (mounts(dataplane), mounts(control));
    assert_eq!(dm.get("hugepages"), cm.get("hugepages"));
    assert_eq!(dm.get("hugepages"), Some(&("/dev/hugepages", false)));
    assert_eq!(dm.get("shm"), cm.get("shm"));
    assert_eq!(dm.get("shm"), Some(&("/dev/shm", false)));
    assert_eq!(
        control_cfg.region, dataplane_cfg.tables,
        "control's [tables] region and the dataplane's tables name one region"
    );

    // Hugepages: control creates the region, so its pages are charged to control; DPDK's
    // memory to the dataplane. Limits only (requests default to them) or equal requests; and
    // a container with hugepages must also request CPU or memory (API validation).
    let page = 2u64 << 20;
    let region = Geometry::new(control_cfg.capacity)
        .expect("geometry")
        .total
        .div_ceil(page)
        * page;
    for c in [dataplane, control] {
        let l =
            limit(c, "hugepages-2Mi").unwrap_or_else(|| panic!("{}: hugepages-2Mi limit", c.name));
        if let Some(r) = request(c, "hugepages-2Mi") {
            assert_eq!(r, l, "{}: hugepage request must equal the limit", c.name);
        }
        assert!(
            request(c, "cpu").is_some() || request(c, "memory").is_some(),
            "{}: hugepages need a cpu or memory request",
            c.name
        );
    }
    let control_huge = bytes(limit(control, "hugepages-2Mi").expect("limit"));
    assert!(
        region <= control_huge,
        "the region ({} MiB) does not fit control's hugepages-2Mi limit ({} MiB)",
        region >> 20,
        control_huge >> 20
    );
    let dataplane_huge = bytes(limit(dataplane, "hugepages-2Mi").expect("limit"));
    assert!(
        u64::from(dataplane_cfg.eal.memory_mb) << 20 <= dataplane_huge,
        "[eal] memory_mb does not fit the dataplane's hugepages-2Mi limit"
    );
    assert!(
        limit(dataplane, "cpu").is_none(),
        "a CPU limit throttles polling workers"
    );
    assert!(
        dataplane_cfg.workers.cores.len()
            <= usize::try_from(control_cfg.capacity.max_workers).expect("usize"),
        "more workers than [tables] max_workers"
    );

    // Security: the dataplane gets only the documented capabilities and is not privileged;
    // control gets none.
    let dsc = dataplane
        .security_context
        .as_ref()
        .expect("dataplane securityContext");
    assert_ne!(dsc.privileged, Some(true));
    assert_eq!(dropped_capabilities(dataplane), ["ALL"]);
    assert_eq!(
        added_capabilities(dataplane),
        BTreeSet::from(["BPF", "IPC_LOCK", "NET_ADMIN", "NET_RAW"].map(str::to_owned)),
        "the dataplane's capabilities (see the comment in 05-daemonset.yaml)"
    );
    for c in spec.init_containers.iter().flatten().chain([control]) {
        let sc = c.security_context.as_ref().expect("securityContext");
        assert_ne!(sc.privileged, Some(true), "{}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(dropped_capabilities(c), ["ALL"], "{}", c.name);
        assert!(
            added_capabilities(c).is_empty(),
            "{}: no capability",
            c.name
        );
    }
    // Kubernetes refuses SYS_ADMIN together with allowPrivilegeEscalation: false.
    assert!(!added_capabilities(dataplane).contains("SYS_ADMIN"));
    // The region file is 0600 (sluice-hugepages): both containers run as the same user.
    assert_eq!(
        dsc.run_as_user,
        control
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
    );

    // Only control holds the API token.
    assert_eq!(spec.automount_service_account_token, Some(false));
    let token = volume(spec, "kube-api-access")
        .projected
        .as_ref()
        .expect("projected token volume");
    assert!(
        token
            .sources
            .iter()
            .flatten()
            .any(|s| s.service_account_token.is_some())
    );
    assert_eq!(
        cm.get("kube-api-access"),
        Some(&("/var/run/secrets/kubernetes.io/serviceaccount", true))
    );
    assert!(!dm.contains_key("kube-api-access"));

    // Probes: control's metrics endpoint, on the port control.toml listens on.
    for (what, probe) in [
        ("startup", &control.startup_probe),
        ("liveness", &control.liveness_probe),
        ("readiness", &control.readiness_probe),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("control {what} probe: httpGet"));
        assert_eq!(get.path.as_deref(), Some("/metrics"), "{what}");
        assert_eq!(
            get.port,
            IntOrString::Int(i32::from(control_cfg.metrics.port())),
            "{what}"
        );
        assert!(get.host.is_none(), "{what}: the pod IP is the node's");
    }
    assert_eq!(
        control_cfg.metrics.ip().to_string(),
        NODE_IP,
        "metrics listen on the node's address, where the kubelet probes"
    );

    // Config: rendered by the init container from the ConfigMap, with the node's name and
    // address from the downward API, into the volume both daemons read.
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "config")
        .expect("init container config");
    let env: BTreeMap<&str, Option<&str>> = init
        .env
        .iter()
        .flatten()
        .map(|e| {
            let field = e
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str());
            (e.name.as_str(), field)
        })
        .collect();
    assert_eq!(
        env,
        BTreeMap::from([
            ("NODE_IP", Some("status.hostIP")),
            ("NODE_NAME", Some("spec.nodeName"))
        ])
    );
    let script = init.args.iter().flatten().cloned().collect::<String>();
    for needle in [
        r#"s|\${NODE_NAME}|${NODE_NAME}|g"#,
        r#"s|\${NODE_IP}|${NODE_IP}|g"#,
        "sluice-control --check --config /etc/sluice/control.toml",
        "sluice-dataplane --check --config /etc/sluice/dataplane.toml",
    ] {
        assert!(script.contains(needle), "init script lacks {needle:?}");
    }
    let cm_name = &Objects::one(&m.config_maps, "ConfigMap").metadata.name;
    assert_eq!(
        volume(spec, "config-template")
            .config_map
            .as_ref()
            .map(|c| &c.name),
        cm_name.as_ref()
    );
    let im = mounts(init);
    assert_eq!(
        im.get("config-template"),
        Some(&("/etc/sluice-template", true))
    );
    assert_eq!(im.get("config"), Some(&("/etc/sluice", false)));
    assert_eq!(dm.get("config"), Some(&("/etc/sluice", true)));
    assert_eq!(cm.get("config"), Some(&("/etc/sluice", true)));
    assert_eq!(
        dataplane.command.as_deref(),
        Some(
            &["sluice-dataplane", "--config", "/etc/sluice/dataplane.toml"].map(str::to_owned)[..]
        )
    );
    assert_eq!(
        control.command.as_deref(),
        Some(&["sluice-control", "--config", "/etc/sluice/control.toml"].map(str::to_owned)[..])
    );
    // The API socket's directory is writable.
    let socket = control_cfg.api.socket.as_ref().expect("api socket");
    let run = cm.get("run").expect("run volume");
    assert_eq!((socket.parent(), run.1), (Some(Path::new(run.0)), false));
}

#[test]
fn config_map_files_pass_the_daemons_parsers() {
    let m = manifests();
    let (control, dataplane) = configs(&m);
    assert_eq!(control.node, NODE_NAME, "[node] name is the Node's name");
    assert_eq!(
        control.node_ipv4.map(|a| a.to_string()).as_deref(),
        Some(NODE_IP)
    );
    assert_eq!(
        dataplane.node.ipv4.map(|a| a.to_string()).as_deref(),
        Some(NODE_IP)
    );
    let k = control.kubernetes.as_ref().expect("[kubernetes] is set");
    assert!(k.kubeconfig.is_none(), "in-cluster credentials");
    assert_eq!(
        Some(&k.namespace),
        m.namespaces[0].metadata.name.as_ref(),
        "[kubernetes] namespace is the manifests' namespace"
    );
    assert!(k.allocate);
    assert!(!k.next_hops.is_empty());
    assert!(!control.bgp.peers.is_empty(), "an example peer");
    // `--no-pci` unless PCI ports are configured; the example uses AF_XDP.
    assert!(dataplane.ports.iter().all(|p| p.device.is_some()));
    assert!(dataplane.eal.pci_allow.is_empty());
    assert_eq!(dataplane.eal.memory, "hugepages");
}

#[test]
fn examples_load_and_match_the_config() {
    let e = Objects::load(&yaml_files(&deploy().join("examples")));
    let m = manifests();
    let (control, _) = configs(&m);
    let k = control.kubernetes.as_ref().expect("[kubernetes]");
    let mut pools = BTreeSet::new();
    for obj in &e.custom {
        match obj {
            Manifest::IPAddressPool(p) => {
                assert_eq!(p.metadata.namespace.as_deref(), Some(k.namespace.as_str()));
                Pool::from_crd(p).unwrap_or_else(|e| panic!("example pool: {e}"));
                pools.insert(p.metadata.name.clone().expect("pool name"));
            }
            Manifest::BGPAdvertisement(a) => {
                assert_eq!(a.metadata.namespace.as_deref(), Some(k.namespace.as_str()));
            }
            Manifest::BGPPeer(p) => {
                // Mirrors the peer control.toml configures (the daemon reads that one).
                let peer = &control.bgp.peers[0].config;
                assert_eq!(
                    (p.spec.my_asn, p.spec.peer_asn, p.spec.peer_address.clone()),
                    (
                        peer.my_asn,
                        Some(peer.peer_asn),
                        Some(peer.peer_address.to_string())
                    )
                );
            }
            other => panic!("unexpected example {}", other.kind()),
        }
    }
    for obj in &e.custom {
        if let Manifest::BGPAdvertisement(a) = obj {
            for p in &a.spec.ip_address_pools {
                assert!(pools.contains(p), "advertisement names unknown pool {p}");
            }
        }
    }
    let svc = e.services[0].spec.as_ref().expect("Service spec");
    assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(svc.load_balancer_class.as_ref(), Some(&k.class));
}

#[test]
fn helm_chart_crds_are_copies_of_deploy_crds() {
    let src = deploy().join("crds");
    let dst = deploy().join("helm/sluice/crds");
    if bless() {
        fs::create_dir_all(&dst).expect("create chart crds/");
        for stale in yaml_files(&dst) {
            fs::remove_file(stale).expect("remove stale chart CRD");
        }
        for f in yaml_files(&src) {
            fs::copy(&f, dst.join(file_name(&f))).expect("copy CRD");
        }
    }
    let contents = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        yaml_files(dir)
            .into_iter()
            .map(|p| (file_name(&p), fs::read(&p).expect("read CRD")))
            .collect()
    };
    let (want, have) = (contents(&src), contents(&dst));
    assert!(!want.is_empty());
    assert!(
        want == have,
        "deploy/helm/sluice/crds/ differs from deploy/crds/; run `{BLESS_VAR}=1 cargo test -p \
         sluice-control --test k8s_deploy`"
    );
}

/// The `.Values.a.b` paths a template uses.
fn value_paths(template: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = template;
    while let Some(i) = rest.find(".Values.") {
        rest = &rest[i + ".Values.".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        out.insert(rest[..end].trim_end_matches('.').to_owned());
    }
    out
}

#[test]
fn helm_chart_is_consistent() {
    let chart = deploy().join("helm/sluice");
    let meta = &documents("Chart.yaml", &read(&chart.join("Chart.yaml")))[0];
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["name"], "sluice");
    let values = &documents("values.yaml", &read(&chart.join("values.yaml")))[0];

    let templates = chart.join("templates");
    let mut files: Vec<PathBuf> = fs::read_dir(&templates)
        .expect("templates/")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|p| file_name(p)).collect();
    assert_eq!(
        names,
        [
            "NOTES.txt",
            "_helpers.tpl",
            "configmap.yaml",
            "daemonset.yaml",
            "rbac.yaml",
            "serviceaccount.yaml"
        ]
    );
    for f in &files {
        let text = read(f);
        let origin = f.display().to_string();
        // Every value a template reads is defined in values.yaml.
        for path in value_paths(&text) {
            let pointer = format!("/{}", path.replace('.', "/"));
            assert!(
                values.pointer(&pointer).is_some(),
                "{origin}: .Values.{path} is not in values.yaml"
            );
        }
        // Actions are closed, and every block is ended.
        assert_eq!(
            text.matches("{{").count(),
            text.matches("}}").count(),
            "{origin}: unbalanced {{{{ }}}}"
        );
        let opened = ["if ", "range ", "with ", "define "]
            .iter()
            .map(|k| {
                text.matches(&format!("{{{{- {k}")).count()
                    + text.matches(&format!("{{{{ {k}")).count()
            })
            .sum::<usize>();
        let ended = text.matches("{{- end").count() + text.matches("{{ end").count();
        assert_eq!(opened, ended, "{origin}: blocks opened vs ended");
    }

    // The defaults are the plain manifests' settings.
    let m = manifests();
    let (control_cfg, dataplane_cfg) = configs(&m);
    let spec = pod_spec(Objects::one(&m.daemon_sets, "DaemonSet"));
    for name in ["dataplane", "control"] {
        let c = container(spec, name);
        assert_eq!(
            values[name]["resources"],
            serde_json::to_value(c.resources.as_ref().expect("resources")).expect("json"),
            "values {name}.resources vs 05-daemonset.yaml"
        );
    }
    let caps: Vec<String> = serde_json::from_value(values["dataplane"]["capabilities"].clone())
        .expect("dataplane.capabilities");
    assert_eq!(
        caps.into_iter().collect::<BTreeSet<_>>(),
        added_capabilities(container(spec, "dataplane"))
    );
    assert_eq!(
        values["nodeSelector"],
        serde_json::to_value(&spec.node_selector).expect("json")
    );
    assert_eq!(
        values["tolerations"],
        serde_json::to_value(&spec.tolerations).expect("json")
    );
    let v = &values["config"];
    let k = control_cfg.kubernetes.as_ref().expect("[kubernetes]");
    assert_eq!(v["kubernetes"]["loadBalancerClass"], k.class.as_str());
    assert_eq!(v["kubernetes"]["crdGroup"], k.crd_group.as_str());
    assert_eq!(v["kubernetes"]["leaseName"], k.lease_name.as_str());
    assert_eq!(v["kubernetes"]["tableSize"], k.table_size.get());
    assert_eq!(v["tables"]["region"], control_cfg.region.as_str());
    assert_eq!(
        v["tables"]["maxServices"],
        control_cfg.capacity.max_services
    );
    assert_eq!(v["tables"]["maxWorkers"], control_cfg.capacity.max_workers);
    assert_eq!(
        v["tables"]["arenaMb"],
        control_cfg.capacity.arena_bytes >> 20
    );
    assert_eq!(v["metricsPort"], control_cfg.metrics.port());
    assert_eq!(
        v["dataplane"]["eal"]["memory_mb"],
        dataplane_cfg.eal.memory_mb
    );
    assert_eq!(
        serde_json::from_value::<Vec<usize>>(v["dataplane"]["workers"]["cores"].clone())
            .expect("cores"),
        dataplane_cfg.workers.cores
    );

    // The chart's init step is the manifests' one, character for character.
    let script = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "config")
        .and_then(|c| c.args.as_ref())
        .map(|a| a.concat())
        .expect("init script");
    let ds_template = read(&templates.join("daemonset.yaml"));
    for line in script.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            ds_template.contains(line),
            "helm daemonset.yaml lacks the init script line {line:?}"
        );
    }
}
