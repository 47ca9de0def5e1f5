//! Flow identity: the [`FlowKey`] 5-tuple every table is keyed by, and [`flow_hash`], the
//! stateless hash that picks a Maglev entry (`table[flow_hash % M]`).
//!
//! # Contract
//!
//! - **One key type for both families.** Addresses are stored as 128-bit values (IPv6 width);
//!   an IPv4 address is stored v4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) and the key carries its
//!   [`Family`], so an IPv4 flow and the IPv6 flow to the mapped address are different keys
//!   with different hashes.
//! - **`flow_hash` is a cross-node contract.** Every LB node must send a given flow to the same
//!   backend without sharing state, so the hash is a pure function of the key and the seed and
//!   gives the same value on every machine, CPU and build: xxh3-64 (as specified by the
//!   xxHash project, `xxhash_rust::xxh3::xxh3_64_with_seed`) over the fixed 38-byte
//!   serialization below, with the Maglev seed every node shares (configuration, never
//!   random). Changing the function, the seed or a single byte of the layout moves nearly
//!   every stateless flow on the nodes that run the new build — treat it like an ABI.
//!   `flow::tests::golden_*` freeze reference values so such a change cannot happen by
//!   accident. Process-local tables (conntrack) use a [`KeyedHash`] with random secrets instead;
//!   that hash is never shared.
//!
//! ```text
//!  offset  len  field
//!       0    1  family: 4 or 6
//!       1    1  IP protocol number
//!       2   16  source address (IPv4: v4-mapped ::ffff:a.b.c.d)
//!      18   16  destination address (same)
//!      34    2  source port, big-endian (0 when the protocol has none, and for fragments)
//!      36    2  destination port, big-endian (same)
//! ```
//!
//! - **Client-IP affinity hashes the source only.** A service with client-IP affinity picks
//!   by [`client_hash`]: the same serialization with only the family and the source address
//!   set (protocol and ports zero, destination the family's unspecified address, stored as
//!   usual: `::ffff:0.0.0.0` for IPv4, `::` for IPv6), so every flow and fragment of a client
//!   lands on one backend on every node.
//! - **Fragments hash on the 3-tuple.** Any IP fragment — the first (offset 0, MF set) as
//!   well as later ones — must use [`flow_hash_3tuple`] / [`FlowKey::three_tuple`], which is
//!   the same serialization with both ports zero. Only the first fragment carries the L4
//!   header, so hashing it on the 5-tuple would send it to a different backend from the rest
//!   of its datagram, which could then never be reassembled.
//!
//! Both functions allocate nothing and do not branch. [`flow_hash`] computes xxh3 straight
//! from the key's fields; a test holds it equal to the library on the serialized bytes.
//! `bench/benches/conntrack.rs` measures it.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::IpProtocol;

/// Length of the serialization [`flow_hash`] hashes (see the module docs).
pub const FLOW_HASH_INPUT_LEN: usize = 38;

/// Address family of a [`FlowKey`]. The discriminant is the byte [`flow_hash`] serializes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub enum Family {
    /// IPv4; addresses are stored v4-mapped.
    V4 = 4,
    /// IPv6.
    V6 = 6,
}

/// A flow's 5-tuple: `(family, protocol, src, dst, src port, dst port)`.
///
/// 40 bytes, `Copy`, alignment 8; `Option<FlowKey>` is the same size (the [`Family`] byte
/// gives the niche). Ports are host-order numbers; they are 0 for protocols without ports and
/// in 3-tuple keys (fragments).
///
/// Addresses are held as numbers (`Ipv6Addr::to_bits`, split in a high and a low word), not
/// as 16 bytes: a key is then built from a parsed IPv4 address with one load, a byte swap
/// and an OR. A key assembled byte by byte was rebuilt into words by shifts and ORs on every
/// packet (some 40 instructions). With `repr(C)` and an explicit zero pad, the key is five
/// whole words ([`FlowKey::words`]), which is how it is compared and hashed. The order
/// ([`Ord`]) is still family, protocol, source, destination, ports, with addresses in byte
/// order: comparing the (high, low) words is comparing the bytes.
#[derive(Clone, Copy, Eq)]
#[repr(C)]
pub struct FlowKey {
    /// `[high, low]` 64-bit halves of the source address's 128-bit value.
    src: [u64; 2],
    /// The same for the destination.
    dst: [u64; 2],
    /// `src_port << 16 | dst_port`: one field, so that a key is stored and read back as one
    /// word. Two `u16` fields were stored apart and then read as one combined load by the
    /// hash, which cannot take its data from two pending stores (a store-forwarding stall on
    /// every conntrack lookup). The order is the same as the two ports' order.
    ports: u32,
    family: Family,
    proto: u8,
    /// Always 0: the last word of the key has no padding bytes in it.
    pad: u16,
}

