//! Byte-exact rewrite tests of the pipeline: hand-built frames (etherparse) for each protocol,
//! mode and address family; every output is compared byte for byte with a frame built
//! independently (etherparse computes its lengths and checksums from scratch), and every
//! checksum of the output is recomputed from scratch again (`assert_checksums`).

#[path = "pipeline_support.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::IpNumber;
use sluice_dataplane::flow::{FlowKey, KeyedHash};
use sluice_dataplane::pipeline::{DropReason, PacketBuf, Pipeline, VecBuf, Verdict};
use sluice_dataplane::tables::{BackendId, Mode, ServiceKey};
use sluice_dataplane::wire::IpProtocol;
use support::*;

const CPORT: u16 = 40_000;
const PAYLOAD: &[u8] = b"hello, backend: 0123456789";
const REPLY: &[u8] = b"hello, client";

fn vport(is_tcp: bool) -> u16 {
    if is_tcp { 80 } else { 53 }
}

fn ipproto(is_tcp: bool) -> IpProtocol {
    if is_tcp {
        IpProtocol::TCP
    } else {
        IpProtocol::UDP
    }
}

fn service(
    v6: bool,
    is_tcp: bool,
    mode: Mode,
    backends: &[sluice_dataplane::tables::Backend],
) -> sluice_dataplane::pipeline::StaticServices {
    one_service(
        ServiceKey::new(vip(v6), vport(is_tcp), proto(is_tcp)),
        mode,
        251,
        backends,
    )
}

/// The verdict for a flow's first packet: forwarded to `backend`, a new flow (a connection).
fn fwd(backend: u32, bytes: usize) -> Verdict {
    forward(backend, bytes, true)
}

/// The verdict for a packet of a tracked flow (or an ICMP error about one): forwarded to
/// `backend`, not a new flow.
fn fwd_tracked(backend: u32, bytes: usize) -> Verdict {
    forward(backend, bytes, false)
}

fn forward(backend: u32, bytes: usize, new_flow: bool) -> Verdict {
    Verdict::Forward {
        service: 0,
        backend: Some(BackendId(backend)),
        bytes: u32::try_from(bytes).unwrap(),
        new_flow,
    }
}

fn client_ip(v6: bool) -> Ip {
    let mut ip = Ip::new(client(v6), vip(v6), 64);
    ip.tos = 0xb9; // DSCP 46 (EF), ECN 01: copied by encap, kept by NAT
    ip
}

// === NAT ===

/// Client → VIP through NAT, then the backend's reply back: both directions byte-exact.
fn nat_round_trip(v6: bool, is_tcp: bool, vlans: &'static [u16], options: &'static [u8]) {
    let b = backend(1, v6, 8080);
    let bip = b.addr;
    let s = service(v6, is_tcp, Mode::Nat, &[b]);
    let mut p = pipeline();
    let snat = *p.nat_ports().start();

    let mut ip = client_ip(v6);
    ip.options = options;
    let l2 = L2 { vlans, ..TO_NODE };
    let input = frame(&l2, &ip, &l4(is_tcp, CPORT, vport(is_tcp)), PAYLOAD);
    let (v, out) = run(&mut p, &s, &input);
    assert_eq!(v, fwd(1, input.len()));
    let mut eip = ip;
    eip.src = node(v6);
    eip.dst = bip;
    eip.ttl = 63;
    let expected = frame(
        &L2 {
            src: NODE_MAC,
            dst: backend_mac(1),
            vlans,
        },
        &eip,
        &l4(is_tcp, snat, 8080),
        PAYLOAD,
    );
    assert_eq!(out, expected, "NAT forward v6={v6} tcp={is_tcp}");
    assert_checksums(&out);

    // The backend answers node:snat from bip:8080.
    let rip = Ip::new(bip, node(v6), 64);
    let reply = frame(
        &L2 {
            src: backend_mac(1),
            dst: NODE_MAC,
            vlans,
        },
        &rip,
        &l4(is_tcp, 8080, snat),
        REPLY,
    );
    let (v, out) = run(&mut p, &s, &reply);
    assert_eq!(
        v,
        Verdict::Forward {
            service: 0,
            backend: None,
            bytes: u32::try_from(reply.len()).unwrap(),
            new_flow: false,
        }
    );
    let mut eip = rip;
    eip.src = vip(v6);
    eip.dst = client(v6);
    eip.ttl = 63;
    let expected = frame(
        &L2 {
            src: NODE_MAC,
            dst: ROUTER_MAC,
            vlans,
        },
        &eip,
        &l4(is_tcp, vport(is_tcp), CPORT),
        REPLY,
    );
    assert_eq!(out, expected, "un-NAT v6={v6} tcp={is_tcp}");
    assert_checksums(&out);
    assert_eq!(p.counters().nat_replies, 1);
}

