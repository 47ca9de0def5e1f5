//! IPv6 (RFC 8200): the fixed header, the generic extension-header layout, the fragment header,
//! and a bounded walker over an extension-header chain.
//!
//! ```text
//!  0       4               12                                      32
//! +-------+---------------+----------------------------------------+
//! |version| traffic class |              flow label                |
//! +-------+---------------+---------------+------------------------+
//! |        payload length         |  next header  |   hop limit    |
//! +-------------------------------+---------------+----------------+
//! |                  source address (16 bytes)                     |
//! |                destination address (16 bytes)                  |
//! +----------------------------------------------------------------+
//! ```
//!
//! The walker ([`walk_extension_headers`], [`Packet::upper_layer`]) follows hop-by-hop (0),
//! routing (43), fragment (44) and destination options (60), and stops at the first other
//! protocol, which is the upper layer (TCP, UDP, ICMPv6, ESP, AH, no-next-header...). It reads
//! at most [`MAX_EXT_HEADERS`] headers, so a long or looping chain ends in
//! [`Error::LimitExceeded`] instead of a long walk. Jumbograms (RFC 2675) are not supported:
//! a zero payload length means an empty payload.

use std::net::Ipv6Addr;

use super::{Error, IpProtocol, Result, be16, be32};

mod field {
    pub(super) type Field = core::ops::Range<usize>;
    pub(super) const VER_TC_FLOW: Field = 0..4;
    pub(super) const LENGTH: Field = 4..6;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC_ADDR: Field = 8..24;
    pub(super) const DST_ADDR: Field = 24..40;
    pub(super) const PAYLOAD: usize = 40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// How many extension headers the walker reads before giving up.
pub const MAX_EXT_HEADERS: usize = 8;

/// A read/write view of an IPv6 packet.
///
/// After [`Packet::new_checked`] succeeds no getter panics (as long as the payload length is not
/// rewritten with the setters afterwards).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

// === impl Packet ===

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking it; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` and runs [`Packet::check_len`].
    ///
    /// # Errors
    ///
    /// See [`Packet::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the fixed header and `payload_len` bytes after it (it may
    /// hold more: Ethernet padding). The version is not checked here.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if it does not.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (6 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        let d = self.buffer.as_ref();
        (d[0] << 4) | (d[1] >> 4)
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW.start) & 0x000F_FFFF
    }

    /// Payload length (everything after the fixed header, extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Next header: the first extension header or the upper-layer protocol.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// The payload: `payload_len` bytes after the fixed header (padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }

    /// Walks the extension headers in the payload to the upper layer.
    ///
    /// # Errors
    ///
    /// See [`walk_extension_headers`].
    #[inline]
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        walk_extension_headers(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let d = self.buffer.as_mut();
        d[0] = (d[0] & 0x0F) | (value << 4);
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, value: u8) {
        let d = self.buffer.as_mut();
        d[0] = (d[0] & 0xF0) | (value >> 4);
        d[1] = (d[1] & 0x0F) | (value << 4);
    }

    /// Sets the flow label (low 20 bits of `value`).
    #[inline]
    pub fn set_flow_label(&mut self, value: u32) {
        let d = self.buffer.as_mut();
        let word = (be32(d, 0) & 0xFFF0_0000) | (value & 0x000F_FFFF);
        d[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = value.0;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[inline]
fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ipv6Addr::from(a)
}

/// A high-level representation of the fixed IPv6 header: what the encap path emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header.
    pub next_header: IpProtocol,
    /// Payload length.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits); the encap path sets it from the flow hash for ECMP entropy.
    pub flow_label: u32,
}

// === impl Repr ===

impl Repr {
    /// Parses the fixed header.
    ///
    /// # Errors
    ///
    /// What [`Packet::check_len`] returns; [`Error::Malformed`] if the version is not 6.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::Malformed);
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: packet.payload_len(),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Bytes [`Repr::emit`] writes: the 40-byte fixed header.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header. The payload is not touched.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let word =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xF_FFFF);
        packet.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
        packet.set_payload_len(self.payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

mod ext_field {
    pub(super) const NXT_HDR: usize = 0;
    pub(super) const LENGTH: usize = 1;
    pub(super) const DATA: usize = 2;
    pub(super) type Field = core::ops::Range<usize>;
    pub(super) const FRAG_OFF: Field = 2..4;
    pub(super) const FRAG_IDENT: Field = 4..8;
}

/// A read/write view of an extension header in the generic layout (hop-by-hop, routing,
/// destination options): next header, length in 8-byte units not counting the first 8, data.
///
/// After [`ExtHeader::new_checked`] succeeds no getter panics.
#[derive(Debug, Clone)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
}

