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

    /// `process_burst` (staged: parse and prefetch the burst, then process) gives the
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