#[test]
fn nat_tcp_v4() {
    nat_round_trip(false, true, &[], &[]);
}

#[test]
fn nat_udp_v4() {
    nat_round_trip(false, false, &[], &[]);
}

#[test]
fn nat_tcp_v6() {
    nat_round_trip(true, true, &[], &[]);
}

#[test]
fn nat_udp_v6() {
    nat_round_trip(true, false, &[], &[]);
}

#[test]
fn nat_vlan_tagged() {
    nat_round_trip(false, true, &[42], &[]);
    nat_round_trip(true, false, &[100, 42], &[]);
}

#[test]
fn nat_ipv4_options_and_ipv6_hop_by_hop() {
    // Router alert (RFC 2113) + end of options; a hop-by-hop header of PadN.
    nat_round_trip(
        false,
        true,
        &[],
        &[0x94, 0x04, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00],
    );
    nat_round_trip(true, true, &[], &[0x01, 0x04, 0, 0, 0, 0]);
}

#[test]
fn nat_udp_zero_checksum() {
    // IPv4: "no checksum" stays zero.
    let s = service(false, false, Mode::Nat, &[backend(1, false, 8080)]);
    let mut p = pipeline();
    let mut input = frame(&TO_NODE, &client_ip(false), &udp(CPORT, 53), PAYLOAD);
    input[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let (v, out) = run(&mut p, &s, &input);
    assert_eq!(v, fwd(1, input.len()));
    assert_eq!(out[14 + 20 + 6..14 + 20 + 8], [0, 0]);
    assert_checksums(&out);
    // IPv6: a zero UDP checksum is invalid; NAT computes it in full.
    let s = service(true, false, Mode::Nat, &[backend(1, true, 8080)]);
    let mut p = pipeline();
    let mut input = frame(&TO_NODE, &client_ip(true), &udp(CPORT, 53), PAYLOAD);
    input[14 + 40 + 6..14 + 40 + 8].copy_from_slice(&[0, 0]);
    let (_, out) = run(&mut p, &s, &input);
    let mut eip = client_ip(true);
    (eip.src, eip.dst, eip.ttl) = (node(true), backend(1, true, 0).addr, 63);
    let expected = frame(
        &L2 {
            src: NODE_MAC,
            dst: backend_mac(1),
            vlans: &[],
        },
        &eip,
        &udp(*p.nat_ports().start(), 8080),
        PAYLOAD,
    );
    assert_eq!(out, expected);
}

#[test]
fn nat_backend_port_zero_keeps_the_service_port() {
    let s = service(false, true, Mode::Nat, &[backend(1, false, 0)]);
    let mut p = pipeline();
    let input = frame(&TO_NODE, &client_ip(false), &tcp(CPORT, 80), PAYLOAD);
    let (_, out) = run(&mut p, &s, &input);
    assert_eq!(out[14 + 20 + 2..14 + 20 + 4], 80u16.to_be_bytes());
    assert_checksums(&out);
}

#[test]
fn nat_ttl_one_is_dropped_unchanged() {
    for v6 in [false, true] {
        let s = service(v6, true, Mode::Nat, &[backend(1, v6, 8080)]);
        let mut p = pipeline();
        let mut ip = client_ip(v6);
        ip.ttl = 1;
        let input = frame(&TO_NODE, &ip, &tcp(CPORT, 80), PAYLOAD);
        let (v, out) = run(&mut p, &s, &input);
        assert_eq!(v, Verdict::Drop(DropReason::TtlExpired));
        assert_eq!(out, input);
        assert_eq!(p.counters().drops_for(DropReason::TtlExpired), 1);
        assert!(p.conntrack().is_empty(), "no state for a dropped packet");
    }
}

#[test]
fn nat_without_node_address_is_dropped() {
    let s = service(true, true, Mode::Nat, &[backend(1, true, 8080)]);
    let mut c = config();
    c.node_ipv6 = None;
    let mut p = Pipeline::new(c).unwrap();
    let input = frame(&TO_NODE, &client_ip(true), &tcp(CPORT, 80), PAYLOAD);
    assert_eq!(
        run(&mut p, &s, &input).0,
        Verdict::Drop(DropReason::NatNoSourceAddress)
    );
}

#[test]
fn nat_family_mismatch_is_dropped() {
    let s = service(false, true, Mode::Nat, &[backend(1, true, 8080)]);
    let mut p = pipeline();
    let input = frame(&TO_NODE, &client_ip(false), &tcp(CPORT, 80), PAYLOAD);
    assert_eq!(
        run(&mut p, &s, &input).0,
        Verdict::Drop(DropReason::NatFamilyMismatch)
    );
}

#[test]
fn nat_reply_for_another_worker_is_redirected() {
    let s = service(false, true, Mode::Nat, &[backend(1, false, 8080)]);
    let mut c = config();
    c.workers = 4;
    c.worker = 1;
    c.nat_port_min = 10_000;
    c.nat_port_max = 10_999;
    let mut p = Pipeline::new(c).unwrap();
    assert_eq!(p.nat_ports(), 10_250..=10_499);
    assert_eq!(p.nat_port_owner(10_000), Some(0));
    assert_eq!(p.nat_port_owner(10_999), Some(3));
    assert_eq!(p.nat_port_owner(9_999), None);
    let reply = frame(
        &L2 {
            src: backend_mac(1),
            dst: NODE_MAC,
            vlans: &[],
        },
        &Ip::new(backend(1, false, 0).addr, node(false), 64),
        &tcp(8080, 10_600),
        REPLY,
    );
    let (v, out) = run(&mut p, &s, &reply);
    assert_eq!(v, Verdict::Redirect { worker: 2 });
    assert_eq!(out, reply);
    // Its own range, but no flow: the host's own traffic.
    let own = frame(
        &L2 {
            src: backend_mac(1),
            dst: NODE_MAC,
            vlans: &[],
        },
        &Ip::new(backend(1, false, 0).addr, node(false), 64),
        &tcp(8080, 10_300),
        REPLY,
    );
    assert_eq!(run(&mut p, &s, &own).0, Verdict::Exception);
}

// === DSR ===

#[test]
fn dsr_rewrites_macs_only() {
    for v6 in [false, true] {
        for is_tcp in [false, true] {
            for vlans in [&[][..], &[7][..], &[300, 7][..]] {
                let s = service(v6, is_tcp, Mode::Dsr, &[backend(3, v6, 0)]);
                let mut p = pipeline();
                let mut ip = client_ip(v6);
                ip.ttl = 1; // an L2 hop: not decremented, not dropped
                let l2 = L2 { vlans, ..TO_NODE };
                let input = frame(&l2, &ip, &l4(is_tcp, CPORT, vport(is_tcp)), PAYLOAD);
                let (v, out) = run(&mut p, &s, &input);
                assert_eq!(v, fwd(3, input.len()));
                let expected = frame(
                    &L2 {
                        src: NODE_MAC,
                        dst: backend_mac(3),
                        vlans,
                    },
                    &ip,
                    &l4(is_tcp, CPORT, vport(is_tcp)),
                    PAYLOAD,
                );
                assert_eq!(out, expected);
                assert_checksums(&out);
            }
        }
    }
}

// === encap ===

/// The entropy an encapsulated packet of flow `key` carries (GUE source port, IPv6 flow
/// label): the key's keyed hash under the Maglev seed.
fn entropy(key: &FlowKey) -> u64 {
    KeyedHash::from_seed(SEED).hash_one(key)
}

/// The bytes an encapsulated frame must have: Ethernet to the backend, the outer header(s),
/// then `inner` (the client's IP packet) and `pad`.
#[allow(
    clippy::too_many_arguments,
    reason = "one parameter per outer-header field under test"
)]
fn encap_expected(
    inner: &[u8],
    pad: &[u8],
    inner_v6: bool,
    tos: u8,
    df: bool,
    backend_ip: IpAddr,
    gue: bool,
    hash: u64,
    ident: u16,
) -> Vec<u8> {
    let inner_proto = if inner_v6 {
        IpNumber::IPV6
    } else {
        IpNumber::IPV4
    };
    let mut udp_gue = Vec::new();
    if gue {
        let sport = 0xC000 | u16::try_from(hash & 0x3FFF).unwrap();
        let len = u16::try_from(8 + 4 + inner.len()).unwrap();
        udp_gue.extend_from_slice(&sport.to_be_bytes());
        udp_gue.extend_from_slice(&6080u16.to_be_bytes());
        udp_gue.extend_from_slice(&len.to_be_bytes());
        udp_gue.extend_from_slice(&[0, 0]);
        udp_gue.extend_from_slice(&[0, inner_proto.0, 0, 0]);
    }
    let next = if gue { IpNumber::UDP } else { inner_proto };
    let payload_len = udp_gue.len() + inner.len();
    let (ethertype, outer) = match backend_ip {
        IpAddr::V4(d) => (
            0x0800,
            outer_v4(NODE_V4, d, next, payload_len, tos, ident, df),
        ),
        IpAddr::V6(d) => {
            let label = u32::try_from(hash & 0xF_FFFF).unwrap();
            if gue {
                // Over IPv6 the UDP checksum is computed over UDP + GUE + inner.
                let len = u32::try_from(payload_len).unwrap();
                let pseudo = [
                    &NODE_V6.octets()[..],
                    &d.octets(),
                    &len.to_be_bytes(),
                    &[0, 0, 0, 17],
                ]
                .concat();
                let c = !inet_sum(&[&pseudo, &udp_gue, inner]);
                let c = if c == 0 { 0xFFFF } else { c };
                udp_gue[6..8].copy_from_slice(&c.to_be_bytes());
            }
            (0x86dd, outer_v6(NODE_V6, d, next, payload_len, tos, label))
        }
    };
    let mut f = eth_bytes(
        &L2 {
            src: NODE_MAC,
            dst: backend_mac(5),
            vlans: &[],
        },
        ethertype,
    );
    f.extend_from_slice(&outer);
    f.extend_from_slice(&udp_gue);
    f.extend_from_slice(inner);
    f.extend_from_slice(pad);
    f
}

