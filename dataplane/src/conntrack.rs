//! Per-worker connection tracking: which backend each live flow was given, so that a flow
//! stays on its backend when the Maglev table changes under it.
//!
//! # Contract
//!
//! - **One table per worker, never shared.** [`ConnTrack`] has no locks and no atomics; the
//!   worker that owns it is its only reader and writer. Its keys are hashed with a keyed
//!   multiply-fold hash under process-local random secrets drawn from an ahash
//!   `RandomState` (hash-flooding resistance; see [`KeyedHash`]). That hash never leaves the
//!   process; the cross-node hash is [`crate::flow::flow_hash`].
//! - **Bounded, and allocation-free after [`ConnTrack::new`].** The capacity `n` is fixed at
//!   construction and everything is allocated (and its pages faulted in) then: the slots,
//!   the key slabs and their free lists. [`ConnTrack::insert`] never grows anything, and no
//!   operation ever rehashes. When `len == n` an insert first ages out a few expired entries
//!   ([`INSERT_SWEEP_BUDGET`] slots) and, if the table is still full,
//!   refuses with [`InsertError::Full`]. The caller then forwards the packet statelessly
//!   through Maglev: a full table degrades, it never drops (DESIGN, Dataplane step 4).
//!   `tests/conntrack_noalloc.rs` counts allocations to hold this.
//! - **Never panics on the packet path.** Lookup, insert, TCP observation and aging take any
//!   input and any `now` without panicking.
//! - **Time is injected** (STYLE rule 18). Every call takes `now` as a [`Tick`]: nanoseconds,
//!   TSC cycles or plain numbers in tests, converted from [`Duration`]s once, at construction,
//!   through a [`TickRate`]. Nothing here reads a clock.
//! - **No expired entry is ever returned.** An entry is live while `now < expires`. Each hit
//!   pushes `expires` to `now` + the timeout of its protocol and TCP state ([`Timeouts`]),
//!   to the precision of *Deadlines* below (exact for tick counts under 2²⁴ × the
//!   longest timeout's unit, as in tests). A lookup that finds an expired entry removes it
//!   and reports a miss. Aging ([`ConnTrack::evict_expired`]) removes the rest
//!   incrementally. Lookups and [`ConnTrack::peek`] return copies of entries.
//! - **TCP FIN/RST shorten a flow's life.** [`ConnTrack::lookup_tcp`] and the flags given to
//!   `insert` drive [`TcpState`]. A flow whose first packet is a SYN has the short
//!   `tcp_syn` timeout until a plain ACK arrives. A flow first seen mid-stream counts as
//!   established at once, so flows moved here from another LB node keep working. After a FIN
//!   in either direction, or a RST, the `tcp_closing` timeout applies.
//!
//! # NAT pairs
//!
//! Full NAT needs two entries per connection. The *forward* entry is keyed by
//! client → VIP; it holds the backend and the SNAT port. The *reverse* entry is keyed by
//! backend → SNAT address:port, for replies, and must lead back to the client.
//! [`ConnTrack::insert_pair`] inserts both or neither and links them. A pair takes two
//! adjacent slots of a slab of keys, `2k` for the forward key and `2k + 1` for the reverse
//! one; each side stores the other's slot, and its own is that one with the low bit flipped.
//! [`ConnTrack::peer_key`] returns the forward key (the client's addresses and ports) from
//! the reverse entry without a second hash probe. Each side has its own deadline, refreshed
//! by its own packets. A pair is removed only when
//! *both* sides have expired, so a one-way stream keeps its reply path. Removing one side
//! ([`ConnTrack::remove`], or replacing it with `insert`) removes the other as well. FIN/RST
//! on one side shortens both.
//!
//! # Aging cost
//!
//! [`ConnTrack::evict_expired`] walks the slots with a resumable cursor, each shard from its
//! last slot down. Each call visits at most `budget` slots, so it is O(`budget`): an empty
//! or live slot costs a read of its deadline, an expired entry a removal. A full pass takes
//! `ceil(buckets / budget)` calls; `buckets` ([`ConnTrack::buckets`]) is about 1.6 × `n`
//! for large tables (see *Layout*). So an entry outlives its deadline by at most one pass,
//! unless a lookup finds it first. A removal only moves entries from later slots into
//! earlier ones (below), which the downward sweep has already visited, so a pass skips
//! nothing, except when a run of occupied slots wraps around the end of its shard; the next
//! pass catches what it skipped then.
//!
//! # Layout
//!
//! Each shard is an open-addressing table with linear probing over a power-of-two number of
//! 32-byte slots, two to a cache line. A slot holds an IPv4 flow whole: its key
//! (addresses, ports, protocol: 13 bytes) and its [`Entry`] packed beside it (backend,
//! service, NAT port, peer, TCP state and a 32-bit deadline, below). A key's home slot is
//! the first of a line (hash bits 1..13 within its shard, times two), so the home line
//! holds the two slots where 83.5 % of keys sit at full load. A lookup reads that line and
//! no separate control bytes: its address follows from the hash alone, which lets a burst
//! prefetch it before the lookup (`ConnTrack::prefetch`, one line per packet).
//!
//! An IPv6 key (37 bytes) does not fit: its slot holds a 32-bit fingerprint of the key's
//! hash beside the ports and protocol, and the index of the whole key in a slab, which a
//! probe reads only when fingerprint, ports and protocol match. So an IPv6 hit reads one
//! more line than an IPv4 one. The lone-IPv6 slab holds `capacity` keys; a NAT pair
//! member's key is in the pair slab already ("NAT pairs").
//!
//! A key sits at its home slot or after it, with no empty slot in between; removal shifts
//! the following entries back instead of leaving a tombstone (backward-shift deletion), so
//! no probe ever crosses a dead slot and nothing ever needs a rehash. That removes the
//! rehash stall a hashbrown table had (tombstones used up its free slots every ~20 M
//! inserts, then a whole-table rehash: 36 ms at 917 503 entries).
//!
//! A capacity up to [`SHARD_MEAN_MAX`] (5000) is one table with more than `2·(n + 1)`
//! slots. A larger one gets `⌈n / 5000⌉` shards of [`SHARD_BUCKETS`] (8192) slots, picked
//! from hash bits 16..48, each allowed [`SHARD_LIMIT`] (5734) entries, a load of 0.7. A
//! shard's expected load is at most 5000 (0.61: a key sits 0.97 slots past its home on
//! average), 10 standard deviations
//! below its limit; the rare insert into a shard at its limit is refused as
//! [`InsertError::Full`], like any insert into a full table.
//!
//! The load is this high, and the slots this small, because the table's size, more than
//! its probe lengths, sets the cost of a lookup in a large table: past about 1 GB of 2 MiB
//! pages on the test VM a lookup pays a page walk that costs more than the extra slots of a
//! probe. 10 M entries took 1.8 GB of slots at a load of 0.35 and 64-byte slots, 1 GB at
//! 0.61; now 0.5 GB. The NAT pair slab and its free list add 42 bytes per entry (a 40-byte
//! key slot per entry, and 4 bytes of free list per pair of entries), the lone-IPv6 slab
//! and its free list 44. [`ConnTrack::allocated_bytes`] reports the total.
//!
//! The shards of a large table are one allocation on 2 MiB pages (hugetlbfs when the pool
//! has free pages, else transparent hugepages, else the heap: [`ConnTrack::page_backing`];
//! see [`crate::io::mem`]). With 4 KiB pages nearly every lookup into a table of tens of MB
//! also missed the TLB. Examples:
//!
//! | capacity | shards | slots | of which slots | allocated |
//! |---|---|---|---|---|
//! | 100 000 | 20 | 163 840 | 5.2 MB | 14 MB |
//! | 1 000 000 | 200 | 1 638 400 | 52 MB | 138 MB |
//! | 10 000 000 | 2 000 | 16 384 000 | 524 MB | 1.38 GB |
//!
//! # Deadlines
//!
//! A slot keeps its deadline in 32 bits: a count of units of `2^shift` ticks, `shift`
//! the least that puts the longest timeout under 2²⁴ units (for the default 900 s one unit
//! is 65.5 µs at nanosecond ticks, 107 µs on a 2.45 GHz TSC; with test tick counts it is
//! one tick, and deadlines are exact). The count wraps around and is compared with `now` by
//! serial-number arithmetic (RFC 1982), which is sound while every stored deadline is
//! within 2³¹ units of `now`. A deadline is `now` rounded down plus the timeout rounded
//! up, plus one unit when `shift > 0`: an entry never expires early and at most two units
//! late.
//!
//! Stored deadlines lie after the start of the last complete aging pass (everything older
//! was removed then), and before the latest `now` plus the longest timeout. So the window
//! holds while each pass completes within 2²⁹ units (32 × the longest timeout; a worker
//! ages on every burst and idle loop, and a pass takes seconds). Every call checks it: if
//! the last complete pass began 2²⁹ units or more before `now`, the call first ages the
//! whole table; if `now` is twice that far from it, either way (a stopped worker, a test),
//! every deadline has passed, or cannot be read after a jump back, and every entry goes,
//! counted as evicted.

use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;

use std::alloc::Layout;

use thiserror::Error;

use crate::flow::{FlowKey, KeyedHash};
use crate::io::mem::{self, Chunk, PageBacking, PagedChunks};
use crate::wire::{IpProtocol, TcpFlags};

/// Largest capacity [`ConnTrack::new`] accepts: 2²⁶ entries (several GB of table).
pub const MAX_CAPACITY: usize = 1 << 26;

/// Slots an insert into a full table ages (see [`ConnTrack::evict_expired`]) before it
/// refuses with [`InsertError::Full`]. Bounds the extra work a miss does when the table is
/// full of live flows (a SYN flood).
pub const INSERT_SWEEP_BUDGET: usize = 64;

/// Slots of each shard when the capacity needs more than one table (module docs,
/// "Layout"): 512 KiB of slots.
pub const SHARD_BUCKETS: usize = 8192;

/// The most entries a shard of [`SHARD_BUCKETS`] may hold: 0.7 of its slots, so a shard
/// always has empty slots and every probe ends.
pub const SHARD_LIMIT: usize = SHARD_BUCKETS * 7 / 10;

/// Largest capacity kept in one table, and the most entries a shard expects (load 0.61):
/// 10 standard deviations below [`SHARD_LIMIT`] (a shard's count is binomial, σ ≈ √5000).
pub const SHARD_MEAN_MAX: usize = 5000;

const _: () = assert!(SHARD_LIMIT == 5734 && SHARD_LIMIT < SHARD_BUCKETS);

/// Pair slab slot value meaning "no peer" in [`Entry`].
const NO_SLOT: u32 = u32::MAX;

// === Tick ===

/// A point in time, in ticks of the worker's clock: nanoseconds, TSC cycles, or whatever
/// [`TickRate`] the [`ConnTrack`] was built with. Only differences matter; the epoch is the
/// caller's. Monotonic in practice; a `now` that goes backwards only delays expiry.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Tick(pub u64);

impl Tick {
    /// Tick zero.
    pub const ZERO: Self = Self(0);

    /// The raw tick count.
    #[inline]
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// `self + ticks`, saturating at `u64::MAX` (a deadline that never comes).
    #[inline]
    #[must_use]
    pub const fn saturating_add(self, ticks: u64) -> Self {
        Self(self.0.saturating_add(ticks))
    }

    /// Ticks from `earlier` to `self`; 0 if `earlier` is later.
    #[inline]
    #[must_use]
    pub const fn saturating_since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Ticks per second of the worker's clock: how [`Duration`]s become [`Tick`] counts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TickRate(NonZeroU64);

impl TickRate {
    /// One tick per nanosecond.
    pub const NANOS: Self = Self(NonZeroU64::new(1_000_000_000).unwrap());
    /// One tick per millisecond (handy in tests).
    pub const MILLIS: Self = Self(NonZeroU64::new(1_000).unwrap());

    /// A rate of `hz` ticks per second (the TSC frequency, for example).
    ///
    /// # Errors
    ///
    /// [`ConntrackError::ZeroTickRate`] if `hz` is 0.
    pub const fn try_new(hz: u64) -> Result<Self, ConntrackError> {
        match NonZeroU64::new(hz) {
            Some(hz) => Ok(Self(hz)),
            None => Err(ConntrackError::ZeroTickRate),
        }
    }

    /// Ticks per second.
    #[inline]
    #[must_use]
    pub const fn hz(self) -> u64 {
        self.0.get()
    }

    /// `d` in ticks, rounded up (a non-zero duration is never zero ticks); `None` if it does
    /// not fit in 64 bits.
    #[must_use]
    pub fn ticks(self, d: Duration) -> Option<u64> {
        let t = d
            .as_nanos()
            .checked_mul(u128::from(self.hz()))?
            .div_ceil(1_000_000_000);
        u64::try_from(t).ok()
    }

    /// `ticks` as a [`Duration`], rounded down to the nanosecond.
    #[must_use]
    pub fn duration(self, ticks: u64) -> Duration {
        let hz = self.hz();
        let sub = u128::from(ticks % hz) * 1_000_000_000 / u128::from(hz);
        // `ticks % hz < hz`, so `sub < 1e9`.
        Duration::new(ticks / hz, u32::try_from(sub).unwrap_or(999_999_999))
    }
}

// === Timeouts ===

/// Idle timeouts per protocol and TCP state: how long after its last packet an entry
/// expires. The defaults follow IPVS and Katran practice. All must be non-zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Timeouts {
    /// TCP flow past its handshake (or first seen mid-stream). Default 900 s (IPVS
    /// `ESTABLISHED`).
    pub tcp_established: Duration,
    /// TCP flow that has only shown SYNs so far. Default 30 s: a SYN flood ages out quickly.
    pub tcp_syn: Duration,
    /// TCP flow after a FIN in either direction or a RST. Default 10 s (IPVS `CLOSE`).
    pub tcp_closing: Duration,
    /// UDP flow. Default 60 s.
    pub udp: Duration,
    /// Any other protocol (ICMP, ICMPv6, ESP, GRE, ...). Default 30 s.
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_established: Duration::from_secs(900),
            tcp_syn: Duration::from_secs(30),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(60),
            other: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// Checks that every timeout is non-zero and fits in 64-bit ticks at `rate`.
    ///
    /// # Errors
    ///
    /// [`ConntrackError::ZeroTimeout`] or [`ConntrackError::TimeoutOverflow`], naming the
    /// field.
    pub fn validate(&self, rate: TickRate) -> Result<(), ConntrackError> {
        TimeoutTicks::new(self, rate).map(|_| ())
    }

