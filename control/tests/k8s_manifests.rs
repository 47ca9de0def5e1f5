//! MetalLB's own example manifests (`tests/fixtures/metallb/`, copied unchanged from its
//! `configsamples/` and documentation; see the README there) load through
//! `parse_manifests` unchanged, and again with the group switched to `sluice.io`, and parse to
//! the values MetalLB gives them: pools into address blocks and scopes, peers into session
//! settings, advertisements into selections and communities.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_control::k8s::crd::{
    BGPAdvertisement, BGPPeer, Community, CommunityValue, IPAddressPool, L2Advertisement, PeerAsn,
    PeerEndpoint, PeerPassword, community_aliases,
};
use sluice_control::k8s::ipam::{
    AllocError, Allocator, Families, Family, Pool, Request, ServiceKey,
};
use sluice_control::k8s::manifest::{Manifest, ManifestError, from_value, parse_manifests};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metallb")
}

fn load(file: &str) -> Vec<Manifest> {
    let text = fs::read_to_string(fixtures().join(file)).expect("read fixture");
    parse_manifests(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn pools(m: &[Manifest]) -> Vec<&IPAddressPool> {
    m.iter()
        .filter_map(|m| match m {
            Manifest::IPAddressPool(p) => Some(&**p),
            _ => None,
        })
        .collect()
}

fn peers(m: &[Manifest]) -> Vec<&BGPPeer> {
    m.iter()
        .filter_map(|m| match m {
            Manifest::BGPPeer(p) => Some(&**p),
            _ => None,
        })
        .collect()
}

fn bgp_ads(m: &[Manifest]) -> Vec<&BGPAdvertisement> {
    m.iter()
        .filter_map(|m| match m {
            Manifest::BGPAdvertisement(p) => Some(&**p),
            _ => None,
        })
        .collect()
}

fn l2_ads(m: &[Manifest]) -> Vec<&L2Advertisement> {
    m.iter()
        .filter_map(|m| match m {
            Manifest::L2Advertisement(p) => Some(&**p),
            _ => None,
        })
        .collect()
}

fn communities(m: &[Manifest]) -> Vec<Community> {
    m.iter()
        .filter_map(|m| match m {
            Manifest::Community(c) => Some((**c).clone()),
            _ => None,
        })
        .collect()
}

fn others(m: &[Manifest]) -> Vec<(String, String, Option<String>)> {
    m.iter()
        .filter_map(|m| match m {
            Manifest::Other {
                api_version,
                kind,
                name,
            } => Some((api_version.clone(), kind.clone(), name.clone())),
            _ => None,
        })
        .collect()
}

fn kinds(m: &[Manifest]) -> Vec<&str> {
    m.iter().map(Manifest::kind).collect()
}

const ROUTER_ID: Option<Ipv4Addr> = Some(Ipv4Addr::new(192, 0, 2, 1));

/// The docs' and configsamples' "example" pool.
fn assert_example_pool(p: &IPAddressPool, name: &str) {
    assert_eq!(p.metadata.name.as_deref(), Some(name));
    assert_eq!(p.metadata.namespace.as_deref(), Some("metallb-system"));
    let pool = p.validate().unwrap();
    assert_eq!(
        pool.blocks,
        [
            (ip("192.168.10.0"), ip("192.168.10.255")),
            (ip("192.168.9.1"), ip("192.168.9.5")),
            (ip("fc00:f853:ccd:e799::"), ip("fc00:f853:ccd:e799::f")),
        ]
    );
    assert!(pool.auto_assign);
    assert!(!pool.avoid_buggy_ips);
    assert_eq!(pool.scope, None);
    assert_eq!(pool.capacity(), (261, 16));
}

#[test]
fn every_fixture_loads_and_survives_the_group_switch() {
    let mut files: Vec<PathBuf> = fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 22, "{files:?}");
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        let file = path.display();
        let original = parse_manifests(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!original.is_empty(), "{file}");
        // The same manifests with MetalLB's group switched to Sluice's. sluice.io serves no
        // BFDProfile, so a switched one is refused, as `kubectl apply` would refuse it.
        let switched = text.replace("apiVersion: metallb.io/", "apiVersion: sluice.io/");
        match parse_manifests(&switched) {
            Ok(m) => assert_eq!(m, original, "{file}"),
            Err(e) => {
                assert!(text.contains("kind: BFDProfile"), "{file}: {e}");
                assert!(
                    e.to_string()
                        .contains("sluice.io has no kind \"BFDProfile\""),
                    "{e}"
                );
            }
        }
        // What a DynamicObject watch of sluice.io delivers: the typed object as JSON.
        for m in &original {
            let json = match m {
                Manifest::IPAddressPool(o) => serde_json::to_value(o),
                Manifest::BGPPeer(o) => serde_json::to_value(o),
                Manifest::BGPAdvertisement(o) => serde_json::to_value(o),
                Manifest::L2Advertisement(o) => serde_json::to_value(o),
                Manifest::Community(o) => serde_json::to_value(o),
                Manifest::Other { .. } => continue,
            }
            .unwrap();
            assert!(
                json["apiVersion"]
                    .as_str()
                    .unwrap()
                    .starts_with("sluice.io/")
            );
            assert_eq!(&from_value(&json).unwrap(), m, "{file}");
        }
    }
}

