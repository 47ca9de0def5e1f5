//! Fuzzing entry point of the whole pipeline, kept next to it (linkerd's
//! `transport-header` pattern). Compiled only for tests and under `cargo fuzz`.
//!
//! [`process_frames`] is the body of `fuzz/fuzz_targets/pipeline.rs` and of the "any bytes"
//! proptests. It runs frames through one [`Pipeline`] over a small fixed service set
//! ([`services`]: every mode, both families, a down, a draining and an unresolved backend,
//! client-IP affinity on three services, a tiny conntrack table so the full-table paths run) and panics — the fuzzer's signal — when
//! the contract does not hold:
//!
//! - `process` returns, and never with [`DropReason::RewriteFailed`] (a rewrite found the
//!   frame shorter than the parser said);
//! - `Exception`, `Redirect` and `Drop` leave the frame as it was;
//! - a forwarded frame parses again; if the input's TCP/UDP checksum was valid, the output's
//!   (the inner packet's, for encap) is too; an encapsulated frame carries the input's IP
//!   packet byte for byte;
//! - a NAT-forwarded frame, answered the way its backend would (addresses, ports and MACs
//!   swapped), is un-NATed back to the client: addresses and ports are the original ones
//!   swapped, and a valid checksum stays valid;
//! - a `Reply` parses as an ARP reply or a neighbor advertisement with a valid checksum;
//! - `new_flow` (a connection) is set only on a packet with a backend that is not an ICMP
//!   error, always on a whole TCP/UDP packet that had no live conntrack entry, and on one that
//!   had an entry only when the flow moved (`backend_moves`); it counts in
//!   `Counters::new_flows`.

#![cfg(any(test, fuzzing))]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use super::{
    DropReason, PacketBuf, Pipeline, PipelineConfig, Services, StaticServices, VecBuf, Verdict,
};
use crate::conntrack::Tick;
use crate::maglev::TableSize;
use crate::tables::{
    Affinity, Backend, BackendId, BackendState, Mode, Proto, ServiceId, ServiceKey,
};
use crate::wire::{
    EthernetAddress, FragmentInfo, IpProtocol, L3, ParsedFrame, arp, icmpv6, parse_frame, tcp, udp,
};

/// The node's MAC.
pub const NODE_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
/// The node's IPv4 address.
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// The node's IPv6 address.
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// The flow-hash seed.
pub const SEED: u64 = 0x5eed_f022;
/// IPv4 VIPs.
pub const VIP4: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
/// IPv6 VIPs.
pub const VIP6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
];

fn backend(id: u32, addr: IpAddr, port: u16, state: BackendState, mac: bool) -> Backend {
    let b = id.to_be_bytes();
    Backend {
        id: BackendId(id),
        addr,
        port,
        mac: mac.then_some([0x02, 0xbe, b[0], b[1], b[2], b[3]]),
        next_hop: None,
        weight: 1,
        state,
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xbe, 0, 0, 0, 0, last))
}