    fn fields(&self) -> [(&'static str, Duration); 5] {
        [
            ("tcp_established", self.tcp_established),
            ("tcp_syn", self.tcp_syn),
            ("tcp_closing", self.tcp_closing),
            ("udp", self.udp),
            ("other", self.other),
        ]
    }
}

/// [`Timeouts`] converted to ticks once, at construction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct TimeoutTicks {
    tcp_established: u64,
    tcp_syn: u64,
    tcp_closing: u64,
    udp: u64,
    other: u64,
}

impl TimeoutTicks {
    fn new(t: &Timeouts, rate: TickRate) -> Result<Self, ConntrackError> {
        let mut ticks = [0u64; 5];
        for (out, (name, d)) in ticks.iter_mut().zip(t.fields()) {
            if d.is_zero() {
                return Err(ConntrackError::ZeroTimeout(name));
            }
            *out = rate.ticks(d).ok_or(ConntrackError::TimeoutOverflow(name))?;
        }
        let [tcp_established, tcp_syn, tcp_closing, udp, other] = ticks;
        Ok(Self {
            tcp_established,
            tcp_syn,
            tcp_closing,
            udp,
            other,
        })
    }

    /// The same timeouts in units of `2^shift` ticks ([`Clock`]): each rounded up, plus
    /// one unit when `shift > 0`, because a deadline is counted from `now` rounded down.
    /// So an entry never expires early, and at most two units late; with `shift == 0`
    /// (tests), exactly on time.
    fn in_units(&self, shift: u32) -> Self {
        let extra = u64::from(shift > 0);
        let f = |t: u64| (t >> shift) + u64::from(t & ((1 << shift) - 1) != 0) + extra;
        Self {
            tcp_established: f(self.tcp_established),
            tcp_syn: f(self.tcp_syn),
            tcp_closing: f(self.tcp_closing),
            udp: f(self.udp),
            other: f(self.other),
        }
    }

    /// The longest of them.
    fn longest(&self) -> u64 {
        [self.tcp_syn, self.tcp_closing, self.udp, self.other]
            .into_iter()
            .fold(self.tcp_established, u64::max)
    }

    #[inline]
    fn for_state(&self, proto: IpProtocol, tcp: TcpState) -> u64 {
        match proto {
            IpProtocol::TCP if tcp.is_closing() => self.tcp_closing,
            IpProtocol::TCP if tcp.is_established() => self.tcp_established,
            IpProtocol::TCP => self.tcp_syn,
            IpProtocol::UDP => self.udp,
            _ => self.other,
        }
    }
}

// === errors ===

/// Why a [`ConnTrack`] could not be built.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
pub enum ConntrackError {
    /// The capacity is zero.
    #[error("conntrack capacity must be at least 1")]
    ZeroCapacity,
    /// The capacity is above [`MAX_CAPACITY`].
    #[error("conntrack capacity {requested} exceeds the maximum {max}")]
    CapacityTooLarge {
        /// The capacity asked for.
        requested: usize,
        /// [`MAX_CAPACITY`].
        max: usize,
    },
    /// A timeout is zero; the field is named.
    #[error("conntrack timeout `{0}` must be non-zero")]
    ZeroTimeout(&'static str),
    /// A timeout does not fit in 64-bit ticks at the tick rate; the field is named.
    #[error("conntrack timeout `{0}` does not fit in 64-bit ticks")]
    TimeoutOverflow(&'static str),
    /// The tick rate is zero.
    #[error("tick rate must be non-zero")]
    ZeroTickRate,
}

/// Why an insert did nothing. A one-byte `Copy` value for the hot path (STYLE rule 9); both
/// variants mean "forward this packet statelessly".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Error)]
#[repr(u8)]
pub enum InsertError {
    /// The table holds `capacity` live entries (after aging a few): go stateless.
    #[error("conntrack table full")]
    Full,
    /// [`ConnTrack::insert_pair`] was given the same key for both directions. That happens
    /// with hairpin NAT to the client itself, and a pair cannot be one entry.
    #[error("NAT pair with identical forward and reverse keys")]
    SameKey,
}

// === TcpState ===

/// What a TCP flow has shown so far: bit flags, 1 byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpState(u8);

impl TcpState {
    const SYN: u8 = 0x01;
    const ESTABLISHED: u8 = 0x02;
    const FIN_ORIG: u8 = 0x04;
    const FIN_REPLY: u8 = 0x08;
    const RST: u8 = 0x10;
    const CLOSING: u8 = Self::FIN_ORIG | Self::FIN_REPLY | Self::RST;

    /// A SYN was seen.
    #[inline]
    #[must_use]
    pub const fn syn_seen(self) -> bool {
        self.0 & Self::SYN != 0
    }

    /// A plain ACK (no SYN) was seen, or the flow was first seen mid-stream.
    #[inline]
    #[must_use]
    pub const fn is_established(self) -> bool {
        self.0 & Self::ESTABLISHED != 0
    }

    /// A FIN from the side that opened the flow (client → VIP).
    #[inline]
    #[must_use]
    pub const fn fin_orig(self) -> bool {
        self.0 & Self::FIN_ORIG != 0
    }

    /// A FIN from the reply side (seen on a reverse NAT entry).
    #[inline]
    #[must_use]
    pub const fn fin_reply(self) -> bool {
        self.0 & Self::FIN_REPLY != 0
    }

    /// A RST in either direction.
    #[inline]
    #[must_use]
    pub const fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }

    /// FIN or RST seen: the `tcp_closing` timeout applies.
    #[inline]
    #[must_use]
    pub const fn is_closing(self) -> bool {
        self.0 & Self::CLOSING != 0
    }

    /// The state after a segment with `flags`, seen in the reply direction if `reply`.
    #[inline]
    const fn observe(self, flags: TcpFlags, reply: bool) -> Self {
        let mut s = self.0;
        if flags.rst() {
            s |= Self::RST;
        }
        if flags.fin() {
            s |= if reply {
                Self::FIN_REPLY
            } else {
                Self::FIN_ORIG
            };
        }
        if flags.syn() {
            s |= Self::SYN;
        } else if flags.ack() {
            s |= Self::ESTABLISHED;
        }
        Self(s)
    }

    /// The state of a flow whose first packet had `flags`. Without a SYN, the flow was
    /// picked up mid-stream and counts as established.
    #[inline]
    const fn first(flags: TcpFlags, reply: bool) -> Self {
        let s = Self(0).observe(flags, reply);
        if s.syn_seen() {
            s
        } else {
            Self(s.0 | Self::ESTABLISHED)
        }
    }
}

impl fmt::Debug for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_set();
        for (bit, name) in [
            (Self::SYN, "SYN"),
            (Self::ESTABLISHED, "ESTABLISHED"),
            (Self::FIN_ORIG, "FIN_ORIG"),
            (Self::FIN_REPLY, "FIN_REPLY"),
            (Self::RST, "RST"),
        ] {
            if self.0 & bit != 0 {
                list.entry(&format_args!("{name}"));
            }
        }
        list.finish()
    }
}

// === Entry ===

/// One tracked flow: where it goes and how long it lives. 24 bytes, `Copy`; a table slot
/// holds it packed, beside its key (module docs, "Layout").
///
/// Built with [`Entry::new`] (plus [`Entry::with_nat_port`] for NAT) and handed to
/// [`ConnTrack::insert`], which fills in the deadline and the TCP state. The backend and
/// service are stable ids from the control plane's tables, not Maglev slots, so a hit stays
/// on its backend however the Maglev table changes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Entry {
    expires: Tick,
    backend_id: u32,
    service_id: u32,
    /// The paired entry's slot in the pair slab, or [`NO_SLOT`]. This entry's own slot is
    /// the other one of the same pair, `peer ^ 1` (module docs, "NAT pairs"), and the pair
    /// is `peer >> 1` ([`pair_of`]).
    peer: u32,
    nat_port: u16,
    tcp: TcpState,
    flags: u8,
}

const _: () = assert!(size_of::<Entry>() == 24);

impl Entry {
    /// `flags` bit: the reply direction of a NAT pair.
    const REVERSE: u8 = 0x01;

    /// An entry sending the flow to `backend_id` of `service_id`.
    #[inline]
    #[must_use]
    pub const fn new(backend_id: u32, service_id: u32) -> Self {
        Self {
            expires: Tick::ZERO,
            backend_id,
            service_id,
            peer: NO_SLOT,
            nat_port: 0,
            tcp: TcpState(0),
            flags: 0,
        }
    }

    /// The same entry with a NAT port: on a forward NAT entry, the SNAT source port chosen
    /// for the flow; free for other uses elsewhere.
    #[inline]
    #[must_use]
    pub const fn with_nat_port(self, port: u16) -> Self {
        Self {
            nat_port: port,
            ..self
        }
    }

    /// The backend's stable id.
    #[inline]
    #[must_use]
    pub const fn backend_id(&self) -> u32 {
        self.backend_id
    }

    /// The service's stable id.
    #[inline]
    #[must_use]
    pub const fn service_id(&self) -> u32 {
        self.service_id
    }

    /// The NAT port (see [`Entry::with_nat_port`]).
    #[inline]
    #[must_use]
    pub const fn nat_port(&self) -> u16 {
        self.nat_port
    }

    /// Its deadline: it is live while `now < expires()`.
    #[inline]
    #[must_use]
    pub const fn expires(&self) -> Tick {
        self.expires
    }

    /// TCP state (empty for other protocols).
    #[inline]
    #[must_use]
    pub const fn tcp_state(&self) -> TcpState {
        self.tcp
    }

    /// Whether this is the reverse (reply) entry of a NAT pair.
    #[inline]
    #[must_use]
    pub const fn is_reverse(&self) -> bool {
        self.flags & Self::REVERSE != 0
    }

    /// Whether this entry is one side of a NAT pair ([`ConnTrack::peer_key`] finds the other).
    #[inline]
    #[must_use]
    pub const fn has_peer(&self) -> bool {
        self.peer != NO_SLOT
    }
}

// === Stats ===

/// Event counters, plain `u64`s that only the owning worker writes. The worker copies them
/// into its shared counter block (STYLE rule 10).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Stats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found none (or only an expired one).
    pub misses: u64,
    /// Entries inserted (a NAT pair counts two).
    pub inserts: u64,
    /// Inserts refused because the table was full: packets sent on statelessly.
    pub full: u64,
    /// Entries a lookup found expired and removed.
    pub expired: u64,
    /// Entries the aging sweep removed ([`ConnTrack::evict_expired`], and inserts into a full
    /// table).
    pub evicted: u64,
    /// Entries removed by [`ConnTrack::remove`], or because an insert replaced them or their
    /// pair.
    pub removed: u64,
}

// === Clock ===

/// The longest timeout is under this many [`Clock`] units: deadlines keep 1 part in 2²⁴
/// of it.
const TIMEOUT_UNITS_MAX: u64 = 1 << 24;
/// A `now` this many units (at least 32 × the longest timeout) after the start of the last
/// complete aging pass, or before it, makes [`ConnTrack::advance`] age the whole table at
/// once, or drop every entry after a clock jump (module docs, "Deadlines").
const SWEEP_STALE: u64 = 1 << 29;

/// How slots hold deadlines: in 32 bits, as a count of units of `2^shift` ticks that wraps
/// around, compared with serial-number arithmetic (RFC 1982) against `now`. Sound while
/// every stored deadline is within 2³¹ units of `now`, which [`ConnTrack::advance`] keeps
/// true: the stored deadlines lie within [`SWEEP_STALE`] + the longest timeout of `swept`,
/// and each call's `now` within [`SWEEP_STALE`] of it (module docs, "Deadlines").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Clock {
    /// Ticks per unit as a shift: the least that puts the longest timeout under
    /// [`TIMEOUT_UNITS_MAX`] units (0 for the small tick counts of tests: exact deadlines).
    shift: u32,
    /// `now` (units) when the aging pass under way began.
    pass_start: u64,
    /// `now` (units) when the last complete aging pass began: an entry still stored was
    /// live at some `now` after it. [`ConnTrack::peek`] and [`ConnTrack::iter`] read
    /// deadlines against it.
    swept: u64,
}

impl Clock {
    fn new(longest_timeout: u64) -> Self {
        let mut shift = 0;
        while longest_timeout >> shift >= TIMEOUT_UNITS_MAX {
            shift += 1;
        }
        Self {
            shift,
            pass_start: 0,
            swept: 0,
        }
    }

    /// `t` in units (rounded down).
    #[inline(always)]
    fn units(&self, t: Tick) -> u64 {
        t.0 >> self.shift
    }

    /// Whether a stored deadline is still ahead of `now` (units).
    #[inline(always)]
    fn live(deadline: u32, now: u64) -> bool {
        serial_delta(deadline, now) > 0
    }

    /// A stored deadline back in ticks: the one within 2³¹ units of `now` (units). Plain
    /// wrapping arithmetic, no clamping: a few instructions, as every lookup returns one.
    #[inline(always)]
    fn expand(&self, deadline: u32, now: u64) -> Tick {
        let u = now.wrapping_add_signed(i64::from(serial_delta(deadline, now)));
        Tick(u.wrapping_shl(self.shift))
    }
}

/// The low 32 bits of `x`.
#[inline(always)]
const fn low32(x: u64) -> u32 {
    #[allow(clippy::cast_possible_truncation, reason = "the low bits, on purpose")]
    let l = x as u32;
    l
}

/// `deadline - now` as a signed 32-bit serial-number difference.
#[inline(always)]
const fn serial_delta(deadline: u32, now: u64) -> i32 {
    #[allow(clippy::cast_possible_wrap, reason = "serial arithmetic, on purpose")]
    let d = deadline.wrapping_sub(low32(now)) as i32;
    d
}

// === Slot ===

/// [`Slot::kind`]: an IPv4 flow, its key held in the slot itself.
const KIND_V4: u8 = 0x80;
/// [`Slot::kind`]: an IPv6 flow, its key held in a slab of [`Keys`].
const KIND_V6: u8 = 0x40;
/// The family bits of [`Slot::kind`]; neither set is an empty slot.
const KIND_FAMILY: u8 = KIND_V4 | KIND_V6;
/// [`Slot::kind`]: the reverse (reply) side of a NAT pair.
const KIND_REVERSE: u8 = 0x20;
/// The [`TcpState`] bits of [`Slot::kind`].
const KIND_TCP: u8 = 0x1F;

