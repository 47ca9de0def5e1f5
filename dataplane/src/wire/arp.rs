//! ARP (RFC 826). The [`Packet`] view reads any hardware/protocol address sizes; [`Repr`] is
//! the Ethernet/IPv4 case, the only one the dataplane answers.
//!
//! ```text
//!  0       2       4   5   6       8
//! +-------+-------+---+---+-------+-------------+-------------+-------------+-------------+
//! | htype | ptype |hln|pln| oper  | sender hw   | sender proto| target hw   | target proto|
//! +-------+-------+---+---+-------+-------------+-------------+-------------+-------------+
//!                                   hln bytes     pln bytes     hln bytes     pln bytes
//! ```

use std::net::Ipv4Addr;

use super::ethernet::{EtherType, EthernetAddress};
use super::{Error, Result, be16};

mod field {
    pub(super) type Field = core::ops::Range<usize>;
    pub(super) const HTYPE: Field = 0..2;
    pub(super) const PTYPE: Field = 2..4;
    pub(super) const HLEN: usize = 4;
    pub(super) const PLEN: usize = 5;
    pub(super) const OPER: Field = 6..8;
    pub(super) const ADDRS: usize = 8;

    // The address fields move with the two lengths, as in smoltcp.
    #[inline]
    pub(super) const fn sha(hlen: usize) -> Field {
        ADDRS..ADDRS + hlen
    }
    #[inline]
    pub(super) const fn spa(hlen: usize, plen: usize) -> Field {
        let start = ADDRS + hlen;
        start..start + plen
    }
    #[inline]
    pub(super) const fn tha(hlen: usize, plen: usize) -> Field {
        let start = ADDRS + hlen + plen;
        start..start + hlen
    }
    #[inline]
    pub(super) const fn tpa(hlen: usize, plen: usize) -> Field {
        let start = ADDRS + 2 * hlen + plen;
        start..start + plen
    }
}

/// Length of the fixed part, before the addresses.
pub const FIXED_LEN: usize = field::ADDRS;
/// Length of an Ethernet/IPv4 ARP packet.
pub const ETHERNET_IPV4_LEN: usize = FIXED_LEN + 2 * 6 + 2 * 4;
/// Hardware type for Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// An ARP operation code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Operation(pub u16);

impl Operation {
    /// Request, 1.
    pub const REQUEST: Self = Self(1);
    /// Reply, 2.
    pub const REPLY: Self = Self(2);
}

/// A read/write view of an ARP packet.
///
/// After [`Packet::new_checked`] succeeds no getter panics.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