const _: () = assert!(size_of::<FlowKey>() == 40);
const _: () = assert!(size_of::<Option<FlowKey>>() == 40);

/// [`FlowKey::ports`] of two ports.
#[inline]
const fn pack_ports(src_port: u16, dst_port: u16) -> u32 {
    (src_port as u32) << 16 | dst_port as u32
}

// === impl FlowKey ===

impl FlowKey {
    /// An IPv4 5-tuple.
    #[inline(always)]
    #[must_use]
    pub const fn v4(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        src_port: u16,
        dst_port: u16,
        proto: IpProtocol,
    ) -> Self {
        Self {
            family: Family::V4,
            proto: proto.0,
            src: v4_words(src),
            dst: v4_words(dst),
            ports: pack_ports(src_port, dst_port),
            pad: 0,
        }
    }

    /// An IPv6 5-tuple.
    #[inline(always)]
    #[must_use]
    pub const fn v6(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        src_port: u16,
        dst_port: u16,
        proto: IpProtocol,
    ) -> Self {
        Self {
            family: Family::V6,
            proto: proto.0,
            src: v6_words(src),
            dst: v6_words(dst),
            ports: pack_ports(src_port, dst_port),
            pad: 0,
        }
    }

    /// A 5-tuple from addresses of either family. Two IPv4 addresses give an IPv4 key; if
    /// either address is IPv6 the key is IPv6 and an IPv4 address in it is mapped
    /// (`::ffff:a.b.c.d`). Parsed packets always have one family.
    #[inline(always)]
    #[must_use]
    pub const fn new(
        src: IpAddr,
        dst: IpAddr,
        src_port: u16,
        dst_port: u16,
        proto: IpProtocol,
    ) -> Self {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Self::v4(s, d, src_port, dst_port, proto),
            (s, d) => Self::v6(to_v6(s), to_v6(d), src_port, dst_port, proto),
        }
    }

    /// A 3-tuple key (ports zero), for IP fragments: see the module docs.
    #[inline]
    #[must_use]
    pub const fn three_tuple(src: IpAddr, dst: IpAddr, proto: IpProtocol) -> Self {
        Self::new(src, dst, 0, 0, proto)
    }

    /// The key of the opposite direction (source and destination swapped), e.g. the reply
    /// direction of a NAT entry.
    #[inline]
    #[must_use]
    pub const fn reversed(&self) -> Self {
        Self {
            family: self.family,
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            ports: self.ports.rotate_left(16),
            pad: 0,
        }
    }

    /// This key with both ports zero (its 3-tuple).
    #[inline]
    #[must_use]
    pub const fn without_ports(&self) -> Self {
        Self { ports: 0, ..*self }
    }

    /// Address family.
    #[inline]
    #[must_use]
    pub const fn family(&self) -> Family {
        self.family
    }

    /// IP protocol.
    #[inline]
    #[must_use]
    pub const fn proto(&self) -> IpProtocol {
        IpProtocol(self.proto)
    }

    /// Source address.
    #[inline]
    #[must_use]
    pub const fn src(&self) -> IpAddr {
        addr(self.family, self.src)
    }

    /// Destination address.
    #[inline]
    #[must_use]
    pub const fn dst(&self) -> IpAddr {
        addr(self.family, self.dst)
    }

    /// Source address as stored: 16 bytes, v4-mapped for IPv4.
    #[inline]
    #[must_use]
    pub const fn src_octets(&self) -> [u8; 16] {
        octets(self.src)
    }

    /// Destination address as stored: 16 bytes, v4-mapped for IPv4.
    #[inline]
    #[must_use]
    pub const fn dst_octets(&self) -> [u8; 16] {
        octets(self.dst)
    }

    /// Source port (0 when none).
    #[inline]
    #[must_use]
    pub const fn src_port(&self) -> u16 {
        #[allow(clippy::cast_possible_truncation, reason = "the high half, on purpose")]
        let p = (self.ports >> 16) as u16;
        p
    }

    /// Destination port (0 when none).
    #[inline]
    #[must_use]
    pub const fn dst_port(&self) -> u16 {
        #[allow(clippy::cast_possible_truncation, reason = "the low half, on purpose")]
        let p = self.ports as u16;
        p
    }

    /// Both ports as one word, `src_port << 16 | dst_port` (conntrack's compact slots).
    #[inline(always)]
    #[must_use]
    pub(crate) const fn ports_word(&self) -> u32 {
        self.ports
    }

    /// An IPv4 key's addresses as numbers (`Ipv4Addr::to_bits`), source first: how
    /// conntrack's 32-byte slots hold them. `None` for an IPv6 key.
    #[inline(always)]
    #[must_use]
    pub(crate) const fn v4_bits(&self) -> Option<(u32, u32)> {
        match self.family {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "an IPv4 address is the low 32 bits"
            )]
            Family::V4 => Some((self.src[1] as u32, self.dst[1] as u32)),
            Family::V6 => None,
        }
    }

    /// The IPv4 key [`FlowKey::v4_bits`] and [`FlowKey::ports_word`] came from.
    #[inline]
    #[must_use]
    pub(crate) const fn from_v4_bits(src: u32, dst: u32, ports: u32, proto: u8) -> Self {
        Self {
            family: Family::V4,
            proto,
            src: v4_words(Ipv4Addr::from_bits(src)),
            dst: v4_words(Ipv4Addr::from_bits(dst)),
            ports,
            pad: 0,
        }
    }

    /// The key as five words, for comparison and process-local keyed hashing (conntrack):
    /// the source address as two words, the destination as two, then ports, family and
    /// protocol (`ports | family << 32 | proto << 40`: the key's last eight bytes, read as
    /// one word on little-endian machines). Not part of any cross-node contract.
    #[inline]
    #[must_use]
    pub fn words(&self) -> [u64; 5] {
        let [s0, s1] = self.src;
        let [d0, d1] = self.dst;
        let rest = u64::from(self.ports)
            | u64::from(self.family as u8) << 32
            | u64::from(self.proto) << 40
            | u64::from(self.pad) << 48;
        [s0, s1, d0, d1, rest]
    }

    /// The 38-byte serialization [`flow_hash`] hashes (layout in the module docs). Part of
    /// the cross-node contract.
    #[inline]
    #[must_use]
    pub fn hash_input(&self) -> [u8; FLOW_HASH_INPUT_LEN] {
        let mut b = [0u8; FLOW_HASH_INPUT_LEN];
        b[0] = self.family as u8;
        b[1] = self.proto;
        b[2..18].copy_from_slice(&self.src_octets());
        b[18..34].copy_from_slice(&self.dst_octets());
        b[34..38].copy_from_slice(&self.ports.to_be_bytes());
        b
    }
}

