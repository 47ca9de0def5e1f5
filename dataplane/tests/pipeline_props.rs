//! Properties of the pipeline (proptest): NAT then un-NAT gives back the original packet;
//! the same flow always maps to the same backend (on one node, and on two nodes sharing the
//! seed and tables); the fragments of one datagram go to one backend, the one the 3-tuple
//! flow hash picks. (Random bytes never panicking is a unit proptest next to the fuzz
//! target's body, `pipeline::tests::any_bytes`.)

#[path = "pipeline_support.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use sluice_dataplane::flow::flow_hash_3tuple;
use sluice_dataplane::maglev::TableSize;
use sluice_dataplane::pipeline::{Pipeline, Services, StaticServices, Verdict};
use sluice_dataplane::tables::{Mode, ServiceId, ServiceKey};
use sluice_dataplane::wire::{IpProtocol, parse_frame};
use support::*;

fn services(mode: Mode, v6: bool, is_tcp: bool, n: u32) -> StaticServices {
    let backends: Vec<_> = (1..=n)
        .map(|i| backend(i, v6, 8000 + u16::try_from(i).unwrap()))
        .collect();
    let mut s = StaticServices::new();
    s.upsert(
        ServiceKey::new(vip(v6), 443, proto(is_tcp)),
        ServiceId(1),
        mode,
        TableSize::try_new(1021).unwrap(),
        &backends,
    )
    .unwrap();
    s
}

fn client_addr(v6: bool, bits: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from_bits(
            0x2001_0db8_c000_0000_0000_0000_0000_0000 | (bits & 0xffff_ffff_ffff_ffff),
        ))
    } else {
        // 100.64.0.0/10: never the node, a VIP or a backend.
        IpAddr::V4(Ipv4Addr::from_bits(
            0x6440_0000 | (u32::try_from(bits & 0x3f_ffff).unwrap()),
        ))
    }
}

/// `frame` as its destination answers it: MACs, addresses and ports swapped (every checksum
/// stays valid: the sums do not change).
fn reverse(frame: &[u8]) -> Vec<u8> {
    let pf = parse_frame(frame).unwrap();
    let mut r = frame.to_vec();
    for i in 0..6 {
        r.swap(i, 6 + i);
    }
    let (a, b, n) = match pf.l3 {
        sluice_dataplane::wire::L3::Ipv4 => (pf.l3_offset + 12, pf.l3_offset + 16, 4),
        _ => (pf.l3_offset + 8, pf.l3_offset + 24, 16),
    };
    for i in 0..n {
        r.swap(a + i, b + i);
    }
    for i in 0..2 {
        r.swap(pf.l4_offset + i, pf.l4_offset + 2 + i);
    }
    r
}

