//! ICMPv6 (RFC 4443) and the two Neighbor Discovery messages the dataplane answers
//! (RFC 4861 neighbor solicitation / advertisement), with the link-layer address options.
//!
//! ```text
//!  0       8       16                32
//! +-------+-------+-----------------+
//! | type  | code  |    checksum     |
//! +-------+-------+-----------------+
//! |  ident/seq, MTU, pointer, NA flags (4 bytes)
//! +---------------------------------+
//! |  NS/NA/redirect: target address (16 bytes), then NDP options;
//! |  errors: the quoted packet; echo: data
//! +---------------------------------+
//! ```
//!
//! The checksum covers the IPv6 pseudo-header, so verifying and emitting take the addresses.
//! The IPv6-level NDP checks (hop limit 255, RFC 4861 §7.1) are the caller's: this module only
//! sees the ICMPv6 bytes.

use std::net::Ipv6Addr;

use super::ethernet::EthernetAddress;
use super::{Error, IpProtocol, Result, be16, be32, checksum, len32};

mod field {
    pub(super) type Field = core::ops::Range<usize>;
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Field = 2..4;
    pub(super) const REST: Field = 4..8;
    pub(super) const ECHO_IDENT: Field = 4..6;
    pub(super) const ECHO_SEQNO: Field = 6..8;
    pub(super) const NA_FLAGS: usize = 4;
    pub(super) const DATA: usize = 8;
    pub(super) const TARGET: Field = 8..24;
}

/// Length of the common header (type, code, checksum, 4 message-specific bytes).
pub const HEADER_LEN: usize = field::DATA;
/// Length of a neighbor solicitation / advertisement before its options.
pub const NDP_HEADER_LEN: usize = field::TARGET.end;

/// An ICMPv6 message type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Message(pub u8);

// === impl Message ===

impl Message {
    /// Destination unreachable, 1.
    pub const DST_UNREACHABLE: Self = Self(1);
    /// Packet too big, 2.
    pub const PKT_TOO_BIG: Self = Self(2);
    /// Time exceeded, 3.
    pub const TIME_EXCEEDED: Self = Self(3);
    /// Parameter problem, 4.
    pub const PARAM_PROBLEM: Self = Self(4);
    /// Echo request, 128.
    pub const ECHO_REQUEST: Self = Self(128);
    /// Echo reply, 129.
    pub const ECHO_REPLY: Self = Self(129);
    /// Router solicitation, 133.
    pub const ROUTER_SOLICIT: Self = Self(133);
    /// Router advertisement, 134.
    pub const ROUTER_ADVERT: Self = Self(134);
    /// Neighbor solicitation, 135.
    pub const NEIGHBOR_SOLICIT: Self = Self(135);
    /// Neighbor advertisement, 136.
    pub const NEIGHBOR_ADVERT: Self = Self(136);
    /// Redirect, 137.
    pub const REDIRECT: Self = Self(137);

    /// Whether this is an error message (types 0..=127) that quotes the invoking packet.
    #[inline]
    #[must_use]
    pub const fn is_error(self) -> bool {
        self.0 < 128
    }

    /// Length of the fixed part of this message type, before its data or options.
    #[inline]
    #[must_use]
    pub const fn header_len(self) -> usize {
        match self.0 {
            135 | 136 => NDP_HEADER_LEN,
            134 => 16,
            137 => 40,
            _ => HEADER_LEN,
        }
    }

    #[inline]
    const fn has_target(self) -> bool {
        matches!(self.0, 135..=137)
    }
}

/// Neighbor advertisement flags (the high bits of byte 4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct NeighborFlags(pub u8);

impl NeighborFlags {
    /// Router flag.
    pub const ROUTER: u8 = 0x80;
    /// Solicited flag: this answers a solicitation.
    pub const SOLICITED: u8 = 0x40;
    /// Override flag: replace a cached link-layer address.
    pub const OVERRIDE: u8 = 0x20;
}

