//! `[kubernetes]`: take services from a Kubernetes cluster (see [`crate::k8s`]).
//!
//! Rules checked:
//! - `load_balancer_class` is non-empty;
//! - `crd_group` is `sluice.io` or `metallb.io` (MetalLB's own CRDs, read as they are);
//! - `namespace` and `lease_name` are non-empty DNS labels;
//! - `backends` is `pod` (the endpoints' addresses; a routable pod network) or `node` (node
//!   addresses with the Service's node port; `nat` mode only);
//! - `mode` is a forwarding mode (`nat`, `dsr`, `ipip`, `gue`), `table_size` a Maglev size;
//! - `lease_duration` is 1 s – 5 min;
//! - `next_hops` lists at least one `{ prefix, mac }`: the MAC that frames towards addresses in
//!   `prefix` go to (the longest prefix wins): each pod's or node's own MAC on a shared L2
//!   segment, or the router's for a routed pod network. There is no neighbour resolution yet.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use sluice_dataplane::maglev::{MAGLEV_SIZES, TableSize};
use sluice_dataplane::tables::Mode;

use super::bgp::duration;
use super::{bad, parse_mac, parse_mode};

/// `[kubernetes]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSection {
    /// A kubeconfig file. Default: the usual inference (`KUBECONFIG`, `~/.kube/config`, then
    /// the in-cluster service account).
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// The `spec.loadBalancerClass` Sluice serves. Default `"sluice.io/lb"`.
    #[serde(default = "default_class")]
    pub load_balancer_class: String,
    /// Also serve LoadBalancer Services that name no class. Default false.
    #[serde(default)]
    pub default_class: bool,
    /// The API group of the pool and BGP CRDs: `"sluice.io"` (default) or `"metallb.io"`.
    #[serde(default = "default_group")]
    pub crd_group: String,
    /// Where the pools, BGP CRDs and the leader Lease live. Default `"sluice-system"`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// `"pod"` (default) or `"node"`.
    #[serde(default = "default_backends")]
    pub backends: String,
    /// Forwarding mode unless a Service's `sluice.io/mode` annotation names one. Default
    /// `"nat"`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Maglev table size for every Kubernetes service. Default 65537.
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    /// Whether this node's daemon takes part in the leader election that allocates addresses
    /// and writes status. Every node reconciles its own dataplane either way. Default true.
    #[serde(default = "default_true")]
    pub allocate: bool,
    /// The `coordination.k8s.io` Lease that elects the allocator. Default `"sluice-control"`.
    #[serde(default = "default_lease")]
    pub lease_name: String,
    /// How long a leader's lease lasts without renewal (renewed every third of it). Default
    /// `"15s"`.
    #[serde(default = "default_lease_duration")]
    pub lease_duration: String,
    /// Where frames towards backends go.
    #[serde(default)]
    pub next_hops: Vec<NextHopSection>,
}

/// `[[kubernetes.next_hops]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextHopSection {
    /// A CIDR (`10.244.0.0/16`, `0.0.0.0/0`, `fd00::/64`).
    pub prefix: String,
    /// The MAC frames towards it go to.
    pub mac: String,
}

fn default_class() -> String {
    "sluice.io/lb".into()
}
fn default_group() -> String {
    "sluice.io".into()
}
fn default_namespace() -> String {
    "sluice-system".into()
}
fn default_backends() -> String {
    "pod".into()
}
fn default_mode() -> String {
    "nat".into()
}
fn default_table_size() -> u32 {
    TableSize::DEFAULT.get()
}
fn default_true() -> bool {
    true
}
fn default_lease() -> String {
    "sluice-control".into()
}
fn default_lease_duration() -> String {
    "15s".into()
}

/// Where a Kubernetes service's backends come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendSource {
    /// The ready endpoints' pod addresses and target ports.
    Pod,
    /// The nodes' InternalIP and the Service port's `nodePort`.
    Node,
}