/// The fixed service set: `(VIP, port, proto) → mode` for both families, every mode, each
/// with a few backends (one down, one draining, one without a MAC where it matters).
pub fn services() -> &'static StaticServices {
    static S: OnceLock<StaticServices> = OnceLock::new();
    S.get_or_init(|| {
        use BackendState::{Active, Down, Draining};
        let m = TableSize::try_new(251).unwrap_or_default();
        let mut s = StaticServices::new();
        let v4_backends = [
            backend(1, v4(10, 1, 0, 1), 8080, Active, true),
            backend(2, v4(10, 1, 0, 2), 0, Active, true),
            backend(3, v4(10, 1, 0, 3), 8080, Draining, true),
            backend(4, v4(10, 1, 0, 4), 8080, Down, true),
        ];
        let v6_backends = [
            backend(11, v6(1), 8080, Active, true),
            backend(12, v6(2), 0, Active, true),
            backend(13, v6(3), 0, Down, true),
        ];
        let mixed = [
            backend(21, v4(10, 1, 1, 1), 0, Active, true),
            backend(22, v6(21), 0, Active, true),
        ];
        let unresolved = [backend(31, v4(10, 1, 2, 1), 0, Active, false)];
        let a4 = |i: usize| IpAddr::V4(VIP4[i % 2]);
        let a6 = |i: usize| IpAddr::V6(VIP6[i % 2]);
        let list: [(ServiceKey, Mode, &[Backend]); 9] = [
            (
                ServiceKey::new(a4(0), 80, Proto::Tcp),
                Mode::Nat,
                &v4_backends,
            ),
            (
                ServiceKey::new(a4(0), 53, Proto::Udp),
                Mode::Nat,
                &v4_backends,
            ),
            (
                ServiceKey::new(a4(0), 443, Proto::Tcp),
                Mode::Dsr,
                &v4_backends,
            ),
            (
                ServiceKey::new(a4(1), 80, Proto::Tcp),
                Mode::EncapIpip,
                &mixed,
            ),
            (
                ServiceKey::new(a4(1), 443, Proto::Udp),
                Mode::EncapGue,
                &mixed,
            ),
            (
                ServiceKey::new(a4(1), 8000, Proto::Tcp),
                Mode::Dsr,
                &unresolved,
            ),
            (
                ServiceKey::new(a6(0), 80, Proto::Tcp),
                Mode::Nat,
                &v6_backends,
            ),
            (
                ServiceKey::new(a6(0), 53, Proto::Udp),
                Mode::EncapGue,
                &mixed,
            ),
            (
                ServiceKey::new(a6(1), 80, Proto::Tcp),
                Mode::EncapIpip,
                &v6_backends,
            ),
        ];
        for (i, (key, mode, backends)) in (0u32..).zip(list) {
            let _ = s.upsert(key, ServiceId(100 + i), mode, m, backends);
        }
        // Client-IP affinity on a DSR, a GUE and a NAT service, so that its picks run too.
        for (key, _, _) in [list[2], list[4], list[6]] {
            s.set_affinity(&key, Affinity::ClientIp);
        }
        s
    })
}

/// A fresh pipeline over [`services`]: worker 0 of 2 (so replies to the other half of the
/// SNAT range are redirected), a conntrack table of 8 entries, fixed hash seeds.
///
/// # Panics
///
/// Never: the config is valid.
#[must_use]
pub fn pipeline() -> Pipeline {
    let mut c = PipelineConfig::one_armed(NODE_MAC, SEED);
    c.node_ipv4 = Some(NODE_V4);
    c.node_ipv6 = Some(NODE_V6);
    c.workers = 2;
    c.conntrack_capacity = 8;
    c.conntrack_seeds = Some([1, 2, 3, 4]);
    Pipeline::new(c).expect("valid fuzz config")
}

