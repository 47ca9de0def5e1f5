//! Kubernetes objects → the services this node publishes (pure; no I/O).
//!
//! Rules:
//! - a Service is Sluice's when its `spec.type` is `LoadBalancer` and its
//!   `spec.loadBalancerClass` is the configured class (or is unset and `default_class` is on);
//! - it is published once per `status.loadBalancer.ingress[].ip` × `spec.ports[]` (TCP or UDP),
//!   named `namespace/name:port/protocol@vip` (the name is the service's identity across
//!   updates, so a port or address change is a new service);
//! - **pod backends**: the endpoints of the EndpointSlices labelled
//!   `kubernetes.io/service-name=<name>` in the Service's namespace whose address type is the
//!   VIP's family, with the slice port of the same name and protocol as the Service port.
//!   `ready` (unset counts as ready) and not terminating → active; terminating but `serving` →
//!   draining (established flows stay, no new ones); anything else is left out. An address in
//!   several slices counts once, with its best state. The backend's name is its address (the
//!   Maglev input, the same on every node);
//! - **node backends** (`nat` only): every Ready node's InternalIP of the VIP's family with the
//!   port's `nodePort`; with `externalTrafficPolicy: Local`, only nodes that host a ready
//!   endpoint. Nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers` are
//!   left out. The backend's name is the node's name;
//! - the forwarding mode is the `sluice.io/mode` annotation (`nat`, `dsr`, `ipip`, `gue`) or
//!   the configured default; modes other than `nat` need the target port to equal the port;
//! - `spec.sessionAffinity: ClientIP` gives client-IP affinity (every connection from one
//!   client address to one backend, on every node; `sessionAffinityConfig`'s timeout is not
//!   applied: the choice is stateless); anything else, none;
//! - every backend's MAC comes from `next_hops`; an address no prefix covers is left out and
//!   reported;
//! - a service with no backend is not published (nothing announces or forwards its VIP);
//! - what cannot be published is reported as a [`Problem`], never silently dropped.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sluice_dataplane::maglev::MAX_BACKENDS;
use sluice_dataplane::tables::{Affinity, BackendState, Mode, Proto, ServiceKey};

use crate::config::{BackendDef, BackendSource, KubeConfig, ServiceDef};

/// The annotation that picks a Service's forwarding mode.
pub const MODE_ANNOTATION: &str = "sluice.io/mode";
/// The label EndpointSlices name their Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that keeps a node out of load balancers.
pub const EXCLUDE_NODE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Something about a Service that could not be published as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `namespace/name`.
    pub service: String,
    /// Why, for a person.
    pub reason: String,
}

/// `namespace/name` of an object.
#[must_use]
pub fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// Whether `svc` is a LoadBalancer Service of Sluice's class.
#[must_use]
pub fn is_ours(cfg: &KubeConfig, svc: &Service) -> bool {
    let Some(spec) = &svc.spec else {
        return false;
    };
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return false;
    }
    match spec.load_balancer_class.as_deref() {
        Some(c) => c == cfg.class,
        None => cfg.default_class,
    }
}

/// The addresses in `status.loadBalancer.ingress` (entries without a parsable `ip` are
/// skipped).
#[must_use]
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|v| {
            v.iter()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The protocol of a Service or slice port (`TCP` when unset, as the API defaults it).
fn proto(p: Option<&str>) -> Option<Proto> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Proto::Tcp),
        "UDP" => Some(Proto::Udp),
        _ => None,
    }
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

/// The published name of one VIP × port of a Service.
#[must_use]
pub fn service_name(key: &str, port: u16, p: Proto, vip: IpAddr) -> String {
    format!("{key}:{port}/{}@{vip}", proto_name(p))
}

/// The inputs for one node's translation.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Every Service in the cluster (those not ours are skipped).
    pub services: &'a [std::sync::Arc<Service>],
    /// Every EndpointSlice.
    pub slices: &'a [std::sync::Arc<EndpointSlice>],
    /// Every Node (used with node backends only).
    pub nodes: &'a [std::sync::Arc<Node>],
}

