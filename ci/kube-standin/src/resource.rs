//! What the stand-in knows about resources: the built-in ones (kind, scope, whether they have
//! a status subresource, whether an update may create) and the rules for everything else,
//! which is treated as a custom resource.

use std::fmt;

/// A resource as the storage knows it: API group (empty for the core group) and plural name.
/// The version is not part of it — objects are stored once whatever version they were written
/// through, as the apiserver does for a CRD served at several versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    /// API group, `""` for the core group (`v1` Services, Namespaces, Nodes, Events).
    pub group: String,
    /// Plural resource name (`services`, `endpointslices`, `ipaddresspools`).
    pub plural: String,
}

// === impl ResourceId ===

impl ResourceId {
    /// A resource by group and plural.
    pub fn new(group: impl Into<String>, plural: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            plural: plural.into(),
        }
    }

    /// The resource of objects with this `apiVersion` and `kind`: the built-in table first,
    /// else the plural kube-rs derives for a `DynamicObject` (lower-case kind, English plural).
    pub fn for_kind(api_version: &str, kind: &str) -> Self {
        let group = group_of(api_version);
        if let Some(b) = BUILTINS.iter().find(|b| b.group == group && b.kind == kind) {
            return Self::new(b.group, b.plural);
        }
        Self::new(group, to_plural(&kind.to_ascii_lowercase()))
    }

    /// `v1` Services.
    pub fn services() -> Self {
        Self::new("", "services")
    }

    /// `discovery.k8s.io` EndpointSlices.
    pub fn endpoint_slices() -> Self {
        Self::new("discovery.k8s.io", "endpointslices")
    }

    /// `coordination.k8s.io` Leases.
    pub fn leases() -> Self {
        Self::new("coordination.k8s.io", "leases")
    }

    /// `v1` Namespaces.
    pub fn namespaces() -> Self {
        Self::new("", "namespaces")
    }

    /// `v1` Nodes.
    pub fn nodes() -> Self {
        Self::new("", "nodes")
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.plural)
        } else {
            write!(f, "{}.{}", self.plural, self.group)
        }
    }
}

/// The group part of an `apiVersion` (`""` for `v1`).
pub(crate) fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// The version part of an `apiVersion`.
pub(crate) fn version_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or(api_version, |(_, v)| v)
}

/// A built-in resource.
#[derive(Debug)]
pub(crate) struct Builtin {
    pub group: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    /// Cluster-scoped (no namespace).
    pub cluster: bool,
    /// Has a `/status` subresource: writes to the main resource ignore `status`.
    pub status: bool,
    /// A PUT of an absent object creates it (`AllowCreateOnUpdate`).
    pub create_on_update: bool,
}

const fn b(group: &'static str, plural: &'static str, kind: &'static str) -> Builtin {
    Builtin {
        group,
        plural,
        kind,
        cluster: false,
        status: false,
        create_on_update: false,
    }
}

const fn with_status(mut x: Builtin) -> Builtin {
    x.status = true;
    x
}

const fn cluster(mut x: Builtin) -> Builtin {
    x.cluster = true;
    x
}

const fn upsert(mut x: Builtin) -> Builtin {
    x.create_on_update = true;
    x
}

