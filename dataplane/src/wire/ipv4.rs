//! IPv4 headers (RFC 791), options included.
//!
//! ```text
//!  0       4       8              16   19                         32
//! +-------+-------+---------------+------------------------------+
//! |version|  IHL  |   DSCP/ECN    |         total length         |
//! +-------+-------+---------------+-----+------------------------+
//! |        identification         |flags|    fragment offset     |
//! +---------------+---------------+-----+------------------------+
//! |      TTL      |   protocol    |        header checksum       |
//! +---------------+---------------+------------------------------+
//! |                        source address                        |
//! |                      destination address                     |
//! |                     options (IHL > 5) ...                    |
//! +--------------------------------------------------------------+
//! ```

use std::net::Ipv4Addr;

use super::{Error, IpProtocol, Result, be16, checksum};

mod field {
    pub(super) type Field = core::ops::Range<usize>;
    pub(super) const VER_IHL: usize = 0;
    pub(super) const DSCP_ECN: usize = 1;
    pub(super) const LENGTH: Field = 2..4;
    pub(super) const IDENT: Field = 4..6;
    pub(super) const FLG_OFF: Field = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Field = 10..12;
    pub(super) const SRC_ADDR: Field = 12..16;
    pub(super) const DST_ADDR: Field = 16..20;
    pub(super) const OPTIONS: usize = 20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::OPTIONS;
/// Largest header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;
/// Largest payload an option-less packet can carry.
pub const MAX_PAYLOAD_LEN: u16 = u16::MAX - 20;

const DONT_FRAG: u16 = 0x4000;
const MORE_FRAGS: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1FFF;

/// A read/write view of an IPv4 packet.
///
/// After [`Packet::new_checked`] succeeds no getter panics (as long as the length fields are not
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

    /// Checks the length fields against each other and the buffer: the buffer holds 20 bytes,
    /// `20 <= header_len <= total_len <= buffer length`. The buffer may be longer (Ethernet
    /// padding); [`Packet::payload`] stops at `total_len`. The version is not checked here.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer is shorter than the header or than `total_len`;
    /// [`Error::Malformed`] if IHL < 5 or `total_len < header_len`.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = usize::from(self.header_len());
        let total_len = usize::from(self.total_len());
        if header_len < HEADER_LEN || total_len < header_len {
            Err(Error::Malformed)
        } else if header_len > len || total_len > len {
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

    /// Version (4 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0F) * 4
    }

    /// Differentiated services code point.
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification bits.
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length (header + payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT.start)
    }

    #[inline]
    fn flags_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLG_OFF.start)
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & DONT_FRAG != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & MORE_FRAGS != 0
    }

    /// Fragment offset in bytes (the field × 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & OFFSET_MASK) << 3
    }

    /// Whether this is a fragment (first or later) rather than a whole datagram.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (MORE_FRAGS | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Upper-layer protocol.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum as on the wire.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        let s = field::SRC_ADDR.start;
        Ipv4Addr::new(d[s], d[s + 1], d[s + 2], d[s + 3])
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        let s = field::DST_ADDR.start;
        Ipv4Addr::new(d[s], d[s + 1], d[s + 2], d[s + 3])
    }

    /// Whether the header checksum (over `header_len` bytes, options included) is valid.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(&self.buffer.as_ref()[..usize::from(self.header_len())]) == 0xFFFF
    }

    /// Options (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..usize::from(self.header_len())]
    }

    /// The payload: from `header_len` to `total_len` (Ethernet padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let d = self.buffer.as_mut();
        d[field::VER_IHL] = (d[field::VER_IHL] & 0x0F) | (value << 4);
    }

    /// Sets the header length in bytes (stored as `value / 4`).
    #[inline]
    pub fn set_header_len(&mut self, value: u8) {
        let d = self.buffer.as_mut();
        d[field::VER_IHL] = (d[field::VER_IHL] & 0xF0) | ((value / 4) & 0x0F);
    }

    /// Sets the DSCP (low 6 bits of `value`).
    #[inline]
    pub fn set_dscp(&mut self, value: u8) {
        let d = self.buffer.as_mut();
        d[field::DSCP_ECN] = (d[field::DSCP_ECN] & 0x03) | (value << 2);
    }

    /// Sets the ECN bits (low 2 bits of `value`).
    #[inline]
    pub fn set_ecn(&mut self, value: u8) {
        let d = self.buffer.as_mut();
        d[field::DSCP_ECN] = (d[field::DSCP_ECN] & !0x03) | (value & 0x03);
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&value.to_be_bytes());
    }

    #[inline]
    fn set_flags_offset(&mut self, value: u16) {
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&value.to_be_bytes());
    }

    /// Clears the flags and the fragment offset.
    #[inline]
    pub fn clear_flags(&mut self) {
        self.set_flags_offset(0);
    }

    /// Sets the don't-fragment flag.
    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        let v = (self.flags_offset() & !DONT_FRAG) | if value { DONT_FRAG } else { 0 };
        self.set_flags_offset(v);
    }

    /// Sets the more-fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        let v = (self.flags_offset() & !MORE_FRAGS) | if value { MORE_FRAGS } else { 0 };
        self.set_flags_offset(v);
    }

    /// Sets the fragment offset in bytes (a multiple of 8; the low 3 bits are dropped).
    #[inline]
    pub fn set_frag_offset(&mut self, value: u16) {
        let v = (self.flags_offset() & !OFFSET_MASK) | (value >> 3);
        self.set_flags_offset(v);
    }

    /// Sets the TTL. Note the header checksum: see [`checksum::update_u16`].
    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the upper-layer protocol.
    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = value.0;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// Recomputes the header checksum over `header_len` bytes.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let len = usize::from(self.header_len());
        let c = checksum::compute(&self.buffer.as_ref()[..len]);
        self.set_checksum(c);
    }

    /// Decrements the TTL and patches the checksum incrementally (RFC 1624). Returns the new
    /// TTL; a TTL already at 0 stays 0.
    #[inline]
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        let proto = self.buffer.as_ref()[field::PROTOCOL];
        let old = u16::from_be_bytes([ttl, proto]);
        let new = u16::from_be_bytes([ttl - 1, proto]);
        self.set_ttl(ttl - 1);
        let c = checksum::update_u16(self.checksum(), old, new);
        self.set_checksum(c);
        ttl - 1
    }

    /// Mutable options.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A high-level representation of an IPv4 header without options: what the encap path emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Upper-layer protocol.
    pub next_header: IpProtocol,
    /// Payload length (≤ [`MAX_PAYLOAD_LEN`]).
    pub payload_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// DSCP (6 bits).
    pub dscp: u8,
    /// ECN (2 bits).
    pub ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
}

