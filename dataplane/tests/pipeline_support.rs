//! Shared fixtures for the `pipeline_*` tests (included with `#[path]`; as a test crate of
//! its own it holds no tests). Frames are built with etherparse, which computes every length
//! and checksum itself, independently of `sluice_dataplane::wire`.

#![allow(dead_code, clippy::missing_panics_doc, clippy::too_many_arguments)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6FlowLabel,
    Ipv6Header, Ipv6RawExtHeader, PacketBuilder, PacketBuilderStep, VlanId,
};
use sluice_dataplane::conntrack::Tick;
use sluice_dataplane::maglev::TableSize;
use sluice_dataplane::pipeline::{
    PacketBuf, Pipeline, PipelineConfig, Services, StaticServices, VecBuf, Verdict,
};
use sluice_dataplane::tables::{
    Backend, BackendId, BackendState, Mode, Proto, ServiceId, ServiceKey,
};
use sluice_dataplane::wire::EthernetAddress;

pub(crate) const NODE_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// The router that delivers client traffic (the "client-side MAC").
pub(crate) const ROUTER_MAC: [u8; 6] = [0x02, 0xaa, 0x00, 0x00, 0x00, 0x01];
pub(crate) const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub(crate) const NODE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
pub(crate) const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub(crate) const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 1);
pub(crate) const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
pub(crate) const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, 7);
pub(crate) const SEED: u64 = 0x5eed_0f5e_ed00_0001;
pub(crate) const NOW: Tick = Tick(1_000_000_000);

pub(crate) fn vip(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(VIP6)
    } else {
        IpAddr::V4(VIP4)
    }
}

pub(crate) fn client(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(CLIENT6)
    } else {
        IpAddr::V4(CLIENT4)
    }
}

pub(crate) fn node(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(NODE_V6)
    } else {
        IpAddr::V4(NODE_V4)
    }
}

pub(crate) fn backend_mac(id: u32) -> [u8; 6] {
    let b = id.to_be_bytes();
    [0x02, 0xbe, b[0], b[1], b[2], b[3]]
}

/// Backend `id`: `10.1.x.y` / `2001:db8:be::id`, port `port`, active, weight 1, MAC known.
pub(crate) fn backend(id: u32, v6: bool, port: u16) -> Backend {
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xbe,
            0,
            0,
            0,
            0,
            u16::try_from(id).unwrap(),
        ))
    } else {
        let b = id.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(10, 1, b[2], b[3]))
    };
    Backend {
        id: BackendId(id),
        addr,
        port,
        mac: Some(backend_mac(id)),
        next_hop: None,
        weight: 1,
        state: BackendState::Active,
    }
}

pub(crate) fn proto(tcp: bool) -> Proto {
    if tcp { Proto::Tcp } else { Proto::Udp }
}

/// A service set with one service.
pub(crate) fn one_service(
    key: ServiceKey,
    mode: Mode,
    m: u32,
    backends: &[Backend],
) -> StaticServices {
    let mut s = StaticServices::new();
    s.upsert(
        key,
        ServiceId(7),
        mode,
        TableSize::try_new(m).unwrap(),
        backends,
    )
    .unwrap();
    s
}

pub(crate) fn config() -> PipelineConfig {
    let mut c = PipelineConfig::one_armed(EthernetAddress(NODE_MAC), SEED);
    c.node_ipv4 = Some(NODE_V4);
    c.node_ipv6 = Some(NODE_V6);
    c.conntrack_capacity = 4096;
    c.conntrack_seeds = Some([11, 12, 13, 14]);
    c
}

pub(crate) fn pipeline() -> Pipeline {
    Pipeline::new(config()).unwrap()
}

/// Runs one frame; returns the verdict and the frame after.
pub(crate) fn run(p: &mut Pipeline, s: &impl Services, frame: &[u8]) -> (Verdict, Vec<u8>) {
    run_at(p, s, frame, NOW)
}

pub(crate) fn run_at(
    p: &mut Pipeline,
    s: &impl Services,
    frame: &[u8],
    now: Tick,
) -> (Verdict, Vec<u8>) {
    let mut b = VecBuf::new(frame);
    let v = p.process(&mut b, s, now);
    (v, b.data().to_vec())
}

// === frame building ===

/// Ethernet (+ tags) up to the IP layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct L2 {
    pub src: [u8; 6],
    pub dst: [u8; 6],
    pub vlans: &'static [u16],
}

pub(crate) const TO_NODE: L2 = L2 {
    src: ROUTER_MAC,
    dst: NODE_MAC,
    vlans: &[],
};

