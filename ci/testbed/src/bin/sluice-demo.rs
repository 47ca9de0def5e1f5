//! `sluice-demo`: Sluice's main job on the embedded default, for `ci/demo.sh`.
//!
//! Builds the one-armed namespace testbed (a client, an LB node, three backends running real
//! TCP/HTTP servers), starts the real `sluice-control` with `ci/demo/control.toml` and the real
//! `sluice-dataplane` with `ci/demo/dataplane.toml` on the LB node, sends real connections from
//! the client to the VIPs (IPv4 and IPv6), checks every byte that comes back, prints how the
//! connections spread over the backends, shows `sluicectl status` and the backends with their
//! counters, a few Prometheus metrics, and removes everything it made.
//!
//! Usage: `sluice-demo CONTROL_TOML DATAPLANE_TOML [CONNECTIONS]`; the Sluice and testbed
//! binaries are found next to this one.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sluice_testbed::{BackendMode, Netns, OneArm, Proc, addr, bin_path, client_result, run_client};

const PORT: u16 = 8080;
/// `[api] socket` in `ci/demo/control.toml`.
const DEMO_SOCKET: &str = "/run/sluice/demo.sock";

fn start(ns: &Netns, name: &str, config: &Path, ready: &str) -> Result<Proc, String> {
    let bin = bin_path(name).map_err(|e| e.to_string())?;
    let mut cmd = ns.command(bin);
    cmd.arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut p = Proc::spawn(name, &mut cmd).map_err(|e| format!("{name}: {e}"))?;
    let out = p.take_stdout().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains(ready) => {
                println!("    {l}");
                return Ok(p);
            }
            Ok(_) => {}
            Err(_) => {
                return Err(format!(
                    "{name} did not become ready (see its config: {})",
                    config.display()
                ));
            }
        }
    }
}

fn spread(title: &str, text: &str) -> Result<(), String> {
    let (ok, failed, per) = client_result(text).ok_or("client printed no result")?;
    println!("  {title}: {ok} connections ok, {failed} failed, every response byte-exact");
    let total: usize = per.values().sum();
    for (b, n) in &per {
        let pct = 100.0 * *n as f64 / total.max(1) as f64;
        // One block per 2 %, computed in integers.
        let bar = "█".repeat((n * 50 + total / 2) / total.max(1));
        println!("    {b}  {n:>5}  {pct:5.1} %  {bar}");
    }
    if failed > 0 || per.len() < 3 {
        return Err(format!(
            "{title}: expected every connection to succeed on all three backends"
        ));
    }
    Ok(())
}

fn run(control: &Path, dataplane: &Path, conns: usize) -> Result<(), String> {
    println!("==> building the testbed: client, LB node, backends b1..b3 (network namespaces)");
    let tb = OneArm::new("demo", 3, BackendMode::Nat).map_err(|e| e.to_string())?;
    println!(
        "    client {} / {}, LB node {} / {} (DPDK owns its veth lb0), backends {}-{}",
        addr::CLIENT4,
        addr::CLIENT6,
        addr::LB4,
        addr::LB6,
        addr::backend4(0),
        addr::backend4(2)
    );
    let server = bin_path("tb-server").map_err(|e| e.to_string())?;
    let _servers = tb.start_servers(&server, PORT).map_err(|e| e.to_string())?;
    println!("==> HTTP servers listening on b1, b2, b3 port {PORT}");
    println!("==> starting sluice-control ({})", control.display());
    let _control = start(&tb.lb, "sluice-control", control, "sluice-control ready")?;
    println!("==> starting sluice-dataplane ({})", dataplane.display());
    let _dataplane = start(
        &tb.lb,
        "sluice-dataplane",
        dataplane,
        "sluice-dataplane ready",
    )?;

    let n = conns.to_string();
    let args = [
        "--connections",
        &n,
        "--concurrency",
        "4",
        "--size",
        "1024",
        "--requests",
        "2",
    ];
    for (title, target) in [
        (
            format!("client -> {}:{PORT} (IPv4, full NAT)", addr::VIP4),
            format!("{}:{PORT}", addr::VIP4),
        ),
        (
            format!("client -> [{}]:{PORT} (IPv6, full NAT)", addr::VIP6),
            format!("[{}]:{PORT}", addr::VIP6),
        ),
    ] {
        println!("==> {title}: {conns} connections, 2 requests of 1 KiB each");
        let out = run_client(&tb.client, &target, &args, Duration::from_secs(300))
            .map_err(|e| e.to_string())?;
        spread(&title, &out)?;
    }
    let ctl = bin_path("sluicectl").map_err(|e| e.to_string())?;
    for args in [&["status"][..], &["backends", "web-v4"][..]] {
        println!("==> sluicectl --socket {DEMO_SOCKET} {}", args.join(" "));
        let out = std::process::Command::new(&ctl)
            .args(["--socket", DEMO_SOCKET])
            .args(args)
            .output()
            .map_err(|e| format!("sluicectl: {e}"))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("    {line}");
        }
        if !out.status.success() {
            return Err(format!(
                "sluicectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    println!(
        "==> a few of sluice-control's Prometheus metrics (GET http://127.0.0.1:9109/metrics on the LB node)"
    );
    match tb.lb.exec(
        "curl",
        &["-sf", "--max-time", "5", "http://127.0.0.1:9109/metrics"],
    ) {
        Ok(text) => {
            for line in text.lines().filter(|l| {
                l.starts_with("sluice_service_packets_total")
                    || l.starts_with("sluice_service_connections_total")
                    || l.starts_with("sluice_backend_connections_total")
                    || l.starts_with("sluice_table_generation")
                    || l.starts_with("sluice_conntrack_entries")
                    || (l.starts_with("sluice_dataplane_drops_total") && !l.ends_with(" 0"))
            }) {
                println!("    {line}");
            }
        }
        Err(e) => println!("    (metrics not available: {e})"),
    }
    println!("==> cleaning up (processes by PID, namespaces, table region)");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: sluice-demo CONTROL_TOML DATAPLANE_TOML [CONNECTIONS]");
        return ExitCode::from(2);
    }
    let conns = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(300);
    let result = run(Path::new(&args[1]), Path::new(&args[2]), conns);
    // The region outlives control by design (the dataplane keeps forwarding); the demo's does not.
    let _ = sluice_hugepages::Region::remove("sluice-demo");
    match result {
        Ok(()) => {
            println!("==> demo finished: Sluice balanced every connection over all three backends");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::from(1)
        }
    }
}
