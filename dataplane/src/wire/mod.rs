//! Packet wire formats: zero-copy views over byte slices, in smoltcp's style.
//!
//! Every header type has a `Packet<T: AsRef<[u8]>>` view (`Frame` for Ethernet) over a byte
//! buffer, with:
//!
//! - `new_unchecked` (a `const fn` that only wraps the buffer),
//! - `check_len`, which makes sure every getter's byte range is inside the buffer, and
//!   `new_checked`, which wraps and then runs `check_len`,
//! - `#[inline]` getters that read the header's `field` byte ranges with `from_be_bytes`,
//! - setters when `T: AsMut<[u8]>` too, `payload()` / `payload_mut()` and `into_inner()`.
//!
//! Where the dataplane emits a header (ARP reply, NDP advertisement, IPv4/IPv6 headers and a
//! UDP+GUE header for encap, ICMP), a `Repr` struct has `parse`, `buffer_len` and `emit`.
//! It is all safe Rust, with no casting of packet memory to structs (firecracker's
//! `dumbo/pdu/bytes.rs` explains why offsets beat casts).
//!
//! # The panic contract
//!
//! A view created with `new_unchecked` does not check anything, and its getters and setters
//! may panic on a short buffer. After `new_checked` succeeds (or `check_len` returns `Ok`),
//! **no accessor of that view panics**, whatever the bytes are, as long as the length fields
//! are not rewritten through the setters afterwards. Setters and `Repr::emit` may panic when
//! the buffer is too small for what they write; their docs say so. `Repr::parse` never panics.
//! [`parse_frame`] never panics. The proptests and the fuzz target (`fuzz/`) exercise exactly
//! this.
//!
//! # Errors
//!
//! Per-header parsing returns [`Error`], one byte, `Copy`. The hot-path [`parse_frame`] returns
//! [`FrameError`], a `#[repr(u8)]` reason that indexes drop counters. Neither allocates.
//!
//! # Hot path
//!
//! [`parse_frame`] goes once over Ethernet, up to two VLAN tags, ARP / IPv4 / IPv6 (extension
//! headers included) and TCP / UDP / ICMP / ICMPv6, and returns a `Copy` summary,
//! [`ParsedFrame`]. It verifies the IPv4 header checksum (one sum over at most 60 bytes) but
//! no L4 checksum.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gue;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vlan;

// The fuzz target's entry point lives here, next to the parsers it exercises (linkerd's
// `transport-header` pattern); tests use it too. It is compiled only for tests and under
// `cargo fuzz` (`--cfg fuzzing`): see the inner `cfg` at the top of `fuzz.rs`.
pub mod fuzz;

#[cfg(test)]
mod tests;

use core::fmt;
use std::net::{IpAddr, Ipv4Addr};

pub use ethernet::{EtherType, EthernetAddress};
pub use tcp::TcpFlags;

/// Why a header view or `Repr` could not be built. One byte, `Copy`, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Error {
    /// The buffer is shorter than the header, or than a length field in it says.
    Truncated,
    /// A field holds a value the format forbids: a bad version, a length below its minimum, a
    /// wrong checksum, a misplaced extension header.
    Malformed,
    /// Well-formed, but a variant this module does not handle (e.g. non-Ethernet ARP).
    Unsupported,
    /// A bounded walk (the IPv6 extension-header chain) hit its limit.
    LimitExceeded,
}

impl Error {
    /// A static name for the error.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::Malformed => "malformed",
            Error::Unsupported => "unsupported",
            Error::LimitExceeded => "limit exceeded",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}

/// Result of the per-header parsers.
pub type Result<T> = core::result::Result<T, Error>;

