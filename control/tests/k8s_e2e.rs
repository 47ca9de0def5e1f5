//! Kubernetes, end to end with real processes: the API stand-in (`sluice-kube-standin`, a real
//! HTTP server with the API's semantics), `sluice-control` reconciling from it, the real
//! `sluice-dataplane` forwarding real TCP to real servers in the namespace testbed, and BIRD 2
//! peering with control. The pool, the BGP peer and the BGP advertisement are CRDs
//! (`sluice.io`, MetalLB's field names; the peer reaches the speaker at run time); the Service and its EndpointSlice are what Kubernetes would write:
//!
//! 1. a new LoadBalancer Service gets the pool's address in `status.loadBalancer.ingress`, and
//!    the dataplane forwards to its ready endpoints (NAT, port 80 → target port 8080) — the
//!    time from creating the Service until its table is published is printed and must stay
//!    under 3 s (the budget is 1 s; the slack keeps a loaded 2-core machine from
//!    failing it), then a connection through the VIP must be answered. BIRD has the VIP's
//!    route with the advertisement's community;
//! 2. scaling the endpoints up (b4 joins) and down (b1 leaves) changes the spread;
//! 3. an endpoint turning terminating-but-serving drains: the connections open on it all
//!    complete, new ones avoid it;
//! 4. a Service asking for an address outside every pool gets a `AllocationFailed` Event and
//!    no address; another one, when the one-address pool is taken, gets a pool-exhausted Event;
//! 5. deleting the Service withdraws its route from BIRD and frees the address, which the
//!    waiting Service then gets.
//!
//! The test thread moves into the client's namespace (`Netns::enter`), so the stand-in,
//! control, BIRD and the test's own kube client all meet on that namespace's loopback; the
//! dataplane runs in the LB namespace. Namespaces, processes (killed by PID), the region and
//! temp files are removed whatever happens. Needs root, BIRD and the testbed binaries.
#![allow(clippy::disallowed_types)] // std::time::Instant: a test's own deadlines.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Cleanup, ctl, wait_route};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice_dataplane::tables::Writer;
use sluice_testbed::{
    BackendMode, OneArm, Proc, addr, bin_path, client_result, dataplane_test_config, free_port,
    run_client,
};

const TARGET_PORT: u16 = 8080;
const PREFIX: &str = "10.90.0.100/32";
const WEB: &str = "default/web:80/tcp@10.90.0.100";
const WEB6: &str = "default/web:80/tcp@fd90::100";

/// The test's kube calls, run on a runtime of the test thread (inside the client namespace).
struct Kube {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Kube {
    fn new(kubeconfig: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .expect("config");
            Client::try_from(cfg).expect("client")
        });
        Self { rt, client }
    }

    fn crd(&self, kind: &str, plural: &str) -> Api<DynamicObject> {
        self.crd_versioned(kind, plural, "v1beta1")
    }

    fn crd_versioned(&self, kind: &str, plural: &str, version: &str) -> Api<DynamicObject> {
        let ar = ApiResource {
            group: "sluice.io".into(),
            version: version.into(),
            api_version: format!("sluice.io/{version}"),
            kind: kind.into(),
            plural: plural.into(),
        };
        Api::namespaced_with(self.client.clone(), "sluice-system", &ar)
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn slices(&self) -> Api<EndpointSlice> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn create<K>(&self, api: &Api<K>, obj: Value)
    where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(obj).expect("object");
        self.rt
            .block_on(api.create(&PostParams::default(), &obj))
            .expect("create");
    }

    fn ingress(&self, name: &str) -> Vec<String> {
        let svc = self.rt.block_on(self.services().get(name)).expect("get");
        svc.status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip)
            .collect()
    }

    /// `(reason, note)` of the events about Service `name`.
    fn events(&self, name: &str) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), "default");
        self.rt
            .block_on(api.list(&Default::default()))
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }
}

