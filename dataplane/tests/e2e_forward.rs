//! End to end, in network namespaces: real TCP clients (`tb-client`) fetch from real TCP
//! servers (`tb-server`) through the real `sluice-dataplane` process on a veth port
//! (`net_af_packet`), in full-NAT and L2-DSR modes, over IPv4 and IPv6. Every connection must
//! complete with byte-exact data, and connections must spread over every backend. The test
//! process plays control: it creates the table region and publishes services into it, and
//! reads back the connection counters the dataplane keeps there (one per TCP connection, on
//! the service and on the backend that served it).
//!
//! Namespaces, the dataplane and the servers are removed/killed (by PID) whatever happens.

mod common;

use std::time::Duration;

use sluice_dataplane::tables::{Affinity, Mode, Proto, ServiceKey};
use sluice_testbed::{BackendMode, OneArm, Proc, addr, bin_path, client_result, run_client};

use common::lb::{Lb, PORT};

fn check_spread(text: &str, want: usize, backends: usize) {
    let (ok, failed, per) = client_result(text).expect("RESULT line");
    assert_eq!((ok, failed), (want, 0), "{text}");
    for i in 1..=backends {
        assert!(
            per.get(&format!("b{i}")).copied().unwrap_or(0) > 0,
            "b{i} got nothing: {per:?}"
        );
    }
    println!("spread: {per:?}");
}

/// The region's counters for `vip:PORT` agree with what the client saw: one connection per
/// TCP connection, on the service and on the backend that served it (`X-Backend: bN` is
/// backend id N). The counters are cumulative, so `text` must be the service's only client run.
fn check_connection_counters(lb: &Lb, vip: &str, text: &str) {
    let (ok, _, per) = client_result(text).expect("RESULT line");
    let key = ServiceKey::new(vip.parse().expect("vip"), PORT, Proto::Tcp);
    let (index, _) = lb.writer.service(&key).expect("service published");
    let s = lb.writer.service_totals(index);
    assert_eq!(s.connections, u64::try_from(ok).unwrap(), "{vip}: {s:?}");
    assert!(s.packets > s.connections, "{vip}: {s:?}");
    let backends = lb.writer.backend_totals(index);
    assert_eq!(backends.len(), 3);
    for (id, t) in backends {
        let served = per.get(&format!("b{}", id.0)).copied().unwrap_or(0);
        assert_eq!(
            t.connections,
            u64::try_from(served).unwrap(),
            "{vip} backend {id:?}: {t:?}, client saw {per:?}"
        );
    }
}

fn servers(tb: &OneArm) -> Vec<Proc> {
    tb.start_servers(&bin_path("tb-server").expect("tb-server"), PORT)
        .expect("servers")
}

/// Publishes one IPv4 and one IPv6 VIP in `mode` over all three backends and checks that 60
/// real connections to each complete byte-exact and reach every backend.
fn spreads_over_all_backends(tag: &str, backends: BackendMode, mode: Mode) {
    let tb = OneArm::new(tag, 3, backends).expect("testbed");
    let _servers = servers(&tb);
    let mut lb = Lb::start(&tb, tag);
    lb.publish(1, addr::VIP4, mode, &[0, 1, 2]);
    lb.publish(2, addr::VIP6, mode, &[0, 1, 2]);
    let args = [
        "--connections",
        "60",
        "--size",
        "3000",
        "--concurrency",
        "4",
        "--requests",
        "2",
    ];
    for (vip, target) in [
        (addr::VIP4, format!("{}:{PORT}", addr::VIP4)),
        (addr::VIP6, format!("[{}]:{PORT}", addr::VIP6)),
    ] {
        let out = run_client(&tb.client, &target, &args, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("client to {target}: {e}\n{}", lb.status()));
        check_spread(&out, 60, 3);
        check_connection_counters(&lb, vip, &out);
    }
}

#[test]
fn nat_mode_spreads_real_tcp_over_all_backends_v4_and_v6() {
    spreads_over_all_backends("nat", BackendMode::Nat, Mode::Nat);
}

#[test]
fn dsr_mode_spreads_real_tcp_over_all_backends_v4_and_v6() {
    spreads_over_all_backends("dsr", BackendMode::Dsr, Mode::Dsr);
}

/// Client-IP affinity: 40 connections from the one client (40 source ports) all land on one
/// backend of three, while the same service without affinity spreads them.
#[test]
fn client_ip_affinity_keeps_every_connection_of_a_client_on_one_backend() {
    let tb = OneArm::new("aff", 3, BackendMode::Nat).expect("testbed");
    let _servers = servers(&tb);
    let mut lb = Lb::start(&tb, "aff");
    lb.publish_with(1, addr::VIP4, Mode::Nat, Affinity::ClientIp, &[0, 1, 2]);
    let t4 = format!("{}:{PORT}", addr::VIP4);
    let args = ["--connections", "40", "--size", "500", "--concurrency", "4"];
    let out = run_client(&tb.client, &t4, &args, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("client: {e}\n{}", lb.status()));
    let (ok, failed, per) = client_result(&out).expect("RESULT line");
    assert_eq!((ok, failed), (40, 0), "{out}");
    assert_eq!(
        per.len(),
        1,
        "affinity: one backend for the client, got {per:?}"
    );
    println!("affinity: {per:?}");
    // The same service without affinity spreads the client's connections again.
    lb.publish_with(1, addr::VIP4, Mode::Nat, Affinity::None, &[0, 1, 2]);
    let out = run_client(&tb.client, &t4, &args, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("client: {e}\n{}", lb.status()));
    check_spread(&out, 40, 3);
}

/// Long-lived connections opened while the service has two backends keep their backend when a
/// third is added (conntrack), while new connections also reach the new one (Maglev).
#[test]
fn established_flows_keep_their_backend_when_the_backend_set_changes() {
    let tb = OneArm::new("stk", 3, BackendMode::Nat).expect("testbed");
    let _servers = servers(&tb);
    let mut lb = Lb::start(&tb, "stk");
    lb.publish(1, addr::VIP4, Mode::Nat, &[0, 1]);
    let t4 = format!("{}:{PORT}", addr::VIP4);
    // 16 connections, each sending 8 requests 400 ms apart (about 3 s) on one TCP connection;
    // tb-client fails a connection whose X-Backend changes between requests.
    let long = {
        let ns_cmd = tb.client.name().to_owned();
        let target = t4.clone();
        std::thread::spawn(move || {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &ns_cmd])
                .arg(bin_path("tb-client").expect("tb-client"))
                .args([
                    "--target",
                    &target,
                    "--connections",
                    "16",
                    "--concurrency",
                    "16",
                ])
                .args(["--requests", "8", "--hold-ms", "400", "--size", "500"])
                .output()
                .expect("long client");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    lb.publish(1, addr::VIP4, Mode::Nat, &[0, 1, 2]);
    let out = long.join().expect("long client thread");
    let (ok, failed, per) = client_result(&out).expect("RESULT");
    assert_eq!(
        (ok, failed),
        (16, 0),
        "established connections broke:\n{out}"
    );
    assert!(
        !per.contains_key("b3"),
        "flows opened before b3 existed cannot be on it: {per:?}"
    );
    // New connections follow the new table, b3 included.
    let args = ["--connections", "60", "--size", "500", "--concurrency", "4"];
    let out = run_client(&tb.client, &t4, &args, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("new client: {e}\n{}", lb.status()));
    check_spread(&out, 60, 3);
}