/// NDP option type: source link-layer address.
pub const NDP_OPT_SOURCE_LLADDR: u8 = 1;
/// NDP option type: target link-layer address.
pub const NDP_OPT_TARGET_LLADDR: u8 = 2;

/// Finds the first Ethernet link-layer address option of type `kind` among NDP `options`,
/// validating every option's length on the way (RFC 4861 §4.6: a zero length invalidates the
/// whole message). The walk consumes at least 8 bytes per option, so it is bounded by the
/// buffer length.
///
/// # Errors
///
/// [`Error::Malformed`] for a zero-length option; [`Error::Truncated`] for one that runs past
/// the buffer.
pub fn ndp_lladdr_option(options: &[u8], kind: u8) -> Result<Option<EthernetAddress>> {
    let mut rest = options;
    let mut found = None;
    while !rest.is_empty() {
        let [ty, len, ..] = *rest else {
            return Err(Error::Truncated);
        };
        let len = usize::from(len) * 8;
        if len == 0 {
            return Err(Error::Malformed);
        }
        let (opt, tail) = rest.split_at_checked(len).ok_or(Error::Truncated)?;
        if ty == kind
            && found.is_none()
            && let Some(mac) = opt.get(2..8)
        {
            let mut a = [0u8; 6];
            a.copy_from_slice(mac);
            found = Some(EthernetAddress(a));
        }
        rest = tail;
    }
    Ok(found)
}

/// A read/write view of an ICMPv6 message.
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
    /// See [`Packet::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the 8-byte header and the fixed part of its message type
    /// ([`Message::header_len`]: 24 bytes for NS/NA).
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if it does not.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.msg_type().header_len() {
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

    /// Message type (readable on any non-empty buffer).
    #[inline]
    pub fn msg_type(&self) -> Message {
        Message(self.buffer.as_ref().first().copied().unwrap_or(0))
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

    /// The four message-specific bytes after the checksum.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REST.start)
    }

    /// Echo identifier.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Echo sequence number.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
    }

    /// MTU (packet too big).
    #[inline]
    pub fn mtu(&self) -> u32 {
        self.rest_of_header()
    }

    /// Pointer (parameter problem).
    #[inline]
    pub fn pointer(&self) -> u32 {
        self.rest_of_header()
    }

    /// Neighbor advertisement flags.
    #[inline]
    pub fn neighbor_flags(&self) -> NeighborFlags {
        NeighborFlags(self.buffer.as_ref()[field::NA_FLAGS] & 0xE0)
    }

    /// Target address of a neighbor solicitation / advertisement or redirect; `None` for
    /// other types.
    #[inline]
    pub fn target_addr(&self) -> Option<Ipv6Addr> {
        if !self.msg_type().has_target() {
            return None;
        }
        let b = self.buffer.as_ref().get(field::TARGET)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Some(Ipv6Addr::from(a))
    }

    /// What follows the type's fixed part: echo data, the quoted packet of an error, or the
    /// NDP options.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let start = self.msg_type().header_len();
        self.buffer.as_ref().get(start..).unwrap_or_default()
    }

    /// Whether the checksum over the whole buffer and the pseudo-header is valid.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let d = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, len32(d));
        checksum::combine(&[ph, checksum::data(d)]) == 0xFFFF
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

    /// Sets the four message-specific bytes (MTU, pointer, NA flags + reserved...).
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

    /// Sets the target address.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than 24 bytes.
    #[inline]
    pub fn set_target_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::TARGET].copy_from_slice(&value.octets());
    }

    /// Computes and writes the checksum over the whole buffer and the pseudo-header.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let d = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, len32(d));
        let c = !checksum::combine(&[ph, checksum::data(d)]);
        self.set_checksum(c);
    }

    /// Mutable payload (see [`Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.msg_type().header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A high-level representation of the ICMPv6 messages the dataplane reads or builds.
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
    /// Destination unreachable.
    DstUnreachable {
        /// Code.
        code: u8,
        /// The quoted packet.
        data: &'a [u8],
    },
    /// Packet too big.
    PacketTooBig {
        /// MTU of the next hop.
        mtu: u32,
        /// The quoted packet (as much as fits in the minimum MTU).
        data: &'a [u8],
    },
    /// Neighbor solicitation.
    NeighborSolicit {
        /// The address being resolved.
        target_addr: Ipv6Addr,
        /// The sender's MAC (source link-layer address option); absent in DAD probes.
        lladdr: Option<EthernetAddress>,
    },
    /// Neighbor advertisement.
    NeighborAdvert {
        /// Router / solicited / override flags.
        flags: NeighborFlags,
        /// The address being advertised.
        target_addr: Ipv6Addr,
        /// The advertiser's MAC (target link-layer address option).
        lladdr: Option<EthernetAddress>,
    },
}

