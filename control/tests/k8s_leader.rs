//! Kubernetes allocation with more than one daemon, restarts and watch expiry, against the API
//! stand-in (in this process, on loopback) and real `sluice-control` processes (no dataplane:
//! allocation and status need none):
//!
//! - **two daemons never hand out the same address**: two daemons campaign for the Lease while
//!   30 Services arrive for a 20-address pool; the leader is SIGKILLed half-way; the other
//!   takes over once the Lease expires and finishes. Exactly 20 Services hold addresses, all
//!   different and all in the pool; the others got a pool-exhausted Event. Deleting five
//!   frees five addresses for five waiting ones, still without a duplicate;
//! - **allocation survives restarts**: every daemon is stopped and a fresh one started: it
//!   rebuilds the allocation from the Services' status and rewrites none of them;
//! - **watch expiry**: the stand-in compacts its history and drops every watch (as after an
//!   etcd compaction and an apiserver restart); a Service deleted and another created
//!   meanwhile are both seen after the daemon's relist.
//!
//! Processes are killed by PID; regions and temp files are removed whatever happens.
#![allow(clippy::disallowed_types)] // std::time::Instant: a test's own deadlines.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Cleanup;
use serde_json::json;
use sluice_dataplane::tables::Writer;
use sluice_kube_standin::{Handle, Options, ResourceId};
use sluice_testbed::{Proc, free_port};

/// A stand-in on a runtime of its own, so the test thread may block.
struct Api {
    rt: tokio::runtime::Runtime,
    handle: Option<Handle>,
}