fn encap_case(inner_v6: bool, backend_v6: bool, is_tcp: bool, gue: bool) {
    let b = backend(5, backend_v6, 0);
    let bip = b.addr;
    let mode = if gue { Mode::EncapGue } else { Mode::EncapIpip };
    let s = service(inner_v6, is_tcp, mode, &[b]);
    let mut p = pipeline();
    let ip = client_ip(inner_v6);
    let l4 = l4(is_tcp, CPORT, vport(is_tcp));
    let input = frame(&TO_NODE, &ip, &l4, PAYLOAD);
    let (v, out) = run(&mut p, &s, &input);
    assert_eq!(
        v,
        fwd(5, input.len()),
        "inner_v6={inner_v6} backend_v6={backend_v6} tcp={is_tcp} gue={gue}"
    );
    let key = FlowKey::new(
        client(inner_v6),
        vip(inner_v6),
        CPORT,
        vport(is_tcp),
        ipproto(is_tcp),
    );
    let hash = entropy(&key);
    let expected = encap_expected(&input[14..], &[], inner_v6, 0xb9, true, bip, gue, hash, 1);
    assert_eq!(
        out, expected,
        "inner_v6={inner_v6} backend_v6={backend_v6} tcp={is_tcp} gue={gue}"
    );
    assert_checksums(&out);
    // The inner packet is the client's, byte for byte, and its checksums still verify.
    assert_checksums(&[&input[..14], &out[out.len() - (input.len() - 14)..]].concat());
}