// === impl Repr ===

impl Repr {
    /// Parses a header. Options are skipped (they are not represented), and `payload_len` is
    /// `total_len - header_len`.
    ///
    /// # Errors
    ///
    /// What [`Packet::check_len`] returns; [`Error::Malformed`] if the version is not 4 or the
    /// checksum is wrong.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 4 || !packet.verify_checksum() {
            return Err(Error::Malformed);
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: packet.total_len() - u16::from(packet.header_len()),
            ttl: packet.ttl(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// Bytes [`Repr::emit`] writes: the 20-byte header.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (IHL 5) and its checksum. The payload is not touched.
    /// A `payload_len` above [`MAX_PAYLOAD_LEN`] saturates the total length.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        // The header is five 32-bit words, built and summed in registers and stored once
        // each. Setting the fields one at a time and then summing the bytes back for the
        // checksum read every word straight after its narrow stores: a store-forwarding
        // stall that made this a sixth of an encapsulated packet's time (bench/RESULTS.md).
        let tos = u32::from((self.dscp << 2) | (self.ecn & 0x03));
        // Saturating: the length is u16 and 20 is already taken by the header.
        let total_len = self.payload_len.saturating_add(20);
        let flags_offset = if self.dont_frag { DONT_FRAG } else { 0 }
            | if self.more_frags { MORE_FRAGS } else { 0 }
            | (self.frag_offset >> 3);
        let words = [
            (0x45 << 24) | (tos << 16) | u32::from(total_len),
            (u32::from(self.ident) << 16) | u32::from(flags_offset),
            (u32::from(self.ttl) << 24) | (u32::from(self.next_header.0) << 16),
            u32::from(self.src_addr),
            u32::from(self.dst_addr),
        ];
        // The one's-complement sum of the 16-bit words, with the checksum field still zero.
        let sum = words.iter().map(|&w| u64::from(w)).sum::<u64>();
        let [w0, w1, w2, w3, w4] = words;
        let w2 = w2 | u32::from(!checksum::fold(sum));
        let header: &mut [u8; HEADER_LEN] = packet
            .buffer
            .as_mut()
            .first_chunk_mut()
            .expect("an IPv4 header needs 20 bytes of buffer");
        let (chunks, _) = header.as_chunks_mut::<4>();
        for (c, w) in chunks.iter_mut().zip([w0, w1, w2, w3, w4]) {
            *c = w.to_be_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 192.168.0.1 -> 192.168.0.199 UDP, total length 0x73 (header only here, the classic
    /// checksum example), truncated payload.
    static HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    /// A first fragment (MF, ident 0x1234) of an ICMP echo request 10.0.0.1 -> 10.0.0.2 with
    /// IHL 6: a 4-byte NOP/NOP/NOP/EOL option block, then 8 bytes of ICMP. The header checksum
    /// is left zero here and filled by `with_options`.
    static WITH_OPTIONS: [u8; 32] = [
        0x46, 0x00, 0x00, 0x20, 0x12, 0x34, 0x20, 0x00, 0x40, 0x01, 0x00, 0x00, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x02, 0x01, 0x01, 0x01, 0x00, 0x08, 0x00, 0xf7, 0xff, 0x00, 0x00,
        0x00, 0x00,
    ];

    fn with_options() -> Vec<u8> {
        let mut v = WITH_OPTIONS.to_vec();
        Packet::new_unchecked(&mut v[..]).fill_checksum();
        v
    }

    #[test]
    fn decode_header() {
        let mut bytes = HEADER.to_vec();
        bytes.resize(0x73, 0);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!((p.dscp(), p.ecn()), (0, 0));
        assert_eq!(p.total_len(), 0x73);
        assert_eq!(p.ident(), 0);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.next_header(), IpProtocol::UDP);
        assert_eq!(p.checksum(), 0xb861);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 0x73 - 20);
        // The header alone is shorter than total_len.
        assert_eq!(
            Packet::new_checked(&HEADER[..]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn decode_options_and_fragment_fields() {
        let bytes = with_options();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ident(), 0x1234);
        assert_eq!(p.payload(), &WITH_OPTIONS[24..]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn length_validation() {
        let mut b = with_options();
        b[0] = 0x44; // IHL 4
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        b[0] = 0x4F; // IHL 15 = 60 bytes > total length 32
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        b[2..4].copy_from_slice(&60u16.to_be_bytes()); // ... and > buffer
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);
        b[0] = 0x46;
        b[2..4].copy_from_slice(&23u16.to_be_bytes()); // total < header
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        b[2..4].copy_from_slice(&33u16.to_be_bytes()); // total > buffer
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&b[..19]).unwrap_err(), Error::Truncated);
        // Ethernet padding after total_len is fine and excluded from the payload.
        let mut padded = with_options();
        padded.extend_from_slice(&[0; 14]);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn bad_checksum_and_version() {
        let mut b = with_options();
        b[11] ^= 1;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap_err(), Error::Malformed);
        let mut b = with_options();
        b[0] = 0x66;
        Packet::new_unchecked(&mut b[..]).fill_checksum();
        assert_eq!(
            Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn frag_offset_bytes() {
        let mut b = HEADER;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.clear_flags();
        p.set_frag_offset(1480);
        p.set_more_frags(true);
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        p.set_more_frags(false);
        assert!(p.is_fragment());
    }

    #[test]
    fn decrement_ttl_keeps_checksum_valid() {
        let mut b = HEADER.to_vec();
        b.resize(0x73, 0);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        for expect in (0..64).rev() {
            assert_eq!(p.decrement_ttl(), expect);
            assert!(p.verify_checksum());
        }
        assert_eq!(p.decrement_ttl(), 0);
    }

    #[test]
    fn round_trip() {
        let repr = Repr {
            src_addr: Ipv4Addr::new(10, 1, 2, 3),
            dst_addr: Ipv4Addr::new(172, 16, 0, 9),
            next_header: IpProtocol::IPIP,
            payload_len: 1480,
            ttl: 63,
            dscp: 46,
            ecn: 1,
            ident: 0xBEEF,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        let mut buf = vec![0u8; repr.buffer_len() + 1480];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap(), repr);
        // And a fixture parses to a Repr that emits the same header bytes.
        let mut bytes = HEADER.to_vec();
        bytes.resize(0x73, 0);
        let repr = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        let mut out = [0u8; 0x73];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out[..20], HEADER);
    }

    /// What `Repr::emit` wrote before it built the header in registers: the fields one by
    /// one through the setters, then the checksum summed from the bytes.
    fn emit_by_fields(repr: &Repr, buf: &mut [u8]) {
        let mut p = Packet::new_unchecked(buf);
        p.buffer[field::VER_IHL] = 0x45;
        p.buffer[field::DSCP_ECN] = (repr.dscp << 2) | (repr.ecn & 0x03);
        p.set_total_len(repr.payload_len.saturating_add(20));
        p.set_ident(repr.ident);
        p.clear_flags();
        p.set_dont_frag(repr.dont_frag);
        p.set_more_frags(repr.more_frags);
        p.set_frag_offset(repr.frag_offset);
        p.set_ttl(repr.ttl);
        p.set_next_header(repr.next_header);
        p.set_src_addr(repr.src_addr);
        p.set_dst_addr(repr.dst_addr);
        p.fill_checksum();
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// `emit` writes exactly the bytes the field-by-field emit did, whatever the buffer
        /// held before, touches nothing past the header, and its checksum verifies.
        #[test]
        fn emit_matches_the_field_setters(
            src: u32, dst: u32, proto: u8, payload_len: u16, ttl: u8, dscp in 0u8..64,
            ecn in 0u8..4, ident: u16, dont_frag: bool, more_frags: bool,
            frag_offset in (0u16..=0x1FFF).prop_map(|o| o * 8),
            junk: [u8; 24],
        ) {
            let repr = Repr {
                src_addr: Ipv4Addr::from(src),
                dst_addr: Ipv4Addr::from(dst),
                next_header: IpProtocol(proto),
                payload_len,
                ttl,
                dscp,
                ecn,
                ident,
                dont_frag,
                more_frags,
                frag_offset,
            };
            let mut fast = junk;
            repr.emit(&mut Packet::new_unchecked(&mut fast[..]));
            let mut slow = junk;
            emit_by_fields(&repr, &mut slow);
            prop_assert_eq!(fast, slow);
            prop_assert_eq!(&fast[20..], &junk[20..]);
            prop_assert!(Packet::new_unchecked(&fast[..]).verify_checksum());
        }
    }
}