impl PartialEq for FlowKey {
    /// Field equality, compared as the five words of [`FlowKey::words`] instead of a branch
    /// per field: every conntrack probe compares keys.
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.words(), other.words());
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
    }
}

impl Ord for FlowKey {
    /// Family, protocol, source, destination, then ports (source port first).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.family, self.proto, self.src, self.dst, self.ports).cmp(&(
            other.family,
            other.proto,
            other.src,
            other.dst,
            other.ports,
        ))
    }
}

impl PartialOrd for FlowKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for FlowKey {
    /// Three word writes instead of the derived field-by-field walk (which would also write a
    /// length before each address). Only for process-local tables: this is not [`flow_hash`].
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [s0, s1, d0, d1, _] = self.words();
        state.write_u128(u128::from(s0) << 64 | u128::from(s1));
        state.write_u128(u128::from(d0) << 64 | u128::from(d1));
        state.write_u64(
            u64::from(self.ports)
                | u64::from(self.proto) << 32
                | u64::from(self.family as u8) << 40,
        );
    }
}

impl std::fmt::Debug for FlowKey {
    /// `tcp 10.0.0.1:1234 -> 10.0.0.2:80` (IPv6 addresses bracketed).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (src, dst) = (self.src(), self.dst());
        match self.proto() {
            IpProtocol::TCP => f.write_str("tcp ")?,
            IpProtocol::UDP => f.write_str("udp ")?,
            IpProtocol::ICMP => f.write_str("icmp ")?,
            IpProtocol::ICMPV6 => f.write_str("icmpv6 ")?,
            IpProtocol(p) => write!(f, "proto{p} ")?,
        }
        match self.family {
            Family::V4 => write!(f, "{src}:{} -> {dst}:{}", self.src_port(), self.dst_port()),
            Family::V6 => write!(
                f,
                "[{src}]:{} -> [{dst}]:{}",
                self.src_port(),
                self.dst_port()
            ),
        }
    }
}