fn service(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": "default", "annotations": annotations },
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "sluice.io/lb",
            "selector": { "app": name },
            "ports": [ { "name": "http", "port": 80, "protocol": "TCP", "targetPort": TARGET_PORT } ],
            "ipFamilyPolicy": "PreferDualStack",
            "ipFamilies": ["IPv4", "IPv6"],
        },
    })
}

/// An EndpointSlice of `web` for one family (`"IPv4"`, `"IPv6"`):
/// `(backend index, ready, serving, terminating)`.
fn slice(family: &str, endpoints: &[(usize, bool, bool, bool)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|&(i, ready, serving, terminating)| {
            let a = if family == "IPv4" {
                addr::backend4(i)
            } else {
                addr::backend6(i)
            };
            json!({
                "addresses": [a],
                "conditions": { "ready": ready, "serving": serving, "terminating": terminating },
                "nodeName": "lb1",
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("web-{}", family.to_lowercase()), "namespace": "default",
            "labels": { "kubernetes.io/service-name": "web" },
        },
        "addressType": family,
        "ports": [ { "name": "http", "port": TARGET_PORT, "protocol": "TCP" } ],
        "endpoints": eps,
    })
}

/// Sets both of `web`'s EndpointSlices (IPv4 and IPv6) to `endpoints`.
fn set_slices(k: &Kube, endpoints: &[(usize, bool, bool, bool)]) {
    for family in ["IPv4", "IPv6"] {
        k.rt.block_on(k.slices().patch(
            &format!("web-{}", family.to_lowercase()),
            &PatchParams::default(),
            &Patch::Merge(&slice(family, endpoints)),
        ))
        .expect("patch slice");
    }
}

/// Short connections through the IPv4 VIP; all must succeed. Returns the spread.
fn traffic(tb: &OneArm, connections: usize) -> BTreeMap<String, usize> {
    traffic_to(tb, &format!("{}:80", addr::VIP4), connections)
}

/// Short connections to `target`; all must succeed. Returns the spread.
fn traffic_to(tb: &OneArm, target: &str, connections: usize) -> BTreeMap<String, usize> {
    let n = connections.to_string();
    let args = ["--connections", &n, "--size", "300", "--concurrency", "4"];
    let out = run_client(&tb.client, target, &args, Duration::from_secs(120)).expect("client");
    let (ok, failed, per) = client_result(&out).expect("RESULT line");
    assert_eq!((ok, failed), (connections, 0), "{out}");
    println!("spread of {connections}: {per:?}");
    per
}

/// Polls `sluicectl backends WEB` until `check` holds on `name → state` (up to 30 s).
fn wait_states(socket: &Path, what: &str, check: impl Fn(&BTreeMap<String, String>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluicectl"))
            .arg("--socket")
            .arg(socket)
            .args(["-o", "json", "backends", WEB])
            .output()
            .expect("sluicectl");
        let states: BTreeMap<String, String> = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                v["backends"].as_array().map(|bs| {
                    bs.iter()
                        .map(|b| {
                            (
                                b["name"].as_str().unwrap_or("").to_owned(),
                                b["state"].as_str().unwrap_or("").to_owned(),
                            )
                        })
                        .collect()
                })
            })
            .unwrap_or_default();
        if check(&states) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {states:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn services_and_endpoints_from_kubernetes_are_forwarded_announced_and_withdrawn() {
    let pid = std::process::id();
    let region = format!("ctl-k8s-{pid}");
    let _ = Writer::remove(&region);
    let dir = PathBuf::from(format!("/tmp/sluice-k8s-{pid}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _cleanup = Cleanup {
        region: region.clone(),
        files: vec![dir.clone()],
    };
    let kubeconfig = dir.join("kubeconfig");
    let cfg = dir.join("control.toml");
    let dp_cfg = dir.join("dataplane.toml");
    let bird_conf = dir.join("bird.conf");
    let bird_sock = dir.join("bird.ctl");
    let socket = dir.join("control.sock");
    let dataplane = bin_path("sluice-dataplane").expect("sluice-dataplane");
    let standin = bin_path("sluice-kube-standin").expect("sluice-kube-standin");

    let tb = OneArm::new("k8s", 4, BackendMode::Nat).expect("testbed");
    let _servers = tb
        .start_servers(&bin_path("tb-server").expect("tb-server"), TARGET_PORT)
        .expect("servers");
    // From here on this thread, what it spawns and its sockets live in the client namespace.
    tb.client.enter().expect("enter the client namespace");

    let api_port = free_port();
    let mut cmd = std::process::Command::new(&standin);
    cmd.args(["--listen", &format!("127.0.0.1:{api_port}")])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stderr(Stdio::inherit());
    let (_api, _) = Proc::spawn_ready(
        "sluice-kube-standin",
        &mut cmd,
        "sluice-kube-standin ready",
        Duration::from_secs(30),
    )
    .expect("stand-in ready");
    let k = Kube::new(&kubeconfig);

    std::fs::write(
        &bird_conf,
        format!(
            "router id {};\nlog stderr all;\nprotocol device {{ scan time 1; }}\n\
             protocol bgp sluice {{\n  local 127.0.0.1 as 64500;\n  neighbor 127.0.0.2 as 64512;\n  \
             multihop 2;\n  hold time 9;\n  ipv4 {{ import all; export none; }};\n}}\n",
            addr::CLIENT4
        ),
    )
    .expect("bird.conf");
    let mut bird_cmd = std::process::Command::new("bird");
    bird_cmd
        .args(["-f", "-c"])
        .arg(&bird_conf)
        .arg("-s")
        .arg(&bird_sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _bird = Proc::spawn("bird", &mut bird_cmd).expect("bird");

    // The cluster's side: the namespace, this node, the pool (one address) and the BGP
    // advertisement, as MetalLB users write them (group switched to sluice.io).
    let namespaces: Api<Namespace> = Api::all(k.client.clone());
    k.create(
        &namespaces,
        json!({ "metadata": { "name": "sluice-system" } }),
    );
    let nodes: Api<Node> = Api::all(k.client.clone());
    k.create(
        &nodes,
        json!({ "metadata": { "name": "lb1", "labels": { "sluice.io/lb": "true" } } }),
    );
    k.create(
        &k.crd("IPAddressPool", "ipaddresspools"),
        json!({
            "apiVersion": "sluice.io/v1beta1", "kind": "IPAddressPool",
            "metadata": { "name": "web", "namespace": "sluice-system" },
            "spec": { "addresses": [PREFIX, "fd90::100/128"] },
        }),
    );
    k.create(
        &k.crd("BGPAdvertisement", "bgpadvertisements"),
        json!({
            "apiVersion": "sluice.io/v1beta1", "kind": "BGPAdvertisement",
            "metadata": { "name": "web", "namespace": "sluice-system" },
            "spec": {
                "ipAddressPools": ["web"],
                "communities": ["64512:200"],
                "nodeSelectors": [ { "matchLabels": { "sluice.io/lb": "true" } } ],
            },
        }),
    );

    k.create(
        &k.crd_versioned("BGPPeer", "bgppeers", "v1beta2"),
        json!({
            "apiVersion": "sluice.io/v1beta2", "kind": "BGPPeer",
            "metadata": { "name": "router", "namespace": "sluice-system" },
            "spec": {
                "myASN": 64512, "peerASN": 64500,
                "peerAddress": "127.0.0.1", "sourceAddress": "127.0.0.2",
                "holdTime": "9s",
                "nodeSelectors": [ { "matchLabels": { "sluice.io/lb": "true" } } ],
            },
        }),
    );

    let mut config = format!(
        "[node]\nname = \"lb1\"\nipv4 = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{}\"\n\n\
         [api]\nsocket = \"{}\"\n\n\
         [tables]\nregion = \"{region}\"\nmax_services = 16\nmax_workers = 4\narena_mb = 4\n\n\
         [kubernetes]\nkubeconfig = \"{}\"\ntable_size = 4093\nlease_duration = \"3s\"\n",
        addr::LB4,
        free_port(),
        socket.display(),
        kubeconfig.display(),
    );
    for i in 0..4 {
        let mac = addr::mac_str(addr::backend_host(i));
        config += &format!(
            "\n[[kubernetes.next_hops]]\nprefix = \"{}/32\"\nmac = \"{mac}\"\n\
             \n[[kubernetes.next_hops]]\nprefix = \"{}/128\"\nmac = \"{mac}\"\n",
            addr::backend4(i),
            addr::backend6(i),
        );
    }
    config += "\n[bgp]\ngraceful_shutdown_wait = \"1s\"\n";
    std::fs::write(&cfg, &config).expect("config");
    let mut control_cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-control"));
    control_cmd
        .args(["--config".as_ref(), cfg.as_os_str()])
        .stderr(Stdio::inherit());
    let (_control, _) = Proc::spawn_ready(
        "sluice-control",
        &mut control_cmd,
        "sluice-control ready",
        Duration::from_secs(60),
    )
    .expect("control ready");
    std::fs::write(&dp_cfg, dataplane_test_config(&region, None)).expect("dataplane config");
    let mut dp_cmd = tb.lb.command(&dataplane);
    dp_cmd
        .args(["--config".as_ref(), dp_cfg.as_os_str()])
        .stderr(Stdio::inherit());
    let (_dataplane, _) = Proc::spawn_ready(
        "sluice-dataplane",
        &mut dp_cmd,
        "sluice-dataplane ready",
        Duration::from_secs(60),
    )
    .expect("dataplane ready");
    // Control has the lease (it is the only daemon) before the Service appears.
    wait_for("control to lead", Duration::from_secs(30), || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluicectl"))
            .arg("--socket")
            .arg(&socket)
            .args(["-o", "json", "events"])
            .output()
            .expect("sluicectl events");
        String::from_utf8_lossy(&out.stdout)
            .contains("allocates addresses")
            .then_some(())
    });

    // 1. A new Service with three ready endpoints: address, forwarding, route.
    let created = Instant::now();
    let three = [
        (0, true, true, false),
        (1, true, true, false),
        (2, true, true, false),
    ];
    k.create(&k.slices(), slice("IPv4", &three));
    k.create(&k.slices(), slice("IPv6", &three));
    k.create(&k.services(), service("web", json!({})));
    wait_for("web published", Duration::from_secs(30), || {
        ctl(&socket, &["services"])
            .to_string()
            .contains(WEB)
            .then_some(())
    });
    let took = created.elapsed();
    println!("Service created → address allocated and its table published: {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let target = format!("{}:80", addr::VIP4);
    run_client(
        &tb.client,
        &target,
        &["--connections", "1"],
        Duration::from_secs(10),
    )
    .expect("the first connection through the VIP");
    println!(
        "… and the first connection answered: {:?}",
        created.elapsed()
    );
    assert_eq!(k.ingress("web"), [addr::VIP4, addr::VIP6], "dual-stack");
    let spread = traffic(&tb, 60);
    assert_eq!(
        spread.keys().map(String::as_str).collect::<Vec<_>>(),
        ["b1", "b2", "b3"],
        "ready endpoints only"
    );
    wait_for(
        "web's IPv6 service published",
        Duration::from_secs(30),
        || {
            ctl(&socket, &["services"])
                .to_string()
                .contains(WEB6)
                .then_some(())
        },
    );
    let spread = traffic_to(&tb, &format!("[{}]:80", addr::VIP6), 40);
    assert_eq!(spread.len(), 3, "IPv6 too: {spread:?}");
    let (out, _) = wait_route(
        &tb.client,
        &bird_sock,
        PREFIX,
        "got the VIP",
        Duration::from_secs(30),
        |o| o.contains(PREFIX),
    );
    assert!(
        out.contains("(64512,200)"),
        "advertisement's community:\n{out}"
    );
    assert!(out.contains(addr::LB4), "next hop is the node:\n{out}");
    assert!(
        k.events("web")
            .iter()
            .any(|(r, n)| r == "IPAllocated" && n.contains(addr::VIP4)),
        "{:?}",
        k.events("web")
    );

    // 2. Scale up (b4 joins), then down (b1 leaves).
    set_slices(
        &k,
        &[
            (0, true, true, false),
            (1, true, true, false),
            (2, true, true, false),
            (3, true, true, false),
        ],
    );
    wait_states(&socket, "b4 joined", |s| s.len() == 4);
    let spread = traffic(&tb, 80);
    assert_eq!(spread.len(), 4, "all four serve: {spread:?}");
    set_slices(
        &k,
        &[
            (1, true, true, false),
            (2, true, true, false),
            (3, true, true, false),
        ],
    );
    wait_states(&socket, "b1 left", |s| {
        !s.contains_key("10.90.0.11") && s.len() == 3
    });
    let spread = traffic(&tb, 60);
    assert!(!spread.contains_key("b1"), "{spread:?}");

    // 3. b2 terminating but serving: drains with long-lived connections open on it.
    let mut long_cmd = tb.client.command(bin_path("tb-client").expect("tb-client"));
    long_cmd
        .args(["--target", &target])
        .args(["--connections", "24", "--concurrency", "24"])
        .args(["--requests", "12", "--hold-ms", "250", "--size", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let long = Proc::spawn("long-lived tb-client", &mut long_cmd).expect("long client");
    std::thread::sleep(Duration::from_millis(500));
    set_slices(
        &k,
        &[
            (1, false, true, true),
            (2, true, true, false),
            (3, true, true, false),
        ],
    );
    wait_states(&socket, "b2 draining", |s| {
        s.get("10.90.0.12").is_some_and(|st| st == "draining")
    });
    let spread = traffic(&tb, 40);
    assert!(
        !spread.contains_key("b2"),
        "no new connection on the draining b2: {spread:?}"
    );
    let out = long
        .wait_output(Duration::from_secs(60))
        .expect("long client");
    let text = String::from_utf8_lossy(&out.stdout);
    let (ok, failed, per) = client_result(&text).expect("RESULT");
    println!("long-lived across the drain: {per:?}");
    assert_eq!((ok, failed), (24, 0), "{text}");
    assert!(
        per.contains_key("b2"),
        "some long-lived connections were on b2: {per:?}"
    );

    // 4. An address outside every pool; a second Service while the pool is taken.
    k.create(
        &k.services(),
        service(
            "outside",
            json!({ "metallb.io/loadBalancerIPs": "192.0.2.99" }),
        ),
    );
    k.create(&k.services(), service("waiting", json!({})));
    wait_for("AllocationFailed events", Duration::from_secs(30), || {
        let outside = k.events("outside");
        let waiting = k.events("waiting");
        (outside
            .iter()
            .any(|(r, n)| r == "AllocationFailed" && n.contains("192.0.2.99"))
            && waiting
                .iter()
                .any(|(r, n)| r == "AllocationFailed" && n.contains("exhausted")))
        .then_some(())
    });
    assert!(k.ingress("outside").is_empty());
    assert!(k.ingress("waiting").is_empty());

    // 5. Delete the Service: route withdrawn, address freed and handed to `waiting`.
    let deleted = Instant::now();
    k.rt.block_on(k.services().delete("web", &DeleteParams::default()))
        .expect("delete");
    let (_, took) = wait_route(
        &tb.client,
        &bird_sock,
        PREFIX,
        "lost the VIP",
        Duration::from_secs(30),
        |o| !o.contains(PREFIX),
    );
    println!(
        "Service deleted → route withdrawn at the router after {:?}",
        deleted.elapsed()
    );
    assert!(took < Duration::from_secs(10));
    let services = ctl(&socket, &["services"]);
    assert!(!services.to_string().contains(WEB), "{services:#}");
    wait_for(
        "waiting to get the freed address",
        Duration::from_secs(30),
        || (k.ingress("waiting") == [addr::VIP4, addr::VIP6]).then_some(()),
    );
}
