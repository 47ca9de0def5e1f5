//! Kubernetes: MetalLB-shaped CRDs ([`crd`]) and manifests ([`manifest`]), address allocation
//! ([`ipam`]), leader election ([`lease`]), the translation of Services and EndpointSlices into
//! this node's services ([`translate`]) and the reconciler that runs it all ([`reconcile`]).
//!
//! The reconciler hands the table task a [`Cluster`]: what the cluster wants this node to
//! publish and announce. The table task publishes the config file's services and the cluster's
//! together ([`merge`]); the file wins a conflict.
use std::collections::BTreeMap;

use crate::config::{AddressBlock, AdvertisementDef, Desired, PeerDef, ServiceDef};

pub mod crd;
pub mod ipam;
pub mod lease;
pub mod manifest;
pub mod reconcile;
pub mod selector;
pub mod translate;

/// What the cluster wants this node to publish and announce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Services by name (`namespace/name:port/protocol@vip`).
    pub services: BTreeMap<String, ServiceDef>,
    /// The address pools, by name (for matching advertisements).
    pub pools: BTreeMap<String, Vec<AddressBlock>>,
    /// The BGP advertisements that apply to this node.
    pub advertisements: Vec<AdvertisementDef>,
    /// The BGP peers (`BGPPeer`s) that apply to this node.
    pub peers: Vec<PeerDef>,
}

/// The file's desired state with the cluster's services, pools and advertisements added.
/// A cluster service whose name or `(vip, port, protocol)` the file already uses, and a pool
/// whose name the file uses, are left out and named in the returned list.
#[must_use]
pub fn merge(file: &Desired, cluster: &Cluster) -> (Desired, Vec<String>) {
    let mut out = file.clone();
    let mut conflicts = Vec::new();
    let keys: std::collections::BTreeSet<_> = file.services.values().map(|d| d.key).collect();
    for (name, def) in &cluster.services {
        if out.services.contains_key(name) || keys.contains(&def.key) {
            conflicts.push(format!(
                "service {name}: the config file already publishes this name or address:port"
            ));
            continue;
        }
        out.services.insert(name.clone(), def.clone());
    }
    for (name, blocks) in &cluster.pools {
        if out.pools.contains_key(name) {
            conflicts.push(format!(
                "pool {name}: the config file defines a pool of that name"
            ));
            continue;
        }
        out.pools.insert(name.clone(), blocks.clone());
    }
    out.bgp
        .advertisements
        .extend(cluster.advertisements.iter().cloned());
    for p in &cluster.peers {
        if out
            .bgp
            .peers
            .iter()
            .any(|f| f.name == p.name || f.config.peer_address == p.config.peer_address)
        {
            conflicts.push(format!(
                "BGPPeer {}: the config file already has a peer of that name or address",
                p.name
            ));
            continue;
        }
        out.bgp.peers.push(p.clone());
    }
    (out, conflicts)
}