// === impl Packet ===

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking its length; getters may panic on a short buffer.
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

    /// Checks that the buffer holds the fixed part and the four addresses its two length fields
    /// announce, so no getter can panic.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if it does not.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let d = self.buffer.as_ref();
        if d.len() < FIXED_LEN {
            return Err(Error::Truncated);
        }
        let need = FIXED_LEN + 2 * usize::from(d[field::HLEN]) + 2 * usize::from(d[field::PLEN]);
        if d.len() < need {
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

    /// Hardware type (1 for Ethernet).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::HTYPE.start)
    }

    /// Protocol type (an EtherType; IPv4 for us).
    #[inline]
    pub fn protocol_type(&self) -> EtherType {
        EtherType(be16(self.buffer.as_ref(), field::PTYPE.start))
    }

    /// Hardware address length.
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    #[inline]
    pub fn operation(&self) -> Operation {
        Operation(be16(self.buffer.as_ref(), field::OPER.start))
    }

    #[inline]
    fn lens(&self) -> (usize, usize) {
        (
            usize::from(self.hardware_len()),
            usize::from(self.protocol_len()),
        )
    }

    /// Sender hardware address (`hardware_len` bytes).
    #[inline]
    pub fn source_hardware_addr(&self) -> &[u8] {
        let (h, _) = self.lens();
        &self.buffer.as_ref()[field::sha(h)]
    }

    /// Sender protocol address (`protocol_len` bytes).
    #[inline]
    pub fn source_protocol_addr(&self) -> &[u8] {
        let (h, p) = self.lens();
        &self.buffer.as_ref()[field::spa(h, p)]
    }

    /// Target hardware address (`hardware_len` bytes).
    #[inline]
    pub fn target_hardware_addr(&self) -> &[u8] {
        let (h, p) = self.lens();
        &self.buffer.as_ref()[field::tha(h, p)]
    }

    /// Target protocol address (`protocol_len` bytes).
    #[inline]
    pub fn target_protocol_addr(&self) -> &[u8] {
        let (h, p) = self.lens();
        &self.buffer.as_ref()[field::tpa(h, p)]
    }

    /// Whether this is the Ethernet/IPv4 flavour (the one [`Repr`] handles).
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == HTYPE_ETHERNET
            && self.protocol_type() == EtherType::IPV4
            && self.hardware_len() == 6
            && self.protocol_len() == 4
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the hardware type.
    #[inline]
    pub fn set_hardware_type(&mut self, value: u16) {
        self.buffer.as_mut()[field::HTYPE].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the protocol type.
    #[inline]
    pub fn set_protocol_type(&mut self, value: EtherType) {
        self.buffer.as_mut()[field::PTYPE].copy_from_slice(&value.0.to_be_bytes());
    }

    /// Sets the hardware address length.
    #[inline]
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Sets the protocol address length.
    #[inline]
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, value: Operation) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&value.0.to_be_bytes());
    }

    /// Sets the sender hardware address; `addr` must be `hardware_len` bytes.
    ///
    /// # Panics
    ///
    /// If `addr.len()` differs from `hardware_len`, or the buffer is too short.
    #[inline]
    pub fn set_source_hardware_addr(&mut self, addr: &[u8]) {
        let (h, _) = self.lens();
        self.buffer.as_mut()[field::sha(h)].copy_from_slice(addr);
    }

    /// Sets the sender protocol address; `addr` must be `protocol_len` bytes.
    ///
    /// # Panics
    ///
    /// If `addr.len()` differs from `protocol_len`, or the buffer is too short.
    #[inline]
    pub fn set_source_protocol_addr(&mut self, addr: &[u8]) {
        let (h, p) = self.lens();
        self.buffer.as_mut()[field::spa(h, p)].copy_from_slice(addr);
    }

    /// Sets the target hardware address; `addr` must be `hardware_len` bytes.
    ///
    /// # Panics
    ///
    /// If `addr.len()` differs from `hardware_len`, or the buffer is too short.
    #[inline]
    pub fn set_target_hardware_addr(&mut self, addr: &[u8]) {
        let (h, p) = self.lens();
        self.buffer.as_mut()[field::tha(h, p)].copy_from_slice(addr);
    }

    /// Sets the target protocol address; `addr` must be `protocol_len` bytes.
    ///
    /// # Panics
    ///
    /// If `addr.len()` differs from `protocol_len`, or the buffer is too short.
    #[inline]
    pub fn set_target_protocol_addr(&mut self, addr: &[u8]) {
        let (h, p) = self.lens();
        self.buffer.as_mut()[field::tpa(h, p)].copy_from_slice(addr);
    }
}

/// An Ethernet/IPv4 ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Request or reply (any other code is carried as is).
    pub operation: Operation,
    /// Sender MAC.
    pub source_hardware_addr: EthernetAddress,
    /// Sender IPv4 address.
    pub source_protocol_addr: Ipv4Addr,
    /// Target MAC (zero in a request).
    pub target_hardware_addr: EthernetAddress,
    /// Target IPv4 address (the address being asked about, in a request).
    pub target_protocol_addr: Ipv4Addr,
}

// === impl Repr ===