/// The services to publish for `view`, and what could not be published.
#[must_use]
pub fn node_services(
    cfg: &KubeConfig,
    view: View<'_>,
) -> (BTreeMap<String, ServiceDef>, Vec<Problem>) {
    // Slices by (namespace, service name), built once: O(services + slices).
    let mut slices: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in view.slices {
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        if let Some(name) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            slices.entry((ns, name.as_str())).or_default().push(s);
        }
    }
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    let mut keys: BTreeMap<ServiceKey, String> = BTreeMap::new();
    for svc in view.services {
        if !is_ours(cfg, svc) {
            continue;
        }
        let key = object_key(&svc.metadata);
        let mut problem = |reason: String| {
            problems.push(Problem {
                service: key.clone(),
                reason,
            });
        };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        let name = svc.metadata.name.as_deref().unwrap_or("");
        let spec = svc.spec.as_ref().expect("is_ours checked the spec");
        let mode = match svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MODE_ANNOTATION))
        {
            None => cfg.mode,
            Some(m) => match crate::config::parse_mode(m) {
                Ok(m) => m,
                Err(e) => {
                    problem(format!("annotation {MODE_ANNOTATION}: {e}"));
                    continue;
                }
            },
        };
        if cfg.backends == BackendSource::Node && mode != Mode::Nat {
            problem(format!(
                "mode {m} cannot reach node ports (it does not rewrite the port); use nat",
                m = mode_name(mode)
            ));
            continue;
        }
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        let affinity = if spec.session_affinity.as_deref() == Some("ClientIP") {
            Affinity::ClientIp
        } else {
            Affinity::None
        };
        let my_slices = slices.get(&(ns, name)).map_or(&[][..], Vec::as_slice);
        for vip in ingress_ips(svc) {
            for port in spec.ports.iter().flatten() {
                let Some(p) = proto(port.protocol.as_deref()) else {
                    problem(format!(
                        "port {}: protocol {} is not supported (TCP and UDP are)",
                        port.port,
                        port.protocol.as_deref().unwrap_or("")
                    ));
                    continue;
                };
                let Ok(svc_port) = u16::try_from(port.port) else {
                    continue;
                };
                let sname = service_name(&key, svc_port, p, vip);
                let backends = match cfg.backends {
                    BackendSource::Pod => {
                        pod_backends(cfg, mode, vip, port, p, my_slices, &mut problem)
                    }
                    BackendSource::Node => {
                        node_backends(cfg, vip, port, local, my_slices, view.nodes, &mut problem)
                    }
                };
                if backends.is_empty() {
                    continue;
                }
                let skey = ServiceKey::new(vip, svc_port, p);
                if let Some(other) = keys.get(&skey) {
                    problem(format!(
                        "{vip}:{svc_port}/{} is already published for {other}",
                        proto_name(p)
                    ));
                    continue;
                }
                keys.insert(skey, sname.clone());
                out.insert(
                    sname,
                    ServiceDef {
                        key: skey,
                        mode,
                        affinity,
                        table_size: cfg.table_size,
                        backends,
                        health: None,
                    },
                );
            }
        }
    }
    (out, problems)
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Nat => "nat",
        Mode::Dsr => "dsr",
        Mode::EncapIpip => "ipip",
        Mode::EncapGue => "gue",
    }
}

fn family_matches(address_type: &str, vip: IpAddr) -> bool {
    matches!(
        (address_type, vip),
        ("IPv4", IpAddr::V4(_)) | ("IPv6", IpAddr::V6(_))
    )
}

/// Adds `b` to `list` unless an entry of that name is there in a better state.
fn add_backend(list: &mut BTreeMap<String, BackendDef>, b: BackendDef) {
    match list.get(&b.name) {
        Some(old) if old.state == BackendState::Active => {}
        _ => {
            list.insert(b.name.clone(), b);
        }
    }
}

fn finish(
    mut list: BTreeMap<String, BackendDef>,
    problem: &mut impl FnMut(String),
) -> Vec<BackendDef> {
    if list.len() > MAX_BACKENDS {
        problem(format!(
            "{} backends exceed the limit of {MAX_BACKENDS}; the first {MAX_BACKENDS} by name are used",
            list.len()
        ));
        while list.len() > MAX_BACKENDS {
            list.pop_last();
        }
    }
    list.into_values().collect()
}