const _: () = assert!(TcpState::SYN | TcpState::ESTABLISHED | TcpState::CLOSING == KIND_TCP);

/// A table slot: one flow and its [`Entry`] packed in 32 bytes, two to a cache line, or
/// nothing (no family bit in its kind). An IPv4 flow's key is held whole (addresses, ports,
/// protocol: 13 bytes); an IPv6 flow's 37 bytes of key do not fit, so its slot holds a
/// 32-bit fingerprint of the key and the key's place in a slab ([`Keys`]), which a probe
/// reads only when the fingerprint, ports and protocol all match (module docs, "Layout").
/// The key's fields are packed in two words, `head` and `tail`, so that a probe compares a
/// slot with two loads, two XORs and a mask. Aligned to 32, so that a slot never straddles
/// two cache lines; the alignment also reaches the heap: [`mem::PagedChunks`] allocates with
/// `T`'s alignment (and at least a line's).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C, align(32))]
struct Slot {
    /// `a | b << 32`. IPv4: `a` is the source address, `b` the destination; IPv6: `a` is
    /// the key's fingerprint ([`Probe::new`]), `b` the key's slot in its slab
    /// ([`Keys::stored`]).
    head: u64,
    /// `ports | proto << 32 | kind << 40 | nat_port << 48`: the ports as
    /// `src_port << 16 | dst_port`, the IP protocol, the `KIND_*` bits (family, reverse,
    /// TCP state) and the NAT port.
    tail: u64,
    /// The deadline in [`Clock`] units, wrapping (module docs, "Deadlines").
    deadline: u32,
    backend_id: u32,
    service_id: u32,
    /// The NAT peer's slot in the pair slab, or [`NO_SLOT`].
    peer: u32,
}

const _: () = assert!(size_of::<Slot>() == 32 && align_of::<Slot>() == 32);

/// The bits of [`Slot::tail`] that are part of the key: ports, protocol, family.
const TAIL_KEY: u64 = 0xFFFF_FFFF | 0xFF << 32 | (KIND_FAMILY as u64) << 40;

impl Slot {
    const EMPTY: Self = Self {
        head: 0,
        tail: 0,
        deadline: 0,
        backend_id: 0,
        service_id: 0,
        peer: NO_SLOT,
    };

    #[inline(always)]
    const fn a(&self) -> u32 {
        low32(self.head)
    }

    #[inline(always)]
    const fn b(&self) -> u32 {
        low32(self.head >> 32)
    }

    #[inline(always)]
    const fn ports(&self) -> u32 {
        low32(self.tail)
    }

    #[inline(always)]
    const fn proto(&self) -> u8 {
        self.tail.to_le_bytes()[4]
    }

    #[inline(always)]
    const fn kind(&self) -> u8 {
        self.tail.to_le_bytes()[5]
    }

    #[inline(always)]
    const fn nat_port(&self) -> u16 {
        let [.., lo, hi] = self.tail.to_le_bytes();
        u16::from_le_bytes([lo, hi])
    }

    #[inline(always)]
    const fn is_empty(&self) -> bool {
        self.kind() & KIND_FAMILY == 0
    }

    #[inline(always)]
    const fn is_v4(&self) -> bool {
        self.kind() & KIND_V4 != 0
    }

    #[inline(always)]
    const fn has_peer(&self) -> bool {
        self.peer != NO_SLOT
    }

    #[inline(always)]
    const fn tcp(&self) -> TcpState {
        TcpState(self.kind() & KIND_TCP)
    }

    #[inline(always)]
    fn set_tcp(&mut self, tcp: TcpState) {
        self.tail = (self.tail & !(u64::from(KIND_TCP) << 40)) | u64::from(tcp.0 & KIND_TCP) << 40;
    }

    #[inline(always)]
    const fn is_reverse(&self) -> bool {
        self.kind() & KIND_REVERSE != 0
    }

    /// Whether it holds an entry that is live at `now` (units).
    #[inline(always)]
    fn is_live(&self, now: u64) -> bool {
        !self.is_empty() && Clock::live(self.deadline, now)
    }

    /// The entry, its deadline read against `now` (units).
    #[inline(always)]
    fn entry(&self, clock: &Clock, now: u64) -> Entry {
        Entry {
            expires: clock.expand(self.deadline, now),
            backend_id: self.backend_id,
            service_id: self.service_id,
            peer: self.peer,
            nat_port: self.nat_port(),
            tcp: self.tcp(),
            flags: if self.is_reverse() { Entry::REVERSE } else { 0 },
        }
    }
}

/// What a probe compares a slot's key words with, made once per key: for an IPv4 key the
/// whole key; for an IPv6 key its fingerprint, ports and protocol, the slab holding the
/// rest.
#[derive(Clone, Copy)]
struct Probe {
    /// [`Slot::head`] of the key (for IPv6, with `b` 0).
    head: u64,
    /// The bits of `head` that are key: all of it for IPv4, the fingerprint for IPv6.
    head_mask: u64,
    /// [`Slot::tail`] of the key, [`TAIL_KEY`] bits only.
    tail: u64,
}

impl Probe {
    #[inline(always)]
    fn new(key: &FlowKey, hash: u64) -> Self {
        let (head, head_mask, family) = match key.v4_bits() {
            Some((src, dst)) => (u64::from(src) | u64::from(dst) << 32, !0, KIND_V4),
            // The fingerprint: hash bits 32..64. The home slot is bits 1..13 and the shard
            // comes from bits 16..48, so keys in one shard differ in at least the top 16.
            None => (hash >> 32, 0xFFFF_FFFF, KIND_V6),
        };
        Self {
            head,
            head_mask,
            tail: u64::from(key.ports_word())
                | u64::from(key.proto().0) << 32
                | u64::from(family) << 40,
        }
    }

    #[inline(always)]
    const fn is_v4(&self) -> bool {
        self.head_mask == !0
    }

    /// Whether `s` holds this key (IPv4) or may (IPv6: its slab key decides). False for an
    /// empty slot.
    #[inline(always)]
    fn head_matches(&self, s: &Slot) -> bool {
        (((s.head ^ self.head) & self.head_mask) | ((s.tail ^ self.tail) & TAIL_KEY)) == 0
    }

    /// The slot for a key with this probe and `e` (prepared: state, peer and flags set),
    /// with `deadline` as a slot holds it; `b` is the slab slot of an IPv6 key (ignored for
    /// IPv4).
    #[inline(always)]
    fn slot(&self, b: u32, e: &Entry, deadline: u32) -> Slot {
        let reverse = if e.is_reverse() { KIND_REVERSE } else { 0 };
        let kind = reverse | (e.tcp.0 & KIND_TCP);
        Slot {
            head: if self.is_v4() {
                self.head
            } else {
                self.head | u64::from(b) << 32
            },
            tail: self.tail | u64::from(kind) << 40 | u64::from(e.nat_port) << 48,
            deadline,
            backend_id: e.backend_id,
            service_id: e.service_id,
            peer: e.peer,
        }
    }
}

// === Keys ===

/// Flow keys kept out of the slots: the keys of NAT pair members (which a reply needs to
/// find its client) and of IPv6 flows outside pairs (which do not fit a slot). Allocated
/// whole at construction, like the slots.
struct Keys {
    /// Pair slab: slot → key of a NAT pair member, two slots a pair (`2k` forward, `2k + 1`
    /// reverse), `capacity / 2` pairs. Only pair members hold a slot, and a pair's two
    /// slots are taken and freed together. An IPv6 pair member's slot holds `b = peer ^ 1`.
    pairs: Box<[Option<FlowKey>]>,
    /// Free pairs of `pairs` (pair `k` is slots `2k` and `2k + 1`); capacity
    /// `capacity / 2`, so pushes never allocate.
    free: Vec<u32>,
    /// Slot → key of an IPv6 flow that is not in a pair (its slot's `b`): `capacity` slots.
    lone: Box<[Option<FlowKey>]>,
    /// Free slots of `lone`; capacity `capacity`, so pushes never allocate.
    free_lone: Vec<u32>,
}

impl Keys {
    fn new(capacity: usize, pairs: u32) -> Option<Self> {
        let lone = u32::try_from(capacity).ok()?;
        let mut free = Vec::with_capacity(capacity / 2);
        // Lowest first out.
        free.extend((0..pairs).rev());
        let mut free_lone = Vec::with_capacity(capacity);
        free_lone.extend((0..lone).rev());
        Some(Self {
            pairs: vec![None; 2 * (capacity / 2)].into_boxed_slice(),
            free,
            lone: vec![None; capacity].into_boxed_slice(),
            free_lone,
        })
    }

    fn allocation_size(&self) -> usize {
        size_of_val::<[Option<FlowKey>]>(&self.pairs)
            + size_of_val::<[Option<FlowKey>]>(&self.lone)
            + (self.free.capacity() + self.free_lone.capacity()) * size_of::<u32>()
    }

    /// The key an IPv6 slot refers to.
    #[inline]
    fn stored(&self, s: &Slot) -> Option<&FlowKey> {
        let slab = if s.has_peer() {
            &self.pairs
        } else {
            &self.lone
        };
        slab.get(s.b() as usize)?.as_ref()
    }

    /// The key of an occupied slot.
    #[inline]
    fn key_of(&self, s: &Slot) -> Option<FlowKey> {
        if s.is_v4() {
            Some(FlowKey::from_v4_bits(s.a(), s.b(), s.ports(), s.proto()))
        } else {
            self.stored(s).copied()
        }
    }

    /// The key of the pair member in pair slot `peer`.
    #[inline]
    fn peer_key(&self, peer: u32) -> Option<FlowKey> {
        self.pairs.get(peer as usize).copied().flatten()
    }

    /// Stores `key`, an IPv6 key outside a pair, in a free lone slot and returns the slot;
    /// `None` if none is free (the table's capacity rules that out).
    fn hold_lone(&mut self, key: FlowKey) -> Option<u32> {
        let s = self.free_lone.pop()?;
        if let Some(k) = self.lone.get_mut(s as usize) {
            *k = Some(key);
        }
        Some(s)
    }

    /// Frees what the slot `s`, out of its table, held here: both slots of its NAT pair, or
    /// the lone slot of its IPv6 key. Idempotent: a pair already free is left alone.
    fn release(&mut self, s: &Slot) {
        if s.has_peer() {
            let pair = pair_of(s.peer);
            let first = 2 * pair as usize;
            if let Some(both) = self.pairs.get_mut(first..first + 2)
                && both.iter().any(Option::is_some)
            {
                both.fill(None);
                // `free` was allocated with room for every pair: this never allocates.
                self.free.push(pair);
            }
        } else if !s.is_v4()
            && let Some(k) = self.lone.get_mut(s.b() as usize)
            && k.take().is_some()
        {
            // Room for every slot: this never allocates.
            self.free_lone.push(s.b());
        }
    }

    /// Every key slot free again.
    fn clear(&mut self) {
        self.pairs.fill(None);
        self.lone.fill(None);
        self.free.clear();
        self.free
            .extend((0..low32(self.pairs.len() as u64 / 2)).rev());
        self.free_lone.clear();
        self.free_lone
            .extend((0..low32(self.lone.len() as u64)).rev());
    }
}

// === Table ===

/// One shard of the table: open addressing with linear probing over a power-of-two number
/// of [`Slot`]s (module docs, "Layout"). A key lives at its home slot (`hash & mask`) or
/// after it, with no empty slot in between. Removal shifts the following entries back (no
/// tombstones), so the table never needs a rehash and a probe stops at the first empty
/// slot. The shard always keeps empty slots (its limit is below its slot count), so every
/// probe ends.
struct Table {
    slots: Chunk<Slot>,
    /// `slots.len() - 1`.
    mask: usize,
    len: usize,
}

/// hashbrown's bucket count for `cap` items: the sizes this table had when it was a
/// hashbrown table, kept so that capacities map to the same slot counts.
fn capacity_to_buckets(cap: usize) -> usize {
    let cap = cap.max(3);
    if cap < 4 {
        4
    } else if cap < 8 {
        8
    } else if cap < 15 {
        16
    } else {
        (cap.saturating_mul(8) / 7).next_power_of_two()
    }
}

/// 7/8 of `buckets`, or all but one for tiny tables: the item count hashbrown would allow
/// (tests check a table's sizing against it).
#[cfg(test)]
fn full_capacity(buckets: usize) -> usize {
    if buckets <= 8 {
        buckets - 1
    } else {
        buckets / 8 * 7
    }
}

impl Table {
    /// A heap-backed table sized for `capacity` items (the bucket count hashbrown would
    /// choose). Aborts, like `std` collections, if the memory cannot be had.
    fn with_capacity(capacity: usize) -> Self {
        let buckets = capacity_to_buckets(capacity);
        let slots = Chunk::new(buckets, Slot::EMPTY)
            .unwrap_or_else(|| std::alloc::handle_alloc_error(Layout::new::<[Slot; 8]>()));
        Self::from_chunk(slots)
    }

    /// A table over `slots`, all empty; `slots.len()` must be a power of two.
    fn from_chunk(slots: Chunk<Slot>) -> Self {
        debug_assert!(slots.len().is_power_of_two());
        Self {
            mask: slots.len() - 1,
            slots,
            len: 0,
        }
    }

    #[inline]
    fn num_buckets(&self) -> usize {
        self.slots.len()
    }