#[test]
fn ipip_all_families() {
    for inner_v6 in [false, true] {
        for backend_v6 in [false, true] {
            for is_tcp in [false, true] {
                encap_case(inner_v6, backend_v6, is_tcp, false);
            }
        }
    }
}

#[test]
fn gue_all_families() {
    for inner_v6 in [false, true] {
        for backend_v6 in [false, true] {
            for is_tcp in [false, true] {
                encap_case(inner_v6, backend_v6, is_tcp, true);
            }
        }
    }
}

#[test]
fn encap_keeps_padding_after_the_inner_packet_and_copies_df() {
    let s = service(false, true, Mode::EncapIpip, &[backend(5, false, 0)]);
    let mut p = pipeline();
    let mut ip = client_ip(false);
    ip.df = false;
    let mut input = frame(&TO_NODE, &ip, &tcp(CPORT, 80), &[]);
    assert_eq!(input.len(), 54);
    input.extend_from_slice(&[0; 6]); // Ethernet minimum
    let (v, out) = run(&mut p, &s, &input);
    assert_eq!(v, fwd(5, 60));
    let key = FlowKey::new(client(false), vip(false), CPORT, 80, IpProtocol::TCP);
    let expected = encap_expected(
        &input[14..54],
        &[0; 6],
        false,
        0xb9,
        false,
        backend(5, false, 0).addr,
        false,
        entropy(&key),
        1,
    );
    assert_eq!(out, expected);
}

