//! MetalLB's configuration kinds as Sluice custom resources in group `sluice.io`:
//! [`IPAddressPool`], [`BGPPeer`], [`BGPAdvertisement`], [`L2Advertisement`] and
//! [`Community`], with MetalLB's field names, versions (`v1beta1`; `v1beta2` for `BGPPeer`),
//! defaults and meanings, so that a MetalLB manifest applies with only its group changed (and
//! loads unchanged through [`manifest`](super::manifest)).
//!
//! Each spec refuses fields MetalLB does not have (`deny_unknown_fields`), and each kind has a
//! `validate` that checks what MetalLB's controller checks and returns the typed settings
//! ([`PeerSettings`], [`BgpAdvertisementSettings`], [`L2AdvertisementSettings`], community
//! aliases; pools become [`ipam::Pool`](super::ipam::Pool)). Every error is a [`FieldError`]
//! naming the field (`spec.addresses[1]`) and the reason.
//!
//! Guarantee: the CRDs [`crds`] returns are the ones checked in under `deploy/crds/` (see
//! `control/tests/k8s_crds.rs`); the status subresource is enabled on `IPAddressPool` only,
//! the one kind whose status Sluice writes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, CustomResourceExt};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::selector::{Selector, parse_selectors};
use crate::bgp::{BgpConfigError, PeerConfig, parse_community, parse_large_community};

/// Sluice's API group.
pub const GROUP: &str = "sluice.io";
/// MetalLB's API group, accepted in manifests.
pub const METALLB_GROUP: &str = "metallb.io";
/// The BGP port MetalLB defaults `peerPort` to.
pub const DEFAULT_PEER_PORT: u16 = 179;

/// A field that failed validation: its path (`spec.addresses[1]`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// Path from the object's root, in the API's field names (`spec.serviceAllocation.priority`).
    pub field: String,
    /// What is wrong, for a human.
    pub reason: String,
}

// === impl FieldError ===

impl FieldError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error with `prefix` put in front of its path (`spec` + `addresses[0]`).
    #[must_use]
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else if prefix.is_empty() || self.field.starts_with('[') {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

// ===== IPAddressPool =====

/// A pool of addresses LoadBalancer Services are given VIPs from (MetalLB `IPAddressPool`).
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    namespaced,
    status = "IPAddressPoolStatus",
    derive = "PartialEq",
    doc = "IPAddressPool represents a pool of IP addresses that can be allocated to LoadBalancer \
           services (MetalLB's IPAddressPool).",
    printcolumn = r#"{"name":"Auto Assign","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Avoid Buggy IPs","type":"boolean","jsonPath":".spec.avoidBuggyIPs"}"#,
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#
)]
#[serde(deny_unknown_fields)]
pub struct IPAddressPoolSpec {
    /// The address ranges of the pool. Each is a CIDR prefix (`192.168.10.0/24`,
    /// `fc00:f853:ccd:e799::/124`) or an explicit range (`192.168.9.1-192.168.9.5`); all share
    /// the pool's settings.
    pub addresses: Vec<String>,
    /// Whether addresses are handed out automatically. When false, only Services that ask for
    /// this pool (`metallb.io/address-pool`) or one of its addresses get one.
    #[serde(rename = "autoAssign", default = "default_true")]
    pub auto_assign: bool,
    /// Never hand out IPv4 addresses ending in .0 or .255 (some old consumer equipment drops
    /// traffic to them).
    #[serde(rename = "avoidBuggyIPs", default)]
    pub avoid_buggy_ips: bool,
    /// Restricts the pool to some namespaces and/or Services, with a priority among pools.
    #[serde(
        rename = "serviceAllocation",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_allocation: Option<ServiceAllocation>,
}

/// Which Services a pool serves (MetalLB `ServiceAllocation`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Priority among the pools that match a Service: the lowest number is tried first; a pool
    /// without a priority (or with 0) is tried after those with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Namespaces whose Services the pool serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Label selectors for namespaces whose Services the pool serves (an alternative to
    /// `namespaces`; a namespace matching either is served).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "label_selectors_schema")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Label selectors for the Services the pool serves (any one must match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "label_selectors_schema")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What Sluice reports about a pool (MetalLB's counters plus conditions).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
pub struct IPAddressPoolStatus {
    /// The number of assigned IPv4 addresses.
    #[serde(rename = "assignedIPv4")]
    pub assigned_ipv4: i64,
    /// The number of assigned IPv6 addresses.
    #[serde(rename = "assignedIPv6")]
    pub assigned_ipv6: i64,
    /// The number of available IPv4 addresses.
    #[serde(rename = "availableIPv4")]
    pub available_ipv4: i64,
    /// The number of available IPv6 addresses (saturating at 2^63-1 for large pools).
    #[serde(rename = "availableIPv6")]
    pub available_ipv6: i64,
    /// Conditions of the pool (for example whether it was accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

// ===== BGPPeer =====

/// A BGP neighbour the LB nodes peer with (MetalLB `BGPPeer`, version `v1beta2`).
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.io",
    version = "v1beta2",
    kind = "BGPPeer",
    namespaced,
    derive = "PartialEq",
    doc = "BGPPeer is a BGP neighbour of the load balancer nodes (MetalLB's BGPPeer).",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"ASN","type":"string","jsonPath":".spec.peerASN"}"#,
    printcolumn = r#"{"name":"BFD Profile","type":"string","jsonPath":".spec.bfdProfile"}"#,
    printcolumn = r#"{"name":"Multi Hops","type":"string","jsonPath":".spec.ebgpMultiHop"}"#
)]
#[serde(deny_unknown_fields)]
pub struct BGPPeerSpec {
    /// AS number of the local end of the session.
    #[serde(rename = "myASN")]
    pub my_asn: u32,
    /// AS number expected from the peer. Exactly one of `peerASN` and `dynamicASN` is set.
    #[serde(rename = "peerASN", default, skip_serializing_if = "Option::is_none")]
    pub peer_asn: Option<u32>,
    /// A different AS number to present to this peer (FRR's `local-as`).
    #[serde(rename = "localASN", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub local_asn: Option<u32>,
    /// Learn the peer's AS number: `internal` (must equal `myASN`) or `external` (must differ).
    #[serde(
        rename = "dynamicASN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dynamic_asn: Option<DynamicAsnMode>,
    /// Address to dial. Exactly one of `peerAddress` and `interface` is set.
    #[serde(
        rename = "peerAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub peer_address: Option<String>,
    /// Node interface for an unnumbered BGP session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Source address of the session.
    #[serde(
        rename = "sourceAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub source_address: Option<String>,
    /// Port to dial. Default 179.
    #[serde(rename = "peerPort", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16384), extend("default" = 179))]
    pub peer_port: Option<u16>,
    /// Requested BGP hold time (RFC 4271), as a duration: `90s`, `1m30s`.
    #[serde(rename = "holdTime", default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    /// Requested BGP keepalive time, as a duration.
    #[serde(
        rename = "keepaliveTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub keepalive_time: Option<String>,
    /// How long to wait between connection attempts, 1 s to 65535 s in whole seconds.
    #[serde(
        rename = "connectTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_time: Option<String>,
    /// BGP router ID to advertise to the peer. Default: the node's IPv4 address.
    #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// Only peer from nodes matching one of these selectors. Default: every node.
    #[serde(
        rename = "nodeSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "label_selectors_schema")]
    pub node_selectors: Vec<LabelSelector>,
    /// TCP MD5 password (RFC 2385). Mutually exclusive with `passwordSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A `kubernetes.io/basic-auth` Secret whose key `password` holds the TCP MD5 password.
    #[serde(
        rename = "passwordSecret",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "secret_reference_schema")]
    pub password_secret: Option<SecretReference>,
    /// The BFDProfile to run BFD with on this session (not supported by Sluice: ignored).
    #[serde(
        rename = "bfdProfile",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bfd_profile: Option<String>,
    /// Enable BGP graceful restart (not supported by Sluice: ignored).
    #[serde(rename = "enableGracefulRestart", default)]
    pub enable_graceful_restart: bool,
    /// The peer is several hops away.
    #[serde(rename = "ebgpMultiHop", default)]
    pub ebgp_multi_hop: bool,
    /// Host VRF to peer from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    /// Deprecated by `dualStackAddressFamily`: one session per address family.
    #[serde(rename = "disableMP", default)]
    pub disable_mp: bool,
    /// Exchange both address families over this session.
    #[serde(rename = "dualStackAddressFamily", default)]
    pub dual_stack_address_family: bool,
}

