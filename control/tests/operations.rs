//! The operator's day, end to end with real processes in the namespace testbed and real TCP
//! traffic: `sluice-control` (health-checking the backends over HTTP) and `sluice-dataplane`
//! forward to three real servers, and, driven through `sluicectl` over the API socket:
//!
//! 1. **drain** — with long-lived connections open on every backend, `sluicectl drain web b2`:
//!    new connections avoid b2 and every long-lived one (those on b2 included) completes;
//!    `undrain` brings b2 back;
//! 2. **weight** — `sluicectl weight web b1 8`: the connections started right after the
//!    command returns (well within a second) follow the new spread (b1 ≈ 8/10);
//! 3. **health** — b3's server is killed: the health check marks it down, and from then on
//!    no new connection fails and none goes to b3; restarted, it rises and serves again;
//! 4. **bad reload** — an invalid config is written over the file: the daemon notices the
//!    change, rejects it (file, field, reason in `sluicectl status`), and traffic is unaffected;
//! 5. the event log (`sluicectl events`) tells that story in order.
//!
//! Control runs in the client's namespace so that its health checks reach the backends over
//! the testbed's L2 (the LB namespace's only link belongs to DPDK). Namespaces, processes
//! (killed by PID), the region and temp files are removed whatever happens. Needs root and the
//! testbed binaries (`cargo build -p sluice-dataplane --bin sluice-dataplane -p sluice-testbed
//! --bins`).
#![allow(clippy::disallowed_types)] // std::time::Instant: a test's own deadlines.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cleanup, ctl};
use serde_json::Value;
use sluice_dataplane::tables::Writer;
use sluice_testbed::{
    BackendMode, OneArm, Proc, addr, bin_path, client_result, control_test_config,
    dataplane_test_config, free_port, run_client,
};

const PORT: u16 = 8080;
/// Long-lived connections held open across the drain.
const LONG: usize = 24;

/// The backends of `web` by name, as `sluicectl backends web -o json` shows them.
fn backends(socket: &Path) -> BTreeMap<String, Value> {
    let svc = ctl(socket, &["backends", "web"]);
    svc["backends"]
        .as_array()
        .expect("backends array")
        .iter()
        .map(|b| (b["name"].as_str().expect("name").to_owned(), b.clone()))
        .collect()
}

