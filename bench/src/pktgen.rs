//! The pure half of `pktgen` (the DPDK packet generator and sink in `src/bin/pktgen.rs`):
//! building frames from a traffic [`Profile`], reading the TX timestamp back out of a received
//! frame, a latency [`Histogram`], and a seeded [`Rng`]. Nothing here touches DPDK, so all of it
//! is unit-tested on plain byte slices.
//!
//! # Frames
//!
//! Every frame is Ethernet II + IPv4 (no options) or IPv6 (no extension headers) + TCP (20-byte
//! header, no options) or UDP, towards the profile's VIP and port, with valid IPv4 header,
//! TCP and UDP checksums. Flow `i` (0 ≤ i < [`Profile::flows`]) has source host `i % 256`
//! (last octet of `198.18.0.0/24`, or the low byte of `2001:2::/64`: the RFC 2544 / 5180
//! benchmarking ranges) and source port `1024 + i / 256`, so every flow has its own 5-tuple.
//! It goes to VIP number `i % vips` ([`Profile::vips`]): the profile's VIP plus that number,
//! added to the address's low 32 bits without carry beyond them (so `10.90.0.100` with 300
//! VIPs spans `10.90.0.100` .. `10.90.1.143`).
//!
//! The first [`STAMP_LEN`] bytes of the L4 payload carry the low 48 bits of the TSC when the
//! frame was built (big-endian), so the sink can compute the latency of whatever comes back,
//! whichever mode rewrote the headers (DSR and NAT leave the payload alone; [`read_stamp`]
//! looks through an IP-in-IP or GUE outer header, so encap mode is measured the same way).
//! 48 bits of a 2–4 GHz TSC wrap after about a day; differences are taken modulo 2^48.
//!
//! Frame length: [`Profile::frame_len`] bytes without the FCS (60 for a 64-byte frame on the
//! wire), raised to the smallest length that holds the headers and the stamp when it is too
//! short (IPv6 + TCP needs 80). The IP length fields cover everything after the Ethernet header.
//!
//! # Speed
//!
//! [`Templates::write`] copies a prebuilt frame and patches the source address, source port,
//! destination address (low 32 bits), TCP flags and stamp; the checksums are finished from precomputed one's-complement partial
//! sums (RFC 1071), so a frame costs a 60-byte copy and a dozen additions.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Bytes of TX timestamp at the start of the L4 payload.
pub const STAMP_LEN: usize = 6;

/// Mask of the timestamp's 48 bits.
pub const STAMP_MASK: u64 = (1 << 48) - 1;

/// The most flows a profile can have (256 hosts × 64 512 ports).
pub const MAX_FLOWS: u32 = 256 * 64_512;

/// The most VIPs a profile can spread its flows over.
pub const MAX_VIPS: u32 = 65_536;

/// The UDP port [`read_stamp`] takes for GUE (IANA's, and the dataplane's default).
pub const GUE_PORT: u16 = 6080;

/// Largest frame (without FCS): a standard 1500-byte MTU.
pub const MAX_FRAME_LEN: usize = 1514;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_LEN: usize = 20;
const UDP_LEN: usize = 8;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6: u8 = 41;
const GUE_LEN: usize = 4;

/// The first source address of IPv4 flows (RFC 2544 benchmarking range).
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// The first source address of IPv6 flows (RFC 5180 benchmarking range).
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0);

/// What traffic to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Frame length without FCS (60 = 64 bytes on the wire).
    pub frame_len: usize,
    /// Distinct flows (5-tuples), 1 ..= [`MAX_FLOWS`].
    pub flows: u32,
    /// VIPs, 1 ..= [`MAX_VIPS`]: flow `i` goes to `vip4` (or `vip6`) + `i % vips`.
    pub vips: u32,
    /// IPv4 VIP (the first one).
    pub vip4: Ipv4Addr,
    /// IPv6 VIP (the first one; needed when `ipv6_permille` > 0).
    pub vip6: Option<Ipv6Addr>,
    /// Destination (service) port.
    pub port: u16,
    /// Destination MAC (the forwarder's port).
    pub dst_mac: [u8; 6],
    /// Source MAC (the generator's port).
    pub src_mac: [u8; 6],
    /// Share of TCP packets with SYN (the rest carry ACK), in per mille.
    pub syn_permille: u16,
    /// Share of UDP packets, in per mille.
    pub udp_permille: u16,
    /// Share of IPv6 packets, in per mille.
    pub ipv6_permille: u16,
}