// === impl Repr ===

impl<'a> Repr<'a> {
    /// Parses a message; the checksum is verified against `src` / `dst`.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if short (options included), [`Error::Malformed`] on a bad
    /// checksum, a non-zero NS/NA/echo code or a zero-length NDP option,
    /// [`Error::Unsupported`] for other message types.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        packet: &Packet<&'a T>,
    ) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::Malformed);
        }
        let buffer: &'a T = packet.buffer;
        let bytes: &'a [u8] = buffer.as_ref();
        let ty = packet.msg_type();
        let rest = bytes.get(ty.header_len()..).unwrap_or_default();
        let code = packet.msg_code();
        match ty {
            Message::ECHO_REQUEST | Message::ECHO_REPLY if code != 0 => Err(Error::Malformed),
            Message::ECHO_REQUEST => Ok(Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data: rest,
            }),
            Message::ECHO_REPLY => Ok(Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data: rest,
            }),
            Message::DST_UNREACHABLE => Ok(Repr::DstUnreachable { code, data: rest }),
            Message::PKT_TOO_BIG => Ok(Repr::PacketTooBig {
                mtu: packet.mtu(),
                data: rest,
            }),
            Message::NEIGHBOR_SOLICIT | Message::NEIGHBOR_ADVERT if code != 0 => {
                Err(Error::Malformed)
            }
            Message::NEIGHBOR_SOLICIT => Ok(Repr::NeighborSolicit {
                target_addr: packet.target_addr().ok_or(Error::Truncated)?,
                lladdr: ndp_lladdr_option(rest, NDP_OPT_SOURCE_LLADDR)?,
            }),
            Message::NEIGHBOR_ADVERT => Ok(Repr::NeighborAdvert {
                flags: packet.neighbor_flags(),
                target_addr: packet.target_addr().ok_or(Error::Truncated)?,
                lladdr: ndp_lladdr_option(rest, NDP_OPT_TARGET_LLADDR)?,
            }),
            _ => Err(Error::Unsupported),
        }
    }

    /// Bytes [`Repr::emit`] writes.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self {
            Repr::EchoRequest { data, .. }
            | Repr::EchoReply { data, .. }
            | Repr::DstUnreachable { data, .. }
            | Repr::PacketTooBig { data, .. } => HEADER_LEN + data.len(),
            Repr::NeighborSolicit { lladdr, .. } | Repr::NeighborAdvert { lladdr, .. } => {
                NDP_HEADER_LEN + if lladdr.is_some() { 8 } else { 0 }
            }
        }
    }

    /// Writes the message and its checksum (with the `src` / `dst` pseudo-header).
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`Repr::buffer_len`]. A longer buffer is fine, but then
    /// the checksum covers the extra bytes too: pass exactly `buffer_len` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        packet: &mut Packet<T>,
    ) {
        let mut data: &[u8] = &[];
        let mut option: Option<(u8, EthernetAddress)> = None;
        match *self {
            Repr::EchoRequest {
                ident,
                seq_no,
                data: d,
            }
            | Repr::EchoReply {
                ident,
                seq_no,
                data: d,
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
                data = d;
            }
            Repr::DstUnreachable { code, data: d } => {
                packet.set_msg_type(Message::DST_UNREACHABLE);
                packet.set_msg_code(code);
                packet.set_rest_of_header(0);
                data = d;
            }
            Repr::PacketTooBig { mtu, data: d } => {
                packet.set_msg_type(Message::PKT_TOO_BIG);
                packet.set_msg_code(0);
                packet.set_rest_of_header(mtu);
                data = d;
            }
            Repr::NeighborSolicit {
                target_addr,
                lladdr,
            } => {
                packet.set_msg_type(Message::NEIGHBOR_SOLICIT);
                packet.set_msg_code(0);
                packet.set_rest_of_header(0);
                packet.set_target_addr(target_addr);
                option = lladdr.map(|a| (NDP_OPT_SOURCE_LLADDR, a));
            }
            Repr::NeighborAdvert {
                flags,
                target_addr,
                lladdr,
            } => {
                packet.set_msg_type(Message::NEIGHBOR_ADVERT);
                packet.set_msg_code(0);
                packet.set_rest_of_header(u32::from(flags.0 & 0xE0) << 24);
                packet.set_target_addr(target_addr);
                option = lladdr.map(|a| (NDP_OPT_TARGET_LLADDR, a));
            }
        }
        let payload = packet.payload_mut();
        payload[..data.len()].copy_from_slice(data);
        if let Some((kind, mac)) = option {
            payload[0] = kind;
            payload[1] = 1;
            payload[2..8].copy_from_slice(&mac.0);
        }
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// Neighbor solicitation from fe80::1 (52:54:00:12:34:56) for 2001:db8::10, to its
    /// solicited-node group ff02::1:ff00:10. Hand-assembled; the checksum is filled by `ns()`.
    static NS: [u8; 32] = [
        0x87, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // type 135, reserved
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // target
        0x01, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // SLLA option
    ];

    fn ns() -> Vec<u8> {
        let mut v = NS.to_vec();
        Packet::new_unchecked(&mut v[..]).fill_checksum(a("fe80::1"), a("ff02::1:ff00:10"));
        v
    }

    #[test]
    fn decode_ns() {
        let b = ns();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Message::NEIGHBOR_SOLICIT);
        assert!(!p.msg_type().is_error());
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.target_addr(), Some(a("2001:db8::10")));
        assert_eq!(p.payload(), &NS[24..]);
        assert!(p.verify_checksum(a("fe80::1"), a("ff02::1:ff00:10")));
        assert!(!p.verify_checksum(a("fe80::2"), a("ff02::1:ff00:10")));
        let repr = Repr::parse(a("fe80::1"), a("ff02::1:ff00:10"), &p).unwrap();
        assert_eq!(
            repr,
            Repr::NeighborSolicit {
                target_addr: a("2001:db8::10"),
                lladdr: Some(EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])),
            }
        );
    }

    #[test]
    fn answer_ns_with_na() {
        let b = ns();
        let p = Packet::new_checked(&b[..]).unwrap();
        let Repr::NeighborSolicit { target_addr, .. } =
            Repr::parse(a("fe80::1"), a("ff02::1:ff00:10"), &p).unwrap()
        else {
            panic!()
        };
        let ours = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
        let na = Repr::NeighborAdvert {
            flags: NeighborFlags(NeighborFlags::SOLICITED | NeighborFlags::OVERRIDE),
            target_addr,
            lladdr: Some(ours),
        };
        let mut out = vec![0u8; na.buffer_len()];
        na.emit(
            target_addr,
            a("fe80::1"),
            &mut Packet::new_unchecked(&mut out[..]),
        );
        assert_eq!(out.len(), 32);
        assert_eq!(&out[..2], &[136, 0]);
        assert_eq!(&out[4..8], &[0x60, 0, 0, 0]);
        assert_eq!(&out[24..], &[2, 1, 0x02, 0, 0, 0, 0, 0x01]);
        let p = Packet::new_checked(&out[..]).unwrap();
        assert_eq!(p.neighbor_flags(), NeighborFlags(0x60));
        assert_eq!(Repr::parse(target_addr, a("fe80::1"), &p).unwrap(), na);
    }

    #[test]
    fn ndp_options() {
        let mac = EthernetAddress([1, 2, 3, 4, 5, 6]);
        // A prefix-information option (32 bytes) that runs past the buffer.
        assert_eq!(
            ndp_lladdr_option(&[3, 4, 0, 0, 0, 0, 0, 0], 1),
            Err(Error::Truncated)
        );
        // Prefix option, then SLLA.
        let mut ok = vec![3, 4];
        ok.resize(32, 0);
        ok.extend_from_slice(&[1, 1, 1, 2, 3, 4, 5, 6]);
        assert_eq!(ndp_lladdr_option(&ok, 1), Ok(Some(mac)));
        assert_eq!(ndp_lladdr_option(&ok, 2), Ok(None));
        assert_eq!(ndp_lladdr_option(&[], 1), Ok(None));
        assert_eq!(
            ndp_lladdr_option(&[1, 0, 0, 0, 0, 0, 0, 0], 1),
            Err(Error::Malformed)
        );
        // A zero-length option after the match still invalidates the message.
        let mut bad = ok.clone();
        bad.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ndp_lladdr_option(&bad, 1), Err(Error::Malformed));
        assert_eq!(ndp_lladdr_option(&[1], 1), Err(Error::Truncated));
    }

    #[test]
    fn lengths_and_non_ndp_target() {
        let b = ns();
        assert_eq!(Packet::new_checked(&b[..23]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&b[..7]).unwrap_err(), Error::Truncated);
        let echo = [128u8, 0, 0, 0, 0, 1, 0, 2];
        let p = Packet::new_checked(&echo[..]).unwrap();
        assert_eq!(p.target_addr(), None);
        assert!(p.payload().is_empty());
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (1, 2));
    }

    #[test]
    fn packet_too_big() {
        let quoted = [0x60u8, 0, 0, 0, 0, 0x10, 6, 64];
        let repr = Repr::PacketTooBig {
            mtu: 1280,
            data: &quoted,
        };
        let (s, d) = (a("2001:db8::1"), a("2001:db8::2"));
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(s, d, &mut Packet::new_unchecked(&mut out[..]));
        let p = Packet::new_checked(&out[..]).unwrap();
        assert!(p.msg_type().is_error());
        assert_eq!(p.mtu(), 1280);
        assert_eq!(p.payload(), &quoted);
        assert_eq!(Repr::parse(s, d, &p).unwrap(), repr);
    }

    #[test]
    fn round_trip_all() {
        let (s, d) = (a("fe80::a"), a("fe80::b"));
        let data = [9u8; 11];
        for repr in [
            Repr::EchoRequest {
                ident: 1,
                seq_no: 2,
                data: &data,
            },
            Repr::EchoReply {
                ident: 3,
                seq_no: 4,
                data: &[],
            },
            Repr::DstUnreachable {
                code: 4,
                data: &data,
            },
            Repr::PacketTooBig {
                mtu: 1500,
                data: &data,
            },
            Repr::NeighborSolicit {
                target_addr: s,
                lladdr: None,
            },
            Repr::NeighborAdvert {
                flags: NeighborFlags(NeighborFlags::ROUTER),
                target_addr: d,
                lladdr: None,
            },
        ] {
            let mut out = vec![0x55u8; repr.buffer_len()];
            repr.emit(s, d, &mut Packet::new_unchecked(&mut out[..]));
            assert_eq!(
                Repr::parse(s, d, &Packet::new_checked(&out[..]).unwrap()),
                Ok(repr)
            );
        }
    }
}
