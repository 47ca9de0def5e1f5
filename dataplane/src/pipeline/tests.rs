//! Unit tests and proptests that share `fuzz.rs` with the fuzz target: random bytes, and
//! random well-formed frames aimed at the fuzz fixture's services (then randomly corrupted),
//! through one pipeline, under every check of [`fuzz::check_frame`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{PacketBuilder, VlanId};
use proptest::prelude::*;

use super::fuzz::{self, NODE_MAC, NODE_V4, NODE_V6, VIP4, VIP6};
use crate::conntrack::Tick;

#[test]
fn empty_and_tiny_inputs() {
    fuzz::process_frames(&[]);
    fuzz::process_frames(&[0]);
    fuzz::process_frames(&[0, 0, 1, 0xff]);
}

/// What a generated frame carries.
#[derive(Debug, Clone)]
enum Kind {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// An ICMP error quoting a packet `quoted_src:qport -> client:cport`.
    IcmpError {
        qport: u16,
        cport: u16,
        tcp: bool,
        quote: usize,
    },
    /// An NDP neighbor solicitation / ARP request for `dst`.
    Resolve,
}

#[derive(Debug, Clone)]
struct Spec {
    v6: bool,
    src: u128,
    dst: usize,
    ttl: u8,
    vlans: usize,
    kind: Kind,
    payload: Vec<u8>,
    /// (position, xor) corruption applied after building.
    flip: Option<(usize, u8)>,
}

fn dst_addr(v6: bool, i: usize, bits: u128) -> IpAddr {
    match (v6, i % 4) {
        (false, 0 | 1) => IpAddr::V4(VIP4[i % 2]),
        (false, 2) => IpAddr::V4(NODE_V4),
        (false, _) => IpAddr::V4(Ipv4Addr::from_bits(u32::try_from(bits >> 96).unwrap_or(0))),
        (true, 0 | 1) => IpAddr::V6(VIP6[i % 2]),
        (true, 2) => IpAddr::V6(NODE_V6),
        (true, _) => IpAddr::V6(Ipv6Addr::from_bits(bits.rotate_left(17))),
    }
}

fn src_addr(v6: bool, bits: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from_bits(
            0x2001_0db8_c000_0000_0000_0000_0000_0000 | (bits & 0xffff),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from_bits(
            0x6440_0000 | u32::try_from(bits & 0xffff).unwrap_or(0),
        ))
    }
}

