//! ICMPv4 (RFC 792): type/code, echo, destination unreachable with the RFC 1191 next-hop MTU,
//! and the quoted ("invoking") packet of error messages.
//!
//! ```text
//!  0       8       16                32
//! +-------+-------+-----------------+
//! | type  | code  |    checksum     |
//! +-------+-------+-----------------+
//! |   rest of header (ident/seq,    |
//! |   unused + next-hop MTU, ...)   |
//! +---------------------------------+
//! |   data: echo data, or the IP    |
//! |   header + 8 bytes that caused  |
//! |   the error                     |
//! +---------------------------------+
//! ```
//!
//! For the quoted packet's flow, see [`super::InnerFlow::parse_ipv4`]; it cannot go through
//! [`super::ipv4::Packet::new_checked`] because its total length describes the original
//! packet, not the quote.

use super::{Error, Result, be16, be32, checksum};

mod field {
    pub(super) type Field = core::ops::Range<usize>;
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Field = 2..4;
    pub(super) const REST: Field = 4..8;
    pub(super) const ECHO_IDENT: Field = 4..6;
    pub(super) const ECHO_SEQNO: Field = 6..8;
    pub(super) const MTU: Field = 6..8;
    pub(super) const DATA: usize = 8;
}

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = field::DATA;

/// An ICMPv4 message type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Message(pub u8);

// === impl Message ===

impl Message {
    /// Echo reply, 0.
    pub const ECHO_REPLY: Self = Self(0);
    /// Destination unreachable, 3.
    pub const DST_UNREACHABLE: Self = Self(3);
    /// Redirect, 5.
    pub const REDIRECT: Self = Self(5);
    /// Echo request, 8.
    pub const ECHO_REQUEST: Self = Self(8);
    /// Time exceeded, 11.
    pub const TIME_EXCEEDED: Self = Self(11);
    /// Parameter problem, 12.
    pub const PARAM_PROBLEM: Self = Self(12);

    /// Whether this is an error message that quotes the packet that caused it.
    #[inline]
    #[must_use]
    pub const fn is_error(self) -> bool {
        matches!(self.0, 3 | 5 | 11 | 12)
    }
}

/// Destination-unreachable code "fragmentation needed and DF set" (RFC 792, RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;

/// A read/write view of an ICMPv4 message.
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
    /// [`Error::Truncated`] if the buffer is shorter than the 8-byte header.
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

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> Message {
        Message(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as on the wire.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The four "rest of header" bytes, whatever the type.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REST.start)
    }

    /// Echo identifier (echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Echo sequence number (echo request/reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
    }

    /// Next-hop MTU (destination unreachable, code 4; 0 from pre-RFC 1191 routers).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::MTU.start)
    }

    /// Data after the header: echo data, or the quoted packet of an error message.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Same as [`Packet::data`] (the smoltcp-wide name).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.data()
    }

    /// Whether the checksum over the whole buffer is valid.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, value: Message) {
        self.buffer.as_mut()[field::TYPE] = value.0;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the four "rest of header" bytes.
    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, value: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, value: u16) {
        self.buffer.as_mut()[field::ECHO_SEQNO].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the next-hop MTU.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, value: u16) {
        self.buffer.as_mut()[field::MTU].copy_from_slice(&value.to_be_bytes());
    }

    /// Computes and writes the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::compute(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Mutable data.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Same as [`Packet::data_mut`].
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.data_mut()
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A high-level representation of the ICMPv4 messages the dataplane reads or builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repr<'a> {
    /// Echo request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Echo reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Destination unreachable (fragmentation needed is code 4, with `next_hop_mtu`).
    DstUnreachable {
        /// Code.
        code: u8,
        /// Next-hop MTU (meaningful for code 4; 0 otherwise).
        next_hop_mtu: u16,
        /// The quoted IP header + at least 8 bytes.
        data: &'a [u8],
    },
}

// === impl Repr ===