/// Why a profile was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// `flows` is 0 or above [`MAX_FLOWS`].
    #[error("flows must be 1..={MAX_FLOWS}, not {0}")]
    Flows(u32),
    /// `vips` is 0 or above [`MAX_VIPS`].
    #[error("vips must be 1..={MAX_VIPS}, not {0}")]
    Vips(u32),
    /// `frame_len` is above [`MAX_FRAME_LEN`].
    #[error("frame length {0} is above {MAX_FRAME_LEN} bytes")]
    FrameLen(usize),
    /// A share is above 1000 per mille.
    #[error("{0} share above 100 %")]
    Share(&'static str),
    /// IPv6 traffic was asked for without an IPv6 VIP.
    #[error("an IPv6 share needs an IPv6 VIP")]
    NoVip6,
}

/// One frame's variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kind {
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// UDP (else TCP).
    pub udp: bool,
    /// TCP SYN (else ACK); ignored for UDP.
    pub syn: bool,
}

/// Source host index and source port of flow `flow`.
#[inline]
pub fn flow_source(flow: u32) -> (u8, u16) {
    let host = flow.to_le_bytes()[0];
    let port = u16::try_from(1024 + flow / 256).unwrap_or(u16::MAX);
    (host, port)
}

/// One's-complement sum of big-endian 16-bit words (an odd last byte is padded with zero).
fn sum_words(bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    let mut s: u32 = chunks
        .by_ref()
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        s += u32::from(*last) << 8;
    }
    s
}

/// Folds a 32-bit sum to 16 bits and complements it.
#[inline]
fn finish(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    let [_, _, hi, lo] = s.to_be_bytes();
    !u16::from_be_bytes([hi, lo])
}

/// One prebuilt frame with the variable fields zeroed and the partial checksums they leave.
#[derive(Debug, Clone)]
struct Template {
    bytes: Vec<u8>,
    /// Offset of the IP source address.
    src: usize,
    /// Offset of the low 32 bits of the IP destination address (the VIP number is added there).
    dst_low: usize,
    /// The first VIP's low 32 bits.
    vip_low: u32,
    /// Offset of the L4 header.
    l4: usize,
    /// Offset of the L4 checksum.
    l4_csum: usize,
    /// One's-complement sum of the IPv4 header with the source, the destination and the
    /// checksum zeroed (IPv4 only).
    ip_sum: u32,
    /// Sum of pseudo-header + L4 header + payload with the variable fields (the destination's
    /// low 32 bits included) zeroed.
    l4_sum: u32,
    udp: bool,
}

