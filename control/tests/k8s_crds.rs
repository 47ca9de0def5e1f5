//! Generates the CustomResourceDefinition of every Sluice kind
//! (`sluice_control::k8s::crd::crds`, i.e. `<T as CustomResourceExt>::crd()`) as YAML and fails
//! when it differs from the checked-in files under `deploy/crds/` (one file per CRD), as
//! `proto/tests/bootstrap.rs` does for the gRPC code. After changing a kind, rewrite them with:
//!
//! ```text
//! SLUICE_BLESS=1 cargo test -p sluice-control --test k8s_crds
//! ```
//!
//! Output is deterministic: the schema's maps are sorted and serde_yaml's output depends only
//! on the value.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use sluice_control::k8s::crd::crds;

/// Set to `1` to overwrite `deploy/crds/` instead of comparing against it.
const BLESS_VAR: &str = "SLUICE_BLESS";

const HEADER: &str = "# Generated from control/src/k8s/crd.rs by control/tests/k8s_crds.rs; do not \
                      edit.\n# Regenerate: SLUICE_BLESS=1 cargo test -p sluice-control --test \
                      k8s_crds\n";

fn crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
}

fn generated() -> BTreeMap<String, String> {
    crds()
        .into_iter()
        .map(|(file, crd)| {
            let yaml = serde_yaml::to_string(&crd).expect("CRD serializes");
            (file, format!("{HEADER}{yaml}"))
        })
        .collect()
}

fn checked_in() -> BTreeMap<String, String> {
    let Ok(dir) = fs::read_dir(crd_dir()) else {
        return BTreeMap::new();
    };
    dir.map(|e| e.expect("read deploy/crds entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&p).expect("read CRD file"))
        })
        .collect()
}

#[test]
fn crds_are_up_to_date() {
    let generated = generated();
    let existing = checked_in();
    let bless = std::env::var_os(BLESS_VAR).is_some_and(|v| v == "1");
    if bless {
        let dir = crd_dir();
        fs::create_dir_all(&dir).expect("create deploy/crds");
        for stale in existing.keys().filter(|k| !generated.contains_key(*k)) {
            fs::remove_file(dir.join(stale)).expect("remove stale CRD");
        }
        for (name, text) in &generated {
            fs::write(dir.join(name), text).expect("write CRD");
        }
        return;
    }
    let mismatched: Vec<&String> = generated
        .keys()
        .chain(existing.keys())
        .filter(|k| generated.get(*k) != existing.get(*k))
        .collect();
    assert!(
        mismatched.is_empty(),
        "deploy/crds/ is out of date ({mismatched:?} differ from what control/src/k8s/crd.rs \
         generates); run `{BLESS_VAR}=1 cargo test -p sluice-control --test k8s_crds` and commit \
         the result"
    );
}

/// The generated YAML reads back as CRDs of MetalLB's shape (the files are the same text, see
/// `crds_are_up_to_date`; this reads the generated text so that it also holds while blessing).
#[test]
fn crds_have_metallb_shape() {
    let crds: BTreeMap<String, CustomResourceDefinition> = generated()
        .into_iter()
        .map(|(name, text)| (name, serde_yaml::from_str(&text).expect("CRD parses")))
        .collect();
    let expect = [
        (
            "sluice.io_bgpadvertisements.yaml",
            "BGPAdvertisement",
            "v1beta1",
        ),
        ("sluice.io_bgppeers.yaml", "BGPPeer", "v1beta2"),
        ("sluice.io_communities.yaml", "Community", "v1beta1"),
        ("sluice.io_ipaddresspools.yaml", "IPAddressPool", "v1beta1"),
        (
            "sluice.io_l2advertisements.yaml",
            "L2Advertisement",
            "v1beta1",
        ),
    ];
    assert_eq!(crds.len(), expect.len());
    for (file, kind, version) in expect {
        let crd = &crds[file];
        assert_eq!(crd.spec.group, "sluice.io");
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, version);
        assert!(v.served && v.storage);
        let status = v.subresources.as_ref().and_then(|s| s.status.as_ref());
        assert_eq!(
            status.is_some(),
            kind == "IPAddressPool",
            "{kind}: status subresource"
        );
        let root = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap();
        let spec_required = root.required.iter().flatten().any(|r| r == "spec");
        assert_eq!(
            spec_required,
            kind == "IPAddressPool",
            "{kind}: spec required"
        );
        let spec = &root.properties.as_ref().unwrap()["spec"];
        let fields: Vec<&str> = spec
            .properties
            .as_ref()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let metallb: &[&str] = match kind {
            "IPAddressPool" => &[
                "addresses",
                "autoAssign",
                "avoidBuggyIPs",
                "serviceAllocation",
            ],
            "BGPPeer" => &[
                "bfdProfile",
                "connectTime",
                "disableMP",
                "dualStackAddressFamily",
                "dynamicASN",
                "ebgpMultiHop",
                "enableGracefulRestart",
                "holdTime",
                "interface",
                "keepaliveTime",
                "localASN",
                "myASN",
                "nodeSelectors",
                "password",
                "passwordSecret",
                "peerASN",
                "peerAddress",
                "peerPort",
                "routerID",
                "sourceAddress",
                "vrf",
            ],
            "BGPAdvertisement" => &[
                "aggregationLength",
                "aggregationLengthV6",
                "communities",
                "ipAddressPoolSelectors",
                "ipAddressPools",
                "localPref",
                "nodeSelectors",
                "peers",
                "serviceSelectors",
            ],
            "L2Advertisement" => &[
                "interfaces",
                "ipAddressPoolSelectors",
                "ipAddressPools",
                "nodeSelectors",
                "preferredNodeSelectors",
                "serviceSelectors",
            ],
            _ => &["communities"],
        };
        assert_eq!(fields, metallb, "{kind}: MetalLB's spec fields");
    }
    let pool = &crds["sluice.io_ipaddresspools.yaml"].spec.versions[0];
    let status = &pool
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap()
        .properties
        .as_ref()
        .unwrap()["status"];
    let fields: Vec<&str> = status
        .properties
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "assignedIPv4",
            "assignedIPv6",
            "availableIPv4",
            "availableIPv6",
            "conditions"
        ]
    );
}
