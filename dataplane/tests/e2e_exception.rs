//! End to end, in network namespaces: the exception path. The real `sluice-dataplane` owns the
//! LB node's port (`lb0`, `net_af_packet`) and has an exception port, a `net_tap` whose kernel
//! side (`slhost`, in the LB namespace) carries the node's own host address, 10.90.0.4 /
//! fd90::4 (neither a VIP nor the node's NAT address), with the same MAC as `lb0`, as a real
//! deployment would. A real TCP server (`tb-server`) runs in the LB namespace's kernel on that
//! address, and real TCP clients (`tb-client`) in the client namespace reach it:
//!
//! ```text
//!   client ─ARP/NDP, TCP─▶ lb0 (DPDK) ─Exception─▶ tap ─▶ LB kernel (tb-server "host")
//!   client ◀──────────── lb0 (DPDK) ◀─ port 0 ◀─ tap ◀─ LB kernel
//! ```
//!
//! The kernel has no other way to the client: `lb0` has no kernel address (DPDK owns it), so
//! every byte of these connections crossed the dataplane both ways. Every connection must
//! complete byte-exact (tb-client checks the echoed bodies), while NAT services on the VIPs
//! keep forwarding through the same dataplane at the same time, and the dataplane must count
//! no `no_exception_port` drops.
//!
//! Namespaces, the dataplane and the servers are removed/killed (by PID) whatever happens.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use sluice_dataplane::pipeline::DropReason;
use sluice_dataplane::tables::{Mode, Tick};
use sluice_testbed::{BackendMode, Netns, OneArm, Proc, addr, bin_path, client_result, run_client};

use common::lb::{Lb, PORT};

/// The kernel side of the exception tap, in the LB namespace.
const TAP: &str = "slhost";
/// The LB node's host (kernel) addresses: not a VIP, not the node's NAT address.
const HOST4: &str = "10.90.0.4";
const HOST6: &str = "fd90::4";
/// The host's own service port (not a service port of the dataplane either).
const HOST_PORT: u16 = 9090;

/// A tap interface counter (`/sys/class/net/TAP/statistics/NAME`) read inside `ns`.
fn tap_stat(ns: &Netns, name: &str) -> u64 {
    ns.exec("cat", &[&format!("/sys/class/net/{TAP}/statistics/{name}")])
        .expect("tap statistics")
        .trim()
        .parse()
        .expect("counter")
}

/// The kernel side's MAC (`ip -o link show TAP`).
fn tap_mac(ns: &Netns) -> String {
    let out = ns.ip(&["-o", "link", "show", TAP]).expect("tap link");
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether")
        .to_owned()
}