// === impl ExtHeader ===

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// Wraps `buffer` without checking it; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` and runs [`ExtHeader::check_len`].
    ///
    /// # Errors
    ///
    /// See [`ExtHeader::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the whole header as its length field gives it.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if it does not.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let d = self.buffer.as_ref();
        if d.len() < 2 || d.len() < self.header_len() {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Next header.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[ext_field::NXT_HDR])
    }

    /// Length of this header in bytes: (the length field + 1) × 8.
    #[inline]
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[ext_field::LENGTH]) + 1) * 8
    }

    /// The options or routing data (after the two fixed bytes).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[ext_field::DATA..self.header_len()]
    }

    /// Everything after this header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ExtHeader<T> {
    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[ext_field::NXT_HDR] = value.0;
    }

    /// Sets the header length in bytes (a multiple of 8, at least 8; stored as `len / 8 - 1`,
    /// clamped to the field's range).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let units = u8::try_from((len / 8).saturating_sub(1)).unwrap_or(u8::MAX);
        self.buffer.as_mut()[ext_field::LENGTH] = units;
    }

    /// Mutable options or routing data.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[ext_field::DATA..end]
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// Length of the fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// A read/write view of the fragment extension header (44).
///
/// ```text
/// +---------------+---------------+-------------------------+--+-+
/// |  next header  |   reserved    |     fragment offset     |res|M|
/// +---------------+---------------+-------------------------+--+-+
/// |                        identification                        |
/// +--------------------------------------------------------------+
/// ```
///
/// After [`FragmentHeader::new_checked`] succeeds no getter panics.
#[derive(Debug, Clone)]
pub struct FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

// === impl FragmentHeader ===

impl<T: AsRef<[u8]>> FragmentHeader<T> {
    /// Wraps `buffer` without checking it; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` and runs [`FragmentHeader::check_len`].
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer is shorter than 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the 8-byte header.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if it does not.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < FRAGMENT_HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Next header (of the fragmentable part).
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[ext_field::NXT_HDR])
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), ext_field::FRAG_OFF.start) & 0xFFF8
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[ext_field::FRAG_OFF.start + 1] & 0x01 != 0
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        be32(self.buffer.as_ref(), ext_field::FRAG_IDENT.start)
    }

    /// Everything after this header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[FRAGMENT_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> FragmentHeader<T> {
    /// Sets the next header (and clears the reserved byte).
    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        let d = self.buffer.as_mut();
        d[ext_field::NXT_HDR] = value.0;
        d[ext_field::LENGTH] = 0;
    }

    /// Sets the fragment offset in bytes (a multiple of 8) and the more-fragments flag.
    #[inline]
    pub fn set_frag_offset(&mut self, offset: u16, more_frags: bool) {
        let v = (offset & 0xFFF8) | u16::from(more_frags);
        self.buffer.as_mut()[ext_field::FRAG_OFF].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, value: u32) {
        self.buffer.as_mut()[ext_field::FRAG_IDENT].copy_from_slice(&value.to_be_bytes());
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[FRAGMENT_HEADER_LEN..]
    }
}

/// What a fragment header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// Offset of this fragment's data in bytes.
    pub offset: u16,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

impl Fragment {
    /// An atomic fragment (RFC 6946: offset 0, no more fragments) is a whole packet.
    #[inline]
    #[must_use]
    pub const fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more_frags
    }
}

/// Where an extension-header chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// The upper-layer protocol. For a non-first fragment it is the fragment header's next
    /// header, and the bytes at `offset` are fragment data, not that protocol's header.
    pub next_header: IpProtocol,
    /// Offset of the upper-layer data from the start of the IPv6 header.
    pub offset: usize,
    /// The fragment header, if the chain had one.
    pub fragment: Option<Fragment>,
}

