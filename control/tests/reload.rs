//! End to end, with real processes in the namespace testbed: `sluice-control` publishes the
//! config into a fresh region, the real `sluice-dataplane` forwards real TCP through the VIP,
//! and then (a) an invalid config on SIGHUP is rejected with file/field/reason while traffic is
//! unaffected, (b) a config without b3 on SIGHUP steers new connections away from b3, and
//! (c) after SIGTERM of control the dataplane keeps forwarding, and (d) a restarted control
//! re-attaches to the region without disturbing traffic.
//!
//! Namespaces, processes (killed by PID), the region and the temp files are removed whatever
//! happens. Needs root, and `sluice-dataplane` plus the testbed binaries built next to this
//! test (`cargo build -p sluice-dataplane --bin sluice-dataplane -p sluice-testbed --bins`).
#![allow(clippy::disallowed_types)] // std::time::Instant: a test's own deadlines.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Cleanup;
use sluice_dataplane::tables::Writer;
use sluice_testbed::{
    BackendMode, OneArm, Proc, addr, bin_path, client_result, control_test_config,
    dataplane_test_config, free_port, run_client,
};

const PORT: u16 = 8080;

/// A free loopback port for control's metrics listener (fixed for the whole test), so that a
/// concurrent control elsewhere on this host does not collide on the default 9109.
fn metrics_port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(free_port)
}

fn socket() -> PathBuf {
    PathBuf::from(format!("/tmp/sluice-ctl-{}.sock", std::process::id()))
}

/// The testbed's control config; `broken` gives b3 a bad MAC.
fn control_config(region: &str, backends: usize, broken: bool) -> String {
    let s = control_test_config(region, metrics_port(), &socket(), PORT, backends);
    if broken {
        s.replacen(&addr::mac_str(addr::backend_host(2)), "02:90:00:00:00", 1)
    } else {
        s
    }
}

fn dataplane_bin() -> PathBuf {
    bin_path("sluice-dataplane").unwrap_or_else(|e| {
        panic!("{e}\nbuild it with: cargo build -p sluice-dataplane --bin sluice-dataplane")
    })
}