/// The `[high, low]` words of an IPv4 address mapped to IPv6 (`::ffff:a.b.c.d`).
#[inline]
const fn v4_words(a: Ipv4Addr) -> [u64; 2] {
    [0, 0xffff_0000_0000 | a.to_bits() as u64]
}

/// The `[high, low]` words of an IPv6 address.
#[inline]
const fn v6_words(a: Ipv6Addr) -> [u64; 2] {
    let x = a.to_bits();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the two halves, on purpose"
    )]
    let w = [(x >> 64) as u64, x as u64];
    w
}

/// The 16 bytes of an address held as `[high, low]` words.
#[inline]
const fn octets(w: [u64; 2]) -> [u8; 16] {
    ((w[0] as u128) << 64 | w[1] as u128).to_be_bytes()
}

#[inline]
const fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[inline]
const fn addr(family: Family, w: [u64; 2]) -> IpAddr {
    match family {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the IPv4 address is the low 32 bits"
        )]
        Family::V4 => IpAddr::V4(Ipv4Addr::from_bits(w[1] as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from_bits((w[0] as u128) << 64 | w[1] as u128)),
    }
}

// === flow hash ===

/// The stateless flow hash: xxh3-64 of [`FlowKey::hash_input`] with `seed` (the Maglev seed
/// all LB nodes share). A worker picks `table[flow_hash(key, seed) % M]`.
///
/// Part of the cross-node contract (see the module docs): stable across machines, CPU
/// features and crate versions; changing it moves every stateless flow. For IP fragments use
/// [`flow_hash_3tuple`] (or a [`FlowKey::three_tuple`] key) for *every* fragment, first
/// included.
#[inline]
#[must_use]
pub fn flow_hash(key: &FlowKey, seed: u64) -> u64 {
    xxh3_38(key, seed)
}

/// The first 64 bytes of XXH3's default secret (`kSecret` in the xxHash specification), as
/// little-endian words: all that the 17-to-128-byte path reads.
const XXH3_SECRET: [u64; 8] = {
    const B: [u8; 64] = [
        0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad,
        0x1c, 0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3,
        0x67, 0x1f, 0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc,
        0xff, 0x72, 0x21, 0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6,
        0x81, 0x3a, 0x26, 0x4c,
    ];
    let mut w = [0u64; 8];
    let mut i = 0;
    while i < 8 {
        let o = 8 * i;
        w[i] = u64::from_le_bytes([
            B[o],
            B[o + 1],
            B[o + 2],
            B[o + 3],
            B[o + 4],
            B[o + 5],
            B[o + 6],
            B[o + 7],
        ]);
        i += 1;
    }
    w
};

/// XXH3's `mix16B`: one 16-byte lane, `lo`/`hi` read little-endian.
#[inline(always)]
fn mix16(lo: u64, hi: u64, s_lo: u64, s_hi: u64, seed: u64) -> u64 {
    let p = u128::from(lo ^ s_lo.wrapping_add(seed)) * u128::from(hi ^ s_hi.wrapping_sub(seed));
    #[allow(
        clippy::cast_possible_truncation,
        reason = "folding the 128-bit product: the low half is wanted"
    )]
    let low = p as u64;
    #[allow(clippy::cast_possible_truncation, reason = "p >> 64 fits in 64 bits")]
    let high = (p >> 64) as u64;
    low ^ high
}