impl Template {
    fn new(p: &Profile, kind: Kind) -> Template {
        let ip_len = if kind.ipv6 { IPV6_LEN } else { IPV4_LEN };
        let l4_hdr = if kind.udp { UDP_LEN } else { TCP_LEN };
        let len = p.frame_len.max(ETH_LEN + ip_len + l4_hdr + STAMP_LEN);
        let mut b = vec![0u8; len];
        b[..6].copy_from_slice(&p.dst_mac);
        b[6..12].copy_from_slice(&p.src_mac);
        let l3_len = len - ETH_LEN;
        let l4 = ETH_LEN + ip_len;
        let l4_len = len - l4;
        let proto = if kind.udp { PROTO_UDP } else { PROTO_TCP };
        // Lengths fit: len ≤ MAX_FRAME_LEN (checked in Templates::new).
        let l3_len16 = u16::try_from(l3_len).unwrap_or(u16::MAX);
        let l4_len16 = u16::try_from(l4_len).unwrap_or(u16::MAX);
        let src;
        let dst_low;
        let vip_low;
        let mut ip_sum = 0;
        let mut pseudo;
        // The destination's low 32 bits are left zero while the sums are taken and written
        // per frame (the first VIP plus the flow's VIP number).
        if kind.ipv6 {
            b[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let ip = &mut b[ETH_LEN..l4];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&l4_len16.to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            // Source: CLIENT6 with the low byte patched per flow.
            ip[8..24].copy_from_slice(&CLIENT6.octets());
            let vip = p.vip6.unwrap_or(Ipv6Addr::UNSPECIFIED).octets();
            ip[24..36].copy_from_slice(&vip[..12]);
            vip_low = u32::from_be_bytes([vip[12], vip[13], vip[14], vip[15]]);
            src = ETH_LEN + 8;
            dst_low = ETH_LEN + 36;
            pseudo = sum_words(&ip[8..40]);
        } else {
            b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let ip = &mut b[ETH_LEN..l4];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&l3_len16.to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&CLIENT4.octets());
            vip_low = p.vip4.to_bits();
            src = ETH_LEN + 12;
            dst_low = ETH_LEN + 16;
            ip_sum = sum_words(ip);
            pseudo = sum_words(&ip[12..20]);
        }
        b[dst_low..dst_low + 4].copy_from_slice(&vip_low.to_be_bytes());
        pseudo += u32::from(proto) + u32::from(l4_len16);
        let seg = &mut b[l4..];
        seg[2..4].copy_from_slice(&p.port.to_be_bytes());
        let l4_csum = if kind.udp {
            seg[4..6].copy_from_slice(&l4_len16.to_be_bytes());
            l4 + 6
        } else {
            seg[4..8].copy_from_slice(&1u32.to_be_bytes()); // seq
            seg[8..12].copy_from_slice(&1u32.to_be_bytes()); // ack
            seg[12] = 0x50; // data offset 5, flags patched per frame
            seg[14..16].copy_from_slice(&0xffffu16.to_be_bytes()); // window
            l4 + 16
        };
        let l4_sum = pseudo + sum_words(seg);
        Template {
            bytes: b,
            src,
            dst_low,
            vip_low,
            l4,
            l4_csum,
            ip_sum,
            l4_sum,
            udp: kind.udp,
        }
    }
}

/// The four prebuilt frames of a profile (IPv4/IPv6 × TCP/UDP).
#[derive(Debug, Clone)]
pub struct Templates {
    t: [Template; 4],
    flows: u32,
    vips: u32,
}

impl Templates {
    /// Builds the templates.
    ///
    /// # Errors
    /// [`ProfileError`] when the profile is out of range.
    pub fn new(p: &Profile) -> Result<Templates, ProfileError> {
        if p.flows == 0 || p.flows > MAX_FLOWS {
            return Err(ProfileError::Flows(p.flows));
        }
        if p.vips == 0 || p.vips > MAX_VIPS {
            return Err(ProfileError::Vips(p.vips));
        }
        if p.frame_len > MAX_FRAME_LEN {
            return Err(ProfileError::FrameLen(p.frame_len));
        }
        for (name, v) in [
            ("SYN", p.syn_permille),
            ("UDP", p.udp_permille),
            ("IPv6", p.ipv6_permille),
        ] {
            if v > 1000 {
                return Err(ProfileError::Share(name));
            }
        }
        if p.ipv6_permille > 0 && p.vip6.is_none() {
            return Err(ProfileError::NoVip6);
        }
        let k = |ipv6, udp| Kind {
            ipv6,
            udp,
            syn: false,
        };
        Ok(Templates {
            t: [
                Template::new(p, k(false, false)),
                Template::new(p, k(false, true)),
                Template::new(p, k(true, false)),
                Template::new(p, k(true, true)),
            ],
            flows: p.flows,
            vips: p.vips,
        })
    }