/// `BGPPeer.spec.dynamicASN`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DynamicAsnMode {
    /// The peer must be in `myASN` (iBGP).
    Internal,
    /// The peer must not be in `myASN` (eBGP).
    External,
}

// ===== BGPAdvertisement =====

/// How the VIPs of some pools are announced over BGP (MetalLB `BGPAdvertisement`).
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    namespaced,
    derive = "PartialEq",
    doc = "BGPAdvertisement announces the IPs of the selected IPAddressPools over BGP \
           (MetalLB's BGPAdvertisement).",
    printcolumn = r#"{"name":"IPAddressPools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"IPAddressPool Selectors","type":"string","jsonPath":".spec.ipAddressPoolSelectors"}"#,
    printcolumn = r#"{"name":"Peers","type":"string","jsonPath":".spec.peers"}"#,
    printcolumn = r#"{"name":"Node Selectors","type":"string","jsonPath":".spec.nodeSelectors","priority":10}"#
)]
#[serde(deny_unknown_fields)]
pub struct BGPAdvertisementSpec {
    /// IPv4 prefix length announced (roll /32s up into a larger prefix). Default 32.
    #[serde(
        rename = "aggregationLength",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1), extend("default" = 32))]
    pub aggregation_length: Option<i32>,
    /// IPv6 prefix length announced. Default 128.
    #[serde(
        rename = "aggregationLengthV6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("default" = 128))]
    pub aggregation_length_v6: Option<i32>,
    /// BGP LOCAL_PREF (sent to iBGP peers only). 0 or absent: none.
    #[serde(rename = "localPref", default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Communities: `1234:1234`, `large:1234:1234:1234`, a well-known name (`no-export`,
    /// `no-advertise`, `no-export-subconfed`, `no-peer`) or the name of a Community alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// Pools whose VIPs are announced, by name.
    #[serde(
        rename = "ipAddressPools",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pools: Vec<String>,
    /// Pools whose VIPs are announced, by label. With neither this nor `ipAddressPools`, all
    /// pools are.
    #[serde(
        rename = "ipAddressPoolSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "label_selectors_schema")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Only nodes matching one of these announce. Default: every node.
    #[serde(
        rename = "nodeSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "label_selectors_schema")]
    pub node_selectors: Vec<LabelSelector>,
    /// Only these BGPPeers (by name) receive the announcement. Default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Only Services matching one of these are announced. Mutually exclusive with a non-default
    /// aggregation length.
    #[serde(
        rename = "serviceSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "label_selectors_schema")]
    pub service_selectors: Vec<LabelSelector>,
}

// ===== L2Advertisement =====

/// How the VIPs of some pools are announced on the local link (MetalLB `L2Advertisement`).
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    namespaced,
    derive = "PartialEq",
    doc = "L2Advertisement announces the IPs of the selected IPAddressPools with ARP/NDP \
           (MetalLB's L2Advertisement).",
    printcolumn = r#"{"name":"IPAddressPools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"IPAddressPool Selectors","type":"string","jsonPath":".spec.ipAddressPoolSelectors"}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces"}"#,
    printcolumn = r#"{"name":"Node Selectors","type":"string","jsonPath":".spec.nodeSelectors","priority":10}"#
)]
#[serde(deny_unknown_fields)]
pub struct L2AdvertisementSpec {
    /// Pools whose VIPs are announced, by name.
    #[serde(
        rename = "ipAddressPools",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pools: Vec<String>,
    /// Pools whose VIPs are announced, by label. With neither this nor `ipAddressPools`, all
    /// pools are.
    #[serde(
        rename = "ipAddressPoolSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "label_selectors_schema")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Only nodes matching one of these announce. Default: every node.
    #[serde(
        rename = "nodeSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "label_selectors_schema")]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce from. Default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Only Services matching one of these are announced.
    #[serde(
        rename = "serviceSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "label_selectors_schema")]
    pub service_selectors: Vec<LabelSelector>,
    /// Soft preferences for the announcing node, weighted 1-100.
    #[serde(
        rename = "preferredNodeSelectors",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

/// A weighted node preference (MetalLB `PreferredNodeSelector`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferredNodeSelector {
    /// Weight, 1-100, added to the score of every node the preference matches.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    /// The nodes that receive the weight (empty: every node).
    #[schemars(schema_with = "label_selector_schema")]
    pub preference: LabelSelector,
}

// ===== Community =====

/// Named BGP community values (MetalLB `Community`).
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "sluice.io",
    version = "v1beta1",
    kind = "Community",
    plural = "communities",
    namespaced,
    derive = "PartialEq",
    doc = "Community is a collection of aliases for BGP communities (MetalLB's Community)."
)]
#[serde(deny_unknown_fields)]
pub struct CommunitySpec {
    /// The aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<CommunityAlias>,
}

/// One alias (MetalLB `CommunityAlias`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommunityAlias {
    /// The alias.
    #[serde(default)]
    pub name: String,
    /// `1234:1234` or `large:1234:1234:1234`.
    #[serde(default)]
    pub value: String,
}

// ===== The CRDs =====

/// The CustomResourceDefinitions of every kind, with the file name each is checked in under in
/// `deploy/crds/` (`sluice.io_ipaddresspools.yaml`, MetalLB's naming).
///
/// They are `<T as CustomResourceExt>::crd()` with one change: `spec` is optional on the kinds
/// where MetalLB's is (all but `IPAddressPool`), so that MetalLB's `spec`-less manifests
/// (an `L2Advertisement` that advertises every pool) apply.
#[must_use]
pub fn crds() -> Vec<(String, CustomResourceDefinition)> {
    let mut out = vec![
        IPAddressPool::crd(),
        BGPPeer::crd(),
        BGPAdvertisement::crd(),
        L2Advertisement::crd(),
        Community::crd(),
    ];
    for crd in out.iter_mut().skip(1) {
        for v in &mut crd.spec.versions {
            let root = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut());
            if let Some(root) = root
                && let Some(req) = root.required.as_mut()
            {
                req.retain(|f| f != "spec");
                if req.is_empty() {
                    root.required = None;
                }
            }
        }
    }
    out.into_iter()
        .map(|crd| {
            let file = format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
            (file, crd)
        })
        .collect()
}