/// Gives the tap's kernel side the host addresses and starts `tb-server` (named `host`) on it,
/// waiting until it accepts.
fn host_server(tb: &OneArm) -> Proc {
    let ns = &tb.lb;
    // Complete, checksummed frames from the kernel, as on the veths (DPDK forwards the kernel's
    // frames out of lb0 unchanged; nothing downstream would fill in a partial checksum).
    ns.exec(
        "ethtool",
        &["-K", TAP, "tx", "off", "tso", "off", "gso", "off"],
    )
    .expect("tap offloads off");
    ns.sysctl(&format!("net.ipv6.conf.{TAP}.disable_ipv6"), "0")
        .expect("ipv6 on");
    ns.ip(&["addr", "add", &format!("{HOST4}/24"), "dev", TAP])
        .expect("host v4");
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{HOST6}/64"),
        "dev",
        TAP,
        "nodad",
    ])
    .expect("host v6");
    ns.ip(&["link", "set", TAP, "up"]).expect("tap up");
    let mut cmd = ns.command(bin_path("tb-server").expect("tb-server"));
    cmd.args(["--listen", &format!("[::]:{HOST_PORT}"), "--name", "host"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = Proc::spawn("host tb-server", &mut cmd).expect("host server");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = ns
            .command("bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/{HOST4}/{HOST_PORT}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return server;
        }
        assert!(Instant::now() < deadline, "host server never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn no_exception_port_drops(lb: &mut Lb) -> u64 {
    let now = Tick::from_duration(lb.start.elapsed());
    lb.writer
        .workers(now)
        .iter()
        .map(|w| w.counters.drops[DropReason::NoExceptionPort as usize])
        .sum()
}

#[test]
fn host_traffic_takes_the_exception_tap_while_vips_keep_forwarding() {
    let tb = OneArm::new("exc", 2, BackendMode::Nat).expect("testbed");
    let _servers = tb
        .start_servers(&bin_path("tb-server").expect("tb-server"), PORT)
        .expect("servers");
    let lb_mac = addr::mac_str(addr::LB_HOST);
    // The kernel side must carry lb0's MAC: the client addresses the host by the MAC it learns
    // from the kernel's ARP/NDP answers, and the dataplane only takes unicast frames to lb0's
    // MAC (`not_our_mac`). DPDK 22.11's net_tap `mac=` devarg gives the kernel's tap that
    // MAC (checked here), so no `ip link set address` is needed.
    let device = format!("net_tap0,iface={TAP},mac={lb_mac}");
    let mut lb = Lb::start_with(&tb, "exc", Some(&device));
    let kernel_mac = tap_mac(&tb.lb);
    assert!(
        kernel_mac.eq_ignore_ascii_case(&lb_mac),
        "tap kernel side has {kernel_mac}, not {lb_mac}"
    );
    let _host = host_server(&tb);
    lb.publish(1, addr::VIP4, Mode::Nat, &[0, 1]);
    lb.publish(2, addr::VIP6, Mode::Nat, &[0, 1]);
    let tap_rx0 = tap_stat(&tb.lb, "rx_packets");
    let tap_tx0 = tap_stat(&tb.lb, "tx_packets");

    // Host and VIP traffic at the same time, through the same dataplane.
    const ARGS: &[&str] = &[
        "--connections",
        "40",
        "--size",
        "3000",
        "--concurrency",
        "4",
        "--requests",
        "2",
    ];
    let targets = [
        ("host v4", format!("{HOST4}:{HOST_PORT}")),
        ("host v6", format!("[{HOST6}]:{HOST_PORT}")),
        ("vip v4", format!("{}:{PORT}", addr::VIP4)),
        ("vip v6", format!("[{}]:{PORT}", addr::VIP6)),
    ];
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|(what, target)| {
                let client = &tb.client;
                s.spawn(move || {
                    let r = run_client(client, target, ARGS, Duration::from_secs(120));
                    (*what, r.map_err(|e| e.to_string()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let status = lb.status();
    println!("{status}");
    for (what, r) in results {
        let out = r.unwrap_or_else(|e| panic!("{what}: {e}\n{status}"));
        let (ok, failed, per) = client_result(&out).expect("RESULT line");
        assert_eq!((ok, failed), (40, 0), "{what}: {out}\n{status}");
        if what.starts_with("host") {
            // Only the host's kernel answered, never a backend.
            assert_eq!(per.keys().collect::<Vec<_>>(), ["host"], "{what}: {per:?}");
        } else {
            assert!(!per.contains_key("host"), "{what}: {per:?}");
            for b in ["b1", "b2"] {
                assert!(per.get(b).copied().unwrap_or(0) > 0, "{what}: {per:?}");
            }
        }
        println!("{what}: {per:?}");
    }

    // The kernel's side of the tap carried the host's connections both ways: 80 connections,
    // each at least a SYN, an ACK, 2 x 3 segments of request (3000 bytes) and a FIN from the
    // client, and as much from the server.
    let tap_rx = tap_stat(&tb.lb, "rx_packets") - tap_rx0;
    let tap_tx = tap_stat(&tb.lb, "tx_packets") - tap_tx0;
    println!("tap kernel side: rx {tap_rx} tx {tap_tx} packets");
    assert!(
        tap_rx >= 80 * 8 && tap_tx >= 80 * 8,
        "rx {tap_rx} tx {tap_tx}"
    );
    // Give the workers a moment to publish their final counters.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(no_exception_port_drops(&mut lb), 0, "{}", lb.status());
}