fn pod_backends(
    cfg: &KubeConfig,
    mode: Mode,
    vip: IpAddr,
    port: &ServicePort,
    p: Proto,
    slices: &[&EndpointSlice],
    problem: &mut impl FnMut(String),
) -> Vec<BackendDef> {
    let mut list = BTreeMap::new();
    for slice in slices {
        if !family_matches(&slice.address_type, vip) {
            continue;
        }
        let Some(target) = slice.ports.iter().flatten().find(|sp| {
            sp.name.as_deref().unwrap_or("") == port.name.as_deref().unwrap_or("")
                && proto(sp.protocol.as_deref()) == Some(p)
        }) else {
            continue;
        };
        let Some(target_port) = target.port.and_then(|t| u16::try_from(t).ok()) else {
            continue;
        };
        let svc_port = u16::try_from(port.port).unwrap_or(0);
        if mode != Mode::Nat && target_port != svc_port {
            problem(format!(
                "port {svc_port}: mode {} cannot rewrite the port to target port {target_port}",
                mode_name(mode)
            ));
            continue;
        }
        for ep in &slice.endpoints {
            let c = ep.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let state = match (terminating, ready, serving) {
                (false, true, _) => BackendState::Active,
                (true, _, true) => BackendState::Draining,
                _ => continue,
            };
            for a in &ep.addresses {
                let Ok(addr) = a.parse::<IpAddr>() else {
                    continue;
                };
                let Some(mac) = cfg.next_hop_mac(addr) else {
                    problem(format!("no next_hops prefix covers endpoint {addr}"));
                    continue;
                };
                add_backend(
                    &mut list,
                    BackendDef {
                        name: addr.to_string(),
                        addr,
                        port: if target_port == svc_port {
                            0
                        } else {
                            target_port
                        },
                        mac,
                        weight: 1,
                        state,
                    },
                );
            }
        }
    }
    finish(list, problem)
}