impl Repr {
    /// Parses an Ethernet/IPv4 ARP packet.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer is short, [`Error::Unsupported`] for other hardware or
    /// protocol types.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.is_ethernet_ipv4() {
            return Err(Error::Unsupported);
        }
        Ok(Self {
            operation: packet.operation(),
            source_hardware_addr: mac(packet.source_hardware_addr())?,
            source_protocol_addr: ipv4(packet.source_protocol_addr())?,
            target_hardware_addr: mac(packet.target_hardware_addr())?,
            target_protocol_addr: ipv4(packet.target_protocol_addr())?,
        })
    }

    /// Bytes [`Repr::emit`] writes: 28.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        ETHERNET_IPV4_LEN
    }

    /// Writes the message.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_hardware_type(HTYPE_ETHERNET);
        packet.set_protocol_type(EtherType::IPV4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_source_hardware_addr(&self.source_hardware_addr.0);
        packet.set_source_protocol_addr(&self.source_protocol_addr.octets());
        packet.set_target_hardware_addr(&self.target_hardware_addr.0);
        packet.set_target_protocol_addr(&self.target_protocol_addr.octets());
    }

    /// The reply that answers this request from `our_mac`, which owns `target_protocol_addr`.
    #[must_use]
    pub const fn reply(&self, our_mac: EthernetAddress) -> Self {
        Self {
            operation: Operation::REPLY,
            source_hardware_addr: our_mac,
            source_protocol_addr: self.target_protocol_addr,
            target_hardware_addr: self.source_hardware_addr,
            target_protocol_addr: self.source_protocol_addr,
        }
    }
}

#[inline]
fn mac(b: &[u8]) -> Result<EthernetAddress> {
    <[u8; 6]>::try_from(b)
        .map(EthernetAddress)
        .map_err(|_| Error::Malformed)
}

#[inline]
fn ipv4(b: &[u8]) -> Result<Ipv4Addr> {
    <[u8; 4]>::try_from(b)
        .map(Ipv4Addr::from)
        .map_err(|_| Error::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Who has 10.0.0.1? Tell 10.0.0.2" from 52:54:00:12:34:56 (a QEMU guest capture).
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a,
        0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn decode_request() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), HTYPE_ETHERNET);
        assert_eq!(p.protocol_type(), EtherType::IPV4);
        assert_eq!((p.hardware_len(), p.protocol_len()), (6, 4));
        assert_eq!(p.operation(), Operation::REQUEST);
        assert_eq!(
            p.source_hardware_addr(),
            &[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
        );
        assert_eq!(p.source_protocol_addr(), &[10, 0, 0, 2]);
        assert_eq!(p.target_hardware_addr(), &[0; 6]);
        assert_eq!(p.target_protocol_addr(), &[10, 0, 0, 1]);
        let repr = Repr::parse(&p).unwrap();
        assert_eq!(repr.target_protocol_addr, Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn reply_bytes() {
        let req = Repr::parse(&Packet::new_checked(&REQUEST[..]).unwrap()).unwrap();
        let ours = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
        let reply = req.reply(ours);
        let mut buf = [0u8; ETHERNET_IPV4_LEN];
        reply.emit(&mut Packet::new_unchecked(&mut buf[..]));
        let expected: [u8; 28] = [
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x0a, 0x00, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00, 0x00, 0x02,
        ];
        assert_eq!(buf, expected);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(),
            reply
        );
    }

    #[test]
    fn lengths() {
        assert_eq!(
            Packet::new_checked(&REQUEST[..7]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Packet::new_checked(&REQUEST[..27]).unwrap_err(),
            Error::Truncated
        );
        // A bigger hardware length needs more bytes.
        let mut odd = REQUEST;
        odd[4] = 8;
        assert_eq!(Packet::new_checked(&odd[..]).unwrap_err(), Error::Truncated);
        odd[4] = 2;
        let p = Packet::new_checked(&odd[..]).unwrap();
        assert_eq!(p.target_protocol_addr().len(), 4);
        assert_eq!(Repr::parse(&p).unwrap_err(), Error::Unsupported);
    }
}