/// The IP layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ip {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    /// DSCP/ECN byte (IPv4 TOS) or traffic class.
    pub tos: u8,
    pub ident: u16,
    pub df: bool,
    /// IPv4 option bytes (multiple of 4), or IPv6 hop-by-hop data (`len % 8 == 6`).
    pub options: &'static [u8],
    pub flow_label: u32,
}

impl Ip {
    pub fn new(src: IpAddr, dst: IpAddr, ttl: u8) -> Self {
        Self {
            src,
            dst,
            ttl,
            tos: 0,
            ident: 0x1234,
            df: true,
            options: &[],
            flow_label: 0,
        }
    }
}

/// The transport layer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum L4 {
    /// TCP with ports; `flags`: 0 = ACK|PSH, 1 = SYN, 2 = FIN|ACK, 3 = RST.
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// Raw ICMP (v4 or v6 by the IP family): type, code, rest of header.
    Icmp {
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
}

fn ip_headers(ip: &Ip) -> IpHeaders {
    match (ip.src, ip.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = Ipv4Header::new(0, ip.ttl, IpNumber::TCP, s.octets(), d.octets()).unwrap();
            h.dscp = etherparse::IpDscp::try_new(ip.tos >> 2).unwrap();
            h.ecn = etherparse::IpEcn::try_new(ip.tos & 3).unwrap();
            h.identification = ip.ident;
            h.dont_fragment = ip.df;
            h.options = Ipv4Options::try_from(ip.options).unwrap();
            IpHeaders::Ipv4(h, Ipv4Extensions::default())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = Ipv6Header {
                traffic_class: ip.tos,
                flow_label: Ipv6FlowLabel::try_new(ip.flow_label).unwrap(),
                payload_length: 0,
                next_header: IpNumber::TCP,
                hop_limit: ip.ttl,
                source: s.octets(),
                destination: d.octets(),
            };
            let mut ext = Ipv6Extensions::default();
            if !ip.options.is_empty() {
                ext.hop_by_hop_options =
                    Some(Ipv6RawExtHeader::new_raw(IpNumber::TCP, ip.options).unwrap());
            }
            IpHeaders::Ipv6(h, ext)
        }
        _ => panic!("mixed families"),
    }
}

fn ip_step(l2: &L2, ip: &Ip) -> PacketBuilderStep<IpHeaders> {
    let b = PacketBuilder::ethernet2(l2.src, l2.dst);
    let vid = |v: u16| VlanId::try_new(v).unwrap();
    match *l2.vlans {
        [] => b.ip(ip_headers(ip)),
        [v] => b.single_vlan(vid(v)).ip(ip_headers(ip)),
        [o, i] => b.double_vlan(vid(o), vid(i)).ip(ip_headers(ip)),
        _ => panic!("at most two tags"),
    }
}

/// A whole frame.
pub(crate) fn frame(l2: &L2, ip: &Ip, l4: &L4, payload: &[u8]) -> Vec<u8> {
    let step = ip_step(l2, ip);
    let mut out = Vec::new();
    match *l4 {
        L4::Tcp {
            sport,
            dport,
            seq,
            flags,
        } => {
            let t = step.tcp(sport, dport, seq, 64_240);
            let t = match flags {
                1 => t.syn(),
                2 => t.fin().ack(0x0102_0304),
                3 => t.rst(),
                _ => t.ack(0x0102_0304).psh(),
            };
            t.write(&mut out, payload).unwrap();
        }
        L4::Udp { sport, dport } => step.udp(sport, dport).write(&mut out, payload).unwrap(),
        L4::Icmp { ty, code, rest } => {
            if ip.src.is_ipv4() {
                step.icmpv4_raw(ty, code, rest)
                    .write(&mut out, payload)
                    .unwrap();
            } else {
                step.icmpv6_raw(ty, code, rest)
                    .write(&mut out, payload)
                    .unwrap();
            }
        }
    }
    out
}

/// A bare IP packet (no Ethernet), e.g. the quote of an ICMP error.
pub(crate) fn ip_packet(ip: &Ip, l4: &L4, payload: &[u8]) -> Vec<u8> {
    let f = frame(&TO_NODE, ip, l4, payload);
    f[14..].to_vec()
}

pub(crate) fn tcp(sport: u16, dport: u16) -> L4 {
    L4::Tcp {
        sport,
        dport,
        seq: 0x1000_0000,
        flags: 0,
    }
}

pub(crate) fn udp(sport: u16, dport: u16) -> L4 {
    L4::Udp { sport, dport }
}