/// The validated `[kubernetes]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeConfig {
    /// A kubeconfig file, or `None` to infer.
    pub kubeconfig: Option<PathBuf>,
    /// The served `loadBalancerClass`.
    pub class: String,
    /// Whether class-less LoadBalancer Services are served too.
    pub default_class: bool,
    /// The CRDs' API group.
    pub crd_group: String,
    /// The CRDs' and Lease's namespace.
    pub namespace: String,
    /// Where backends come from.
    pub backends: BackendSource,
    /// Default forwarding mode.
    pub mode: Mode,
    /// Maglev size.
    pub table_size: TableSize,
    /// Whether this daemon may become the allocator.
    pub allocate: bool,
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's duration.
    pub lease_duration: Duration,
    /// Next hops, longest prefix first.
    pub next_hops: Vec<(IpNet, [u8; 6])>,
}

impl KubeConfig {
    /// The MAC frames towards `ip` go to: the longest matching `next_hops` prefix.
    #[must_use]
    pub fn next_hop_mac(&self, ip: IpAddr) -> Option<[u8; 6]> {
        self.next_hops
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, mac)| *mac)
    }
}

/// A DNS-1123 label (namespaces, object names without dots).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks `[kubernetes]` (module docs).
pub(super) fn validate(k: &KubernetesSection) -> Result<KubeConfig, (String, String)> {
    const F: &str = "kubernetes";
    let kubeconfig = match k.kubeconfig.as_deref() {
        None => None,
        Some("") => return Err(bad(format!("{F}.kubeconfig"), "must not be empty")),
        Some(p) => Some(PathBuf::from(p)),
    };
    if k.load_balancer_class.trim().is_empty() {
        return Err(bad(format!("{F}.load_balancer_class"), "must not be empty"));
    }
    if !matches!(k.crd_group.as_str(), "sluice.io" | "metallb.io") {
        return Err(bad(
            format!("{F}.crd_group"),
            format!(
                "{:?}: expected \"sluice.io\" or \"metallb.io\"",
                k.crd_group
            ),
        ));
    }
    for (field, v) in [("namespace", &k.namespace), ("lease_name", &k.lease_name)] {
        if !is_dns_label(v) {
            return Err(bad(
                format!("{F}.{field}"),
                format!("{v:?} is not a DNS label (lowercase letters, digits, '-', ≤ 63)"),
            ));
        }
    }
    let mode = parse_mode(&k.mode).map_err(|r| bad(format!("{F}.mode"), r))?;
    let backends = match k.backends.as_str() {
        "pod" => BackendSource::Pod,
        "node" if mode == Mode::Nat => BackendSource::Node,
        "node" => {
            return Err(bad(
                format!("{F}.backends"),
                "node backends (node address + nodePort) need mode = \"nat\": other modes \
                 cannot rewrite the port",
            ));
        }
        other => {
            return Err(bad(
                format!("{F}.backends"),
                format!("{other:?}: expected \"pod\" or \"node\""),
            ));
        }
    };
    let table_size = TableSize::try_new(k.table_size).map_err(|_| {
        bad(
            format!("{F}.table_size"),
            format!("{} is not one of {MAGLEV_SIZES:?}", k.table_size),
        )
    })?;
    let lease_duration =
        duration(&k.lease_duration).map_err(|r| bad(format!("{F}.lease_duration"), r))?;
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&lease_duration) {
        return Err(bad(
            format!("{F}.lease_duration"),
            "must be between 1s and 5m",
        ));
    }
    if k.next_hops.is_empty() {
        return Err(bad(
            format!("{F}.next_hops"),
            "list at least one { prefix, mac }: the MAC frames towards backends go to",
        ));
    }
    let mut next_hops = Vec::with_capacity(k.next_hops.len());
    for (i, h) in k.next_hops.iter().enumerate() {
        let f = format!("{F}.next_hops[{i}]");
        let net: IpNet = h.prefix.parse().map_err(|_| {
            bad(
                format!("{f}.prefix"),
                format!("{:?} is not a CIDR", h.prefix),
            )
        })?;
        if net.trunc() != net {
            return Err(bad(
                format!("{f}.prefix"),
                format!("{net} has host bits set"),
            ));
        }
        if next_hops.iter().any(|(n, _)| *n == net) {
            return Err(bad(format!("{f}.prefix"), format!("{net} is listed twice")));
        }
        let mac = parse_mac(&h.mac).map_err(|r| bad(format!("{f}.mac"), r))?;
        next_hops.push((net, mac));
    }
    next_hops.sort_by_key(|h| std::cmp::Reverse(h.0.prefix_len()));
    Ok(KubeConfig {
        kubeconfig,
        class: k.load_balancer_class.clone(),
        default_class: k.default_class,
        crd_group: k.crd_group.clone(),
        namespace: k.namespace.clone(),
        backends,
        mode,
        table_size,
        allocate: k.allocate,
        lease_name: k.lease_name.clone(),
        lease_duration,
        next_hops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(extra: &str) -> Result<KubeConfig, (String, String)> {
        let text = format!(
            "{extra}\n[[next_hops]]\nprefix = \"10.244.0.0/16\"\nmac = \"02:00:00:00:00:01\"\n\
             [[next_hops]]\nprefix = \"0.0.0.0/0\"\nmac = \"02:00:00:00:00:02\"\n"
        );
        validate(&toml::from_str(&text).expect("schema"))
    }

    #[test]
    fn defaults_and_longest_prefix() {
        let k = section("").expect("valid");
        assert_eq!(k.class, "sluice.io/lb");
        assert_eq!(k.crd_group, "sluice.io");
        assert_eq!(k.namespace, "sluice-system");
        assert_eq!(k.backends, BackendSource::Pod);
        assert_eq!(k.mode, Mode::Nat);
        assert_eq!(k.lease_duration, Duration::from_secs(15));
        assert!(k.allocate);
        assert_eq!(
            k.next_hop_mac("10.244.3.4".parse().expect("ip")),
            Some([2, 0, 0, 0, 0, 1])
        );
        assert_eq!(
            k.next_hop_mac("192.0.2.1".parse().expect("ip")),
            Some([2, 0, 0, 0, 0, 2])
        );
        assert_eq!(k.next_hop_mac("fd00::1".parse().expect("ip")), None);
    }

    #[test]
    fn errors_name_the_field() {
        let field = |extra: &str| section(extra).expect_err("invalid").0;
        assert_eq!(field("crd_group = \"example.com\""), "kubernetes.crd_group");
        assert_eq!(field("namespace = \"Sluice\""), "kubernetes.namespace");
        assert_eq!(field("backends = \"vm\""), "kubernetes.backends");
        assert_eq!(
            field("backends = \"node\"\nmode = \"dsr\""),
            "kubernetes.backends"
        );
        assert_eq!(field("mode = \"tunnel\""), "kubernetes.mode");
        assert_eq!(field("table_size = 1000"), "kubernetes.table_size");
        assert_eq!(
            field("lease_duration = \"10m\""),
            "kubernetes.lease_duration"
        );
        assert_eq!(
            field("load_balancer_class = \"\""),
            "kubernetes.load_balancer_class"
        );
        let none: KubernetesSection = toml::from_str("").expect("schema");
        assert_eq!(
            validate(&none).expect_err("no hops").0,
            "kubernetes.next_hops"
        );
        let host_bits: KubernetesSection =
            toml::from_str("[[next_hops]]\nprefix = \"10.0.0.1/8\"\nmac = \"02:00:00:00:00:01\"")
                .expect("schema");
        assert_eq!(
            validate(&host_bits).expect_err("host bits").0,
            "kubernetes.next_hops[0].prefix"
        );
    }
}
