//! The pipeline's packet path allocates nothing after `Pipeline::new` (DESIGN, Dataplane;
//! STYLE rule 7).
//!
//! dhat's heap profiler (in testing mode) is the global allocator and counts every allocation
//! in the process. The test builds pipelines, services and every input frame first, reads the
//! count, then drives every kind of packet through `process`: NAT flow set-up (pairs, SNAT
//! ports) and hits, NAT replies, DSR, IP-in-IP and GUE for both families (encap prepends into
//! the buffer's headroom), ARP and NDP replies, ICMP errors for DSR and NAT flows, fragments,
//! VLAN tags, TTL drops, malformed frames, unknown ports, redirects, a full table (stateless
//! fallback and NAT refusals) and aging. The count must not move. Buffers are refilled with
//! `VecBuf::reset`, which reuses their capacity.
//!
//! One more pipeline reads the same services from a shared-memory table region (the
//! production [`Services`](sluice_dataplane::pipeline::Services)) and counts every forwarded
//! packet into it as the worker loop does (`Worker::count_forward`: packets, bytes and
//! connections per service and backend): that path allocates nothing either.

#[path = "pipeline_support.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sluice_dataplane::conntrack::Tick;
use sluice_dataplane::maglev::{self, MaglevBackend, TableSize};
use sluice_dataplane::pipeline::{PacketBuf, Pipeline, StaticServices, VecBuf, Verdict};
use sluice_dataplane::tables::{
    Affinity, Backend, Backing, Capacity, Mode, ServiceId, ServiceKey, ServiceSpec, ServiceUpdate,
    Tables, Worker, Writer, WriterOptions,
};
use sluice_dataplane::wire::parse_frame;
use support::*;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Allocations so far (blocks ever allocated, reallocations included).
fn allocs() -> u64 {
    dhat::HeapStats::get().total_blocks
}

/// `(key, id, mode, backends)` for `(VIP, port, TCP?) → mode` in both families; backends of
/// the service's family except the mixed-family encap ones.
fn service_list() -> Vec<(ServiceKey, ServiceId, Mode, Vec<Backend>)> {
    let list = [
        (false, 80, true, Mode::Nat, false),
        (false, 53, false, Mode::Nat, false),
        (false, 443, true, Mode::Dsr, false),
        (false, 8080, true, Mode::EncapIpip, true),
        (false, 4789, false, Mode::EncapGue, false),
        (true, 80, true, Mode::Nat, true),
        (true, 443, true, Mode::Dsr, true),
        (true, 8080, true, Mode::EncapIpip, false),
        (true, 4789, false, Mode::EncapGue, true),
    ];
    (0u32..)
        .zip(list)
        .map(|(i, (v6, port, tcp, mode, backends_v6))| {
            let backends = (1..=4)
                .map(|b| backend(b + 10 * i, backends_v6, 0))
                .collect();
            (
                ServiceKey::new(vip(v6), port, proto(tcp)),
                ServiceId(i),
                mode,
                backends,
            )
        })
        .collect()
}

fn services() -> StaticServices {
    let mut s = StaticServices::new();
    for (key, id, mode, backends) in service_list() {
        s.upsert(key, id, mode, TableSize::try_new(251).unwrap(), &backends)
            .unwrap();
    }
    s
}

/// The same services published into a new table region `name` (as control would, one
/// generation), and a worker registered on it.
fn shared(name: &str) -> (Writer, Tables, Worker) {
    let _ = Writer::remove(name);
    let cap = Capacity {
        max_services: 16,
        max_workers: 2,
        dir_slots: 4,
        arena_bytes: 1 << 20,
    };
    let mut w = Writer::create(name, cap, Backing::Shm, WriterOptions::default()).unwrap();
    let list = service_list();
    let tables: Vec<_> = list
        .iter()
        .map(|(_, _, _, backends)| {
            let names: Vec<String> = backends.iter().map(|b| b.id.0.to_string()).collect();
            let inputs: Vec<MaglevBackend<'_>> =
                names.iter().map(|n| MaglevBackend::new(n, 1)).collect();
            maglev::build(TableSize::try_new(251).unwrap(), &inputs).unwrap()
        })
        .collect();
    let updates: Vec<ServiceUpdate<'_>> = list
        .iter()
        .zip(&tables)
        .map(|((key, id, mode, backends), table)| {
            ServiceUpdate::Upsert(ServiceSpec {
                key: *key,
                id: *id,
                mode: *mode,
                affinity: Affinity::None,
                backends,
                table,
            })
        })
        .collect();
    w.publish(&updates).unwrap();
    let t = Tables::map_with(name, Backing::Shm).unwrap();
    let worker = t.register().unwrap();
    (w, t, worker)
}