pub(crate) fn l4(is_tcp: bool, sport: u16, dport: u16) -> L4 {
    if is_tcp {
        tcp(sport, dport)
    } else {
        udp(sport, dport)
    }
}

/// The Ethernet header bytes for `l2` with `ethertype` for the innermost type.
pub(crate) fn eth_bytes(l2: &L2, ethertype: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&l2.dst);
    v.extend_from_slice(&l2.src);
    match *l2.vlans {
        [] => {}
        [t] => {
            v.extend_from_slice(&[0x81, 0x00]);
            v.extend_from_slice(&t.to_be_bytes());
        }
        [o, i] => {
            v.extend_from_slice(&[0x88, 0xa8]);
            v.extend_from_slice(&o.to_be_bytes());
            v.extend_from_slice(&[0x81, 0x00]);
            v.extend_from_slice(&i.to_be_bytes());
        }
        _ => panic!(),
    }
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

/// RFC 1071, written out plainly: the reference the tests compare against.
pub(crate) fn inet_sum(parts: &[&[u8]]) -> u16 {
    let mut acc: u64 = 0;
    for p in parts {
        for c in p.chunks(2) {
            let hi = u64::from(c[0]) << 8;
            let lo = c.get(1).map_or(0, |b| u64::from(*b));
            acc += hi | lo;
        }
    }
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    u16::try_from(acc).unwrap()
}

/// An outer IPv4 header as the encap path must write it (etherparse computes the checksum).
pub(crate) fn outer_v4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpNumber,
    payload_len: usize,
    tos: u8,
    ident: u16,
    df: bool,
) -> Vec<u8> {
    let mut h = Ipv4Header::new(
        u16::try_from(payload_len).unwrap(),
        64,
        proto,
        src.octets(),
        dst.octets(),
    )
    .unwrap();
    h.dscp = etherparse::IpDscp::try_new(tos >> 2).unwrap();
    h.ecn = etherparse::IpEcn::try_new(tos & 3).unwrap();
    h.identification = ident;
    h.dont_fragment = df;
    h.header_checksum = h.calc_header_checksum();
    h.to_bytes().to_vec()
}

/// An outer IPv6 header as the encap path must write it.
pub(crate) fn outer_v6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: IpNumber,
    payload_len: usize,
    tc: u8,
    flow_label: u32,
) -> Vec<u8> {
    let h = Ipv6Header {
        traffic_class: tc,
        flow_label: Ipv6FlowLabel::try_new(flow_label).unwrap(),
        payload_length: u16::try_from(payload_len).unwrap(),
        next_header: next,
        hop_limit: 64,
        source: src.octets(),
        destination: dst.octets(),
    };
    h.to_bytes().to_vec()
}

/// Parses a frame with etherparse and checks every checksum it carries from scratch:
/// the IPv4 header, and TCP/UDP/ICMP/ICMPv6 over the whole (unfragmented) packet. Returns
/// the sliced packet for more checks.
pub(crate) fn assert_checksums(frame: &[u8]) {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse parses the frame");
    let (src, dst): (Vec<u8>, Vec<u8>) = match &p.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "IPv4 header checksum"
            );
            (h.source.to_vec(), h.destination.to_vec())
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header().to_header();
            (h.source.to_vec(), h.destination.to_vec())
        }
        _ => return,
    };
    let v4 = src.len() == 4;
    let payload = match &p.net {
        Some(NetSlice::Ipv4(s)) => s.payload().payload,
        Some(NetSlice::Ipv6(s)) => s.payload().payload,
        _ => unreachable!(),
    };
    let proto = match &p.transport {
        Some(TransportSlice::Tcp(_)) => 6u8,
        Some(TransportSlice::Udp(_)) => 17,
        Some(TransportSlice::Icmpv4(_)) => 1,
        Some(TransportSlice::Icmpv6(_)) => 58,
        _ => return,
    };
    let len = u32::try_from(payload.len()).unwrap();
    let pseudo: Vec<u8> = if v4 {
        [
            &src[..],
            &dst[..],
            &[0, proto],
            &u16::try_from(len).unwrap().to_be_bytes()[..],
        ]
        .concat()
    } else {
        [
            &src[..],
            &dst[..],
            &len.to_be_bytes()[..],
            &[0, 0, 0, proto],
        ]
        .concat()
    };
    match proto {
        17 if v4 && payload[6..8] == [0, 0] => {}
        1 => assert_eq!(inet_sum(&[payload]), 0xFFFF, "ICMP checksum"),
        _ => assert_eq!(
            inet_sum(&[&pseudo, payload]),
            0xFFFF,
            "L4 checksum (proto {proto})"
        ),
    }
}