#[test]
fn encap_keeps_vlan_tags_and_retypes_the_innermost() {
    // IPv4 inside, IPv6 backend: the inner tag's EtherType becomes IPv6.
    let b = backend(5, true, 0);
    let bip = b.addr;
    let s = service(false, false, Mode::EncapGue, &[b]);
    let mut p = pipeline();
    let l2 = L2 {
        vlans: &[300, 7],
        ..TO_NODE
    };
    let input = frame(&l2, &client_ip(false), &udp(CPORT, 53), PAYLOAD);
    let (v, out) = run(&mut p, &s, &input);
    assert_eq!(v, fwd(5, input.len()));
    let key = FlowKey::new(client(false), vip(false), CPORT, 53, IpProtocol::UDP);
    let untagged = encap_expected(
        &input[22..],
        &[],
        false,
        0xb9,
        true,
        bip,
        true,
        entropy(&key),
        1,
    );
    let expected = [
        &untagged[..12],
        &[0x88, 0xa8, 0x01, 0x2c, 0x81, 0x00, 0x00, 0x07],
        &untagged[12..],
    ]
    .concat();
    assert_eq!(out, expected);
    assert_checksums(&out);
}

#[test]
fn encap_without_headroom_is_dropped_unchanged() {
    let s = service(false, true, Mode::EncapGue, &[backend(5, false, 0)]);
    let mut p = pipeline();
    let input = frame(&TO_NODE, &client_ip(false), &tcp(CPORT, 80), PAYLOAD);
    let mut b = VecBuf::with_headroom(&input, 31);
    let v = p.process(&mut b, &s, NOW);
    assert_eq!(v, Verdict::Drop(DropReason::EncapNoHeadroom));
    assert_eq!(b.data(), &input[..]);
    // The dropped first packet's flow was tracked already: this one is a hit (so the flow
    // is never counted as a connection; see the `tables` module docs).
    let mut b = VecBuf::with_headroom(&input, 32);
    assert_eq!(p.process(&mut b, &s, NOW), fwd_tracked(5, input.len()));
}

// === ICMP errors ===

const ROUTER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);

fn router(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(ROUTER6)
    } else {
        IpAddr::V4(ROUTER4)
    }
}

/// ICMP "fragmentation needed" (v4, MTU 1400) / "packet too big" (v6, MTU 1280) from a
/// router to `to`, quoting the first `quote_len` bytes of `quoted`.
fn icmp_error(v6: bool, to: IpAddr, quoted: &[u8], quote_len: usize) -> Vec<u8> {
    let (ty, code, rest) = if v6 {
        (2, 0, [0, 0, 5, 0])
    } else {
        (3, 4, [0, 0, 0x05, 0x78])
    };
    let mut ip = Ip::new(router(v6), to, 64);
    ip.ident = 0x0777;
    frame(
        &TO_NODE,
        &ip,
        &L4::Icmp { ty, code, rest },
        &quoted[..quote_len],
    )
}

/// The packet the VIP sent to the client (a reply), as a router would quote it.
fn quoted_reply(v6: bool, is_tcp: bool) -> Vec<u8> {
    ip_packet(
        &Ip::new(vip(v6), client(v6), 60),
        &l4(is_tcp, vport(is_tcp), CPORT),
        &[0x5a; 64],
    )
}

#[test]
fn icmp_error_dsr_and_encap_follow_the_flow() {
    for v6 in [false, true] {
        for mode in [Mode::Dsr, Mode::EncapIpip, Mode::EncapGue] {
            // Several backends: the error must go to the flow's, not just any.
            let backends: Vec<_> = (1..=8).map(|i| backend(i, v6, 0)).collect();
            let s = service(v6, true, mode, &backends);
            let mut p = pipeline();
            let client_pkt = frame(&TO_NODE, &client_ip(v6), &tcp(CPORT, 80), PAYLOAD);
            let (
                Verdict::Forward {
                    backend: Some(flow_backend),
                    ..
                },
                _,
            ) = run(&mut p, &s, &client_pkt)
            else {
                panic!("flow not forwarded");
            };
            let q = quoted_reply(v6, true);
            let input = icmp_error(v6, vip(v6), &q, if v6 { 48 } else { 28 });
            let (v, out) = run(&mut p, &s, &input);
            // Not a connection: the error is about the flow, not one of its own.
            assert_eq!(
                v,
                fwd_tracked(flow_backend.0, input.len()),
                "v6={v6} {mode:?}"
            );
            match mode {
                Mode::Dsr => {
                    let mut expected = input.clone();
                    expected[..6].copy_from_slice(&backend_mac(flow_backend.0));
                    expected[6..12].copy_from_slice(&NODE_MAC);
                    assert_eq!(out, expected);
                }
                _ => {
                    // The flow's entropy: the client flow's keyed hash.
                    let key = FlowKey::new(client(v6), vip(v6), CPORT, 80, IpProtocol::TCP);
                    let bip = backends[usize::try_from(flow_backend.0 - 1).unwrap()].addr;
                    let mut expected = encap_expected(
                        &input[14..],
                        &[],
                        v6,
                        0,
                        true,
                        bip,
                        mode == Mode::EncapGue,
                        entropy(&key),
                        2,
                    );
                    expected[..6].copy_from_slice(&backend_mac(flow_backend.0));
                    assert_eq!(out, expected, "v6={v6} {mode:?}");
                }
            }
            assert_checksums(&out);
            assert_eq!(p.counters().icmp_errors, 1);
        }
    }
}