fn default_true() -> bool {
    true
}

/// `metav1.LabelSelector`, as MetalLB's CRDs spell it (k8s-openapi's own `JsonSchema` needs a
/// feature this crate does not enable).
fn label_selector_json() -> serde_json::Value {
    serde_json::json!({
        "description": "A label selector: matchLabels and matchExpressions are ANDed; an empty \
                        selector matches everything.",
        "type": "object",
        "properties": {
            "matchExpressions": {
                "description": "A list of label selector requirements, ANDed.",
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "key": {"description": "The label key.", "type": "string"},
                        "operator": {
                            "description": "In, NotIn, Exists or DoesNotExist.",
                            "type": "string"
                        },
                        "values": {
                            "description": "Values for In and NotIn (non-empty); empty for \
                                            Exists and DoesNotExist.",
                            "type": "array",
                            "items": {"type": "string"},
                            "x-kubernetes-list-type": "atomic"
                        }
                    },
                    "required": ["key", "operator"]
                },
                "x-kubernetes-list-type": "atomic"
            },
            "matchLabels": {
                "description": "Labels that must all be present with these values.",
                "type": "object",
                "additionalProperties": {"type": "string"}
            }
        },
        "x-kubernetes-map-type": "atomic"
    })
}

fn label_selector_schema(_: &mut SchemaGenerator) -> Schema {
    Schema::try_from(label_selector_json()).unwrap_or_default()
}

fn label_selectors_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "array",
        "items": (label_selector_json())
    })
}

fn secret_reference_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "description": "A Secret by name and namespace.",
        "type": "object",
        "properties": {
            "name": {"description": "The Secret's name.", "type": "string"},
            "namespace": {"description": "The Secret's namespace.", "type": "string"}
        },
        "x-kubernetes-map-type": "atomic"
    })
}

fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "description": "One aspect of the pool's state (metav1.Condition).",
            "type": "object",
            "properties": {
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "message": {"type": "string"},
                "observedGeneration": {"type": "integer", "format": "int64"},
                "reason": {"type": "string"},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "type": {"type": "string"}
            },
            "required": ["lastTransitionTime", "message", "reason", "status", "type"]
        },
        "x-kubernetes-list-map-keys": ["type"],
        "x-kubernetes-list-type": "map"
    })
}

// ===== Values: durations and communities =====

/// Parses a duration as MetalLB writes them (Go's `time.ParseDuration`, the
/// `metav1.Duration` format): `90s`, `1m30s`, `9m0s`, `1.5h`, `300ms`, `0`; units `ns`, `us`
/// (`µs`), `ms`, `s`, `m`, `h`.
///
/// # Errors
/// A malformed or negative duration, or one beyond Go's range (about 292 years).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like \"90s\", \"1m30s\" or \"1.5h\"");
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(format!("{s:?} is negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    // Go's limit: an int64 of nanoseconds.
    const MAX_NANOS: u128 = 9_223_372_036_854_775_807;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("{s:?} is missing a unit (ns, us, ms, s, m, h)")),
            _ => return Err(format!("{s:?} has an unknown unit {unit:?}")),
        };
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| format!("{s:?} is out of range"))?
        };
        // Like Go, digits past what fits are ignored; 30 of them are far below u128's limit.
        let frac_digits = frac_part.get(..frac_part.len().min(30)).unwrap_or_default();
        let frac = if frac_digits.is_empty() {
            0
        } else {
            let f: u128 = frac_digits.parse().map_err(|_| bad())?;
            let scale = 10u128.pow(u32::try_from(frac_digits.len()).unwrap_or(30));
            f.saturating_mul(unit_nanos) / scale
        };
        total = int
            .checked_mul(unit_nanos)
            .and_then(|v| v.checked_add(frac))
            .and_then(|v| v.checked_add(total))
            .filter(|v| *v <= MAX_NANOS)
            .ok_or_else(|| format!("{s:?} is out of range"))?;
        rest = next;
    }
    let nanos = u64::try_from(total).map_err(|_| format!("{s:?} is out of range"))?;
    Ok(Duration::from_nanos(nanos))
}

/// A BGP community value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommunityValue {
    /// RFC 1997 `ASN:VALUE`, as `ASN << 16 | VALUE`.
    Standard(u32),
    /// RFC 8092 `GLOBAL:LOCAL1:LOCAL2`.
    Large(u32, u32, u32),
}

impl fmt::Display for CommunityValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommunityValue::Standard(v) => write!(f, "{}:{}", v >> 16, v & 0xffff),
            CommunityValue::Large(a, b, c) => write!(f, "large:{a}:{b}:{c}"),
        }
    }
}

/// The RFC 1997 well-known communities by the names the static config accepts.
const WELL_KNOWN_COMMUNITIES: [(&str, u32); 4] = [
    ("no-export", 0xFFFF_FF01),
    ("no-advertise", 0xFFFF_FF02),
    ("no-export-subconfed", 0xFFFF_FF03),
    ("no-peer", 0xFFFF_FF04),
];

/// Parses a literal community: `A:B`, `large:A:B:C`, or a well-known name (`no-export`,
/// `no-advertise`, `no-export-subconfed`, `no-peer`). The numbers are parsed by
/// [`parse_community`] and [`parse_large_community`], the BGP speaker's own parsers.
///
/// # Errors
/// Anything else, with the reason.
pub fn parse_community_value(s: &str) -> Result<CommunityValue, String> {
    if let Some((_, v)) = WELL_KNOWN_COMMUNITIES.iter().find(|(n, _)| *n == s) {
        return Ok(CommunityValue::Standard(*v));
    }
    if let Some(l) = s.strip_prefix("large:") {
        return parse_large_community(l)
            .map(|(a, b, c)| CommunityValue::Large(a, b, c))
            .map_err(|_| {
                format!("{s:?} is not a large community large:A:B:C (each 0-4294967295)")
            });
    }
    parse_community(s)
        .map(CommunityValue::Standard)
        .map_err(|_| format!("{s:?} is not a community A:B (each 0-65535) or large:A:B:C"))
}

/// Whether `s` is written as a literal community (so it cannot be an alias name): MetalLB's
/// rule is two `:`-separated fields, or four starting with `large`.
fn looks_literal(s: &str) -> bool {
    let n = s.split(':').count();
    n == 2 || (n == 4 && s.starts_with("large:"))
}

/// Resolves one `BGPAdvertisement` community: an alias from `aliases` first (as MetalLB
/// does), then a literal or well-known value.
///
/// # Errors
/// Neither an alias nor a valid literal.
pub fn resolve_community(
    s: &str,
    aliases: &BTreeMap<String, CommunityValue>,
) -> Result<CommunityValue, String> {
    if let Some(v) = aliases.get(s) {
        return Ok(*v);
    }
    if looks_literal(s) || WELL_KNOWN_COMMUNITIES.iter().any(|(n, _)| *n == s) {
        return parse_community_value(s);
    }
    Err(format!(
        "{s:?} is neither a community value nor the name of a Community alias"
    ))
}

