//! Per-resource rules applied on create and update, the stand-in's version of the apiserver's
//! registry "strategies": what is reset, what is defaulted, what is validated, and what is
//! allocated (Service cluster IPs and node ports).
//!
//! Only what a load-balancer controller can observe is modelled:
//! - **every object**: name syntax, label / annotation keys and label values, finalizer names;
//! - **Service**: defaults (`type: ClusterIP`, `sessionAffinity: None`, port `protocol: TCP`,
//!   `targetPort` = `port`, `internalTrafficPolicy: Cluster`, `ipFamilies: [IPv4]`,
//!   `ipFamilyPolicy: SingleStack`; for `NodePort`/`LoadBalancer` also
//!   `externalTrafficPolicy: Cluster`, `allocateLoadBalancerNodePorts: true`), a cluster IP from
//!   `10.96.0.0/12` and node ports from `30000-32767` (requested ones checked for range and
//!   reuse), values carried over on update when the new object omits them, fields a type
//!   change makes meaningless dropped, and the validation of ports, type and
//!   `loadBalancerClass` (only with `LoadBalancer`, immutable);
//! - **Namespace**: `spec.finalizers: [kubernetes]`, `status.phase: Active`, the
//!   `kubernetes.io/metadata.name` label;
//! - **Pod**: `status.phase: Pending` on create;
//! - **EndpointSlice**: `addressType` required and immutable; port `protocol: TCP` and
//!   `name: ""` defaults.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

use serde_json::{Map, Value, json};

use crate::error::FieldError;
use crate::meta::{ensure_object, metadata, metadata_mut};
use crate::resource::Resolved;
use crate::validation;

const SERVICE_CIDR_BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SERVICE_CIDR_SIZE: u32 = 1 << 20;
const NODE_PORT_MIN: u16 = 30000;
const NODE_PORT_MAX: u16 = 32767;

/// Allocated Service cluster IPs and node ports.
#[derive(Debug)]
pub(crate) struct Alloc {
    ips: HashSet<u32>,
    next_ip: u32,
    ports: HashSet<u16>,
    next_port: u16,
}

// === impl Alloc ===

impl Alloc {
    pub(crate) fn new() -> Self {
        // 10.96.0.1 is the `kubernetes` Service's address in a real cluster; start above it.
        Self {
            ips: HashSet::new(),
            next_ip: 10,
            ports: HashSet::new(),
            next_port: NODE_PORT_MIN,
        }
    }

    fn take_ip(&mut self) -> Option<Ipv4Addr> {
        for _ in 0..SERVICE_CIDR_SIZE {
            let off = self.next_ip;
            self.next_ip = if off + 2 >= SERVICE_CIDR_SIZE {
                2
            } else {
                off + 1
            };
            let ip = SERVICE_CIDR_BASE + off;
            if self.ips.insert(ip) {
                return Some(Ipv4Addr::from(ip));
            }
        }
        None
    }

    fn take_port(&mut self) -> Option<u16> {
        for _ in NODE_PORT_MIN..=NODE_PORT_MAX {
            let p = self.next_port;
            self.next_port = if p >= NODE_PORT_MAX {
                NODE_PORT_MIN
            } else {
                p + 1
            };
            if self.ports.insert(p) {
                return Some(p);
            }
        }
        None
    }
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(obj, |v, k| v.get(*k))
        .and_then(Value::as_str)
}

fn spec_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let root = ensure_object(obj);
    ensure_object(root.entry("spec").or_insert_with(|| json!({})))
}

/// What the server resets and defaults on create, after the generic metadata handling.
pub(crate) fn on_create(res: &Resolved, obj: &mut Value) {
    let root = ensure_object(obj);
    // The status subresource: status is not set by a create, except for Nodes (the kubelet
    // registers a Node with its status).
    if res.status_subresource && !res.is("", "nodes") {
        root.remove("status");
    }
    if res.is("", "services") {
        root.insert("status".into(), json!({"loadBalancer": {}}));
        default_service(obj, None);
    } else if res.is("", "namespaces") {
        default_namespace(obj);
        ensure_object(obj).insert("status".into(), json!({"phase": "Active"}));
    } else if res.is("", "pods") {
        root.insert("status".into(), json!({"phase": "Pending"}));
    } else if res.is("discovery.k8s.io", "endpointslices") {
        default_endpoint_slice(obj);
    }
}

/// What the server defaults and carries over on update.
pub(crate) fn on_update(res: &Resolved, old: &Value, obj: &mut Value) {
    if res.is("", "services") {
        default_service(obj, Some(old));
    } else if res.is("", "namespaces") {
        default_namespace(obj);
    } else if res.is("discovery.k8s.io", "endpointslices") {
        default_endpoint_slice(obj);
    }
}