/// Removes the region when the test ends, pass or fail.
struct Region(String);

impl Drop for Region {
    fn drop(&mut self) {
        let _ = Writer::remove(&self.0);
    }
}

fn client_n(v6: bool, n: u16) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, n))
    } else {
        let [a, b] = n.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(100, 64, a, b))
    }
}

/// Every kind of frame, built before counting.
fn frames() -> Vec<Vec<u8>> {
    let mut f = Vec::new();
    for v6 in [false, true] {
        for n in 1..=50u16 {
            for (port, tcp) in [
                (80, true),
                (53, false),
                (443, true),
                (8080, true),
                (4789, false),
            ] {
                let mut ip = Ip::new(client_n(v6, n), vip(v6), 64);
                ip.tos = 0x10;
                f.push(frame(&TO_NODE, &ip, &l4(tcp, 40_000 + n, port), b"payload"));
            }
        }
        // VLAN-tagged, TTL 1, a port without a service.
        let tagged = L2 {
            vlans: &[100, 7],
            ..TO_NODE
        };
        f.push(frame(
            &tagged,
            &Ip::new(client(v6), vip(v6), 64),
            &tcp(1234, 443),
            b"x",
        ));
        f.push(frame(
            &TO_NODE,
            &Ip::new(client(v6), vip(v6), 1),
            &tcp(1235, 80),
            b"x",
        ));
        f.push(frame(
            &TO_NODE,
            &Ip::new(client(v6), vip(v6), 64),
            &tcp(1236, 9999),
            b"x",
        ));
        // An ICMP error about a DSR flow and about a NAT flow (client 1's).
        for (port, cport) in [(443u16, 40_001u16), (80, 40_001)] {
            let q = ip_packet(
                &Ip::new(vip(v6), client_n(v6, 1), 60),
                &tcp(port, cport),
                &[0; 32],
            );
            let (ty, code, rest) = if v6 {
                (2, 0, [0, 0, 5, 0])
            } else {
                (3, 4, [0, 0, 5, 0x78])
            };
            let router = if v6 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1))
            } else {
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1))
            };
            f.push(frame(
                &TO_NODE,
                &Ip::new(router, vip(v6), 64),
                &L4::Icmp { ty, code, rest },
                &q[..q.len() - 8],
            ));
        }
        // BGP to the node.
        f.push(frame(
            &TO_NODE,
            &Ip::new(client(v6), node(v6), 64),
            &tcp(50_000, 179),
            b"open",
        ));
    }
    // ARP request for the VIP, NDP solicitation for the IPv6 VIP.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&ROUTER_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&ROUTER_MAC);
    arp.extend_from_slice(&CLIENT4.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&VIP4.octets());
    arp.resize(60, 0);
    f.push(arp);
    let mut ns = VIP6.octets().to_vec();
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&ROUTER_MAC);
    let snm = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1);
    f.push(frame(
        &L2 {
            src: ROUTER_MAC,
            dst: [0x33, 0x33, 0xff, 0, 0, 1],
            vlans: &[],
        },
        &Ip::new(IpAddr::V6(CLIENT6), IpAddr::V6(snm), 255),
        &L4::Icmp {
            ty: 135,
            code: 0,
            rest: [0; 4],
        },
        &ns,
    ));
    // Fragments of a DSR datagram (IPv4): first, then later.
    let whole = frame(
        &TO_NODE,
        &Ip::new(client(false), vip(false), 64),
        &tcp(7777, 443),
        &[0xab; 64],
    );
    let (first, later) = split_v4(&whole, 24);
    f.push(first);
    f.push(later);
    // Junk.
    f.push(vec![0; 10]);
    f.push(whole[..30].to_vec());
    f
}