    /// Length of the frames of `kind`.
    #[inline]
    pub fn len(&self, kind: Kind) -> usize {
        self.template(kind).bytes.len()
    }

    /// The longest frame any kind produces.
    pub fn max_len(&self) -> usize {
        self.t.iter().map(|t| t.bytes.len()).max().unwrap_or(0)
    }

    #[inline]
    fn template(&self, kind: Kind) -> &Template {
        &self.t[usize::from(kind.ipv6) * 2 + usize::from(kind.udp)]
    }

    /// Writes the frame of flow `flow % flows`, variant `kind`, stamped with the low 48 bits
    /// of `stamp`, into the start of `out`; returns its length ([`Templates::len`]).
    ///
    /// # Panics
    /// If `out` is shorter than [`Templates::len`] of `kind`.
    #[inline]
    pub fn write(&self, out: &mut [u8], flow: u32, kind: Kind, stamp: u64) -> usize {
        let t = self.template(kind);
        let len = t.bytes.len();
        let f = &mut out[..len];
        f.copy_from_slice(&t.bytes);
        let flow = flow % self.flows;
        let (host, port) = flow_source(flow);
        // The source address differs from the template in its last byte only.
        let host_off = t.src + if kind.ipv6 { 15 } else { 3 };
        f[host_off] = host;
        let host_word = u32::from(host); // the low byte of a 16-bit word
        let dst = t.vip_low.wrapping_add(flow % self.vips);
        f[t.dst_low..t.dst_low + 4].copy_from_slice(&dst.to_be_bytes());
        let dst_words = (dst >> 16) + (dst & 0xffff);
        f[t.l4..t.l4 + 2].copy_from_slice(&port.to_be_bytes());
        let stamp = (stamp & STAMP_MASK).to_be_bytes();
        let pay = t.l4 + if t.udp { UDP_LEN } else { TCP_LEN };
        f[pay..pay + STAMP_LEN].copy_from_slice(&stamp[2..]);
        let mut s = t.l4_sum + host_word + dst_words + u32::from(port) + sum_words(&stamp[2..]);
        if !t.udp {
            let flags = if kind.syn { TCP_SYN } else { TCP_ACK };
            f[t.l4 + 13] = flags;
            s += u32::from(flags);
        }
        let mut c = finish(s);
        if t.udp && c == 0 {
            c = 0xffff; // RFC 768: a computed zero is sent as all ones
        }
        f[t.l4_csum..t.l4_csum + 2].copy_from_slice(&c.to_be_bytes());
        if !kind.ipv6 {
            let ip = finish(t.ip_sum + host_word + dst_words);
            f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&ip.to_be_bytes());
        }
        len
    }
}

/// A frame built from scratch, for tests and one-off use: [`Templates::write`] into a new
/// `Vec`.
///
/// # Errors
/// [`ProfileError`] when the profile is out of range.
pub fn build_frame(
    p: &Profile,
    flow: u32,
    kind: Kind,
    stamp: u64,
) -> Result<Vec<u8>, ProfileError> {
    let t = Templates::new(p)?;
    let mut out = vec![0u8; t.len(kind)];
    t.write(&mut out, flow, kind, stamp);
    Ok(out)
}