/// Polls until `check` holds for `web`'s backends (up to 30 s).
fn wait_backends(socket: &Path, what: &str, check: impl Fn(&BTreeMap<String, Value>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = backends(socket);
        if check(&b) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {b:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Short connections through the VIP; all must succeed. Returns the spread.
fn traffic(tb: &OneArm, connections: usize) -> BTreeMap<String, usize> {
    let n = connections.to_string();
    let args = ["--connections", &n, "--size", "500", "--concurrency", "4"];
    let target = format!("{}:{PORT}", addr::VIP4);
    let out = run_client(&tb.client, &target, &args, Duration::from_secs(120)).expect("client");
    let (ok, failed, per) = client_result(&out).expect("RESULT line");
    assert_eq!((ok, failed), (connections, 0), "{out}");
    println!("spread of {connections}: {per:?}");
    per
}

fn total_connections(b: &BTreeMap<String, Value>) -> u64 {
    b.values()
        .map(|x| x["counters"]["connections"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn drain_weight_health_and_bad_reload_with_traffic_running() {
    let pid = std::process::id();
    let region = format!("ctl-ops-{pid}");
    let _ = Writer::remove(&region);
    let cfg = PathBuf::from(format!("/tmp/sluice-ops-{pid}.toml"));
    let dp_cfg = PathBuf::from(format!("/tmp/sluice-ops-dp-{pid}.toml"));
    let log = PathBuf::from(format!("/tmp/sluice-ops-{pid}.log"));
    let socket = PathBuf::from(format!("/tmp/sluice-ops-{pid}.sock"));
    let _cleanup = Cleanup {
        region: region.clone(),
        files: vec![cfg.clone(), dp_cfg.clone(), log.clone(), socket.clone()],
    };
    let dataplane = bin_path("sluice-dataplane").unwrap_or_else(|e| {
        panic!("{e}\nbuild it with: cargo build -p sluice-dataplane --bin sluice-dataplane")
    });

    let tb = OneArm::new("ops", 3, BackendMode::Nat).expect("testbed");
    let mut servers = tb
        .start_servers(&bin_path("tb-server").expect("tb-server"), PORT)
        .expect("servers");

    let config = control_test_config(&region, free_port(), &socket, PORT, 3)
        + "\n[services.health]\nkind = \"http\"\npath = \"/\"\ninterval_ms = 200\n\
           timeout_ms = 150\nrise = 2\nfall = 2\n";
    std::fs::write(&cfg, &config).expect("config");
    let mut control_cmd = tb.client.command(env!("CARGO_BIN_EXE_sluice-control"));
    control_cmd
        .args(["--config".as_ref(), cfg.as_os_str()])
        .args(["--watch-ms", "200"])
        .stderr(std::fs::File::create(&log).expect("log"));
    let (_control, _) = Proc::spawn_ready(
        "sluice-control",
        &mut control_cmd,
        "sluice-control ready: 1 services",
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

    wait_backends(&socket, "all healthy", |b| {
        b.values()
            .all(|x| x["health"] == "up" && x["state"] == "active")
    });
    let status = ctl(&socket, &["status"]);
    assert_eq!(status["node"], "lb1");
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(1),
        "{status:#}"
    );
    let per = traffic(&tb, 30);
    assert_eq!(per.len(), 3, "every backend serves: {per:?}");

    // 1. Drain with long-lived connections open.
    let before = total_connections(&backends(&socket));
    let mut long_cmd = tb.client.command(bin_path("tb-client").expect("tb-client"));
    let n = LONG.to_string();
    long_cmd
        .args(["--target", &format!("{}:{PORT}", addr::VIP4)])
        .args(["--connections", &n, "--concurrency", &n])
        .args(["--requests", "12", "--hold-ms", "250", "--size", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let long = Proc::spawn("long-lived tb-client", &mut long_cmd).expect("long client");
    // Every long-lived connection has its flow (and backend) once the dataplane counted LONG
    // new connections; drain only then.
    wait_backends(&socket, "long-lived connections established", |b| {
        total_connections(b) >= before + u64::try_from(LONG).expect("small")
    });
    let b2 = ctl(&socket, &["drain", "web", "b2"]);
    assert_eq!(
        (&b2["state"], &b2["drained"]),
        (&"draining".into(), &true.into())
    );
    assert_eq!(b2["table_share"].as_f64(), Some(0.0));
    let per = traffic(&tb, 30);
    assert!(
        !per.contains_key("b2"),
        "drained b2 got new connections: {per:?}"
    );
    let out = long
        .wait_output(Duration::from_secs(120))
        .expect("long client ends");
    let text = String::from_utf8_lossy(&out.stdout);
    let (ok, failed, long_per) = client_result(&text).expect("RESULT line");
    assert_eq!(
        (ok, failed),
        (LONG, 0),
        "long-lived connections broke:\n{text}"
    );
    assert!(
        long_per.get("b2").copied().unwrap_or(0) > 0,
        "no long-lived connection was on b2, so the drain proved nothing: {long_per:?}"
    );
    println!("long-lived connections, all completed: {long_per:?}");
    let b2 = ctl(&socket, &["undrain", "web", "b2"]);
    assert_eq!(b2["state"], "active");
    let per = traffic(&tb, 30);
    assert!(per.contains_key("b2"), "undrained b2 gets nothing: {per:?}");

    // 2. Weight: the spread follows as soon as the command returns.
    let b1 = ctl(&socket, &["weight", "web", "b1", "8"]);
    assert_eq!(
        (b1["weight"].as_u64(), b1["configured_weight"].as_u64()),
        (Some(8), Some(1))
    );
    let share = b1["table_share"].as_f64().expect("share");
    assert!((share - 0.8).abs() < 0.01, "b1 share {share}");
    let set_at = Instant::now();
    let per = traffic(&tb, 100);
    let first_start = set_at.elapsed();
    let b1n = per.get("b1").copied().unwrap_or(0);
    println!("after weight 8/1/1: {per:?} (client ran {first_start:?} after the command)");
    assert!(
        b1n >= 60,
        "b1 has weight 8 of 10 but got {b1n} of 100: {per:?}"
    );
    let b1 = ctl(&socket, &["weight", "web", "b1", "1"]);
    assert_eq!(b1["weight"].as_u64(), Some(1));

    // 3. Health: b3's server dies; once it is marked down no new connection fails.
    servers[2].kill();
    wait_backends(&socket, "b3 down", |b| {
        b["b3"]["health"] == "down" && b["b3"]["state"] == "down"
    });
    let per = traffic(&tb, 40);
    assert!(!per.contains_key("b3"), "b3 is down but served: {per:?}");
    // Its server back: it rises, re-enters the table, and serves again.
    let mut cmd = tb.backends[2].command(bin_path("tb-server").expect("tb-server"));
    cmd.args(["--listen", &format!("[::]:{PORT}"), "--name", "b3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    servers[2] = Proc::spawn("b3", &mut cmd).expect("b3 again");
    wait_backends(&socket, "b3 back up", |b| {
        b["b3"]["health"] == "up" && b["b3"]["state"] == "active"
    });
    let per = traffic(&tb, 30);
    assert!(
        per.contains_key("b3"),
        "b3 is up again but gets nothing: {per:?}"
    );

    // 4. A broken config written over the file is noticed, rejected, and changes nothing.
    std::fs::write(
        &cfg,
        config.replacen("mode = \"nat\"", "mode = \"natt\"", 1),
    )
    .expect("broken config");
    let deadline = Instant::now() + Duration::from_secs(30);
    let reload = loop {
        let s = ctl(&socket, &["status"]);
        if !s["last_reload"].is_null() {
            break s["last_reload"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the file change was never noticed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(reload["ok"], false, "{reload:#}");
    let msg = reload["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&cfg.display().to_string()), "{msg}");
    assert!(msg.contains("services[0].mode"), "{msg}");
    let per = traffic(&tb, 30);
    assert_eq!(per.len(), 3, "{per:?}");

    // 5. The event log tells the story, in order.
    let out = Command::new(env!("CARGO_BIN_EXE_sluicectl"))
        .arg("--socket")
        .arg(&socket)
        .args(["-o", "json", "events", "--backlog", "1000"])
        .output()
        .expect("events");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let story: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] != "worker_changed" && e["kind"] != "health_changed")
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap_or("?"),
                e["backend"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        story,
        [
            "started ",
            "drained b2",
            "undrained b2",
            "weight_changed b1",
            "weight_changed b1",
            "config_rejected ",
        ],
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e["kind"] == "health_changed"
            && e["backend"] == "b3"
            && e["message"].as_str().is_some_and(|m| m.contains("Down"))),
        "{events:#?}"
    );
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("panicked"), "{text}");
}