fn default_namespace(obj: &mut Value) {
    let name = metadata(obj)
        .and_then(|m| m.get("name"))
        .cloned()
        .unwrap_or(Value::Null);
    let meta = metadata_mut(obj);
    let labels = ensure_object(meta.entry("labels").or_insert_with(|| json!({})));
    labels.insert("kubernetes.io/metadata.name".into(), name);
    let spec = spec_mut(obj);
    spec.entry("finalizers")
        .or_insert_with(|| json!(["kubernetes"]));
}

fn default_endpoint_slice(obj: &mut Value) {
    if let Some(ports) = obj.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            let p = ensure_object(p);
            p.entry("protocol").or_insert_with(|| json!("TCP"));
            p.entry("name").or_insert_with(|| json!(""));
        }
    }
}

fn is_external(ty: &str) -> bool {
    ty == "NodePort" || ty == "LoadBalancer"
}

fn default_service(obj: &mut Value, old: Option<&Value>) {
    let old_type = old
        .and_then(|o| str_at(o, &["spec", "type"]))
        .unwrap_or("ClusterIP")
        .to_string();
    let spec = spec_mut(obj);
    let ty = spec
        .entry("type")
        .or_insert_with(|| json!("ClusterIP"))
        .as_str()
        .unwrap_or("")
        .to_string();
    spec.entry("sessionAffinity")
        .or_insert_with(|| json!("None"));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            let p = ensure_object(p);
            p.entry("protocol").or_insert_with(|| json!("TCP"));
            if !p.contains_key("targetPort")
                && let Some(port) = p.get("port").cloned()
            {
                p.insert("targetPort".into(), port);
            }
        }
    }
    // A type change drops what only the old type used, if the client left it as it was
    // (`dropTypeDependentFields`).
    if let Some(old) = old {
        let old_spec = old.get("spec");
        let same =
            |spec: &Map<String, Value>, k: &str| spec.get(k) == old_spec.and_then(|s| s.get(k));
        if is_external(&old_type) && !is_external(&ty) {
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    ensure_object(p).remove("nodePort");
                }
            }
            for k in ["externalTrafficPolicy", "healthCheckNodePort"] {
                if same(spec, k) {
                    spec.remove(k);
                }
            }
        }
        if old_type == "LoadBalancer" && ty != "LoadBalancer" {
            for k in ["allocateLoadBalancerNodePorts", "loadBalancerClass"] {
                if same(spec, k) {
                    spec.remove(k);
                }
            }
        }
    }
    if ty == "ExternalName" {
        return;
    }
    spec.entry("internalTrafficPolicy")
        .or_insert_with(|| json!("Cluster"));
    spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
    spec.entry("ipFamilyPolicy")
        .or_insert_with(|| json!("SingleStack"));
    if is_external(&ty) {
        spec.entry("externalTrafficPolicy")
            .or_insert_with(|| json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        spec.entry("allocateLoadBalancerNodePorts")
            .or_insert_with(|| json!(true));
    }
    // Allocated values the client did not repeat are kept (`patchAllocatedValues`).
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        for k in ["clusterIP", "clusterIPs"] {
            let missing = spec
                .get(k)
                .is_none_or(|v| v.as_str() == Some("") || v.is_null());
            if missing && let Some(v) = old_spec.get(k) {
                spec.insert(k.into(), v.clone());
            }
        }
        if is_external(&ty)
            && let (Some(ports), Some(old_ports)) = (
                spec.get_mut("ports").and_then(Value::as_array_mut),
                old_spec.get("ports").and_then(Value::as_array),
            )
        {
            for p in ports {
                let p = ensure_object(p);
                if p.contains_key("nodePort") {
                    continue;
                }
                let same_port = old_ports.iter().find(|o| {
                    o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                });
                if let Some(np) = same_port.and_then(|o| o.get("nodePort")) {
                    p.insert("nodePort".into(), np.clone());
                }
            }
        }
    }
}