/// Runs the frames encoded in `data` through one [`pipeline`] and checks the module
/// contract. Byte 0 picks the headroom (`b & 3` → 0, 20, 40 or 128 bytes) and whether the
/// frames arrive on an unknown port (`b & 4`); then each frame is a big-endian `u16` length
/// and that many bytes (cut at the end of the input), at most 16 frames, 1 ms apart.
///
/// # Panics
///
/// When the contract does not hold (see the module docs).
pub fn process_frames(data: &[u8]) {
    let Some((&opts, mut rest)) = data.split_first() else {
        return;
    };
    let headroom = [0, 20, 40, 128][usize::from(opts & 3)];
    let port = u16::from(opts & 4 != 0);
    let mut pipe = pipeline();
    for i in 0..16u64 {
        let [hi, lo, tail @ ..] = rest else {
            return;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        check_frame(&mut pipe, frame, headroom, port, Tick(i * 1_000_000));
    }
}

/// Processes one frame and checks the contract for it (and, for NAT, its reply).
///
/// # Panics
///
/// When the contract does not hold.
pub fn check_frame(pipe: &mut Pipeline, frame: &[u8], headroom: usize, port: u16, now: Tick) {
    let services = services();
    // Whether this frame starts a flow (then a NAT reply must go to its source MAC; a later
    // packet's MAC may differ from the one stored at flow setup).
    let new_flow = parse_frame(frame).is_ok_and(|pf| {
        let key = crate::flow::FlowKey::new(pf.src, pf.dst, pf.src_port, pf.dst_port, pf.proto);
        pipe.conntrack().peek(&key).is_none()
    });
    // Whether the frame's 5-tuple has a live entry (a hit, unless its backend is gone).
    let tracked = parse_frame(frame).is_ok_and(|pf| {
        let key = crate::flow::FlowKey::new(pf.src, pf.dst, pf.src_port, pf.dst_port, pf.proto);
        pipe.conntrack()
            .peek(&key)
            .is_some_and(|e| now < e.expires())
    });
    let before = *pipe.counters();
    let mut buf = VecBuf::with_headroom(frame, headroom);
    let v = pipe.process_from(port, &mut buf, services, now);
    let after = *pipe.counters();
    let picked = matches!(v, Verdict::Forward { new_flow: true, .. });
    assert_eq!(
        after.new_flows - before.new_flows,
        u64::from(picked),
        "new_flows counts the new-flow verdicts"
    );
    let out = buf.data();
    match v {
        Verdict::Drop(DropReason::RewriteFailed) => panic!("rewrite failed on {frame:02x?}"),
        Verdict::Drop(_) | Verdict::Exception | Verdict::Redirect { .. } => {
            assert_eq!(out, frame, "{v:?} changed the frame");
        }
        Verdict::Reply => check_reply(out),
        Verdict::Forward {
            service, backend, ..
        } => {
            let pf_in = parse_frame(frame).expect("a forwarded frame parsed");
            let pf_out = parse_frame(out).expect("the output parses");
            let encapsulated = out.len() > frame.len();
            let (inner, inner_pf) = if encapsulated {
                innermost(out, &pf_out)
            } else {
                (out.to_vec(), pf_out)
            };
            if encapsulated {
                assert_eq!(ip_packet(&inner, &inner_pf), ip_packet(frame, &pf_in));
            } else if !is_nat(service) {
                // DSR: only the MACs change.
                assert_eq!(out.get(12..), frame.get(12..), "DSR touched more than MACs");
            }
            if l4_ok(frame, &pf_in) == Some(true) {
                assert_eq!(
                    l4_ok(&inner, &inner_pf),
                    Some(true),
                    "checksum broken: {v:?}"
                );
            }
            if icmp_ok(frame, &pf_in) == Some(true) {
                assert_eq!(
                    icmp_ok(&inner, &inner_pf),
                    Some(true),
                    "ICMP checksum broken"
                );
            }
            let flow_packet = backend.is_some() && pf_in.icmp.is_none();
            if picked {
                assert!(
                    flow_packet,
                    "only a flow's packet to a backend is a new flow: {v:?}"
                );
            }
            if flow_packet && pf_in.fragment == FragmentInfo::None {
                if !tracked {
                    assert!(picked, "a packet without a live entry is a new flow: {v:?}");
                } else if picked {
                    assert_eq!(
                        after.backend_moves - before.backend_moves,
                        1,
                        "a tracked packet is a new flow only when its flow moved"
                    );
                }
            }
            if backend.is_some() && is_nat(service) && !encapsulated && pf_in.icmp.is_none() {
                check_nat_round_trip(pipe, frame, &pf_in, out, now, new_flow);
            }
        }
    }
}

fn is_nat(index: u32) -> bool {
    [0u32, 1, 6].contains(&index)
}

/// The backend's answer to a NAT-forwarded frame, un-NATed, must be the client's packet
/// reversed.
fn check_nat_round_trip(
    pipe: &mut Pipeline,
    client: &[u8],
    pf_c: &ParsedFrame,
    fwd: &[u8],
    now: Tick,
    new_flow: bool,
) {
    let pf_f = parse_frame(fwd).expect("parses");
    if pf_f.icmp.is_some() {
        return; // an ICMP error translated for the backend, not a flow packet
    }
    let reply = reverse(fwd, &pf_f);
    let mut buf = VecBuf::new(&reply);
    let v = pipe.process(&mut buf, services(), now);
    let Verdict::Forward { backend: None, .. } = v else {
        // The reply's SNAT port may belong to worker 1, the pair may have been evicted, or
        // the reply (sent with the forwarded packet's TTL) may have none left.
        assert!(
            matches!(v, Verdict::Redirect { .. } | Verdict::Exception)
                || (v == Verdict::Drop(DropReason::TtlExpired) && pf_f.ttl <= 1),
            "NAT reply gave {v:?}"
        );
        return;
    };
    let out = buf.data();
    let pf_o = parse_frame(out).expect("un-NATed reply parses");
    assert_eq!((pf_o.src, pf_o.dst), (pf_c.dst, pf_c.src));
    assert_eq!(
        (pf_o.src_port, pf_o.dst_port),
        (pf_c.dst_port, pf_c.src_port)
    );
    if new_flow {
        assert_eq!(
            out.get(0..6),
            client.get(6..12),
            "reply goes to the client-side MAC"
        );
    }
    if l4_ok(client, pf_c) == Some(true) {
        assert_eq!(l4_ok(out, &pf_o), Some(true));
    }
    assert_eq!(
        l4_rest(out, &pf_o),
        l4_rest(client, pf_c),
        "L4 payload changed"
    );
}

/// The L4 segment without ports and checksum.
fn l4_rest(frame: &[u8], pf: &ParsedFrame) -> Vec<u8> {
    let mut seg = frame
        .get(pf.l4_offset..pf.l4_offset + usize::from(pf.l4_len))
        .unwrap_or_default()
        .to_vec();
    let at = if pf.proto == IpProtocol::TCP { 16 } else { 6 };
    for i in [0, 1, 2, 3, at, at + 1] {
        if let Some(b) = seg.get_mut(i) {
            *b = 0;
        }
    }
    seg
}

/// `frame` as its destination would answer it: MACs, addresses and ports swapped. Swapping
/// keeps every checksum valid (the sums do not change).
#[must_use]
pub fn reverse(frame: &[u8], pf: &ParsedFrame) -> Vec<u8> {
    let mut r = frame.to_vec();
    let swap = |r: &mut Vec<u8>, a: usize, b: usize, n: usize| {
        for i in 0..n {
            r.swap(a + i, b + i);
        }
    };
    swap(&mut r, 0, 6, 6);
    let l3 = pf.l3_offset;
    match pf.l3 {
        L3::Ipv4 => swap(&mut r, l3 + 12, l3 + 16, 4),
        L3::Ipv6 => swap(&mut r, l3 + 8, l3 + 24, 16),
        _ => {}
    }
    if pf.proto == IpProtocol::TCP || pf.proto == IpProtocol::UDP {
        swap(&mut r, pf.l4_offset, pf.l4_offset + 2, 2);
    }
    r
}

/// The IP packet of a frame (without Ethernet padding).
fn ip_packet<'a>(frame: &'a [u8], pf: &ParsedFrame) -> &'a [u8] {
    let end = pf.l4_offset + usize::from(pf.l4_len);
    frame.get(pf.l3_offset..end).unwrap_or_default()
}