/// Merges the aliases of several `Community` objects, refusing a name defined twice (as
/// MetalLB does).
///
/// # Errors
/// An invalid alias or a duplicate name, at `<namespace>/<name>: spec.communities[i]`.
pub fn community_aliases(
    communities: &[Community],
) -> Result<BTreeMap<String, CommunityValue>, FieldError> {
    let mut out = BTreeMap::new();
    for c in communities {
        let who = object_name(&c.metadata);
        for (name, value) in c.validate().map_err(|e| e.under(&who))? {
            if out.insert(name.clone(), value).is_some() {
                return Err(FieldError::new(
                    format!("{who}: spec.communities"),
                    format!("alias {name:?} is defined twice"),
                ));
            }
        }
    }
    Ok(out)
}

fn object_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    match (&meta.namespace, &meta.name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.clone(),
        _ => String::from("<unnamed>"),
    }
}

/// `metadata.name`, required.
fn name_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<String, FieldError> {
    match meta.name.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_owned()),
        _ => Err(FieldError::new("metadata.name", "required")),
    }
}

fn no_duplicates(list: &[String], field: &str) -> Result<(), FieldError> {
    let mut seen = BTreeSet::new();
    for (i, s) in list.iter().enumerate() {
        if s.is_empty() {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                "must not be empty",
            ));
        }
        if !seen.insert(s.as_str()) {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!("{s:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// `""` is how Go writes "unset" for these optional strings.
fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

// ===== Validated settings =====

// === impl Community ===

impl Community {
    /// Checks the aliases: names non-empty and unique, values literal communities.
    ///
    /// # Errors
    /// The first bad alias.
    pub fn validate(&self) -> Result<BTreeMap<String, CommunityValue>, FieldError> {
        let mut out = BTreeMap::new();
        for (i, a) in self.spec.communities.iter().enumerate() {
            let f = format!("spec.communities[{i}]");
            if a.name.is_empty() {
                return Err(FieldError::new(format!("{f}.name"), "required"));
            }
            let v = parse_community_value(&a.value)
                .map_err(|r| FieldError::new(format!("{f}.value"), r))?;
            if out.insert(a.name.clone(), v).is_some() {
                return Err(FieldError::new(
                    format!("{f}.name"),
                    format!("alias {:?} is defined twice", a.name),
                ));
            }
        }
        Ok(out)
    }
}

/// The peer's AS number as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAsn {
    /// `peerASN`.
    Fixed(u32),
    /// `dynamicASN`.
    Dynamic(DynamicAsnMode),
}

/// Where the peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEndpoint {
    /// `peerAddress`.
    Address(IpAddr),
    /// `interface` (unnumbered BGP).
    Interface(String),
}

/// Where the TCP MD5 password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PeerPassword {
    /// No password.
    None,
    /// `password`.
    Inline(String),
    /// `passwordSecret`: the Secret's `password` key (namespace: the BGPPeer's when unset).
    Secret {
        /// Secret name.
        name: String,
        /// Secret namespace.
        namespace: Option<String>,
    },
}

impl fmt::Debug for PeerPassword {
    // By hand so that a password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerPassword::None => f.write_str("None"),
            PeerPassword::Inline(_) => f.write_str("Inline(<redacted>)"),
            PeerPassword::Secret { name, namespace } => f
                .debug_struct("Secret")
                .field("name", name)
                .field("namespace", namespace)
                .finish(),
        }
    }
}

/// A validated `BGPPeer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// `metadata.name`.
    pub name: String,
    /// `myASN`.
    pub my_asn: u32,
    /// `peerASN` or `dynamicASN`.
    pub peer_asn: PeerAsn,
    /// `localASN`.
    pub local_asn: Option<u32>,
    /// `peerAddress` or `interface`.
    pub endpoint: PeerEndpoint,
    /// `sourceAddress`.
    pub source_address: Option<IpAddr>,
    /// `peerPort` (default 179).
    pub port: u16,
    /// Hold time: `holdTime`, else 3 × `keepaliveTime`, else unset (the speaker's default).
    pub hold_time: Option<Duration>,
    /// Keepalive: `keepaliveTime`, else `holdTime` / 3, else unset.
    pub keepalive_time: Option<Duration>,
    /// `connectTime`.
    pub connect_time: Option<Duration>,
    /// `routerID`.
    pub router_id: Option<Ipv4Addr>,
    /// `nodeSelectors` (empty: every node).
    pub node_selectors: Vec<Selector>,
    /// `password` / `passwordSecret`.
    pub password: PeerPassword,
    /// `bfdProfile`.
    pub bfd_profile: Option<String>,
    /// `enableGracefulRestart`.
    pub enable_graceful_restart: bool,
    /// `ebgpMultiHop`.
    pub ebgp_multi_hop: bool,
    /// `vrf`.
    pub vrf: Option<String>,
    /// `disableMP`.
    pub disable_mp: bool,
    /// `dualStackAddressFamily`.
    pub dual_stack_address_family: bool,
}

// === impl BGPPeer ===