#[test]
fn ipaddresspool_simple() {
    let m = load("ipaddresspool_simple.yaml");
    assert_eq!(kinds(&m), ["IPAddressPool"]);
    assert_example_pool(pools(&m)[0], "example");
}

#[test]
fn ipaddresspool_with_selector() {
    let m = load("ipaddresspool_with_selector.yaml");
    let p = pools(&m)[0];
    let spec = &p.spec;
    assert_eq!(spec.addresses, ["192.168.20.0/24"]);
    assert!(spec.avoid_buggy_ips);
    let sa = spec.service_allocation.as_ref().unwrap();
    assert_eq!(sa.priority, Some(50));
    assert_eq!(sa.namespaces, ["namespace-a", "namespace-b"]);
    let pool = p.validate().unwrap();
    let scope = pool.scope.clone().unwrap();
    assert_eq!(scope.priority, Some(50));
    assert_eq!(scope.namespace_selectors[0].to_string(), "foo=bar");
    assert_eq!(scope.service_selectors[0].to_string(), "app=bar");
    assert_eq!(pool.capacity(), (254, 0), "avoidBuggyIPs drops .0 and .255");

    // "pinned to Service(s) which has a label matching ... app In [bar] created either in
    // namespace-a or namespace-b or any namespace has a label foo:bar" (MetalLB's docs).
    let mut alloc = Allocator::new(vec![pool]).unwrap();
    let mut r = Request::new(ServiceKey::new("namespace-a", "web"));
    r.labels = labels(&[("app", "bar")]);
    let got = alloc.assign(&r).unwrap();
    assert_eq!(got.addresses, [ip("192.168.20.1")], ".0 is avoided");
    let mut r = Request::new(ServiceKey::new("elsewhere", "web"));
    r.labels = labels(&[("app", "bar")]);
    r.namespace_labels = labels(&[("foo", "bar")]);
    assert_eq!(alloc.assign(&r).unwrap().addresses, [ip("192.168.20.2")]);
    let mut r = Request::new(ServiceKey::new("namespace-b", "no-label"));
    assert_eq!(
        alloc.assign(&r).unwrap_err(),
        AllocError::NoEligiblePool(r.key.clone())
    );
    r.addresses = vec![ip("192.168.20.9")];
    assert_eq!(
        alloc.assign(&r).unwrap_err().to_string(),
        "pool \"ippool-ns-service-alloc-sample\" does not serve namespace-b/no-label (its \
         serviceAllocation does not match)"
    );
}

#[test]
fn bgp_advertisements() {
    let m = load("bgpadv_selectspool_by_label.yaml");
    let a = bgp_ads(&m)[0].validate().unwrap();
    assert_eq!(a.name, "advertisement");
    assert!(a.selects_pool("any", &labels(&[("test", "bgp-with-advertisement")])));
    assert!(!a.selects_pool("any", &labels(&[("test", "other")])));
    assert_eq!((a.aggregation_length, a.aggregation_length_v6), (32, 128));

    let m = load("bgpadv_selectspool_by_list.yaml");
    let a = bgp_ads(&m)[0].validate().unwrap();
    assert!(a.selects_pool("test-addresspool", &BTreeMap::new()));
    assert!(!a.selects_pool("first-pool", &BTreeMap::new()));
    assert!(a.selects_peer("ebgp-single-hop0"));
    assert!(!a.selects_peer("other"));

    let m = load("bgpadvertisement_communities_localpref.yaml");
    let a = bgp_ads(&m)[0].validate().unwrap();
    assert_eq!(a.local_pref, Some(150));
    assert_eq!(
        a.communities(&BTreeMap::new()).unwrap().0,
        [0xFFFF_FF02],
        "65535:65282 is NO_ADVERTISE"
    );

    let m = load("bgpadvertisement_with_node_selector.yaml");
    let a = bgp_ads(&m)[0].validate().unwrap();
    assert_eq!(a.ip_address_pools, ["first-pool"]);
    assert!(a.applies_to_node(&labels(&[("kubernetes.io/hostname", "kind-worker")])));
    assert!(!a.applies_to_node(&labels(&[("kubernetes.io/hostname", "other")])));
}

