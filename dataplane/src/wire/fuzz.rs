//! Fuzzing entry points, kept next to the parsers they exercise (linkerd's
//! `transport-header` pattern). Compiled only for tests and under `cargo fuzz`.
//!
//! [`parse_frame_and_getters`] is the body of `fuzz/fuzz_targets/parse_frame.rs` and of the
//! "any bytes" proptests. It checks the module's contract and panics (the fuzzer's signal) when
//! it does not hold:
//!
//! - the fixed-offset fast path agrees with the layered parse wherever it answers;
//! - [`parse_frame`] returns, and on success every layer it reported views again with
//!   `new_checked` at the offsets it gave, with the same field values, and every getter of
//!   every such layer runs;
//! - on the raw bytes, every view's `new_checked` either fails or yields a view whose getters
//!   all run, and every `Repr` that parses (after fixing up the checksum where the `Repr`
//!   verifies one) emits bytes that parse back to the same `Repr`.

// `cargo fuzz` passes `--cfg fuzzing`, which this crate's manifest does not declare.
#![allow(unexpected_cfgs)]
#![cfg(any(test, fuzzing))]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    FragmentInfo, InnerFlow, IpProtocol, L3, ParsedFrame, arp, checksum, ethernet, gue, icmpv4,
    icmpv6, ipv4, ipv6, parse_frame, parse_frame_layered, parse_ipv4_fast, tcp, udp, vlan,
};

const V4A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const V4B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const V6A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const V6B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// Runs [`parse_frame`] and, on success, every getter of every layer it found; then every
/// view and `Repr` of this module on the raw bytes. Panics if the contract is broken.
pub fn parse_frame_and_getters(data: &[u8]) {
    if let Some(fast) = parse_ipv4_fast(data) {
        assert_eq!(
            Ok(fast),
            parse_frame_layered(data),
            "the fast path disagrees with the layered parse"
        );
    }
    if let Ok(pf) = parse_frame(data) {
        check_parsed(data, &pf);
    }
    raw_views(data);
}