    /// The item count the table is sized for ([`full_capacity`] of its buckets).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        full_capacity(self.slots.len())
    }

    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    fn allocation_size(&self) -> usize {
        size_of_val::<[Slot]>(&self.slots)
    }

    /// The occupied slots.
    fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| !s.is_empty())
    }

    /// The home slot of a key with hash `hash`: its low bits (shards are picked from
    /// bits 16..48, see [`shard_of`]), rounded down to an even slot, the first of a cache
    /// line (module docs, "Layout").
    #[inline]
    fn home(&self, hash: u64) -> usize {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "only the low bits are wanted, and mask < usize::MAX"
        )]
        let h = hash as usize;
        h & self.mask & !1
    }

    /// Prefetches the cache line of `hash`'s home slot, which holds its first two slots,
    /// where most keys are (module docs, "Layout").
    #[inline]
    fn prefetch(&self, hash: u64) {
        if let Some(s) = self.slots.get(self.home(hash)) {
            mem::prefetch(s);
        }
    }

    /// The slot holding `key` (whose probe is `p`), if any. Always inlined: it is most of a
    /// lookup, and as a call it cost a few ns per packet.
    #[inline(always)]
    fn find(&self, hash: u64, p: &Probe, key: &FlowKey, keys: &Keys) -> Option<usize> {
        let mut i = self.home(hash);
        // Ends at the first empty slot; bounded by the slot count even so.
        for _ in 0..self.slots.len() {
            let s = self.slots.get(i)?;
            if s.is_empty() {
                return None;
            }
            if p.head_matches(s) && (p.is_v4() || keys.stored(s) == Some(key)) {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Stores `slot` (its key not in the table) in the first empty slot from its home.
    /// `false` only if the table has no empty slot, which its limit rules out.
    #[inline]
    fn insert_new(&mut self, hash: u64, slot: Slot) -> bool {
        let mut i = self.home(hash);
        for _ in 0..self.slots.len() {
            let Some(s) = self.slots.get_mut(i) else {
                return false;
            };
            if s.is_empty() {
                *s = slot;
                self.len += 1;
                return true;
            }
            i = (i + 1) & self.mask;
        }
        false
    }

    /// Removes the item in slot `pos` and shifts the items after it back, so that no probe
    /// crosses a hole (backward-shift deletion). Each item it passes is rehashed with
    /// `hasher` to find its home (an IPv6 key is read from `keys`); a run of occupied slots
    /// is short.
    fn remove_at(&mut self, pos: usize, hasher: &KeyedHash, keys: &Keys) -> Option<Slot> {
        let removed = *self.slots.get(pos).filter(|s| !s.is_empty())?;
        if let Some(s) = self.slots.get_mut(pos) {
            *s = Slot::EMPTY;
        }
        self.len -= 1;
        let mask = self.mask;
        let mut hole = pos;
        let mut j = (pos + 1) & mask;
        for _ in 0..self.slots.len() {
            let Some(&s) = self.slots.get(j).filter(|s| !s.is_empty()) else {
                break;
            };
            let home = keys.key_of(&s).map_or(j, |k| self.home(hasher.hash_one(k)));
            // The item at `j` may fill the hole if its home is not after the hole, i.e. the
            // hole lies on its probe path `home..=j` (cyclically).
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = s;
                }
                if let Some(m) = self.slots.get_mut(j) {
                    *m = Slot::EMPTY;
                }
                hole = j;
            }
            j = (j + 1) & mask;
        }
        Some(removed)
    }
}

// === ConnTrack ===

/// A flow key and its hash under one [`ConnTrack`]'s hasher, made by
/// [`ConnTrack::hash_key`] on that table and used only with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HashedKey {
    key: FlowKey,
    hash: u64,
}

impl HashedKey {
    /// The key.
    #[inline]
    pub(crate) fn key(&self) -> &FlowKey {
        &self.key
    }
}

/// A worker's connection-tracking table. See the module docs for the contract.
pub struct ConnTrack {
    /// The shards; a key lives in `tables[shard_of(hash)]`.
    tables: Box<[Table]>,
    /// `tables.len()` as the multiplier of [`shard_of`].
    nshards: u64,
    /// Most entries one shard may hold: below its slot count, so an empty slot always ends
    /// a probe.
    shard_limit: usize,
    hasher: KeyedHash,
    /// The keys that are not in the slots.
    keys: Keys,
    /// The aging sweep's position: `(shard, i)`, where `i - 1` is the next slot it visits
    /// (it walks each shard downwards); `i == 0` moves it to the next shard.
    cursor: (usize, usize),
    /// Slots over all shards (fixed).
    buckets: usize,
    len: usize,
    capacity: usize,
    /// The timeouts in [`Clock`] units.
    timeouts: TimeoutTicks,
    clock: Clock,
    stats: Stats,
    /// The pages under the shards.
    backing: PageBacking,
}

impl fmt::Debug for ConnTrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTrack")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("shards", &self.tables.len())
            .field("shard_limit", &self.shard_limit)
            .field("buckets", &self.buckets())
            .field("backing", &self.backing)
            .field("cursor", &self.cursor)
            .field("timeouts", &self.timeouts)
            .field("clock", &self.clock)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The shard of a key with hash `hash`, out of `nshards`: a multiply-shift of hash
/// bits 16..48. Slots within a shard are picked with the low bits, so neither is constant
/// within a shard.
#[inline]
fn shard_of(hash: u64, nshards: u64) -> usize {
    let x = ((hash >> 16) & 0xFFFF_FFFF) * nshards;
    #[allow(
        clippy::cast_possible_truncation,
        reason = "x >> 32 < nshards <= MAX_CAPACITY, which fits any usize"
    )]
    let i = (x >> 32) as usize;
    i
}

/// The pair of the pair slab that `slot` belongs to.
#[inline]
const fn pair_of(slot: u32) -> u32 {
    slot >> 1
}

impl ConnTrack {
    /// A table for at most `capacity` entries, with random hash secrets.
    ///
    /// # Errors
    ///
    /// [`ConntrackError`] if `capacity` is 0 or above [`MAX_CAPACITY`], or a timeout is
    /// invalid at `rate`.
    pub fn new(
        capacity: usize,
        timeouts: &Timeouts,
        rate: TickRate,
    ) -> Result<Self, ConntrackError> {
        Self::with_hasher(capacity, timeouts, rate, ahash::RandomState::new())
    }

    /// As [`ConnTrack::new`], with the hash secrets drawn from the given ahash state (seeded,
    /// for reproducible tests).
    ///
    /// # Errors
    ///
    /// As [`ConnTrack::new`].
    pub fn with_hasher(
        capacity: usize,
        timeouts: &Timeouts,
        rate: TickRate,
        hasher: ahash::RandomState,
    ) -> Result<Self, ConntrackError> {
        if capacity == 0 {
            return Err(ConntrackError::ZeroCapacity);
        }
        let too_large = ConntrackError::CapacityTooLarge {
            requested: capacity,
            max: MAX_CAPACITY,
        };
        if capacity > MAX_CAPACITY {
            return Err(too_large);
        }
        // At most `capacity / 2` NAT pairs fit in the table at once.
        let pairs = u32::try_from(capacity / 2).map_err(|_| too_large)?;
        let timeouts = TimeoutTicks::new(timeouts, rate)?;
        let clock = Clock::new(timeouts.longest());
        let keys = Keys::new(capacity, pairs).ok_or(too_large)?;

        // Up to SHARD_MEAN_MAX entries: one table with more than twice `capacity` slots.
        // Beyond: shards of SHARD_BUCKETS slots, each expecting at most SHARD_MEAN_MAX
        // entries and allowed SHARD_LIMIT (see "Layout").
        let (tables, shard_limit, backing): (Vec<Table>, usize, PageBacking) =
            if capacity <= SHARD_MEAN_MAX {
                let t = Table::with_capacity(2 * (capacity + 1));
                (vec![t], capacity, PageBacking::Heap)
            } else {
                let n = capacity.div_ceil(SHARD_MEAN_MAX);
                let chunks = PagedChunks::new(n, SHARD_BUCKETS, Slot::EMPTY).unwrap_or_else(|| {
                    std::alloc::handle_alloc_error(Layout::new::<[Slot; SHARD_BUCKETS]>())
                });
                let backing = chunks.backing();
                let tables: Vec<Table> = chunks
                    .into_chunks()
                    .into_iter()
                    .map(Table::from_chunk)
                    .collect();
                (tables, SHARD_LIMIT, backing)
            };
        let nshards = u64::try_from(tables.len()).map_err(|_| too_large)?;
        let buckets = tables.iter().map(Table::num_buckets).sum();
        Ok(Self {
            cursor: (tables.len() - 1, 0),
            tables: tables.into_boxed_slice(),
            nshards,
            shard_limit,
            hasher: KeyedHash::from_random_state(&hasher),
            keys,
            buckets,
            len: 0,
            capacity,
            clock,
            timeouts: timeouts.in_units(clock.shift),
            stats: Stats::default(),
            backing,
        })
    }

    /// Entries stored, live or not yet aged out.
    #[inline]
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is stored.
    #[inline]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fixed capacity given at construction.
    #[inline]
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `len / capacity`, in `[0, 1]`: the conntrack fill metric.
    #[inline]
    #[must_use]
    pub fn fill(&self) -> f64 {
        let len = u32::try_from(self.len).unwrap_or(u32::MAX);
        let cap = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        f64::from(len) / f64::from(cap)
    }

    /// The counters.
    #[inline]
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Slots over all shards: what one pass of [`ConnTrack::evict_expired`] walks.
    #[inline]
    #[must_use]
    pub fn buckets(&self) -> usize {
        self.buckets
    }

    /// Shards (hash tables) the entries are split over.
    #[must_use]
    pub fn shards(&self) -> usize {
        self.tables.len()
    }

    /// The pages the shards live on: 2 MiB hugepages, transparent hugepages, or the heap
    /// (module docs, "Layout").
    #[must_use]
    pub fn page_backing(&self) -> PageBacking {
        self.backing
    }

    /// Bytes allocated at construction (slots, pair slab, free list; mapped memory is
    /// rounded up to whole 2 MiB pages on top of this).
    #[must_use]
    pub fn allocated_bytes(&self) -> usize {
        self.tables
            .iter()
            .map(Table::allocation_size)
            .sum::<usize>()
            + size_of_val::<[Table]>(&self.tables)
            + self.keys.allocation_size()
    }

