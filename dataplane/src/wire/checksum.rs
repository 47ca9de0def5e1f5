//! The Internet checksum (RFC 1071): full sums, pseudo-header sums, and RFC 1624 incremental
//! updates.
//!
//! Vocabulary, as in smoltcp's `wire::ip::checksum`:
//!
//! - a *sum* ([`sum`], [`data`], [`combine`], [`pseudo_header_v4`], [`pseudo_header_v6`]) is the
//!   one's-complement sum of 16-bit big-endian words, folded to 16 bits, **not** complemented;
//! - a *checksum* is the complement of a sum, as it is written on the wire ([`compute`]).
//!
//! A checksum field verifies when the sum over the covered bytes (checksum field included, plus
//! the pseudo-header where the protocol has one) is `0xFFFF`.
//!
//! The incremental helpers implement RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, which has no
//! "minus zero" problem: for consistent inputs the result equals a full recomputation bit for bit,
//! including when the new sum is `0xFFFF` (checksum `0x0000`). The one exception is covered data
//! that becomes all zeros (full: `0xFFFF`, incremental: `0x0000`), which no IP, TCP or UDP header
//! can be, since the version or protocol is part of it. Equation 2 (`HC - ~m - m'`) would
//! give `0xFFFF` there; the tests pin that case with RFC 1624's own example. UDP, which spells
//! "no checksum" as `0x0000`, must map a computed `0x0000` to `0xFFFF` after an update (see
//! [`udp_nonzero`]) and must leave a zero (absent) IPv4 UDP checksum alone.
//!
//! None of these functions allocate or panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::IpProtocol;

/// Folds a wide one's-complement accumulator to 16 bits with end-around carry.
#[inline]
#[must_use]
// Each `as` narrows a value that was shifted or is meant to be cut to its low half; the carries
// are added back, so nothing is lost.
#[allow(clippy::cast_possible_truncation)]
pub const fn fold(sum: u64) -> u16 {
    let (s, c) = ((sum >> 32) as u32).overflowing_add(sum as u32);
    // When `c` is set, `s` <= u32::MAX - 1, so adding the carry cannot overflow.
    let s = s + c as u32;
    let (s, c) = ((s >> 16) as u16).overflowing_add(s as u16);
    s + c as u16
}

/// Wide (unfolded) one's-complement sum of `data` as big-endian 16-bit words; an odd trailing
/// byte is padded with a zero byte, as RFC 1071 says.
///
/// Reads 8 bytes at a time and adds both 32-bit halves into a `u64`, so the loop has no carry
/// chain and vectorises; the accumulator cannot overflow below 16 GiB of input.
#[inline]
#[must_use]
pub fn sum(data: &[u8]) -> u64 {
    let (chunks, rest) = data.as_chunks::<8>();
    let mut acc: u64 = 0;
    for c in chunks {
        let w = u64::from_be_bytes(*c);
        acc += (w >> 32) + (w & 0xFFFF_FFFF);
    }
    let (words, tail) = rest.as_chunks::<2>();
    for w in words {
        acc += u64::from(u16::from_be_bytes(*w));
    }
    if let [b] = tail {
        acc += u64::from(*b) << 8;
    }
    acc
}

/// One's-complement sum of `data`, folded to 16 bits (not complemented).
#[inline]
#[must_use]
pub fn data(data: &[u8]) -> u16 {
    fold(sum(data))
}

/// Combines partial 16-bit sums (from [`data`] or the pseudo-header functions) into one.
#[inline]
#[must_use]
pub fn combine(sums: &[u16]) -> u16 {
    let mut acc: u64 = 0;
    for s in sums {
        acc += u64::from(*s);
    }
    fold(acc)
}

/// The checksum of `data` as written on the wire: the complement of [`data`].
#[inline]
#[must_use]
pub fn compute(data: &[u8]) -> u16 {
    !self::data(data)
}

