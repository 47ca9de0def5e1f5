//! Address allocation for LoadBalancer Services, with MetalLB's semantics: pools
//! ([`Pool`], from `IPAddressPool`), one [`Request`] per Service (its annotations, ports and
//! IP families), and an [`Allocator`] that assigns, restores and releases addresses.
//!
//! Rules (MetalLB's unless noted):
//! - A Service that already holds a valid allocation keeps it ([`Allocator::assign`] is
//!   idempotent). It stops being valid when the Service asks for other addresses or another
//!   pool, when its pool no longer serves it, when its families changed, or when its sharing
//!   key or ports now clash with another Service on the same address; it is then allocated
//!   anew. A `PreferDualStack` Service holding one address gets the other family added from
//!   the same pool when that pool has one free.
//! - Requested addresses (`metallb.io/loadBalancerIPs`, `spec.loadBalancerIP`) must all lie in
//!   one pool, fit the Service's families, not be a buggy .0/.255 address of an
//!   `avoidBuggyIPs` pool, be in the requested pool if one is named, and be free or shareable.
//!   `autoAssign` does not matter for them.
//! - A requested pool (`metallb.io/address-pool`) is used whatever its `autoAssign`.
//! - Otherwise the candidate pools are, in order: the pools with a `serviceAllocation` that
//!   serves the Service and `autoAssign`, lowest `priority` first, those without a priority
//!   after (ties by name, where MetalLB picks at random); then the `autoAssign` pools without a
//!   `serviceAllocation`, by name (MetalLB: map order).
//! - A pool with a `serviceAllocation` serves a Service when its namespace is listed or
//!   matches a namespace selector (or neither is given), and when a service selector matches
//!   (or none is given).
//! - Within a pool, the lowest acceptable address of the first block (in `addresses` order)
//!   that has one is taken; acceptable is free, or held under the same sharing key with no
//!   (protocol, port) in common with any of its holders.
//! - Families: `SingleStack` takes one address of the first family; `RequireDualStack` takes
//!   one of each from the first pool that has both; `PreferDualStack` takes both from the
//!   first pool that has both, else one of the first family from the first pool with it, else
//!   one of the other. The primary family's address comes first (Kubernetes' order; MetalLB
//!   lists IPv4 first).
//! - Two Services hold one address only if both carry the same non-empty
//!   `metallb.io/allow-shared-ip` key and their (protocol, port) sets are disjoint. MetalLB's
//!   extra rule for `externalTrafficPolicy: Local` (identical pod selectors) is not applied:
//!   Sluice forwards each (VIP, port) to its own Service's endpoints, whichever node answers.
//!
//! Guarantee: the allocator is pure and deterministic (no I/O, no clock, no randomness), its
//! result does not depend on the order pools are given in, no address is ever held by two
//! Services unless the sharing rule allows it, and every held address lies in a pool of its
//! family. Finding an address costs O(log n) in the number of addresses in use.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::Service;

use super::crd::{FieldError, IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus};
use super::selector::{Selector, parse_selectors};

/// Requested addresses, comma-separated.
pub const ANNOTATION_LOAD_BALANCER_IPS: &str = "metallb.io/loadBalancerIPs";
/// Requested pool.
pub const ANNOTATION_ADDRESS_POOL: &str = "metallb.io/address-pool";
/// Sharing key.
pub const ANNOTATION_ALLOW_SHARED_IP: &str = "metallb.io/allow-shared-ip";
/// The pool an allocation came from, as MetalLB writes it back on the Service.
pub const ANNOTATION_IP_ALLOCATED_FROM_POOL: &str = "metallb.io/ip-allocated-from-pool";
/// MetalLB's old annotation prefix, still honoured when the `metallb.io/` one is absent.
const DEPRECATED_PREFIX: &str = "metallb.universe.tf/";

/// Why an address could not be allocated or kept. The messages are written for a Kubernetes
/// Event on the Service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// A requested (or restored) address is in no pool.
    #[error("no pool contains {0}")]
    NoPoolContains(IpAddr),
    /// A requested address is a .0/.255 address of a pool with `avoidBuggyIPs`.
    #[error("{address} ends in .0 or .255, which pool {pool:?} avoids (avoidBuggyIPs)")]
    BuggyAddress {
        /// The address.
        address: IpAddr,
        /// Its pool.
        pool: String,
    },
    /// Two requested addresses are in different pools.
    #[error("{a} (pool {pool_a:?}) and {b} (pool {pool_b:?}) are not in the same pool")]
    SplitPools {
        /// One address.
        a: IpAddr,
        /// Its pool.
        pool_a: String,
        /// The other.
        b: IpAddr,
        /// Its pool.
        pool_b: String,
    },
    /// A requested address is not in the requested pool.
    #[error("{address} is in pool {pool:?}, not in the requested pool {requested:?}")]
    NotRequestedPool {
        /// The address.
        address: IpAddr,
        /// Its pool.
        pool: String,
        /// The `metallb.io/address-pool` value.
        requested: String,
    },
    /// The requested pool does not exist.
    #[error("pool {0:?} does not exist")]
    UnknownPool(String),
    /// The pool's `serviceAllocation` does not include the Service.
    #[error("pool {pool:?} does not serve {service} (its serviceAllocation does not match)")]
    PoolNotAllowed {
        /// The pool.
        pool: String,
        /// The Service.
        service: ServiceKey,
    },
    /// The address is held by a Service that does not share it with this one.
    #[error("{address} is in use by {by} without a matching allow-shared-ip key")]
    InUse {
        /// The address.
        address: IpAddr,
        /// A Service holding it.
        by: ServiceKey,
    },
    /// The address is shared, but a port is taken.
    #[error("{address} is in use by {by} on {protocol}/{port}")]
    PortInUse {
        /// The address.
        address: IpAddr,
        /// The Service using the port.
        by: ServiceKey,
        /// The protocol.
        protocol: Protocol,
        /// The port.
        port: u16,
    },
    /// Every candidate pool is full (for this Service's families, ports and sharing key).
    #[error("{}", exhausted(.0))]
    Exhausted(Vec<String>),
    /// No candidate pool has addresses of the family the Service needs.
    #[error("no pool offers {family} addresses to {service}")]
    NoPoolForFamily {
        /// The family.
        family: Family,
        /// The Service.
        service: ServiceKey,
    },
    /// The Service requires dual stack and no candidate pool has both families.
    #[error("no pool offers both IPv4 and IPv6 addresses to {0}")]
    NoDualStackPool(ServiceKey),
    /// No pool may allocate to the Service automatically.
    #[error(
        "no pool may allocate to {0}: no pool with autoAssign matches its namespace and labels"
    )]
    NoEligiblePool(ServiceKey),
    /// Requested addresses do not fit the Service's IP families.
    #[error("{addresses} do not match the service's IP families ({families})")]
    FamilyMismatch {
        /// The addresses, comma-separated.
        addresses: String,
        /// What the Service wants.
        families: Families,
    },
    /// Requested addresses are malformed as a set (too many, one family twice).
    #[error("{0}")]
    BadAddresses(String),
    /// The addresses in the Service's status are not the ones it requests.
    #[error("the status addresses {held} differ from the requested {requested}")]
    StatusMismatch {
        /// The status addresses.
        held: String,
        /// The requested ones.
        requested: String,
    },
    /// A Service field or annotation is invalid ([`Request::from_service`]).
    #[error("{field}: {reason}")]
    InvalidService {
        /// The field (`metadata.annotations[metallb.io/loadBalancerIPs]`).
        field: String,
        /// Why.
        reason: String,
    },
    /// Two pools (or two blocks of one pool) overlap.
    #[error("pools {a:?} and {b:?} overlap ({range_a} and {range_b})")]
    OverlappingPools {
        /// One pool.
        a: String,
        /// Its block.
        range_a: String,
        /// The other pool (may be the same).
        b: String,
        /// Its block.
        range_b: String,
    },
    /// Two pools share a name.
    #[error("pool {0:?} is defined twice")]
    DuplicatePool(String),
    /// A pool built by hand is malformed.
    #[error("pool {pool:?}: {reason}")]
    BadPool {
        /// The pool.
        pool: String,
        /// Why.
        reason: String,
    },
}

fn exhausted(pools: &[String]) -> String {
    let names = pools
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if pools.len() == 1 {
        format!("pool {names} is exhausted")
    } else {
        format!("pools {names} are exhausted")
    }
}