/// An IP protocol / IPv6 next-header number. A newtype rather than an enum so that every
/// value round-trips and matching on the constants is an integer compare.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 hop-by-hop options, 0.
    pub const HOP_BY_HOP: Self = Self(0);
    /// ICMP, 1.
    pub const ICMP: Self = Self(1);
    /// IPv4 encapsulation (IP-in-IP), 4.
    pub const IPIP: Self = Self(4);
    /// TCP, 6.
    pub const TCP: Self = Self(6);
    /// UDP, 17.
    pub const UDP: Self = Self(17);
    /// IPv6 encapsulation, 41.
    pub const IPV6: Self = Self(41);
    /// IPv6 routing header, 43.
    pub const IPV6_ROUTE: Self = Self(43);
    /// IPv6 fragment header, 44.
    pub const IPV6_FRAG: Self = Self(44);
    /// GRE, 47.
    pub const GRE: Self = Self(47);
    /// ESP, 50.
    pub const ESP: Self = Self(50);
    /// AH, 51.
    pub const AH: Self = Self(51);
    /// ICMPv6, 58.
    pub const ICMPV6: Self = Self(58);
    /// IPv6 no next header, 59.
    pub const IPV6_NO_NXT: Self = Self(59);
    /// IPv6 destination options, 60.
    pub const IPV6_OPTS: Self = Self(60);
}

/// Big-endian u16 at `at`. Callers index inside a range `check_len` covered.
#[inline]
pub(crate) fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

/// Big-endian u32 at `at`. Callers index inside a range `check_len` covered.
#[inline]
pub(crate) fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// A buffer length as a pseudo-header's 32-bit length (a packet buffer is far below 4 GiB).
#[inline]
pub(crate) fn len32(d: &[u8]) -> u32 {
    u32::try_from(d.len()).unwrap_or(u32::MAX)
}

// === parse_frame ===

/// Why [`parse_frame`] dropped a frame. `#[repr(u8)]`, dense from 0, so a worker can keep
/// `counters[reason as usize]`; [`FrameError::as_str`] gives the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameError {
    /// Shorter than an Ethernet header, or a VLAN tag cut short.
    Truncated = 0,
    /// ARP that is cut short or not Ethernet/IPv4.
    BadArp,
    /// IPv4 header cut short, version not 4, IHL < 5, or total length below the header or
    /// beyond the frame.
    BadIpv4Header,
    /// IPv4 header checksum wrong.
    BadIpv4Checksum,
    /// IPv6 header cut short, version not 6, or payload length beyond the frame.
    BadIpv6Header,
    /// An IPv6 extension header cut short, or hop-by-hop not first.
    BadIpv6ExtensionHeader,
    /// More than [`ipv6::MAX_EXT_HEADERS`] IPv6 extension headers.
    ExtensionChainTooLong,
    /// TCP / UDP / ICMP / ICMPv6 header cut short or with invalid lengths (TCP data offset
    /// < 5 or past the segment, UDP length < 8 or past the datagram, an NDP message shorter
    /// than its fixed part). A first fragment too short for its ports lands here too (the
    /// RFC 1858 tiny-fragment case).
    BadL4Header,
}

// The variants are dense from 0, so the last one fixes the count.
const _: () = assert!(FrameError::BadL4Header as usize + 1 == FrameError::COUNT);

impl FrameError {
    /// Number of variants: the length of a counter array indexed by `reason as usize`.
    pub const COUNT: usize = 8;

    /// Every variant, in discriminant order.
    pub const ALL: [FrameError; Self::COUNT] = [
        FrameError::Truncated,
        FrameError::BadArp,
        FrameError::BadIpv4Header,
        FrameError::BadIpv4Checksum,
        FrameError::BadIpv6Header,
        FrameError::BadIpv6ExtensionHeader,
        FrameError::ExtensionChainTooLong,
        FrameError::BadL4Header,
    ];

    /// The `snake_case` label exported with the drop counter.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            FrameError::Truncated => "truncated",
            FrameError::BadArp => "bad_arp",
            FrameError::BadIpv4Header => "bad_ipv4_header",
            FrameError::BadIpv4Checksum => "bad_ipv4_checksum",
            FrameError::BadIpv6Header => "bad_ipv6_header",
            FrameError::BadIpv6ExtensionHeader => "bad_ipv6_extension_header",
            FrameError::ExtensionChainTooLong => "ipv6_extension_chain_too_long",
            FrameError::BadL4Header => "bad_l4_header",
        }
    }

    /// The counter index, `self as usize`.
    #[inline]
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for FrameError {}

/// The network layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L3 {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// Ethernet/IPv4 ARP.
    Arp,
    /// Anything else (LLDP, MPLS, a third VLAN tag...): for the exception path, not an error.
    Other(EtherType),
}