impl Api {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let handle = rt
            .block_on(sluice_kube_standin::start(Options::default()))
            .expect("stand-in");
        handle
            .insert(json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "sluice-system" } }))
            .expect("namespace");
        Self {
            rt,
            handle: Some(handle),
        }
    }

    fn h(&self) -> &Handle {
        self.handle.as_ref().expect("running")
    }

    fn pool(&self, first: &str, last: &str) {
        self.h()
            .insert(json!({
                "apiVersion": "sluice.io/v1beta1", "kind": "IPAddressPool",
                "metadata": { "name": "pool", "namespace": "sluice-system" },
                "spec": { "addresses": [format!("{first}-{last}")] },
            }))
            .expect("pool");
    }

    fn service(&self, name: &str) {
        self.h()
            .insert(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": name, "namespace": "default" },
                "spec": {
                    "type": "LoadBalancer",
                    "loadBalancerClass": "sluice.io/lb",
                    "ports": [ { "port": 80, "protocol": "TCP" } ],
                },
            }))
            .expect("service");
    }

    fn delete_service(&self, name: &str) {
        self.h()
            .delete(&ResourceId::new("", "services"), Some("default"), name)
            .expect("delete");
    }

    /// `name → (ingress addresses, resourceVersion)` of every Service.
    fn services(&self) -> BTreeMap<String, (Vec<String>, String)> {
        self.h()
            .list(&ResourceId::new("", "services"), Some("default"))
            .into_iter()
            .map(|s| {
                let ips = s["status"]["loadBalancer"]["ingress"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|i| i["ip"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    s["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                    (
                        ips,
                        s["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                    ),
                )
            })
            .collect()
    }

    fn holder(&self) -> Option<String> {
        self.h()
            .get(
                &ResourceId::new("coordination.k8s.io", "leases"),
                Some("sluice-system"),
                "sluice-control",
            )
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
            .filter(|h| !h.is_empty())
    }

    /// Notes of the `events.k8s.io` Events about Service `name` with `reason`.
    fn events(&self, name: &str, reason: &str) -> Vec<String> {
        self.h()
            .list(&ResourceId::new("events.k8s.io", "events"), Some("default"))
            .into_iter()
            .filter(|e| e["regarding"]["name"] == name && e["reason"] == reason)
            .map(|e| e["note"].as_str().unwrap_or("").to_owned())
            .collect()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

/// One `sluice-control` with `[kubernetes]` pointing at the stand-in.
struct Daemon {
    proc: Proc,
}

fn start_daemon(dir: &Path, node: &str, kubeconfig: &Path) -> Daemon {
    let region = format!("ctl-k8sl-{}-{node}", std::process::id());
    let _ = Writer::remove(&region);
    let cfg = dir.join(format!("{node}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[node]\nname = \"{node}\"\n\n[metrics]\nlisten = \"127.0.0.1:{}\"\n\n\
             [api]\nsocket = \"{}\"\n\n\
             [tables]\nregion = \"{region}\"\nmax_services = 64\nmax_workers = 4\narena_mb = 4\n\n\
             [kubernetes]\nkubeconfig = \"{}\"\ntable_size = 251\nlease_duration = \"2s\"\n\n\
             [[kubernetes.next_hops]]\nprefix = \"0.0.0.0/0\"\nmac = \"02:00:00:00:00:01\"\n",
            free_port(),
            dir.join(format!("{node}.sock")).display(),
            kubeconfig.display(),
        ),
    )
    .expect("config");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-control"));
    cmd.args(["--config".as_ref(), cfg.as_os_str()])
        .stderr(Stdio::inherit());
    let (proc, _) = Proc::spawn_ready(
        &format!("sluice-control {node}"),
        &mut cmd,
        "sluice-control ready",
        Duration::from_secs(60),
    )
    .expect("control ready");
    Daemon { proc }
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The addresses held, checked: no duplicate, every one in `10.200.0.1-20`.
fn held(api: &Api) -> BTreeMap<String, String> {
    let mut seen = BTreeSet::new();
    let mut out = BTreeMap::new();
    for (name, (ips, _)) in api.services() {
        assert!(ips.len() <= 1, "{name}: {ips:?}");
        if let Some(ip) = ips.first() {
            assert!(seen.insert(ip.clone()), "{ip} handed out twice");
            let last: u8 = ip
                .strip_prefix("10.200.0.")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{ip} is outside the pool"));
            assert!((1..=20).contains(&last), "{ip} is outside the pool");
            out.insert(name, ip.clone());
        }
    }
    out
}

fn temp_dir(tag: &str) -> (PathBuf, Cleanup) {
    let dir = PathBuf::from(format!("/tmp/sluice-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cleanup = Cleanup {
        region: String::new(),
        files: vec![dir.clone()],
    };
    (dir, cleanup)
}

fn remove_regions(nodes: &[&str]) {
    for n in nodes {
        let _ = Writer::remove(&format!("ctl-k8sl-{}-{n}", std::process::id()));
    }
}

#[test]
fn two_daemons_never_hand_out_the_same_address_and_a_restart_rewrites_nothing() {
    let (dir, _cleanup) = temp_dir("k8s-leader");
    struct Regions;
    impl Drop for Regions {
        fn drop(&mut self) {
            remove_regions(&["node-a", "node-b", "node-c"]);
        }
    }
    let _regions = Regions;
    let api = Api::start();
    let kubeconfig = dir.join("kubeconfig");
    api.h().write_kubeconfig(&kubeconfig).expect("kubeconfig");
    api.pool("10.200.0.1", "10.200.0.20");

    let mut a = start_daemon(&dir, "node-a", &kubeconfig);
    let mut b = start_daemon(&dir, "node-b", &kubeconfig);
    let leader = wait_for("a leader", Duration::from_secs(30), || api.holder());
    println!("leader: {leader}");

    // 30 Services for 20 addresses; the leader is killed half-way.
    for i in 0..15 {
        api.service(&format!("s{i:02}"));
    }
    wait_for("a few allocations", Duration::from_secs(30), || {
        (held(&api).len() >= 5).then_some(())
    });
    let killed = Instant::now();
    let survivor = if leader == "node-a" {
        a.proc.kill();
        "node-b"
    } else {
        b.proc.kill();
        "node-a"
    };
    for i in 15..30 {
        api.service(&format!("s{i:02}"));
    }
    wait_for("the survivor to take over", Duration::from_secs(30), || {
        (api.holder().as_deref() == Some(survivor)).then_some(())
    });
    println!(
        "{survivor} took the lease {:?} after the kill (lease 2 s)",
        killed.elapsed()
    );
    let holders = wait_for("20 allocations", Duration::from_secs(30), || {
        let h = held(&api);
        (h.len() == 20).then_some(h)
    });
    // The ten without an address were told why.
    wait_for("pool-exhausted events", Duration::from_secs(30), || {
        api.services()
            .keys()
            .filter(|n| !holders.contains_key(*n))
            .all(|n| {
                api.events(n, "AllocationFailed")
                    .iter()
                    .any(|e| e.contains("exhausted"))
            })
            .then_some(())
    });

    // Bring the killed daemon back, then free five addresses.
    let _back = start_daemon(
        &dir,
        if survivor == "node-a" {
            "node-b"
        } else {
            "node-a"
        },
        &kubeconfig,
    );
    let freed: Vec<String> = holders.keys().take(5).cloned().collect();
    for name in &freed {
        api.delete_service(name);
    }
    let after = wait_for(
        "five waiting Services served",
        Duration::from_secs(30),
        || {
            let h = held(&api);
            (h.len() == 20 && freed.iter().all(|f| !h.contains_key(f))).then_some(h)
        },
    );
    assert!(
        after.keys().any(|n| !holders.contains_key(n)),
        "the freed addresses went to waiting Services: {after:?}"
    );

    // Restart every daemon: the allocation is rebuilt from status, nothing is rewritten.
    drop(_back);
    drop(a);
    drop(b);
    let before = api.services();
    let c = start_daemon(&dir, "node-c", &kubeconfig);
    wait_for("node-c to lead", Duration::from_secs(30), || {
        (api.holder().as_deref() == Some("node-c")).then_some(())
    });
    // Two more passes (the lease period is 2/3 s) to give it every chance to rewrite.
    std::thread::sleep(Duration::from_secs(2));
    let now = api.services();
    assert_eq!(now, before, "a restarted daemon rewrote Service status");
    assert_eq!(held(&api), after);
    drop(c);
}

#[test]
fn a_watch_expiry_relists_and_converges() {
    let (dir, _cleanup) = temp_dir("k8s-410");
    struct Regions;
    impl Drop for Regions {
        fn drop(&mut self) {
            remove_regions(&["node-x"]);
        }
    }
    let _regions = Regions;
    let api = Api::start();
    let kubeconfig = dir.join("kubeconfig");
    api.h().write_kubeconfig(&kubeconfig).expect("kubeconfig");
    // One address: the second Service can only get it after the first is gone.
    api.pool("10.200.0.1", "10.200.0.1");
    let _d = start_daemon(&dir, "node-x", &kubeconfig);
    api.service("first");
    wait_for("first allocated", Duration::from_secs(30), || {
        (held(&api).get("first").map(String::as_str) == Some("10.200.0.1")).then_some(())
    });
    // History gone, watches dropped; changes land while the daemon reconnects.
    api.h().compact();
    api.h().close_watches();
    api.delete_service("first");
    api.service("second");
    let took = Instant::now();
    wait_for(
        "second allocated after the relist",
        Duration::from_secs(60),
        || (held(&api).get("second").map(String::as_str) == Some("10.200.0.1")).then_some(()),
    );
    println!(
        "converged {:?} after the watches were dropped",
        took.elapsed()
    );
}