fn join(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

// ===== Pools =====

/// An address pool, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The pool's name (`metadata.name`).
    pub name: String,
    /// Inclusive address ranges, each of one family with first ≤ last, not overlapping, in
    /// `spec.addresses` order.
    pub blocks: Vec<(IpAddr, IpAddr)>,
    /// `spec.autoAssign`.
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`.
    pub avoid_buggy_ips: bool,
    /// `spec.serviceAllocation`: `None` serves every Service but is tried after the pools that
    /// have one.
    pub scope: Option<PoolScope>,
}

/// Which Services a pool serves (`spec.serviceAllocation`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolScope {
    /// `priority` (0 and absent are both `None`: after the pools with one).
    pub priority: Option<u32>,
    /// `namespaces`.
    pub namespaces: BTreeSet<String>,
    /// `namespaceSelectors`.
    pub namespace_selectors: Vec<Selector>,
    /// `serviceSelectors`.
    pub service_selectors: Vec<Selector>,
}

// === impl Pool ===

impl Pool {
    /// A pool with MetalLB's defaults: `autoAssign`, no `avoidBuggyIPs`, no
    /// `serviceAllocation`.
    #[must_use]
    pub fn new(name: impl Into<String>, blocks: Vec<(IpAddr, IpAddr)>) -> Self {
        Pool {
            name: name.into(),
            blocks,
            auto_assign: true,
            avoid_buggy_ips: false,
            scope: None,
        }
    }

    /// Converts and validates an `IPAddressPool`.
    ///
    /// # Errors
    /// No name, no addresses, an address entry that is neither a CIDR nor a range, two
    /// overlapping entries, a namespace listed twice, or an invalid selector.
    pub fn from_crd(pool: &IPAddressPool) -> Result<Pool, FieldError> {
        let name = match pool.metadata.name.as_deref() {
            Some(n) if !n.is_empty() => n,
            _ => return Err(FieldError::new("metadata.name", "required")),
        };
        Pool::from_spec(name, &pool.spec)
    }

    /// Converts and validates the spec of pool `name`, as [`Pool::from_crd`].
    ///
    /// # Errors
    /// As [`Pool::from_crd`].
    pub fn from_spec(name: &str, spec: &IPAddressPoolSpec) -> Result<Pool, FieldError> {
        if spec.addresses.is_empty() {
            return Err(FieldError::new(
                "spec.addresses",
                "must list at least one CIDR or range",
            ));
        }
        let mut blocks = Vec::with_capacity(spec.addresses.len());
        for (i, a) in spec.addresses.iter().enumerate() {
            let b = parse_address_block(a)
                .map_err(|r| FieldError::new(format!("spec.addresses[{i}]"), r))?;
            if let Some(j) = blocks.iter().position(|o| overlaps(*o, b)) {
                return Err(FieldError::new(
                    format!("spec.addresses[{i}]"),
                    format!("{a:?} overlaps spec.addresses[{j}]"),
                ));
            }
            blocks.push(b);
        }
        let scope = match &spec.service_allocation {
            None => None,
            Some(sa) => {
                let mut namespaces = BTreeSet::new();
                for (i, ns) in sa.namespaces.iter().enumerate() {
                    if !namespaces.insert(ns.clone()) {
                        return Err(FieldError::new(
                            format!("spec.serviceAllocation.namespaces[{i}]"),
                            format!("{ns:?} is listed twice"),
                        ));
                    }
                }
                Some(PoolScope {
                    priority: sa.priority.filter(|p| *p != 0),
                    namespaces,
                    namespace_selectors: parse_selectors(
                        &sa.namespace_selectors,
                        "spec.serviceAllocation.namespaceSelectors",
                    )?,
                    service_selectors: parse_selectors(
                        &sa.service_selectors,
                        "spec.serviceAllocation.serviceSelectors",
                    )?,
                })
            }
        };
        Ok(Pool {
            name: name.to_owned(),
            blocks,
            auto_assign: spec.auto_assign,
            avoid_buggy_ips: spec.avoid_buggy_ips,
            scope,
        })
    }

    /// Whether the pool's `serviceAllocation` includes the Service of `req`.
    #[must_use]
    pub fn serves(&self, req: &Request) -> bool {
        let Some(scope) = &self.scope else {
            return true;
        };
        let ns_open = scope.namespaces.is_empty() && scope.namespace_selectors.is_empty();
        let ns_ok = ns_open
            || scope.namespaces.contains(&req.key.namespace)
            || scope
                .namespace_selectors
                .iter()
                .any(|s| s.matches(&req.namespace_labels));
        let svc_ok = scope.service_selectors.is_empty()
            || scope
                .service_selectors
                .iter()
                .any(|s| s.matches(&req.labels));
        ns_ok && svc_ok
    }

    /// Whether `ip` lies in one of the pool's blocks.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (f, v) = split(ip);
        self.blocks.iter().any(|(a, b)| {
            let (fa, a) = split(*a);
            let (_, b) = split(*b);
            fa == f && a <= v && v <= b
        })
    }

    /// Whether the pool has addresses of `family`.
    #[must_use]
    pub fn has_family(&self, family: Family) -> bool {
        self.blocks.iter().any(|(a, _)| Family::of(*a) == family)
    }

    /// How many addresses of each family the pool can hand out (IPv4, IPv6), after
    /// `avoidBuggyIPs`.
    #[must_use]
    pub fn capacity(&self) -> (u128, u128) {
        let mut v4 = 0u128;
        let mut v6 = 0u128;
        for (a, b) in &self.blocks {
            let (f, a) = split(*a);
            let (_, b) = split(*b);
            let n = (b - a).saturating_add(1);
            match f {
                Family::V4 if self.avoid_buggy_ips => v4 += n - buggy_in(a, b),
                Family::V4 => v4 += n,
                Family::V6 => v6 = v6.saturating_add(n),
            }
        }
        (v4, v6)
    }
}

/// Parses one `spec.addresses` entry: a CIDR (`192.168.10.0/24`; host bits are cleared, as
/// MetalLB's Go parser does) or a range `first-last` of one family.
///
/// # Errors
/// Anything else, with the reason.
pub fn parse_address_block(s: &str) -> Result<(IpAddr, IpAddr), String> {
    let t = s.trim();
    if let Some((a, b)) = t.split_once('-') {
        let first: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {:?} is not an IP address", a.trim()))?;
        let last: IpAddr = b
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {:?} is not an IP address", b.trim()))?;
        if first.is_ipv4() != last.is_ipv4() {
            return Err(format!("{s:?}: both ends must be of one family"));
        }
        if split(first).1 > split(last).1 {
            return Err(format!("{s:?}: the first address is above the last"));
        }
        return Ok((first, last));
    }
    if t.contains('/') {
        let net: ipnet::IpNet = t
            .parse()
            .map_err(|_| format!("{s:?} is not a valid CIDR"))?;
        return Ok((net.network(), net.broadcast()));
    }
    Err(format!(
        "{s:?} is neither a CIDR (10.0.0.0/24) nor a range (10.0.0.1-10.0.0.9); write one \
         address as 10.0.0.1/32"
    ))
}

/// The shortest prefix length among the CIDRs that exactly cover `first..=last` (MetalLB's
/// `lowestMask` of an address entry). `None` for a malformed block.
#[must_use]
pub fn widest_prefix(first: IpAddr, last: IpAddr) -> Option<u8> {
    let (f, mut x) = split(first);
    let (g, last) = split(last);
    if f != g || x > last {
        return None;
    }
    let width: u32 = match f {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let mut widest = width;
    loop {
        // The largest aligned block starting at x that stays within last.
        let align = if x == 0 {
            width
        } else {
            x.trailing_zeros().min(width)
        };
        let room = match (last - x).checked_add(1) {
            Some(n) => 127 - n.leading_zeros(),
            None => 128,
        };
        let k = align.min(room);
        widest = widest.min(width - k);
        match 1u128.checked_shl(k).and_then(|s| x.checked_add(s)) {
            Some(next) if next <= last && k < 128 => x = next,
            _ => break,
        }
    }
    u8::try_from(widest).ok()
}

fn overlaps(a: (IpAddr, IpAddr), b: (IpAddr, IpAddr)) -> bool {
    let (fa, a0) = split(a.0);
    let (_, a1) = split(a.1);
    let (fb, b0) = split(b.0);
    let (_, b1) = split(b.1);
    fa == fb && a0 <= b1 && b0 <= a1
}

/// How many IPv4 addresses in `a..=b` end in .0 or .255.
fn buggy_in(a: u128, b: u128) -> u128 {
    let upto = |n: u128| n / 256 + 1 + (n + 1) / 256;
    upto(b) - if a == 0 { 0 } else { upto(a - 1) }
}

fn is_buggy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

// ===== Requests =====

/// A Service's identity: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

// === impl ServiceKey ===

impl ServiceKey {
    /// `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

// === impl Family ===

impl Family {
    /// The family of `ip`.
    #[must_use]
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// The other family.
    #[must_use]
    pub fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }

    fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The families a Service wants, from `spec.ipFamilies` and `spec.ipFamilyPolicy`; each
/// variant carries the primary (first) family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Families {
    /// `SingleStack` (or a dual-stack policy on a single-family Service): one address.
    Single(Family),
    /// `PreferDualStack` with two families: both when a pool offers both, else one.
    PreferDual(Family),
    /// `RequireDualStack`: both, or an error.
    RequireDual(Family),
}

// === impl Families ===

impl Families {
    /// From `spec.ipFamilies` (`IPv4`/`IPv6`; empty: IPv4, as MetalLB prefers) and
    /// `spec.ipFamilyPolicy` (absent: `SingleStack`). `PreferDualStack` with a single family
    /// listed is single-stack, as on a single-stack cluster.
    ///
    /// # Errors
    /// An unknown family or policy.
    pub fn from_spec(ip_families: &[String], policy: Option<&str>) -> Result<Families, AllocError> {
        let mut fams = Vec::new();
        for (i, f) in ip_families.iter().enumerate() {
            fams.push(match f.as_str() {
                "IPv4" => Family::V4,
                "IPv6" => Family::V6,
                other => {
                    return Err(AllocError::InvalidService {
                        field: format!("spec.ipFamilies[{i}]"),
                        reason: format!("{other:?} is not IPv4 or IPv6"),
                    });
                }
            });
        }
        let primary = fams.first().copied().unwrap_or(Family::V4);
        Ok(match policy.unwrap_or("SingleStack") {
            "SingleStack" => Families::Single(primary),
            "PreferDualStack" if fams.len() == 1 => Families::Single(primary),
            "PreferDualStack" => Families::PreferDual(primary),
            "RequireDualStack" => Families::RequireDual(primary),
            other => {
                return Err(AllocError::InvalidService {
                    field: "spec.ipFamilyPolicy".into(),
                    reason: format!(
                        "{other:?} is not SingleStack, PreferDualStack or RequireDualStack"
                    ),
                });
            }
        })
    }

    /// The first family.
    #[must_use]
    pub fn primary(self) -> Family {
        match self {
            Families::Single(f) | Families::PreferDual(f) | Families::RequireDual(f) => f,
        }
    }

    /// Whether `addrs` (one or two, of distinct families) satisfy these families.
    fn accepts(self, addrs: &[IpAddr]) -> bool {
        match (self, addrs) {
            (Families::Single(f), [a]) => Family::of(*a) == f,
            (Families::RequireDual(_), [_, _]) | (Families::PreferDual(_), [_] | [_, _]) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Families {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Families::Single(x) => write!(f, "{x} single-stack"),
            Families::PreferDual(x) => write!(f, "PreferDualStack, {x} first"),
            Families::RequireDual(x) => write!(f, "RequireDualStack, {x} first"),
        }
    }
}

/// A Service port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// What one Service asks of the allocator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The Service.
    pub key: ServiceKey,
    /// Its labels (for pools' `serviceSelectors`).
    pub labels: BTreeMap<String, String>,
    /// Its namespace's labels (for pools' `namespaceSelectors`).
    pub namespace_labels: BTreeMap<String, String>,
    /// Requested addresses (`metallb.io/loadBalancerIPs` or `spec.loadBalancerIP`); empty:
    /// any.
    pub addresses: Vec<IpAddr>,
    /// Requested pool (`metallb.io/address-pool`).
    pub pool: Option<String>,
    /// Sharing key (`metallb.io/allow-shared-ip`); `None` shares with nobody.
    pub sharing_key: Option<String>,
    /// The Service's (protocol, port) pairs.
    pub ports: Vec<(Protocol, u16)>,
    /// The IP families it wants.
    pub families: Families,
}