fn port() -> impl Strategy<Value = u16> {
    // The fixture's service ports, the SNAT range's first ports, random ones.
    prop_oneof![
        3 => Just(80u16),
        2 => Just(53),
        2 => Just(443),
        1 => Just(8000),
        1 => Just(1024),
        1 => Just(40_000),
        1 => any::<u16>()
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let kind = prop_oneof![
        4 => (port(), port(), 0u8..4).prop_map(|(sport, dport, flags)| Kind::Tcp { sport, dport, flags }),
        3 => (port(), port()).prop_map(|(sport, dport)| Kind::Udp { sport, dport }),
        2 => (port(), port(), any::<bool>(), 0usize..80)
            .prop_map(|(qport, cport, tcp, quote)| Kind::IcmpError { qport, cport, tcp, quote }),
        1 => Just(Kind::Resolve),
    ];
    (
        any::<bool>(),
        any::<u128>(),
        0usize..4,
        prop_oneof![Just(64u8), Just(255), Just(1), any::<u8>()],
        0usize..3,
        kind,
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::option::weighted(0.2, (0usize..120, 1u8..)),
    )
        .prop_map(|(v6, src, dst, ttl, vlans, kind, payload, flip)| Spec {
            v6,
            src,
            dst,
            ttl,
            vlans,
            kind,
            payload,
            flip,
        })
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Builds the frame a spec describes (etherparse computes lengths and checksums).
fn build(s: &Spec) -> Vec<u8> {
    let src = src_addr(s.v6, s.src);
    let mut dst = dst_addr(s.v6, s.dst, s.src);
    let client_mac = [0x02, 0xc1, 0, 0, 0, 7];
    let mut out = Vec::new();
    if matches!(s.kind, Kind::Resolve) && !s.v6 {
        // ARP request.
        out.extend_from_slice(&[0xff; 6]);
        out.extend_from_slice(&client_mac);
        out.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        out.extend_from_slice(&client_mac);
        out.extend_from_slice(&octets(src));
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&octets(dst));
        out.resize(60, 0);
        return corrupt(out, s.flip);
    }
    let mut ttl = s.ttl;
    if let (Kind::Resolve, IpAddr::V6(t)) = (&s.kind, dst) {
        ttl = 255;
        let o = t.octets();
        dst = IpAddr::V6(Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(o[13]),
            u16::from_be_bytes([o[14], o[15]]),
        ));
    }
    let eth = PacketBuilder::ethernet2(client_mac, NODE_MAC.0);
    let vid = |v: u16| VlanId::try_new(v).unwrap_or(VlanId::try_new(1).unwrap_or_default());
    let ip = |b: PacketBuilderAfterEth| match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b2)) => b.ipv4(a.octets(), b2.octets(), ttl),
        (IpAddr::V6(a), IpAddr::V6(b2)) => b.ipv6(a.octets(), b2.octets(), ttl),
        _ => unreachable!(),
    };
    let step = match s.vlans {
        0 => ip(PacketBuilderAfterEth::Plain(eth)),
        1 => ip(PacketBuilderAfterEth::Single(eth.single_vlan(vid(7)))),
        _ => ip(PacketBuilderAfterEth::Double(
            eth.double_vlan(vid(300), vid(7)),
        )),
    };
    let r = match &s.kind {
        Kind::Tcp {
            sport,
            dport,
            flags,
        } => {
            let t = step.tcp(*sport, *dport, 7, 1000);
            let t = match flags {
                1 => t.syn(),
                2 => t.fin().ack(1),
                3 => t.rst(),
                _ => t.ack(1),
            };
            t.write(&mut out, &s.payload)
        }
        Kind::Udp { sport, dport } => step.udp(*sport, *dport).write(&mut out, &s.payload),
        Kind::IcmpError {
            qport,
            cport,
            tcp,
            quote,
        } => {
            // The quoted packet: from the destination (a VIP, say) back to the source.
            let mut q = Vec::new();
            let qb = match (dst, src) {
                (IpAddr::V4(a), IpAddr::V4(b)) => PacketBuilder::ipv4(a.octets(), b.octets(), 50),
                (IpAddr::V6(a), IpAddr::V6(b)) => PacketBuilder::ipv6(a.octets(), b.octets(), 50),
                _ => unreachable!(),
            };
            let _ = if *tcp {
                qb.tcp(*qport, *cport, 9, 100)
                    .ack(3)
                    .write(&mut q, &s.payload)
            } else {
                qb.udp(*qport, *cport).write(&mut q, &s.payload)
            };
            q.truncate(*quote + if s.v6 { 40 } else { 20 });
            if s.v6 {
                step.icmpv6_raw(2, 0, [0, 0, 5, 0]).write(&mut out, &q)
            } else {
                step.icmpv4_raw(3, 4, [0, 0, 5, 0x78]).write(&mut out, &q)
            }
        }
        Kind::Resolve => {
            let mut p = octets(dst_addr(true, s.dst, s.src));
            p.extend_from_slice(&[1, 1]);
            p.extend_from_slice(&client_mac);
            step.icmpv6_raw(135, 0, [0; 4]).write(&mut out, &p)
        }
    };
    if r.is_err() {
        return Vec::new();
    }
    corrupt(out, s.flip)
}

fn corrupt(mut f: Vec<u8>, flip: Option<(usize, u8)>) -> Vec<u8> {
    if let Some((at, x)) = flip
        && let Some(b) = f.get_mut(at)
    {
        *b ^= x;
    }
    f
}

