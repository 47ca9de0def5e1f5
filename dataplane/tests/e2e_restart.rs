//! Control and dataplane restarts with real processes (the tables issue's acceptance):
//!
//! - killing the control process (SIGKILL) leaves the dataplane forwarding with its last
//!   tables, and a new control process re-attaches to the region and publishes — while real
//!   TCP traffic runs, with no failed connection;
//! - killing the dataplane and starting it again picks up the current tables at once: the
//!   first connections after it reports ready succeed.
//!
//! "Control" here is this test binary re-executed as a child process that creates or attaches
//! to the region with the real `tables::Writer`, publishes, prints `published N` and waits to
//! be killed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_dataplane::tables::{Capacity, Mode, Tick, Writer, WriterOptions};
use sluice_hugepages::Backing;
use sluice_testbed::{
    BackendMode, CHILD_ENV, OneArm, Proc, addr, bin_path, client_result, is_child, run_client,
};

use common::lb::{PORT, publish_service, spawn_dataplane};

const CONTROL: &str = "control_process";

/// The control child: `SLUICE_E2E_REGION` names the region, `SLUICE_E2E_ATTACH=1` attaches
/// instead of creating, `SLUICE_E2E_BACKENDS` lists backend indexes.
#[test]
fn control_process() {
    if !is_child(CONTROL) {
        return; // only meaningful as the child of the restart test below
    }
    let region = std::env::var("SLUICE_E2E_REGION").expect("region");
    let attach = std::env::var("SLUICE_E2E_ATTACH").is_ok_and(|v| v == "1");
    let backends: Vec<usize> = std::env::var("SLUICE_E2E_BACKENDS")
        .expect("backends")
        .split(',')
        .map(|b| b.parse().expect("index"))
        .collect();
    let mut writer = if attach {
        Writer::attach(&region, WriterOptions::default()).expect("attach")
    } else {
        let cap = Capacity {
            max_services: 16,
            max_workers: 4,
            dir_slots: 4,
            arena_bytes: 4 << 20,
        };
        Writer::create(&region, cap, Backing::Shm, WriterOptions::default()).expect("create")
    };
    let before = writer.generation();
    let generation = publish_service(&mut writer, 1, addr::VIP4, Mode::Nat, &backends);
    println!("published {} after {}", generation.0, before.0);
    let start = Instant::now();
    loop {
        writer.heartbeat();
        writer.reclaim(Tick::from_duration(start.elapsed()));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_control(region: &str, attach: bool, backends: &str) -> (Proc, u64) {
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.args([CONTROL, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, CONTROL)
        .env("SLUICE_E2E_REGION", region)
        .env("SLUICE_E2E_ATTACH", if attach { "1" } else { "0" })
        .env("SLUICE_E2E_BACKENDS", backends)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut p = Proc::spawn("control", &mut cmd).expect("spawn control");
    let out = p.take_stdout().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let generation = loop {
        let line = lines
            .next()
            .expect("control exited before publishing")
            .expect("read");
        // libtest may print its own "test NAME ... " prefix on the same line.
        if let Some((_, rest)) = line.split_once("published ") {
            break rest
                .split_whitespace()
                .next()
                .expect("gen")
                .parse()
                .expect("number");
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (p, generation)
}

/// Runs rounds of real connections until `stop`; returns (ok, failed, last failure output).
fn traffic(ns: String, target: String, stop: Arc<AtomicBool>) -> (usize, usize, String) {
    let (mut ok, mut failed, mut last) = (0, 0, String::new());
    while !stop.load(Ordering::Relaxed) {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(bin_path("tb-client").expect("tb-client"))
            .args([
                "--target",
                &target,
                "--connections",
                "20",
                "--concurrency",
                "2",
                "--size",
                "800",
            ])
            .output()
            .expect("client");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match client_result(&text) {
            Some((o, f, _)) => {
                ok += o;
                failed += f;
                if f > 0 {
                    last = text;
                }
            }
            None => {
                failed += 1;
                last = text;
            }
        }
    }
    (ok, failed, last)
}

#[test]
fn control_and_dataplane_restarts_keep_forwarding() {
    if is_child(CONTROL) {
        return;
    }
    let tb = OneArm::new("rst", 3, BackendMode::Nat).expect("testbed");
    let _servers = tb
        .start_servers(&bin_path("tb-server").expect("tb-server"), PORT)
        .expect("servers");
    let region = format!("e2e-rst-{}", std::process::id());
    let _ = Writer::remove(&region);
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Writer::remove(&self.0);
            let _ = std::fs::remove_file(&self.1);
        }
    }
    let config = format!("/tmp/sluice-e2e-rst-{}.toml", std::process::id());
    let _cleanup = Cleanup(region.clone(), config.clone());

    let (mut control, g1) = spawn_control(&region, false, "0,1,2");
    let (mut dataplane, ready) = spawn_dataplane(&tb, &region, &config);
    assert!(
        ready.contains(&format!("at generation {g1}")),
        "dataplane started on the current tables: {ready}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let t = {
        let (ns, target, stop) = (
            tb.client.name().to_owned(),
            format!("{}:{PORT}", addr::VIP4),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || traffic(ns, target, stop))
    };
    std::thread::sleep(Duration::from_millis(1500));
    control.kill(); // SIGKILL: no clean-up of any kind
    println!("control killed at generation {g1}");
    std::thread::sleep(Duration::from_millis(1500));
    let (_control2, g2) = spawn_control(&region, true, "0,1,2");
    println!("second control re-attached and published generation {g2}");
    assert!(
        g2 > g1,
        "generations continue after re-attach ({g1} → {g2})"
    );
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, last) = t.join().expect("traffic");
    println!("traffic across the control restart: {ok} ok, {failed} failed");
    assert!(ok >= 40, "too little traffic ran ({ok})");
    assert_eq!(
        failed, 0,
        "connections failed across the control restart:\n{last}"
    );

    // Dataplane restart: the new process reads the current tables before it reports ready.
    dataplane.kill();
    let (_dataplane2, ready) = spawn_dataplane(&tb, &region, &config);
    assert!(
        ready.contains(&format!("at generation {g2}")),
        "restarted on the current tables: {ready}"
    );
    let out = run_client(
        &tb.client,
        &format!("{}:{PORT}", addr::VIP4),
        &["--connections", "30"],
        Duration::from_secs(60),
    )
    .expect("first connections after the dataplane restart");
    let (ok, failed, per) = client_result(&out).expect("RESULT");
    assert_eq!((ok, failed), (30, 0), "{out}");
    println!("after dataplane restart: {per:?}");
}