/// For an encapsulated frame (IP-in-IP, or GUE), a synthetic frame of the inner packet (Ethernet + inner IP)
/// and its parse; otherwise the frame itself.
fn innermost(frame: &[u8], pf: &ParsedFrame) -> (Vec<u8>, ParsedFrame) {
    let inner_at = match pf.proto {
        IpProtocol::IPIP | IpProtocol::IPV6 => Some(pf.l4_offset),
        IpProtocol::UDP => Some(pf.l4_offset + 12),
        _ => None,
    };
    if let Some(at) = inner_at {
        let end = pf.l4_offset + usize::from(pf.l4_len);
        if let Some(inner) = frame.get(at..end)
            && let Some(&b0) = inner.first()
        {
            let ethertype: [u8; 2] = if b0 >> 4 == 4 {
                [0x08, 0x00]
            } else {
                [0x86, 0xdd]
            };
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&ethertype);
            f.extend_from_slice(inner);
            if let Ok(ipf) = parse_frame(&f) {
                return (f, ipf);
            }
        }
    }
    (frame.to_vec(), *pf)
}

/// Whether a whole TCP/UDP packet's checksum verifies; `None` for other packets.
#[must_use]
pub fn l4_ok(frame: &[u8], pf: &ParsedFrame) -> Option<bool> {
    if pf.fragment != FragmentInfo::None {
        return None;
    }
    let seg = frame.get(pf.l4_offset..pf.l4_offset + usize::from(pf.l4_len))?;
    Some(match (pf.proto, pf.src, pf.dst) {
        (IpProtocol::TCP, IpAddr::V4(s), IpAddr::V4(d)) => {
            tcp::Packet::new_checked(seg).ok()?.verify_checksum_v4(s, d)
        }
        (IpProtocol::TCP, IpAddr::V6(s), IpAddr::V6(d)) => {
            tcp::Packet::new_checked(seg).ok()?.verify_checksum_v6(s, d)
        }
        (IpProtocol::UDP, IpAddr::V4(s), IpAddr::V4(d)) => {
            udp::Packet::new_checked(seg).ok()?.verify_checksum_v4(s, d)
        }
        (IpProtocol::UDP, IpAddr::V6(s), IpAddr::V6(d)) => {
            udp::Packet::new_checked(seg).ok()?.verify_checksum_v6(s, d)
        }
        _ => return None,
    })
}