#[test]
fn icmp_error_nat_is_translated_for_the_backend() {
    for v6 in [false, true] {
        for is_tcp in [true, false] {
            // Quote lengths: header + 8 bytes (the TCP checksum is not quoted), and enough to
            // hold the TCP/UDP checksum (it is updated).
            let ip_len = if v6 { 40 } else { 20 };
            for quote_len in [ip_len + 8, ip_len + 28] {
                let b = backend(1, v6, 8080);
                let bip = b.addr;
                let s = service(v6, is_tcp, Mode::Nat, &[b]);
                let mut p = pipeline();
                let snat = *p.nat_ports().start();
                let client_pkt = frame(
                    &TO_NODE,
                    &client_ip(v6),
                    &l4(is_tcp, CPORT, vport(is_tcp)),
                    PAYLOAD,
                );
                assert_eq!(run(&mut p, &s, &client_pkt).0, fwd(1, client_pkt.len()));

                let q = quoted_reply(v6, is_tcp);
                let input = icmp_error(v6, vip(v6), &q, quote_len);
                let (v, out) = run(&mut p, &s, &input);
                assert_eq!(
                    v,
                    fwd_tracked(1, input.len()),
                    "v6={v6} tcp={is_tcp} quote={quote_len}"
                );
                // What the backend sent, quoted the same way, from node to backend.
                let backend_sent = ip_packet(
                    &Ip::new(bip, node(v6), 60),
                    &l4(is_tcp, 8080, snat),
                    &[0x5a; 64],
                );
                let (ty, code, rest) = if v6 {
                    (2, 0, [0, 0, 5, 0])
                } else {
                    (3, 4, [0, 0, 0x05, 0x78])
                };
                let mut eip = Ip::new(node(v6), bip, 63);
                eip.ident = 0x0777;
                let expected = frame(
                    &L2 {
                        src: NODE_MAC,
                        dst: backend_mac(1),
                        vlans: &[],
                    },
                    &eip,
                    &L4::Icmp { ty, code, rest },
                    &backend_sent[..quote_len],
                );
                // Every byte: the quoted header's checksum, the quoted ports and (when quoted)
                // the quoted TCP/UDP checksum, the outer addresses, TTL and checksums.
                assert_eq!(out, expected, "v6={v6} tcp={is_tcp} quote={quote_len}");
                assert_checksums(&out);
            }
        }
    }
}

#[test]
fn icmp_error_without_nat_state_is_dropped() {
    let s = service(false, true, Mode::Nat, &[backend(1, false, 8080)]);
    let mut p = pipeline();
    let input = icmp_error(false, vip(false), &quoted_reply(false, true), 48);
    let (v, out) = run(&mut p, &s, &input);
    assert_eq!(v, Verdict::Drop(DropReason::IcmpNoFlow));
    assert_eq!(out, input);
}

#[test]
fn icmp_error_not_about_a_service_is_an_exception() {
    let s = service(false, true, Mode::Dsr, &[backend(1, false, 0)]);
    let mut p = pipeline();
    // About the node's own connection (quoted source = the node): the host's business.
    let q = ip_packet(
        &Ip::new(node(false), client(false), 60),
        &tcp(179, CPORT),
        &[0; 8],
    );
    let input = icmp_error(false, node(false), &q, 28);
    assert_eq!(run(&mut p, &s, &input).0, Verdict::Exception);
    // An echo request to a VIP: no service.
    let ping = frame(
        &TO_NODE,
        &Ip::new(client(false), vip(false), 64),
        &L4::Icmp {
            ty: 8,
            code: 0,
            rest: [0, 1, 0, 1],
        },
        b"ping",
    );
    assert_eq!(
        run(&mut p, &s, &ping).0,
        Verdict::Drop(DropReason::NoService)
    );
}

