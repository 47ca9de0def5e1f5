//! In-place packet rewrites: MACs, full NAT with RFC 1624 incremental checksums, IP-in-IP and
//! GUE encapsulation, ARP replies, neighbor advertisements, and the translation of ICMP errors
//! about NAT flows.
//!
//! Every function takes the [`ParsedFrame`] of the bytes it rewrites and reaches the frame
//! only through `get` / `get_mut`: a frame shorter than the parse said gives `None` (or
//! [`DropReason::RewriteFailed`]), never a panic. A function that fails may have rewritten
//! part of the frame; the caller drops it then.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::PacketBuf;
use super::verdict::DropReason;
use crate::wire::{
    EtherType, EthernetAddress, IpProtocol, L3, ParsedFrame, arp, checksum, gue, icmpv6, ipv4,
    ipv6, udp,
};

// === byte helpers ===

#[inline]
fn rd16(d: &[u8], at: usize) -> Option<u16> {
    match *d.get(at..at + 2)? {
        [a, b] => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

#[inline]
fn wr16(d: &mut [u8], at: usize, v: u16) -> Option<()> {
    d.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}

#[inline]
fn wr(d: &mut [u8], at: usize, src: &[u8]) -> Option<()> {
    d.get_mut(at..at + src.len())?.copy_from_slice(src);
    Some(())
}

#[inline]
fn rd_v4(d: &[u8], at: usize) -> Option<Ipv4Addr> {
    match *d.get(at..at + 4)? {
        [a, b, c, e] => Some(Ipv4Addr::new(a, b, c, e)),
        _ => None,
    }
}

#[inline]
fn rd_v6(d: &[u8], at: usize) -> Option<Ipv6Addr> {
    let b: [u8; 16] = d.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

/// The source MAC of a frame.
#[inline]
pub(super) fn src_mac(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(6..12)?.try_into().ok()
}

/// Writes both Ethernet addresses.
#[inline]
pub(super) fn set_macs(frame: &mut [u8], dst: [u8; 6], src: [u8; 6]) -> Option<()> {
    wr(frame, 0, &dst)?;
    wr(frame, 6, &src)
}

// === checksum deltas ===

/// An RFC 1624 update in the making: `Σ(~old) + Σ(new)` over every changed 16-bit word,
/// applied to a checksum at the end with eqn. 3 (`HC' = ~(~HC + Σ~m + Σm')`). Summing first
/// and folding once gives bit for bit what a chain of single-word updates gives.
#[derive(Clone, Copy, Default)]
struct Delta(u64);

impl Delta {
    #[inline]
    fn word(&mut self, old: u16, new: u16) {
        self.0 += u64::from(!old) + u64::from(new);
    }

    /// An address change. A 32-bit value sums like its two halves modulo `0xFFFF`.
    #[inline]
    fn addr(&mut self, old: IpAddr, new: IpAddr) {
        match (old, new) {
            (IpAddr::V4(o), IpAddr::V4(n)) => {
                self.0 += u64::from(!o.to_bits()) + u64::from(n.to_bits());
            }
            (IpAddr::V6(o), IpAddr::V6(n)) => {
                self.0 += sum128(!o.to_bits()) + sum128(n.to_bits());
            }
            // Mixed families never reach here: callers check the family first.
            _ => {}
        }
    }

    #[inline]
    fn apply(self, csum: u16) -> u16 {
        !checksum::fold(u64::from(!csum) + self.0)
    }
}

/// The four 32-bit words of a 128-bit value, summed.
#[inline]
fn sum128(v: u128) -> u64 {
    let b = v.to_be_bytes();
    let w = |i: usize| {
        b.get(i..i + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map_or(0, |a| u64::from(u32::from_be_bytes(a)))
    };
    w(0) + w(4) + w(8) + w(12)
}

// === NAT ===

/// New addresses and ports for a NAT rewrite (either direction).
#[derive(Debug, Clone, Copy)]
pub(super) struct Translation {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Rewrites a TCP/UDP packet's addresses and ports, decrements its TTL / hop limit, and
/// updates the IPv4 header checksum and the L4 checksum incrementally (RFC 1624). A zero
/// (absent) UDP checksum over IPv4 stays zero; a zero UDP checksum over IPv6 (invalid) is
/// computed in full. The caller has checked the TTL (> 1) and that `t` has the packet's
/// family.
#[inline(always)]
pub(super) fn nat(frame: &mut [u8], pf: &ParsedFrame, t: &Translation) -> Option<()> {
    let (l3, l4) = (pf.l3_offset, pf.l4_offset);
    let mut addrs = Delta::default();
    addrs.addr(pf.src, t.src);
    addrs.addr(pf.dst, t.dst);
    let mut l4_delta = addrs;
    l4_delta.word(pf.src_port, t.src_port);
    l4_delta.word(pf.dst_port, t.dst_port);
    let v6 = match (pf.l3, t.src, t.dst) {
        (L3::Ipv4, IpAddr::V4(s), IpAddr::V4(d)) => {
            let ttl = *frame.get(l3 + 8)?;
            let proto = *frame.get(l3 + 9)?;
            let new_ttl = ttl.wrapping_sub(1);
            let mut ip = addrs;
            ip.word(
                u16::from_be_bytes([ttl, proto]),
                u16::from_be_bytes([new_ttl, proto]),
            );
            let hc = rd16(frame, l3 + 10)?;
            *frame.get_mut(l3 + 8)? = new_ttl;
            wr16(frame, l3 + 10, ip.apply(hc))?;
            wr(frame, l3 + 12, &s.octets())?;
            wr(frame, l3 + 16, &d.octets())?;
            false
        }
        (L3::Ipv6, IpAddr::V6(s), IpAddr::V6(d)) => {
            let hl = frame.get_mut(l3 + 7)?;
            *hl = hl.wrapping_sub(1);
            wr(frame, l3 + 8, &s.octets())?;
            wr(frame, l3 + 24, &d.octets())?;
            true
        }
        _ => return None,
    };
    wr16(frame, l4, t.src_port)?;
    wr16(frame, l4 + 2, t.dst_port)?;
    match pf.proto {
        IpProtocol::TCP => {
            let c = rd16(frame, l4 + 16)?;
            wr16(frame, l4 + 16, l4_delta.apply(c))
        }
        IpProtocol::UDP => {
            let c = rd16(frame, l4 + 6)?;
            if c != 0 {
                wr16(frame, l4 + 6, checksum::udp_nonzero(l4_delta.apply(c)))
            } else if let (true, IpAddr::V6(s), IpAddr::V6(d)) = (v6, t.src, t.dst) {
                let seg = frame.get_mut(l4..l4 + usize::from(pf.l4_len))?;
                udp::Packet::new_checked(seg).ok()?.fill_checksum_v6(s, d);
                Some(())
            } else {
                Some(())
            }
        }
        _ => None,
    }
}

// === encapsulation ===

/// Outer header parameters for [`encap`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Encap {
    /// Outer source: the node's encap address of the backend's family.
    pub src: IpAddr,
    /// Outer destination: the backend.
    pub dst: IpAddr,
    /// `Some(port)`: GUE to that UDP port; `None`: IP-in-IP.
    pub gue_port: Option<u16>,
    /// Per-flow entropy, the flow key's [`KeyedHash`](crate::flow::KeyedHash) under the
    /// Maglev seed: GUE source port, IPv6 flow label.
    pub entropy: u64,
    /// IPv4 identification for the outer header.
    pub ident: u16,
}

/// Outer TTL / hop limit of encapsulated packets.
pub(super) const ENCAP_TTL: u8 = 64;

/// Wraps the frame's IP packet in an outer IP header (IPv4 protocol 4 / 41, IPv6 next
/// header 4 / 41, any family mix) or an outer IP + UDP + GUE (variant 0) header, between the
/// Ethernet header (VLAN tags kept) and the inner packet, which is not touched. The
/// EtherType (of the innermost tag) follows the outer family.
///
/// The outer IPv4 header gets a full checksum, TTL 64, the inner DSCP/ECN, and DF from an
/// IPv4 inner packet (always set for IPv6 inner). The outer IPv6 header gets hop limit 64,
/// the inner traffic class and a flow label from [`Encap::entropy`]. The GUE UDP source port
/// is `0xC000 | (entropy & 0x3FFF)` (ECMP entropy in the ephemeral range); its checksum is zero over
/// IPv4 and computed in full over IPv6. Ethernet padding, if any, stays after the inner
/// packet as padding.
pub(super) fn encap<B: PacketBuf>(
    pkt: &mut B,
    pf: &ParsedFrame,
    e: &Encap,
) -> Result<(), DropReason> {
    const FAIL: DropReason = DropReason::RewriteFailed;
    let l2 = pf.l3_offset;
    let inner_len = pf.l4_offset.saturating_sub(pf.l3_offset) + usize::from(pf.l4_len);
    let (inner_proto, tos, df) = {
        let d = pkt.data();
        let b0 = *d.get(l2).ok_or(FAIL)?;
        let b1 = *d.get(l2 + 1).ok_or(FAIL)?;
        match pf.l3 {
            L3::Ipv4 => {
                let flags = *d.get(l2 + 6).ok_or(FAIL)?;
                (IpProtocol::IPIP, b1, flags & 0x40 != 0)
            }
            L3::Ipv6 => (IpProtocol::IPV6, ((b0 & 0x0F) << 4) | (b1 >> 4), true),
            L3::Arp | L3::Other(_) => return Err(DropReason::Unsupported),
        }
    };
    let udp_len = if e.gue_port.is_some() {
        udp::HEADER_LEN + gue::HEADER_LEN
    } else {
        0
    };
    let (ip_len, ethertype, max_payload) = match e.dst {
        IpAddr::V4(_) => (
            ipv4::HEADER_LEN,
            EtherType::IPV4,
            usize::from(ipv4::MAX_PAYLOAD_LEN),
        ),
        IpAddr::V6(_) => (ipv6::HEADER_LEN, EtherType::IPV6, usize::from(u16::MAX)),
    };
    let n = ip_len + udp_len;
    let payload_len = inner_len + udp_len;
    if payload_len > max_payload {
        return Err(DropReason::EncapTooBig);
    }
    let payload16 = u16::try_from(payload_len).map_err(|_| DropReason::EncapTooBig)?;
    if l2 < 2 || pkt.data().len() < l2 + inner_len {
        return Err(FAIL);
    }
    let data = pkt.prepend(n).ok_or(DropReason::EncapNoHeadroom)?;
    // Move the Ethernet header (and tags) to the new front; the outer headers go where it was.
    data.copy_within(n..n + l2, 0);
    wr16(data, l2 - 2, ethertype.0).ok_or(FAIL)?;
    let outer = data.get_mut(l2..l2 + n + inner_len).ok_or(FAIL)?;
    let (ip, rest) = outer.split_at_mut(ip_len);
    let next = if e.gue_port.is_some() {
        IpProtocol::UDP
    } else {
        inner_proto
    };
    let flow_label = u32::try_from(e.entropy & 0xF_FFFF).unwrap_or(0);
    match (e.src, e.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4::Repr {
            src_addr: s,
            dst_addr: d,
            next_header: next,
            payload_len: payload16,
            ttl: ENCAP_TTL,
            dscp: tos >> 2,
            ecn: tos & 0x03,
            ident: e.ident,
            dont_frag: df,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut ipv4::Packet::new_unchecked(ip)),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6::Repr {
            src_addr: s,
            dst_addr: d,
            next_header: next,
            payload_len: payload16,
            hop_limit: ENCAP_TTL,
            traffic_class: tos,
            flow_label,
        }
        .emit(&mut ipv6::Packet::new_unchecked(ip)),
        _ => return Err(DropReason::Unsupported),
    }
    if let Some(port) = e.gue_port {
        let (udp_hdr, after) = rest.split_at_mut(udp::HEADER_LEN);
        let gue_hdr = after.get_mut(..gue::HEADER_LEN).ok_or(FAIL)?;
        let entropy_port = 0xC000 | u16::try_from(e.entropy & 0x3FFF).unwrap_or(0);
        udp::Repr {
            src_port: entropy_port,
            dst_port: port,
            payload_len: payload16 - 8,
        }
        .emit(&mut udp::Packet::new_unchecked(udp_hdr));
        gue::Repr {
            next_header: inner_proto,
        }
        .emit(&mut gue::Packet::new_unchecked(gue_hdr));
        if let (IpAddr::V6(s), IpAddr::V6(d)) = (e.src, e.dst) {
            udp::Packet::new_checked(rest)
                .map_err(|_| FAIL)?
                .fill_checksum_v6(s, d);
        }
    }
    Ok(())
}

// === ARP and NDP ===

/// Answers an ARP request for an address `owns` accepts, in place: the ARP reply from `mac`,
/// Ethernet from `mac` to the requester. `None` (frame untouched) for anything else: replies,
/// gratuitous ARP, requests from a non-unicast sender, or for other addresses.
pub(super) fn arp_reply(
    frame: &mut [u8],
    pf: &ParsedFrame,
    mac: EthernetAddress,
    owns: impl Fn(IpAddr) -> bool,
) -> Option<()> {
    let l3 = pf.l3_offset;
    let req = arp::Repr::parse(&arp::Packet::new_checked(frame.get(l3..)?).ok()?).ok()?;
    if req.operation != arp::Operation::REQUEST
        || !req.source_hardware_addr.is_unicast()
        || req.source_protocol_addr == req.target_protocol_addr
        || !owns(IpAddr::V4(req.target_protocol_addr))
    {
        return None;
    }
    let reply = req.reply(mac);
    let out = frame.get_mut(l3..l3 + reply.buffer_len())?;
    reply.emit(&mut arp::Packet::new_unchecked(out));
    set_macs(frame, req.source_hardware_addr.0, mac.0)
}

/// All-nodes multicast, where a neighbor advertisement answering a DAD probe goes.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Answers a neighbor solicitation for an address `owns` accepts with a neighbor
/// advertisement, in place (RFC 4861 §7.2.4): from the target address and `mac`, hop limit
/// 255, Solicited + Override to the soliciting node (to its source link-layer option's MAC,
/// else the frame's source MAC), or Override only to all-nodes for a DAD probe (source `::`).
/// The target link-layer option is included when the frame has room for it (an NS with a
/// source link-layer option always has); extension headers of the solicitation are dropped.
/// `None` (frame untouched) for anything that is not a valid solicitation (hop limit 255,
/// code 0, checksum, option lengths, unicast target) for an owned address.
pub(super) fn ndp_reply(
    frame: &mut [u8],
    pf: &ParsedFrame,
    mac: EthernetAddress,
    owns: impl Fn(IpAddr) -> bool,
) -> Option<()> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (pf.src, pf.dst) else {
        return None;
    };
    if pf.ttl != 255 {
        return None;
    }
    let l4 = frame.get(pf.l4_offset..pf.l4_offset + usize::from(pf.l4_len))?;
    let msg = icmpv6::Packet::new_checked(l4).ok()?;
    let icmpv6::Repr::NeighborSolicit {
        target_addr,
        lladdr,
    } = icmpv6::Repr::parse(src, dst, &msg).ok()?
    else {
        return None;
    };
    let dad = src.is_unspecified();
    if target_addr.is_multicast() || (dad && lladdr.is_some()) || !owns(IpAddr::V6(target_addr)) {
        return None;
    }
    let (ip_dst, eth_dst, flags) = if dad {
        (
            ALL_NODES,
            EthernetAddress::ipv6_multicast(ALL_NODES),
            icmpv6::NeighborFlags::OVERRIDE,
        )
    } else {
        let eth = match lladdr {
            Some(a) => a,
            None => EthernetAddress(src_mac(frame)?),
        };
        (
            src,
            eth,
            icmpv6::NeighborFlags::SOLICITED | icmpv6::NeighborFlags::OVERRIDE,
        )
    };
    let l3 = pf.l3_offset;
    let at = l3 + ipv6::HEADER_LEN;
    let room = frame.len().saturating_sub(at);
    let full = icmpv6::Repr::NeighborAdvert {
        flags: icmpv6::NeighborFlags(flags),
        target_addr,
        lladdr: Some(mac),
    };
    let na = if room >= full.buffer_len() {
        full
    } else {
        icmpv6::Repr::NeighborAdvert {
            flags: icmpv6::NeighborFlags(flags),
            target_addr,
            lladdr: None,
        }
    };
    let len = na.buffer_len();
    let ip = ipv6::Repr {
        src_addr: target_addr,
        dst_addr: ip_dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: u16::try_from(len).ok()?,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    };
    ip.emit(&mut ipv6::Packet::new_unchecked(frame.get_mut(l3..at)?));
    na.emit(
        target_addr,
        ip_dst,
        &mut icmpv6::Packet::new_unchecked(frame.get_mut(at..at + len)?),
    );
    set_macs(frame, eth_dst.0, mac.0)
}

// === ICMP errors about NAT flows ===

/// How an ICMP error about a NAT flow is translated for the backend: the outer packet goes
/// from the node to the backend, and the quoted packet becomes the one the backend sent
/// (backend:port → node:SNAT port), so the backend's stack matches it to its connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct IcmpTranslation {
    /// New outer source (the node's NAT address).
    pub outer_src: IpAddr,
    /// New outer destination (the backend).
    pub outer_dst: IpAddr,
    /// New quoted source (the backend).
    pub quote_src: IpAddr,
    /// New quoted destination (the node's NAT address).
    pub quote_dst: IpAddr,
    /// New quoted source port (the backend's port).
    pub quote_src_port: u16,
    /// New quoted destination port (the SNAT port).
    pub quote_dst_port: u16,
}

/// Translates an ICMPv4 / ICMPv6 error about a NAT flow in place: the quoted IP header's
/// addresses (and its IPv4 header checksum, recomputed in full), the quoted ports, the quoted
/// TCP/UDP checksum when it was quoted (incrementally: the quote is usually cut short), the
/// outer addresses and TTL / hop limit (decremented; the caller checked it is > 1), the outer
/// IPv4 header checksum and the ICMP checksum (both recomputed in full).
pub(super) fn icmp_nat(frame: &mut [u8], pf: &ParsedFrame, t: &IcmpTranslation) -> Option<()> {
    let (l3, l4) = (pf.l3_offset, pf.l4_offset);
    let end = l4 + usize::from(pf.l4_len);
    let q = l4 + 8;
    // The quoted packet: where its L4 header starts, its protocol, its old addresses.
    let (q_l4, quote_proto, old_src, old_dst) = match pf.l3 {
        L3::Ipv4 => {
            let ihl = usize::from(*frame.get(q)? & 0x0F) * 4;
            let proto = IpProtocol(*frame.get(q + 9)?);
            let (s, d) = (rd_v4(frame, q + 12)?, rd_v4(frame, q + 16)?);
            (q + ihl, proto, IpAddr::V4(s), IpAddr::V4(d))
        }
        L3::Ipv6 => {
            let next = IpProtocol(*frame.get(q + 6)?);
            let rest = frame.get(q + ipv6::HEADER_LEN..end)?;
            let ul = ipv6::walk_extension_headers(next, rest).ok()?;
            let (s, d) = (rd_v6(frame, q + 8)?, rd_v6(frame, q + 24)?);
            (q + ul.offset, ul.next_header, IpAddr::V6(s), IpAddr::V6(d))
        }
        L3::Arp | L3::Other(_) => return None,
    };
    let (old_sp, old_dp) = (rd16(frame, q_l4)?, rd16(frame, q_l4 + 2)?);
    let mut delta = Delta::default();
    delta.addr(old_src, t.quote_src);
    delta.addr(old_dst, t.quote_dst);
    delta.word(old_sp, t.quote_src_port);
    delta.word(old_dp, t.quote_dst_port);
    wr16(frame, q_l4, t.quote_src_port)?;
    wr16(frame, q_l4 + 2, t.quote_dst_port)?;
    let csum_at = match quote_proto {
        IpProtocol::TCP => Some(q_l4 + 16),
        IpProtocol::UDP => Some(q_l4 + 6),
        _ => None,
    };
    if let Some(at) = csum_at
        && at + 2 <= end
    {
        let c = rd16(frame, at)?;
        let udp = quote_proto == IpProtocol::UDP;
        if !(udp && c == 0) {
            let n = delta.apply(c);
            wr16(frame, at, if udp { checksum::udp_nonzero(n) } else { n })?;
        }
    }
    match (pf.l3, t.quote_src, t.quote_dst, t.outer_src, t.outer_dst) {
        (L3::Ipv4, IpAddr::V4(qs), IpAddr::V4(qd), IpAddr::V4(os), IpAddr::V4(od)) => {
            wr(frame, q + 12, &qs.octets())?;
            wr(frame, q + 16, &qd.octets())?;
            wr16(frame, q + 10, 0)?;
            let c = checksum::compute(frame.get(q..q_l4)?);
            wr16(frame, q + 10, c)?;
            // Outer.
            let ttl = frame.get_mut(l3 + 8)?;
            *ttl = ttl.wrapping_sub(1);
            wr(frame, l3 + 12, &os.octets())?;
            wr(frame, l3 + 16, &od.octets())?;
            let hl = l4 - l3;
            wr16(frame, l3 + 10, 0)?;
            let hc = checksum::compute(frame.get(l3..l3 + hl)?);
            wr16(frame, l3 + 10, hc)?;
            wr16(frame, l4 + 2, 0)?;
            let ic = checksum::compute(frame.get(l4..end)?);
            wr16(frame, l4 + 2, ic)
        }
        (L3::Ipv6, IpAddr::V6(qs), IpAddr::V6(qd), IpAddr::V6(os), IpAddr::V6(od)) => {
            wr(frame, q + 8, &qs.octets())?;
            wr(frame, q + 24, &qd.octets())?;
            let hl = frame.get_mut(l3 + 7)?;
            *hl = hl.wrapping_sub(1);
            wr(frame, l3 + 8, &os.octets())?;
            wr(frame, l3 + 24, &od.octets())?;
            icmpv6::Packet::new_checked(frame.get_mut(l4..end)?)
                .ok()?
                .fill_checksum(os, od);
            Some(())
        }
        _ => None,
    }
}