/// Spawns `cmd` and waits for its `ready` line (see `Proc::spawn_ready`).
fn spawn_ready(what: &str, cmd: &mut Command, ready: &str) -> Proc {
    Proc::spawn_ready(what, cmd, ready, Duration::from_secs(60))
        .expect("ready")
        .0
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

/// Waits until the control log contains `needle` (after `from` bytes); returns the log.
fn wait_log(log: &PathBuf, from: usize, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.get(from..).is_some_and(|t| t.contains(needle)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "control never logged {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_len(log: &PathBuf) -> usize {
    std::fs::metadata(log).map_or(0, |m| usize::try_from(m.len()).unwrap_or(0))
}

/// 30 connections through the VIP; all must succeed. Returns the per-backend spread.
fn traffic(tb: &OneArm) -> std::collections::BTreeMap<String, usize> {
    let args = [
        "--connections",
        "30",
        "--size",
        "1000",
        "--concurrency",
        "4",
    ];
    let out = run_client(
        &tb.client,
        &format!("{}:{PORT}", addr::VIP4),
        &args,
        Duration::from_secs(120),
    )
    .expect("client");
    let (ok, failed, per) = client_result(&out).expect("RESULT line");
    assert_eq!((ok, failed), (30, 0), "{out}");
    println!("spread: {per:?}");
    per
}

#[test]
fn control_publishes_reloads_rejects_bad_configs_and_leaves_the_tables_on_exit() {
    let pid = std::process::id();
    let region = format!("ctl-reload-{pid}");
    let _ = Writer::remove(&region);
    let cfg = PathBuf::from(format!("/tmp/sluice-ctl-{pid}.toml"));
    let dp_cfg = PathBuf::from(format!("/tmp/sluice-ctl-dp-{pid}.toml"));
    let log = PathBuf::from(format!("/tmp/sluice-ctl-{pid}.log"));
    let _cleanup = Cleanup {
        region: region.clone(),
        files: vec![cfg.clone(), dp_cfg.clone(), log.clone(), socket()],
    };
    let dataplane = dataplane_bin();

    let tb = OneArm::new("ctl", 3, BackendMode::Nat).expect("testbed");
    let _servers = tb
        .start_servers(&bin_path("tb-server").expect("tb-server"), PORT)
        .expect("servers");

    // Control first: it creates the region and publishes.
    std::fs::write(&cfg, control_config(&region, 3, false)).expect("config");
    let mut control_cmd = Command::new(env!("CARGO_BIN_EXE_sluice-control"));
    control_cmd
        .args(["--config".as_ref(), cfg.as_os_str()])
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut control = spawn_ready(
        "sluice-control",
        &mut control_cmd,
        "sluice-control ready: 1 services",
    );

    // Then the dataplane, mapping that region.
    std::fs::write(&dp_cfg, dataplane_test_config(&region, None)).expect("dataplane config");
    let mut dp_cmd = tb.lb.command(&dataplane);
    dp_cmd
        .args(["--config".as_ref(), dp_cfg.as_os_str()])
        .stderr(Stdio::inherit());
    let _dataplane = spawn_ready("sluice-dataplane", &mut dp_cmd, "sluice-dataplane ready");

    let per = traffic(&tb);
    for b in ["b1", "b2", "b3"] {
        assert!(
            per.get(b).copied().unwrap_or(0) > 0,
            "{b} got nothing: {per:?}"
        );
    }

    // (a) An invalid config is rejected, named precisely; control and traffic carry on.
    let mark = log_len(&log);
    std::fs::write(&cfg, control_config(&region, 3, true)).expect("bad config");
    signal("-HUP", control.pid());
    let text = wait_log(&log, mark, "config rejected");
    let tail = &text[mark..];
    assert!(
        tail.contains(&format!("{}: services[0].backends[2].mac", cfg.display())),
        "{tail}"
    );
    assert!(tail.contains("is not a MAC address"), "{tail}");
    assert!(
        control.try_wait().expect("wait").is_none(),
        "control exited on a bad config"
    );
    let per = traffic(&tb);
    assert!(
        per.get("b3").copied().unwrap_or(0) > 0,
        "the running config lost b3: {per:?}"
    );

    // (b) b3 removed: new connections avoid it and all succeed.
    let mark = log_len(&log);
    std::fs::write(&cfg, control_config(&region, 2, false)).expect("config without b3");
    signal("-HUP", control.pid());
    let text = wait_log(&log, mark, "config reloaded and applied");
    assert!(
        text[mark..].contains("changed [\"web\"]"),
        "{}",
        &text[mark..]
    );
    // The worker switches at its next burst; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let per = traffic(&tb);
    assert!(
        !per.contains_key("b3"),
        "b3 still gets new connections: {per:?}"
    );
    assert!(per.contains_key("b1") && per.contains_key("b2"), "{per:?}");

    // (c) Control stops cleanly; the dataplane keeps forwarding by the last tables.
    signal("-TERM", control.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = control.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "control did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "control exit: {status}");
    let per = traffic(&tb);
    assert!(!per.contains_key("b3"), "{per:?}");

    // (d) A restarted control re-attaches to the region (same ids, nothing to rewrite) and
    // traffic carries on.
    let mark = log_len(&log);
    let mut control_cmd = Command::new(env!("CARGO_BIN_EXE_sluice-control"));
    control_cmd
        .args(["--config".as_ref(), cfg.as_os_str()])
        .stderr(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .expect("log"),
        );
    let control = spawn_ready(
        "sluice-control",
        &mut control_cmd,
        "sluice-control ready: 1 services",
    );
    let per = traffic(&tb);
    assert!(!per.contains_key("b3"), "{per:?}");
    signal("-TERM", control.pid());
    let _ = control
        .wait_output(Duration::from_secs(10))
        .expect("control stops");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text[mark..].contains("ERROR"), "{}", &text[mark..]);
}