// === ARP and NDP ===

const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 7];

fn arp_frame(
    vlans: &'static [u16],
    op: u16,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
    dst: [u8; 6],
) -> Vec<u8> {
    let mut f = eth_bytes(
        &L2 {
            src: sha,
            dst,
            vlans,
        },
        0x0806,
    );
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f.resize(f.len().max(60), 0);
    f
}

#[test]
fn arp_requests_for_owned_addresses_are_answered() {
    let s = service(false, true, Mode::Dsr, &[backend(1, false, 0)]);
    let mut p = pipeline();
    for vlans in [&[][..], &[12][..]] {
        for target in [VIP4, NODE_V4] {
            let req = arp_frame(vlans, 1, CLIENT_MAC, CLIENT4, [0; 6], target, [0xff; 6]);
            let (v, out) = run(&mut p, &s, &req);
            assert_eq!(v, Verdict::Reply);
            let mut expected = eth_bytes(
                &L2 {
                    src: NODE_MAC,
                    dst: CLIENT_MAC,
                    vlans,
                },
                0x0806,
            );
            expected.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
            expected.extend_from_slice(&NODE_MAC);
            expected.extend_from_slice(&target.octets());
            expected.extend_from_slice(&CLIENT_MAC);
            expected.extend_from_slice(&CLIENT4.octets());
            expected.resize(req.len(), 0);
            assert_eq!(out, expected);
        }
    }
    // Someone else's address, a gratuitous ARP, a reply: the kernel's.
    for f in [
        arp_frame(
            &[],
            1,
            CLIENT_MAC,
            CLIENT4,
            [0; 6],
            Ipv4Addr::new(192, 0, 2, 99),
            [0xff; 6],
        ),
        arp_frame(&[], 1, CLIENT_MAC, VIP4, [0; 6], VIP4, [0xff; 6]),
        arp_frame(&[], 2, CLIENT_MAC, CLIENT4, NODE_MAC, NODE_V4, NODE_MAC),
    ] {
        let (v, out) = run(&mut p, &s, &f);
        assert_eq!((v, out), (Verdict::Exception, f));
    }
    assert_eq!(p.counters().replies, 4);
}

fn solicited_node(a: Ipv6Addr) -> (Ipv6Addr, [u8; 6]) {
    let o = a.octets();
    let m = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    let mo = m.octets();
    (m, [0x33, 0x33, mo[12], mo[13], mo[14], mo[15]])
}

fn ns_frame(src: Ipv6Addr, target: Ipv6Addr, sll: Option<[u8; 6]>, hop_limit: u8) -> Vec<u8> {
    let (dst, dst_mac) = solicited_node(target);
    let mut payload = target.octets().to_vec();
    if let Some(m) = sll {
        payload.extend_from_slice(&[1, 1]);
        payload.extend_from_slice(&m);
    }
    frame(
        &L2 {
            src: CLIENT_MAC,
            dst: dst_mac,
            vlans: &[],
        },
        &Ip::new(IpAddr::V6(src), IpAddr::V6(dst), hop_limit),
        &L4::Icmp {
            ty: 135,
            code: 0,
            rest: [0; 4],
        },
        &payload,
    )
}