/// The 48-bit TX stamp of a received frame: Ethernet II (an 802.1Q tag is skipped), IPv4 (any
/// IHL) or IPv6 (TCP or UDP directly after the fixed header), TCP (any data offset) or UDP.
/// One outer encapsulation header is looked through: IP-in-IP (IPv4 protocol / IPv6 next
/// header 4 or 41) and GUE variant 0 (UDP to [`GUE_PORT`], any extension length, inner
/// protocol 4 or 41). `None` for anything else or a frame too short to hold the stamp.
pub fn read_stamp(frame: &[u8]) -> Option<u64> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    off += 2;
    if ethertype == 0x8100 {
        ethertype = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
        off += 4;
    }
    let mut ipv6 = match ethertype {
        0x0800 => false,
        0x86dd => true,
        _ => return None,
    };
    // The outer header, then at most one inner one.
    for depth in 0..2 {
        let (proto, l4) = if ipv6 {
            (*frame.get(off + 6)?, off + IPV6_LEN)
        } else {
            let ihl = usize::from(*frame.get(off)? & 0x0f) * 4;
            (*frame.get(off + 9)?, off + ihl)
        };
        let inner = match proto {
            PROTO_IPIP | PROTO_IPV6 if depth == 0 => Some((proto == PROTO_IPV6, l4)),
            PROTO_UDP
                if depth == 0
                    && u16::from_be_bytes([*frame.get(l4 + 2)?, *frame.get(l4 + 3)?])
                        == GUE_PORT =>
            {
                let gue = l4 + UDP_LEN;
                let (b0, next) = (*frame.get(gue)?, *frame.get(gue + 1)?);
                // Version 0, not a control message, inner IPv4 or IPv6.
                if b0 & 0xe0 != 0 || !matches!(next, PROTO_IPIP | PROTO_IPV6) {
                    return None;
                }
                Some((
                    next == PROTO_IPV6,
                    gue + GUE_LEN + usize::from(b0 & 0x1f) * 4,
                ))
            }
            _ => None,
        };
        if let Some((v6, at)) = inner {
            ipv6 = v6;
            off = at;
            continue;
        }
        let pay = match proto {
            PROTO_TCP => l4 + usize::from(*frame.get(l4 + 12)? >> 4) * 4,
            PROTO_UDP => l4 + UDP_LEN,
            _ => return None,
        };
        let s = frame.get(pay..pay + STAMP_LEN)?;
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(s);
        return Some(u64::from_be_bytes(b));
    }
    None
}

/// Ticks from a 48-bit stamp to a later 48-bit TSC reading (modulo 2^48).
#[inline]
pub fn stamp_age(stamp: u64, now: u64) -> u64 {
    now.wrapping_sub(stamp) & STAMP_MASK
}

/// xorshift64*: a small seeded generator for the traffic mix (not for anything secret).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next value.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `permille` / 1000.
    #[inline]
    pub fn chance(&mut self, permille: u16) -> bool {
        permille > 0 && (self.next_u64() >> 32) % 1000 < u64::from(permille)
    }
}

/// Sub-buckets per power of two (about 3 % resolution).
const SUB: usize = 32;
const SUB_BITS: u32 = 5;
const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