impl BGPPeer {
    /// Checks the peer as MetalLB's controller does: `myASN` set; exactly one of `peerASN`
    /// and `dynamicASN`; no `ebgpMultiHop` on an iBGP session; exactly one of `peerAddress`
    /// and `interface`; addresses and router id parse; hold time 0 or at least 3 s and not
    /// below the keepalive; `connectTime` 1-65535 whole seconds; not both `password` and
    /// `passwordSecret`; valid node selectors.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self) -> Result<PeerSettings, FieldError> {
        let name = name_of(&self.metadata)?;
        let s = &self.spec;
        if s.my_asn == 0 {
            return Err(FieldError::new("spec.myASN", "must be 1-4294967295"));
        }
        let peer_asn = match (s.peer_asn.filter(|a| *a != 0), s.dynamic_asn) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "spec.dynamicASN",
                    "peerASN and dynamicASN are mutually exclusive",
                ));
            }
            (None, None) => {
                return Err(FieldError::new(
                    "spec.peerASN",
                    "required (1-4294967295) unless dynamicASN is set",
                ));
            }
            (Some(a), None) => PeerAsn::Fixed(a),
            (None, Some(m)) => PeerAsn::Dynamic(m),
        };
        if s.ebgp_multi_hop && peer_asn == PeerAsn::Fixed(s.my_asn) {
            return Err(FieldError::new(
                "spec.ebgpMultiHop",
                "must not be set on an iBGP peer (peerASN equals myASN)",
            ));
        }
        let endpoint = match (non_empty(&s.peer_address), non_empty(&s.interface)) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "spec.interface",
                    "peerAddress and interface are mutually exclusive",
                ));
            }
            (None, None) => {
                return Err(FieldError::new(
                    "spec.peerAddress",
                    "required unless interface is set",
                ));
            }
            (Some(a), None) => PeerEndpoint::Address(a.trim().parse().map_err(|_| {
                FieldError::new("spec.peerAddress", format!("{a:?} is not an IP address"))
            })?),
            (None, Some(i)) => PeerEndpoint::Interface(i.to_owned()),
        };
        let source_address = non_empty(&s.source_address)
            .map(|a| {
                a.trim().parse::<IpAddr>().map_err(|_| {
                    FieldError::new("spec.sourceAddress", format!("{a:?} is not an IP address"))
                })
            })
            .transpose()?;
        let router_id = non_empty(&s.router_id)
            .map(|a| {
                a.trim().parse::<Ipv4Addr>().map_err(|_| {
                    FieldError::new("spec.routerID", format!("{a:?} is not an IPv4 address"))
                })
            })
            .transpose()?;
        let dur = |v: &Option<String>, field: &str| {
            non_empty(v)
                .map(|d| parse_duration(d).map_err(|r| FieldError::new(field, r)))
                .transpose()
        };
        let hold = dur(&s.hold_time, "spec.holdTime")?;
        let keepalive = dur(&s.keepalive_time, "spec.keepaliveTime")?;
        let (hold_time, keepalive_time) = match (hold, keepalive) {
            (None, None) => (None, None),
            (Some(h), None) => (Some(h), Some(h / 3)),
            (None, Some(k)) => (Some(k.saturating_mul(3)), Some(k)),
            (Some(h), Some(k)) => (Some(h), Some(k)),
        };
        if let (Some(h), Some(k)) = (hold_time, keepalive_time) {
            let whole = Duration::from_secs(h.as_secs());
            if whole != Duration::ZERO && whole < Duration::from_secs(3) {
                return Err(FieldError::new(
                    if hold.is_some() {
                        "spec.holdTime"
                    } else {
                        "spec.keepaliveTime"
                    },
                    format!("hold time {h:?} must be 0 or at least 3s"),
                ));
            }
            if k > h {
                return Err(FieldError::new(
                    "spec.keepaliveTime",
                    format!("{k:?} must not exceed the hold time {h:?}"),
                ));
            }
        }
        let connect_time = dur(&s.connect_time, "spec.connectTime")?;
        if let Some(c) = connect_time
            && (c < Duration::from_secs(1)
                || c > Duration::from_secs(65_535)
                || c.subsec_nanos() != 0)
        {
            return Err(FieldError::new(
                "spec.connectTime",
                format!("{c:?} must be 1s to 65535s in whole seconds"),
            ));
        }
        let secret = s
            .password_secret
            .as_ref()
            .and_then(|r| non_empty(&r.name).map(|n| (n.to_owned(), r.namespace.clone())));
        let password = match (non_empty(&s.password), secret) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "spec.passwordSecret",
                    "password and passwordSecret are mutually exclusive",
                ));
            }
            (Some(p), None) => PeerPassword::Inline(p.to_owned()),
            (None, Some((name, namespace))) => PeerPassword::Secret { name, namespace },
            (None, None) => PeerPassword::None,
        };
        if s.local_asn == Some(0) {
            return Err(FieldError::new("spec.localASN", "must be 1-4294967295"));
        }
        let port = s.peer_port.unwrap_or(DEFAULT_PEER_PORT);
        if port == 0 {
            return Err(FieldError::new("spec.peerPort", "must be 1-16384"));
        }
        Ok(PeerSettings {
            name,
            my_asn: s.my_asn,
            peer_asn,
            local_asn: s.local_asn,
            endpoint,
            source_address,
            port,
            hold_time,
            keepalive_time,
            connect_time,
            router_id,
            node_selectors: parse_selectors(&s.node_selectors, "spec.nodeSelectors")?,
            password,
            bfd_profile: non_empty(&s.bfd_profile).map(str::to_owned),
            enable_graceful_restart: s.enable_graceful_restart,
            ebgp_multi_hop: s.ebgp_multi_hop,
            vrf: non_empty(&s.vrf).map(str::to_owned),
            disable_mp: s.disable_mp,
            dual_stack_address_family: s.dual_stack_address_family,
        })
    }
}

// === impl PeerSettings ===

impl PeerSettings {
    /// Whether a node with `labels` peers (no selectors: every node; else any one matches).
    #[must_use]
    pub fn applies_to_node(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selectors.is_empty() || self.node_selectors.iter().any(|s| s.matches(labels))
    }

    /// The BGP speaker's settings for this peer, plus a warning per configured feature that
    /// Sluice ignores (`bfdProfile`, `enableGracefulRestart`, `disableMP`,
    /// `dualStackAddressFamily`: the speaker always runs one multiprotocol session).
    ///
    /// `default_router_id` is the node's IPv4 address (used without `routerID`);
    /// `secret_password` is the `password` key of the `passwordSecret` Secret, which the caller
    /// reads.
    ///
    /// # Errors
    /// A feature the speaker cannot provide (`interface`, `dynamicASN`, `localASN`, `vrf`), no
    /// router id, a `passwordSecret` without `secret_password`, or a value the speaker refuses
    /// ([`PeerConfig::validate`]: e.g. a keepalive of 0 with a non-zero hold time, or a
    /// `connectTime` above 60 s).
    pub fn to_peer_config(
        &self,
        default_router_id: Option<Ipv4Addr>,
        secret_password: Option<&str>,
    ) -> Result<(PeerConfig, Vec<String>), FieldError> {
        let unsupported = |field: &str, what: &str| {
            FieldError::new(
                field,
                format!("{what} is not supported by Sluice's BGP speaker"),
            )
        };
        let peer_address = match &self.endpoint {
            PeerEndpoint::Address(a) => *a,
            PeerEndpoint::Interface(_) => {
                return Err(unsupported("spec.interface", "unnumbered BGP"));
            }
        };
        let peer_asn = match self.peer_asn {
            PeerAsn::Fixed(a) => a,
            PeerAsn::Dynamic(_) => return Err(unsupported("spec.dynamicASN", "a dynamic ASN")),
        };
        if self.local_asn.is_some() {
            return Err(unsupported("spec.localASN", "a per-peer local ASN"));
        }
        if self.vrf.is_some() {
            return Err(unsupported("spec.vrf", "peering from a VRF"));
        }
        let router_id = self.router_id.or(default_router_id).ok_or_else(|| {
            FieldError::new(
                "spec.routerID",
                "required when the node has no IPv4 address",
            )
        })?;
        let mut cfg = PeerConfig::new(self.my_asn, peer_asn, peer_address, router_id);
        cfg.source_address = self.source_address;
        cfg.peer_port = self.port;
        if let Some(h) = self.hold_time {
            // MetalLB rounds the hold time down to whole seconds.
            cfg.hold_time = Duration::from_secs(h.as_secs());
        }
        cfg.keepalive = self.keepalive_time;
        if let Some(c) = self.connect_time {
            cfg.connect_retry = c;
        }
        cfg.password = match &self.password {
            PeerPassword::None => None,
            PeerPassword::Inline(p) => Some(p.clone()),
            PeerPassword::Secret { name, .. } => match secret_password {
                Some(p) => Some(p.to_owned()),
                None => {
                    return Err(FieldError::new(
                        "spec.passwordSecret",
                        format!("the password of Secret {name:?} was not provided"),
                    ));
                }
            },
        };
        cfg.validate().map_err(|e| {
            let field = match &e {
                BgpConfigError::ReservedAsn { asn, .. } if *asn == self.my_asn => "spec.myASN",
                BgpConfigError::ReservedAsn { .. } => "spec.peerASN",
                BgpConfigError::BadHoldTime { .. } => "spec.holdTime",
                BgpConfigError::BadKeepalive { .. } => "spec.keepaliveTime",
                BgpConfigError::BadRouterId { .. } => "spec.routerID",
                BgpConfigError::BadPeerAddress(_) => "spec.peerAddress",
                BgpConfigError::SourceFamilyMismatch { .. } => "spec.sourceAddress",
                BgpConfigError::BadPort(_) => "spec.peerPort",
                BgpConfigError::BadConnectRetry { .. } => "spec.connectTime",
                BgpConfigError::BadPassword(_) => "spec.password",
                _ => "spec",
            };
            FieldError::new(field, e.to_string())
        })?;
        let mut warnings = Vec::new();
        let mut ignored = |on: bool, field: &str, what: &str| {
            if on {
                warnings.push(format!(
                    "spec.{field}: {what} is not supported by Sluice and is ignored"
                ));
            }
        };
        ignored(self.bfd_profile.is_some(), "bfdProfile", "BFD");
        ignored(
            self.enable_graceful_restart,
            "enableGracefulRestart",
            "graceful restart",
        );
        ignored(
            self.disable_mp,
            "disableMP",
            "one session per address family",
        );
        ignored(
            self.dual_stack_address_family,
            "dualStackAddressFamily",
            "this setting (sessions always carry both families)",
        );
        Ok((cfg, warnings))
    }
}