/// Re-views each layer [`parse_frame`] reported and checks it agrees.
#[allow(clippy::too_many_lines)] // one straight walk down the layers reads best
fn check_parsed(data: &[u8], pf: &ParsedFrame) {
    let eth = ethernet::Frame::new_checked(data).expect("parse_frame accepted the Ethernet header");
    touch_ethernet(&eth);
    let tags = usize::from(pf.vlan.is_some()) + usize::from(pf.inner_vlan.is_some());
    assert!(pf.inner_vlan.is_none() || pf.vlan.is_some());
    assert_eq!(pf.l3_offset, ethernet::HEADER_LEN + tags * vlan::HEADER_LEN);
    for (i, id) in [pf.vlan, pf.inner_vlan].into_iter().enumerate() {
        if let Some(id) = id {
            let at = ethernet::HEADER_LEN + i * vlan::HEADER_LEN;
            let tag = vlan::Packet::new_checked(&data[at..]).expect("tag");
            assert_eq!(tag.vlan_id(), id);
            touch_vlan(&tag);
        }
    }
    let l3 = &data[pf.l3_offset..];
    let l4_end = pf.l4_offset + usize::from(pf.l4_len);
    assert!(l4_end <= data.len(), "L4 range inside the frame");
    let l4 = &data[pf.l4_offset..l4_end];
    match pf.l3 {
        L3::Ipv4 => {
            let ip = ipv4::Packet::new_checked(l3).expect("ipv4");
            assert_eq!(ip.version(), 4);
            assert!(ip.verify_checksum());
            assert_eq!(pf.src, IpAddr::V4(ip.src_addr()));
            assert_eq!(pf.dst, IpAddr::V4(ip.dst_addr()));
            assert_eq!(pf.ttl, ip.ttl());
            assert_eq!(pf.proto, ip.next_header());
            assert_eq!(l4, ip.payload());
            touch_ipv4(&ip);
            let repr = ipv4::Repr::parse(&ip).expect("a header parse_frame accepts parses");
            assert_eq!(
                ipv4::Repr::parse(&ipv4::Packet::new_unchecked(ip.as_ref())),
                Ok(repr)
            );
        }
        L3::Ipv6 => {
            let ip = ipv6::Packet::new_checked(l3).expect("ipv6");
            assert_eq!(ip.version(), 6);
            assert_eq!(pf.src, IpAddr::V6(ip.src_addr()));
            assert_eq!(pf.dst, IpAddr::V6(ip.dst_addr()));
            assert_eq!(pf.ttl, ip.hop_limit());
            let ul = ip.upper_layer().expect("walker agrees");
            assert_eq!(pf.proto, ul.next_header);
            assert_eq!(pf.l4_offset, pf.l3_offset + ul.offset);
            touch_ipv6(&ip);
            assert!(ipv6::Repr::parse(&ip).is_ok());
        }
        L3::Arp => {
            let p = arp::Packet::new_checked(l3).expect("arp");
            touch_arp(&p);
            let repr = arp::Repr::parse(&p).expect("Ethernet/IPv4 ARP");
            assert_eq!(pf.src, IpAddr::V4(repr.source_protocol_addr));
            assert_eq!(pf.dst, IpAddr::V4(repr.target_protocol_addr));
            assert_eq!(pf.l4_len, 0);
        }
        L3::Other(t) => {
            assert_ne!(t, ethernet::EtherType::IPV4);
            assert_ne!(t, ethernet::EtherType::IPV6);
            assert_ne!(t, ethernet::EtherType::ARP);
            assert_eq!(pf.l4_len, 0);
        }
    }
    if pf.fragment == FragmentInfo::NonFirst {
        assert_eq!((pf.src_port, pf.dst_port, pf.tcp_flags.0), (0, 0, 0));
        assert!(pf.icmp.is_none());
    }
    let whole = pf.fragment == FragmentInfo::None;
    match (pf.l3, pf.proto) {
        (L3::Ipv4 | L3::Ipv6, IpProtocol::TCP) if pf.fragment != FragmentInfo::NonFirst => {
            let t = tcp::Packet::new_checked(l4).expect("tcp");
            assert_eq!(
                (t.src_port(), t.dst_port(), t.flags()),
                (pf.src_port, pf.dst_port, pf.tcp_flags)
            );
            touch_tcp(&t);
        }
        (L3::Ipv4 | L3::Ipv6, IpProtocol::UDP) if whole => {
            let u = udp::Packet::new_checked(l4).expect("udp");
            assert_eq!((u.src_port(), u.dst_port()), (pf.src_port, pf.dst_port));
            touch_udp(&u);
        }
        (L3::Ipv4, IpProtocol::ICMP) if pf.fragment != FragmentInfo::NonFirst => {
            let m = icmpv4::Packet::new_checked(l4).expect("icmp");
            let info = pf.icmp.expect("icmp info");
            assert_eq!((m.msg_type().0, m.msg_code()), (info.msg_type, info.code));
            black_box((info.echo_ident(), info.echo_seq_no(), info.mtu(pf.proto)));
            touch_icmpv4(&m);
        }
        (L3::Ipv6, IpProtocol::ICMPV6) if whole => {
            let m = icmpv6::Packet::new_checked(l4).expect("icmpv6");
            let info = pf.icmp.expect("icmpv6 info");
            assert_eq!((m.msg_type().0, m.msg_code()), (info.msg_type, info.code));
            black_box((info.echo_ident(), info.echo_seq_no(), info.mtu(pf.proto)));
            touch_icmpv6(&m);
        }
        _ => {}
    }
    if let Some(quote) = pf.icmp_quote(data) {
        assert_eq!(quote.len() + 8, l4.len());
    }
    black_box(pf.inner_flow(data).ok());
}

