//! IEEE 802.1Q VLAN tags (and 802.1ad QinQ service tags, which have the same layout).
//!
//! The view starts right *after* the TPID (0x8100 or 0x88A8) that announced the tag, i.e. at
//! the tag control information:
//!
//! ```text
//!  0       1       2       3       4
//! +---+-+---------+---------------+----------
//! |PCP|D|   VID   | inner type    | payload ...
//! +---+-+---------+---------------+----------
//! ```

use super::ethernet::EtherType;
use super::{Error, Result};

mod field {
    pub(super) type Field = core::ops::Range<usize>;
    pub(super) const TCI: Field = 0..2;
    pub(super) const ETHERTYPE: Field = 2..4;
    pub(super) const PAYLOAD: usize = 4;
}

/// Length of a VLAN tag after its TPID.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read/write view of an 802.1Q / 802.1ad tag.
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
    /// [`Error::Truncated`] if the buffer is shorter than the 4-byte tag.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the whole tag, so no getter can panic.
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

    /// The whole tag control information word.
    #[inline]
    pub fn tci(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[field::TCI.start], d[field::TCI.start + 1]])
    }

    /// Priority code point (3 bits).
    #[inline]
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::TCI.start] >> 5
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn drop_eligible(&self) -> bool {
        self.buffer.as_ref()[field::TCI.start] & 0x10 != 0
    }

    /// VLAN identifier (12 bits).
    #[inline]
    pub fn vlan_id(&self) -> u16 {
        self.tci() & 0x0FFF
    }

    /// The EtherType of what follows the tag (another TPID for QinQ).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let d = self.buffer.as_ref();
        EtherType(u16::from_be_bytes([
            d[field::ETHERTYPE.start],
            d[field::ETHERTYPE.start + 1],
        ]))
    }

    /// Everything after the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the tag control information word.
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        self.buffer.as_mut()[field::TCI].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the priority code point (low 3 bits of `pcp`).
    #[inline]
    pub fn set_priority(&mut self, pcp: u8) {
        let d = self.buffer.as_mut();
        d[field::TCI.start] = (d[field::TCI.start] & 0x1F) | ((pcp & 0x07) << 5);
    }

    /// Sets the drop eligible indicator.
    #[inline]
    pub fn set_drop_eligible(&mut self, dei: bool) {
        let d = self.buffer.as_mut();
        d[field::TCI.start] = (d[field::TCI.start] & !0x10) | if dei { 0x10 } else { 0 };
    }

    /// Sets the VLAN identifier (low 12 bits of `vid`).
    #[inline]
    pub fn set_vlan_id(&mut self, vid: u16) {
        let tci = (self.tci() & 0xF000) | (vid & 0x0FFF);
        self.set_tci(tci);
    }

    /// Sets the inner EtherType.
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

/// A high-level representation of a VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// VLAN identifier, 0..=4095.
    pub vlan_id: u16,
    /// Priority code point, 0..=7.
    pub priority: u8,
    /// Drop eligible indicator.
    pub drop_eligible: bool,
    /// EtherType of what follows.
    pub ethertype: EtherType,
}

// === impl Repr ===

impl Repr {
    /// Reads a tag.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer is shorter than the tag.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Self {
            vlan_id: packet.vlan_id(),
            priority: packet.priority(),
            drop_eligible: packet.drop_eligible(),
            ethertype: packet.ethertype(),
        })
    }

    /// Bytes [`Repr::emit`] writes: 4.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the tag. Out-of-range `vlan_id` / `priority` bits are masked off.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_tci(0);
        packet.set_priority(self.priority);
        packet.set_drop_eligible(self.drop_eligible);
        packet.set_vlan_id(self.vlan_id);
        packet.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tag PCP 5, DEI 0, VID 100, inner IPv4.
    static TAG: [u8; 4] = [0xA0, 0x64, 0x08, 0x00];

    #[test]
    fn decode() {
        let p = Packet::new_checked(&TAG[..]).unwrap();
        assert_eq!(p.priority(), 5);
        assert!(!p.drop_eligible());
        assert_eq!(p.vlan_id(), 100);
        assert_eq!(p.ethertype(), EtherType::IPV4);
        assert!(p.payload().is_empty());
        assert_eq!(
            Packet::new_checked(&TAG[..3]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn round_trip() {
        let repr = Repr {
            vlan_id: 4094,
            priority: 7,
            drop_eligible: true,
            ethertype: EtherType::IPV6,
        };
        let mut buf = [0u8; 4];
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, [0xFF, 0xFE, 0x86, 0xDD]);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(),
            repr
        );
        let repr = Repr::parse(&Packet::new_checked(&TAG[..]).unwrap()).unwrap();
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, TAG);
    }
}