#[test]
fn community_aliases_resolve() {
    let m = load("bgpadvertisement_community_alias.yaml");
    assert_eq!(kinds(&m), ["BGPAdvertisement", "Community"]);
    let aliases = community_aliases(&communities(&m)).unwrap();
    assert_eq!(
        aliases,
        BTreeMap::from([(
            "NO_ADVERTISE".to_owned(),
            CommunityValue::Standard(0xFFFF_FF02)
        )])
    );
    let a = bgp_ads(&m)[0].validate().unwrap();
    assert_eq!(
        a.communities(&aliases).unwrap(),
        (vec![0xFFFF_FF02], vec![])
    );
    let e = a.communities(&BTreeMap::new()).unwrap_err();
    assert_eq!(e.field, "spec.communities[0]");

    // The documentation's aliases, including one that is used.
    let m = load("docs_advanced_bgp.yaml");
    let aliases = community_aliases(&communities(&m)).unwrap();
    assert_eq!(
        aliases["vpn-only"],
        CommunityValue::Standard(1234 << 16 | 1)
    );
    let local = bgp_ads(&m)
        .into_iter()
        .map(|a| a.validate().unwrap())
        .find(|a| a.communities == ["vpn-only"])
        .unwrap();
    assert_eq!(local.local_pref, Some(100));
    assert_eq!(local.communities(&aliases).unwrap().0, [1234 << 16 | 1]);
}

#[test]
fn bgp_peers() {
    let m = load("bgppeer_simple.yaml");
    let p = peers(&m)[0].validate().unwrap();
    assert_eq!(p.name, "peer");
    assert_eq!(p.my_asn, 64512);
    assert_eq!(p.peer_asn, PeerAsn::Fixed(64512));
    assert_eq!(p.endpoint, PeerEndpoint::Address(ip("172.30.0.3")));
    assert_eq!(p.port, 179);
    assert!(p.applies_to_node(&BTreeMap::new()));
    let (cfg, warnings) = p.to_peer_config(ROUTER_ID, None).unwrap();
    assert!(cfg.is_ibgp());
    assert_eq!(cfg.router_id, ROUTER_ID.unwrap());
    assert!(warnings.is_empty());

    let m = load("bgppeer_with_bfdprofile.yaml");
    assert_eq!(kinds(&m), ["BFDProfile", "BGPPeer"]);
    assert_eq!(
        others(&m),
        [(
            "metallb.io/v1beta1".to_owned(),
            "BFDProfile".to_owned(),
            Some("testbfdprofile".to_owned())
        )]
    );
    let p = peers(&m)[0].validate().unwrap();
    assert_eq!(p.bfd_profile.as_deref(), Some("testbfdprofile"));
    let (_, warnings) = p.to_peer_config(ROUTER_ID, None).unwrap();
    assert_eq!(
        warnings,
        ["spec.bfdProfile: BFD is not supported by Sluice and is ignored"]
    );

    let m = load("bgppeer_with_session_options.yaml");
    let p = peers(&m)[0].validate().unwrap();
    assert_eq!(p.connect_time, Some(Duration::from_secs(120)));
    let e = p.to_peer_config(ROUTER_ID, None).unwrap_err();
    assert_eq!(
        e.field, "spec.connectTime",
        "the speaker retries at most every 60 s"
    );

    let m = load("bgppeer_with_vrf.yaml");
    let p = peers(&m)[0].validate().unwrap();
    assert_eq!(p.vrf.as_deref(), Some("red"));
    assert_eq!(
        p.to_peer_config(ROUTER_ID, None).unwrap_err().to_string(),
        "spec.vrf: peering from a VRF is not supported by Sluice's BGP speaker"
    );

    let m = load("bgppeer_withsecret.yaml");
    let p = peers(&m)[0].validate().unwrap();
    assert_eq!(p.hold_time, Some(Duration::from_secs(540)), "9m0s");
    assert_eq!(p.keepalive_time, Some(Duration::ZERO));
    assert_eq!(p.port, 179);
    assert_eq!(
        p.password,
        PeerPassword::Secret {
            name: "secretname".into(),
            namespace: None
        }
    );
    assert!(!format!("{p:?}").contains("pw"));
    // MetalLB/FRR accept a keepalive of 0 with a 9-minute hold time; Sluice's speaker sends
    // keepalives whenever the hold time is not 0, so it refuses that combination.
    let e = p.to_peer_config(ROUTER_ID, Some("pw")).unwrap_err();
    assert_eq!(e.field, "spec.keepaliveTime");
}