/// Whether an IP packet is a fragment, and which kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FragmentInfo {
    /// A whole datagram (an IPv6 atomic fragment counts as whole).
    #[default]
    None,
    /// Offset 0 with more fragments: carries the L4 header, hence the ports.
    First,
    /// Offset > 0: no L4 header, ports are 0; hash on the 3-tuple.
    NonFirst,
}

/// ICMP / ICMPv6 header summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpInfo {
    /// Message type.
    pub msg_type: u8,
    /// Code.
    pub code: u8,
    /// The four "rest of header" bytes: ident and sequence number for echo, the next-hop MTU
    /// in the low 16 bits for ICMPv4 fragmentation-needed, the MTU for ICMPv6 packet-too-big.
    pub rest: u32,
}

impl IcmpInfo {
    /// Echo identifier (echo request/reply).
    #[inline]
    #[must_use]
    pub const fn echo_ident(&self) -> u16 {
        let b = self.rest.to_be_bytes();
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Echo sequence number (echo request/reply).
    #[inline]
    #[must_use]
    pub const fn echo_seq_no(&self) -> u16 {
        let b = self.rest.to_be_bytes();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// The MTU an ICMPv4 fragmentation-needed (type 3 code 4) or ICMPv6 packet-too-big
    /// (type 2) message reports, given which of the two protocols carried it.
    #[inline]
    #[must_use]
    pub const fn mtu(&self, proto: IpProtocol) -> Option<u32> {
        match (proto, self.msg_type, self.code) {
            (IpProtocol::ICMP, 3, icmpv4::CODE_FRAG_NEEDED) => Some(self.rest & 0xFFFF),
            (IpProtocol::ICMPV6, 2, _) => Some(self.rest),
            _ => None,
        }
    }
}

/// One frame, parsed once: what classification, conntrack and Maglev need. `Copy`, no
/// borrowed data; offsets point back into the frame for rewriting.
///
/// Fields that do not apply are zero: ports for non-TCP/UDP protocols and non-first
/// fragments, `tcp_flags` outside TCP, addresses for [`L3::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParsedFrame {
    /// Outermost VLAN id (the S-tag under QinQ), if tagged.
    pub vlan: Option<u16>,
    /// Inner VLAN id (the C-tag) of a double-tagged frame.
    pub inner_vlan: Option<u16>,
    /// Offset of the L3 header (14, 18 or 22).
    pub l3_offset: usize,
    /// The network layer.
    pub l3: L3,
    /// Offset of the L4 header (after IPv4 options or IPv6 extension headers). For a non-first
    /// fragment, the fragment data; for ARP and [`L3::Other`], equal to `l3_offset`.
    pub l4_offset: usize,
    /// Bytes from `l4_offset` to the end of the IP payload (Ethernet padding excluded).
    pub l4_len: u16,
    /// Upper-layer protocol (after extension headers; for an IPv6 non-first fragment, the
    /// fragment header's next header).
    pub proto: IpProtocol,
    /// Source address (ARP: sender protocol address).
    pub src: IpAddr,
    /// Destination address (ARP: target protocol address, the one being asked about).
    pub dst: IpAddr,
    /// TCP/UDP source port.
    pub src_port: u16,
    /// TCP/UDP destination port.
    pub dst_port: u16,
    /// TCP flags.
    pub tcp_flags: TcpFlags,
    /// Fragment kind.
    pub fragment: FragmentInfo,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// ICMP / ICMPv6 summary (not for non-first fragments).
    pub icmp: Option<IcmpInfo>,
}

impl ParsedFrame {
    /// The quoted packet of an ICMP / ICMPv6 error message (the bytes after its 8-byte
    /// header), for [`InnerFlow`]. `None` if this is not an unfragmented ICMP error or `frame`
    /// is not the frame this was parsed from.
    #[must_use]
    pub fn icmp_quote<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        let icmp = self.icmp?;
        let is_error = match self.l3 {
            L3::Ipv4 => icmpv4::Message(icmp.msg_type).is_error(),
            L3::Ipv6 => icmpv6::Message(icmp.msg_type).is_error(),
            L3::Arp | L3::Other(_) => false,
        };
        if !is_error || self.fragment != FragmentInfo::None {
            return None;
        }
        let end = self.l4_offset + usize::from(self.l4_len);
        frame.get(self.l4_offset + icmpv4::HEADER_LEN..end)
    }

