//! UDP datagrams (RFC 768): ports, length, checksum with the IPv4 or IPv6 pseudo-header.
//!
//! ```text
//!  0                   16                  32
//! +-------------------+-------------------+
//! |    source port    |  destination port |
//! |      length       |     checksum      |
//! |              payload ...              |
//! +---------------------------------------+
//! ```
//!
//! Zero checksum: over IPv4 a zero checksum means "not computed" and verifies; a computed
//! checksum of zero is sent as `0xFFFF`. Over IPv6 the checksum is mandatory (RFC 8200 §8.1),
//! so zero does not verify (RFC 6935's zero-checksum tunnels are the caller's decision).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Error, IpProtocol, Result, be16, checksum, len32};

mod field {
    pub(super) type Field = core::ops::Range<usize>;
    pub(super) const SRC_PORT: Field = 0..2;
    pub(super) const DST_PORT: Field = 2..4;
    pub(super) const LENGTH: Field = 4..6;
    pub(super) const CHECKSUM: Field = 6..8;
    pub(super) const PAYLOAD: usize = 8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read/write view of a UDP datagram.
///
/// After [`Packet::new_checked`] succeeds no getter panics (as long as the length field is not
/// rewritten with the setters afterwards).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

// === impl Packet ===

// `len` is the UDP length field (smoltcp's name); an `is_empty` would mean nothing here.
#[allow(clippy::len_without_is_empty)]
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

    /// Checks `8 <= length <= buffer length`. The buffer may be longer; [`Packet::payload`]
    /// and the checksum stop at `length`.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer is shorter than 8 bytes or than `length`;
    /// [`Error::Malformed`] if `length < 8`.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            Err(Error::Malformed)
        } else if field_len > len {
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

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Length field (header + payload).
    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Checksum as on the wire (0: none, IPv4 only).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Payload: bytes 8..length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    #[inline]
    fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.len())]
    }

    /// Whether the checksum is valid over IPv4; a zero (absent) checksum is valid.
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let d = self.datagram();
        let ph = checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, len32(d));
        checksum::combine(&[ph, checksum::data(d)]) == 0xFFFF
    }

    /// Whether the checksum is valid over IPv6; a zero checksum is not.
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let d = self.datagram();
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::UDP, len32(d));
        checksum::combine(&[ph, checksum::data(d)]) == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Computes and writes the checksum with the IPv4 pseudo-header (a computed zero is
    /// written as `0xFFFF`).
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let d = self.datagram();
        let ph = checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, len32(d));
        let c = !checksum::combine(&[ph, checksum::data(d)]);
        self.set_checksum(checksum::udp_nonzero(c));
    }

    /// Computes and writes the checksum with the IPv6 pseudo-header (a computed zero is
    /// written as `0xFFFF`).
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let d = self.datagram();
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::UDP, len32(d));
        let c = !checksum::combine(&[ph, checksum::data(d)]);
        self.set_checksum(checksum::udp_nonzero(c));
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A high-level representation of a UDP header: what the GUE encap path emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port (the encap path puts flow entropy here).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length.
    pub payload_len: u16,
}

// === impl Repr ===

impl Repr {
    /// Parses a header (the checksum is not verified: it needs the IP addresses).
    ///
    /// # Errors
    ///
    /// What [`Packet::check_len`] returns.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.len() - 8,
        })
    }

    /// Bytes [`Repr::emit`] writes: the 8-byte header.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header with a zero checksum ("none", valid over IPv4; Katran and GLB send
    /// their encap that way). For a real checksum, write the payload, then call
    /// [`Packet::fill_checksum_v4`] / [`Packet::fill_checksum_v6`]. A `payload_len` above
    /// 65527 saturates the length.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(self.payload_len.saturating_add(8));
        packet.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS query 192.168.1.10:53000 -> 192.168.1.1:53 ("example.com" A), checksum from the
    /// capture.
    static DNS: [u8; 37] = [
        0xcf, 0x08, 0x00, 0x35, 0x00, 0x25, 0x00, 0x00, 0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0x03, b'c',
        b'o', b'm', 0x00, 0x00, 0x01, 0x00, 0x01,
    ];
    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);

    #[test]
    fn decode() {
        let p = Packet::new_checked(&DNS[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (53000, 53));
        assert_eq!(p.len(), 37);
        assert_eq!(p.checksum(), 0);
        assert_eq!(p.payload().len(), 29);
        assert_eq!(&p.payload()[..2], &[0xab, 0xcd]);
        // Zero checksum: valid over IPv4, invalid over IPv6.
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn checksums() {
        let mut b = DNS;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum_v4(SRC, DST);
        assert_ne!(p.checksum(), 0);
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v4(SRC, Ipv4Addr::new(192, 168, 1, 2)));
        let (s6, d6) = ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
        p.fill_checksum_v6(s6, d6);
        assert!(p.verify_checksum_v6(s6, d6));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose a payload word so the sum lands on 0xFFFF exactly.
        let mut b = [0u8; 10];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_len(10);
        let ph = checksum::pseudo_header_v4(SRC, DST, IpProtocol::UDP, 10);
        let partial = checksum::combine(&[ph, checksum::data(&p.as_ref()[..8])]);
        p.payload_mut().copy_from_slice(&(!partial).to_be_bytes());
        p.fill_checksum_v4(SRC, DST);
        assert_eq!(p.checksum(), 0xFFFF);
        assert!(p.verify_checksum_v4(SRC, DST));
    }

    #[test]
    fn length_validation() {
        assert_eq!(
            Packet::new_checked(&DNS[..7]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Packet::new_checked(&DNS[..36]).unwrap_err(),
            Error::Truncated
        );
        let mut b = DNS;
        b[5] = 7;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        b[5] = 8;
        assert!(Packet::new_checked(&b[..]).unwrap().payload().is_empty());
    }

    #[test]
    fn round_trip() {
        let repr = Repr {
            src_port: 49152,
            dst_port: 6080,
            payload_len: 100,
        };
        let mut b = [0u8; 108];
        repr.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(
            Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap(),
            repr
        );
        let fixture = Repr::parse(&Packet::new_checked(&DNS[..]).unwrap()).unwrap();
        let mut out = DNS;
        out[..8].fill(0xEE);
        fixture.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, DNS);
    }
}