#[test]
fn deployments_keep_the_foreign_documents() {
    let m = load("deployment_bgp.yaml");
    assert_eq!(
        kinds(&m),
        [
            "IPAddressPool",
            "BGPAdvertisement",
            "BGPPeer",
            "BGPPeer",
            "Deployment",
            "Service"
        ]
    );
    assert_eq!(
        others(&m),
        [
            (
                "apps/v1".to_owned(),
                "Deployment".to_owned(),
                Some("nginx".to_owned())
            ),
            (
                "v1".to_owned(),
                "Service".to_owned(),
                Some("nginx".to_owned())
            ),
        ]
    );
    let pool = pools(&m)[0].validate().unwrap();
    assert_eq!(
        pool.blocks,
        [
            (ip("192.168.10.0"), ip("192.168.10.255")),
            (ip("fc00:f853:ccd:e799::"), ip("fc00:f853:ccd:e799::f")),
        ]
    );
    let empty = bgp_ads(&m)[0].validate().unwrap();
    assert_eq!(empty.name, "empty");
    assert!(
        empty.selects_pool("example", &BTreeMap::new()),
        "no selection: every pool"
    );
    assert!(empty.selects_peer("peerv6"));
    let v6 = peers(&m)[1].validate().unwrap();
    assert_eq!(
        v6.endpoint,
        PeerEndpoint::Address(ip("fc00:f853:ccd:e793::5"))
    );

    // The sample's dual-stack pool serves a RequireDualStack Service with one of each.
    let mut alloc = Allocator::new(vec![pool]).unwrap();
    let mut r = Request::new(ServiceKey::new("default", "nginx"));
    r.families = Families::RequireDual(Family::V4);
    assert_eq!(
        alloc.assign(&r).unwrap().addresses,
        [ip("192.168.10.0"), ip("fc00:f853:ccd:e799::")]
    );

    let m = load("deployment_l2.yaml");
    assert_eq!(
        kinds(&m),
        ["IPAddressPool", "L2Advertisement", "Deployment", "Service"]
    );
    let l2 = l2_ads(&m)[0].validate().unwrap();
    assert!(l2.selects_pool("example", &BTreeMap::new()));
    assert!(l2.interfaces.is_empty());
}

#[test]
fn simple_pools_with_advertisements() {
    let m = load("simple_pool_adv_bgp.yaml");
    assert_eq!(kinds(&m), ["IPAddressPool", "BGPAdvertisement"]);
    assert_example_pool(pools(&m)[0], "example");
    let m = load("simple_pool_adv_l2.yaml");
    assert_eq!(kinds(&m), ["IPAddressPool", "L2Advertisement"]);
    assert_example_pool(pools(&m)[0], "example");
    assert!(l2_ads(&m)[0].spec.ip_address_pools.is_empty());
}

#[test]
fn l2_advertisements() {
    let m = load("l2adv_selects_pools_by_list.yaml");
    let a = l2_ads(&m)[0].validate().unwrap();
    assert_eq!(a.ip_address_pools, ["first-pool"]);
    assert!(!a.selects_pool("second-pool", &BTreeMap::new()));
    let m = load("l2adv_with_node_selector.yaml");
    let a = l2_ads(&m)[0].validate().unwrap();
    assert!(a.applies_to_node(&labels(&[("kubernetes.io/hostname", "kind-control-plane")])));
    assert!(!a.applies_to_node(&labels(&[("kubernetes.io/hostname", "kind-worker")])));

    let m = load("docs_advanced_l2.yaml");
    assert_eq!(m.len(), 11);
    let ads: Vec<_> = l2_ads(&m)
        .into_iter()
        .map(|a| a.validate().unwrap())
        .collect();
    let tiered = ads.iter().find(|a| a.name == "tiered-zones").unwrap();
    assert_eq!(tiered.node_score(&labels(&[("zone", "primary")])), 100);
    assert_eq!(tiered.node_score(&labels(&[("zone", "secondary")])), 50);
    assert_eq!(tiered.node_score(&BTreeMap::new()), 0);
    let ifaces = ads
        .iter()
        .find(|a| a.ip_address_pools == ["third-pool"])
        .unwrap();
    assert_eq!(ifaces.interfaces, ["eth0", "eth1"]);
    let frontend = ads.iter().find(|a| a.name == "frontend-services").unwrap();
    assert!(frontend.selects_service(&labels(&[("tier", "frontend")])));
    assert!(!frontend.selects_service(&labels(&[("tier", "backend")])));
}