/// Sets the TTL / hop limit and recomputes the IPv4 header checksum from scratch.
fn with_ttl(frame: &mut [u8], ttl: u8) {
    let pf = parse_frame(frame).unwrap();
    let l3 = pf.l3_offset;
    match pf.l3 {
        sluice_dataplane::wire::L3::Ipv4 => {
            frame[l3 + 8] = ttl;
            frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let hl = pf.l4_offset - l3;
            let c = !inet_sum(&[&frame[l3..l3 + hl]]);
            frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        _ => frame[l3 + 7] = ttl,
    }
}

const VLANS: [&[u16]; 3] = [&[], &[5], &[100, 5]];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// NAT then un-NAT: the client's packet, NATed, answered by the backend (addresses,
    /// ports, MACs swapped) and un-NATed, is the client's packet reversed, byte for byte
    /// (TTL two lower, IPv4 header checksum recomputed from scratch), with valid checksums.
    #[test]
    fn nat_then_unnat_restores_the_packet(
        v6 in any::<bool>(),
        is_tcp in any::<bool>(),
        bits in any::<u128>(),
        sport in 1u16..,
        ttl in 3u8..,
        tos in any::<u8>(),
        vlans in 0usize..3,
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let s = services(Mode::Nat, v6, is_tcp, 5);
        let mut p = pipeline();
        let mut ip = Ip::new(client_addr(v6, bits), vip(v6), ttl);
        ip.tos = tos;
        let l2 = L2 { vlans: VLANS[vlans], ..TO_NODE };
        let x = frame(&l2, &ip, &l4(is_tcp, sport, 443), &payload);
        let (v, nat) = run(&mut p, &s, &x);
        prop_assert!(matches!(v, Verdict::Forward { backend: Some(_), .. }), "{:?}", v);
        assert_checksums(&nat);
        let (v, back) = run(&mut p, &s, &reverse(&nat));
        prop_assert!(matches!(v, Verdict::Forward { backend: None, .. }), "{:?}", v);
        assert_checksums(&back);
        let mut expected = reverse(&x);
        with_ttl(&mut expected, ttl - 2);
        prop_assert_eq!(back, expected);
    }

    /// The same flow maps to the same backend: again and again on one node (conntrack hits
    /// in between other flows), and on a second node with the same seed and tables but its
    /// own conntrack (other hash keys) that sees the flows in the opposite order.
    #[test]
    fn same_flow_same_backend(
        mode in prop_oneof![Just(Mode::Nat), Just(Mode::Dsr), Just(Mode::EncapIpip), Just(Mode::EncapGue)],
        v6 in any::<bool>(),
        is_tcp in any::<bool>(),
        flows in proptest::collection::vec((any::<u128>(), 1u16..), 1..40),
    ) {
        let s = services(mode, v6, is_tcp, 16);
        let mut a = pipeline();
        let mut c = config();
        c.conntrack_seeds = Some([99, 98, 97, 96]);
        let mut b = Pipeline::new(c).unwrap();
        let frames: Vec<Vec<u8>> = flows
            .iter()
            .map(|&(bits, sport)| frame(&TO_NODE, &Ip::new(client_addr(v6, bits), vip(v6), 64), &l4(is_tcp, sport, 443), b"data"))
            .collect();
        let backend = |p: &mut Pipeline, f: &[u8]| match run(p, &s, f).0 {
            Verdict::Forward { backend: Some(id), .. } => id,
            v => panic!("{v:?}"),
        };
        let on_a: Vec<_> = frames.iter().map(|f| backend(&mut a, f)).collect();
        let on_b: Vec<_> = frames.iter().rev().map(|f| backend(&mut b, f)).collect();
        for (i, f) in frames.iter().enumerate() {
            prop_assert_eq!(on_a[i], on_b[frames.len() - 1 - i], "node B disagrees");
            prop_assert_eq!(backend(&mut a, f), on_a[i], "node A changed its mind");
        }
    }

    /// The first and a later fragment of one datagram go to the same backend, the one
    /// Maglev gives the 3-tuple hash.
    #[test]
    fn fragments_of_one_datagram_share_a_backend(
        mode in prop_oneof![Just(Mode::Dsr), Just(Mode::EncapIpip), Just(Mode::EncapGue)],
        v6 in any::<bool>(),
        is_tcp in any::<bool>(),
        bits in any::<u128>(),
        sport in 1u16..,
        chunks in 3usize..20,
        split in 0usize..100,
    ) {
        let s = services(mode, v6, is_tcp, 16);
        let mut p = pipeline();
        let src = client_addr(v6, bits);
        let payload = vec![0xab; chunks * 8];
        let whole = frame(&TO_NODE, &Ip::new(src, vip(v6), 64), &l4(is_tcp, sport, 443), &payload);
        let seg_len = payload.len() + if is_tcp { 20 } else { 8 };
        // Split at a multiple of 8 that leaves the whole L4 header in the first fragment.
        let min = if is_tcp { 3 } else { 1 };
        let k = 8 * (min + split % (seg_len / 8 - min));
        let (first, later) = fragments(&whole, v6, k);
        let proto = if is_tcp { IpProtocol::TCP } else { IpProtocol::UDP };
        let svc = s.service(&ServiceKey::new(vip(v6), 443, proto_of(is_tcp))).unwrap();
        let expected = svc.pick(flow_hash_3tuple(src, vip(v6), proto, SEED)).unwrap().1.id();
        let (v1, _) = run(&mut p, &s, &first);
        let (v2, _) = run(&mut p, &s, &later);
        // The first fragment starts the flow (one connection); the later one follows it.
        prop_assert_eq!(v1, Verdict::Forward { service: 0, backend: Some(expected), bytes: u32::try_from(first.len()).unwrap(), new_flow: true });
        prop_assert_eq!(v2, Verdict::Forward { service: 0, backend: Some(expected), bytes: u32::try_from(later.len()).unwrap(), new_flow: false });
        prop_assert_eq!(p.counters().new_flows, 1);
    }
}

fn proto_of(is_tcp: bool) -> sluice_dataplane::tables::Proto {
    proto(is_tcp)
}

/// Splits an unfragmented, untagged frame's IP payload at byte `k` (a multiple of 8) into a
/// first (offset 0, more fragments) and a last fragment.
fn fragments(whole: &[u8], v6: bool, k: usize) -> (Vec<u8>, Vec<u8>) {
    let pf = parse_frame(whole).unwrap();
    let seg = &whole[pf.l4_offset..pf.l4_offset + usize::from(pf.l4_len)];
    let eth = &whole[..14];
    let parts = [(&seg[..k], 0usize, true), (&seg[k..], k, false)];
    let build = |(data, off, more): (&[u8], usize, bool)| -> Vec<u8> {
        let mut f = eth.to_vec();
        if v6 {
            let mut h = whole[14..54].to_vec();
            let len = u16::try_from(8 + data.len()).unwrap();
            h[4..6].copy_from_slice(&len.to_be_bytes());
            let proto = h[6];
            h[6] = 44;
            f.extend_from_slice(&h);
            let word = u16::try_from(off).unwrap() | u16::from(more);
            f.extend_from_slice(&[proto, 0]);
            f.extend_from_slice(&word.to_be_bytes());
            f.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        } else {
            let mut h = whole[14..34].to_vec();
            let len = u16::try_from(20 + data.len()).unwrap();
            h[2..4].copy_from_slice(&len.to_be_bytes());
            let word = u16::try_from(off / 8).unwrap() | if more { 0x2000 } else { 0 };
            h[6..8].copy_from_slice(&word.to_be_bytes());
            h[10..12].copy_from_slice(&[0, 0]);
            let c = !inet_sum(&[&h]);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&h);
        }
        f.extend_from_slice(data);
        f
    };
    (build(parts[0]), build(parts[1]))
}