/// Validates an object about to be stored; `old` is the stored object on update.
pub(crate) fn validate(res: &Resolved, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let empty = Map::new();
    let meta = metadata(obj).unwrap_or(&empty);
    if old.is_none() {
        let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
        let msgs = if res.is("", "namespaces") {
            validation::dns1123_label(name)
        } else if res.is("", "services") {
            validation::dns1035_label(name)
        } else {
            validation::dns1123_subdomain(name)
        };
        for m in msgs {
            errs.push(FieldError::invalid("metadata.name", &json!(name), m));
        }
    }
    match meta.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (k, v) in labels {
                for m in validation::qualified_name(k) {
                    errs.push(FieldError::invalid("metadata.labels", &json!(k), m));
                }
                match v.as_str() {
                    Some(s) => {
                        for m in validation::label_value(s) {
                            errs.push(FieldError::invalid("metadata.labels", v, m));
                        }
                    }
                    None => errs.push(FieldError::invalid(
                        "metadata.labels",
                        v,
                        "must be a string",
                    )),
                }
            }
        }
        Some(other) => errs.push(FieldError::invalid(
            "metadata.labels",
            other,
            "must be a map of strings",
        )),
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        for (k, v) in ann {
            for m in validation::qualified_name(&k.to_ascii_lowercase()) {
                errs.push(FieldError::invalid("metadata.annotations", &json!(k), m));
            }
            if !v.is_string() {
                errs.push(FieldError::invalid(
                    "metadata.annotations",
                    v,
                    "must be a string",
                ));
            }
        }
    }
    if let Some(fins) = meta.get("finalizers").and_then(Value::as_array) {
        for (i, f) in fins.iter().enumerate() {
            let s = f.as_str().unwrap_or("");
            for m in validation::qualified_name(s) {
                errs.push(FieldError::invalid(
                    format!("metadata.finalizers[{i}]"),
                    f,
                    m,
                ));
            }
        }
    }
    if res.is("", "services") {
        validate_service(obj, old, &mut errs);
    } else if res.is("discovery.k8s.io", "endpointslices") {
        const TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];
        match obj.get("addressType").and_then(Value::as_str) {
            None => errs.push(FieldError::required("addressType", "")),
            Some(t) if !TYPES.contains(&t) => {
                errs.push(FieldError::not_supported("addressType", t, TYPES))
            }
            Some(t) => {
                if let Some(was) = old
                    .and_then(|o| o.get("addressType"))
                    .and_then(Value::as_str)
                    && was != t
                {
                    errs.push(FieldError::invalid(
                        "addressType",
                        &json!(t),
                        "field is immutable",
                    ));
                }
            }
        }
    }
    errs
}

fn validate_service(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", ty, TYPES));
    }
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = |f: &str| format!("spec.ports[{i}].{f}");
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                at("port"),
                p.get("port").unwrap_or(&Value::Null),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !PROTOCOLS.contains(&proto) {
            errs.push(FieldError::not_supported(at("protocol"), proto, PROTOCOLS));
        }
        let name = p.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(at("name"), ""));
        } else if !name.is_empty() && !names.insert(name.to_string()) {
            errs.push(FieldError::invalid(
                at("name"),
                &json!(name),
                "Duplicate value",
            ));
        }
        if let Some(np) = p.get("nodePort") {
            if !is_external(ty) {
                errs.push(FieldError::forbidden(
                    at("nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                ));
            } else if !np
                .as_u64()
                .is_some_and(|n| (u64::from(NODE_PORT_MIN)..=u64::from(NODE_PORT_MAX)).contains(&n))
            {
                errs.push(FieldError::invalid(
                    at("nodePort"),
                    np,
                    format!("provided port is not in the valid range. The range of valid ports is {NODE_PORT_MIN}-{NODE_PORT_MAX}"),
                ));
            }
        }
    }
    if spec.get("loadBalancerClass").is_some_and(|v| !v.is_null()) && ty != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            "spec.loadBalancerClass",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if spec
        .get("externalTrafficPolicy")
        .is_some_and(|v| !v.is_null())
        && !is_external(ty)
    {
        errs.push(FieldError::invalid(
            "spec.externalTrafficPolicy",
            &spec["externalTrafficPolicy"],
            "may only be set for externally-accessible services",
        ));
    }
    if let Some(ip) = spec.get("clusterIP").and_then(Value::as_str)
        && !ip.is_empty()
        && ip != "None"
        && ip.parse::<Ipv4Addr>().is_err()
    {
        errs.push(FieldError::invalid(
            "spec.clusterIP",
            &json!(ip),
            "must be a valid IP address",
        ));
    }
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        let old_ty = old_spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        if old_ty == "LoadBalancer"
            && ty == "LoadBalancer"
            && old_spec.get("loadBalancerClass") != spec.get("loadBalancerClass")
        {
            errs.push(FieldError::invalid(
                "spec.loadBalancerClass",
                spec.get("loadBalancerClass").unwrap_or(&Value::Null),
                "may not change once set",
            ));
        }
        let old_ip = old_spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("");
        let new_ip = spec.get("clusterIP").and_then(Value::as_str).unwrap_or("");
        if !old_ip.is_empty()
            && !new_ip.is_empty()
            && old_ip != new_ip
            && ty != "ExternalName"
            && old_ty != "ExternalName"
        {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                &json!(new_ip),
                "may not change once set",
            ));
        }
    }
}