/// `xxh3_64_with_seed(&key.hash_input(), seed)`, computed from the key's fields.
///
/// Why not call the library on the 38-byte buffer: xxh3 reads that buffer as 8-byte words at
/// offsets 0, 6, 8, 14, 16, 22, 24 and 30. Each word straddles the buffer's freshly stored
/// fields, so its load cannot take its data from the pending stores and waits for them to
/// reach the cache. That costs 12-13 ns per hash on the dev machine, against 5 ns here. This
/// is the xxHash specification's 17-to-128-byte path for length 38: four `mix16B` lanes
/// (bytes 16..32, 6..22, 0..16 and 22..38) with the secret at offsets 32, 48, 0 and 16, then
/// the XXH3 avalanche. `tests::word_hash_equals_the_library` checks it against
/// `xxh3_64_with_seed` on random keys and seeds, and the golden values pin both.
#[inline]
fn xxh3_38(key: &FlowKey, seed: u64) -> u64 {
    const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
    // Each address's 16 bytes read as one little-endian number: `le(x, k)` is then the
    // 8-byte little-endian word at byte `k` of the address, as xxh3 reads it there.
    let s = (u128::from(key.src[0]) << 64 | u128::from(key.src[1])).swap_bytes();
    let d = (u128::from(key.dst[0]) << 64 | u128::from(key.dst[1])).swap_bytes();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the low 64 bits, on purpose"
    )]
    let le = |x: u128, k: u32| (x >> (8 * k)) as u64;
    let sport = u64::from(key.src_port().swap_bytes());
    let dport = u64::from(key.dst_port().swap_bytes());
    // Little-endian words of the serialization at the offsets xxh3 reads.
    let at0 = u64::from(key.family as u8) | u64::from(key.proto) << 8 | le(s, 0) << 16;
    let at6 = le(s, 4);
    let at8 = le(s, 6);
    let at14 = (le(s, 12) & 0xFFFF_FFFF) | le(d, 0) << 32;
    let at16 = (le(s, 14) & 0xFFFF) | le(d, 0) << 16;
    let at22 = le(d, 4);
    let at24 = le(d, 6);
    let at30 = (le(d, 12) & 0xFFFF_FFFF) | sport << 32 | dport << 48;
    let k = &XXH3_SECRET;
    let mut acc = 38u64.wrapping_mul(PRIME64_1);
    acc = acc.wrapping_add(mix16(at16, at24, k[4], k[5], seed));
    acc = acc.wrapping_add(mix16(at6, at14, k[6], k[7], seed));
    acc = acc.wrapping_add(mix16(at0, at8, k[0], k[1], seed));
    acc = acc.wrapping_add(mix16(at22, at30, k[2], k[3], seed));
    acc ^= acc >> 37;
    acc = acc.wrapping_mul(0x1656_6791_9E37_79F9);
    acc ^ (acc >> 32)
}

/// The flow hash of a fragment: [`flow_hash`] of the 3-tuple key (both ports zero). Use it
/// for any fragment — the first (offset 0, MF set) and the later ones — so that every
/// fragment of a datagram lands on the same backend. Addresses of mixed families are handled
/// as in [`FlowKey::new`].
#[inline]
#[must_use]
pub fn flow_hash_3tuple(src: IpAddr, dst: IpAddr, proto: IpProtocol, seed: u64) -> u64 {
    flow_hash(&FlowKey::three_tuple(src, dst, proto), seed)
}

/// The client hash, for services with client-IP affinity: [`flow_hash`] of the key with only
/// the source address set (destination the unspecified address of its family, protocol and
/// ports zero), so every flow and fragment from one client gets one value. Part of the
/// cross-node contract like [`flow_hash`] (same serialization, same seed): every node sends
/// a client to the same backend. `tests::client_hash_is_the_source_only_serialization` pins
/// it to the reference xxh3 on the documented bytes.
#[inline]
#[must_use]
pub fn client_hash(src: IpAddr, seed: u64) -> u64 {
    let key = match src {
        IpAddr::V4(a) => FlowKey::v4(a, Ipv4Addr::UNSPECIFIED, 0, 0, IpProtocol(0)),
        IpAddr::V6(a) => FlowKey::v6(a, Ipv6Addr::UNSPECIFIED, 0, 0, IpProtocol(0)),
    };
    flow_hash(&key, seed)
}

// === keyed hash ===

/// A fast keyed hash of a [`FlowKey`]: the key's five words ([`FlowKey::words`]) mixed with
/// seven secret words by four 64×64→128-bit multiplies, each folded (high half XOR low half),
/// in the manner of ahash's and wyhash's mixing. About 25 instructions, a third of
/// [`flow_hash`]'s cost; all 64 bits are mixed. Unlike [`flow_hash`] it is not a cross-node
/// contract: its value may change between builds. Two uses:
///
/// - conntrack's table hash, with secrets drawn from a random [`ahash::RandomState`]
///   ([`KeyedHash::from_random_state`]), so packets cannot aim keys at one slot or shard
///   (hash flooding). That value never leaves the process;
/// - the entropy of encapsulated packets (GUE source port, outer IPv6 flow label), with
///   secrets derived from the Maglev seed ([`KeyedHash::from_seed`]), so a flow keeps one
///   outer header on every worker and node of a build. It goes on the wire, which is why it
///   must not share the conntrack secrets.
#[derive(Clone)]
pub struct KeyedHash {
    k: [u64; 7],
}