/// Sum of the IPv4 pseudo-header (RFC 793 §3.1, RFC 768): addresses, zero, protocol, and the
/// upper-layer length.
#[inline]
#[must_use]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, length: u32) -> u16 {
    let acc = u64::from(src.to_bits())
        + u64::from(dst.to_bits())
        + u64::from(protocol.0)
        + u64::from(length);
    fold(acc)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, 32-bit upper-layer length, next
/// header. `protocol` is the upper-layer protocol, not the first extension header.
#[inline]
#[must_use]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, protocol: IpProtocol, length: u32) -> u16 {
    let acc =
        sum128(src.to_bits()) + sum128(dst.to_bits()) + u64::from(protocol.0) + u64::from(length);
    fold(acc)
}

/// Adds the four 32-bit words of a 128-bit value.
#[inline]
// Each cast keeps exactly the low 32 bits of a shifted value, which is the point.
#[allow(clippy::cast_possible_truncation)]
const fn sum128(v: u128) -> u64 {
    (v as u32) as u64
        + ((v >> 32) as u32) as u64
        + ((v >> 64) as u32) as u64
        + ((v >> 96) as u32) as u64
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word of the covered data changed from `old`
/// to `new`. `old_csum` is the checksum as on the wire.
#[inline]
#[must_use]
pub const fn update_u16(old_csum: u16, old: u16, new: u16) -> u16 {
    !fold((!old_csum) as u64 + (!old) as u64 + new as u64)
}

/// [`update_u16`] for an aligned 32-bit field (two words), e.g. a TCP sequence number or an IPv4
/// address (`u32::from(addr)`).
#[inline]
#[must_use]
pub const fn update_u32(old_csum: u16, old: u32, new: u32) -> u16 {
    // `!old` complements both 16-bit halves at once; summing the 32-bit value is the same as
    // summing its halves modulo 0xFFFF.
    !fold((!old_csum) as u64 + (!old) as u64 + new as u64)
}

/// [`update_u32`] for an IPv4 address: the IPv4 header checksum, and the TCP/UDP checksums
/// through the pseudo-header.
#[inline]
#[must_use]
pub const fn update_ipv4_addr(old_csum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_u32(old_csum, old.to_bits(), new.to_bits())
}

/// [`update_u16`] for a 16-byte IPv6 address (TCP/UDP/ICMPv6 checksums through the
/// pseudo-header).
#[inline]
#[must_use]
pub const fn update_ipv6_addr(old_csum: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    !fold((!old_csum) as u64 + sum128(!old.to_bits()) + sum128(new.to_bits()))
}

/// Maps a computed UDP checksum of `0x0000` to `0xFFFF` (RFC 768: zero means "no checksum").
/// Apply it after [`update_u16`] and friends when the field being updated is a UDP checksum
/// that was present (non-zero).
#[inline]
#[must_use]
pub const fn udp_nonzero(csum: u16) -> u16 {
    if csum == 0 { 0xFFFF } else { csum }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Straightforward RFC 1071 reference: 16-bit words, 32-bit accumulator, fold in a loop.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u32::from(*b));
            acc += hi | lo;
            while acc > 0xFFFF {
                acc = (acc & 0xFFFF) + (acc >> 16);
            }
        }
        u16::try_from(acc).unwrap()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(compute(&bytes), !0xddf2);
    }

    #[test]
    fn fold_edges() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xFFFF), 0xFFFF);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0x1_FFFE), 0xFFFF);
        assert_eq!(fold(u64::MAX), 0xFFFF);
        assert_eq!(fold(0xFFFF_FFFF), 0xFFFF);
    }

    #[test]
    fn odd_lengths_and_empty() {
        assert_eq!(data(&[]), 0);
        assert_eq!(data(&[0xAB]), 0xAB00);
        assert_eq!(data(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len)
                .map(|i: u8| i.wrapping_mul(37).wrapping_add(11))
                .collect();
            assert_eq!(data(&bytes), reference(&bytes), "len {len}");
        }
    }

    #[test]
    fn known_ipv4_header() {
        // A classic example header (Wikipedia "IPv4 header checksum") with its checksum b861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(data(&hdr), 0xFFFF);
        let mut zeroed = hdr;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(compute(&zeroed), 0xb861);
    }

    #[test]
    fn rfc1624_minus_zero_example() {
        // RFC 1624 §4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285. Eqn. 3 gives 0x0000, the
        // checksum a full recomputation gives; eqn. 2 would give 0xFFFF.
        assert_eq!(update_u16(0xDD2F, 0x5555, 0x3285), 0x0000);
    }

    /// Full recomputation of a checksum field at `at` over `bytes`.
    fn recompute(bytes: &mut [u8], at: usize) -> u16 {
        bytes[at] = 0;
        bytes[at + 1] = 0;
        let c = compute(bytes);
        bytes[at..at + 2].copy_from_slice(&c.to_be_bytes());
        c
    }

    #[test]
    fn incremental_to_and_from_all_ones_and_zero() {
        // (a fixed non-zero word, the edited word before, after): words that flip between
        // 0x0000 and 0xFFFF (the RFC 1624 trouble spot), and edits that move the sum onto and
        // off 0xFFFF (checksum 0x0000).
        let cases: &[(u16, u16, u16)] = &[
            (0x0001, 0x0000, 0xFFFF),
            (0x0001, 0xFFFF, 0x0000),
            (0x0001, 0x1234, 0xFFFE),
            (0x0001, 0xFFFE, 0x1234),
            (0xFFFF, 0x0000, 0xFFFF),
            (0xFFFF, 0xFFFF, 0x0000),
            (0x8000, 0x7FFF, 0x8000),
            (0x4500, 0xBAFF, 0xBAFE),
        ];
        for &(fixed, old, new) in cases {
            let mut before = [0u8; 6];
            before[2..4].copy_from_slice(&fixed.to_be_bytes());
            before[4..6].copy_from_slice(&old.to_be_bytes());
            let c0 = recompute(&mut before, 0);
            let mut after = before;
            after[4..6].copy_from_slice(&new.to_be_bytes());
            let full = recompute(&mut after, 0);
            assert_eq!(
                update_u16(c0, old, new),
                full,
                "{fixed:#x}: {old:#x} -> {new:#x}"
            );
            assert_eq!(data(&after), 0xFFFF, "updated checksum verifies");
        }
    }

    #[test]
    fn all_zero_data_is_the_one_divergence() {
        // Documented limit of eqn. 3: when the covered data becomes all zeros, a full
        // recomputation gives 0xFFFF and the update gives 0x0000 (+0 vs -0). No IP, TCP or UDP
        // header can be all zeros (version, protocol), so this never reaches the wire.
        let c0 = compute(&[0, 0, 0xFF, 0xFF]);
        assert_eq!(c0, 0x0000);
        assert_eq!(update_u16(c0, 0xFFFF, 0x0000), 0x0000);
        assert_eq!(compute(&[0, 0, 0, 0]), 0xFFFF);
    }

    #[test]
    fn pseudo_header_v4_matches_bytes() {
        let src = Ipv4Addr::new(192, 0, 2, 1);
        let dst = Ipv4Addr::new(198, 51, 100, 7);
        let mut ph = Vec::new();
        ph.extend_from_slice(&src.octets());
        ph.extend_from_slice(&dst.octets());
        ph.extend_from_slice(&[0, 6, 0x05, 0xdc]);
        assert_eq!(pseudo_header_v4(src, dst, IpProtocol::TCP, 1500), data(&ph));
    }

    #[test]
    fn pseudo_header_v6_matches_bytes() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:ffff::abcd:2".parse().unwrap();
        let mut ph = Vec::new();
        ph.extend_from_slice(&src.octets());
        ph.extend_from_slice(&dst.octets());
        ph.extend_from_slice(&70_000u32.to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(
            pseudo_header_v6(src, dst, IpProtocol::UDP, 70_000),
            data(&ph)
        );
    }

    proptest! {
        #[test]
        fn sum_matches_reference(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(data(&bytes), reference(&bytes));
        }

        #[test]
        fn split_sums_combine(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            cut in 0usize..150,
        ) {
            // Sums of even-length prefixes combine with the rest (RFC 1071 associativity).
            let cut = (cut * 2).min(bytes.len() & !1);
            let (a, b) = bytes.split_at(cut);
            prop_assert_eq!(combine(&[data(a), data(b)]), data(&bytes));
        }

        #[test]
        fn update_u16_equals_recompute(
            mut bytes in proptest::collection::vec(any::<u8>(), 4..64),
            word in 1usize..32,
            new in prop_oneof![Just(0u16), Just(0xFFFF), any::<u16>()],
        ) {
            // A word other than the checksum's own (word 0).
            let words = bytes.len() / 2;
            let at = 2 * (1 + word % (words - 1));
            let c0 = recompute(&mut bytes, 0);
            let old = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
            bytes[at..at + 2].copy_from_slice(&new.to_be_bytes());
            // All-zero data is the documented +0/-0 divergence; no real header is all zeros.
            prop_assume!(bytes[2..].iter().any(|b| *b != 0));
            let full = recompute(&mut bytes, 0);
            prop_assert_eq!(update_u16(c0, old, new), full);
        }

        #[test]
        fn update_u32_equals_recompute(
            mut bytes in proptest::collection::vec(any::<u8>(), 8..64),
            new in prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()],
        ) {
            let c0 = recompute(&mut bytes, 0);
            let old = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            bytes[4..8].copy_from_slice(&new.to_be_bytes());
            // All-zero data is the documented +0/-0 divergence; no real header is all zeros.
            prop_assume!(bytes[2..].iter().any(|b| *b != 0));
            let full = recompute(&mut bytes, 0);
            prop_assert_eq!(update_u32(c0, old, new), full);
            prop_assert_eq!(
                update_ipv4_addr(c0, Ipv4Addr::from_bits(old), Ipv4Addr::from_bits(new)),
                full
            );
        }

        #[test]
        fn update_ipv6_equals_recompute(
            mut bytes in proptest::collection::vec(any::<u8>(), 18..80),
            new in any::<[u8; 16]>(),
        ) {
            let c0 = recompute(&mut bytes, 0);
            let mut old = [0u8; 16];
            old.copy_from_slice(&bytes[2..18]);
            bytes[2..18].copy_from_slice(&new);
            // All-zero data is the documented +0/-0 divergence; no real header is all zeros.
            prop_assume!(bytes[2..].iter().any(|b| *b != 0));
            let full = recompute(&mut bytes, 0);
            prop_assert_eq!(
                update_ipv6_addr(c0, Ipv6Addr::from(old), Ipv6Addr::from(new)),
                full
            );
        }

        #[test]
        fn pseudo_v4_edit_updates_like_recompute(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new_src in any::<[u8; 4]>(),
            payload in proptest::collection::vec(any::<u8>(), 8..64),
        ) {
            // The NAT case: a TCP-like checksum at payload[0..2] covers the pseudo-header; only
            // the pseudo-header's source address changes.
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let new_src = Ipv4Addr::from(new_src);
            let len = u32::try_from(payload.len()).unwrap();
            let full = |s: Ipv4Addr, p: &mut Vec<u8>| {
                p[0] = 0;
                p[1] = 0;
                let c = !combine(&[pseudo_header_v4(s, dst, IpProtocol::TCP, len), data(p)]);
                p[0..2].copy_from_slice(&c.to_be_bytes());
                c
            };
            let mut p = payload.clone();
            let c0 = full(src, &mut p);
            let c1 = full(new_src, &mut p);
            prop_assert_eq!(update_ipv4_addr(c0, src, new_src), c1);
        }
    }
}