fn node_ports(obj: &Value) -> Vec<u16> {
    obj.get("spec")
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
                .filter_map(|n| u16::try_from(n).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn cluster_ip(obj: &Value) -> Option<u32> {
    str_at(obj, &["spec", "clusterIP"])
        .and_then(|s| s.parse::<Ipv4Addr>().ok())
        .map(u32::from)
}

/// Allocates what a Service needs (cluster IP, node ports) and records requested values.
/// Called after validation passed, just before the write.
pub(crate) fn allocate(
    res: &Resolved,
    obj: &mut Value,
    old: Option<&Value>,
    alloc: &mut Alloc,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !res.is("", "services") {
        return errs;
    }
    let ty = str_at(obj, &["spec", "type"])
        .unwrap_or("ClusterIP")
        .to_string();
    // Cluster IP.
    let old_ip = old.and_then(cluster_ip);
    let mut taken_ip = None;
    if ty != "ExternalName" {
        let requested = str_at(obj, &["spec", "clusterIP"])
            .unwrap_or("")
            .to_string();
        if requested.is_empty() {
            match alloc.take_ip() {
                Some(ip) => {
                    taken_ip = Some(u32::from(ip));
                    let spec = spec_mut(obj);
                    spec.insert("clusterIP".into(), json!(ip.to_string()));
                    spec.insert("clusterIPs".into(), json!([ip.to_string()]));
                }
                None => errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    &json!([]),
                    "range is full",
                )),
            }
        } else if requested != "None" {
            let ip = requested.parse::<Ipv4Addr>().map(u32::from).unwrap_or(0);
            if Some(ip) != old_ip {
                let in_range = ip.wrapping_sub(SERVICE_CIDR_BASE) < SERVICE_CIDR_SIZE;
                if !in_range {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        &json!([requested]),
                        format!(
                            "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
                        ),
                    ));
                } else if alloc.ips.insert(ip) {
                    taken_ip = Some(ip);
                } else {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        &json!([requested]),
                        format!(
                            "failed to allocate IP {requested}: provided IP is already allocated"
                        ),
                    ));
                }
            }
            spec_mut(obj)
                .entry("clusterIPs")
                .or_insert_with(|| json!([requested]));
        } else {
            spec_mut(obj)
                .entry("clusterIPs")
                .or_insert_with(|| json!(["None"]));
        }
    }
    // Node ports.
    let old_ports: BTreeSet<u16> = old
        .map(node_ports)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let wants_ports = ty == "NodePort"
        || (ty == "LoadBalancer"
            && obj.pointer("/spec/allocateLoadBalancerNodePorts") != Some(&json!(false)));
    let mut taken = Vec::new();
    if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            let p = ensure_object(p);
            match p
                .get("nodePort")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
            {
                Some(n) if old_ports.contains(&n) => {}
                Some(n) => {
                    if alloc.ports.insert(n) {
                        taken.push(n);
                    } else {
                        errs.push(FieldError::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            &json!(n),
                            "provided port is already allocated",
                        ));
                    }
                }
                None if wants_ports => match alloc.take_port() {
                    Some(n) => {
                        taken.push(n);
                        p.insert("nodePort".into(), json!(n));
                    }
                    None => errs.push(FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        &json!(0),
                        "range is full",
                    )),
                },
                None => {}
            }
        }
    }
    if !errs.is_empty() {
        // Undo what this call took so a failed write leaks nothing.
        for n in taken {
            alloc.ports.remove(&n);
        }
        if let Some(ip) = taken_ip {
            alloc.ips.remove(&ip);
        }
        return errs;
    }
    // Release what the old object held and the new one no longer does.
    if old.is_some() {
        let now: BTreeSet<u16> = node_ports(obj).into_iter().collect();
        for n in old_ports.difference(&now) {
            alloc.ports.remove(n);
        }
        if let Some(ip) = old_ip
            && cluster_ip(obj) != Some(ip)
        {
            alloc.ips.remove(&ip);
        }
    }
    errs
}

/// Releases a deleted object's allocations.
pub(crate) fn release(res_is_service: bool, obj: &Value, alloc: &mut Alloc) {
    if !res_is_service {
        return;
    }
    if let Some(ip) = cluster_ip(obj) {
        alloc.ips.remove(&ip);
    }
    for n in node_ports(obj) {
        alloc.ports.remove(&n);
    }
}