    /// The flow of the packet an ICMP error quotes (fragmentation needed, packet too big...),
    /// so that the error follows that flow to its backend.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if this is not an ICMP error; otherwise what
    /// [`InnerFlow::parse_ipv4`] / [`InnerFlow::parse_ipv6`] return.
    pub fn inner_flow(&self, frame: &[u8]) -> Result<InnerFlow> {
        let quote = self.icmp_quote(frame).ok_or(Error::Unsupported)?;
        match self.l3 {
            L3::Ipv4 => InnerFlow::parse_ipv4(quote),
            _ => InnerFlow::parse_ipv6(quote),
        }
    }
}

/// The flow of a packet quoted inside an ICMP error (as sent: `src` is the original sender).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InnerFlow {
    /// Upper-layer protocol.
    pub proto: IpProtocol,
    /// Source address of the quoted packet.
    pub src: IpAddr,
    /// Destination address of the quoted packet.
    pub dst: IpAddr,
    /// Source port (TCP/UDP; 0 otherwise).
    pub src_port: u16,
    /// Destination port (TCP/UDP; 0 otherwise).
    pub dst_port: u16,
    /// Whether the quoted packet was a fragment.
    pub fragment: FragmentInfo,
}

impl InnerFlow {
    /// Reads an IPv4 header + the first L4 bytes quoted in an ICMPv4 error. The quote is
    /// usually shorter than its total length says, so only the header length is checked; the
    /// header checksum is not verified.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the header or the 4 port bytes are cut; [`Error::Malformed`] for
    /// a version other than 4 or an IHL below 5.
    pub fn parse_ipv4(quote: &[u8]) -> Result<Self> {
        if quote.len() < ipv4::HEADER_LEN {
            return Err(Error::Truncated);
        }
        // Only fixed-offset getters and `header_len` are used: the quote's total length
        // describes the original packet.
        let ip = ipv4::Packet::new_unchecked(quote);
        let header_len = usize::from(ip.header_len());
        if ip.version() != 4 || header_len < ipv4::HEADER_LEN {
            return Err(Error::Malformed);
        }
        let l4 = quote.get(header_len..).ok_or(Error::Truncated)?;
        let fragment = ipv4_fragment(ip.frag_offset(), ip.more_frags());
        let (src_port, dst_port) = quoted_ports(ip.next_header(), fragment, l4)?;
        Ok(Self {
            proto: ip.next_header(),
            src: IpAddr::V4(ip.src_addr()),
            dst: IpAddr::V4(ip.dst_addr()),
            src_port,
            dst_port,
            fragment,
        })
    }

    /// Reads an IPv6 header, its extension headers and the first L4 bytes quoted in an ICMPv6
    /// error. The payload length is not checked against the (shorter) quote.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the header, an extension header or the 4 port bytes are cut;
    /// [`Error::Malformed`] for a version other than 6 or a misplaced hop-by-hop header;
    /// [`Error::LimitExceeded`] for a too long chain.
    pub fn parse_ipv6(quote: &[u8]) -> Result<Self> {
        let rest = quote.get(ipv6::HEADER_LEN..).ok_or(Error::Truncated)?;
        let ip = ipv6::Packet::new_unchecked(quote);
        if ip.version() != 6 {
            return Err(Error::Malformed);
        }
        let ul = ipv6::walk_extension_headers(ip.next_header(), rest)?;
        let l4 = quote.get(ul.offset..).ok_or(Error::Truncated)?;
        let fragment = ipv6_fragment(ul.fragment);
        let (src_port, dst_port) = quoted_ports(ul.next_header, fragment, l4)?;
        Ok(Self {
            proto: ul.next_header,
            src: IpAddr::V6(ip.src_addr()),
            dst: IpAddr::V6(ip.dst_addr()),
            src_port,
            dst_port,
            fragment,
        })
    }
}