/// An advertisement's communities, resolved: RFC 1997 values (`ASN << 16 | VALUE`) and
/// RFC 8092 large communities, each sorted and deduplicated.
pub type ResolvedCommunities = (Vec<u32>, Vec<(u32, u32, u32)>);

/// A validated `BGPAdvertisement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpAdvertisementSettings {
    /// `metadata.name`.
    pub name: String,
    /// IPv4 prefix length announced (default 32).
    pub aggregation_length: u8,
    /// IPv6 prefix length announced (default 128).
    pub aggregation_length_v6: u8,
    /// LOCAL_PREF (`localPref`; 0 or absent: none).
    pub local_pref: Option<u32>,
    /// Community strings as written, checked to be literals or alias-shaped names; resolve
    /// them with [`BgpAdvertisementSettings::communities`].
    pub communities: Vec<String>,
    /// `ipAddressPools`.
    pub ip_address_pools: Vec<String>,
    /// `ipAddressPoolSelectors`.
    pub ip_address_pool_selectors: Vec<Selector>,
    /// `nodeSelectors`.
    pub node_selectors: Vec<Selector>,
    /// `peers`.
    pub peers: Vec<String>,
    /// `serviceSelectors`.
    pub service_selectors: Vec<Selector>,
}

// === impl BGPAdvertisement ===

impl BGPAdvertisement {
    /// Checks the advertisement as MetalLB does: aggregation lengths 1-32 and 0-128,
    /// `serviceSelectors` only with the default lengths, no duplicates in `ipAddressPools`,
    /// `communities`, `peers` or the selector lists, literal communities well-formed.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self) -> Result<BgpAdvertisementSettings, FieldError> {
        let name = name_of(&self.metadata)?;
        let s = &self.spec;
        let aggregation_length = match s.aggregation_length {
            None => 32,
            Some(l) => u8::try_from(l)
                .ok()
                .filter(|l| (1..=32).contains(l))
                .ok_or_else(|| FieldError::new("spec.aggregationLength", "must be 1-32"))?,
        };
        let aggregation_length_v6 = match s.aggregation_length_v6 {
            None => 128,
            Some(l) => u8::try_from(l)
                .ok()
                .filter(|l| *l <= 128)
                .ok_or_else(|| FieldError::new("spec.aggregationLengthV6", "must be 0-128"))?,
        };
        if !s.service_selectors.is_empty() {
            if aggregation_length != 32 {
                return Err(FieldError::new(
                    "spec.aggregationLength",
                    "must be 32 (the default) when serviceSelectors is set",
                ));
            }
            if aggregation_length_v6 != 128 {
                return Err(FieldError::new(
                    "spec.aggregationLengthV6",
                    "must be 128 (the default) when serviceSelectors is set",
                ));
            }
        }
        no_duplicates(&s.ip_address_pools, "spec.ipAddressPools")?;
        no_duplicates(&s.communities, "spec.communities")?;
        no_duplicates(&s.peers, "spec.peers")?;
        for (i, c) in s.communities.iter().enumerate() {
            if looks_literal(c) {
                parse_community_value(c)
                    .map_err(|r| FieldError::new(format!("spec.communities[{i}]"), r))?;
            }
        }
        Ok(BgpAdvertisementSettings {
            name,
            aggregation_length,
            aggregation_length_v6,
            local_pref: s.local_pref.filter(|p| *p != 0),
            communities: s.communities.clone(),
            ip_address_pools: s.ip_address_pools.clone(),
            ip_address_pool_selectors: parse_selectors(
                &s.ip_address_pool_selectors,
                "spec.ipAddressPoolSelectors",
            )?,
            node_selectors: parse_selectors(&s.node_selectors, "spec.nodeSelectors")?,
            peers: s.peers.clone(),
            service_selectors: parse_selectors(&s.service_selectors, "spec.serviceSelectors")?,
        })
    }
}

// === impl BgpAdvertisementSettings ===

impl BgpAdvertisementSettings {
    /// Whether the pool `name` with `labels` is announced: listed by name, or matched by a
    /// selector; with neither list set, every pool is.
    #[must_use]
    pub fn selects_pool(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        selects_pool(
            &self.ip_address_pools,
            &self.ip_address_pool_selectors,
            name,
            labels,
        )
    }

    /// Whether a node with `labels` announces (no selectors: every node).
    #[must_use]
    pub fn applies_to_node(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selectors.is_empty() || self.node_selectors.iter().any(|s| s.matches(labels))
    }

    /// Whether a Service with `labels` is announced (no selectors: every Service).
    #[must_use]
    pub fn selects_service(&self, labels: &BTreeMap<String, String>) -> bool {
        self.service_selectors.is_empty()
            || self.service_selectors.iter().any(|s| s.matches(labels))
    }

    /// Whether the BGPPeer `peer` receives the announcement (no `peers`: all).
    #[must_use]
    pub fn selects_peer(&self, peer: &str) -> bool {
        self.peers.is_empty() || self.peers.iter().any(|p| p == peer)
    }

    /// The communities, resolved against `aliases` (see [`community_aliases`]).
    ///
    /// # Errors
    /// A name that is no alias, at `spec.communities[i]`.
    pub fn communities(
        &self,
        aliases: &BTreeMap<String, CommunityValue>,
    ) -> Result<ResolvedCommunities, FieldError> {
        let mut standard = BTreeSet::new();
        let mut large = BTreeSet::new();
        for (i, c) in self.communities.iter().enumerate() {
            match resolve_community(c, aliases)
                .map_err(|r| FieldError::new(format!("spec.communities[{i}]"), r))?
            {
                CommunityValue::Standard(v) => {
                    standard.insert(v);
                }
                CommunityValue::Large(a, b, c) => {
                    large.insert((a, b, c));
                }
            }
        }
        Ok((standard.into_iter().collect(), large.into_iter().collect()))
    }