/// Splits an untagged IPv4 frame's payload at byte `k` into two fragments.
fn split_v4(whole: &[u8], k: usize) -> (Vec<u8>, Vec<u8>) {
    let seg = &whole[34..];
    let part = |data: &[u8], off: usize, more: bool| {
        let mut h = whole[14..34].to_vec();
        h[2..4].copy_from_slice(&u16::try_from(20 + data.len()).unwrap().to_be_bytes());
        let word = u16::try_from(off / 8).unwrap() | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&word.to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let c = !inet_sum(&[&h]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        [&whole[..14], &h[..], data].concat()
    };
    (part(&seg[..k], 0, true), part(&seg[k..], k, false))
}

/// The backend's answer to a forwarded frame: MACs, addresses and ports swapped.
fn reverse(f: &[u8]) -> Vec<u8> {
    let pf = parse_frame(f).unwrap();
    let mut r = f.to_vec();
    for i in 0..6 {
        r.swap(i, 6 + i);
    }
    let (a, b, n) = if pf.src.is_ipv4() {
        (pf.l3_offset + 12, pf.l3_offset + 16, 4)
    } else {
        (pf.l3_offset + 8, pf.l3_offset + 24, 16)
    };
    for i in 0..n {
        r.swap(a + i, b + i);
    }
    r.swap(pf.l4_offset, pf.l4_offset + 2);
    r.swap(pf.l4_offset + 1, pf.l4_offset + 3);
    r
}

#[test]
fn pipeline_allocates_nothing_per_packet() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let s = services();
    let frames = frames();
    let region = Region(format!("noalloc-{}", std::process::id()));
    let (writer, _tables, tw) = shared(&region.0);
    let mut q = pipeline();
    // A dry run on an identical pipeline gives the NAT replies to send (SNAT ports are
    // chosen deterministically), and a reply to another worker's port.
    let mut dry = pipeline();
    let mut replies = Vec::new();
    for f in &frames {
        let mut b = VecBuf::new(f);
        if let Verdict::Forward {
            backend: Some(_),
            service: 0 | 1 | 5,
            ..
        } = dry.process(&mut b, &s, NOW)
        {
            let pf = parse_frame(b.data()).unwrap();
            if pf.icmp.is_none() {
                replies.push(reverse(b.data()));
            }
        }
    }
    assert!(replies.len() >= 150, "{}", replies.len());
    let mut two = config();
    two.workers = 2;
    let mut other = Pipeline::new(two).unwrap();
    let mut full_cfg = config();
    full_cfg.conntrack_capacity = 16;
    let mut full = Pipeline::new(full_cfg).unwrap();
    let mut p = pipeline();
    let mut buf = VecBuf::with_headroom(&[0; 2048], 128);
    let mut verdicts = [Verdict::Exception; 8];
    let mut burst: Vec<VecBuf> = frames
        .iter()
        .take(8)
        .map(|f| VecBuf::with_headroom(f, 128))
        .collect();
    // A reply to an SNAT port of worker 1's half of the range (1024..=65535 split in two).
    let reply_to_other = frame(
        &TO_NODE,
        &Ip::new(backend(1, false, 0).addr, node(false), 64),
        &tcp(8080, 60_000),
        b"x",
    );

    let before = allocs();
    let mut forwarded = 0;
    for round in 0..3u64 {
        let now = Tick(NOW.0 + round * 1_000_000);
        for f in frames.iter().chain(&replies) {
            buf.reset(f);
            if matches!(p.process(&mut buf, &s, now), Verdict::Forward { .. }) {
                forwarded += 1;
            }
            buf.reset(f);
            let _ = full.process(&mut buf, &s, now);
            buf.reset(f);
            let _ = other.process_from(u16::from(round == 2), &mut buf, &s, now);
            // The production path: services from the shared tables, counted into them.
            buf.reset(f);
            if let Verdict::Forward {
                service,
                backend,
                bytes,
                new_flow,
            } = q.process(&mut buf, &tw, now)
            {
                tw.count_forward(service, backend, u64::from(bytes), new_flow);
            }
        }
        buf.reset(&reply_to_other);
        let _ = other.process(&mut buf, &s, now);
        for (b, f) in burst.iter_mut().zip(&frames) {
            b.reset(f);
        }
        p.process_burst(0, &mut burst, &mut verdicts, &s, now);
        p.age(Tick(now.0 + 3_600_000_000_000), 10_000);
    }
    let after = allocs();
    assert_eq!(after - before, 0, "the packet path allocated");
    // The paths above really ran.
    assert!(forwarded > 500, "{forwarded}");
    let c = p.counters();
    assert!(c.nat_replies > 0 && c.icmp_errors > 0 && c.replies > 0 && c.exceptions > 0);
    assert!(full.counters().conntrack_full_fallback > 0);
    assert!(other.counters().redirects > 0);
    // The shared-tables pipeline forwarded and counted: its connections are its new flows,
    // per service and, summed, per backend (every backend has a counter slot here).
    let qc = q.counters();
    assert!(qc.new_flows > 0 && qc.nat_replies > 0, "{qc:?}");
    let (mut packets, mut conns, mut backend_conns) = (0, 0, 0);
    for (index, _) in writer.services() {
        let t = writer.service_totals(index);
        packets += t.packets;
        conns += t.connections;
        backend_conns += writer
            .backend_totals(index)
            .iter()
            .map(|b| b.1.connections)
            .sum::<u64>();
    }
    assert_eq!(packets, qc.forwarded);
    assert_eq!((conns, backend_conns), (qc.new_flows, qc.new_flows));
}