/// Walks an extension-header chain.
///
/// `first` is the fixed header's next header and `payload` the bytes after the fixed header
/// (possibly cut short, e.g. the quoted packet in an ICMPv6 error). The walk stops at the
/// first protocol that is not hop-by-hop, routing, fragment or destination options, or right
/// after a fragment header with a non-zero offset (what follows is data). The returned offset
/// counts from the start of the fixed header.
///
/// # Errors
///
/// - [`Error::Truncated`]: a header runs past `payload`;
/// - [`Error::Malformed`]: hop-by-hop anywhere but first (RFC 8200 §4.1);
/// - [`Error::LimitExceeded`]: more than [`MAX_EXT_HEADERS`] extension headers.
pub fn walk_extension_headers(first: IpProtocol, payload: &[u8]) -> Result<UpperLayer> {
    let mut next = first;
    let mut at = 0usize;
    let mut fragment = None;
    for index in 0..=MAX_EXT_HEADERS {
        match next {
            IpProtocol::HOP_BY_HOP | IpProtocol::IPV6_ROUTE | IpProtocol::IPV6_OPTS => {
                if next == IpProtocol::HOP_BY_HOP && index != 0 {
                    return Err(Error::Malformed);
                }
                if index == MAX_EXT_HEADERS {
                    break;
                }
                let rest = payload.get(at..).ok_or(Error::Truncated)?;
                let hdr = ExtHeader::new_checked(rest)?;
                next = hdr.next_header();
                at += hdr.header_len();
            }
            IpProtocol::IPV6_FRAG => {
                if index == MAX_EXT_HEADERS {
                    break;
                }
                let rest = payload.get(at..).ok_or(Error::Truncated)?;
                let hdr = FragmentHeader::new_checked(rest)?;
                let frag = Fragment {
                    offset: hdr.frag_offset(),
                    more_frags: hdr.more_frags(),
                    ident: hdr.ident(),
                };
                fragment = Some(frag);
                next = hdr.next_header();
                at += FRAGMENT_HEADER_LEN;
                if frag.offset != 0 {
                    return Ok(UpperLayer {
                        next_header: next,
                        offset: HEADER_LEN + at,
                        fragment,
                    });
                }
            }
            _ => {
                return Ok(UpperLayer {
                    next_header: next,
                    offset: HEADER_LEN + at,
                    fragment,
                });
            }
        }
    }
    Err(Error::LimitExceeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP SYN 2001:db8::1 -> 2001:db8::2 (fixed header only, payload cut to the 4 port bytes
    /// for brevity: payload length 4). TC 0x12, flow label 0xABCDE, hop limit 64.
    static TCP_SYN: [u8; 44] = [
        0x61, 0x2A, 0xBC, 0xDE, 0x00, 0x04, 0x06, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x9c,
        0x40, 0x00, 0x50,
    ];

    #[test]
    fn decode_fixed() {
        let p = Packet::new_checked(&TCP_SYN[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x12);
        assert_eq!(p.flow_label(), 0xABCDE);
        assert_eq!(p.payload_len(), 4);
        assert_eq!(p.next_header(), IpProtocol::TCP);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &[0x9c, 0x40, 0x00, 0x50]);
        let ul = p.upper_layer().unwrap();
        assert_eq!(
            ul,
            UpperLayer {
                next_header: IpProtocol::TCP,
                offset: 40,
                fragment: None
            }
        );
        assert_eq!(
            Packet::new_checked(&TCP_SYN[..43]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Packet::new_checked(&TCP_SYN[..39]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn set_fields() {
        let mut b = TCP_SYN;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_traffic_class(0xE5);
        p.set_flow_label(0x12345);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0xE5, 0x12345)
        );
        p.set_version(6);
        p.set_hop_limit(1);
        assert_eq!(p.hop_limit(), 1);
    }

    fn chain(headers: &[(u8, &[u8])], last: u8) -> (IpProtocol, Vec<u8>) {
        // headers: (protocol of this header, its body after the next-header byte).
        let mut out = Vec::new();
        for (i, (_, body)) in headers.iter().enumerate() {
            let next = headers.get(i + 1).map_or(last, |h| h.0);
            out.push(next);
            out.extend_from_slice(body);
        }
        (IpProtocol(headers.first().map_or(last, |h| h.0)), out)
    }

    #[test]
    fn walk_hbh_routing_dest_frag() {
        let hbh: &[u8] = &[0, 1, 4, 0, 0, 0, 0]; // len 0 => 8 bytes: PadN
        let rt: &[u8] = &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // len 1 => 16 bytes
        let frag: &[u8] = &[0, 0x00, 0x01, 0xDE, 0xAD, 0xBE, 0xEF]; // offset 0, M, ident
        let dst: &[u8] = &[0, 1, 4, 0, 0, 0, 0];
        let (first, mut bytes) = chain(&[(0, hbh), (43, rt), (44, frag), (60, dst)], 17);
        bytes.extend_from_slice(&[0; 8]);
        let ul = walk_extension_headers(first, &bytes).unwrap();
        assert_eq!(ul.next_header, IpProtocol::UDP);
        assert_eq!(ul.offset, 40 + 8 + 16 + 8 + 8);
        assert_eq!(
            ul.fragment,
            Some(Fragment {
                offset: 0,
                more_frags: true,
                ident: 0xDEAD_BEEF
            })
        );
    }

    #[test]
    fn walk_stops_after_non_first_fragment() {
        let frag: &[u8] = &[0, 0x05, 0xA8, 0, 0, 0, 7]; // offset 1448, last fragment
        let (first, mut bytes) = chain(&[(44, frag)], 6);
        // Fragment data that happens to look like a routing header must not be walked.
        bytes.extend_from_slice(&[43, 255, 0, 0]);
        let ul = walk_extension_headers(first, &bytes).unwrap();
        assert_eq!(ul.next_header, IpProtocol::TCP);
        assert_eq!(ul.offset, 48);
        assert_eq!(
            ul.fragment,
            Some(Fragment {
                offset: 1448,
                more_frags: false,
                ident: 7
            })
        );
        assert!(!ul.fragment.unwrap().is_atomic());
    }

    #[test]
    fn walk_errors() {
        let opt: &[u8] = &[0, 1, 4, 0, 0, 0, 0];
        // Hop-by-hop second.
        let (first, bytes) = chain(&[(60, opt), (0, opt)], 6);
        assert_eq!(walk_extension_headers(first, &bytes), Err(Error::Malformed));
        // Truncated header.
        let (first, bytes) = chain(&[(60, opt)], 6);
        assert_eq!(
            walk_extension_headers(first, &bytes[..7]),
            Err(Error::Truncated)
        );
        let (first, bytes) = chain(&[(60, &[3, 0, 0, 0, 0, 0, 0])], 6); // claims 32 bytes
        assert_eq!(walk_extension_headers(first, &bytes), Err(Error::Truncated));
        // Exactly MAX_EXT_HEADERS is fine, one more is not.
        let many: Vec<(u8, &[u8])> = std::iter::repeat_n((60u8, opt), MAX_EXT_HEADERS).collect();
        let (first, bytes) = chain(&many, 59);
        let ul = walk_extension_headers(first, &bytes).unwrap();
        assert_eq!(ul.next_header, IpProtocol::IPV6_NO_NXT);
        assert_eq!(ul.offset, 40 + 8 * MAX_EXT_HEADERS);
        let many: Vec<(u8, &[u8])> =
            std::iter::repeat_n((60u8, opt), MAX_EXT_HEADERS + 1).collect();
        let (first, bytes) = chain(&many, 59);
        assert_eq!(
            walk_extension_headers(first, &bytes),
            Err(Error::LimitExceeded)
        );
        // Atomic fragment, then more fragment headers up to the limit.
        let frag: &[u8] = &[0, 0, 0, 0, 0, 0, 1];
        let many: Vec<(u8, &[u8])> =
            std::iter::repeat_n((44u8, frag), MAX_EXT_HEADERS + 1).collect();
        let (first, bytes) = chain(&many, 6);
        assert_eq!(
            walk_extension_headers(first, &bytes),
            Err(Error::LimitExceeded)
        );
        // Empty payload with an extension header announced.
        assert_eq!(
            walk_extension_headers(IpProtocol::IPV6_OPTS, &[]),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn fragment_header_view() {
        let mut b = [0u8; 8];
        let mut f = FragmentHeader::new_checked(&mut b[..]).unwrap();
        f.set_next_header(IpProtocol::UDP);
        f.set_frag_offset(2960, true);
        f.set_ident(42);
        assert_eq!(f.next_header(), IpProtocol::UDP);
        assert_eq!(
            (f.frag_offset(), f.more_frags(), f.ident()),
            (2960, true, 42)
        );
        assert!(f.payload().is_empty());
        assert_eq!(
            FragmentHeader::new_checked(&b[..7]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn ext_header_view() {
        let mut b = [0u8; 24];
        let mut h = ExtHeader::new_unchecked(&mut b[..]);
        h.set_next_header(IpProtocol::TCP);
        h.set_header_len(16);
        let h = ExtHeader::new_checked(&b[..]).unwrap();
        assert_eq!(h.header_len(), 16);
        assert_eq!(h.data().len(), 14);
        assert_eq!(h.payload().len(), 8);
        assert_eq!(
            ExtHeader::new_checked(&b[..15]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            ExtHeader::new_checked(&b[..1]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn round_trip() {
        let repr = Repr {
            src_addr: "2001:db8::10".parse().unwrap(),
            dst_addr: "fd00::beef".parse().unwrap(),
            next_header: IpProtocol::IPV6,
            payload_len: 1280,
            hop_limit: 64,
            traffic_class: 0xB8,
            flow_label: 0xF_FFFF,
        };
        let mut buf = vec![0u8; repr.buffer_len() + 1280];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(
            Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(),
            repr
        );
        let fixture = Repr::parse(&Packet::new_checked(&TCP_SYN[..]).unwrap()).unwrap();
        let mut out = TCP_SYN;
        out[..40].fill(0);
        fixture.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, TCP_SYN);
    }
}