fn node_backends(
    cfg: &KubeConfig,
    vip: IpAddr,
    port: &ServicePort,
    local: bool,
    slices: &[&EndpointSlice],
    nodes: &[std::sync::Arc<Node>],
    problem: &mut impl FnMut(String),
) -> Vec<BackendDef> {
    let Some(node_port) = port.node_port.and_then(|n| u16::try_from(n).ok()) else {
        problem(format!(
            "port {}: no nodePort allocated (allocateLoadBalancerNodePorts: false?) but backends are nodes",
            port.port
        ));
        return Vec::new();
    };
    let hosting: std::collections::BTreeSet<&str> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|ep| {
            let c = ep.conditions.as_ref();
            c.and_then(|c| c.ready).unwrap_or(true)
                && !c.and_then(|c| c.terminating).unwrap_or(false)
        })
        .filter_map(|ep| ep.node_name.as_deref())
        .collect();
    let mut list = BTreeMap::new();
    for node in nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        if node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(EXCLUDE_NODE_LABEL))
        {
            continue;
        }
        if local && !hosting.contains(name) {
            continue;
        }
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        if !ready {
            continue;
        }
        let addr = status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse::<IpAddr>().ok())
            .find(|a| a.is_ipv4() == vip.is_ipv4());
        let Some(addr) = addr else {
            continue;
        };
        let Some(mac) = cfg.next_hop_mac(addr) else {
            problem(format!("no next_hops prefix covers node {name} ({addr})"));
            continue;
        };
        add_backend(
            &mut list,
            BackendDef {
                name: name.to_owned(),
                addr,
                port: node_port,
                mac,
                weight: 1,
                state: BackendState::Active,
            },
        );
    }
    finish(list, problem)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::config::Config;

    fn cfg(backends: &str) -> KubeConfig {
        let text = format!(
            "[node]\nname = \"lb1\"\n[kubernetes]\nbackends = \"{backends}\"\n\
             [[kubernetes.next_hops]]\nprefix = \"10.244.0.0/16\"\nmac = \"02:00:00:00:00:01\"\n\
             [[kubernetes.next_hops]]\nprefix = \"192.168.0.0/16\"\nmac = \"02:00:00:00:00:02\"\n\
             [[kubernetes.next_hops]]\nprefix = \"fd00::/8\"\nmac = \"02:00:00:00:00:03\"\n"
        );
        Config::parse(&text, "test.toml")
            .expect("valid")
            .kubernetes
            .expect("kubernetes")
    }

    fn service(name: &str, extra: serde_json::Value) -> Arc<Service> {
        let mut v = json!({
            "metadata": { "namespace": "default", "name": name },
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": "sluice.io/lb",
                "externalTrafficPolicy": "Cluster",
                "ports": [
                    { "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080 },
                    { "name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053 },
                ],
            },
            "status": { "loadBalancer": { "ingress": [ { "ip": "198.51.100.10" }, { "ip": "2001:db8::10" } ] } },
        });
        json_patch::merge(&mut v, &extra);
        Arc::new(serde_json::from_value(v).expect("service"))
    }

    fn slice(svc: &str, family: &str, endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {
                    "namespace": "default",
                    "name": format!("{svc}-{family}"),
                    "labels": { SERVICE_NAME_LABEL: svc },
                },
                "addressType": family,
                "ports": [
                    { "name": "http", "port": 8080, "protocol": "TCP" },
                    { "name": "dns", "port": 53, "protocol": "UDP" },
                ],
                "endpoints": endpoints,
            }))
            .expect("slice"),
        )
    }

    fn node(name: &str, ip: &str, ready: bool) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": { "name": name },
                "status": {
                    "addresses": [ { "type": "InternalIP", "address": ip } ],
                    "conditions": [ { "type": "Ready", "status": if ready { "True" } else { "False" } } ],
                },
            }))
            .expect("node"),
        )
    }

    fn run(
        cfg: &KubeConfig,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        nodes: &[Arc<Node>],
    ) -> (BTreeMap<String, ServiceDef>, Vec<Problem>) {
        node_services(
            cfg,
            View {
                services,
                slices,
                nodes,
            },
        )
    }

    fn states(def: &ServiceDef) -> Vec<(String, u16, BackendState)> {
        def.backends
            .iter()
            .map(|b| (b.name.clone(), b.port, b.state))
            .collect()
    }

    #[test]
    fn pod_endpoints_by_condition_port_name_and_family() {
        let c = cfg("pod");
        let svcs = [service("web", json!({}))];
        let slices = [
            slice(
                "web",
                "IPv4",
                json!([
                    { "addresses": ["10.244.1.1"], "conditions": { "ready": true } },
                    { "addresses": ["10.244.1.2"] },
                    { "addresses": ["10.244.1.3"], "conditions": { "ready": false, "serving": true, "terminating": true } },
                    { "addresses": ["10.244.1.4"], "conditions": { "ready": false } },
                    { "addresses": ["10.244.1.5"], "conditions": { "ready": false, "serving": false, "terminating": true } },
                ]),
            ),
            slice("web", "IPv6", json!([{ "addresses": ["fd00::1"] }])),
            slice("other", "IPv4", json!([{ "addresses": ["10.244.9.9"] }])),
        ];
        let (out, problems) = run(&c, &svcs, &slices, &[]);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "default/web:53/udp@198.51.100.10",
                "default/web:53/udp@2001:db8::10",
                "default/web:80/tcp@198.51.100.10",
                "default/web:80/tcp@2001:db8::10",
            ]
        );
        let http4 = &out["default/web:80/tcp@198.51.100.10"];
        assert_eq!(http4.mode, Mode::Nat);
        assert_eq!(http4.affinity, Affinity::None);
        assert_eq!(
            states(http4),
            [
                ("10.244.1.1".to_owned(), 8080, BackendState::Active),
                ("10.244.1.2".to_owned(), 8080, BackendState::Active),
                ("10.244.1.3".to_owned(), 8080, BackendState::Draining),
            ]
        );
        assert_eq!(http4.backends[0].mac, [2, 0, 0, 0, 0, 1]);
        // The UDP port keeps its number (target port = port): 0 means "keep".
        assert_eq!(out["default/web:53/udp@198.51.100.10"].backends[0].port, 0);
        let http6 = &out["default/web:80/tcp@2001:db8::10"];
        assert_eq!(
            states(http6),
            [("fd00::1".to_owned(), 8080, BackendState::Active)]
        );
        assert_eq!(http6.backends[0].mac, [2, 0, 0, 0, 0, 3]);
    }

    /// `sessionAffinity: ClientIP` gives every published port client-IP affinity; `None`
    /// (or leaving it out) gives none.
    #[test]
    fn session_affinity_client_ip() {
        let c = cfg("pod");
        let slices = [
            slice("web", "IPv4", json!([{ "addresses": ["10.244.1.1"] }])),
            slice("web", "IPv6", json!([{ "addresses": ["fd00::1"] }])),
        ];
        for (value, want) in [
            (json!("ClientIP"), Affinity::ClientIp),
            (json!("None"), Affinity::None),
            (json!(null), Affinity::None),
        ] {
            let svcs = [service(
                "web",
                json!({ "spec": { "sessionAffinity": value.clone() } }),
            )];
            let (out, problems) = run(&c, &svcs, &slices, &[]);
            assert!(problems.is_empty(), "{problems:?}");
            assert_eq!(out.len(), 4, "{value}: {out:?}");
            for def in out.values() {
                assert_eq!(def.affinity, want, "{value}");
            }
        }
    }

    #[test]
    fn not_ours_no_address_or_no_endpoint_publishes_nothing() {
        let c = cfg("pod");
        let svcs = [
            service(
                "other-class",
                json!({ "spec": { "loadBalancerClass": "example.com/lb" } }),
            ),
            service("no-class", json!({ "spec": { "loadBalancerClass": null } })),
            service("cluster-ip", json!({ "spec": { "type": "ClusterIP" } })),
            service("pending", json!({ "status": null })),
            service("empty", json!({})),
        ];
        let slices = [
            slice(
                "other-class",
                "IPv4",
                json!([{ "addresses": ["10.244.1.1"] }]),
            ),
            slice("no-class", "IPv4", json!([{ "addresses": ["10.244.1.1"] }])),
            slice(
                "cluster-ip",
                "IPv4",
                json!([{ "addresses": ["10.244.1.1"] }]),
            ),
            slice("pending", "IPv4", json!([{ "addresses": ["10.244.1.1"] }])),
        ];
        let (out, problems) = run(&c, &svcs, &slices, &[]);
        assert!(out.is_empty(), "{out:?}");
        assert!(problems.is_empty(), "{problems:?}");
        let mut with_default = c;
        with_default.default_class = true;
        let (out, _) = run(&with_default, &svcs, &slices, &[]);
        assert_eq!(
            out.keys().filter(|k| k.contains("/80/")).count()
                + out.keys().filter(|k| k.contains(":80/")).count(),
            1,
            "{:?}",
            out.keys()
        );
        assert!(out.keys().all(|k| k.starts_with("default/no-class:")));
    }

    #[test]
    fn problems_are_reported_not_dropped_silently() {
        let c = cfg("pod");
        let svcs = [
            service(
                "bad-mode",
                json!({ "metadata": { "annotations": { MODE_ANNOTATION: "tunnel" } } }),
            ),
            service(
                "dsr",
                json!({ "metadata": { "annotations": { MODE_ANNOTATION: "dsr" } } }),
            ),
            service("nohop", json!({})),
        ];
        let slices = [
            slice("bad-mode", "IPv4", json!([{ "addresses": ["10.244.1.1"] }])),
            slice("dsr", "IPv4", json!([{ "addresses": ["10.244.1.1"] }])),
            slice("nohop", "IPv4", json!([{ "addresses": ["172.16.0.1"] }])),
        ];
        let (out, problems) = run(&c, &svcs, &slices, &[]);
        let reasons: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.service, p.reason))
            .collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("default/bad-mode: annotation sluice.io/mode")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("default/dsr: port 80: mode dsr cannot rewrite")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r == "default/nohop: no next_hops prefix covers endpoint 172.16.0.1"),
            "{reasons:?}"
        );
        // DSR still publishes the UDP port, whose target port equals the port.
        assert_eq!(
            out.keys().collect::<Vec<_>>(),
            ["default/dsr:53/udp@198.51.100.10"]
        );
        assert_eq!(out["default/dsr:53/udp@198.51.100.10"].mode, Mode::Dsr);
    }

    #[test]
    fn node_backends_with_cluster_and_local_policy() {
        let c = cfg("node");
        let nodes = [
            node("n1", "192.168.0.1", true),
            node("n2", "192.168.0.2", true),
            node("n3", "192.168.0.3", false),
        ];
        let slices = [slice(
            "web",
            "IPv4",
            json!([{ "addresses": ["10.244.1.1"], "nodeName": "n2" }]),
        )];
        let cluster = [service(
            "web",
            json!({ "status": { "loadBalancer": { "ingress": [ { "ip": "198.51.100.10" } ] } } }),
        )];
        let (out, problems) = run(&c, &cluster, &slices, &nodes);
        assert!(problems.is_empty(), "{problems:?}");
        let http = &out["default/web:80/tcp@198.51.100.10"];
        assert_eq!(
            states(http),
            [
                ("n1".to_owned(), 30080, BackendState::Active),
                ("n2".to_owned(), 30080, BackendState::Active),
            ]
        );
        assert_eq!(http.backends[0].mac, [2, 0, 0, 0, 0, 2]);
        let local = [service(
            "web",
            json!({ "spec": { "externalTrafficPolicy": "Local" }, "status": { "loadBalancer": { "ingress": [ { "ip": "198.51.100.10" } ] } } }),
        )];
        let (out, _) = run(&c, &local, &slices, &nodes);
        assert_eq!(
            states(&out["default/web:80/tcp@198.51.100.10"]),
            [("n2".to_owned(), 30080, BackendState::Active)]
        );
    }
}
