//! Generic UDP Encapsulation (draft-ietf-intarea-gue), variant 0: the header the encap path
//! puts between the outer UDP header and the client's IP packet.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0x0|C|   Hlen  |  Proto/ctype  |             Flags             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Extension fields (Hlen words)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Hlen counts the 32-bit words of extension fields after the 4-byte base header. Variant 1
//! (version bits `01`, the IP header itself follows the UDP header) needs no code here: it is
//! the inner packet emitted right after [`super::udp::Repr`].

use super::{Error, IpProtocol, Result, be16};

mod field {
    pub(super) type Field = core::ops::Range<usize>;
    pub(super) const VER_C_HLEN: usize = 0;
    pub(super) const PROTO: usize = 1;
    pub(super) const FLAGS: Field = 2..4;
    pub(super) const EXTENSIONS: usize = 4;
}

/// Length of the base header.
pub const HEADER_LEN: usize = field::EXTENSIONS;
/// The UDP port IANA assigned to GUE.
pub const PORT: u16 = 6080;

/// A read/write view of a GUE header and what follows it.
///
/// After [`Packet::new_checked`] succeeds no getter panics.
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
    /// [`Error::Truncated`] if the buffer is shorter than the header and its extensions.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the base header and the Hlen words of extensions.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if it does not.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len() {
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

    /// Version (the top 2 bits; 0 for this header, 1 for direct IP encapsulation).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_C_HLEN] >> 6
    }

    /// Control bit: a control message rather than data.
    #[inline]
    pub fn control(&self) -> bool {
        self.buffer.as_ref()[field::VER_C_HLEN] & 0x20 != 0
    }

    /// Hlen: extension words after the base header.
    #[inline]
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::VER_C_HLEN] & 0x1F
    }

    /// Whole header length in bytes: 4 + Hlen × 4. Readable on any non-empty buffer.
    #[inline]
    pub fn header_len(&self) -> usize {
        let first = self.buffer.as_ref().first().copied().unwrap_or(0);
        HEADER_LEN + usize::from(first & 0x1F) * 4
    }

    /// The protocol of the payload (data messages) or the control type (control messages).
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTO])
    }

    /// The 16 flag bits.
    #[inline]
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS.start)
    }

    /// Extension fields.
    #[inline]
    pub fn extensions(&self) -> &[u8] {
        &self.buffer.as_ref()[field::EXTENSIONS..self.header_len()]
    }

    /// The encapsulated packet.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version (2 bits), control bit and Hlen (5 bits) at once.
    #[inline]
    pub fn set_version_control_hlen(&mut self, version: u8, control: bool, hlen: u8) {
        self.buffer.as_mut()[field::VER_C_HLEN] =
            ((version & 0x03) << 6) | if control { 0x20 } else { 0 } | (hlen & 0x1F);
    }

    /// Sets the protocol / control type.
    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTO] = value.0;
    }

    /// Sets the flags.
    #[inline]
    pub fn set_flags(&mut self, value: u16) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&value.to_be_bytes());
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// A GUE variant-0 data header with no flags and no extensions: all the encap path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Protocol of the encapsulated packet ([`IpProtocol::IPIP`] or [`IpProtocol::IPV6`]).
    pub next_header: IpProtocol,
}

// === impl Repr ===

impl Repr {
    /// Parses a data header; flags and extension fields are skipped.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if short; [`Error::Unsupported`] for another version or a control
    /// message.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if packet.version() != 0 || packet.control() {
            return Err(Error::Unsupported);
        }
        Ok(Self {
            next_header: packet.next_header(),
        })
    }

    /// Bytes [`Repr::emit`] writes: 4.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 4-byte header.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version_control_hlen(0, false, 0);
        packet.set_next_header(self.next_header);
        packet.set_flags(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode() {
        // Version 0, data, Hlen 1, proto 4 (IPv4), flags 0x8000, one extension word, then data.
        let b = [0x01, 0x04, 0x80, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x45];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.control(), p.hlen()), (0, false, 1));
        assert_eq!(p.header_len(), 8);
        assert_eq!(p.next_header(), IpProtocol::IPIP);
        assert_eq!(p.flags(), 0x8000);
        assert_eq!(p.extensions(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(p.payload(), &[0x45]);
        assert_eq!(Packet::new_checked(&b[..7]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&b[..3]).unwrap_err(), Error::Truncated);
        let control = [0x20, 0x00, 0x00, 0x00];
        let p = Packet::new_checked(&control[..]).unwrap();
        assert!(p.control());
        assert_eq!(Repr::parse(&p), Err(Error::Unsupported));
    }

    #[test]
    fn round_trip() {
        let repr = Repr {
            next_header: IpProtocol::IPV6,
        };
        let mut b = [0xFFu8; 4];
        repr.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, [0x00, 41, 0x00, 0x00]);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap(),
            repr
        );
    }
}
