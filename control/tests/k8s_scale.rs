//! Kubernetes at scale: 10 000 LoadBalancer Services with 10 ready endpoints each (Maglev
//! M = 4 093) appear at once in the API stand-in; one `sluice-control` allocates an address to
//! each (10 000 status writes), translates them and publishes all 10 000 tables into its
//! region. The test asserts that every Service got a distinct address and that all 10 000
//! services with all 100 000 backends are published; it prints how long that took, the
//! daemon's peak memory and the region's size. The figures are recorded in bench/RESULTS.md
//! from a release run:
//!
//! ```text
//! cargo test --release -p sluice-control --test k8s_scale -- --nocapture
//! ```
//!
//! A debug build (`ci/test.sh`) runs 2 000 Services (the same code paths, a fifth of the
//! work: a debug build of the daemon is ~20 times slower) and asserts only the behaviour;
//! `SLUICE_SCALE_SERVICES=N` picks another count.
#![allow(clippy::disallowed_types)] // std::time::Instant: a test's own deadline and figures.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Cleanup, ctl};
use serde_json::json;
use sluice_dataplane::tables::Capacity;
use sluice_dataplane::tables::Writer;
use sluice_dataplane::tables::layout::Geometry;
use sluice_kube_standin::{Options, ResourceId};
use sluice_testbed::{Proc, free_port};

const ENDPOINTS: u32 = 10;
const MAX_SERVICES: u32 = 10_240;
const ARENA_MB: u32 = 192;

/// Peak and current resident memory of `pid`, in KiB (`VmHWM`, `VmRSS`).
fn memory_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// How many Services: `SLUICE_SCALE_SERVICES`, else 10 000 (release) or 2 000 (debug).
fn services() -> u32 {
    std::env::var("SLUICE_SCALE_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            2_000
        } else {
            10_000
        })
}

#[test]
fn ten_thousand_services_reconcile_and_publish() {
    let services_n = services();
    assert!(services_n <= MAX_SERVICES, "at most {MAX_SERVICES}");
    let pid = std::process::id();
    let region = format!("ctl-k8s-scale-{pid}");
    let _ = Writer::remove(&region);
    let dir = PathBuf::from(format!("/tmp/sluice-k8s-scale-{pid}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _cleanup = Cleanup {
        region: region.clone(),
        files: vec![dir.clone()],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let api = rt
        .block_on(sluice_kube_standin::start(Options::default()))
        .expect("stand-in");
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    api.insert(
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "sluice-system" } }),
    )
    .expect("namespace");
    api.insert(json!({
        "apiVersion": "sluice.io/v1beta1", "kind": "IPAddressPool",
        "metadata": { "name": "big", "namespace": "sluice-system" },
        "spec": { "addresses": ["10.128.0.0/16"] },
    }))
    .expect("pool");

    let socket = dir.join("control.sock");
    let cfg = dir.join("control.toml");
    std::fs::write(
        &cfg,
        format!(
            "[node]\nname = \"lb1\"\n\n[metrics]\nlisten = \"127.0.0.1:{}\"\n\n\
             [api]\nsocket = \"{}\"\n\n\
             [tables]\nregion = \"{region}\"\nmax_services = {MAX_SERVICES}\nmax_workers = 4\n\
             arena_mb = {ARENA_MB}\n\n\
             [kubernetes]\nkubeconfig = \"{}\"\ntable_size = 4093\n\n\
             [[kubernetes.next_hops]]\nprefix = \"0.0.0.0/0\"\nmac = \"02:00:00:00:00:01\"\n",
            free_port(),
            socket.display(),
            kubeconfig.display(),
        ),
    )
    .expect("config");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sluice-control"));
    cmd.args(["--config".as_ref(), cfg.as_os_str()])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    let (control, _) = Proc::spawn_ready(
        "sluice-control",
        &mut cmd,
        "sluice-control ready",
        Duration::from_secs(60),
    )
    .expect("control ready");
    // Wait until it holds the lease, so the clock below measures reconciliation only.
    let deadline = Instant::now() + Duration::from_secs(60);
    while api
        .get(
            &ResourceId::new("coordination.k8s.io", "leases"),
            Some("sluice-system"),
            "sluice-control",
        )
        .is_none()
    {
        assert!(Instant::now() < deadline, "no lease");
        std::thread::sleep(Duration::from_millis(50));
    }

    let objects = (0..services_n).flat_map(|i| {
        let name = format!("s{i:05}");
        let endpoints: Vec<_> = (1..=ENDPOINTS)
            .map(|j| {
                let a = 0x0a00_0000 + i * 16 + j;
                json!({ "addresses": [std::net::Ipv4Addr::from(a).to_string()], "conditions": { "ready": true } })
            })
            .collect();
        [
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": name, "namespace": "default" },
                "spec": {
                    "type": "LoadBalancer",
                    "loadBalancerClass": "sluice.io/lb",
                    // 10 000 Services would exhaust the node-port range (30000-32767), as
                    // on a real cluster; pod backends need no node port.
                    "allocateLoadBalancerNodePorts": false,
                    "ports": [ { "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080 } ],
                },
            }),
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{name}-x"), "namespace": "default",
                    "labels": { "kubernetes.io/service-name": name },
                },
                "addressType": "IPv4",
                "ports": [ { "name": "http", "port": 8080, "protocol": "TCP" } ],
                "endpoints": endpoints,
            }),
        ]
    });
    let start = Instant::now();
    let n = api.insert_many(objects).expect("seed");
    assert_eq!(n, 2 * services_n as usize);
    println!("seeded {n} objects in {:?}", start.elapsed());
    let limit = if cfg!(debug_assertions) {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(120)
    };
    let mut last = 0;
    let published = loop {
        // The daemon answers between publications; a busy one may miss sluicectl's deadline.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluicectl"))
            .arg("--socket")
            .arg(&socket)
            .args(["-o", "json", "status"])
            .output()
            .expect("sluicectl");
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let services = s["services"].as_u64().unwrap_or(last);
        if services != last {
            println!("{:>8.2?}: {services} services published", start.elapsed());
            last = services;
        }
        if services == u64::from(services_n) {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "only {services} published after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let status = ctl(&socket, &["status"]);
    assert_eq!(
        status["backends"].as_u64(),
        Some(u64::from(services_n * ENDPOINTS)),
        "{status:#}"
    );
    // Every Service has its own address from the pool.
    let mut seen = BTreeSet::new();
    for s in api.list(&ResourceId::new("", "services"), Some("default")) {
        let ip = s["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .unwrap_or_else(|| panic!("no address: {}", s["metadata"]["name"]))
            .to_owned();
        assert!(ip.starts_with("10.128."), "{ip}");
        assert!(seen.insert(ip.clone()), "{ip} twice");
    }
    assert_eq!(seen.len(), services_n as usize);
    let (peak, rss) = memory_kib(control.pid());
    let geometry = Geometry::new(Capacity {
        max_services: MAX_SERVICES,
        max_workers: 4,
        dir_slots: 4,
        arena_bytes: u64::from(ARENA_MB) << 20,
    })
    .expect("geometry");
    println!(
        "RESULT services={services_n} endpoints={} published_s={:.2} control_peak_mib={:.0} control_rss_mib={:.0} region_mib={:.0} status_patches={}",
        services_n * ENDPOINTS,
        published.as_secs_f64(),
        peak as f64 / 1024.0,
        rss as f64 / 1024.0,
        geometry.total as f64 / f64::from(1 << 20),
        api.request_count("patch", "services/status"),
    );
    drop(control);
    rt.block_on(api.shutdown());
}