    /// MetalLB's per-pool check: an aggregation length may not be shorter than the widest
    /// prefix an address entry of the pool covers (a /24 pool cannot be announced as a /16),
    /// since the aggregate would cover addresses outside the pool.
    ///
    /// # Errors
    /// The offending length, naming the pool's block.
    pub fn check_pool(&self, pool: &super::ipam::Pool) -> Result<(), FieldError> {
        for (first, last) in &pool.blocks {
            let (len, field, limit) = match first {
                IpAddr::V4(_) => (self.aggregation_length, "spec.aggregationLength", 32),
                IpAddr::V6(_) => (self.aggregation_length_v6, "spec.aggregationLengthV6", 128),
            };
            let widest = super::ipam::widest_prefix(*first, *last).unwrap_or(limit);
            if len < widest {
                return Err(FieldError::new(
                    field,
                    format!(
                        "/{len} is shorter than the /{widest} in {first}-{last} of pool {:?}",
                        pool.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn selects_pool(
    names: &[String],
    selectors: &[Selector],
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    (names.is_empty() && selectors.is_empty())
        || names.iter().any(|n| n == name)
        || selectors.iter().any(|s| s.matches(labels))
}

/// A validated `L2Advertisement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L2AdvertisementSettings {
    /// `metadata.name`.
    pub name: String,
    /// `ipAddressPools`.
    pub ip_address_pools: Vec<String>,
    /// `ipAddressPoolSelectors`.
    pub ip_address_pool_selectors: Vec<Selector>,
    /// `nodeSelectors`.
    pub node_selectors: Vec<Selector>,
    /// `interfaces` (empty: all).
    pub interfaces: Vec<String>,
    /// `serviceSelectors`.
    pub service_selectors: Vec<Selector>,
    /// `preferredNodeSelectors`: weight (1-100) and selector.
    pub preferred_node_selectors: Vec<(u8, Selector)>,
}

// === impl L2Advertisement ===

impl L2Advertisement {
    /// Checks the advertisement: no duplicate pools, interfaces or selectors; preference
    /// weights 1-100.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self) -> Result<L2AdvertisementSettings, FieldError> {
        let name = name_of(&self.metadata)?;
        let s = &self.spec;
        no_duplicates(&s.ip_address_pools, "spec.ipAddressPools")?;
        no_duplicates(&s.interfaces, "spec.interfaces")?;
        let mut preferred = Vec::new();
        for (i, p) in s.preferred_node_selectors.iter().enumerate() {
            let f = format!("spec.preferredNodeSelectors[{i}]");
            let w = u8::try_from(p.weight)
                .ok()
                .filter(|w| (1..=100).contains(w))
                .ok_or_else(|| FieldError::new(format!("{f}.weight"), "must be 1-100"))?;
            let sel = Selector::try_from_label_selector(&p.preference)
                .map_err(|e| e.under(&format!("{f}.preference")))?;
            preferred.push((w, sel));
        }
        Ok(L2AdvertisementSettings {
            name,
            ip_address_pools: s.ip_address_pools.clone(),
            ip_address_pool_selectors: parse_selectors(
                &s.ip_address_pool_selectors,
                "spec.ipAddressPoolSelectors",
            )?,
            node_selectors: parse_selectors(&s.node_selectors, "spec.nodeSelectors")?,
            interfaces: s.interfaces.clone(),
            service_selectors: parse_selectors(&s.service_selectors, "spec.serviceSelectors")?,
            preferred_node_selectors: preferred,
        })
    }
}

// === impl L2AdvertisementSettings ===

impl L2AdvertisementSettings {
    /// Whether the pool `name` with `labels` is announced (as for BGP).
    #[must_use]
    pub fn selects_pool(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        selects_pool(
            &self.ip_address_pools,
            &self.ip_address_pool_selectors,
            name,
            labels,
        )
    }

    /// Whether a node with `labels` may announce (no selectors: every node).
    #[must_use]
    pub fn applies_to_node(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selectors.is_empty() || self.node_selectors.iter().any(|s| s.matches(labels))
    }

    /// Whether a Service with `labels` is announced (no selectors: every Service).
    #[must_use]
    pub fn selects_service(&self, labels: &BTreeMap<String, String>) -> bool {
        self.service_selectors.is_empty()
            || self.service_selectors.iter().any(|s| s.matches(labels))
    }

    /// A node's preference score: the sum of the weights of the preferences it matches.
    #[must_use]
    pub fn node_score(&self, labels: &BTreeMap<String, String>) -> u32 {
        self.preferred_node_selectors
            .iter()
            .filter(|(_, s)| s.matches(labels))
            .map(|(w, _)| u32::from(*w))
            .sum()
    }
}

// === impl IPAddressPool ===

impl IPAddressPool {
    /// Checks the pool and converts it for the allocator ([`ipam::Pool::from_crd`]).
    ///
    /// [`ipam::Pool::from_crd`]: super::ipam::Pool::from_crd
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self) -> Result<super::ipam::Pool, FieldError> {
        super::ipam::Pool::from_crd(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_metallb_writes_them() {
        let ok = [
            ("90s", Duration::from_secs(90)),
            ("1m30s", Duration::from_secs(90)),
            ("9m0s", Duration::from_secs(540)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("1.5h", Duration::from_secs(5400)),
            ("300ms", Duration::from_millis(300)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("2\u{b5}s", Duration::from_micros(2)),
            (".5s", Duration::from_millis(500)),
            ("+3s", Duration::from_secs(3)),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for s in ["", "90", "-1s", "1x", "s", ".s", "1.2.3s", "9999999999999h"] {
            assert!(parse_duration(s).is_err(), "{s:?} accepted");
        }
    }

    proptest::proptest! {
        /// Any h/m/s/ms combination parses to exactly its sum, in any unit order Go allows.
        #[test]
        fn durations_round_trip(h in 0u64..10_000, m in 0u64..100, s in 0u64..100, ms in 0u64..1000) {
            let want = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
            proptest::prop_assert_eq!(parse_duration(&format!("{h}h{m}m{s}s{ms}ms")), Ok(want));
            proptest::prop_assert_eq!(parse_duration(&format!("{ms}ms{s}s{m}m{h}h")), Ok(want));
        }

        /// Arbitrary text never panics the parsers.
        #[test]
        fn parsers_never_panic(text in "\\PC{0,24}") {
            let _ = parse_duration(&text);
            let _ = parse_community_value(&text);
            let _ = resolve_community(&text, &BTreeMap::new());
        }
    }

    #[test]
    fn communities_reuse_the_speaker_parsers() {
        assert_eq!(
            parse_community_value("65535:65282"),
            Ok(CommunityValue::Standard(0xffff_ff02))
        );
        assert_eq!(
            parse_community_value("large:1:2:3"),
            Ok(CommunityValue::Large(1, 2, 3))
        );
        assert_eq!(
            parse_community_value("no-export"),
            Ok(CommunityValue::Standard(0xffff_ff01))
        );
        for bad in ["65536:1", "1:2:3", "large:1:2", "x"] {
            assert!(parse_community_value(bad).is_err(), "{bad}");
        }
        let aliases = BTreeMap::from([("NO_ADVERTISE".to_owned(), CommunityValue::Standard(7))]);
        assert_eq!(
            resolve_community("NO_ADVERTISE", &aliases),
            Ok(CommunityValue::Standard(7))
        );
        assert!(resolve_community("vpn-only", &aliases).is_err());
        assert_eq!(
            CommunityValue::Standard(0xffff_ff02).to_string(),
            "65535:65282"
        );
    }

    fn peer(spec: BGPPeerSpec) -> BGPPeer {
        BGPPeer::new("p", spec)
    }

    fn base() -> BGPPeerSpec {
        BGPPeerSpec {
            my_asn: 64512,
            peer_asn: Some(64513),
            peer_address: Some("192.0.2.1".into()),
            ..BGPPeerSpec::default()
        }
    }

    #[test]
    fn peer_rules() {
        let p = peer(base()).validate().unwrap();
        assert_eq!(p.port, 179);
        assert_eq!(p.hold_time, None);
        let cases: Vec<(BGPPeerSpec, &str)> = vec![
            (
                BGPPeerSpec {
                    my_asn: 0,
                    ..base()
                },
                "spec.myASN",
            ),
            (
                BGPPeerSpec {
                    peer_asn: None,
                    ..base()
                },
                "spec.peerASN",
            ),
            (
                BGPPeerSpec {
                    dynamic_asn: Some(DynamicAsnMode::External),
                    ..base()
                },
                "spec.dynamicASN",
            ),
            (
                BGPPeerSpec {
                    interface: Some("eth0".into()),
                    ..base()
                },
                "spec.interface",
            ),
            (
                BGPPeerSpec {
                    peer_address: Some("10.0.0".into()),
                    ..base()
                },
                "spec.peerAddress",
            ),
            (
                BGPPeerSpec {
                    hold_time: Some("2s".into()),
                    ..base()
                },
                "spec.holdTime",
            ),
            (
                BGPPeerSpec {
                    hold_time: Some("30s".into()),
                    keepalive_time: Some("31s".into()),
                    ..base()
                },
                "spec.keepaliveTime",
            ),
            (
                BGPPeerSpec {
                    connect_time: Some("1.5s".into()),
                    ..base()
                },
                "spec.connectTime",
            ),
            (
                BGPPeerSpec {
                    router_id: Some("2001:db8::1".into()),
                    ..base()
                },
                "spec.routerID",
            ),
            (
                BGPPeerSpec {
                    peer_asn: Some(64512),
                    ebgp_multi_hop: true,
                    ..base()
                },
                "spec.ebgpMultiHop",
            ),
            (
                BGPPeerSpec {
                    password: Some("x".into()),
                    password_secret: Some(SecretReference {
                        name: Some("s".into()),
                        namespace: None,
                    }),
                    ..base()
                },
                "spec.passwordSecret",
            ),
        ];
        for (spec, field) in cases {
            let e = peer(spec).validate().unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        // Timers default from each other as in MetalLB.
        let p = peer(BGPPeerSpec {
            keepalive_time: Some("10s".into()),
            ..base()
        })
        .validate()
        .unwrap();
        assert_eq!(p.hold_time, Some(Duration::from_secs(30)));
        let p = peer(BGPPeerSpec {
            hold_time: Some("1m30s".into()),
            ..base()
        })
        .validate()
        .unwrap();
        assert_eq!(p.keepalive_time, Some(Duration::from_secs(30)));
    }

    #[test]
    fn peer_to_speaker_config() {
        let p = peer(BGPPeerSpec {
            hold_time: Some("90s".into()),
            bfd_profile: Some("fast".into()),
            password_secret: Some(SecretReference {
                name: Some("s".into()),
                namespace: None,
            }),
            ..base()
        })
        .validate()
        .unwrap();
        assert!(format!("{p:?}").contains("Secret"));
        let e = p.to_peer_config(None, Some("pw")).unwrap_err();
        assert_eq!(e.field, "spec.routerID");
        let e = p
            .to_peer_config(Some(Ipv4Addr::new(192, 0, 2, 9)), None)
            .unwrap_err();
        assert_eq!(e.field, "spec.passwordSecret");
        let (cfg, warnings) = p
            .to_peer_config(Some(Ipv4Addr::new(192, 0, 2, 9)), Some("pw"))
            .unwrap();
        assert_eq!(cfg.hold_time, Duration::from_secs(90));
        assert_eq!(cfg.keepalive, Some(Duration::from_secs(30)));
        assert_eq!(cfg.password.as_deref(), Some("pw"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let p = peer(BGPPeerSpec {
            vrf: Some("red".into()),
            ..base()
        })
        .validate()
        .unwrap();
        let e = p
            .to_peer_config(Some(Ipv4Addr::new(192, 0, 2, 9)), None)
            .unwrap_err();
        assert_eq!(e.field, "spec.vrf");
    }

    #[test]
    fn advertisement_rules() {
        let adv = |spec: BGPAdvertisementSpec| BGPAdvertisement::new("a", spec).validate();
        let a = adv(BGPAdvertisementSpec::default()).unwrap();
        assert_eq!((a.aggregation_length, a.aggregation_length_v6), (32, 128));
        assert!(a.selects_pool("any", &BTreeMap::new()));
        let e = adv(BGPAdvertisementSpec {
            aggregation_length: Some(33),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "spec.aggregationLength");
        let e = adv(BGPAdvertisementSpec {
            aggregation_length: Some(24),
            service_selectors: vec![LabelSelector::default()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "spec.aggregationLength");
        let e = adv(BGPAdvertisementSpec {
            communities: vec!["65536:1".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "spec.communities[0]");
        let e = adv(BGPAdvertisementSpec {
            peers: vec!["a".into(), "a".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "spec.peers[1]");
        let a = adv(BGPAdvertisementSpec {
            ip_address_pools: vec!["web".into()],
            communities: vec!["alias".into(), "1:2".into(), "large:1:2:3".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(a.selects_pool("web", &BTreeMap::new()));
        assert!(!a.selects_pool("other", &BTreeMap::new()));
        assert!(a.communities(&BTreeMap::new()).is_err());
        let aliases = BTreeMap::from([("alias".to_owned(), CommunityValue::Standard(5))]);
        assert_eq!(
            a.communities(&aliases).unwrap(),
            (vec![5, 0x0001_0002], vec![(1, 2, 3)])
        );
    }

    #[test]
    fn crds_have_metallb_shape() {
        let crds = crds();
        let names: Vec<&str> = crds.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            names,
            [
                "sluice.io_ipaddresspools.yaml",
                "sluice.io_bgppeers.yaml",
                "sluice.io_bgpadvertisements.yaml",
                "sluice.io_l2advertisements.yaml",
                "sluice.io_communities.yaml"
            ]
        );
        for (_, crd) in &crds {
            assert_eq!(crd.spec.scope, "Namespaced");
            let v = &crd.spec.versions[0];
            let status = v.subresources.as_ref().and_then(|s| s.status.as_ref());
            assert_eq!(
                status.is_some(),
                crd.spec.names.kind == "IPAddressPool",
                "{}",
                crd.spec.names.kind
            );
        }
    }
}
