//! End to end, with real processes in the namespace testbed: `sluice-control` publishes one
//! service, the real `sluice-dataplane` forwards N real TCP connections through the VIP, and
//! `GET /metrics` on control's listener (in this test's namespace, on a free loopback port)
//! parses with a Prometheus text-format parser (`prometheus-parse`) and reports what the
//! traffic did: the backends' packet counters (client → backend) sum to at least 3 packets
//! per connection, each backend that served connections counted some, the service's counter
//! (both directions) exceeds that sum, the connection counters equal the connections each
//! backend served (and their total), every drop reason is present, each worker's conntrack
//! capacity is the configured one, and the generation is the one control published.
//!
//! Namespaces, processes (killed by PID), the region and the temp files are removed whatever
//! happens. Needs root, and `sluice-dataplane` plus the testbed binaries built next to this
//! test (`cargo build -p sluice-dataplane --bin sluice-dataplane -p sluice-testbed --bins`).
#![allow(clippy::disallowed_types)] // std::time::Instant: a test's own deadlines.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Cleanup;
use prometheus_parse::{Scrape, Value};
use sluice_dataplane::pipeline::DropReason;
use sluice_dataplane::tables::Writer;
use sluice_testbed::{
    BackendMode, OneArm, Proc, addr, bin_path, client_result, control_test_config,
    dataplane_test_config, free_port, run_client,
};

const PORT: u16 = 8080;
const CONNECTIONS: usize = 40;
/// `capacity_per_worker` in `sluice_testbed::dataplane_test_config`.
const CONNTRACK: u64 = 65536;

/// Spawns `cmd` and waits for its `ready` line (see `Proc::spawn_ready`).
fn spawn_ready(what: &str, cmd: &mut Command, ready: &str) -> (Proc, String) {
    Proc::spawn_ready(what, cmd, ready, Duration::from_secs(60)).expect("ready")
}

/// `GET path` over plain HTTP/1.1; returns the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n"
    )
    .expect("request");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or_default().to_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .expect("length");
    assert_eq!(len, body.len(), "Content-Length matches the body");
    (status, body.to_owned())
}

fn scrape(port: u16) -> Scrape {
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    println!("{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The value of the one sample named `name` whose labels include `labels`.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{name}: unexpected {other:?}"),
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0]
}