    /// The live entry for `key`, refreshed: its deadline pushed out to `now` + its
    /// timeout. An expired entry found here is removed and reported as a miss (but see
    /// the NAT pair rule in the module docs). For TCP, prefer [`ConnTrack::lookup_tcp`] so
    /// FIN/RST shorten the flow's life. Returns a copy of the entry as refreshed.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, now: Tick) -> Option<Entry> {
        self.lookup_inner(key, None, now)
    }

    /// [`ConnTrack::lookup`] for a TCP segment with `flags`: also advances the entry's
    /// [`TcpState`]. The segment's direction is the entry's: reply on a reverse NAT entry,
    /// original otherwise. The first FIN or RST moves the flow to the `tcp_closing` timeout,
    /// and for a NAT pair shortens the other side too. `flags` are ignored if `key` is not
    /// TCP.
    #[inline]
    pub fn lookup_tcp(&mut self, key: &FlowKey, flags: TcpFlags, now: Tick) -> Option<Entry> {
        self.lookup_inner(key, Some(flags), now)
    }

    #[inline]
    fn lookup_inner(&mut self, key: &FlowKey, flags: Option<TcpFlags>, now: Tick) -> Option<Entry> {
        let hash = self.hasher.hash_one(key);
        self.lookup_hashed(key, hash, flags, now)
    }

    /// `key` with its hash under this table's hasher, for
    /// [`ConnTrack::prefetch`] and [`ConnTrack::lookup_tcp_hashed`]: the key is hashed once.
    #[inline(always)]
    pub(crate) fn hash_key(&self, key: FlowKey) -> HashedKey {
        HashedKey {
            hash: self.hasher.hash_one(key),
            key,
        }
    }

    /// Prefetches the cache line `key` would be found in first (its home slot and the next):
    /// a hint, with no loads that wait and nothing changed. A burst
    /// issues one per packet before its lookups, so their cache and TLB misses overlap.
    #[inline]
    pub(crate) fn prefetch(&self, key: &HashedKey) {
        if let Some(t) = self.tables.get(shard_of(key.hash, self.nshards)) {
            t.prefetch(key.hash);
        }
    }

    /// [`ConnTrack::lookup_tcp`] with the hash already computed by
    /// [`ConnTrack::hash_key`] on this table. Inlined into the packet path, like
    /// [`ConnTrack::lookup_hashed`].
    #[inline(always)]
    pub(crate) fn lookup_tcp_hashed(
        &mut self,
        key: &HashedKey,
        flags: TcpFlags,
        now: Tick,
    ) -> Option<Entry> {
        self.lookup_hashed(&key.key, key.hash, Some(flags), now)
    }

    /// `now` in units. First, if `now` is [`SWEEP_STALE`] units or more from the start of
    /// the last complete aging pass (`swept`), either way, [`ConnTrack::resync`] runs. So
    /// each call's `now` is within [`SWEEP_STALE`] of `swept`, every deadline it stores
    /// within that plus the longest timeout, and every stored deadline within 2³¹ units of
    /// `now` (module docs, "Deadlines"). One subtraction and a well-predicted branch.
    #[inline(always)]
    fn advance(&mut self, now: Tick) -> u64 {
        let u = self.clock.units(now);
        if u.wrapping_sub(self.clock.swept).wrapping_add(SWEEP_STALE) >= 2 * SWEEP_STALE {
            self.resync(u);
        }
        u
    }

    /// The rare half of [`ConnTrack::advance`], at `u` units. The stored deadlines lie
    /// within `SWEEP_STALE` + the longest timeout of `swept`. If `u` is within
    /// 2 × `SWEEP_STALE` of `swept`, it is less than 2³¹ units from each of them, and one
    /// whole aging pass at `u` is exact. Otherwise the clock jumped: forward, every
    /// deadline has passed; back, they cannot be read. Either way every entry goes.
    #[cold]
    #[inline(never)]
    fn resync(&mut self, u: u64) {
        let near = u
            .wrapping_sub(self.clock.swept)
            .wrapping_add(2 * SWEEP_STALE)
            <= 4 * SWEEP_STALE;
        // With nothing stored (a worker's first call: its clock starts far from 0) there is
        // nothing to age or drop.
        if self.len > 0 {
            if near {
                self.sweep(u, self.buckets);
            } else {
                for t in &mut self.tables {
                    t.slots.fill(Slot::EMPTY);
                    t.len = 0;
                }
                self.keys.clear();
                self.stats.evicted += self.len as u64;
                self.len = 0;
            }
        }
        self.clock = Clock {
            pass_start: u,
            swept: u,
            ..self.clock
        };
    }

    /// The lookup itself. Always inlined into the packet path: the hit is ~60 instructions,
    /// and a call added a dozen more (saves, restores, spills); the rare paths are calls.
    #[inline(always)]
    fn lookup_hashed(
        &mut self,
        key: &FlowKey,
        hash: u64,
        flags: Option<TcpFlags>,
        now: Tick,
    ) -> Option<Entry> {
        let u = self.advance(now);
        let idx = shard_of(hash, self.nshards);
        let flags = if key.proto() == IpProtocol::TCP {
            flags
        } else {
            None
        };
        let probe = Probe::new(key, hash);
        let keys = &self.keys;
        let found = self
            .tables
            .get_mut(idx)
            .and_then(|t| Some((t.find(hash, &probe, key, keys)?, t)));
        let Some((pos, table)) = found else {
            self.stats.misses += 1;
            return None;
        };
        let slot = table.slots.get_mut(pos)?;
        if Clock::live(slot.deadline, u) {
            self.stats.hits += 1;
            let newly_closing = refresh(slot, key.proto(), flags, u, &self.timeouts);
            let e = slot.entry(&self.clock, u);
            if newly_closing && e.has_peer() {
                // First FIN/RST of a NAT pair: shorten the other side too (once per
                // connection). That changes no slot positions.
                self.close_peer(e.peer, e.tcp, u);
            }
            return Some(e);
        }
        self.lookup_expired(key, idx, pos, flags, u)
    }

    /// The rest of [`ConnTrack::lookup_hashed`] for an entry found expired, at `pos` of
    /// shard `idx`: kept if it is one side of a NAT pair whose other side lives, else
    /// removed (with its pair).
    #[cold]
    fn lookup_expired(
        &mut self,
        key: &FlowKey,
        idx: usize,
        pos: usize,
        flags: Option<TcpFlags>,
        u: u64,
    ) -> Option<Entry> {
        let slot = *self.tables.get(idx)?.slots.get(pos)?;
        // A lone entry (or one whose pair slot is somehow gone) is removed.
        let Some(peer_key) = self.keys.peer_key(slot.peer) else {
            if let Some(t) = self.tables.get_mut(idx) {
                t.remove_at(pos, &self.hasher, &self.keys);
            }
            self.keys.release(&slot);
            self.len -= 1;
            self.stats.expired += 1;
            self.stats.misses += 1;
            return None;
        };
        // A NAT pair lives while either side does.
        if self.find_slot(&peer_key).is_some_and(|p| p.is_live(u)) {
            self.stats.hits += 1;
            let s = self.tables.get_mut(idx)?.slots.get_mut(pos)?;
            let newly_closing = refresh(s, key.proto(), flags, u, &self.timeouts);
            let e = s.entry(&self.clock, u);
            if newly_closing {
                self.close_peer(e.peer, e.tcp, u);
            }
            return Some(e);
        }
        let removed = self.take_both(key, &peer_key, &slot);
        self.stats.expired += removed as u64;
        self.stats.misses += 1;
        None
    }

    /// Takes `key`'s slot out of its table, if present (its keys stay in `keys`).
    #[inline]
    fn take(&mut self, key: &FlowKey) -> Option<Slot> {
        let hash = self.hasher.hash_one(key);
        let table = self.tables.get_mut(shard_of(hash, self.nshards))?;
        let pos = table.find(hash, &Probe::new(key, hash), key, &self.keys)?;
        table.remove_at(pos, &self.hasher, &self.keys)
    }

    /// Removes the two sides of a NAT pair, `key` (whose slot was `slot`) and `peer_key`,
    /// and frees their pair; returns how many entries went.
    fn take_both(&mut self, key: &FlowKey, peer_key: &FlowKey, slot: &Slot) -> usize {
        let mut removed = 0;
        for k in [key, peer_key] {
            if self.take(k).is_some() {
                removed += 1;
            }
        }
        self.keys.release(slot);
        self.len -= removed;
        removed
    }

    /// Copies the closing bits of `tcp` to the pair member in slot `peer` and caps its
    /// deadline at `now + tcp_closing` (`now` in units).
    fn close_peer(&mut self, peer: u32, tcp: TcpState, now: u64) {
        let Some(peer_key) = self.keys.peer_key(peer) else {
            return;
        };
        let hash = self.hasher.hash_one(peer_key);
        let closing = low32(now.wrapping_add(self.timeouts.tcp_closing));
        let probe = Probe::new(&peer_key, hash);
        if let Some(t) = self.tables.get_mut(shard_of(hash, self.nshards))
            && let Some(pos) = t.find(hash, &probe, &peer_key, &self.keys)
            && let Some(p) = t.slots.get_mut(pos)
        {
            p.set_tcp(TcpState(p.tcp().0 | (tcp.0 & TcpState::CLOSING)));
            // The earlier of the two deadlines, in serial order.
            if serial_delta(closing, u64::from(p.deadline)) < 0 {
                p.deadline = closing;
            }
        }
    }

    /// The slot holding `key`, if any.
    fn find_slot(&self, key: &FlowKey) -> Option<&Slot> {
        let hash = self.hasher.hash_one(key);
        let t = self.tables.get(shard_of(hash, self.nshards))?;
        t.slots
            .get(t.find(hash, &Probe::new(key, hash), key, &self.keys)?)
    }

    /// The stored entry for `key` as is: no refresh, no expiry check, no counters. For
    /// diagnostics and tests; the packet path uses [`ConnTrack::lookup`].
    #[must_use]
    pub fn peek(&self, key: &FlowKey) -> Option<Entry> {
        self.find_slot(key)
            .map(|s| s.entry(&self.clock, self.clock.swept))
    }

    /// The key of `entry`'s NAT peer: for a reverse entry, the forward key (client → VIP),
    /// which is how a reply is un-NATed. `None` for an entry without a peer. One array
    /// read, no hash probe.
    #[inline]
    #[must_use]
    pub fn peer_key(&self, entry: &Entry) -> Option<FlowKey> {
        self.keys.peer_key(entry.peer)
    }

    /// Whether `n` more entries fit in total and in each listed shard.
    #[inline]
    fn has_room(&self, shards: &[usize], n: usize) -> bool {
        self.len + n <= self.capacity
            && shards.iter().all(|&s| {
                let extra = shards.iter().filter(|&&t| t == s).count();
                self.tables
                    .get(s)
                    .is_some_and(|t| t.len() + extra <= self.shard_limit)
            })
    }

    /// Inserts `entry` for `key`, created at `now`, with the TCP state of a first packet
    /// with `flags` (ignored if `key` is not TCP). An entry already stored for `key` is
    /// replaced; if it was one side of a NAT pair, the other side is removed.
    ///
    /// # Errors
    ///
    /// [`InsertError::Full`] if the table holds `capacity` entries after aging
    /// [`INSERT_SWEEP_BUDGET`] buckets (or, far less likely, the key's shard is at its own
    /// limit). Nothing was inserted; forward statelessly.
    pub fn insert(
        &mut self,
        key: FlowKey,
        entry: Entry,
        flags: TcpFlags,
        now: Tick,
    ) -> Result<(), InsertError> {
        let u = self.advance(now);
        let hash = self.hasher.hash_one(key);
        let idx = shard_of(hash, self.nshards);
        // Replacing a stored key: it goes first (with its NAT peer), which frees its room.
        let _ = self.remove(&key);
        if !self.has_room(&[idx], 1) {
            self.sweep(u, INSERT_SWEEP_BUDGET);
            if !self.has_room(&[idx], 1) {
                self.stats.full += 1;
                return Err(InsertError::Full);
            }
        }
        let (entry, deadline) = self.prepare(&key, entry, flags, u);
        let probe = Probe::new(&key, hash);
        let mut b = 0;
        if !probe.is_v4() {
            // At most `len < capacity` lone keys are in use: one of `capacity` is free.
            let Some(s) = self.keys.hold_lone(key) else {
                self.stats.full += 1;
                return Err(InsertError::Full);
            };
            b = s;
        }
        let slot = probe.slot(b, &entry, deadline);
        if !self
            .tables
            .get_mut(idx)
            .is_some_and(|t| t.insert_new(hash, slot))
        {
            self.keys.release(&slot);
            self.stats.full += 1;
            return Err(InsertError::Full);
        }
        self.len += 1;
        self.stats.inserts += 1;
        Ok(())
    }

    /// Inserts a NAT pair: `fwd` for `fwd_key` (client → VIP) and `rev` for `rev_key`
    /// (backend → SNAT address), linked so that [`ConnTrack::peer_key`] on the reverse entry
    /// gives `fwd_key`. The reverse entry is marked [`Entry::is_reverse`]. Both start in the
    /// TCP state of a first packet with `flags`. Entries already stored under either key are
    /// replaced, with their own peers.
    ///
    /// # Errors
    ///
    /// [`InsertError::Full`] if two entries do not fit after aging; [`InsertError::SameKey`]
    /// if `fwd_key == rev_key`. Either way nothing was inserted. On `Full`, entries that were
    /// stored under either key (and their peers) have already been removed; the pipeline
    /// only pairs keys its lookups missed, so there are none.
    pub fn insert_pair(
        &mut self,
        fwd_key: FlowKey,
        fwd: Entry,
        rev_key: FlowKey,
        rev: Entry,
        flags: TcpFlags,
        now: Tick,
    ) -> Result<(), InsertError> {
        if fwd_key == rev_key {
            return Err(InsertError::SameKey);
        }
        let u = self.advance(now);
        let _ = self.remove(&fwd_key);
        let _ = self.remove(&rev_key);
        let (fh, rh) = (self.hasher.hash_one(fwd_key), self.hasher.hash_one(rev_key));
        let shards = [shard_of(fh, self.nshards), shard_of(rh, self.nshards)];
        if !self.has_room(&shards, 2) {
            self.sweep(u, INSERT_SWEEP_BUDGET);
            if !self.has_room(&shards, 2) {
                self.stats.full += 1;
                return Err(InsertError::Full);
            }
        }
        // Pairs in use are at most `len / 2 <= (capacity - 2) / 2`, so one of the
        // `capacity / 2` pairs is free.
        let Some(pair) = self.keys.free.pop() else {
            self.stats.full += 1;
            return Err(InsertError::Full);
        };
        let (fs, rs) = (2 * pair, 2 * pair + 1);
        self.keys.pairs[fs as usize] = Some(fwd_key);
        self.keys.pairs[rs as usize] = Some(rev_key);
        let (mut fwd, deadline) = self.prepare(&fwd_key, fwd, flags, u);
        let (mut rev, rev_deadline) = self.prepare(&rev_key, rev, flags, u);
        // Each side links to the other; its own slot is the other half of the pair.
        fwd.peer = rs;
        rev.peer = fs;
        rev.flags |= Entry::REVERSE;
        for (((k, e, d), h), (s, own)) in [(fwd_key, fwd, deadline), (rev_key, rev, rev_deadline)]
            .into_iter()
            .zip([fh, rh])
            .zip(shards.into_iter().zip([fs, rs]))
        {
            let slot = Probe::new(&k, h).slot(own, &e, d);
            // Both keys are absent (removed above) and both shards have room.
            if let Some(t) = self.tables.get_mut(s)
                && t.insert_new(h, slot)
            {
                self.len += 1;
                self.stats.inserts += 1;
            }
        }
        Ok(())
    }

    /// Removes `key`'s entry and, if it is one side of a NAT pair, the other side; returns
    /// the entry.
    pub fn remove(&mut self, key: &FlowKey) -> Option<Entry> {
        let s = self.take(key)?;
        self.len -= 1;
        self.stats.removed += 1;
        if let Some(peer_key) = self.keys.peer_key(s.peer)
            && self.take(&peer_key).is_some()
        {
            self.len -= 1;
            self.stats.removed += 1;
        }
        self.keys.release(&s);
        Some(s.entry(&self.clock, self.clock.swept))
    }

    /// Ages the table incrementally: visits up to `budget` slots from where the last call
    /// stopped (wrapping around) and removes the expired entries found. A NAT pair goes
    /// only when both sides have expired. Returns the number of entries removed. O(`budget`);
    /// `ceil(buckets() / budget)` calls cover the whole table. Call it once per burst or idle
    /// loop with a small budget (tens to a few hundred).
    pub fn evict_expired(&mut self, now: Tick, budget: usize) -> usize {
        let u = self.advance(now);
        self.sweep(u, budget)
    }

    /// Prefetches the slots a call of [`ConnTrack::evict_expired`] with `budget` reads first
    /// (the `budget` slots below its cursor): a hint, nothing changed. A burst issues it
    /// before its packets and ages after them, so the aging step finds those lines in cache
    /// instead of waiting on memory at the end of every burst.
    #[inline]
    pub(crate) fn prefetch_sweep(&self, budget: usize) {
        let (s, i) = self.cursor;
        let Some(window) = self
            .tables
            .get(s)
            .and_then(|t| t.slots.get(i.saturating_sub(budget)..i))
        else {
            return;
        };
        // Two slots to a line; the last slot covers a window that ends mid-line.
        for slot in window.iter().step_by(2).chain(window.last()) {
            mem::prefetch(slot);
        }
    }

    /// [`ConnTrack::evict_expired`] at `u` (units).
    fn sweep(&mut self, u: u64, budget: usize) -> usize {
        let mut left = budget.min(self.buckets);
        let mut removed = 0;
        while left > 0 {
            let (mut s, mut i) = self.cursor;
            if i == 0 || self.tables.get(s).is_none() {
                if s + 1 >= self.tables.len() {
                    // A pass is complete: every slot was visited since `pass_start`.
                    s = 0;
                    self.clock.swept = self.clock.pass_start;
                    self.clock.pass_start = u;
                } else {
                    s += 1;
                }
                i = self.tables.get(s).map_or(0, Table::num_buckets);
                if i == 0 {
                    break;
                }
            }
            // Scan down from slot i - 1 for the next expired entry, at most `left` slots:
            // a tight loop over the slots' deadlines.
            let lo = i.saturating_sub(left);
            let Some(slots) = self.tables.get(s).and_then(|t| t.slots.get(lo..i)) else {
                break;
            };
            let found = slots
                .iter()
                .rposition(|x| !x.is_empty() && !Clock::live(x.deadline, u));
            let next = found.map_or(lo, |j| lo + j);
            left -= i - next;
            self.cursor = (s, next);
            if found.is_some() {
                removed += self.sweep_bucket(s, next, u);
            }
        }
        self.stats.evicted += removed as u64;
        removed
    }

    /// Every stored entry, shard by shard in slot order (diagnostics: dumps, tests), with
    /// copies of the keys and entries.
    pub fn iter(&self) -> impl Iterator<Item = (FlowKey, Entry)> {
        self.tables.iter().flat_map(|t| {
            t.iter().filter_map(|s| {
                Some((self.keys.key_of(s)?, s.entry(&self.clock, self.clock.swept)))
            })
        })
    }

    /// Ages slot `i` of shard `s`; returns how many entries went. The sweep walks down, and
    /// a removal only moves entries from later slots (already visited) into earlier ones,
    /// so a pass skips nothing unless a run of slots wraps around the end of the shard.
    #[inline]
    fn sweep_bucket(&mut self, s: usize, i: usize, u: u64) -> usize {
        let Some(&slot) = self.tables.get(s).and_then(|t| t.slots.get(i)) else {
            return 0;
        };
        if slot.is_empty() || slot.is_live(u) {
            return 0;
        }
        let Some(peer_key) = self.keys.peer_key(slot.peer) else {
            if let Some(t) = self.tables.get_mut(s) {
                t.remove_at(i, &self.hasher, &self.keys);
            }
            self.keys.release(&slot);
            self.len -= 1;
            return 1;
        };
        if self.find_slot(&peer_key).is_some_and(|p| p.is_live(u)) {
            return 0;
        }
        let Some(key) = self.keys.key_of(&slot) else {
            return 0;
        };
        self.take_both(&key, &peer_key, &slot)
    }

    /// Fills in the TCP state of an entry about to be inserted, and clears its peer link
    /// and flags; returns it with its deadline in the form a slot holds, for `now` (units).
    /// Both sides of a pair are created from the client's packet, so the flags are in the
    /// original direction.
    #[inline]
    fn prepare(&self, key: &FlowKey, mut e: Entry, flags: TcpFlags, now: u64) -> (Entry, u32) {
        e.tcp = if key.proto() == IpProtocol::TCP {
            TcpState::first(flags, false)
        } else {
            TcpState(0)
        };
        (e.peer, e.flags) = (NO_SLOT, 0);
        let deadline = low32(now.wrapping_add(self.timeouts.for_state(key.proto(), e.tcp)));
        (e, deadline)
    }

    /// Test support: `capacity` split over `nshards` tables that can each hold all of it, so
    /// small property tests exercise NAT peers in other shards.
    #[cfg(test)]
    fn with_shards(capacity: usize, nshards: usize, hasher: ahash::RandomState) -> Self {
        let mut c = Self::with_hasher(
            capacity,
            &Timeouts::default(),
            TickRate::try_new(1).unwrap(),
            hasher,
        )
        .unwrap();
        c.tables = (0..nshards)
            .map(|_| Table::with_capacity(2 * (capacity + 1)))
            .collect();
        c.nshards = u64::try_from(nshards).unwrap();
        c.buckets = c.tables.iter().map(Table::num_buckets).sum();
        c.shard_limit = capacity;
        c.cursor = (nshards - 1, 0);
        c
    }

    /// Test support: checks the structural invariants, panicking with a message.
    #[cfg(test)]
    fn check_invariants(&self) {
        let total: usize = self.tables.iter().map(Table::len).sum();
        assert_eq!(total, self.len, "len counter");
        let buckets: usize = self.tables.iter().map(Table::num_buckets).sum();
        assert_eq!(buckets, self.buckets, "bucket count changed");
        assert!(self.len <= self.capacity, "len above capacity");
        for (s, t) in self.tables.iter().enumerate() {
            assert!(t.len() <= self.shard_limit, "shard above its limit");
            assert!(
                self.shard_limit < t.num_buckets(),
                "a full shard would have no empty slot to end a probe"
            );
            assert_eq!(t.iter().count(), t.len(), "shard len counter");
            for slot in t.iter() {
                let k = self.keys.key_of(slot).expect("a slot's key");
                let h = self.hasher.hash_one(k);
                assert_eq!(shard_of(h, self.nshards), s, "shard");
                assert_eq!(k.v4_bits().is_some(), slot.is_v4(), "family bit");
                assert!(Probe::new(&k, h).head_matches(slot), "head");
            }
        }
        // The pair slab: `capacity / 2` pairs, each wholly used or wholly free, and every
        // pair either in use or on the free list, once.
        let pairs = self.capacity / 2;
        let slab = &self.keys;
        assert_eq!(slab.pairs.len(), 2 * pairs, "slab size");
        let mut on_free_list = vec![false; pairs];
        for &f in &slab.free {
            let seen = on_free_list
                .get_mut(f as usize)
                .expect("free pair out of range");
            assert!(!*seen, "pair freed twice");
            *seen = true;
        }
        let mut used_pairs = 0;
        for (pair, (both, free)) in slab.pairs.chunks(2).zip(&on_free_list).enumerate() {
            let [fwd, rev] = both else {
                panic!("odd slab length");
            };
            assert_eq!(fwd.is_some(), rev.is_some(), "half-used pair {pair}");
            assert_ne!(
                fwd.is_some(),
                *free,
                "pair {pair} both used and free, or neither"
            );
            used_pairs += usize::from(fwd.is_some());
        }
        assert_eq!(used_pairs + slab.free.len(), pairs, "slab leak");
        // The lone slab: each used slot held by exactly one IPv6 slot outside a pair.
        assert_eq!(slab.lone.len(), self.capacity, "lone slab size");
        let mut lone_free = vec![false; self.capacity];
        for &f in &slab.free_lone {
            let seen = lone_free
                .get_mut(f as usize)
                .expect("free slot out of range");
            assert!(!*seen, "lone slot freed twice");
            *seen = true;
            assert!(slab.lone[f as usize].is_none(), "free lone slot in use");
        }
        let mut paired = 0;
        let mut lone = 0;
        for t in self.tables.iter() {
            for slot in t.iter() {
                let k = self.keys.key_of(slot).unwrap();
                let e = self.peek(&k).expect("entry unreachable by its probe");
                if e.has_peer() {
                    paired += 1;
                    // The entry's own slot is derived: the other half of its peer's pair.
                    let own = e.peer ^ 1;
                    assert_eq!(slab.pairs[own as usize], Some(k), "own slot");
                    if !slot.is_v4() {
                        assert_eq!(slot.b(), own, "an IPv6 pair member's key slot");
                    }
                    assert_eq!(own % 2 == 1, e.is_reverse(), "reverse side in the odd slot");
                    let pk = slab.pairs[e.peer as usize].expect("peer slot");
                    let p = self.peek(&pk).expect("peer entry");
                    assert_eq!(p.peer, own, "peer link");
                    assert_ne!(p.is_reverse(), e.is_reverse(), "one reverse side");
                } else {
                    assert!(!e.is_reverse(), "a reverse entry without its forward side");
                    if !slot.is_v4() {
                        lone += 1;
                        assert!(
                            !lone_free[slot.b() as usize],
                            "lone key slot on the free list"
                        );
                        assert_eq!(slab.lone[slot.b() as usize], Some(k), "lone key");
                    }
                }
            }
        }
        assert_eq!(paired, 2 * used_pairs, "slots held by non-entries");
        assert_eq!(lone + slab.free_lone.len(), self.capacity, "lone slab leak");
    }
}