impl KeyedHash {
    /// Secrets drawn from `rs` (random per process unless the caller seeds it).
    #[must_use]
    pub fn from_random_state(rs: &ahash::RandomState) -> Self {
        let mut k = [0u64; 7];
        for (i, w) in (0u64..).zip(k.iter_mut()) {
            *w = rs.hash_one(0x636f_6e6e_7472_6163_u64 ^ i);
        }
        Self { k }
    }

    /// Secrets derived from `seed` alone (SplitMix64 steps), the same on every machine.
    #[must_use]
    pub const fn from_seed(seed: u64) -> Self {
        let mut k = [0u64; 7];
        // "entropy!": keeps these secrets apart from anything else derived from the seed.
        let mut x = seed ^ 0x656e_7472_6f70_7921;
        let mut i = 0;
        while i < k.len() {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            k[i] = z ^ (z >> 31);
            i += 1;
        }
        Self { k }
    }

    /// The hash of `key`.
    #[inline]
    #[must_use]
    pub fn hash_one(&self, key: impl std::borrow::Borrow<FlowKey>) -> u64 {
        let [s0, s1, d0, d1, rest] = key.borrow().words();
        let [k0, k1, k2, k3, k4, k5, k6] = self.k;
        let a = folded_multiply(s0 ^ k0, s1 ^ k1);
        let b = folded_multiply(d0 ^ k2, d1 ^ k3);
        let c = folded_multiply(rest ^ k4, a ^ b ^ k5);
        // A second round: one multiply leaves sequential ports (a client walking its
        // ephemeral range) on evenly spaced, correlated values.
        folded_multiply(c, k6)
    }
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets stay out of logs.
        f.debug_struct("KeyedHash").finish_non_exhaustive()
    }
}