/// Ports of a quoted TCP/UDP header (only 8 bytes are guaranteed to be quoted).
#[inline]
fn quoted_ports(proto: IpProtocol, fragment: FragmentInfo, l4: &[u8]) -> Result<(u16, u16)> {
    match proto {
        IpProtocol::TCP | IpProtocol::UDP if fragment != FragmentInfo::NonFirst => match *l4 {
            [a, b, c, d, ..] => Ok((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))),
            _ => Err(Error::Truncated),
        },
        _ => Ok((0, 0)),
    }
}

#[inline]
const fn ipv4_fragment(offset: u16, more: bool) -> FragmentInfo {
    if offset != 0 {
        FragmentInfo::NonFirst
    } else if more {
        FragmentInfo::First
    } else {
        FragmentInfo::None
    }
}

#[inline]
const fn ipv6_fragment(fragment: Option<ipv6::Fragment>) -> FragmentInfo {
    match fragment {
        Some(f) => ipv4_fragment(f.offset, f.more_frags),
        None => FragmentInfo::None,
    }
}

/// Parses a frame once, Ethernet to L4.
///
/// Up to two VLAN tags are read (802.1Q, or an 802.1ad S-tag followed by a C-tag); a third
/// tag, like any EtherType other than IPv4, IPv6 and ARP, gives [`L3::Other`] rather than an
/// error, so that the caller can hand the frame to the exception path. L4 protocols other than
/// TCP, UDP, ICMP (over IPv4) and ICMPv6 (over IPv6) are not looked into.
///
/// For a first fragment only the fixed L4 header must be present (the UDP length and ICMPv6
/// type-specific lengths describe the whole datagram, so they are not checked); a non-first
/// fragment's L4 is not read at all.
///
/// # Errors
///
/// A [`FrameError`] naming the first layer that failed. Never panics, for any input.
#[inline]
pub fn parse_frame(frame: &[u8]) -> core::result::Result<ParsedFrame, FrameError> {
    match parse_ipv4_fast(frame) {
        Some(pf) => Ok(pf),
        None => parse_frame_layered(frame),
    }
}

/// The common case of [`parse_frame`] at fixed offsets: an untagged IPv4 frame without
/// options or fragmentation, carrying a whole TCP or UDP header, with a good header checksum.
/// `None` for any other frame (valid or not), which [`parse_frame_layered`] then parses;
/// `Some` only with exactly what that would return (checked on every input of the fuzz
/// target and the parser proptests, [`fuzz::parse_frame_and_getters`]).
///
/// One bounds check for the 54 bytes it reads, the checksum as five native-endian 32-bit
/// words (the one's-complement sum is byte-order independent and 0xFFFF reads the same either
/// way), and one write of the result: 10.5 ns against the layered parse's 19 (bench/RESULTS.md).
#[inline]
pub(crate) fn parse_ipv4_fast(frame: &[u8]) -> Option<ParsedFrame> {
    const L3_AT: usize = ethernet::HEADER_LEN;
    const L4_AT: usize = L3_AT + ipv4::HEADER_LEN;
    // Ethernet + IPv4 without options + the larger of the TCP and UDP fixed headers.
    let h: &[u8; L4_AT + tcp::HEADER_LEN] = frame.first_chunk()?;
    let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    if be16(12) != EtherType::IPV4.0 || h[L3_AT] != 0x45 {
        return None;
    }
    let total_len = be16(L3_AT + 2);
    let l4_len = usize::from(total_len).checked_sub(ipv4::HEADER_LEN)?;
    let l4_len16 = u16::try_from(l4_len).ok()?;
    // Non-zero offset or MF: a fragment (the DF and reserved bits do not matter).
    if be16(L3_AT + 6) & 0x3FFF != 0 || frame.len() < L3_AT + usize::from(total_len) {
        return None;
    }
    let word = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let sum = word(L3_AT) + word(L3_AT + 4) + word(L3_AT + 8) + word(L3_AT + 12) + word(L3_AT + 16);
    if checksum::fold(sum) != 0xFFFF {
        return None;
    }
    let proto = IpProtocol(h[L3_AT + 9]);
    let tcp_flags = match proto {
        // The data offset covers at least the fixed header and at most the segment.
        IpProtocol::TCP => {
            let data_offset = usize::from(h[L4_AT + 12] >> 4) * 4;
            if !(tcp::HEADER_LEN..=l4_len).contains(&data_offset) {
                return None;
            }
            TcpFlags(h[L4_AT + 13])
        }
        // The length field covers at least the header and at most the payload.
        IpProtocol::UDP => {
            if !(udp::HEADER_LEN..=l4_len).contains(&usize::from(be16(L4_AT + 4))) {
                return None;
            }
            TcpFlags(0)
        }
        _ => return None,
    };
    let addr = |i: usize| IpAddr::V4(Ipv4Addr::new(h[i], h[i + 1], h[i + 2], h[i + 3]));
    Some(ParsedFrame {
        vlan: None,
        inner_vlan: None,
        l3_offset: L3_AT,
        l3: L3::Ipv4,
        l4_offset: L4_AT,
        l4_len: l4_len16,
        proto,
        src: addr(L3_AT + 12),
        dst: addr(L3_AT + 16),
        src_port: be16(L4_AT),
        dst_port: be16(L4_AT + 2),
        tcp_flags,
        fragment: FragmentInfo::None,
        ttl: h[L3_AT + 8],
        icmp: None,
    })
}