/// Applies a hit at `now` (units; `t` in units too) and TCP `flags` to slot `s`; returns
/// whether the flow just began closing.
#[inline(always)]
fn refresh(
    s: &mut Slot,
    proto: IpProtocol,
    flags: Option<TcpFlags>,
    now: u64,
    t: &TimeoutTicks,
) -> bool {
    let mut newly_closing = false;
    if let Some(f) = flags {
        let before = s.tcp();
        // Most segments of an established flow carry no SYN, FIN or RST: they change
        // nothing (`observe` would only set ESTABLISHED again), so skip the state machine.
        if f.0 & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) != 0 || !before.is_established() {
            let after = before.observe(f, s.is_reverse());
            s.set_tcp(after);
            newly_closing = !before.is_closing() && after.is_closing();
        }
    }
    s.deadline = low32(now.wrapping_add(t.for_state(proto, s.tcp())));
    newly_closing
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    /// One tick per second, so ticks read as seconds.
    fn rate() -> TickRate {
        TickRate::try_new(1).unwrap()
    }

    fn ct(capacity: usize) -> ConnTrack {
        ConnTrack::with_hasher(
            capacity,
            &Timeouts::default(),
            rate(),
            ahash::RandomState::with_seeds(1, 2, 3, 4),
        )
        .unwrap()
    }

    /// `capacity` over `nshards` shards (NAT peers often in another shard).
    fn cts(capacity: usize, nshards: usize) -> ConnTrack {
        ConnTrack::with_shards(
            capacity,
            nshards,
            ahash::RandomState::with_seeds(1, 2, 3, 4),
        )
    }

    fn key(proto: IpProtocol, port: u16) -> FlowKey {
        FlowKey::v4(
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(198, 51, 100, 10),
            port,
            443,
            proto,
        )
    }

    fn tcp(port: u16) -> FlowKey {
        key(IpProtocol::TCP, port)
    }

    /// An IPv6 key: its slot holds a fingerprint, the key itself sits in a slab.
    fn key6(proto: IpProtocol, port: u16) -> FlowKey {
        FlowKey::v6(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x10),
            port,
            443,
            proto,
        )
    }

    fn udp(port: u16) -> FlowKey {
        key(IpProtocol::UDP, port)
    }

    const NONE: TcpFlags = TcpFlags(0);
    const SYN: TcpFlags = TcpFlags(TcpFlags::SYN);
    const ACK: TcpFlags = TcpFlags(TcpFlags::ACK);
    const FIN_ACK: TcpFlags = TcpFlags(TcpFlags::FIN | TcpFlags::ACK);
    const RST: TcpFlags = TcpFlags(TcpFlags::RST);

    #[test]
    fn tick_rate_conversions() {
        assert_eq!(
            TickRate::NANOS.ticks(Duration::from_secs(2)),
            Some(2_000_000_000)
        );
        assert_eq!(
            TickRate::MILLIS.ticks(Duration::from_micros(1)),
            Some(1),
            "rounds up"
        );
        assert_eq!(TickRate::MILLIS.ticks(Duration::ZERO), Some(0));
        assert_eq!(TickRate::NANOS.ticks(Duration::MAX), None);
        let tsc = TickRate::try_new(2_450_000_000).unwrap();
        assert_eq!(tsc.ticks(Duration::from_secs(900)), Some(2_205_000_000_000));
        assert_eq!(tsc.duration(2_205_000_000_000), Duration::from_secs(900));
        assert_eq!(
            TickRate::MILLIS.duration(1_500),
            Duration::from_millis(1_500)
        );
        assert_eq!(TickRate::try_new(0), Err(ConntrackError::ZeroTickRate));
        assert_eq!(Tick(5).saturating_since(Tick(7)), 0);
        assert_eq!(Tick(u64::MAX - 1).saturating_add(5), Tick(u64::MAX));
    }

    #[test]
    fn timeouts_are_validated() {
        let d = Timeouts::default();
        assert_eq!(d.tcp_established, Duration::from_secs(900));
        assert_eq!(d.tcp_syn, Duration::from_secs(30));
        assert_eq!(d.tcp_closing, Duration::from_secs(10));
        assert_eq!(d.udp, Duration::from_secs(60));
        assert_eq!(d.other, Duration::from_secs(30));
        assert_eq!(d.validate(TickRate::NANOS), Ok(()));
        let zero = Timeouts {
            udp: Duration::ZERO,
            ..d
        };
        assert_eq!(
            zero.validate(rate()),
            Err(ConntrackError::ZeroTimeout("udp"))
        );
        let huge = Timeouts {
            tcp_syn: Duration::from_secs(u64::MAX / 1_000),
            ..d
        };
        assert_eq!(
            huge.validate(TickRate::NANOS),
            Err(ConntrackError::TimeoutOverflow("tcp_syn"))
        );
        assert_eq!(
            ConnTrack::new(4, &zero, rate()).unwrap_err(),
            ConntrackError::ZeroTimeout("udp")
        );
    }

    #[test]
    fn capacity_is_validated() {
        let t = Timeouts::default();
        assert_eq!(
            ConnTrack::new(0, &t, rate()).unwrap_err(),
            ConntrackError::ZeroCapacity
        );
        assert!(matches!(
            ConnTrack::new(MAX_CAPACITY + 1, &t, rate()),
            Err(ConntrackError::CapacityTooLarge { .. })
        ));
        let c = ct(100_000);
        assert_eq!(c.capacity(), 100_000);
        c.check_invariants();
    }

    /// Up to 5000 entries is one table; beyond, shards of `SHARD_BUCKETS` that each expect at
    /// most 5000 and may hold 5734 (see "Layout").
    #[test]
    fn shard_layout() {
        for (cap, shards, buckets) in [
            (1, 1, 8),
            (1_000, 1, 4_096),
            (2_864, 1, 8_192),
            (5_000, 1, 16_384),
            (5_001, 2, 16_384),
            (100_000, 20, 163_840),
            (1_000_000, 200, 1_638_400),
        ] {
            let c = ct(cap);
            assert_eq!(
                (c.shards(), c.buckets()),
                (shards, buckets),
                "capacity {cap}"
            );
            let limit = if shards == 1 { cap } else { 5_734 };
            assert_eq!(c.shard_limit, limit, "capacity {cap}");
            c.check_invariants();
        }
        // 1M entries: 52 MB of hash tables (1 638 400 slots of 32 bytes) + 42 MB of pair
        // slab (1M keys) and free list (500 000 pairs) + 44 MB of lone IPv6 keys (1M) and
        // their free list.
        let bytes = ct(1_000_000).allocated_bytes();
        assert!((138_000_000..139_000_000).contains(&bytes), "{bytes}");
    }

    /// Random churn at a full single table: removals shift entries back instead of leaving
    /// tombstones, so nothing is ever rehashed or reallocated, and every live key stays
    /// reachable by its probe (`check_invariants`).
    #[test]
    fn churn_never_rehashes_or_grows() {
        let cap = 2_864;
        let mut c = ct(cap);
        let bytes = c.allocated_bytes();
        let mut rng = 0x1234_5678_u64;
        let mut live: Vec<FlowKey> = Vec::with_capacity(cap);
        for i in 0..400_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let [a, b, cc, d, e, f, ..] = rng.to_le_bytes();
            let k = FlowKey::v4(
                Ipv4Addr::new(a, b, cc, d),
                Ipv4Addr::new(198, 51, 100, 10),
                u16::from_le_bytes([e, f]),
                443,
                IpProtocol::UDP,
            );
            if live.len() == cap {
                let j = usize::try_from(rng >> 40).unwrap() % cap;
                c.remove(&live.swap_remove(j));
            }
            if c.insert(k, Entry::new(1, 1), NONE, Tick(i)).is_ok() {
                live.push(k);
            }
            assert_eq!(c.tables[0].capacity(), 7_168);
            if i % 50_000 == 0 {
                c.check_invariants();
            }
        }
        assert_eq!(live.len(), cap);
        assert!(live.iter().all(|k| c.peek(k).is_some()));
        assert_eq!(c.allocated_bytes(), bytes);
        assert_eq!(c.buckets(), 8_192);
        c.check_invariants();
    }

    /// The keyed hash spreads realistic key sets over slots and shards: 100 000 flows of one
    /// client walking its ports, and of sequential clients, fill a 100k table with short
    /// probe runs (linear probing from even home slots at load 0.61 expects a mean
    /// displacement of ~0.97 slots; 83.5 % of keys sit in their home line, the one a lookup
    /// prefetches) and even shards.
    #[test]
    fn keyed_hash_keeps_probe_runs_short() {
        let sets: [Box<dyn Fn(u32) -> FlowKey>; 2] = [
            Box::new(|i| {
                let port = u16::try_from(1024 + i % 60_000).unwrap();
                let host = u8::try_from(i / 60_000).unwrap();
                FlowKey::v4(
                    Ipv4Addr::new(192, 0, 2, host),
                    Ipv4Addr::new(198, 51, 100, 10),
                    port,
                    443,
                    IpProtocol::TCP,
                )
            }),
            Box::new(|i| {
                FlowKey::v4(
                    Ipv4Addr::from_bits(0x0a00_0000 + i),
                    Ipv4Addr::new(198, 51, 100, 10),
                    40_000,
                    443,
                    IpProtocol::TCP,
                )
            }),
        ];
        for (n, key) in sets.iter().enumerate() {
            let mut c = ct(100_000);
            for i in 0..100_000 {
                c.insert(key(i), Entry::new(1, 1), ACK, Tick(0)).unwrap();
            }
            let (mut total, mut worst) = (0usize, 0usize);
            let mut near = 0usize;
            for t in c.tables.iter() {
                for (pos, slot) in t.slots.iter().enumerate() {
                    if let Some(k) = (!slot.is_empty()).then(|| c.keys.key_of(slot).unwrap()) {
                        let d = pos.wrapping_sub(t.home(c.hasher.hash_one(k))) & t.mask;
                        total += d;
                        worst = worst.max(d);
                        if d <= 1 {
                            near += 1;
                        }
                    }
                }
            }
            let mean = f64::from(u32::try_from(total).unwrap()) / 100_000.0;
            assert!(mean < 1.1, "set {n}: mean displacement {mean}");
            // The line a lookup prefetches (home slot and next) holds most keys: 83.5 % in
            // a simulation with uniform hashes.
            assert!(near > 80_000, "set {n}: {near} keys in their home line");
            assert!(worst < 100, "set {n}: worst displacement {worst}");
            let fullest = c.tables.iter().map(Table::len).max().unwrap();
            assert!(fullest < 5_400, "set {n}: a shard holds {fullest}");
            c.check_invariants();
        }
    }

    #[test]
    fn hit_miss_and_refresh() {
        let mut c = ct(8);
        assert!(c.lookup(&udp(1), Tick(0)).is_none());
        c.insert(
            udp(1),
            Entry::new(7, 3).with_nat_port(40_001),
            NONE,
            Tick(100),
        )
        .unwrap();
        // Inserted at 100: UDP lives 60 s from then...
        assert_eq!(c.peek(&udp(1)).unwrap().expires(), Tick(160));
        let e = c.lookup(&udp(1), Tick(130)).unwrap();
        assert_eq!(
            (e.backend_id(), e.service_id(), e.nat_port()),
            (7, 3, 40_001)
        );
        // ... and the hit at 130 pushes the deadline to 60 s after the hit.
        assert_eq!(e.expires(), Tick(190));
        assert_eq!(c.peek(&udp(1)).unwrap().expires(), Tick(190));
        assert!(!e.has_peer() && !e.is_reverse());
        assert!(c.lookup(&udp(1), Tick(189)).is_some());
        assert!(c.lookup(&udp(2), Tick(189)).is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.inserts), (2, 2, 1));
        assert_eq!(c.len(), 1);
        assert!((c.fill() - 0.125).abs() < 1e-12);
    }

    /// Each protocol/state expires exactly at `last packet + timeout`: live one tick before,
    /// gone at the deadline, and the lookup that finds it expired removes it.
    #[test]
    fn expiry_per_protocol_and_state() {
        let cases = [
            (udp(1), NONE, 60),
            (key(IpProtocol::ICMP, 0), NONE, 30),
            (key(IpProtocol(47), 0), NONE, 30),
            (tcp(1), SYN, 30),
            (tcp(2), ACK, 900),
            (tcp(3), FIN_ACK, 10),
            (tcp(4), RST, 10),
        ];
        for (k, flags, timeout) in cases {
            let mut c = ct(4);
            c.insert(k, Entry::new(1, 1), flags, Tick(1_000)).unwrap();
            assert_eq!(
                c.peek(&k).unwrap().expires(),
                Tick(1_000 + timeout),
                "{k:?}"
            );
            // A hit one tick before the deadline refreshes the entry...
            let t1 = 1_000 + timeout - 1;
            assert!(c.lookup(&k, Tick(t1)).is_some(), "{k:?}");
            // ... and it expires one full timeout after that hit.
            assert!(c.lookup(&k, Tick(t1 + timeout)).is_none(), "{k:?}");
            assert!(c.is_empty(), "{k:?}");
            assert_eq!(c.stats().expired, 1);
            c.check_invariants();
        }
    }

    #[test]
    fn tcp_handshake_then_fin_or_rst_shortens() {
        let mut c = ct(4);
        c.insert(tcp(1), Entry::new(1, 1), SYN, Tick(0)).unwrap();
        let s = c.peek(&tcp(1)).unwrap().tcp_state();
        assert!(s.syn_seen() && !s.is_established());
        // SYN retransmit: still SYN-only.
        let e = c.lookup_tcp(&tcp(1), SYN, Tick(3)).unwrap();
        assert_eq!(e.expires(), Tick(33));
        // Handshake ACK: established.
        let e = c.lookup_tcp(&tcp(1), ACK, Tick(4)).unwrap();
        assert!(e.tcp_state().is_established());
        assert_eq!(e.expires(), Tick(904));
        // Plain lookup (no flags) keeps the state.
        assert_eq!(c.lookup(&tcp(1), Tick(5)).unwrap().expires(), Tick(905));
        // FIN from the client: closing, 10 s from each later packet.
        let e = c.lookup_tcp(&tcp(1), FIN_ACK, Tick(6)).unwrap();
        assert!(e.tcp_state().fin_orig() && e.tcp_state().is_closing());
        assert!(!e.tcp_state().fin_reply());
        assert_eq!(e.expires(), Tick(16));
        assert_eq!(
            c.lookup_tcp(&tcp(1), ACK, Tick(8)).unwrap().expires(),
            Tick(18)
        );
        assert!(c.lookup_tcp(&tcp(1), ACK, Tick(18)).is_none());

        // RST on an established flow.
        c.insert(tcp(2), Entry::new(1, 1), ACK, Tick(100)).unwrap();
        let e = c.lookup_tcp(&tcp(2), RST, Tick(101)).unwrap();
        assert!(e.tcp_state().rst());
        assert_eq!(e.expires(), Tick(111));
        // Flags on a non-TCP key are ignored.
        c.insert(udp(3), Entry::new(1, 1), RST, Tick(100)).unwrap();
        let e = c.lookup_tcp(&udp(3), RST, Tick(101)).unwrap();
        assert_eq!(e.tcp_state(), TcpState::default());
        assert_eq!(e.expires(), Tick(161));
        assert_eq!(
            format!("{:?}", c.peek(&tcp(2)).unwrap().tcp_state()),
            "{ESTABLISHED, RST}"
        );
    }

    #[test]
    fn full_table_refuses_and_does_not_panic() {
        let mut c = ct(4);
        for p in 0..4 {
            c.insert(udp(p), Entry::new(1, 1), NONE, Tick(0)).unwrap();
        }
        assert_eq!(
            c.insert(udp(9), Entry::new(1, 1), NONE, Tick(10)),
            Err(InsertError::Full)
        );
        assert_eq!(
            c.insert_pair(
                udp(9),
                Entry::new(1, 1),
                udp(10),
                Entry::new(1, 1),
                NONE,
                Tick(10)
            ),
            Err(InsertError::Full)
        );
        assert_eq!(c.stats().full, 2);
        assert_eq!(c.len(), 4);
        assert!(c.peek(&udp(9)).is_none());
        // Replacing a stored key needs no room.
        c.insert(udp(0), Entry::new(2, 1), NONE, Tick(10)).unwrap();
        assert_eq!(c.peek(&udp(0)).unwrap().backend_id(), 2);
        assert_eq!(c.len(), 4);
        // Once entries expire, an insert ages them out itself.
        c.insert(udp(9), Entry::new(1, 1), NONE, Tick(65)).unwrap();
        assert!(c.stats().evicted >= 1);
        assert!(c.peek(&udp(9)).is_some());
        c.check_invariants();
        // Hammering a full table of live entries stays bounded and panic-free.
        let mut c = ct(64);
        for p in 0..10_000 {
            let _ = c.insert(udp(p), Entry::new(1, 1), NONE, Tick(0));
        }
        assert_eq!(c.len(), 64);
        assert_eq!(c.stats().full, 10_000 - 64);
        c.check_invariants();
    }

    #[test]
    fn eviction_cursor_covers_the_whole_table() {
        let mut c = ct(1_000);
        for p in 0..1_000 {
            let k = if p % 2 == 0 { udp(p) } else { tcp(p) };
            c.insert(k, Entry::new(1, 1), ACK, Tick(0)).unwrap();
        }
        // Before the deadline nothing goes, however long the sweep runs.
        assert_eq!(c.evict_expired(Tick(59), c.buckets() * 3), 0);
        assert_eq!(c.len(), 1_000);
        // After the UDP deadline exactly the UDP half goes, in one pass.
        let budget = 7;
        let calls = c.buckets().div_ceil(budget);
        let mut removed = 0;
        for _ in 0..calls {
            let n = c.evict_expired(Tick(60), budget);
            assert!(n <= budget);
            removed += n;
        }
        assert_eq!(removed, 500);
        assert_eq!(c.len(), 500);
        assert!(c.iter().all(|(k, _)| k.proto() == IpProtocol::TCP));
        // The cursor resumes where it stopped: one more pass at the TCP deadline empties it.
        for _ in 0..calls {
            c.evict_expired(Tick(900), budget);
        }
        assert!(c.is_empty());
        assert_eq!(c.stats().evicted, 1_000);
        c.check_invariants();
        // A zero budget does nothing.
        assert_eq!(c.evict_expired(Tick(10_000), 0), 0);
    }

    fn pair(c: &mut ConnTrack, client_port: u16, snat_port: u16, now: u64) -> (FlowKey, FlowKey) {
        let fwd = udp(client_port);
        let rev = FlowKey::v4(
            Ipv4Addr::new(10, 1, 0, 5),
            Ipv4Addr::new(10, 0, 0, 1),
            8080,
            snat_port,
            IpProtocol::UDP,
        );
        c.insert_pair(
            fwd,
            Entry::new(5, 2).with_nat_port(snat_port),
            rev,
            Entry::new(5, 2),
            NONE,
            Tick(now),
        )
        .unwrap();
        (fwd, rev)
    }

    #[test]
    fn nat_pair_links_and_removes_together() {
        let mut c = cts(8, 4);
        let (fwd, rev) = pair(&mut c, 1, 40_000, 0);
        assert_eq!(c.len(), 2);
        let r = c.lookup(&rev, Tick(1)).unwrap();
        assert!(r.is_reverse() && r.has_peer());
        assert_eq!(c.peer_key(&r), Some(fwd));
        let f = c.lookup(&fwd, Tick(1)).unwrap();
        assert!(!f.is_reverse());
        assert_eq!(f.nat_port(), 40_000);
        assert_eq!(c.peer_key(&f), Some(rev));
        assert_eq!(c.peer_key(&Entry::new(0, 0)), None);
        c.check_invariants();
        // Removing one side removes both.
        assert!(c.remove(&rev).is_some());
        assert!(c.is_empty());
        assert_eq!(c.stats().removed, 2);
        c.check_invariants();
        // Replacing one side with a plain entry drops the other side.
        let (fwd, rev) = pair(&mut c, 1, 40_000, 0);
        c.insert(fwd, Entry::new(6, 2), NONE, Tick(2)).unwrap();
        assert!(c.peek(&rev).is_none());
        assert!(!c.peek(&fwd).unwrap().has_peer());
        c.check_invariants();
        // Re-pairing over existing keys replaces them.
        let (fwd, _) = pair(&mut c, 1, 40_000, 3);
        let (_, rev2) = pair(&mut c, 1, 40_001, 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.peer_key(&c.peek(&rev2).unwrap()), Some(fwd));
        c.check_invariants();
        assert_eq!(
            c.insert_pair(fwd, Entry::new(1, 1), fwd, Entry::new(1, 1), NONE, Tick(4)),
            Err(InsertError::SameKey)
        );
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn nat_pair_lives_while_either_side_does() {
        let mut c = cts(8, 4);
        let (fwd, rev) = pair(&mut c, 1, 40_000, 0);
        // A one-way stream: only the forward side sees packets.
        for t in (10..200).step_by(10) {
            assert!(c.lookup(&fwd, Tick(t)).is_some());
            c.evict_expired(Tick(t), c.buckets());
        }
        assert_eq!(c.len(), 2, "the reverse side is past its deadline but kept");
        // A late reply still finds its way back, and is refreshed.
        let r = c.lookup(&rev, Tick(200)).unwrap();
        assert_eq!(r.expires(), Tick(260));
        // Both idle: the pair goes as one.
        assert_eq!(c.evict_expired(Tick(260), c.buckets()), 2);
        assert!(c.is_empty());
        c.check_invariants();
        // Lookup of an expired pair removes both sides.
        let (fwd, _) = pair(&mut c, 1, 40_000, 1_000);
        assert!(c.lookup(&fwd, Tick(1_060)).is_none());
        assert!(c.is_empty());
        assert_eq!(c.stats().expired, 2);
        c.check_invariants();
    }

    #[test]
    fn nat_pair_fin_and_rst_shorten_both_sides() {
        let mut c = cts(8, 4);
        let fwd = tcp(1);
        let rev = FlowKey::v4(
            Ipv4Addr::new(10, 1, 0, 5),
            Ipv4Addr::new(10, 0, 0, 1),
            8080,
            40_000,
            IpProtocol::TCP,
        );
        c.insert_pair(fwd, Entry::new(5, 2), rev, Entry::new(5, 2), SYN, Tick(0))
            .unwrap();
        assert_eq!(c.peek(&rev).unwrap().expires(), Tick(30));
        c.lookup_tcp(&rev, TcpFlags(TcpFlags::SYN | TcpFlags::ACK), Tick(1))
            .unwrap();
        c.lookup_tcp(&fwd, ACK, Tick(2)).unwrap();
        c.lookup_tcp(&rev, ACK, Tick(3)).unwrap();
        assert_eq!(c.peek(&fwd).unwrap().expires(), Tick(902));
        // The server closes: the reply side gets FIN_REPLY and both sides now close in 10 s.
        let r = c.lookup_tcp(&rev, FIN_ACK, Tick(5)).unwrap();
        assert!(r.tcp_state().fin_reply() && !r.tcp_state().fin_orig());
        assert_eq!(r.expires(), Tick(15));
        let f = c.peek(&fwd).unwrap();
        assert!(f.tcp_state().fin_reply());
        assert_eq!(f.expires(), Tick(15));
        assert_eq!(c.evict_expired(Tick(15), c.buckets()), 2);
        c.check_invariants();
    }

    /// Deadlines in 32-bit clock units (module docs, "Deadlines"): at nanosecond ticks a
    /// unit is 65 536 ns and an entry lives its timeout to within two units; a table nobody
    /// ages is aged whole once its last pass is 2²⁹ units old, so an expired entry never
    /// reads as live after the counter wraps; a jump of twice that drops everything.
    #[test]
    fn deadlines_survive_clock_jumps_and_overdue_passes() {
        let unit = 1u64 << 16;
        let mut c = ConnTrack::with_hasher(
            64,
            &Timeouts::default(),
            TickRate::NANOS,
            ahash::RandomState::with_seeds(1, 2, 3, 4),
        )
        .unwrap();
        assert_eq!(c.clock.shift, 16);
        let s = 1_000_000_000u64;
        // A worker's clock starts far from zero; the first call finds nothing to age.
        let t0 = 1_000_000 * s;
        let (a, b) = (udp(1), udp(2));
        c.insert(a, Entry::new(1, 1), NONE, Tick(t0)).unwrap();
        c.insert(b, Entry::new(2, 1), NONE, Tick(t0)).unwrap();
        let e = c.lookup(&a, Tick(t0 + s)).unwrap();
        let want = t0 + 61 * s;
        assert!(
            (want..=want + 2 * unit).contains(&e.expires().get()),
            "{e:?}"
        );
        assert!(c.lookup(&a, Tick(want - 1)).is_some());
        assert!(c.lookup(&a, Tick(want - 1 + 60 * s + 2 * unit)).is_none());
        // Nothing ages the table while `a` is refreshed every 50 s for 41 hours: past 2³¹
        // units (39 hours), where `b`'s deadline, untouched, would read as ahead again. The
        // overdue pass at 2²⁹ units (9.8 hours) removed it.
        c.insert(a, Entry::new(1, 1), NONE, Tick(t0)).unwrap();
        let mut t = t0;
        while t < t0 + 41 * 3600 * s {
            t += 50 * s;
            assert!(c.lookup(&a, Tick(t)).is_some());
            let b_live = c.peek(&b).is_some_and(|e| e.expires().get() > t);
            assert_eq!(b_live, t < t0 + 60 * s, "at {}", t - t0);
        }
        assert!(c.lookup(&b, Tick(t)).is_none());
        assert_eq!(c.stats().evicted, 1);
        // A jump of a day: every entry has expired, and all go at once.
        assert!(c.lookup(&a, Tick(t + 24 * 3600 * s)).is_none());
        assert!(c.is_empty());
        assert_eq!(c.stats().evicted, 2);
        c.check_invariants();
    }

    /// IPv6 flows: a slot holds the key's fingerprint and its place in a slab; a lone key
    /// takes a slot of the lone slab and gives it back, a pair member's key is in the pair
    /// slab. A slot whose fingerprint, ports and protocol match another key still compares
    /// the whole key.
    #[test]
    fn ipv6_keys_live_in_slabs() {
        let mut c = cts(8, 2);
        let a = key6(IpProtocol::UDP, 1);
        c.insert(a, Entry::new(3, 4), NONE, Tick(0)).unwrap();
        assert_eq!(c.keys.free_lone.len(), 7);
        assert_eq!(c.lookup(&a, Tick(1)).unwrap().backend_id(), 3);
        assert!(c.lookup(&key6(IpProtocol::UDP, 2), Tick(1)).is_none());
        assert!(c.lookup(&key6(IpProtocol::TCP, 1), Tick(1)).is_none());
        assert!(
            c.lookup(&udp(1), Tick(1)).is_none(),
            "the IPv4 key of the same ports"
        );
        c.check_invariants();
        // `b` differs from `a` only in its source address. Probed with `a`'s hash, it
        // matches `a`'s slot head (fingerprint, ports, protocol) and is told apart by the key.
        let b = FlowKey::v6(
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x10),
            1,
            443,
            IpProtocol::UDP,
        );
        let ha = c.hasher.hash_one(a);
        let t = &c.tables[shard_of(ha, c.nshards)];
        let pos = t.find(ha, &Probe::new(&a, ha), &a, &c.keys).unwrap();
        assert!(Probe::new(&b, ha).head_matches(&t.slots[pos]));
        assert_eq!(t.find(ha, &Probe::new(&b, ha), &b, &c.keys), None);
        assert_eq!(c.remove(&a).map(|e| e.service_id()), Some(4));
        assert_eq!(c.keys.free_lone.len(), 8);
        // A pair of IPv6 keys uses the pair slab only.
        let rev = key6(IpProtocol::UDP, 40_000).reversed();
        c.insert_pair(a, Entry::new(1, 1), rev, Entry::new(1, 1), NONE, Tick(2))
            .unwrap();
        assert_eq!(c.keys.free_lone.len(), 8);
        let r = c.lookup(&rev, Tick(3)).unwrap();
        assert_eq!(c.peer_key(&r), Some(a));
        c.check_invariants();
        assert!(c.remove(&a).is_some());
        assert!(c.is_empty());
        c.check_invariants();
    }

    /// A slot is half a cache line: 32 bytes, and the slots of a table start on a line
    /// (the heap for small tables, 2 MiB pages or the heap for sharded ones), so slots
    /// `2k` and `2k + 1` share one (the prefetch counts on it).
    #[test]
    fn entry_and_slot_sizes() {
        assert_eq!(size_of::<Entry>(), 24);
        assert_eq!((size_of::<Slot>(), align_of::<Slot>()), (32, 32));
        assert_eq!(size_of::<InsertError>(), 1);
        for cap in [1, 1_000, 2_865, 100_000] {
            let c = ct(cap);
            for t in c.tables.iter() {
                assert_eq!(t.slots.as_ptr().addr() % 64, 0, "capacity {cap}");
            }
        }
        let c = cts(8, 3);
        assert!(c.tables.iter().all(|t| t.slots.as_ptr().addr() % 64 == 0));
    }

    // === property tests ===

    #[derive(Clone, Copy, Debug)]
    struct M {
        backend: u32,
        expires: u64,
        peer: Option<FlowKey>,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16, u32),
        InsertPair(u16, u16, u32),
        Lookup(u16),
        Remove(u16),
        Evict(usize),
        Advance(u64),
    }

    /// A small key universe so operations collide: UDP (60 s) and ICMP-like "other" (30 s),
    /// IPv4 and IPv6.
    fn k(i: u16) -> FlowKey {
        match i % 3 {
            0 => key(IpProtocol::ICMP, i),
            1 => udp(i),
            _ => key6(IpProtocol::UDP, i),
        }
    }

    fn timeout_of(key: &FlowKey) -> u64 {
        if key.proto() == IpProtocol::UDP {
            60
        } else {
            30
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u16..24, any::<u32>()).prop_map(|(k, b)| Op::Insert(k, b)),
            2 => (0u16..24, 0u16..24, any::<u32>()).prop_map(|(a, b, x)| Op::InsertPair(a, b, x)),
            6 => (0u16..24).prop_map(Op::Lookup),
            1 => (0u16..24).prop_map(Op::Remove),
            2 => (0usize..40).prop_map(Op::Evict),
            3 => (0u64..50).prop_map(Op::Advance),
        ]
    }

    fn model_remove(m: &mut HashMap<FlowKey, M>, key: &FlowKey) {
        if let Some(e) = m.remove(key)
            && let Some(p) = e.peer
        {
            m.remove(&p);
        }
    }

    fn dead(m: &HashMap<FlowKey, M>, e: &M, now: u64) -> bool {
        e.expires <= now && e.peer.is_none_or(|p| m[&p].expires <= now)
    }

    /// Entries the table dropped on its own (aging inside `evict_expired` or a full insert):
    /// each must have been dead in the model; the model then forgets them.
    fn sync_swept(c: &ConnTrack, m: &mut HashMap<FlowKey, M>, now: u64) -> usize {
        let gone: Vec<FlowKey> = m.keys().filter(|k| c.peek(k).is_none()).copied().collect();
        for g in &gone {
            assert!(dead(m, &m[g], now), "swept a live entry {g:?}");
        }
        for g in &gone {
            m.remove(g);
        }
        gone.len()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random operation sequences against a `HashMap` model: capacity is never exceeded,
        /// no lookup returns an expired entry, `len` and contents match the model, and the
        /// internal invariants (slab, pair links, table never shrinks or grows) hold.
        #[test]
        fn matches_model(
            cap in 1usize..12,
            nshards in 1usize..4,
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let mut c = cts(cap, nshards);
            let mut m: HashMap<FlowKey, M> = HashMap::new();
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Insert(i, b) => {
                        let key = k(i);
                        model_remove(&mut m, &key);
                        let r = c.insert(key, Entry::new(b, 0), NONE, Tick(now));
                        sync_swept(&c, &mut m, now);
                        prop_assert_eq!(r.is_ok(), m.len() < cap);
                        if r.is_ok() {
                            m.insert(key, M { backend: b, expires: now + timeout_of(&key), peer: None });
                        }
                    }
                    Op::InsertPair(a, b, x) => {
                        let (fk, rk) = (k(a), k(b));
                        let r = c.insert_pair(fk, Entry::new(x, 0), rk, Entry::new(x, 1), NONE, Tick(now));
                        if fk == rk {
                            prop_assert_eq!(r, Err(InsertError::SameKey));
                        } else {
                            model_remove(&mut m, &fk);
                            model_remove(&mut m, &rk);
                            sync_swept(&c, &mut m, now);
                            prop_assert_eq!(r.is_ok(), m.len() + 2 <= cap);
                            if r.is_ok() {
                                m.insert(fk, M { backend: x, expires: now + timeout_of(&fk), peer: Some(rk) });
                                m.insert(rk, M { backend: x, expires: now + timeout_of(&rk), peer: Some(fk) });
                            }
                        }
                    }
                    Op::Lookup(i) => {
                        let key = k(i);
                        let expect = m.get(&key).copied();
                        let got = c.lookup(&key, Tick(now));
                        match expect {
                            None => prop_assert!(got.is_none()),
                            Some(e) if !dead(&m, &e, now) => {
                                let got = got.expect("live entry missed");
                                prop_assert_eq!(got.backend_id(), e.backend);
                                prop_assert!(got.expires().get() > now);
                                m.get_mut(&key).unwrap().expires = now + timeout_of(&key);
                            }
                            Some(_) => {
                                prop_assert!(got.is_none(), "expired entry returned");
                                model_remove(&mut m, &key);
                            }
                        }
                    }
                    Op::Remove(i) => {
                        let key = k(i);
                        prop_assert_eq!(c.remove(&key).is_some(), m.contains_key(&key));
                        model_remove(&mut m, &key);
                    }
                    Op::Evict(budget) => {
                        let n = c.evict_expired(Tick(now), budget);
                        prop_assert_eq!(n, sync_swept(&c, &mut m, now));
                    }
                    Op::Advance(dt) => now += dt,
                }
                prop_assert!(c.len() <= cap);
                prop_assert_eq!(c.len(), m.len());
                for (key, e) in c.iter() {
                    let me = m.get(&key).expect("entry unknown to the model");
                    prop_assert_eq!(e.backend_id(), me.backend);
                    prop_assert_eq!(e.expires().get(), me.expires);
                    prop_assert_eq!(c.peer_key(&e), me.peer);
                }
                c.check_invariants();
            }
        }

        /// TCP with random flags, checked against what the table held before each call: a
        /// lookup answers only for an entry that was live (or whose NAT peer was), a closing
        /// flow never outlives `tcp_closing`, and the invariants hold.
        #[test]
        fn tcp_lookups_never_return_expired(
            ops in prop::collection::vec((0u8..5, 0u16..12, any::<u8>(), 0u64..40), 1..300),
        ) {
            let mut c = cts(8, 3);
            let mut now = 0u64;
            let tcp = |i: u16| if i.is_multiple_of(2) { tcp(i) } else { key6(IpProtocol::TCP, i) };
            for (kind, i, flags, dt) in ops {
                let key = tcp(i);
                let flags = TcpFlags(flags);
                match kind {
                    0 => {
                        let _ = c.insert(key, Entry::new(1, 1), flags, Tick(now));
                    }
                    1 => {
                        let _ = c.insert_pair(key, Entry::new(1, 1), tcp(i + 100), Entry::new(1, 1), flags, Tick(now));
                    }
                    2 => {
                        c.evict_expired(Tick(now), usize::from(i));
                    }
                    3 => now += dt,
                    _ => {
                        let before = c.peek(&key);
                        let peer_live = before
                            .and_then(|e| c.peer_key(&e))
                            .and_then(|p| c.peek(&p))
                            .is_some_and(|p| p.expires().get() > now);
                        let got = c.lookup_tcp(&key, flags, Tick(now));
                        let was_live = before.is_some_and(|e| e.expires().get() > now);
                        prop_assert_eq!(got.is_some(), was_live || peer_live);
                        if let Some(e) = got {
                            prop_assert!(e.expires().get() > now);
                            if e.tcp_state().is_closing() {
                                prop_assert!(e.expires().get() <= now + 10);
                                if let Some(p) = c.peer_key(&e) {
                                    let p = c.peek(&p).unwrap();
                                    prop_assert!(p.tcp_state().is_closing());
                                    prop_assert!(p.expires().get() <= now + 10);
                                }
                            }
                        } else {
                            prop_assert!(c.peek(&key).is_none(), "a miss leaves nothing behind");
                        }
                    }
                }
                prop_assert!(c.len() <= 8);
                c.check_invariants();
            }
        }
    }
}