/// Every view and `Repr` on the raw bytes.
fn raw_views(data: &[u8]) {
    if let Ok(f) = ethernet::Frame::new_checked(data) {
        touch_ethernet(&f);
        let repr = ethernet::Repr::parse(&f).expect("checked frame");
        let mut out = [0u8; ethernet::HEADER_LEN];
        repr.emit(&mut ethernet::Frame::new_unchecked(&mut out[..]));
        assert_eq!(
            ethernet::Repr::parse(&ethernet::Frame::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(t) = vlan::Packet::new_checked(data) {
        touch_vlan(&t);
        let repr = vlan::Repr::parse(&t).expect("checked tag");
        let mut out = [0u8; vlan::HEADER_LEN];
        repr.emit(&mut vlan::Packet::new_unchecked(&mut out[..]));
        assert_eq!(
            vlan::Repr::parse(&vlan::Packet::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    if let Ok(p) = arp::Packet::new_checked(data) {
        touch_arp(&p);
        if let Ok(repr) = arp::Repr::parse(&p) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut arp::Packet::new_unchecked(&mut out[..]));
            assert_eq!(
                arp::Repr::parse(&arp::Packet::new_unchecked(&out[..])),
                Ok(repr)
            );
            black_box(repr.reply(ethernet::EthernetAddress::BROADCAST));
        }
    }
    ipv4_views(data);
    ipv6_views(data);
    if let Ok(t) = tcp::Packet::new_checked(data) {
        touch_tcp(&t);
    }
    if let Ok(u) = udp::Packet::new_checked(data) {
        touch_udp(&u);
        let repr = udp::Repr::parse(&u).expect("checked datagram");
        let mut out = vec![0u8; repr.buffer_len() + usize::from(repr.payload_len)];
        repr.emit(&mut udp::Packet::new_unchecked(&mut out[..]));
        assert_eq!(
            udp::Repr::parse(&udp::Packet::new_unchecked(&out[..])),
            Ok(repr)
        );
    }
    icmp_views(data);
    if let Ok(g) = gue::Packet::new_checked(data) {
        touch_gue(&g);
        if let Ok(repr) = gue::Repr::parse(&g) {
            let mut out = [0u8; gue::HEADER_LEN];
            repr.emit(&mut gue::Packet::new_unchecked(&mut out[..]));
            assert_eq!(
                gue::Repr::parse(&gue::Packet::new_unchecked(&out[..])),
                Ok(repr)
            );
        }
    }
    black_box(InnerFlow::parse_ipv4(data).ok());
    black_box(InnerFlow::parse_ipv6(data).ok());
    black_box(icmpv6::ndp_lladdr_option(data, icmpv6::NDP_OPT_SOURCE_LLADDR).ok());
    if let [first, rest @ ..] = data {
        black_box(ipv6::walk_extension_headers(IpProtocol(*first), rest).ok());
        if let Ok(h) = ipv6::ExtHeader::new_checked(rest) {
            black_box((h.next_header(), h.header_len(), h.data(), h.payload()));
        }
        if let Ok(h) = ipv6::FragmentHeader::new_checked(rest) {
            black_box((
                h.next_header(),
                h.frag_offset(),
                h.more_frags(),
                h.ident(),
                h.payload(),
            ));
        }
    }
    black_box(checksum::data(data));
}

fn ipv4_views(data: &[u8]) {
    let Ok(ip) = ipv4::Packet::new_checked(data) else {
        return;
    };
    touch_ipv4(&ip);
    // Fix the version and the checksum up on a copy so that `Repr::parse` gets past them.
    let mut copy = data.to_vec();
    let mut fixed = ipv4::Packet::new_checked(&mut copy[..]).expect("same bytes");
    fixed.set_version(4);
    fixed.fill_checksum();
    let mut ttl = fixed.ttl();
    while ttl > 0 && ttl > fixed.ttl().saturating_sub(3) {
        ttl = fixed.decrement_ttl();
        assert!(
            fixed.verify_checksum(),
            "incremental TTL update keeps the checksum valid"
        );
    }
    let repr = ipv4::Repr::parse(&fixed).expect("fixed-up header parses");
    let mut out = vec![0u8; repr.buffer_len() + usize::from(repr.payload_len)];
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut out[..]));
    assert_eq!(
        ipv4::Repr::parse(&ipv4::Packet::new_checked(&out[..]).expect("emitted")),
        Ok(repr)
    );
}

fn ipv6_views(data: &[u8]) {
    let Ok(ip) = ipv6::Packet::new_checked(data) else {
        return;
    };
    touch_ipv6(&ip);
    if let Ok(repr) = ipv6::Repr::parse(&ip) {
        let mut out = vec![0u8; repr.buffer_len() + usize::from(repr.payload_len)];
        repr.emit(&mut ipv6::Packet::new_unchecked(&mut out[..]));
        assert_eq!(
            ipv6::Repr::parse(&ipv6::Packet::new_checked(&out[..]).expect("emitted")),
            Ok(repr)
        );
    }
}

fn icmp_views(data: &[u8]) {
    if let Ok(m) = icmpv4::Packet::new_checked(data) {
        touch_icmpv4(&m);
        let mut copy = data.to_vec();
        icmpv4::Packet::new_unchecked(&mut copy[..]).fill_checksum();
        let fixed = icmpv4::Packet::new_checked(&copy[..]).expect("same length");
        if let Ok(repr) = icmpv4::Repr::parse(&fixed) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut icmpv4::Packet::new_unchecked(&mut out[..]));
            assert_eq!(
                icmpv4::Repr::parse(&icmpv4::Packet::new_unchecked(&out[..])),
                Ok(repr)
            );
        }
    }
    if let Ok(m) = icmpv6::Packet::new_checked(data) {
        touch_icmpv6(&m);
        let mut copy = data.to_vec();
        icmpv6::Packet::new_unchecked(&mut copy[..]).fill_checksum(V6A, V6B);
        let fixed = icmpv6::Packet::new_checked(&copy[..]).expect("same length");
        if let Ok(repr) = icmpv6::Repr::parse(V6A, V6B, &fixed) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(V6A, V6B, &mut icmpv6::Packet::new_unchecked(&mut out[..]));
            let back = icmpv6::Packet::new_checked(&out[..]).expect("emitted");
            assert_eq!(icmpv6::Repr::parse(V6A, V6B, &back), Ok(repr));
        }
    }
}