fn check_reply(out: &[u8]) {
    let pf = parse_frame(out).expect("a reply parses");
    match pf.l3 {
        L3::Arp => {
            let p =
                arp::Packet::new_checked(out.get(pf.l3_offset..).unwrap_or_default()).expect("ARP");
            let r = arp::Repr::parse(&p).expect("ARP reply");
            assert_eq!(r.operation, arp::Operation::REPLY);
            assert_eq!(r.source_hardware_addr, NODE_MAC);
        }
        L3::Ipv6 => {
            let (IpAddr::V6(s), IpAddr::V6(d)) = (pf.src, pf.dst) else {
                panic!("NA addresses");
            };
            let l4 = out
                .get(pf.l4_offset..pf.l4_offset + usize::from(pf.l4_len))
                .unwrap_or_default();
            let p = icmpv6::Packet::new_checked(l4).expect("ICMPv6");
            let r = icmpv6::Repr::parse(s, d, &p).expect("valid NA");
            assert!(matches!(r, icmpv6::Repr::NeighborAdvert { .. }), "{r:?}");
            assert_eq!(pf.ttl, 255);
        }
        _ => panic!("reply of another kind"),
    }
}

/// Whether an ICMP / ICMPv6 message's checksum verifies; `None` for other packets.
#[must_use]
pub fn icmp_ok(frame: &[u8], pf: &ParsedFrame) -> Option<bool> {
    if pf.fragment != FragmentInfo::None {
        return None;
    }
    let seg = frame.get(pf.l4_offset..pf.l4_offset + usize::from(pf.l4_len))?;
    match (pf.proto, pf.src, pf.dst) {
        (IpProtocol::ICMP, IpAddr::V4(_), _) => Some(crate::wire::checksum::data(seg) == 0xFFFF),
        (IpProtocol::ICMPV6, IpAddr::V6(s), IpAddr::V6(d)) => {
            Some(icmpv6::Packet::new_checked(seg).ok()?.verify_checksum(s, d))
        }
        _ => None,
    }
}

/// Whether `services()` says `ip` is a VIP (re-exported for tests).
#[must_use]
pub fn is_vip(ip: IpAddr) -> bool {
    services().owns_address(ip)
}