#[test]
fn metrics_parse_and_match_the_traffic() {
    let pid = std::process::id();
    let region = format!("ctl-metrics-{pid}");
    let _ = Writer::remove(&region);
    let cfg = PathBuf::from(format!("/tmp/sluice-ctl-met-{pid}.toml"));
    let dp_cfg = PathBuf::from(format!("/tmp/sluice-ctl-met-dp-{pid}.toml"));
    let log = PathBuf::from(format!("/tmp/sluice-ctl-met-{pid}.log"));
    let _cleanup = Cleanup {
        region: region.clone(),
        files: vec![cfg.clone(), dp_cfg.clone(), log.clone()],
    };
    let dataplane = bin_path("sluice-dataplane").unwrap_or_else(|e| {
        panic!("{e}\nbuild it with: cargo build -p sluice-dataplane --bin sluice-dataplane")
    });
    let metrics_port = free_port();
    let socket = PathBuf::from(format!("/tmp/sluice-ctl-met-{pid}.sock"));

    let tb = OneArm::new("met", 3, BackendMode::Nat).expect("testbed");
    let _servers = tb
        .start_servers(&bin_path("tb-server").expect("tb-server"), PORT)
        .expect("servers");

    std::fs::write(
        &cfg,
        control_test_config(&region, metrics_port, &socket, PORT, 3),
    )
    .expect("config");
    let mut control_cmd = Command::new(env!("CARGO_BIN_EXE_sluice-control"));
    control_cmd
        .args(["--config".as_ref(), cfg.as_os_str()])
        .stderr(std::fs::File::create(&log).expect("log"));
    let (_control, ready) = spawn_ready(
        "sluice-control",
        &mut control_cmd,
        "sluice-control ready: 1 services",
    );
    let generation: f64 = ready
        .split("at generation ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no generation in {ready:?}"));

    // Before any worker attaches: parseable, the service at zero, every drop reason listed.
    let s = scrape(metrics_port);
    assert_eq!(value(&s, "sluice_table_generation", &[]), generation);
    assert_eq!(
        value(&s, "sluice_service_packets_total", &[("service", "web")]),
        0.0
    );
    assert_eq!(
        http_get(metrics_port, "/nope").0,
        "HTTP/1.1 404 Not Found",
        "other paths are 404"
    );

    std::fs::write(&dp_cfg, dataplane_test_config(&region, None)).expect("dataplane config");
    let mut dp_cmd = tb.lb.command(&dataplane);
    dp_cmd
        .args(["--config".as_ref(), dp_cfg.as_os_str()])
        .stderr(Stdio::inherit());
    let (_dataplane, _) = spawn_ready("sluice-dataplane", &mut dp_cmd, "sluice-dataplane ready");

    let n = CONNECTIONS.to_string();
    let out = run_client(
        &tb.client,
        &format!("{}:{PORT}", addr::VIP4),
        &["--connections", &n, "--size", "1000", "--concurrency", "4"],
        Duration::from_secs(120),
    )
    .expect("client");
    let (ok, failed, per) = client_result(&out).expect("RESULT line");
    assert_eq!((ok, failed), (CONNECTIONS, 0), "{out}");
    // Let the worker finish the last bursts (FIN/ACK) and publish its counters.
    std::thread::sleep(Duration::from_millis(500));

    let s = scrape(metrics_port);
    let service = value(&s, "sluice_service_packets_total", &[("service", "web")]);
    let min = f64::from(u32::try_from(3 * CONNECTIONS).expect("small"));
    assert!(
        service >= min,
        "{service} packets for {CONNECTIONS} connections"
    );
    assert!(value(&s, "sluice_service_bytes_total", &[("service", "web")]) > 0.0);
    let mut sum = 0.0;
    let mut bytes = 0.0;
    for b in ["b1", "b2", "b3"] {
        let l = [("service", "web"), ("backend", b)];
        let p = value(&s, "sluice_backend_packets_total", &l);
        let got = per.get(b).copied().unwrap_or(0);
        assert_eq!(p > 0.0, got > 0, "{b}: {p} packets, {got} connections");
        // Each client connection is one new flow, counted once, on the backend that served it.
        assert_eq!(
            value(&s, "sluice_backend_connections_total", &l),
            f64::from(u32::try_from(got).expect("small")),
            "{b}: connections"
        );
        sum += p;
        bytes += value(&s, "sluice_backend_bytes_total", &l);
    }
    // Backend counters see client → backend packets only; the service's also count the NAT
    // replies (backend → client), so the service's exceed the backends' sum, which in turn
    // covers what the clients must have sent.
    assert!(
        sum >= min,
        "{sum} client packets for {CONNECTIONS} connections"
    );
    assert!(sum < service, "backends {sum}, service {service}");
    assert!(bytes < value(&s, "sluice_service_bytes_total", &[("service", "web")]));
    assert_eq!(
        value(
            &s,
            "sluice_service_connections_total",
            &[("service", "web")]
        ),
        f64::from(u32::try_from(CONNECTIONS).expect("small")),
        "service connections"
    );
    for r in DropReason::ALL {
        value(
            &s,
            "sluice_dataplane_drops_total",
            &[("reason", r.as_str())],
        );
    }
    assert!(value(&s, "sluice_dataplane_rx_packets_total", &[]) >= service);
    assert!(value(&s, "sluice_dataplane_tx_packets_total", &[]) > 0.0);
    // One worker, whatever its block index: capacity as configured, up, entries reported.
    let workers: Vec<&str> = s
        .samples
        .iter()
        .filter(|x| x.metric == "sluice_conntrack_capacity")
        .filter_map(|x| x.labels.get("worker"))
        .collect();
    assert_eq!(workers.len(), 1, "{workers:?}");
    let w = [("worker", workers[0])];
    assert_eq!(
        value(&s, "sluice_conntrack_capacity", &w),
        f64::from(u32::try_from(CONNTRACK).expect("small"))
    );
    value(&s, "sluice_conntrack_entries", &w);
    assert_eq!(value(&s, "sluice_dataplane_worker_up", &w), 1.0);
    assert_eq!(value(&s, "sluice_table_generation", &[]), generation);
    assert!(
        s.samples.iter().any(|x| x
            .metric
            .starts_with("sluice_table_publish_duration_seconds")),
        "publish histogram present"
    );
}