/// [`parse_frame`] layer by layer: every frame it accepts, and the reason for every one it
/// refuses.
// `#[inline]` on a function this size is measured, not habit: called from another crate (a
// release build with thin LTO, hot cache), the fixtures averaged 7-9 ns per frame with it and
// 15-20 ns without (when this was all of `parse_frame`).
#[inline]
pub(crate) fn parse_frame_layered(frame: &[u8]) -> core::result::Result<ParsedFrame, FrameError> {
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| FrameError::Truncated)?;
    let mut ethertype = eth.ethertype();
    let mut offset = ethernet::HEADER_LEN;
    let mut vlan_ids = [None, None];
    for slot in &mut vlan_ids {
        if ethertype != EtherType::VLAN && ethertype != EtherType::QINQ {
            break;
        }
        let rest = frame.get(offset..).unwrap_or_default();
        let tag = vlan::Packet::new_checked(rest).map_err(|_| FrameError::Truncated)?;
        *slot = Some(tag.vlan_id());
        ethertype = tag.ethertype();
        offset += vlan::HEADER_LEN;
    }
    let mut pf = ParsedFrame {
        vlan: vlan_ids[0],
        inner_vlan: vlan_ids[1],
        l3_offset: offset,
        l3: L3::Other(ethertype),
        l4_offset: offset,
        l4_len: 0,
        proto: IpProtocol(0),
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        src_port: 0,
        dst_port: 0,
        tcp_flags: TcpFlags(0),
        fragment: FragmentInfo::None,
        ttl: 0,
        icmp: None,
    };
    let l3 = frame.get(offset..).unwrap_or_default();
    match ethertype {
        EtherType::IPV4 => parse_ipv4(l3, &mut pf)?,
        EtherType::IPV6 => parse_ipv6(l3, &mut pf)?,
        EtherType::ARP => parse_arp(l3, &mut pf)?,
        _ => {}
    }
    Ok(pf)
}

#[inline]
fn parse_arp(l3: &[u8], pf: &mut ParsedFrame) -> core::result::Result<(), FrameError> {
    let arp = arp::Packet::new_checked(l3).map_err(|_| FrameError::BadArp)?;
    if !arp.is_ethernet_ipv4() {
        return Err(FrameError::BadArp);
    }
    let addr = |b: &[u8]| match *b {
        [a, b, c, d] => Ok(IpAddr::V4(Ipv4Addr::new(a, b, c, d))),
        _ => Err(FrameError::BadArp),
    };
    pf.l3 = L3::Arp;
    pf.src = addr(arp.source_protocol_addr())?;
    pf.dst = addr(arp.target_protocol_addr())?;
    Ok(())
}