#[test]
fn neighbor_solicitations_for_owned_addresses_are_answered() {
    let s = service(true, true, Mode::Dsr, &[backend(1, true, 0)]);
    let mut p = pipeline();
    for target in [VIP6, NODE_V6] {
        let ns = ns_frame(CLIENT6, target, Some(CLIENT_MAC), 255);
        let (v, out) = run(&mut p, &s, &ns);
        assert_eq!(v, Verdict::Reply);
        let mut payload = target.octets().to_vec();
        payload.extend_from_slice(&[2, 1]);
        payload.extend_from_slice(&NODE_MAC);
        let expected = frame(
            &L2 {
                src: NODE_MAC,
                dst: CLIENT_MAC,
                vlans: &[],
            },
            &Ip::new(IpAddr::V6(target), IpAddr::V6(CLIENT6), 255),
            &L4::Icmp {
                ty: 136,
                code: 0,
                rest: [0x60, 0, 0, 0],
            },
            &payload,
        );
        assert_eq!(out, expected);
        assert_checksums(&out);
    }
    // DAD probe (source ::, no option): answered to all-nodes, Override only, and there is
    // no room for the target link-layer option.
    let ns = ns_frame(Ipv6Addr::UNSPECIFIED, VIP6, None, 255);
    let (v, out) = run(&mut p, &s, &ns);
    assert_eq!(v, Verdict::Reply);
    let expected = frame(
        &L2 {
            src: NODE_MAC,
            dst: [0x33, 0x33, 0, 0, 0, 1],
            vlans: &[],
        },
        &Ip::new(
            IpAddr::V6(VIP6),
            IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
            255,
        ),
        &L4::Icmp {
            ty: 136,
            code: 0,
            rest: [0x20, 0, 0, 0],
        },
        &VIP6.octets(),
    );
    assert_eq!(out, expected);
    // Not ours, or not hop limit 255: the kernel's.
    for f in [
        ns_frame(
            CLIENT6,
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99),
            Some(CLIENT_MAC),
            255,
        ),
        ns_frame(CLIENT6, VIP6, Some(CLIENT_MAC), 64),
    ] {
        let (v, out) = run(&mut p, &s, &f);
        assert_eq!((v, out), (Verdict::Exception, f));
    }
}

// === classification ===

#[test]
fn exceptions_drops_and_counters() {
    let s = service(false, true, Mode::Dsr, &[backend(1, false, 0)]);
    let mut p = pipeline();
    // BGP to the node: the host's.
    let bgp = frame(
        &TO_NODE,
        &Ip::new(IpAddr::V4(ROUTER4), node(false), 1),
        &tcp(50_000, 179),
        b"OPEN",
    );
    assert_eq!(run(&mut p, &s, &bgp).0, Verdict::Exception);
    // A VIP port without a service.
    let other = frame(&TO_NODE, &client_ip(false), &tcp(CPORT, 8443), PAYLOAD);
    assert_eq!(
        run(&mut p, &s, &other).0,
        Verdict::Drop(DropReason::NoService)
    );
    // LLDP.
    let mut lldp = eth_bytes(&TO_NODE, 0x88cc);
    lldp.resize(60, 0);
    assert_eq!(run(&mut p, &s, &lldp).0, Verdict::Exception);
    // Malformed: an IPv4 header cut short.
    let good = frame(&TO_NODE, &client_ip(false), &tcp(CPORT, 80), PAYLOAD);
    assert_eq!(
        run(&mut p, &s, &good[..30]).0,
        Verdict::Drop(DropReason::BadIpv4Header)
    );
    // A bad IPv4 header checksum.
    let mut bad = good.clone();
    bad[14 + 10] ^= 0xff;
    assert_eq!(
        run(&mut p, &s, &bad).0,
        Verdict::Drop(DropReason::BadIpv4Checksum)
    );
    // Unicast to another station (a flooding switch): never forwarded.
    let mut elsewhere = good.clone();
    elsewhere[..6].copy_from_slice(&[0x02, 0x99, 0, 0, 0, 1]);
    assert_eq!(
        run(&mut p, &s, &elsewhere).0,
        Verdict::Drop(DropReason::NotOurMac)
    );
    // An unknown port index.
    let mut b = VecBuf::new(&good);
    assert_eq!(
        p.process_from(3, &mut b, &s, NOW),
        Verdict::Drop(DropReason::UnknownPort)
    );
    // A backend without a resolved MAC.
    let mut unresolved = backend(9, false, 0);
    unresolved.mac = None;
    let s2 = service(false, true, Mode::Dsr, &[unresolved]);
    assert_eq!(
        run(&mut p, &s2, &good).0,
        Verdict::Drop(DropReason::BackendUnresolved)
    );

    let c = p.counters();
    assert_eq!(c.rx_packets, 8);
    assert_eq!(c.exceptions, 2);
    assert_eq!(c.dropped(), 6);
    for r in [
        DropReason::NoService,
        DropReason::BadIpv4Header,
        DropReason::BadIpv4Checksum,
        DropReason::UnknownPort,
        DropReason::NotOurMac,
        DropReason::BackendUnresolved,
    ] {
        assert_eq!(c.drops_for(r), 1, "{r}");
    }
    let labels: std::collections::HashSet<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), DropReason::COUNT, "labels are unique");
    assert!(
        DropReason::ALL
            .iter()
            .enumerate()
            .all(|(i, r)| r.index() == i)
    );
}