#[test]
fn documentation_pools() {
    let m = load("docs_configuration.yaml");
    assert_eq!(
        kinds(&m),
        [
            "IPAddressPool",
            "IPAddressPool",
            "L2Advertisement",
            "L2Advertisement",
            "BGPPeer",
            "IPAddressPool",
            "BGPAdvertisement",
            "BGPAdvertisement",
            "BFDProfile",
            "BGPPeer"
        ]
    );
    assert_example_pool(pools(&m)[0], "first-pool");
    assert_eq!(
        pools(&m)[1].validate().unwrap().blocks,
        [(ip("192.168.1.240"), ip("192.168.1.250"))]
    );
    let sample = peers(&m)[0].validate().unwrap();
    assert_eq!(
        (sample.my_asn, sample.peer_asn),
        (64500, PeerAsn::Fixed(64501))
    );

    let m = load("docs_advanced_ipaddresspool.yaml");
    let ps: Vec<Pool> = pools(&m).iter().map(|p| p.validate().unwrap()).collect();
    assert_eq!(ps[0].name, "cheap");
    assert!(ps[0].auto_assign);
    assert_eq!(ps[1].name, "expensive");
    assert!(!ps[1].auto_assign);
    assert_eq!(ps[1].blocks, [(ip("42.176.25.64"), ip("42.176.25.67"))]);
    assert_eq!(others(&m)[0].1, "Service");
    // "Addresses can still be specifically allocated from the expensive pool."
    let mut alloc = Allocator::new(ps[..2].to_vec()).unwrap();
    let auto = alloc
        .assign(&Request::new(ServiceKey::new("d", "auto")))
        .unwrap();
    assert_eq!(auto.pool, "cheap");
    let mut r = Request::new(ServiceKey::new("d", "pinned"));
    r.pool = Some("expensive".into());
    assert_eq!(alloc.assign(&r).unwrap().addresses, [ip("42.176.25.64")]);
    assert_eq!(alloc.pool_stats()["expensive"].available_ipv4, 3);

    let m = load("docs_advanced_bgp.yaml");
    // Host bits in the docs' CIDR are cleared, as MetalLB's parser does.
    assert_eq!(
        pools(&m)[0].validate().unwrap().blocks,
        [(ip("198.51.100.0"), ip("198.51.100.255"))]
    );
    let external = bgp_ads(&m)
        .into_iter()
        .map(|a| a.validate().unwrap())
        .find(|a| a.name == "external")
        .unwrap();
    assert_eq!(external.aggregation_length, 24);
    let peers: Vec<_> = peers(&m)
        .into_iter()
        .map(|p| p.validate().unwrap())
        .collect();
    let p180 = peers.iter().find(|p| p.port == 180).unwrap();
    assert!(p180.applies_to_node(&labels(&[("rack", "frontend"), ("network-speed", "fast")])));
    assert!(!p180.applies_to_node(&labels(&[("rack", "frontend"), ("network-speed", "slow")])));
    assert!(p180.applies_to_node(&labels(&[("kubernetes.io/hostname", "hostB")])));
    let local_as = peers.iter().find(|p| p.local_asn == Some(65410)).unwrap();
    assert_eq!(
        local_as.to_peer_config(ROUTER_ID, None).unwrap_err().field,
        "spec.localASN"
    );
    let gr = peers.iter().find(|p| p.enable_graceful_restart).unwrap();
    assert_eq!(gr.to_peer_config(ROUTER_ID, None).unwrap().1.len(), 1);
    assert!(
        others(&m)
            .iter()
            .any(|(api, kind, _)| api == "frrk8s.metallb.io/v1beta1" && kind == "FRRConfiguration")
    );
}

#[test]
fn typos_are_refused_with_their_path() {
    let text = fs::read_to_string(fixtures().join("ipaddresspool_with_selector.yaml")).unwrap();
    let typo = text.replace("namespaceSelectors", "namespaceSelector");
    let e = parse_manifests(&typo).unwrap_err();
    let ManifestError::Invalid {
        index,
        kind,
        name,
        field,
        ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(*index, Some(0));
    assert_eq!(kind, "IPAddressPool");
    assert_eq!(name, "ippool-ns-service-alloc-sample");
    assert_eq!(field, "spec.serviceAllocation.namespaceSelector");
    let bad_op = text.replace("operator: In", "operator: Inside");
    let e = parse_manifests(&bad_op).unwrap_err();
    assert!(
        e.to_string().ends_with(
            "spec.serviceAllocation.serviceSelectors[0].matchExpressions[0].operator: \
             \"Inside\" is not one of In, NotIn, Exists, DoesNotExist"
        ),
        "{e}"
    );
}
