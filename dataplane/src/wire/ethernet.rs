//! Ethernet II frames: addresses, EtherType, payload.
//!
//! ```text
//!  0                   6                  12      14
//! +-------------------+-------------------+-------+----------------
//! |    destination    |      source       | type  | payload ...
//! +-------------------+-------------------+-------+----------------
//! ```
//!
//! The frame check sequence is not part of the buffer (NICs strip it). 802.3 length-typed
//! frames (type < 0x0600) read as an unknown [`EtherType`].

use core::fmt;

use super::{Error, Result};

mod field {
    pub(super) type Field = core::ops::Range<usize>;
    pub(super) const DESTINATION: Field = 0..6;
    pub(super) const SOURCE: Field = 6..12;
    pub(super) const ETHERTYPE: Field = 12..14;
    pub(super) const PAYLOAD: usize = 14;
}

/// Length of an Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EthernetAddress(pub [u8; 6]);

// === impl EthernetAddress ===

impl EthernetAddress {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Self = Self([0xFF; 6]);

    /// The address as bytes.
    #[inline]
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Whether this is the broadcast address.
    #[inline]
    #[must_use]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit (I/G) is set; broadcast is multicast too.
    #[inline]
    #[must_use]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether this is a unicast address.
    #[inline]
    #[must_use]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The multicast MAC for an IPv6 multicast address (RFC 2464 §7: `33:33` + its low 32 bits),
    /// e.g. the solicited-node address an NDP solicitation goes to.
    #[inline]
    #[must_use]
    pub const fn ipv6_multicast(addr: std::net::Ipv6Addr) -> Self {
        let o = addr.octets();
        Self([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<[u8; 6]> for EthernetAddress {
    fn from(b: [u8; 6]) -> Self {
        Self(b)
    }
}

/// An EtherType. A newtype rather than an enum so that every value round-trips and matching
/// on the named constants is a plain integer compare.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct EtherType(pub u16);

// === impl EtherType ===

impl EtherType {
    /// IPv4, 0x0800.
    pub const IPV4: Self = Self(0x0800);
    /// ARP, 0x0806.
    pub const ARP: Self = Self(0x0806);
    /// IEEE 802.1Q VLAN tag (C-tag), 0x8100.
    pub const VLAN: Self = Self(0x8100);
    /// IEEE 802.1ad service tag (S-tag, QinQ outer tag), 0x88A8.
    pub const QINQ: Self = Self(0x88A8);
    /// IPv6, 0x86DD.
    pub const IPV6: Self = Self(0x86DD);
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> u16 {
        t.0
    }
}

/// A read/write view of an Ethernet II frame.
///
/// After [`Frame::new_checked`] succeeds no getter panics.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

// === impl Frame ===

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps `buffer` without checking its length; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` and runs [`Frame::check_len`].
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer is shorter than the 14-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the whole header, so no getter can panic.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if it does not.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
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

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> EthernetAddress {
        let d = self.buffer.as_ref();
        let mut a = [0u8; 6];
        a.copy_from_slice(&d[field::DESTINATION]);
        EthernetAddress(a)
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> EthernetAddress {
        let d = self.buffer.as_ref();
        let mut a = [0u8; 6];
        a.copy_from_slice(&d[field::SOURCE]);
        EthernetAddress(a)
    }

    /// EtherType (or the 802.1Q/802.1ad TPID when the frame is tagged).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let d = self.buffer.as_ref();
        EtherType(u16::from_be_bytes([
            d[field::ETHERTYPE.start],
            d[field::ETHERTYPE.start + 1],
        ]))
    }

    /// Everything after the header (Ethernet padding included: the L3 length says where the
    /// real payload ends).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes());
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A high-level representation of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source MAC address.
    pub src_addr: EthernetAddress,
    /// Destination MAC address.
    pub dst_addr: EthernetAddress,
    /// EtherType.
    pub ethertype: EtherType,
}

// === impl Repr ===

impl Repr {
    /// Reads the header of a checked frame.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the frame is shorter than the header.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Self> {
        frame.check_len()?;
        Ok(Self {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Bytes [`Repr::emit`] writes: the 14-byte header.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`Repr::buffer_len`] bytes of `frame`.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Start of a real ARP request frame (broadcast from 00:1b:21:3a:4f:5c).
    static FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c, 0x08, 0x06, 0x00,
        0x01,
    ];

    #[test]
    fn decode() {
        let f = Frame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), EthernetAddress::BROADCAST);
        assert!(f.dst_addr().is_broadcast() && f.dst_addr().is_multicast());
        assert_eq!(
            f.src_addr(),
            EthernetAddress([0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c])
        );
        assert!(f.src_addr().is_unicast());
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert_eq!(f.payload(), &[0x00, 0x01]);
    }

    #[test]
    fn display() {
        let a = EthernetAddress([0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c]);
        assert_eq!(a.to_string(), "00:1b:21:3a:4f:5c");
        assert_eq!(format!("{a:?}"), "00:1b:21:3a:4f:5c");
        let m = EthernetAddress::ipv6_multicast("ff02::1:ff00:1234".parse().unwrap());
        assert_eq!(m.to_string(), "33:33:ff:00:12:34");
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Frame::new_checked(&FRAME[..13]).unwrap_err(),
            Error::Truncated
        );
        assert!(
            Frame::new_checked(&FRAME[..14])
                .unwrap()
                .payload()
                .is_empty()
        );
    }

    #[test]
    fn round_trip() {
        let repr = Repr::parse(&Frame::new_checked(&FRAME[..]).unwrap()).unwrap();
        let mut buf = [0u8; HEADER_LEN];
        repr.emit(&mut Frame::new_unchecked(&mut buf[..]));
        assert_eq!(buf, FRAME[..HEADER_LEN]);
        assert_eq!(
            Repr::parse(&Frame::new_checked(&buf[..]).unwrap()).unwrap(),
            repr
        );
    }
}