/// A log-linear histogram of `u64` values (nanoseconds): exact below 32, then 32 buckets per
/// power of two. Fixed size, no allocation after creation.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return usize::try_from(v).unwrap_or(0);
        }
        let e = 63 - v.leading_zeros(); // ≥ SUB_BITS
        let m = usize::try_from(v >> (e - SUB_BITS)).unwrap_or(SUB) - SUB; // 0..SUB
        SUB + (e - SUB_BITS) as usize * SUB + m
    }

    /// The smallest value that falls into bucket `i`.
    fn lower(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let e = (i - SUB) / SUB; // octave above 2^SUB_BITS
        let m = (i - SUB) % SUB + SUB;
        (m as u64) << e
    }

    /// Records one value.
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0.0–1.0): the lower bound of the bucket holding it, so at
    /// most about 3 % below the true value. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        // Rank of the wanted value, 1-based; `as` saturates, and q is clamped.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::lower(i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    fn profile() -> Profile {
        Profile {
            frame_len: 60,
            flows: 1000,
            vips: 1,
            vip4: Ipv4Addr::new(10, 90, 0, 100),
            vip6: Some("fd90::100".parse().expect("v6")),
            port: 8080,
            dst_mac: [2, 0, 0, 0, 1, 1],
            src_mac: [2, 0, 0, 0, 2, 2],
            syn_permille: 100,
            udp_permille: 0,
            ipv6_permille: 0,
        }
    }

    /// Parses `f` with etherparse and checks every field the generator sets, both checksums
    /// and the stamp.
    fn check(p: &Profile, f: &[u8], flow: u32, kind: Kind, stamp: u64) {
        let pkt = SlicedPacket::from_ethernet(f).expect("parses");
        let eth = pkt.link.as_ref().and_then(|l| l.to_header()).expect("eth");
        let eth = eth.ethernet2().expect("Ethernet II");
        assert_eq!(eth.destination, p.dst_mac);
        assert_eq!(eth.source, p.src_mac);
        let (host, sport) = flow_source(flow);
        let vip_no = flow % p.vips;
        // (source, destination) as raw bytes, for the pseudo-header.
        let (src, dst): (Vec<u8>, Vec<u8>) = match pkt.net.as_ref().expect("ip") {
            NetSlice::Ipv4(ip) => {
                assert!(!kind.ipv6);
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
                assert_eq!(
                    h.destination,
                    p.vip4.to_bits().wrapping_add(vip_no).to_be_bytes()
                );
                assert_eq!(h.source, [198, 18, 0, host]);
                assert_eq!(usize::from(h.total_len), f.len() - 14);
                (h.source.to_vec(), h.destination.to_vec())
            }
            NetSlice::Ipv6(ip) => {
                assert!(kind.ipv6);
                let h = ip.header().to_header();
                // The VIP number is added to the low 32 bits, without carry beyond them.
                let mut want = p.vip6.expect("v6").octets();
                let low = u32::from_be_bytes([want[12], want[13], want[14], want[15]]);
                want[12..].copy_from_slice(&low.wrapping_add(vip_no).to_be_bytes());
                assert_eq!(h.destination, want);
                let mut want = CLIENT6.octets();
                want[15] = host;
                assert_eq!(h.source, want);
                assert_eq!(usize::from(h.payload_length), f.len() - 54);
                (h.source.to_vec(), h.destination.to_vec())
            }
            NetSlice::Arp(_) => panic!("not IP"),
        };
        let a4 = |v: &[u8]| <[u8; 4]>::try_from(v).expect("4 bytes");
        let a16 = |v: &[u8]| <[u8; 16]>::try_from(v).expect("16 bytes");
        match pkt.transport.as_ref().expect("l4") {
            TransportSlice::Tcp(t) => {
                assert!(!kind.udp);
                assert_eq!(t.source_port(), sport);
                assert_eq!(t.destination_port(), p.port);
                assert_eq!(t.syn(), kind.syn);
                assert_eq!(t.ack(), !kind.syn);
                let want = if kind.ipv6 {
                    t.calc_checksum_ipv6(a16(&src), a16(&dst))
                } else {
                    t.calc_checksum_ipv4(a4(&src), a4(&dst))
                }
                .expect("checksum");
                assert_eq!(t.checksum(), want, "TCP checksum");
            }
            TransportSlice::Udp(u) => {
                assert!(kind.udp);
                assert_eq!(u.source_port(), sport);
                assert_eq!(u.destination_port(), p.port);
                let h = u.to_header();
                let want = if kind.ipv6 {
                    h.calc_checksum_ipv6_raw(a16(&src), a16(&dst), u.payload())
                } else {
                    h.calc_checksum_ipv4_raw(a4(&src), a4(&dst), u.payload())
                }
                .expect("checksum");
                assert_eq!(u.checksum(), want, "UDP checksum");
            }
            other => panic!("unexpected transport {other:?}"),
        }
        assert_eq!(read_stamp(f), Some(stamp & STAMP_MASK));
    }

    #[test]
    fn frames_parse_back_with_valid_checksums() {
        let p = Profile {
            ipv6_permille: 500,
            ..profile()
        };
        let t = Templates::new(&p).expect("valid");
        let mut buf = [0u8; MAX_FRAME_LEN];
        for (flow, ipv6, udp, syn, stamp) in [
            (0, false, false, true, 0),
            (1, false, false, false, 0x1234_5678_9abc),
            (999, false, true, false, u64::MAX),
            (257, true, false, true, 42),
            (513, true, true, false, 0xffff_0000_ffff),
        ] {
            let kind = Kind { ipv6, udp, syn };
            let n = t.write(&mut buf, flow, kind, stamp);
            check(&p, &buf[..n], flow, kind, stamp);
            assert_eq!(build_frame(&p, flow, kind, stamp).expect("ok"), &buf[..n]);
        }
    }

    #[test]
    fn lengths_follow_the_profile() {
        let p = Profile {
            ipv6_permille: 1000,
            ..profile()
        };
        let t = Templates::new(&p).expect("valid");
        let k = |ipv6, udp| Kind {
            ipv6,
            udp,
            syn: false,
        };
        assert_eq!(t.len(k(false, false)), 60); // 64 on the wire
        assert_eq!(t.len(k(false, true)), 60);
        assert_eq!(t.len(k(true, false)), 80); // IPv6 + TCP + stamp
        assert_eq!(t.len(k(true, true)), 68);
        let big = Templates::new(&Profile {
            frame_len: 1514,
            ..p
        })
        .expect("valid");
        let mut buf = vec![0u8; 1514];
        for kind in [k(false, false), k(true, true)] {
            assert_eq!(big.write(&mut buf, 7, kind, 9), 1514);
            check(&profile(), &buf, 7, kind, 9);
        }
    }

    #[test]
    fn every_flow_has_its_own_tuple() {
        let mut seen = std::collections::HashSet::new();
        for f in (0..MAX_FLOWS).step_by(997).chain([MAX_FLOWS - 1]) {
            assert!(seen.insert(flow_source(f)), "flow {f}");
        }
        assert_eq!(flow_source(MAX_FLOWS - 1), (255, u16::MAX));
        assert!(
            Templates::new(&Profile {
                flows: MAX_FLOWS + 1,
                ..profile()
            })
            .is_err()
        );
        assert_eq!(
            Templates::new(&Profile {
                ipv6_permille: 1,
                vip6: None,
                ..profile()
            })
            .err(),
            Some(ProfileError::NoVip6)
        );
    }

    #[test]
    fn flows_spread_over_consecutive_vips_with_valid_checksums() {
        let p = Profile {
            vips: 300,
            vip4: Ipv4Addr::new(10, 90, 0, 250),
            vip6: Some("fd90::ffff:fffe".parse().expect("v6")),
            ipv6_permille: 500,
            ..profile()
        };
        let t = Templates::new(&p).expect("valid");
        let mut buf = [0u8; MAX_FRAME_LEN];
        for flow in [0, 1, 5, 299, 300, 301, 999] {
            for (ipv6, udp) in [(false, false), (false, true), (true, false), (true, true)] {
                let kind = Kind {
                    ipv6,
                    udp,
                    syn: false,
                };
                let n = t.write(&mut buf, flow, kind, 0xabcd_ef01);
                check(&p, &buf[..n], flow, kind, 0xabcd_ef01);
            }
        }
        // VIP 6 of 10.90.0.250 crosses into the next /24.
        let f = build_frame(&p, 6, Kind::default(), 1).expect("ok");
        assert_eq!(f[30..34], [10, 90, 1, 0]);
        for vips in [0, MAX_VIPS + 1] {
            assert_eq!(
                Templates::new(&Profile { vips, ..profile() }).err(),
                Some(ProfileError::Vips(vips))
            );
        }
    }

    /// `frame` with `outer` (an IP header, plus UDP + GUE) put between its Ethernet header
    /// and its IP packet, the EtherType set to the outer family.
    fn wrap(frame: &[u8], outer: &[u8], outer_v6: bool) -> Vec<u8> {
        let mut out = frame[..14].to_vec();
        out[12..14].copy_from_slice(if outer_v6 {
            &[0x86, 0xdd]
        } else {
            &[0x08, 0x00]
        });
        out.extend_from_slice(outer);
        out.extend_from_slice(&frame[14..]);
        out
    }

    fn outer4(proto: u8) -> Vec<u8> {
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[9] = proto;
        ip
    }

    fn outer6(next: u8) -> Vec<u8> {
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[6] = next;
        ip
    }

    fn udp_gue(dst_port: u16, hlen: u8, next: u8) -> Vec<u8> {
        let mut h = vec![0u8; 8 + 4 + usize::from(hlen) * 4];
        h[0..2].copy_from_slice(&0xc123u16.to_be_bytes());
        h[2..4].copy_from_slice(&dst_port.to_be_bytes());
        h[8] = hlen;
        h[9] = next;
        h
    }

    #[test]
    fn stamps_are_read_through_ipip_and_gue() {
        let p = Profile {
            ipv6_permille: 1000,
            ..profile()
        };
        let v4 = build_frame(&p, 3, Kind::default(), 0x1122_3344_5566).expect("v4");
        let v6 = build_frame(
            &p,
            3,
            Kind {
                ipv6: true,
                udp: true,
                syn: false,
            },
            0x77,
        )
        .expect("v6");
        let cat = |a: Vec<u8>, b: Vec<u8>| [a, b].concat();
        for (frame, stamp) in [(&v4, 0x1122_3344_5566), (&v6, 0x77)] {
            let inner = if frame == &v4 { PROTO_IPIP } else { PROTO_IPV6 };
            for (outer, outer_v6) in [
                (outer4(inner), false),
                (outer6(inner), true),
                (cat(outer4(PROTO_UDP), udp_gue(GUE_PORT, 0, inner)), false),
                (cat(outer6(PROTO_UDP), udp_gue(GUE_PORT, 2, inner)), true),
            ] {
                let f = wrap(frame, &outer, outer_v6);
                assert_eq!(read_stamp(&f), Some(stamp), "outer {outer:?}");
            }
        }
        // Not GUE: another UDP port is read as plain UDP (its payload is the GUE header);
        // a GUE control message, another inner protocol, and two levels of IP-in-IP are not
        // read at all.
        let other_port = wrap(&v4, &cat(outer4(PROTO_UDP), udp_gue(4789, 0, 4)), false);
        assert_ne!(read_stamp(&other_port), Some(0x1122_3344_5566));
        let mut control = cat(outer4(PROTO_UDP), udp_gue(GUE_PORT, 0, PROTO_IPIP));
        control[28] |= 0x20;
        assert_eq!(read_stamp(&wrap(&v4, &control, false)), None);
        let gre = cat(outer4(PROTO_UDP), udp_gue(GUE_PORT, 0, 47));
        assert_eq!(read_stamp(&wrap(&v4, &gre, false)), None);
        let twice = wrap(
            &wrap(&v4, &outer4(PROTO_IPIP), false),
            &outer4(PROTO_IPIP),
            false,
        );
        assert_eq!(read_stamp(&twice), None);
        assert_eq!(
            read_stamp(&wrap(&v4, &outer4(PROTO_IPIP), false)[..40]),
            None
        );
    }

    #[test]
    fn stamps_wrap_modulo_2_pow_48() {
        assert_eq!(stamp_age(STAMP_MASK, 5), 6);
        assert_eq!(stamp_age(100, 150), 50);
        assert_eq!(read_stamp(&[0u8; 10]), None);
    }

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 5000u64), (0.99, 9900), (0.0, 1), (1.0, 10_000)] {
            let got = h.quantile(q).expect("non-empty");
            assert!(
                got <= want && got * 100 >= want * 96,
                "q{q}: {got} vs {want}"
            );
        }
        for v in [0, 31, 32, 33, 64, 1 << 20, u64::MAX] {
            let i = Histogram::index(v);
            assert!(Histogram::lower(i) <= v, "{v}");
            assert!(i + 1 == BUCKETS || Histogram::lower(i + 1) > v, "{v}");
        }
    }
}