// === impl Request ===

impl Request {
    /// A request for `key` with nothing asked for: IPv4 single-stack, no labels, no ports.
    #[must_use]
    pub fn new(key: ServiceKey) -> Self {
        Request {
            key,
            labels: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
            addresses: Vec::new(),
            pool: None,
            sharing_key: None,
            ports: Vec::new(),
            families: Families::Single(Family::V4),
        }
    }

    /// Reads a Service: annotations (`metallb.io/…`, else the deprecated
    /// `metallb.universe.tf/…`), `spec.loadBalancerIP`, `spec.ports`, `spec.ipFamilies`
    /// (else the families of `spec.clusterIPs`) and `spec.ipFamilyPolicy`.
    /// `namespace_labels` are the labels of the Service's namespace.
    ///
    /// # Errors
    /// [`AllocError::InvalidService`] for an address that does not parse, both the
    /// annotation and `spec.loadBalancerIP` set (MetalLB refuses that too), a port outside
    /// 1-65535, an unknown protocol, family or policy.
    pub fn from_service(
        svc: &Service,
        namespace_labels: &BTreeMap<String, String>,
    ) -> Result<Request, AllocError> {
        let bad = |field: &str, reason: String| AllocError::InvalidService {
            field: field.to_owned(),
            reason,
        };
        let meta = &svc.metadata;
        let name = meta
            .name
            .clone()
            .ok_or_else(|| bad("metadata.name", "required".into()))?;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let annotation = |key: &str| -> Option<(String, String)> {
            let anns = meta.annotations.as_ref()?;
            let suffix = key.strip_prefix("metallb.io/").unwrap_or(key);
            let deprecated = format!("{DEPRECATED_PREFIX}{suffix}");
            let (k, v) = anns
                .get_key_value(key)
                .or_else(|| anns.get_key_value(&deprecated))?;
            let v = v.trim();
            (!v.is_empty()).then(|| (format!("metadata.annotations[{k}]"), v.to_owned()))
        };
        let spec = svc.spec.clone().unwrap_or_default();
        let mut addresses = Vec::new();
        let lb_ip = spec
            .load_balancer_ip
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        if let Some((field, v)) = annotation(ANNOTATION_LOAD_BALANCER_IPS) {
            if lb_ip.is_some() {
                return Err(bad(
                    &field,
                    "a Service cannot set both this annotation and spec.loadBalancerIP".into(),
                ));
            }
            for part in v.split(',') {
                let p = part.trim();
                addresses.push(
                    p.parse()
                        .map_err(|_| bad(&field, format!("{p:?} is not an IP address")))?,
                );
            }
        } else if let Some(ip) = lb_ip {
            addresses.push(ip.parse().map_err(|_| {
                bad(
                    "spec.loadBalancerIP",
                    format!("{ip:?} is not an IP address"),
                )
            })?);
        }
        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let port = u16::try_from(p.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(&format!("spec.ports[{i}].port"), "must be 1-65535".into()))?;
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                "SCTP" => Protocol::Sctp,
                other => {
                    return Err(bad(
                        &format!("spec.ports[{i}].protocol"),
                        format!("{other:?} is not TCP, UDP or SCTP"),
                    ));
                }
            };
            ports.push((protocol, port));
        }
        let mut ip_families = spec.ip_families.clone().unwrap_or_default();
        if ip_families.is_empty() {
            // Older objects: infer from the cluster IPs, as MetalLB does.
            let cluster_ips = spec
                .cluster_ips
                .clone()
                .or_else(|| spec.cluster_ip.clone().map(|c| vec![c]))
                .unwrap_or_default();
            ip_families = cluster_ips
                .iter()
                .filter_map(|c| c.parse::<IpAddr>().ok())
                .map(|ip| Family::of(ip).to_string())
                .collect();
        }
        let families = Families::from_spec(&ip_families, spec.ip_family_policy.as_deref())?;
        Ok(Request {
            key: ServiceKey::new(namespace, name),
            labels: meta.labels.clone().unwrap_or_default(),
            namespace_labels: namespace_labels.clone(),
            addresses,
            pool: annotation(ANNOTATION_ADDRESS_POOL).map(|(_, v)| v),
            sharing_key: annotation(ANNOTATION_ALLOW_SHARED_IP).map(|(_, v)| v),
            ports,
            families,
        })
    }
}

/// What a Service holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The pool the addresses come from.
    pub pool: String,
    /// One address, or two of different families (the primary family first).
    pub addresses: Vec<IpAddr>,
}

/// A pool's counters, as `IPAddressPool.status` reports them (saturating at `i64::MAX`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// IPv4 addresses held by at least one Service.
    pub assigned_ipv4: i64,
    /// IPv6 addresses held by at least one Service.
    pub assigned_ipv6: i64,
    /// IPv4 addresses still free.
    pub available_ipv4: i64,
    /// IPv6 addresses still free.
    pub available_ipv6: i64,
}

impl From<PoolStats> for IPAddressPoolStatus {
    fn from(s: PoolStats) -> Self {
        IPAddressPoolStatus {
            assigned_ipv4: s.assigned_ipv4,
            assigned_ipv6: s.assigned_ipv6,
            available_ipv4: s.available_ipv4,
            available_ipv6: s.available_ipv6,
            conditions: Vec::new(),
        }
    }
}

// ===== The allocator =====

/// Inclusive, merged ranges of addresses in use, per family, so that the lowest free address
/// from any point is one lookup.
#[derive(Debug, Clone, Default)]
struct IntervalSet {
    /// start → end, inclusive, with at least one free address between two entries.
    map: BTreeMap<u128, u128>,
}

// === impl IntervalSet ===

impl IntervalSet {
    fn containing(&self, x: u128) -> Option<(u128, u128)> {
        self.map
            .range(..=x)
            .next_back()
            .filter(|(_, e)| **e >= x)
            .map(|(s, e)| (*s, *e))
    }

    fn insert(&mut self, x: u128) {
        if self.containing(x).is_some() {
            return;
        }
        let mut start = x;
        let mut end = x;
        if let Some(p) = x.checked_sub(1)
            && let Some((s, _)) = self.containing(p)
        {
            start = s;
        }
        if let Some(n) = x.checked_add(1)
            && let Some(e) = self.map.remove(&n)
        {
            end = e;
        }
        self.map.insert(start, end);
    }

    fn remove(&mut self, x: u128) {
        let Some((s, e)) = self.containing(x) else {
            return;
        };
        self.map.remove(&s);
        if s < x {
            self.map.insert(s, x - 1);
        }
        if x < e {
            self.map.insert(x + 1, e);
        }
    }

    /// The lowest address ≥ `x` not in the set (`None` past the end of the space).
    fn first_free_from(&self, x: u128) -> Option<u128> {
        match self.containing(x) {
            Some((_, e)) => e.checked_add(1),
            None => Some(x),
        }
    }
}

/// Who holds one address.
#[derive(Debug, Clone)]
struct IpUse {
    /// Index into `Allocator::pools`.
    pool: usize,
    /// The sharing key every holder carries.
    sharing_key: Option<String>,
    holders: BTreeSet<ServiceKey>,
}

/// What one Service holds.
#[derive(Debug, Clone)]
struct Held {
    pool: usize,
    addresses: Vec<IpAddr>,
    sharing_key: Option<String>,
    ports: BTreeSet<(Protocol, u16)>,
}

/// Allocates addresses from pools to Services; see the module docs for the rules.
#[derive(Debug, Clone)]
pub struct Allocator {
    /// Sorted by name.
    pools: Vec<Pool>,
    /// Per family: block start → (block end, pool index).
    blocks: [BTreeMap<u128, (u128, usize)>; 2],
    /// Per family: addresses held by at least one Service.
    used: [IntervalSet; 2],
    ips: HashMap<IpAddr, IpUse>,
    /// Addresses held under each sharing key.
    shared: BTreeMap<String, BTreeSet<IpAddr>>,
    services: BTreeMap<ServiceKey, Held>,
}

// === impl Allocator ===