#[inline]
fn parse_ipv4(l3: &[u8], pf: &mut ParsedFrame) -> core::result::Result<(), FrameError> {
    let ip = ipv4::Packet::new_checked(l3).map_err(|_| FrameError::BadIpv4Header)?;
    if ip.version() != 4 {
        return Err(FrameError::BadIpv4Header);
    }
    if !ip.verify_checksum() {
        return Err(FrameError::BadIpv4Checksum);
    }
    let header_len = ip.header_len();
    pf.l3 = L3::Ipv4;
    pf.src = IpAddr::V4(ip.src_addr());
    pf.dst = IpAddr::V4(ip.dst_addr());
    pf.ttl = ip.ttl();
    pf.proto = ip.next_header();
    pf.fragment = ipv4_fragment(ip.frag_offset(), ip.more_frags());
    pf.l4_offset = pf.l3_offset + usize::from(header_len);
    // check_len: header_len <= total_len.
    pf.l4_len = ip.total_len() - u16::from(header_len);
    parse_l4(ip.payload(), IpProtocol::ICMP, pf)
}

#[inline]
fn parse_ipv6(l3: &[u8], pf: &mut ParsedFrame) -> core::result::Result<(), FrameError> {
    let ip = ipv6::Packet::new_checked(l3).map_err(|_| FrameError::BadIpv6Header)?;
    if ip.version() != 6 {
        return Err(FrameError::BadIpv6Header);
    }
    let ul = ip.upper_layer().map_err(|e| match e {
        Error::LimitExceeded => FrameError::ExtensionChainTooLong,
        _ => FrameError::BadIpv6ExtensionHeader,
    })?;
    let end = ipv6::HEADER_LEN + usize::from(ip.payload_len());
    // The walker keeps `ul.offset` within the payload; `get` keeps that a non-panicking fact.
    let l4 = l3
        .get(ul.offset..end)
        .ok_or(FrameError::BadIpv6ExtensionHeader)?;
    pf.l3 = L3::Ipv6;
    pf.src = IpAddr::V6(ip.src_addr());
    pf.dst = IpAddr::V6(ip.dst_addr());
    pf.ttl = ip.hop_limit();
    pf.proto = ul.next_header;
    pf.fragment = ipv6_fragment(ul.fragment);
    pf.l4_offset = pf.l3_offset + ul.offset;
    pf.l4_len = u16::try_from(l4.len()).unwrap_or(u16::MAX);
    parse_l4(l4, IpProtocol::ICMPV6, pf)
}

/// Reads ports, flags or the ICMP summary. `icmp` is the ICMP flavour of this IP version.
#[inline]
fn parse_l4(
    l4: &[u8],
    icmp: IpProtocol,
    pf: &mut ParsedFrame,
) -> core::result::Result<(), FrameError> {
    let whole = match pf.fragment {
        FragmentInfo::NonFirst => return Ok(()),
        FragmentInfo::First => false,
        FragmentInfo::None => true,
    };
    match pf.proto {
        IpProtocol::TCP => {
            let tcp = tcp::Packet::new_checked(l4).map_err(|_| FrameError::BadL4Header)?;
            pf.src_port = tcp.src_port();
            pf.dst_port = tcp.dst_port();
            pf.tcp_flags = tcp.flags();
        }
        IpProtocol::UDP => {
            let udp = if whole {
                udp::Packet::new_checked(l4).map_err(|_| FrameError::BadL4Header)?
            } else if l4.len() >= udp::HEADER_LEN {
                // The length field describes the whole datagram, not this fragment.
                udp::Packet::new_unchecked(l4)
            } else {
                return Err(FrameError::BadL4Header);
            };
            pf.src_port = udp.src_port();
            pf.dst_port = udp.dst_port();
        }
        p if p == icmp => {
            let info = if p == IpProtocol::ICMP {
                let m = icmpv4::Packet::new_checked(l4).map_err(|_| FrameError::BadL4Header)?;
                IcmpInfo {
                    msg_type: m.msg_type().0,
                    code: m.msg_code(),
                    rest: m.rest_of_header(),
                }
            } else {
                let m = if whole {
                    icmpv6::Packet::new_checked(l4).map_err(|_| FrameError::BadL4Header)?
                } else if l4.len() >= icmpv6::HEADER_LEN {
                    icmpv6::Packet::new_unchecked(l4)
                } else {
                    return Err(FrameError::BadL4Header);
                };
                IcmpInfo {
                    msg_type: m.msg_type().0,
                    code: m.msg_code(),
                    rest: m.rest_of_header(),
                }
            };
            pf.icmp = Some(info);
        }
        _ => {}
    }
    Ok(())
}