impl<'a> Repr<'a> {
    /// Parses a message; the checksum is verified.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if short, [`Error::Malformed`] on a bad checksum or a non-zero echo
    /// code, [`Error::Unsupported`] for other message types.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Malformed);
        }
        let buffer: &'a T = packet.buffer;
        let data = &buffer.as_ref()[field::DATA..];
        match packet.msg_type() {
            Message::ECHO_REQUEST | Message::ECHO_REPLY if packet.msg_code() != 0 => {
                Err(Error::Malformed)
            }
            Message::ECHO_REQUEST => Ok(Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            Message::ECHO_REPLY => Ok(Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            // The first two "rest" bytes are unused and must be zero; they are not checked.
            Message::DST_UNREACHABLE => Ok(Repr::DstUnreachable {
                code: packet.msg_code(),
                next_hop_mtu: packet.next_hop_mtu(),
                data,
            }),
            _ => Err(Error::Unsupported),
        }
    }

    /// Bytes [`Repr::emit`] writes: header + data.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self {
            Repr::EchoRequest { data, .. }
            | Repr::EchoReply { data, .. }
            | Repr::DstUnreachable { data, .. } => HEADER_LEN + data.len(),
        }
    }

    /// Writes the message and its checksum over [`Repr::buffer_len`] bytes.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`Repr::buffer_len`]. A longer buffer is fine, but then
    /// the checksum covers the extra bytes too: pass exactly `buffer_len` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let data = match *self {
            Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }
            | Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                let ty = if matches!(self, Repr::EchoRequest { .. }) {
                    Message::ECHO_REQUEST
                } else {
                    Message::ECHO_REPLY
                };
                packet.set_msg_type(ty);
                packet.set_msg_code(0);
                packet.set_echo_ident(ident);
                packet.set_echo_seq_no(seq_no);
                data
            }
            Repr::DstUnreachable {
                code,
                next_hop_mtu,
                data,
            } => {
                packet.set_msg_type(Message::DST_UNREACHABLE);
                packet.set_msg_code(code);
                packet.set_rest_of_header(0);
                packet.set_next_hop_mtu(next_hop_mtu);
                data
            }
        };
        packet.data_mut()[..data.len()].copy_from_slice(data);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ping -c1 -p 61` style echo request: ident 0x1c46, seq 1, 8 bytes of data (a Linux
    /// capture, trimmed).
    static ECHO: [u8; 16] = [
        0x08, 0x00, 0x00, 0x00, 0x1c, 0x46, 0x00, 0x01, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61,
        0x61,
    ];

    /// Fragmentation needed, next-hop MTU 1400, quoting a TCP packet
    /// 198.51.100.10:443 -> 203.0.113.5:51000 (header + 8 bytes).
    static FRAG_NEEDED: [u8; 36] = [
        0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x05, 0x78, // ICMP header, MTU 1400
        0x45, 0x00, 0x05, 0xdc, 0xab, 0xcd, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0xc6, 0x33, 0x64,
        0x0a, 0xcb, 0x00, 0x71, 0x05, // quoted IPv4 header (total length 1500)
        0x01, 0xbb, 0xc7, 0x38, 0x00, 0x00, 0x00, 0x01, // first 8 bytes of TCP
    ];

    fn filled(bytes: &[u8]) -> Vec<u8> {
        let mut v = bytes.to_vec();
        Packet::new_unchecked(&mut v[..]).fill_checksum();
        v
    }

    #[test]
    fn decode_echo() {
        let b = filled(&ECHO);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Message::ECHO_REQUEST);
        assert!(!p.msg_type().is_error());
        assert_eq!(p.msg_code(), 0);
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (0x1c46, 1));
        assert_eq!(p.rest_of_header(), 0x1c46_0001);
        assert_eq!(p.data(), &[0x61; 8]);
        assert!(p.verify_checksum());
        let repr = Repr::parse(&p).unwrap();
        assert_eq!(
            repr,
            Repr::EchoRequest {
                ident: 0x1c46,
                seq_no: 1,
                data: &[0x61; 8]
            }
        );
    }

    #[test]
    fn decode_frag_needed() {
        let b = filled(&FRAG_NEEDED);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Message::DST_UNREACHABLE);
        assert!(p.msg_type().is_error());
        assert_eq!(p.msg_code(), CODE_FRAG_NEEDED);
        assert_eq!(p.next_hop_mtu(), 1400);
        assert_eq!(p.data().len(), 28);
        assert_eq!(p.data()[0], 0x45);
        match Repr::parse(&p).unwrap() {
            Repr::DstUnreachable {
                code: 4,
                next_hop_mtu: 1400,
                data,
            } => {
                assert_eq!(data, &FRAG_NEEDED[8..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            Packet::new_checked(&ECHO[..7]).unwrap_err(),
            Error::Truncated
        );
        let mut b = filled(&ECHO);
        b[9] ^= 0xFF;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&b[..]).unwrap()),
            Err(Error::Malformed)
        );
        let mut b = ECHO;
        b[0] = 13; // timestamp
        let b = filled(&b);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&b[..]).unwrap()),
            Err(Error::Unsupported)
        );
    }

    #[test]
    fn round_trip() {
        let data = [1u8, 2, 3, 4, 5];
        for repr in [
            Repr::EchoRequest {
                ident: 7,
                seq_no: 9,
                data: &data,
            },
            Repr::EchoReply {
                ident: 0xFFFF,
                seq_no: 0,
                data: &[],
            },
            Repr::DstUnreachable {
                code: CODE_FRAG_NEEDED,
                next_hop_mtu: 1280,
                data: &data,
            },
        ] {
            let mut buf = vec![0xAAu8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
            assert_eq!(
                Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(),
                repr
            );
        }
        let b = filled(&ECHO);
        let repr = Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap();
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, b);
    }
}