impl Allocator {
    /// An allocator over `pools` (in any order), holding nothing.
    ///
    /// # Errors
    /// Two pools with one name, a malformed block, or overlapping blocks (within a pool or
    /// between pools; MetalLB refuses both).
    pub fn new(mut pools: Vec<Pool>) -> Result<Allocator, AllocError> {
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = pools.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(AllocError::DuplicatePool(w[0].name.clone()));
        }
        let mut blocks: [BTreeMap<u128, (u128, usize)>; 2] = Default::default();
        let mut all: [Vec<(u128, u128, usize)>; 2] = Default::default();
        for (i, p) in pools.iter().enumerate() {
            if p.blocks.is_empty() {
                return Err(AllocError::BadPool {
                    pool: p.name.clone(),
                    reason: "has no addresses".into(),
                });
            }
            for (a, b) in &p.blocks {
                let (fa, va) = split(*a);
                let (fb, vb) = split(*b);
                if fa != fb || va > vb {
                    return Err(AllocError::BadPool {
                        pool: p.name.clone(),
                        reason: format!("{a}-{b} is not a range of one family, first <= last"),
                    });
                }
                all[fa.index()].push((va, vb, i));
            }
        }
        for (f, list) in all.iter_mut().enumerate() {
            list.sort_unstable();
            for w in list.windows(2) {
                let ((a0, a1, ai), (b0, b1, bi)) = (w[0], w[1]);
                if b0 <= a1 {
                    let fam = if f == 0 { Family::V4 } else { Family::V6 };
                    return Err(AllocError::OverlappingPools {
                        a: pools[ai].name.clone(),
                        range_a: format!("{}-{}", join_u128(fam, a0), join_u128(fam, a1)),
                        b: pools[bi].name.clone(),
                        range_b: format!("{}-{}", join_u128(fam, b0), join_u128(fam, b1)),
                    });
                }
            }
            for (a, b, i) in list.iter() {
                blocks[f].insert(*a, (*b, *i));
            }
        }
        Ok(Allocator {
            pools,
            blocks,
            used: Default::default(),
            ips: HashMap::new(),
            shared: BTreeMap::new(),
            services: BTreeMap::new(),
        })
    }

    /// Replaces the pools, keeping every allocation whose addresses still lie in one pool
    /// (and are not .0/.255 of an `avoidBuggyIPs` pool); the others are released and returned
    /// with the reason. Whether a kept allocation still suits its Service (the pool's
    /// `serviceAllocation`) is checked by the next [`Allocator::assign`].
    ///
    /// # Errors
    /// As [`Allocator::new`]; the allocator is then unchanged.
    pub fn set_pools(
        &mut self,
        pools: Vec<Pool>,
    ) -> Result<Vec<(ServiceKey, AllocError)>, AllocError> {
        let mut next = Allocator::new(pools)?;
        let mut evicted = Vec::new();
        for (key, held) in std::mem::take(&mut self.services) {
            match next.pool_for(&held.addresses) {
                Ok(pool) => next.register_held(&key, pool, held),
                Err(e) => evicted.push((key, e)),
            }
        }
        *self = next;
        Ok(evicted)
    }

    /// The pools, sorted by name.
    #[must_use]
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// What `key` holds.
    #[must_use]
    pub fn allocation(&self, key: &ServiceKey) -> Option<Allocation> {
        self.services.get(key).map(|h| self.allocation_of(h))
    }

    /// Every allocation, by Service.
    pub fn allocations(&self) -> impl Iterator<Item = (&ServiceKey, Allocation)> + '_ {
        self.services
            .iter()
            .map(|(k, h)| (k, self.allocation_of(h)))
    }

    /// The Services holding `ip` (more than one only when they share it).
    #[must_use]
    pub fn holders(&self, ip: IpAddr) -> Vec<ServiceKey> {
        self.ips
            .get(&ip)
            .map(|u| u.holders.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The pool containing `ip`.
    #[must_use]
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.pool_index(ip).map(|i| &self.pools[i])
    }

    /// Gives the Service of `req` its addresses: the ones it holds when they are still valid,
    /// else new ones by the rules in the module docs. On error the Service holds nothing.
    ///
    /// # Errors
    /// The reason no address could be given, fit for an Event on the Service.
    pub fn assign(&mut self, req: &Request) -> Result<Allocation, AllocError> {
        if let Some(held) = self.services.get(&req.key) {
            let pool = held.pool;
            let valid = self.still_valid(req, pool, &held.addresses);
            let may_grow = matches!(req.families, Families::PreferDual(_))
                && held.addresses.len() == 1
                && req.addresses.is_empty();
            if valid
                && !may_grow
                && held.sharing_key == req.sharing_key
                && held.ports == req.ports.iter().copied().collect()
            {
                // The common case on every reconcile pass: nothing to change.
                return Ok(self.allocation_of(held));
            }
            let mut addrs = held.addresses.clone();
            self.unregister(&req.key);
            if valid {
                if matches!(req.families, Families::PreferDual(_))
                    && addrs.len() == 1
                    && req.addresses.is_empty()
                    && let Some(extra) =
                        self.first_acceptable(pool, Family::of(addrs[0]).other(), req)
                {
                    addrs.push(extra);
                    if Family::of(addrs[0]) != req.families.primary() {
                        addrs.swap(0, 1);
                    }
                }
                self.register(req, pool, addrs);
                return Ok(self.allocation_of(&self.services[&req.key]));
            }
        }
        let (pool, addrs) = self.allocate_new(req)?;
        self.register(req, pool, addrs);
        Ok(self.allocation_of(&self.services[&req.key]))
    }

    /// Takes back `ips` (from the Service's `status.loadBalancer.ingress`) after a restart,
    /// if they are still valid for `req`: in one pool serving the Service, fitting its
    /// families, its requested addresses and pool, and free or shareable. `autoAssign` does not
    /// matter. Restore every Service first, then [`assign`](Allocator::assign) them (which
    /// also adds a missing family for `PreferDualStack`). On error the Service holds nothing.
    ///
    /// # Errors
    /// Why the addresses cannot be kept.
    pub fn restore(&mut self, req: &Request, ips: &[IpAddr]) -> Result<Allocation, AllocError> {
        self.unregister(&req.key);
        if !req.addresses.is_empty() && !same_set(&req.addresses, ips) {
            return Err(AllocError::StatusMismatch {
                held: join(ips),
                requested: join(&req.addresses),
            });
        }
        let pool = self.check_explicit(req, ips)?;
        self.register(req, pool, ips.to_vec());
        Ok(self.allocation_of(&self.services[&req.key]))
    }

    /// Releases what `key` holds, returning it.
    pub fn release(&mut self, key: &ServiceKey) -> Option<Allocation> {
        let a = self.allocation(key);
        self.unregister(key);
        a
    }

    /// Per pool (by name): assigned and available addresses of each family.
    #[must_use]
    pub fn pool_stats(&self) -> BTreeMap<String, PoolStats> {
        let mut assigned = vec![[0u128; 2]; self.pools.len()];
        for (ip, u) in &self.ips {
            assigned[u.pool][Family::of(*ip).index()] += 1;
        }
        let sat = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
        self.pools
            .iter()
            .zip(assigned)
            .map(|(p, [a4, a6])| {
                let (c4, c6) = p.capacity();
                let stats = PoolStats {
                    assigned_ipv4: sat(a4),
                    assigned_ipv6: sat(a6),
                    available_ipv4: sat(c4.saturating_sub(a4)),
                    available_ipv6: sat(c6.saturating_sub(a6)),
                };
                (p.name.clone(), stats)
            })
            .collect()
    }

    // --- internals ---

    fn allocation_of(&self, h: &Held) -> Allocation {
        Allocation {
            pool: self.pools[h.pool].name.clone(),
            addresses: h.addresses.clone(),
        }
    }

    fn pool_index(&self, ip: IpAddr) -> Option<usize> {
        let (f, v) = split(ip);
        self.blocks[f.index()]
            .range(..=v)
            .next_back()
            .filter(|(_, (end, _))| *end >= v)
            .map(|(_, (_, i))| *i)
    }

    /// The pool holding all of `ips` (one or two of distinct families), minding
    /// `avoidBuggyIPs`.
    fn pool_for(&self, ips: &[IpAddr]) -> Result<usize, AllocError> {
        let mut found: Option<(IpAddr, usize)> = None;
        for ip in ips {
            let i = self
                .pool_index(*ip)
                .ok_or(AllocError::NoPoolContains(*ip))?;
            if self.pools[i].avoid_buggy_ips && is_buggy(*ip) {
                return Err(AllocError::BuggyAddress {
                    address: *ip,
                    pool: self.pools[i].name.clone(),
                });
            }
            match found {
                Some((a, j)) if j != i => {
                    return Err(AllocError::SplitPools {
                        a,
                        pool_a: self.pools[j].name.clone(),
                        b: *ip,
                        pool_b: self.pools[i].name.clone(),
                    });
                }
                _ => found = Some((*ip, i)),
            }
        }
        found
            .map(|(_, i)| i)
            .ok_or_else(|| AllocError::BadAddresses("no address given".into()))
    }

    /// Checks addresses asked for explicitly (requested or restored) and returns their pool.
    fn check_explicit(&self, req: &Request, ips: &[IpAddr]) -> Result<usize, AllocError> {
        match ips {
            [] => return Err(AllocError::BadAddresses("no address given".into())),
            [a, b] if Family::of(*a) == Family::of(*b) => {
                return Err(AllocError::BadAddresses(format!(
                    "{a} and {b} are of the same family; give at most one IPv4 and one IPv6 \
                     address"
                )));
            }
            [_] | [_, _] => {}
            _ => {
                return Err(AllocError::BadAddresses(format!(
                    "{} are more than two addresses",
                    join(ips)
                )));
            }
        }
        if !req.families.accepts(ips) {
            return Err(AllocError::FamilyMismatch {
                addresses: join(ips),
                families: req.families,
            });
        }
        let pool = self.pool_for(ips)?;
        let p = &self.pools[pool];
        if let Some(want) = &req.pool
            && *want != p.name
        {
            return Err(AllocError::NotRequestedPool {
                address: ips[0],
                pool: p.name.clone(),
                requested: want.clone(),
            });
        }
        if !p.serves(req) {
            return Err(AllocError::PoolNotAllowed {
                pool: p.name.clone(),
                service: req.key.clone(),
            });
        }
        for ip in ips {
            self.check_sharing(*ip, req)?;
        }
        Ok(pool)
    }

    /// Whether what the Service holds still suits `req`.
    fn still_valid(&self, req: &Request, pool: usize, addrs: &[IpAddr]) -> bool {
        let p = &self.pools[pool];
        req.families.accepts(addrs)
            && (req.addresses.is_empty() || same_set(&req.addresses, addrs))
            && req.pool.as_ref().is_none_or(|want| *want == p.name)
            && p.serves(req)
            && addrs.iter().all(|ip| self.check_sharing(*ip, req).is_ok())
    }

    /// Whether the Service of `req` may hold `ip` next to its current holders.
    fn check_sharing(&self, ip: IpAddr, req: &Request) -> Result<(), AllocError> {
        let Some(u) = self.ips.get(&ip) else {
            return Ok(());
        };
        let mut others = u.holders.iter().filter(|k| **k != req.key).peekable();
        let Some(first) = others.peek() else {
            return Ok(());
        };
        if u.sharing_key.is_none() || u.sharing_key != req.sharing_key {
            return Err(AllocError::InUse {
                address: ip,
                by: (*first).clone(),
            });
        }
        for other in others {
            let theirs = &self.services[other].ports;
            if let Some((protocol, port)) = req.ports.iter().find(|p| theirs.contains(p)) {
                return Err(AllocError::PortInUse {
                    address: ip,
                    by: other.clone(),
                    protocol: *protocol,
                    port: *port,
                });
            }
        }
        Ok(())
    }

    /// The lowest acceptable address of `family` in pool `pool` for `req`.
    fn first_acceptable(&self, pool: usize, family: Family, req: &Request) -> Option<IpAddr> {
        let p = &self.pools[pool];
        let avoid = p.avoid_buggy_ips && family == Family::V4;
        let used = &self.used[family.index()];
        let shared = req.sharing_key.as_ref().and_then(|k| self.shared.get(k));
        for (a, b) in &p.blocks {
            let (f, first) = split(*a);
            let (_, last) = split(*b);
            if f != family {
                continue;
            }
            let mut free = None;
            let mut x = first;
            while let Some(c) = used.first_free_from(x) {
                if c > last {
                    break;
                }
                let ip = join_u128(f, c);
                if avoid && is_buggy(ip) {
                    match c.checked_add(1) {
                        Some(n) => x = n,
                        None => break,
                    }
                    continue;
                }
                free = Some(c);
                break;
            }
            let share = shared.and_then(|set| {
                set.range(join_u128(f, first)..=join_u128(f, last))
                    .find(|ip| self.check_sharing(**ip, req).is_ok())
                    .map(|ip| split(*ip).1)
            });
            let best = match (free, share) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
            if let Some(v) = best {
                return Some(join_u128(f, v));
            }
        }
        None
    }

    /// Picks a pool and addresses among `candidates` (in order), MetalLB's
    /// `findBestPoolForService`.
    fn find_best(&self, candidates: &[usize], req: &Request) -> Option<(usize, Vec<IpAddr>)> {
        let primary = req.families.primary();
        let secondary = primary.other();
        let mut first_primary = None;
        let mut first_secondary = None;
        for &p in candidates {
            let a = self.first_acceptable(p, primary, req);
            match req.families {
                Families::Single(_) => {
                    if let Some(a) = a {
                        return Some((p, vec![a]));
                    }
                }
                Families::RequireDual(_) => {
                    if let Some(a) = a
                        && let Some(b) = self.first_acceptable(p, secondary, req)
                    {
                        return Some((p, vec![a, b]));
                    }
                }
                Families::PreferDual(_) => {
                    let b = self.first_acceptable(p, secondary, req);
                    match (a, b) {
                        (Some(a), Some(b)) => return Some((p, vec![a, b])),
                        (Some(a), None) if first_primary.is_none() => {
                            first_primary = Some((p, vec![a]));
                        }
                        (None, Some(b)) if first_secondary.is_none() => {
                            first_secondary = Some((p, vec![b]));
                        }
                        _ => {}
                    }
                }
            }
        }
        first_primary.or(first_secondary)
    }

    /// Why `find_best` over `candidates` found nothing.
    fn exhausted_error(&self, candidates: &[usize], req: &Request) -> AllocError {
        if candidates.is_empty() {
            return AllocError::NoEligiblePool(req.key.clone());
        }
        let names = |f: &dyn Fn(&Pool) -> bool| -> Vec<String> {
            let mut v: Vec<String> = candidates
                .iter()
                .map(|i| &self.pools[*i])
                .filter(|p| f(p))
                .map(|p| p.name.clone())
                .collect();
            v.dedup();
            v
        };
        match req.families {
            Families::Single(family) => {
                let with = names(&|p| p.has_family(family));
                if with.is_empty() {
                    AllocError::NoPoolForFamily {
                        family,
                        service: req.key.clone(),
                    }
                } else {
                    AllocError::Exhausted(with)
                }
            }
            Families::RequireDual(_) => {
                let with = names(&|p| p.has_family(Family::V4) && p.has_family(Family::V6));
                if with.is_empty() {
                    AllocError::NoDualStackPool(req.key.clone())
                } else {
                    AllocError::Exhausted(with)
                }
            }
            Families::PreferDual(_) => AllocError::Exhausted(names(&|_| true)),
        }
    }

    /// New addresses for a Service that holds none.
    fn allocate_new(&self, req: &Request) -> Result<(usize, Vec<IpAddr>), AllocError> {
        if !req.addresses.is_empty() {
            let pool = self.check_explicit(req, &req.addresses)?;
            return Ok((pool, req.addresses.clone()));
        }
        if let Some(name) = &req.pool {
            let pool = self
                .pools
                .binary_search_by(|p| p.name.as_str().cmp(name))
                .map_err(|_| AllocError::UnknownPool(name.clone()))?;
            if !self.pools[pool].serves(req) {
                return Err(AllocError::PoolNotAllowed {
                    pool: name.clone(),
                    service: req.key.clone(),
                });
            }
            return self
                .find_best(&[pool], req)
                .ok_or_else(|| self.exhausted_error(&[pool], req));
        }
        let mut pinned: Vec<usize> = (0..self.pools.len())
            .filter(|i| {
                let p = &self.pools[*i];
                p.auto_assign && p.scope.is_some() && p.serves(req)
            })
            .collect();
        // Stable: equal priorities stay in name order.
        pinned.sort_by_key(|i| {
            let prio = self.pools[*i].scope.as_ref().and_then(|s| s.priority);
            (prio.is_none(), prio)
        });
        let rest: Vec<usize> = (0..self.pools.len())
            .filter(|i| self.pools[*i].auto_assign && self.pools[*i].scope.is_none())
            .collect();
        if let Some(found) = self.find_best(&pinned, req) {
            return Ok(found);
        }
        if let Some(found) = self.find_best(&rest, req) {
            return Ok(found);
        }
        let all: Vec<usize> = pinned.into_iter().chain(rest).collect();
        Err(self.exhausted_error(&all, req))
    }

    fn register(&mut self, req: &Request, pool: usize, addresses: Vec<IpAddr>) {
        let held = Held {
            pool,
            addresses,
            sharing_key: req.sharing_key.clone(),
            ports: req.ports.iter().copied().collect(),
        };
        self.register_held(&req.key, pool, held);
    }

    fn register_held(&mut self, key: &ServiceKey, pool: usize, mut held: Held) {
        held.pool = pool;
        for ip in &held.addresses {
            let (f, v) = split(*ip);
            let u = self.ips.entry(*ip).or_insert_with(|| {
                self.used[f.index()].insert(v);
                IpUse {
                    pool,
                    sharing_key: held.sharing_key.clone(),
                    holders: BTreeSet::new(),
                }
            });
            u.holders.insert(key.clone());
            if let Some(k) = &u.sharing_key {
                self.shared.entry(k.clone()).or_default().insert(*ip);
            }
        }
        self.services.insert(key.clone(), held);
    }

    fn unregister(&mut self, key: &ServiceKey) {
        let Some(held) = self.services.remove(key) else {
            return;
        };
        for ip in &held.addresses {
            let Some(u) = self.ips.get_mut(ip) else {
                continue;
            };
            u.holders.remove(key);
            if !u.holders.is_empty() {
                continue;
            }
            let sharing_key = u.sharing_key.take();
            self.ips.remove(ip);
            let (f, v) = split(*ip);
            self.used[f.index()].remove(v);
            if let Some(k) = sharing_key
                && let Some(set) = self.shared.get_mut(&k)
            {
                set.remove(ip);
                if set.is_empty() {
                    self.shared.remove(&k);
                }
            }
        }
    }
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    let a: BTreeSet<_> = a.iter().collect();
    let b: BTreeSet<_> = b.iter().collect();
    a == b
}