fn touch_ethernet<T: AsRef<[u8]>>(f: &ethernet::Frame<T>) {
    black_box((f.dst_addr(), f.src_addr(), f.ethertype(), f.payload()));
    black_box((f.src_addr().is_multicast(), f.dst_addr().is_broadcast()));
}

fn touch_vlan<T: AsRef<[u8]>>(t: &vlan::Packet<T>) {
    black_box((
        t.tci(),
        t.priority(),
        t.drop_eligible(),
        t.vlan_id(),
        t.ethertype(),
    ));
    black_box(t.payload());
}

fn touch_arp<T: AsRef<[u8]>>(p: &arp::Packet<T>) {
    black_box((
        p.hardware_type(),
        p.protocol_type(),
        p.hardware_len(),
        p.protocol_len(),
    ));
    black_box((p.operation(), p.is_ethernet_ipv4()));
    black_box((p.source_hardware_addr(), p.source_protocol_addr()));
    black_box((p.target_hardware_addr(), p.target_protocol_addr()));
}

fn touch_ipv4<T: AsRef<[u8]>>(ip: &ipv4::Packet<T>) {
    black_box((
        ip.version(),
        ip.header_len(),
        ip.dscp(),
        ip.ecn(),
        ip.total_len(),
        ip.ident(),
    ));
    black_box((
        ip.dont_frag(),
        ip.more_frags(),
        ip.frag_offset(),
        ip.is_fragment(),
    ));
    black_box((
        ip.ttl(),
        ip.next_header(),
        ip.checksum(),
        ip.src_addr(),
        ip.dst_addr(),
    ));
    black_box((ip.verify_checksum(), ip.options(), ip.payload()));
}

fn touch_ipv6<T: AsRef<[u8]>>(ip: &ipv6::Packet<T>) {
    black_box((
        ip.version(),
        ip.traffic_class(),
        ip.flow_label(),
        ip.payload_len(),
    ));
    black_box((
        ip.next_header(),
        ip.hop_limit(),
        ip.src_addr(),
        ip.dst_addr(),
        ip.payload(),
    ));
    if let Ok(ul) = ip.upper_layer() {
        assert!(ul.offset <= ipv6::HEADER_LEN + usize::from(ip.payload_len()));
        black_box(ul.fragment.map(|f| f.is_atomic()));
    }
}

fn touch_tcp<T: AsRef<[u8]>>(t: &tcp::Packet<T>) {
    black_box((
        t.src_port(),
        t.dst_port(),
        t.seq_number(),
        t.ack_number(),
        t.header_len(),
    ));
    black_box((
        t.flags(),
        t.fin(),
        t.syn(),
        t.rst(),
        t.psh(),
        t.ack(),
        t.urg(),
        t.ece(),
        t.cwr(),
    ));
    black_box((
        t.window_len(),
        t.checksum(),
        t.urgent_at(),
        t.options(),
        t.payload(),
    ));
    black_box((
        t.verify_checksum_v4(V4A, V4B),
        t.verify_checksum_v6(V6A, V6B),
    ));
}

fn touch_udp<T: AsRef<[u8]>>(u: &udp::Packet<T>) {
    black_box((
        u.src_port(),
        u.dst_port(),
        u.len(),
        u.checksum(),
        u.payload(),
    ));
    black_box((
        u.verify_checksum_v4(V4A, V4B),
        u.verify_checksum_v6(V6A, V6B),
    ));
}

fn touch_icmpv4<T: AsRef<[u8]>>(m: &icmpv4::Packet<T>) {
    black_box((
        m.msg_type(),
        m.msg_type().is_error(),
        m.msg_code(),
        m.checksum(),
    ));
    black_box((
        m.rest_of_header(),
        m.echo_ident(),
        m.echo_seq_no(),
        m.next_hop_mtu(),
    ));
    black_box((m.data(), m.payload(), m.verify_checksum()));
}

fn touch_icmpv6<T: AsRef<[u8]>>(m: &icmpv6::Packet<T>) {
    black_box((
        m.msg_type(),
        m.msg_type().is_error(),
        m.msg_type().header_len(),
        m.msg_code(),
    ));
    black_box((
        m.checksum(),
        m.rest_of_header(),
        m.echo_ident(),
        m.echo_seq_no(),
    ));
    black_box((
        m.mtu(),
        m.pointer(),
        m.neighbor_flags(),
        m.target_addr(),
        m.payload(),
    ));
    black_box(m.verify_checksum(V6A, V6B));
    black_box(icmpv6::ndp_lladdr_option(m.payload(), icmpv6::NDP_OPT_TARGET_LLADDR).ok());
}

fn touch_gue<T: AsRef<[u8]>>(g: &gue::Packet<T>) {
    black_box((
        g.version(),
        g.control(),
        g.hlen(),
        g.header_len(),
        g.next_header(),
        g.flags(),
    ));
    black_box((g.extensions(), g.payload()));
}