/// The built-in resources the stand-in knows by name. Anything else is a custom resource.
pub(crate) static BUILTINS: &[Builtin] = &[
    cluster(with_status(b("", "namespaces", "Namespace"))),
    cluster(with_status(b("", "nodes", "Node"))),
    cluster(with_status(b("", "persistentvolumes", "PersistentVolume"))),
    with_status(b("", "services", "Service")),
    with_status(b("", "pods", "Pod")),
    with_status(b("", "persistentvolumeclaims", "PersistentVolumeClaim")),
    with_status(b("", "replicationcontrollers", "ReplicationController")),
    with_status(b("", "resourcequotas", "ResourceQuota")),
    upsert(b("", "endpoints", "Endpoints")),
    upsert(b("", "events", "Event")),
    b("", "configmaps", "ConfigMap"),
    b("", "secrets", "Secret"),
    b("", "serviceaccounts", "ServiceAccount"),
    b("", "limitranges", "LimitRange"),
    b("discovery.k8s.io", "endpointslices", "EndpointSlice"),
    b("coordination.k8s.io", "leases", "Lease"),
    upsert(b("events.k8s.io", "events", "Event")),
    with_status(b("apps", "deployments", "Deployment")),
    with_status(b("apps", "statefulsets", "StatefulSet")),
    with_status(b("apps", "daemonsets", "DaemonSet")),
    with_status(b("apps", "replicasets", "ReplicaSet")),
    with_status(b("batch", "jobs", "Job")),
    with_status(b("batch", "cronjobs", "CronJob")),
    with_status(b("networking.k8s.io", "ingresses", "Ingress")),
    b("networking.k8s.io", "networkpolicies", "NetworkPolicy"),
    cluster(b("networking.k8s.io", "ingressclasses", "IngressClass")),
    cluster(b("networking.k8s.io", "ipaddresses", "IPAddress")),
    cluster(with_status(b(
        "networking.k8s.io",
        "servicecidrs",
        "ServiceCIDR",
    ))),
    b("rbac.authorization.k8s.io", "roles", "Role"),
    b("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
    cluster(b(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "ClusterRole",
    )),
    cluster(b(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "ClusterRoleBinding",
    )),
    cluster(with_status(b(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
    ))),
    cluster(b("storage.k8s.io", "storageclasses", "StorageClass")),
    cluster(b("scheduling.k8s.io", "priorityclasses", "PriorityClass")),
    with_status(b("policy", "poddisruptionbudgets", "PodDisruptionBudget")),
];

pub(crate) fn builtin(group: &str, plural: &str) -> Option<&'static Builtin> {
    BUILTINS
        .iter()
        .find(|b| b.group == group && b.plural == plural)
}

/// kube-rs' plural rule (`kube_core::discovery::to_plural`), so that a `DynamicObject` path
/// and [`ResourceId::for_kind`] agree.
pub(crate) fn to_plural(word: &str) -> String {
    if word == "endpoints" || word == "endpointslices" {
        return word.to_string();
    }
    if word == "nodemetrics" {
        return word.to_string();
    }
    if word.ends_with('s')
        || word.ends_with('x')
        || word.ends_with('z')
        || word.ends_with("ch")
        || word.ends_with("sh")
    {
        return format!("{word}es");
    }
    if let Some(stem) = word.strip_suffix('y')
        && let Some(c) = stem.chars().last()
        && !matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
    {
        return format!("{stem}ies");
    }
    format!("{word}s")
}

/// A kind for a custom resource nobody has written yet (only list and bookmark `kind`s use
/// it): the plural, singular-ish, capitalised. Once an object is written its `kind` is used.
pub(crate) fn guess_kind(plural: &str) -> String {
    let singular = plural
        .strip_suffix("ies")
        .map(|s| format!("{s}y"))
        .or_else(|| {
            plural
                .strip_suffix("es")
                .filter(|s| s.ends_with('s'))
                .map(str::to_string)
        })
        .or_else(|| plural.strip_suffix('s').map(str::to_string))
        .unwrap_or_else(|| plural.to_string());
    let mut c = singular.chars();
    match c.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// A resource as one request addresses it: the stored resource plus the version and scope of
/// the path, and the semantics that apply.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// Index of the resource's table in the store.
    pub table: usize,
    pub group: String,
    pub version: String,
    pub plural: String,
    pub kind: String,
    /// The resource is namespaced.
    pub namespaced: bool,
    /// Writes to the main resource ignore `status`, writes to `/status` change only `status`.
    pub status_subresource: bool,
    pub create_on_update: bool,
    /// The built-in entry, if any.
    pub builtin: Option<&'static Builtin>,
}

// === impl Resolved ===

impl Resolved {
    /// `group/version`, or `v1` for the core group.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(crate) fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_follow_kube_rs() {
        assert_eq!(to_plural("ipaddresspool"), "ipaddresspools");
        assert_eq!(to_plural("ingress"), "ingresses");
        assert_eq!(to_plural("policy"), "policies");
        assert_eq!(to_plural("gateway"), "gateways");
        assert_eq!(to_plural("endpoints"), "endpoints");
        assert_eq!(
            ResourceId::for_kind("v1", "Service"),
            ResourceId::services()
        );
        assert_eq!(
            ResourceId::for_kind("metallb.io/v1beta1", "IPAddressPool"),
            ResourceId::new("metallb.io", "ipaddresspools")
        );
        assert_eq!(
            ResourceId::for_kind("discovery.k8s.io/v1", "EndpointSlice"),
            ResourceId::endpoint_slices()
        );
    }

    #[test]
    fn guessed_kinds() {
        assert_eq!(guess_kind("ipaddresspools"), "Ipaddresspool");
        assert_eq!(guess_kind("policies"), "Policy");
        assert_eq!(guess_kind("addresses"), "Address");
    }
}