/// The 128-bit product of `a` and `b`, halves XORed: the mixing step of [`KeyedHash`] and of
/// the service index's hash.
#[inline(always)]
pub(crate) fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the two halves, on purpose"
    )]
    let h = (p as u64) ^ ((p >> 64) as u64);
    h
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use xxhash_rust::xxh3::xxh3_64_with_seed;

    use super::*;

    const SEED: u64 = 0x5eed_0f5e_ed00_0001;

    fn k4() -> FlowKey {
        FlowKey::v4(
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(198, 51, 100, 10),
            40_000,
            443,
            IpProtocol::TCP,
        )
    }

    fn k6() -> FlowKey {
        FlowKey::v6(
            "2001:db8::1".parse().unwrap(),
            "2001:db8:1::10".parse().unwrap(),
            40_000,
            443,
            IpProtocol::TCP,
        )
    }

    /// `client_hash` is xxh3 over the documented 38 bytes with only the family and the
    /// source set, whatever the rest of a flow is.
    #[test]
    fn client_hash_is_the_source_only_serialization() {
        let mut b = [0u8; FLOW_HASH_INPUT_LEN];
        b[0] = 4;
        b[12..14].copy_from_slice(&[0xff, 0xff]);
        b[14..18].copy_from_slice(&[192, 0, 2, 1]);
        // The destination, 0.0.0.0, v4-mapped.
        b[28..30].copy_from_slice(&[0xff, 0xff]);
        let v4 = client_hash(k4().src(), SEED);
        assert_eq!(v4, xxh3_64_with_seed(&b, SEED));
        let mut b6 = [0u8; FLOW_HASH_INPUT_LEN];
        b6[0] = 6;
        b6[2..18].copy_from_slice(&k6().src_octets());
        assert_eq!(client_hash(k6().src(), SEED), xxh3_64_with_seed(&b6, SEED));
        assert_ne!(v4, client_hash("192.0.2.2".parse().unwrap(), SEED));
        assert_ne!(v4, client_hash(k4().src(), SEED ^ 1));
    }

    /// `KeyedHash::from_seed` is a function of the seed alone (every worker and node of a
    /// build agrees), differs between seeds, and spreads a client's sequential ports over
    /// the low 14 bits a GUE source port takes.
    #[test]
    fn seeded_keyed_hash_is_deterministic_and_spreads_ports() {
        let (a, b) = (KeyedHash::from_seed(SEED), KeyedHash::from_seed(SEED));
        assert_eq!(a.hash_one(k4()), b.hash_one(k4()));
        assert_eq!(a.hash_one(k6()), b.hash_one(k6()));
        assert_ne!(
            a.hash_one(k4()),
            KeyedHash::from_seed(SEED ^ 1).hash_one(k4())
        );
        let src = Ipv4Addr::new(192, 0, 2, 1);
        let dst = Ipv4Addr::new(198, 51, 100, 10);
        let ports: std::collections::HashSet<u64> = (1024..3072u16)
            .map(|p| a.hash_one(FlowKey::v4(src, dst, p, 80, IpProtocol::TCP)) & 0x3FFF)
            .collect();
        // 2048 keys into 16384 values: ~1924 distinct expected at random.
        assert!(ports.len() > 1850, "{} distinct", ports.len());
    }

    #[test]
    fn serialization_layout_is_the_documented_one() {
        let b = k4().hash_input();
        assert_eq!(b[0], 4);
        assert_eq!(b[1], 6);
        assert_eq!(
            &b[2..18],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]
        );
        assert_eq!(
            &b[18..34],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 10]
        );
        assert_eq!(&b[34..36], &40_000u16.to_be_bytes());
        assert_eq!(&b[36..38], &[0x01, 0xbb]);

        let b6 = k6().hash_input();
        assert_eq!(b6[0], 6);
        assert_eq!(
            b6[2..18],
            "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets()
        );
    }

    /// Frozen values. If this fails, the cross-node hash changed: every stateless flow would
    /// move during a rolling upgrade. Do not update the constants unless that is intended and
    /// announced. The values are independent of this crate: they equal the reference xxHash
    /// library's `XXH3_64bits_withSeed` over the documented 38 bytes, computed with the
    /// `xxhash` Python binding (4.x, libxxhash 0.8.4):
    /// `xxhash.xxh3_64_intdigest(bytes([4, 6]) + src16 + dst16 + struct.pack(">HH", sp, dp), seed=SEED)`.
    #[test]
    fn golden_values() {
        assert_eq!(flow_hash(&k4(), SEED), GOLDEN_V4);
        assert_eq!(flow_hash(&k6(), SEED), GOLDEN_V6);
        assert_eq!(flow_hash(&k4(), 0), GOLDEN_V4_SEED0);
        let udp = FlowKey::v4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            53,
            5353,
            IpProtocol::UDP,
        );
        assert_eq!(flow_hash(&udp, SEED), GOLDEN_UDP4);
        let frag = flow_hash_3tuple(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)),
            IpProtocol::UDP,
            SEED,
        );
        assert_eq!(frag, GOLDEN_FRAG4);
    }

    const GOLDEN_V4: u64 = 0x085f_cf0d_5fac_07df;
    const GOLDEN_V6: u64 = 0x95fc_5167_04f8_3140;
    const GOLDEN_V4_SEED0: u64 = 0xd1c3_3ae9_ef76_0ef0;
    const GOLDEN_UDP4: u64 = 0xa8b3_9b15_cb3c_3e0c;
    const GOLDEN_FRAG4: u64 = 0xeca6_c978_5723_3d34;

    proptest! {
        /// The word-wise implementation is exactly the library's xxh3 over the documented
        /// serialization, for any key and seed.
        #[test]
        fn word_hash_equals_the_library(
            v6 in any::<bool>(),
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            sport in any::<u16>(),
            dport in any::<u16>(),
            proto in any::<u8>(),
            seed in any::<u64>(),
        ) {
            let key = if v6 {
                FlowKey::v6(src.into(), dst.into(), sport, dport, IpProtocol(proto))
            } else {
                let s4 = Ipv4Addr::new(src[0], src[1], src[2], src[3]);
                let d4 = Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3]);
                FlowKey::v4(s4, d4, sport, dport, IpProtocol(proto))
            };
            prop_assert_eq!(flow_hash(&key, seed), xxh3_64_with_seed(&key.hash_input(), seed));
        }
    }

    #[test]
    fn family_seed_ports_and_direction_change_the_hash() {
        let v4 = k4();
        let mapped = FlowKey::v6(
            Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped(),
            Ipv4Addr::new(198, 51, 100, 10).to_ipv6_mapped(),
            40_000,
            443,
            IpProtocol::TCP,
        );
        // Same 16 address bytes, different family byte.
        assert_eq!(v4.src_octets(), mapped.src_octets());
        assert_ne!(v4, mapped);
        assert_ne!(flow_hash(&v4, SEED), flow_hash(&mapped, SEED));
        assert_ne!(flow_hash(&v4, SEED), flow_hash(&k6(), SEED));
        assert_ne!(flow_hash(&v4, SEED), flow_hash(&v4, SEED ^ 1));
        assert_ne!(flow_hash(&v4, SEED), flow_hash(&v4.reversed(), SEED));
        assert_ne!(flow_hash(&v4, SEED), flow_hash(&v4.without_ports(), SEED));
    }

    #[test]
    fn three_tuple_is_the_key_without_ports() {
        let k = k4();
        assert_eq!(
            flow_hash_3tuple(k.src(), k.dst(), k.proto(), SEED),
            flow_hash(&k.without_ports(), SEED)
        );
        assert_eq!(
            FlowKey::three_tuple(k.src(), k.dst(), k.proto()),
            k.without_ports()
        );
    }

    #[test]
    fn constructors_and_accessors_round_trip() {
        let k = k4();
        assert_eq!(k.family(), Family::V4);
        assert_eq!(k.src(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(k.dst(), IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)));
        assert_eq!((k.src_port(), k.dst_port()), (40_000, 443));
        assert_eq!(k.proto(), IpProtocol::TCP);
        assert_eq!(
            FlowKey::new(k.src(), k.dst(), 40_000, 443, IpProtocol::TCP),
            k
        );
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().src(), k.dst());
        assert_eq!(k.reversed().src_port(), 443);
        let k6 = k6();
        assert_eq!(
            FlowKey::new(k6.src(), k6.dst(), 40_000, 443, IpProtocol::TCP),
            k6
        );
        // Mixed families become IPv6 with the IPv4 side mapped.
        let mixed = FlowKey::new(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            k6.dst(),
            1,
            2,
            IpProtocol::UDP,
        );
        assert_eq!(mixed.family(), Family::V6);
        assert_eq!(
            mixed.src(),
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped())
        );
        assert_eq!(format!("{k:?}"), "tcp 192.0.2.1:40000 -> 198.51.100.10:443");
        assert_eq!(
            format!("{k6:?}"),
            "tcp [2001:db8::1]:40000 -> [2001:db8:1::10]:443"
        );
    }

    /// `hash % M` spreads keys evenly, for random clients and for the realistic worst case of
    /// one client walking its source ports. Pearson's chi-square over `M` cells with `N` keys;
    /// for `M - 1 = 250` degrees of freedom the 99.99th percentile is about 347.
    #[test]
    fn distribution_mod_m_is_uniform() {
        const M: u64 = 251;
        const PER_CELL: u64 = 400;
        fn chi2(keys: impl Iterator<Item = FlowKey>) -> f64 {
            let mut cells = [0u64; 251];
            let mut n = 0u64;
            for k in keys {
                let i = usize::try_from(flow_hash(&k, SEED) % M).unwrap();
                cells[i] += 1;
                n += 1;
            }
            assert_eq!(n, M * PER_CELL);
            let e = f64::from(u32::try_from(PER_CELL).unwrap());
            cells
                .iter()
                .map(|&c| {
                    let d = f64::from(u32::try_from(c).unwrap()) - e;
                    d * d / e
                })
                .sum()
        }
        let n = M * PER_CELL;
        // One client, sequential source ports (wrapping through the ephemeral range).
        let seq = (0..n).map(|i| {
            let port = 1024 + u16::try_from(i % 64_000).unwrap();
            let host = u8::try_from(i / 64_000).unwrap();
            FlowKey::v4(
                Ipv4Addr::new(192, 0, 2, host),
                Ipv4Addr::new(198, 51, 100, 10),
                port,
                443,
                IpProtocol::TCP,
            )
        });
        let c = chi2(seq);
        assert!(c < 347.0, "sequential ports: chi2 = {c}");
        // Sequential IPv6 clients, fixed port.
        let v6 = (0..n).map(|i| {
            let src =
                Ipv6Addr::from_bits(0x2001_0db8_0000_0000_0000_0000_0000_0000 | u128::from(i));
            FlowKey::v6(
                src,
                "2001:db8:1::10".parse().unwrap(),
                5000,
                443,
                IpProtocol::TCP,
            )
        });
        let c = chi2(v6);
        assert!(c < 347.0, "sequential v6 clients: chi2 = {c}");
    }
}