/// An address as its family and its number.
fn split(ip: IpAddr) -> (Family, u128) {
    match ip {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
    }
}

/// The inverse of [`split`] (an IPv4 number above 32 bits saturates; it never is one).
fn join_u128(f: Family, v: u128) -> IpAddr {
    match f {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX))),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use proptest::prelude::*;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn block(s: &str) -> (IpAddr, IpAddr) {
        parse_address_block(s).unwrap()
    }

    fn pool(name: &str, blocks: &[&str]) -> Pool {
        Pool::new(name, blocks.iter().map(|b| block(b)).collect())
    }

    fn req(ns: &str, name: &str) -> Request {
        Request::new(ServiceKey::new(ns, name))
    }

    fn alloc(pools: Vec<Pool>) -> Allocator {
        Allocator::new(pools).unwrap()
    }

    fn addrs(a: &Allocation) -> Vec<String> {
        a.addresses.iter().map(ToString::to_string).collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn address_blocks() {
        assert_eq!(
            block("192.168.10.0/24"),
            (ip("192.168.10.0"), ip("192.168.10.255"))
        );
        assert_eq!(
            block("198.51.100.10/24"),
            (ip("198.51.100.0"), ip("198.51.100.255")),
            "host bits are cleared as in MetalLB"
        );
        assert_eq!(
            block("192.168.9.1 - 192.168.9.5"),
            (ip("192.168.9.1"), ip("192.168.9.5"))
        );
        assert_eq!(
            block("fc00:f853:0ccd:e799::/124"),
            (ip("fc00:f853:ccd:e799::"), ip("fc00:f853:ccd:e799::f"))
        );
        for bad in [
            "10.0.0.1",
            "10.0.0.5-10.0.0.1",
            "10.0.0.1-::1",
            "10.0.0.0/33",
            "x-10.0.0.1",
        ] {
            assert!(parse_address_block(bad).is_err(), "{bad}");
        }
        assert_eq!(widest_prefix(ip("10.0.0.0"), ip("10.0.0.255")), Some(24));
        assert_eq!(widest_prefix(ip("10.0.0.1"), ip("10.0.0.5")), Some(31));
        assert_eq!(widest_prefix(ip("0.0.0.0"), ip("255.255.255.255")), Some(0));
        assert_eq!(
            widest_prefix(ip("::"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(0)
        );
    }

    #[test]
    fn pools_from_the_crd() {
        use crate::k8s::crd::{IPAddressPoolSpec, ServiceAllocation};
        let spec = |addresses: &[&str]| IPAddressPoolSpec {
            addresses: addresses.iter().map(|s| (*s).to_owned()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        };
        let e = Pool::from_spec("p", &spec(&["10.0.0.0/24", "10.0.0.128-10.0.1.3"])).unwrap_err();
        assert_eq!(e.field, "spec.addresses[1]");
        let e = Pool::from_spec("p", &spec(&[])).unwrap_err();
        assert_eq!(e.field, "spec.addresses");
        let e = Pool::from_spec("p", &spec(&["10.0.0.0/24", "nope"])).unwrap_err();
        assert_eq!(e.field, "spec.addresses[1]");
        let mut s = spec(&["10.0.0.0/24"]);
        s.service_allocation = Some(ServiceAllocation {
            priority: Some(0),
            namespaces: vec!["a".into(), "a".into()],
            ..Default::default()
        });
        let e = Pool::from_spec("p", &s).unwrap_err();
        assert_eq!(e.field, "spec.serviceAllocation.namespaces[1]");
        s.service_allocation = Some(ServiceAllocation {
            priority: Some(0),
            ..Default::default()
        });
        let p = Pool::from_spec("p", &s).unwrap();
        assert_eq!(p.scope.unwrap().priority, None, "priority 0 means none");
    }

    #[test]
    fn first_free_address_and_idempotence() {
        let mut a = alloc(vec![pool("web", &["192.0.2.0/30"])]);
        let r1 = req("default", "a");
        let first = a.assign(&r1).unwrap();
        assert_eq!(addrs(&first), ["192.0.2.0"]);
        assert_eq!(first.pool, "web");
        assert_eq!(a.assign(&r1).unwrap(), first, "assign is idempotent");
        assert_eq!(
            addrs(&a.assign(&req("default", "b")).unwrap()),
            ["192.0.2.1"]
        );
        a.release(&r1.key);
        assert_eq!(
            addrs(&a.assign(&req("default", "c")).unwrap()),
            ["192.0.2.0"],
            "the lowest free address is reused"
        );
    }

    #[test]
    fn requested_addresses() {
        let mut a = alloc(vec![
            pool("web", &["192.0.2.0/24"]),
            pool("v6", &["2001:db8::/64"]),
        ]);
        let mut r = req("default", "a");
        r.addresses = vec![ip("192.0.2.99")];
        assert_eq!(addrs(&a.assign(&r).unwrap()), ["192.0.2.99"]);
        let mut r2 = req("default", "b");
        r2.addresses = vec![ip("198.51.100.1")];
        let e = a.assign(&r2).unwrap_err();
        assert_eq!(e.to_string(), "no pool contains 198.51.100.1");
        r2.addresses = vec![ip("192.0.2.99")];
        let e = a.assign(&r2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "192.0.2.99 is in use by default/a without a matching allow-shared-ip key"
        );
        assert!(
            a.allocation(&r2.key).is_none(),
            "a failed assign holds nothing"
        );
        r2.addresses = vec![ip("2001:db8::5")];
        let e = a.assign(&r2).unwrap_err();
        assert!(matches!(e, AllocError::FamilyMismatch { .. }), "{e}");
        r2.families = Families::RequireDual(Family::V4);
        r2.addresses = vec![ip("192.0.2.5"), ip("2001:db8::5")];
        assert!(matches!(
            a.assign(&r2).unwrap_err(),
            AllocError::SplitPools { .. }
        ));
        r2.families = Families::Single(Family::V4);
        r2.addresses = vec![ip("192.0.2.5")];
        r2.pool = Some("v6".into());
        assert!(matches!(
            a.assign(&r2).unwrap_err(),
            AllocError::NotRequestedPool { .. }
        ));
        // Changing the requested address moves the Service.
        r.addresses = vec![ip("192.0.2.100")];
        assert_eq!(addrs(&a.assign(&r).unwrap()), ["192.0.2.100"]);
        assert!(a.holders(ip("192.0.2.99")).is_empty());
    }

    #[test]
    fn auto_assign_false_serves_explicit_requests_only() {
        let mut expensive = pool("expensive", &["42.176.25.64/30"]);
        expensive.auto_assign = false;
        let mut a = alloc(vec![expensive, pool("cheap", &["192.168.10.0/31"])]);
        assert_eq!(a.assign(&req("d", "1")).unwrap().pool, "cheap");
        assert_eq!(a.assign(&req("d", "2")).unwrap().pool, "cheap");
        let e = a.assign(&req("d", "3")).unwrap_err();
        assert_eq!(e.to_string(), "pool \"cheap\" is exhausted");
        let mut r = req("d", "4");
        r.pool = Some("expensive".into());
        assert_eq!(addrs(&a.assign(&r).unwrap()), ["42.176.25.64"]);
        let mut r = req("d", "5");
        r.addresses = vec![ip("42.176.25.66")];
        assert_eq!(a.assign(&r).unwrap().pool, "expensive");
        let mut r = req("d", "6");
        r.pool = Some("nope".into());
        assert_eq!(
            a.assign(&r).unwrap_err().to_string(),
            "pool \"nope\" does not exist"
        );
    }

    #[test]
    fn avoid_buggy_ips() {
        let mut p = pool("p", &["10.0.0.255-10.0.1.1", "10.0.2.0/31"]);
        p.avoid_buggy_ips = true;
        let mut a = alloc(vec![p]);
        assert_eq!(a.pool_stats()["p"].available_ipv4, 2);
        let got: Vec<String> = (0..2)
            .map(|i| addrs(&a.assign(&req("d", &i.to_string())).unwrap()).remove(0))
            .collect();
        assert_eq!(got, ["10.0.1.1", "10.0.2.1"]);
        assert!(a.assign(&req("d", "9")).is_err());
        let mut r = req("d", "x");
        r.addresses = vec![ip("10.0.1.0")];
        assert!(matches!(
            a.assign(&r).unwrap_err(),
            AllocError::BuggyAddress { .. }
        ));
    }

    #[test]
    fn service_allocation_and_priority() {
        let sel = |k: &str, v: &str| {
            Selector::try_from_label_selector(&LabelSelector {
                match_labels: Some(labels(&[(k, v)])),
                match_expressions: None,
            })
            .unwrap()
        };
        let mut team = pool("team", &["10.1.0.0/30"]);
        team.scope = Some(PoolScope {
            priority: Some(20),
            namespaces: BTreeSet::from(["team-a".to_owned()]),
            namespace_selectors: vec![sel("tier", "gold")],
            service_selectors: vec![],
        });
        let mut web = pool("web", &["10.2.0.0/30"]);
        web.scope = Some(PoolScope {
            priority: Some(10),
            service_selectors: vec![sel("app", "web")],
            ..Default::default()
        });
        let mut noprio = pool("a-noprio", &["10.3.0.0/30"]);
        noprio.scope = Some(PoolScope::default());
        let mut a = alloc(vec![pool("general", &["10.9.0.0/30"]), team, web, noprio]);

        // No match among the scoped pools but the empty scope: that one before general.
        assert_eq!(a.assign(&req("other", "x")).unwrap().pool, "a-noprio");
        let mut r = req("team-a", "y");
        assert_eq!(a.assign(&r).unwrap().pool, "team");
        r.labels = labels(&[("app", "web")]);
        assert_eq!(
            a.assign(&r).unwrap().pool,
            "team",
            "a valid allocation is kept even when a better pool now matches"
        );
        let mut r = req("team-a", "y2");
        r.labels = labels(&[("app", "web")]);
        assert_eq!(a.assign(&r).unwrap().pool, "web", "lower priority wins");
        let mut r = req("ns", "z");
        r.namespace_labels = labels(&[("tier", "gold")]);
        assert_eq!(a.assign(&r).unwrap().pool, "team", "namespace selector");
        // A pool that does not serve the Service refuses explicit requests too.
        let mut r = req("ns2", "w");
        r.pool = Some("team".into());
        assert!(matches!(
            a.assign(&r).unwrap_err(),
            AllocError::PoolNotAllowed { .. }
        ));
        r.pool = None;
        r.addresses = vec![ip("10.1.0.3")];
        assert!(matches!(
            a.assign(&r).unwrap_err(),
            AllocError::PoolNotAllowed { .. }
        ));
        // When the labels stop matching, the next assign moves the Service.
        let mut r = req("x", "moves");
        r.labels = labels(&[("app", "web")]);
        assert_eq!(a.assign(&r).unwrap().pool, "web");
        r.labels.clear();
        assert_eq!(a.assign(&r).unwrap().pool, "a-noprio");
    }

    #[test]
    fn scoped_pools_are_tried_before_the_others_and_then_fall_back() {
        let mut gold = pool("gold", &["10.1.0.0/32"]);
        gold.scope = Some(PoolScope {
            priority: Some(1),
            ..Default::default()
        });
        let mut a = alloc(vec![pool("general", &["10.9.0.0/31"]), gold]);
        assert_eq!(a.assign(&req("d", "1")).unwrap().pool, "gold");
        assert_eq!(a.assign(&req("d", "2")).unwrap().pool, "general");
        assert_eq!(a.assign(&req("d", "3")).unwrap().pool, "general");
        let e = a.assign(&req("d", "4")).unwrap_err();
        assert_eq!(e.to_string(), "pools \"gold\", \"general\" are exhausted");
    }

    #[test]
    fn sharing() {
        let mut a = alloc(vec![pool("p", &["192.0.2.10/31"])]);
        let mut web = req("default", "web");
        web.sharing_key = Some("k".into());
        web.ports = vec![(Protocol::Tcp, 80)];
        let mut tls = req("default", "tls");
        tls.sharing_key = Some("k".into());
        tls.ports = vec![(Protocol::Tcp, 443)];
        let mut dns = req("default", "dns");
        dns.sharing_key = Some("k".into());
        dns.ports = vec![(Protocol::Tcp, 80)];
        let w = a.assign(&web).unwrap();
        assert_eq!(
            a.assign(&tls).unwrap(),
            Allocation {
                pool: "p".into(),
                ..w.clone()
            },
            "shared"
        );
        assert_eq!(
            addrs(&a.assign(&dns).unwrap()),
            ["192.0.2.11"],
            "port clash: next address"
        );
        // Explicit requests name the conflict.
        let mut other = req("default", "other");
        other.addresses = vec![ip("192.0.2.10")];
        assert_eq!(
            a.assign(&other).unwrap_err().to_string(),
            "192.0.2.10 is in use by default/tls without a matching allow-shared-ip key"
        );
        other.sharing_key = Some("k".into());
        other.ports = vec![(Protocol::Tcp, 443)];
        assert_eq!(
            a.assign(&other).unwrap_err().to_string(),
            "192.0.2.10 is in use by default/tls on TCP/443"
        );
        other.ports = vec![(Protocol::Udp, 443)];
        assert_eq!(
            addrs(&a.assign(&other).unwrap()),
            ["192.0.2.10"],
            "UDP/443 is free"
        );
        assert_eq!(a.holders(ip("192.0.2.10")).len(), 3);
        assert_eq!(a.pool_stats()["p"].assigned_ipv4, 2);
        // A holder changing its key alone is moved off the shared address.
        tls.sharing_key = Some("other".into());
        let e = a.assign(&tls).unwrap_err();
        assert!(matches!(e, AllocError::Exhausted(_)), "{e}");
        // A sole holder may change its key in place.
        let mut b = alloc(vec![pool("p", &["192.0.2.10/32"])]);
        let mut s = req("d", "s");
        s.sharing_key = Some("x".into());
        let first = b.assign(&s).unwrap();
        s.sharing_key = None;
        assert_eq!(b.assign(&s).unwrap(), first);
    }

    #[test]
    fn ip_families() {
        let mut a = alloc(vec![
            pool("v4", &["10.0.0.0/30"]),
            pool("v6", &["2001:db8::/126"]),
            pool("z-dual", &["10.1.0.0/30", "2001:db8:1::/126"]),
        ]);
        let mut r = req("d", "six");
        r.families = Families::Single(Family::V6);
        assert_eq!(addrs(&a.assign(&r).unwrap()), ["2001:db8::"]);
        let mut r = req("d", "prefer");
        r.families = Families::PreferDual(Family::V6);
        let got = a.assign(&r).unwrap();
        assert_eq!(got.pool, "z-dual", "a pool with both families wins");
        assert_eq!(
            addrs(&got),
            ["2001:db8:1::", "10.1.0.0"],
            "primary family first"
        );
        let mut r = req("d", "require");
        r.families = Families::RequireDual(Family::V4);
        assert_eq!(addrs(&a.assign(&r).unwrap()), ["10.1.0.1", "2001:db8:1::1"]);
        let mut only = alloc(vec![pool("v4", &["10.0.0.0/30"])]);
        assert_eq!(
            only.assign(&r).unwrap_err(),
            AllocError::NoDualStackPool(r.key.clone())
        );
        let mut p = req("d", "p");
        p.families = Families::PreferDual(Family::V6);
        assert_eq!(addrs(&only.assign(&p).unwrap()), ["10.0.0.0"], "else one");
        let mut s = req("d", "s");
        s.families = Families::Single(Family::V6);
        assert!(matches!(
            only.assign(&s).unwrap_err(),
            AllocError::NoPoolForFamily {
                family: Family::V6,
                ..
            }
        ));
        // PreferDualStack: an address of the other family is added when the pool gets one.
        only.set_pools(vec![pool("v4", &["10.0.0.0/30", "2001:db8::/127"])])
            .unwrap();
        assert_eq!(addrs(&only.assign(&p).unwrap()), ["2001:db8::", "10.0.0.0"]);
    }

    #[test]
    fn families_from_the_service_spec() {
        let fams = |f: &[&str], p: Option<&str>| {
            Families::from_spec(&f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), p)
        };
        assert_eq!(fams(&[], None), Ok(Families::Single(Family::V4)));
        assert_eq!(
            fams(&["IPv6", "IPv4"], Some("SingleStack")),
            Ok(Families::Single(Family::V6))
        );
        assert_eq!(
            fams(&["IPv6"], Some("PreferDualStack")),
            Ok(Families::Single(Family::V6))
        );
        assert_eq!(
            fams(&["IPv6", "IPv4"], Some("PreferDualStack")),
            Ok(Families::PreferDual(Family::V6))
        );
        assert_eq!(
            fams(&[], Some("RequireDualStack")),
            Ok(Families::RequireDual(Family::V4))
        );
        assert!(fams(&["ipv6"], None).is_err());
        assert!(fams(&[], Some("Dual")).is_err());
    }

    fn service(annotations: &[(&str, &str)], lb_ip: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                labels: Some(labels(&[("app", "web")])),
                annotations: Some(labels(annotations)),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                load_balancer_ip: lb_ip.map(Into::into),
                ip_families: Some(vec!["IPv4".into(), "IPv6".into()]),
                ip_family_policy: Some("PreferDualStack".into()),
                ports: Some(vec![
                    ServicePort {
                        port: 80,
                        ..Default::default()
                    },
                    ServicePort {
                        port: 53,
                        protocol: Some("UDP".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn requests_from_services() {
        let r = Request::from_service(
            &service(
                &[
                    ("metallb.io/loadBalancerIPs", "192.0.2.1, 2001:db8::1"),
                    ("metallb.io/address-pool", "web"),
                    ("metallb.universe.tf/allow-shared-ip", "k"),
                ],
                None,
            ),
            &labels(&[("team", "a")]),
        )
        .unwrap();
        assert_eq!(r.key.to_string(), "shop/web");
        assert_eq!(r.addresses, [ip("192.0.2.1"), ip("2001:db8::1")]);
        assert_eq!(r.pool.as_deref(), Some("web"));
        assert_eq!(r.sharing_key.as_deref(), Some("k"), "deprecated annotation");
        assert_eq!(r.ports, [(Protocol::Tcp, 80), (Protocol::Udp, 53)]);
        assert_eq!(r.families, Families::PreferDual(Family::V4));
        assert_eq!(r.namespace_labels, labels(&[("team", "a")]));
        let r = Request::from_service(&service(&[], Some("192.0.2.7")), &BTreeMap::new()).unwrap();
        assert_eq!(r.addresses, [ip("192.0.2.7")]);
        let e = Request::from_service(
            &service(
                &[("metallb.io/loadBalancerIPs", "192.0.2.1")],
                Some("192.0.2.7"),
            ),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("metadata.annotations[metallb.io/loadBalancerIPs]"),
            "{e}"
        );
        let e = Request::from_service(
            &service(&[("metallb.io/loadBalancerIPs", "192.0.2")], None),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("\"192.0.2\" is not an IP address"),
            "{e}"
        );
    }

    #[test]
    fn restore_keeps_valid_addresses_and_explains_the_rest() {
        let mut p = pool("p", &["192.0.2.0/24"]);
        p.auto_assign = false;
        let mut a = alloc(vec![p]);
        let r = req("d", "a");
        assert_eq!(
            addrs(&a.restore(&r, &[ip("192.0.2.50")]).unwrap()),
            ["192.0.2.50"]
        );
        assert_eq!(
            addrs(&a.assign(&r).unwrap()),
            ["192.0.2.50"],
            "assign keeps it even from an autoAssign=false pool"
        );
        let e = a.restore(&req("d", "b"), &[ip("192.0.2.50")]).unwrap_err();
        assert!(matches!(e, AllocError::InUse { .. }));
        let e = a.restore(&req("d", "c"), &[ip("10.0.0.1")]).unwrap_err();
        assert_eq!(e.to_string(), "no pool contains 10.0.0.1");
        let mut r = req("d", "e");
        r.addresses = vec![ip("192.0.2.60")];
        let e = a.restore(&r, &[ip("192.0.2.61")]).unwrap_err();
        assert!(matches!(e, AllocError::StatusMismatch { .. }));
    }

    #[test]
    fn set_pools_keeps_what_still_fits() {
        let mut a = alloc(vec![
            pool("a", &["10.0.0.0/30"]),
            pool("b", &["10.0.1.0/30"]),
        ]);
        a.assign(&req("d", "1")).unwrap();
        let mut r = req("d", "2");
        r.pool = Some("b".into());
        a.assign(&r).unwrap();
        let evicted = a
            .set_pools(vec![pool("renamed", &["10.0.0.0/29"])])
            .unwrap();
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].0, r.key);
        assert_eq!(evicted[0].1.to_string(), "no pool contains 10.0.1.0");
        assert_eq!(
            a.allocation(&ServiceKey::new("d", "1")).unwrap().pool,
            "renamed"
        );
        let e = a
            .set_pools(vec![
                pool("x", &["10.0.0.0/24"]),
                pool("y", &["10.0.0.128/25"]),
            ])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "pools \"x\" and \"y\" overlap (10.0.0.0-10.0.0.255 and 10.0.0.128-10.0.0.255)"
        );
        assert_eq!(a.pools()[0].name, "renamed", "unchanged after an error");
        assert!(matches!(
            Allocator::new(vec![
                pool("x", &["10.0.0.0/24"]),
                pool("x", &["10.1.0.0/24"])
            ]),
            Err(AllocError::DuplicatePool(_))
        ));
    }

    #[test]
    fn pool_stats_count_like_metallb() {
        let mut p = pool("p", &["192.168.10.0/24", "fc00::/124", "2001:db8::/32"]);
        p.avoid_buggy_ips = true;
        let mut a = alloc(vec![p]);
        let s = a.pool_stats()["p"];
        assert_eq!((s.available_ipv4, s.assigned_ipv4), (254, 0));
        assert_eq!(s.available_ipv6, i64::MAX, "saturates");
        a.assign(&req("d", "x")).unwrap();
        let status: IPAddressPoolStatus = a.pool_stats()["p"].into();
        assert_eq!((status.assigned_ipv4, status.available_ipv4), (1, 253));
    }

    #[test]
    fn ten_thousand_services() {
        let mut a = alloc(vec![
            pool("a", &["10.0.0.0/18"]),
            pool("b", &["10.1.0.0/16"]),
        ]);
        let mut seen = BTreeSet::new();
        for i in 0..10_000 {
            let mut r = req("ns", &format!("svc-{i}"));
            if i % 10 == 0 {
                r.sharing_key = Some("shared".into());
                r.ports = vec![(Protocol::Tcp, u16::try_from(i % 1000).unwrap() + 1)];
            }
            let got = a.assign(&r).unwrap();
            assert_eq!(got.addresses.len(), 1);
            if r.sharing_key.is_none() {
                assert!(
                    seen.insert(got.addresses[0]),
                    "{} given twice",
                    got.addresses[0]
                );
            }
        }
        let s = a.pool_stats();
        // 9000 unshared addresses plus the shared ones: 1000 Services over 100 distinct
        // ports pack onto one address until a port repeats, so 10 addresses.
        assert_eq!(s["a"].assigned_ipv4, 9000 + 10);
        assert_eq!(s["b"].assigned_ipv4, 0);
        a.check_invariants();
    }

    // ===== invariants and properties =====

    impl Allocator {
        /// The internal indexes agree with the held allocations, and the sharing rule holds.
        fn check_invariants(&self) {
            let mut expect: BTreeMap<IpAddr, BTreeSet<ServiceKey>> = BTreeMap::new();
            for (k, h) in &self.services {
                for ip in &h.addresses {
                    expect.entry(*ip).or_default().insert(k.clone());
                    assert_eq!(self.pool_index(*ip), Some(h.pool), "{ip} outside its pool");
                    let p = &self.pools[h.pool];
                    assert!(!(p.avoid_buggy_ips && is_buggy(*ip)), "buggy {ip} held");
                }
            }
            assert_eq!(expect.len(), self.ips.len());
            for (ip, holders) in &expect {
                let u = &self.ips[ip];
                assert_eq!(&u.holders, holders);
                let (f, v) = split(*ip);
                assert!(self.used[f.index()].containing(v).is_some());
                if holders.len() > 1 {
                    let hs: Vec<&Held> = holders.iter().map(|k| &self.services[k]).collect();
                    for (i, x) in hs.iter().enumerate() {
                        assert!(x.sharing_key.is_some(), "{ip} shared without a key");
                        assert_eq!(x.sharing_key, u.sharing_key);
                        for y in &hs[i + 1..] {
                            assert!(x.ports.is_disjoint(&y.ports), "{ip}: ports overlap");
                        }
                    }
                }
                if let Some(k) = &u.sharing_key {
                    assert!(self.shared[k].contains(ip));
                }
            }
            let in_used: usize = self
                .used
                .iter()
                .flat_map(|s| s.map.iter())
                .map(|(s, e)| usize::try_from(e - s + 1).unwrap())
                .sum();
            assert_eq!(in_used, self.ips.len(), "used set out of step");
            let shared: usize = self.shared.values().map(BTreeSet::len).sum();
            assert_eq!(
                shared,
                self.ips
                    .values()
                    .filter(|u| u.sharing_key.is_some())
                    .count()
            );
        }
    }

    /// Pools covering every rule: v4, v6, dual, avoidBuggyIPs across a .255/.0 boundary,
    /// autoAssign=false, and a scoped pool with a priority.
    fn test_pools() -> Vec<Pool> {
        let mut buggy = pool("buggy", &["10.0.0.254-10.0.1.1"]);
        buggy.avoid_buggy_ips = true;
        let mut manual = pool("manual", &["10.2.0.0/31"]);
        manual.auto_assign = false;
        let mut scoped = pool("scoped", &["10.3.0.0/31", "2001:db8:3::/127"]);
        scoped.scope = Some(PoolScope {
            priority: Some(5),
            namespaces: BTreeSet::from(["gold".to_owned()]),
            ..Default::default()
        });
        vec![
            pool("v4", &["10.1.0.0/31"]),
            pool("v6", &["2001:db8:1::/127"]),
            pool("dual", &["10.4.0.0/31", "2001:db8:4::/127"]),
            buggy,
            manual,
            scoped,
        ]
    }

    /// Every address of the test pools plus one outside them.
    fn universe() -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = [
            "10.0.0.254",
            "10.0.0.255",
            "10.0.1.0",
            "10.0.1.1",
            "10.1.0.0",
            "10.1.0.1",
            "10.2.0.0",
            "10.2.0.1",
            "10.3.0.0",
            "10.3.0.1",
            "10.4.0.0",
            "10.4.0.1",
            "2001:db8:1::",
            "2001:db8:1::1",
            "2001:db8:3::",
            "2001:db8:3::1",
            "2001:db8:4::",
            "2001:db8:4::1",
            "192.0.2.1",
        ]
        .iter()
        .map(|s| ip(s))
        .collect();
        v.sort();
        v
    }

    #[derive(Debug, Clone)]
    enum Op {
        Assign(Request),
        Release(ServiceKey),
        Restore(Request, Vec<IpAddr>),
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let fam = prop_oneof![Just(Family::V4), Just(Family::V6)];
        let families = (0..3u8, fam).prop_map(|(k, f)| match k {
            0 => Families::Single(f),
            1 => Families::PreferDual(f),
            _ => Families::RequireDual(f),
        });
        let ports = proptest::collection::btree_set(
            (
                prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)],
                1..4u16,
            ),
            0..3,
        );
        (
            0..6usize,
            prop_oneof![Just("default"), Just("gold")],
            families,
            ports,
            prop_oneof![3 => Just(None), 1 => Just(Some("a")), 1 => Just(Some("b"))],
            prop_oneof![
                6 => Just(None),
                1 => Just(Some("manual")),
                1 => Just(Some("scoped")),
                1 => Just(Some("v6")),
                1 => Just(Some("nope"))
            ],
            proptest::collection::vec(proptest::sample::select(universe()), 0..3),
            proptest::bool::weighted(0.2),
        )
            .prop_map(|(svc, ns, families, ports, key, pool, addrs, explicit)| {
                let mut r = req(ns, &format!("s{svc}"));
                r.families = families;
                r.ports = ports.into_iter().collect();
                r.sharing_key = key.map(String::from);
                r.pool = pool.map(String::from);
                if explicit {
                    r.addresses = addrs;
                }
                r
            })
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => arb_request().prop_map(Op::Assign),
            2 => (0..6usize, prop_oneof![Just("default"), Just("gold")])
                .prop_map(|(i, ns)| Op::Release(ServiceKey::new(ns, format!("s{i}")))),
            2 => (
                arb_request(),
                proptest::collection::vec(proptest::sample::select(universe()), 1..3)
            )
                .prop_map(|(r, ips)| Op::Restore(r, ips)),
        ]
    }

    fn apply(a: &mut Allocator, op: &Op) -> Result<Option<Allocation>, AllocError> {
        match op {
            Op::Assign(r) => a.assign(r).map(Some),
            Op::Release(k) => Ok(a.release(k)),
            Op::Restore(r, ips) => a.restore(r, ips).map(Some),
        }
    }

    proptest! {
        /// A CIDR and the range it spans parse to the same block, whose widest prefix is the
        /// CIDR's length; host bits are cleared.
        #[test]
        fn address_blocks_round_trip(addr in any::<u32>(), len in 0u8..=32, v6 in any::<u128>(), len6 in 0u8..=128) {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap();
            let (first, last) = parse_address_block(&format!("{}/{len}", Ipv4Addr::from(addr))).unwrap();
            prop_assert_eq!((first, last), (IpAddr::V4(net.network()), IpAddr::V4(net.broadcast())));
            prop_assert_eq!(parse_address_block(&format!("{first}-{last}")).unwrap(), (first, last));
            prop_assert_eq!(widest_prefix(first, last), Some(len));
            let net6 = ipnet::Ipv6Net::new(Ipv6Addr::from(v6), len6).unwrap();
            let (first, last) = parse_address_block(&net6.to_string()).unwrap();
            prop_assert_eq!((first, last), (IpAddr::V6(net6.network()), IpAddr::V6(net6.broadcast())));
            prop_assert_eq!(widest_prefix(first, last), Some(len6));
        }

        /// Arbitrary text never panics the block parser.
        #[test]
        fn address_block_parser_never_panics(text in "\\PC{0,40}") {
            let _ = parse_address_block(&text);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn allocation_invariants_hold(ops in proptest::collection::vec(arb_op(), 1..60), seed in any::<u64>()) {
            let pools = test_pools();
            let mut a = Allocator::new(pools.clone()).unwrap();
            // The same pools in another order.
            let mut shuffled = pools.clone();
            let n = shuffled.len();
            for i in 0..n {
                let j = usize::try_from(seed.rotate_left(u32::try_from(i).unwrap()) % u64::try_from(n).unwrap()).unwrap();
                shuffled.swap(i, j);
            }
            let mut b = Allocator::new(shuffled).unwrap();
            for op in &ops {
                let got = apply(&mut a, op);
                prop_assert_eq!(&got, &apply(&mut b, op), "pool order changed the result");
                a.check_invariants();
                if let (Op::Assign(r) | Op::Restore(r, _), Ok(Some(al))) = (op, &got) {
                    let p = a.pools().iter().find(|p| p.name == al.pool).unwrap();
                    prop_assert!(r.families.accepts(&al.addresses), "{:?} for {:?}", al, r.families);
                    for ip in &al.addresses {
                        prop_assert!(p.contains(*ip));
                    }
                    prop_assert!(p.serves(r));
                    if let Op::Assign(r) = op {
                        // Idempotent (on both, so that they stay in step).
                        prop_assert_eq!(a.assign(r).unwrap(), al.clone());
                        prop_assert_eq!(b.assign(r).unwrap(), al.clone());
                        if !r.addresses.is_empty() {
                            prop_assert!(same_set(&r.addresses, &al.addresses));
                        }
                        if let Some(want) = &r.pool {
                            prop_assert_eq!(want, &al.pool);
                        }
                    }
                }
                if let (Op::Assign(r) | Op::Restore(r, _), Err(_)) = (op, &got) {
                    prop_assert!(a.allocation(&r.key).is_none());
                }
            }
        }

        #[test]
        fn auto_assign_never_uses_manual_pools(reqs in proptest::collection::vec(arb_request(), 1..40)) {
            let mut a = Allocator::new(test_pools()).unwrap();
            for mut r in reqs {
                r.addresses.clear();
                r.pool = None;
                a.release(&r.key);
                if let Ok(al) = a.assign(&r) {
                    prop_assert_ne!(al.pool.as_str(), "manual");
                    if r.key.namespace != "gold" {
                        prop_assert_ne!(al.pool.as_str(), "scoped");
                    }
                }
                a.check_invariants();
            }
        }
    }
}