/// etherparse's builder steps differ by type with and without tags; this joins them.
enum PacketBuilderAfterEth {
    Plain(etherparse::PacketBuilderStep<etherparse::Ethernet2Header>),
    Single(etherparse::PacketBuilderStep<etherparse::VlanHeader>),
    Double(etherparse::PacketBuilderStep<etherparse::VlanHeader>),
}

impl PacketBuilderAfterEth {
    fn ipv4(
        self,
        s: [u8; 4],
        d: [u8; 4],
        ttl: u8,
    ) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        match self {
            Self::Plain(b) => b.ipv4(s, d, ttl),
            Self::Single(b) | Self::Double(b) => b.ipv4(s, d, ttl),
        }
    }

    fn ipv6(
        self,
        s: [u8; 16],
        d: [u8; 16],
        ttl: u8,
    ) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        match self {
            Self::Plain(b) => b.ipv6(s, d, ttl),
            Self::Single(b) | Self::Double(b) => b.ipv6(s, d, ttl),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes, as a sequence of frames, through one pipeline: never a panic, and every
    /// check of `fuzz::check_frame` holds.
    #[test]
    fn any_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzz::process_frames(&data);
    }

    /// Sequences of well-formed frames (sometimes with one byte corrupted) at the fixture's
    /// VIPs, node addresses and random addresses, through one pipeline, each under every check
    /// of `fuzz::check_frame` (checksums kept valid, encap carries the packet, NAT round trip,
    /// replies well-formed, nothing else touched).
    #[test]
    fn well_formed_frames(specs in proptest::collection::vec(spec(), 1..12), headroom in prop_oneof![Just(0usize), Just(128)]) {
        let mut p = fuzz::pipeline();
        for (i, s) in (0u64..).zip(&specs) {
            let f = build(s);
            fuzz::check_frame(&mut p, &f, headroom, 0, Tick(i * 1_000_000_000));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// `process_burst` (staging packets ahead, then processing them) gives the
    /// verdicts, frames, counters and conntrack state of `process_from` on each packet in
    /// order. Every frame comes twice, so bursts hold flows set up earlier in the same burst;
    /// bursts are longer than a stage.
    #[test]
    fn burst_matches_per_packet(
        specs in proptest::collection::vec(spec(), 1..40),
        port in 0u16..3,
        headroom in prop_oneof![Just(0usize), Just(128)],
    ) {
        let services = fuzz::services();
        let frames: Vec<Vec<u8>> = specs.iter().flat_map(|s| { let f = build(s); [f.clone(), f] }).collect();
        let (mut one, mut burst) = (fuzz::pipeline(), fuzz::pipeline());
        let now = Tick(5_000_000_000);
        let mut a: Vec<super::VecBuf> = frames.iter().map(|f| super::VecBuf::with_headroom(f, headroom)).collect();
        let mut b = a.clone();
        let va: Vec<super::Verdict> = a.iter_mut().map(|p| one.process_from(port, p, services, now)).collect();
        one.age(now, super::AGE_BUDGET_PER_BURST);
        let mut vb = vec![super::Verdict::Exception; b.len()];
        prop_assert_eq!(burst.process_burst(port, &mut b, &mut vb, services, now), b.len());
        prop_assert_eq!(va, vb);
        for (x, y) in a.iter().zip(&b) {
            prop_assert_eq!(x.to_vec(), y.to_vec());
        }
        prop_assert_eq!(one.counters(), burst.counters());
        prop_assert_eq!(one.conntrack().stats(), burst.conntrack().stats());
        prop_assert_eq!(one.conntrack().len(), burst.conntrack().len());
    }
}

// === client-IP affinity ===

mod affinity {
    use std::collections::BTreeSet;
    use std::net::IpAddr;

    use etherparse::PacketBuilder;

    use super::super::fuzz::{NODE_MAC, NODE_V4, NODE_V6, SEED};
    use super::super::{Pipeline, PipelineConfig, StaticServices, VecBuf, Verdict};
    use crate::conntrack::Tick;
    use crate::maglev::TableSize;
    use crate::tables::{
        Affinity, Backend, BackendId, BackendState, Mode, Proto, ServiceId, ServiceKey,
    };

    const VIP4: &str = "10.0.9.1";
    const VIP6: &str = "2001:db8:9::1";
    const PORT: u16 = 80;
    const BACKENDS: u32 = 5;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    /// One service at `vip:80/tcp` in `mode` over five active backends of the VIP's family.
    fn services(vip: IpAddr, mode: Mode, affinity: Affinity) -> StaticServices {
        let backends: Vec<Backend> = (1..=BACKENDS)
            .map(|i| Backend {
                id: BackendId(i),
                addr: match vip {
                    IpAddr::V4(_) => ip(&format!("10.1.9.{i}")),
                    IpAddr::V6(_) => ip(&format!("2001:db8:be::{i}")),
                },
                port: 0,
                mac: Some([0x02, 0xbe, 0, 0, 9, u8::try_from(i).unwrap_or(0)]),
                next_hop: None,
                weight: 1,
                state: BackendState::Active,
            })
            .collect();
        let key = ServiceKey::new(vip, PORT, Proto::Tcp);
        let mut s = StaticServices::new();
        let m = TableSize::try_new(251).expect("size");
        s.upsert(key, ServiceId(9), mode, m, &backends)
            .expect("service");
        assert!(s.set_affinity(&key, affinity));
        s
    }

    fn pipeline(conntrack_capacity: usize) -> Pipeline {
        let mut c = PipelineConfig::one_armed(NODE_MAC, SEED);
        c.node_ipv4 = Some(NODE_V4);
        c.node_ipv6 = Some(NODE_V6);
        c.conntrack_capacity = conntrack_capacity;
        Pipeline::new(c).expect("config")
    }

    /// A TCP SYN `src:sport → dst:dport`.
    fn syn(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([0x02, 0xc1, 0, 0, 0, 7], NODE_MAC.0);
        let step = match (src, dst) {
            (IpAddr::V4(a), IpAddr::V4(b)) => eth.ipv4(a.octets(), b.octets(), 64),
            (IpAddr::V6(a), IpAddr::V6(b)) => eth.ipv6(a.octets(), b.octets(), 64),
            _ => unreachable!("one family"),
        };
        let mut out = Vec::new();
        step.tcp(sport, dport, 1, 1000)
            .syn()
            .write(&mut out, &[])
            .expect("frame");
        out
    }

    /// An ICMP "fragmentation needed" / "packet too big" from a router, quoting the packet
    /// `vip:80 → client:cport` (a flow the pipeline has no state for).
    fn icmp_error(client: IpAddr, cport: u16, vip: IpAddr) -> Vec<u8> {
        let router = match client {
            IpAddr::V4(_) => ip("192.0.2.254"),
            IpAddr::V6(_) => ip("2001:db8:ff::fe"),
        };
        let mut q = Vec::new();
        let qb = match (vip, client) {
            (IpAddr::V4(a), IpAddr::V4(b)) => PacketBuilder::ipv4(a.octets(), b.octets(), 50),
            (IpAddr::V6(a), IpAddr::V6(b)) => PacketBuilder::ipv6(a.octets(), b.octets(), 50),
            _ => unreachable!("one family"),
        };
        qb.tcp(PORT, cport, 9, 100)
            .ack(3)
            .write(&mut q, &[])
            .expect("quote");
        let eth = PacketBuilder::ethernet2([0x02, 0xc1, 0, 0, 0, 7], NODE_MAC.0);
        let mut out = Vec::new();
        match (router, vip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => eth
                .ipv4(a.octets(), b.octets(), 64)
                .icmpv4_raw(3, 4, [0, 0, 5, 0x78])
                .write(&mut out, &q),
            (IpAddr::V6(a), IpAddr::V6(b)) => eth
                .ipv6(a.octets(), b.octets(), 64)
                .icmpv6_raw(2, 0, [0, 0, 5, 0])
                .write(&mut out, &q),
            _ => unreachable!("one family"),
        }
        .expect("frame");
        out
    }

    fn backend_of(v: Verdict) -> BackendId {
        match v {
            Verdict::Forward {
                backend: Some(b), ..
            } => b,
            other => panic!("not forwarded to a backend: {other:?}"),
        }
    }

    /// `client`'s 50 connections (source ports 40000..40050) to `vip`: the backends they got.
    fn picks(
        p: &mut Pipeline,
        s: &StaticServices,
        client: IpAddr,
        vip: IpAddr,
    ) -> BTreeSet<BackendId> {
        (40_000..40_050u16)
            .map(|sport| {
                let mut pkt = VecBuf::with_headroom(&syn(client, sport, vip, PORT), 64);
                backend_of(p.process(&mut pkt, s, Tick(1)))
            })
            .collect()
    }

    fn client(vip: IpAddr, i: u16) -> IpAddr {
        match vip {
            IpAddr::V4(_) => ip(&format!("198.51.100.{i}")),
            IpAddr::V6(_) => ip(&format!("2001:db8:c1::{i:x}")),
        }
    }

    /// For NAT and DSR, IPv4 and IPv6: with client-IP affinity every connection of a client
    /// (50 source ports) gets one backend, and 20 clients spread over the backends; without
    /// it, the one client's connections spread. DSR is also run with an 8-entry conntrack
    /// table, so most flows take the stateless fallback.
    #[test]
    fn one_backend_per_client_with_affinity_spread_without() {
        for vip in [ip(VIP4), ip(VIP6)] {
            for (mode, capacity) in [(Mode::Nat, 4096), (Mode::Dsr, 4096), (Mode::Dsr, 8)] {
                let what = format!("{vip} {mode:?} conntrack {capacity}");
                let sticky = services(vip, mode, Affinity::ClientIp);
                let mut p = pipeline(capacity);
                let mut chosen = BTreeSet::new();
                for i in 1..=20 {
                    let got = picks(&mut p, &sticky, client(vip, i), vip);
                    assert_eq!(got.len(), 1, "{what}: client {i} spread: {got:?}");
                    chosen.extend(got);
                }
                assert!(chosen.len() >= 3, "{what}: clients not spread: {chosen:?}");
                if capacity == 8 {
                    assert!(p.counters().conntrack_full_fallback > 0, "{what}");
                }

                let plain = services(vip, mode, Affinity::None);
                let got = picks(&mut pipeline(capacity), &plain, client(vip, 1), vip);
                assert!(got.len() >= 3, "{what}: no affinity, yet {got:?}");
            }
        }
    }

    /// Every LB node (a fresh pipeline with the same seed) sends a client to the same
    /// backend, and a DSR ICMP error about a flow without state goes to the client's backend.
    #[test]
    fn same_backend_on_every_node_and_for_icmp_errors() {
        for vip in [ip(VIP4), ip(VIP6)] {
            let s = services(vip, Mode::Dsr, Affinity::ClientIp);
            for i in 1..=10 {
                let c = client(vip, i);
                let a = picks(&mut pipeline(4096), &s, c, vip);
                let b = picks(&mut pipeline(8), &s, c, vip);
                assert_eq!(a, b, "{vip} client {i}");
                let mut pkt = VecBuf::with_headroom(&icmp_error(c, 55_555, vip), 64);
                let got = backend_of(pipeline(4096).process(&mut pkt, &s, Tick(1)));
                assert_eq!(Some(&got), a.first(), "{vip} client {i}: ICMP error");
            }
        }
    }
}
