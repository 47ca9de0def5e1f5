//! The safe DPDK wrapper on kernel-backed virtual ports, inside network namespaces made by the
//! test: `net_af_packet` on a veth pair, and `net_tap` answered by the kernel's own ARP.
//!
//! Each test runs twice: the parent makes the namespace (deleted whatever happens) and re-runs
//! the same test binary inside it as a child process with its own EAL.

mod common;

use std::time::{Duration, Instant};

use sluice_dataplane::io::{Mbuf, MbufBurst, Port, PortConfig};
use sluice_testbed::{Netns, is_child, remove_stale, run_test_in_netns};

use common::{eal, pool};

const ETHERTYPE_TEST: [u8; 2] = [0x88, 0xb5]; // IEEE local experimental

fn test_frame(seq: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0xff; 6]); // dst: broadcast
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x0a]); // src: locally administered
    out.extend_from_slice(&ETHERTYPE_TEST);
    let mut body = Vec::new();
    common::payload(seq, 46, &mut body);
    out.extend_from_slice(&body);
}

#[test]
fn af_packet_moves_frames_between_veth_peers() {
    const NAME: &str = "af_packet_moves_frames_between_veth_peers";
    if !is_child(NAME) {
        remove_stale();
        let ns = Netns::new("afp").expect("netns");
        ns.veth_pair("va", "vb").expect("veth pair");
        run_test_in_netns(&ns, NAME, Duration::from_secs(120)).expect("child");
        return; // `ns` drops here (or during unwinding): namespace and veths are deleted
    }
    const COUNT: u64 = 20_000;
    let pool = pool(4095);
    let a = eal()
        .create_vdev("net_af_packet0,iface=va")
        .expect("af_packet on va");
    let b = eal()
        .create_vdev("net_af_packet1,iface=vb")
        .expect("af_packet on vb");
    let mut pa = Port::new(eal(), a, &PortConfig::default(), &pool).expect("port a");
    let mut pb = Port::new(eal(), b, &PortConfig::default(), &pool).expect("port b");
    assert_eq!(pa.info().expect("info").driver, "net_af_packet");
    let (_arx, mut atx) = pa.take_queues();
    let (mut brx, _btx) = pb.take_queues();

    let (mut sent, mut received, mut foreign) = (0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    let (mut out, mut inb) = (MbufBurst::new(), MbufBurst::new());
    while sent < COUNT {
        while sent < COUNT && !out.is_full() {
            test_frame(sent, &mut buf);
            out.push(Mbuf::from_bytes(&pool, &buf).expect("alloc"))
                .expect("room");
            sent += 1;
        }
        while !out.is_empty() {
            atx[0].tx_burst(&mut out);
        }
        // Lock-step: collect this burst before sending the next, so no ring can overflow.
        let deadline = Instant::now() + Duration::from_secs(10);
        while received < sent {
            assert!(
                Instant::now() < deadline,
                "stalled: sent {sent}, received {received}"
            );
            brx[0].rx_burst(&mut inb);
            for m in inb.drain() {
                if m.data().get(12..14) != Some(&ETHERTYPE_TEST[..]) {
                    foreign += 1; // not ours (the kernel's own chatter); ignore
                    continue;
                }
                test_frame(received, &mut buf);
                assert_eq!(m.data(), &buf[..], "frame {received} differs");
                received += 1;
            }
        }
    }
    println!("sent {sent}, received {received} byte-exact, {foreign} foreign frames ignored");
    assert_eq!(received, COUNT);
    let (sa, sb) = (pa.stats().expect("stats"), pb.stats().expect("stats"));
    assert_eq!(sa.tx_packets, COUNT, "{sa:?}");
    assert_eq!(sb.rx_packets, COUNT + foreign, "{sb:?}");
    drop((atx, brx, pa, pb));
    assert_eq!(pool.in_use(), 0);
}

fn arp_request(src_mac: [u8; 6], src_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f
}

#[test]
fn tap_port_is_answered_by_the_kernel() {
    const NAME: &str = "tap_port_is_answered_by_the_kernel";
    if !is_child(NAME) {
        remove_stale();
        let ns = Netns::new("tap").expect("netns");
        run_test_in_netns(&ns, NAME, Duration::from_secs(120)).expect("child");
        return;
    }
    let pool = pool(4095);
    let id = eal().create_vdev("net_tap0,iface=sltap0").expect("net_tap");
    let mut port = Port::new(eal(), id, &PortConfig::default(), &pool).expect("tap port");
    // Kernel side of the tap, inside this test's namespace.
    sluice_testbed::run("ip", &["addr", "add", "10.99.0.1/24", "dev", "sltap0"]).expect("addr");
    sluice_testbed::run("ip", &["link", "set", "sltap0", "up"]).expect("up");
    let (mut rx, mut tx) = port.take_queues();
    let our_mac = [0x02, 0, 0, 0, 0, 0x02];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut burst = MbufBurst::new();
    let mut next_send = Instant::now();
    loop {
        assert!(
            Instant::now() < deadline,
            "the kernel never answered our ARP request"
        );
        if Instant::now() >= next_send {
            let req = arp_request(our_mac, [10, 99, 0, 2], [10, 99, 0, 1]);
            burst
                .push(Mbuf::from_bytes(&pool, &req).expect("alloc"))
                .expect("room");
            tx[0].tx_burst(&mut burst);
            burst.clear();
            next_send = Instant::now() + Duration::from_millis(200);
        }
        let mut inb = MbufBurst::new();
        rx[0].rx_burst(&mut inb);
        let answered = inb.as_slice().iter().any(|m| {
            let d = m.data();
            d.len() >= 42
                && d[..6] == our_mac
                && d[12..14] == [0x08, 0x06]
                && d[20..22] == [0, 2]
                && d[28..32] == [10, 99, 0, 1]
        });
        if answered {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("kernel answered the ARP request through net_tap");
    drop((rx, tx, port));
    assert_eq!(pool.in_use(), 0);
}
