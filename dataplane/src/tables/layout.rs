//! The binary format of the shared table region, ABI version [`ABI_VERSION`]: every
//! `#[repr(C)]` struct that lives in the region, its size and field offsets pinned at compile
//! time, and the [`Geometry`] that places the parts. The diagram and the publication protocol
//! are in the [`tables`](super) module docs.
//!
//! All integers are in the host's native byte order: both sides of the region run on the same
//! machine. Addresses and MACs are byte arrays in network order.
//!
//! Structs that two parties write at the same time ([`Header`], [`WorkerBlock`],
//! [`ServiceCounters`]) hold only atomics. Structs that are written while nobody reads them and
//! then published ([`DirHeader`], [`ServiceEntry`], [`BackendEntry`]) hold only plain integers
//! and byte arrays that are valid for every bit pattern (`zerocopy::FromBytes`), so a reader
//! that meets garbage gets wrong numbers — which it validates — never undefined behaviour.

use std::fmt;
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use thiserror::Error;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The first eight bytes of every table region: ASCII `"SLUICEtb"` read as a big-endian `u64`,
/// stored in native order. Written last by the creator (release), so a reader that sees it
/// also sees the rest of the header.
pub const MAGIC: u64 = u64::from_be_bytes(*b"SLUICEtb");

/// The region format this build reads and writes. Any change to a struct below, the
/// [`Geometry`] rules or the publication protocol bumps it; a dataplane or control that meets
/// another version refuses the region ([`crate::io::shm::ShmError::AbiMismatch`]).
///
/// History: 1, the first format; 2 added per-backend counters ([`BackendCounters`],
/// [`BackendEntry::counter_slot`]); 3 added [`ServiceCounters::connections`] (the counter
/// pair became a 32-byte `{packets, bytes, connections, reserved}`) and
/// [`Header::counters_size`]; 4 added the [`SERVICE_CLIENT_AFFINITY`] flag (no struct changed,
/// but a build of version 3 would ignore the flag and spread a client's flows).
pub const ABI_VERSION: u32 = 4;

/// Alignment of every arena block (backend array or Maglev table), in bytes: one cache line.
pub const BLOCK_ALIGN: u64 = 64;

/// Alignment of per-worker parts, in bytes: two cache lines, because the spatial prefetcher
/// pulls pairs of 64-byte lines (crossbeam-utils' `CachePadded` on x86_64).
pub const CACHE_PAD: u64 = 128;

/// Alignment of the arena's start, in bytes.
pub const ARENA_ALIGN: u64 = 4096;

/// Length of [`WorkerBlock::drops`]: drop counters indexed by the dataplane's drop reason.
pub const DROP_REASONS: usize = 32;

/// The largest number of directory slots ([`Capacity::dir_slots`]): the slot index shares a
/// `u64` with the generation in [`Header::published`] and gets its low 8 bits.
pub const MAX_DIR_SLOTS: u32 = 255;

/// The largest [`Capacity::max_services`].
pub const MAX_SERVICES: u32 = 1 << 16;

/// The largest [`Capacity::max_workers`].
pub const MAX_WORKERS: u32 = 4096;

/// The largest arena, 1 TiB.
pub const MAX_ARENA_BYTES: u64 = 1 << 40;

/// The largest Maglev table size a reader accepts (the largest of `maglev::MAGLEV_SIZES`).
pub const MAX_TABLE_SIZE: u32 = 655_373;

/// The largest backend count per service a reader accepts (`maglev::MAX_BACKENDS`).
pub const MAX_BACKENDS: u32 = 65_534;

/// Per-backend counter slots per service and worker (since ABI version 2): a service's backends
/// get stable counter slots `0..BACKEND_COUNTER_SLOTS` ([`BackendEntry::counter_slot`]);
/// backends beyond that are not counted per backend (their service counters still are).
pub const BACKEND_COUNTER_SLOTS: u32 = 64;

/// [`BackendEntry::counter_slot`] of a backend that has no counter slot.
pub const NO_COUNTER_SLOT: u16 = u16::MAX;

/// The largest generation: generations share a `u64` with the slot index (56 bits).
pub const MAX_GENERATION: u64 = (1 << 56) - 1;

// === Generation ===

/// A table generation: 1 for the empty tables a region is created with, then one more per
/// publication. Monotonic for the life of the region, across writer restarts.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Generation(pub u64);

impl Generation {
    /// "Nothing yet": below every published generation.
    pub const NONE: Self = Self(0);

    /// The generation as a number.
    #[inline]
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The generation after this one.
    #[inline]
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gen{}", self.0)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Packs a generation and its directory slot into the [`Header::published`] word, so one
/// atomic load gives a consistent pair.
#[inline]
#[must_use]
pub const fn pack_published(generation: Generation, dir_slot: u32) -> u64 {
    (generation.0 << 8) | (dir_slot as u64 & 0xff)
}

/// The inverse of [`pack_published`].
#[inline]
#[must_use]
pub const fn unpack_published(word: u64) -> (Generation, u32) {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "masked to 8 bits, which fits u32"
    )]
    let slot = (word & 0xff) as u32;
    (Generation(word >> 8), slot)
}

// === Worker block ownership ===

/// [`WorkerBlock::owner`] state: nobody uses the block.
pub const OWNER_FREE: u64 = 0;
/// [`WorkerBlock::owner`] state: a worker uses the block and acks generations in it.
pub const OWNER_LIVE: u64 = 1;
/// [`WorkerBlock::owner`] state: control found the worker's heartbeat stale and stopped
/// waiting for it. The worker, should it wake up, sees this and re-synchronises.
pub const OWNER_DEAD: u64 = 2;

/// Packs an incarnation number and a state into the [`WorkerBlock::owner`] word. Every claim of
/// a block gets a new incarnation, so a stale worker cannot mistake a successor's word for its
/// own.
#[inline]
#[must_use]
pub const fn pack_owner(incarnation: u64, state: u64) -> u64 {
    (incarnation << 2) | (state & 3)
}

/// The inverse of [`pack_owner`]: `(incarnation, state)`.
#[inline]
#[must_use]
pub const fn unpack_owner(word: u64) -> (u64, u64) {
    (word >> 2, word & 3)
}

// === Header ===

/// The region header at offset 0, 256 bytes. Line 0 (bytes 0..128) is written once at creation
/// plus [`published`](Self::published) on each publication, so workers' per-burst loads hit a
/// line that rarely changes; line 1 holds what control writes often.
///
/// Every field is atomic because a reader may map the region while its creator is still
/// writing it: the creator stores everything, then [`magic`](Self::magic) with release; a
/// reader loads `magic` with acquire and reads nothing else unless it matches.
#[derive(Debug, FromBytes, KnownLayout)]
#[repr(C, align(128))]
pub struct Header {
    /// [`MAGIC`], stored last.
    pub magic: AtomicU64,
    /// [`ABI_VERSION`] of the creator.
    pub abi_version: AtomicU32,
    /// `size_of::<Header>()` of the creator: a second guard against layout drift.
    pub layout_size: AtomicU32,
    /// Bytes the layout spans ([`Geometry::total`]); the region file may be longer (rounded
    /// up to its page size), never shorter.
    pub region_len: AtomicU64,
    /// [`Capacity::max_services`].
    pub max_services: AtomicU32,
    /// [`Capacity::max_workers`].
    pub max_workers: AtomicU32,
    /// [`Capacity::dir_slots`].
    pub dir_slots: AtomicU32,
    /// `size_of::<WorkerBlock>()` of the creator.
    pub worker_block_size: AtomicU32,
    /// `size_of::<ServiceEntry>()` of the creator.
    pub service_entry_size: AtomicU32,
    /// `size_of::<BackendEntry>()` of the creator.
    pub backend_entry_size: AtomicU32,
    /// Arena length in bytes ([`Capacity::arena_bytes`] rounded down to [`BLOCK_ALIGN`]).
    pub arena_len: AtomicU64,
    /// [`Geometry::workers_offset`].
    pub workers_offset: AtomicU64,
    /// [`Geometry::counters_offset`].
    pub counters_offset: AtomicU64,
    /// [`Geometry::counters_stride`].
    pub counters_stride: AtomicU64,
    /// [`Geometry::dir_offset`].
    pub dir_offset: AtomicU64,
    /// [`Geometry::dir_stride`].
    pub dir_stride: AtomicU64,
    /// [`Geometry::arena_offset`].
    pub arena_offset: AtomicU64,
    /// The published generation and its directory slot ([`pack_published`]). Control stores
    /// it with release after writing the slot; workers load it with acquire once per burst.
    pub published: AtomicU64,
    /// [`Geometry::backend_counters_offset`].
    pub backend_counters_offset: AtomicU64,
    /// [`Geometry::backend_counters_stride`].
    pub backend_counters_stride: AtomicU64,
    /// Bumped by control on every publication and reclaim pass; the dataplane may watch it.
    pub control_heartbeat: AtomicU64,
    /// Bumped each time a writer creates or attaches to the region (control restarts).
    pub writer_epoch: AtomicU64,
    /// PID of the last writer to attach (informational).
    pub writer_pid: AtomicU64,
    /// [`BACKEND_COUNTER_SLOTS`] of the creator.
    pub backend_counter_slots: AtomicU32,
    /// `size_of::<ServiceCounters>()` (= `size_of::<BackendCounters>()`) of the creator
    /// (since ABI version 3; reserved, zero, before).
    pub counters_size: AtomicU32,
    /// Reserved, zero.
    pub reserved1: [AtomicU64; 12],
}

const _: () = assert!(size_of::<Header>() == 256);
const _: () = assert!(offset_of!(Header, magic) == 0);
const _: () = assert!(offset_of!(Header, abi_version) == 8);
const _: () = assert!(offset_of!(Header, layout_size) == 12);
const _: () = assert!(offset_of!(Header, region_len) == 16);
const _: () = assert!(offset_of!(Header, max_services) == 24);
const _: () = assert!(offset_of!(Header, max_workers) == 28);
const _: () = assert!(offset_of!(Header, dir_slots) == 32);
const _: () = assert!(offset_of!(Header, worker_block_size) == 36);
const _: () = assert!(offset_of!(Header, service_entry_size) == 40);
const _: () = assert!(offset_of!(Header, backend_entry_size) == 44);
const _: () = assert!(offset_of!(Header, arena_len) == 48);
const _: () = assert!(offset_of!(Header, workers_offset) == 56);
const _: () = assert!(offset_of!(Header, counters_offset) == 64);
const _: () = assert!(offset_of!(Header, counters_stride) == 72);
const _: () = assert!(offset_of!(Header, dir_offset) == 80);
const _: () = assert!(offset_of!(Header, dir_stride) == 88);
const _: () = assert!(offset_of!(Header, arena_offset) == 96);
const _: () = assert!(offset_of!(Header, published) == 104);
const _: () = assert!(offset_of!(Header, backend_counters_offset) == 112);
const _: () = assert!(offset_of!(Header, backend_counters_stride) == 120);
const _: () = assert!(offset_of!(Header, control_heartbeat) == 128);
const _: () = assert!(offset_of!(Header, writer_epoch) == 136);
const _: () = assert!(offset_of!(Header, writer_pid) == 144);
const _: () = assert!(offset_of!(Header, backend_counter_slots) == 152);
const _: () = assert!(offset_of!(Header, counters_size) == 156);
const _: () = assert!(offset_of!(Header, reserved1) == 160);

// === Worker block ===

/// One worker's block, 384 bytes, cache-padded: written by that worker only (except
/// [`owner`](Self::owner), which control may flip to dead), read by control. Counter writes are
/// `Relaxed` load + store by the single writer (no `LOCK` prefix); control sums the blocks.
///
/// Counters are not reset when a new worker claims the block, so control's sums stay
/// monotonic across dataplane restarts (gauges such as `conntrack_entries` are simply
/// overwritten by the new worker).
#[derive(Debug, FromBytes, KnownLayout)]
#[repr(C, align(128))]
pub struct WorkerBlock {
    /// Incarnation and state ([`pack_owner`], [`OWNER_FREE`] / [`OWNER_LIVE`] / [`OWNER_DEAD`]).
    pub owner: AtomicU64,
    /// The generation this worker reads; stored with release after it stopped using older
    /// ones.
    pub ack: AtomicU64,
    /// A counter the worker bumps (once per burst or idle poll); control judges staleness by
    /// how long it has not changed.
    pub heartbeat: AtomicU64,
    /// PID of the worker's process (informational).
    pub pid: AtomicU64,
    /// Packets received.
    pub rx_packets: AtomicU64,
    /// Bytes received.
    pub rx_bytes: AtomicU64,
    /// Packets sent.
    pub tx_packets: AtomicU64,
    /// Bytes sent.
    pub tx_bytes: AtomicU64,
    /// Connection-table entries in use.
    pub conntrack_entries: AtomicU64,
    /// Connection-table capacity.
    pub conntrack_capacity: AtomicU64,
    /// Table generations switched to.
    pub table_switches: AtomicU64,
    /// Directory entries skipped as invalid, or directories refused, at a switch.
    pub table_errors: AtomicU64,
    /// Reserved, zero.
    pub reserved: [AtomicU64; 4],
    /// Drops by reason, indexed by the dataplane's drop-reason code.
    pub drops: [AtomicU64; DROP_REASONS],
}

const _: () = assert!(size_of::<WorkerBlock>() == 384);
const _: () = assert!(offset_of!(WorkerBlock, owner) == 0);
const _: () = assert!(offset_of!(WorkerBlock, ack) == 8);
const _: () = assert!(offset_of!(WorkerBlock, heartbeat) == 16);
const _: () = assert!(offset_of!(WorkerBlock, pid) == 24);
const _: () = assert!(offset_of!(WorkerBlock, rx_packets) == 32);
const _: () = assert!(offset_of!(WorkerBlock, table_switches) == 80);
const _: () = assert!(offset_of!(WorkerBlock, table_errors) == 88);
const _: () = assert!(offset_of!(WorkerBlock, drops) == 128);

/// One worker's counters for one service (indexed by the service's directory index), 32
/// bytes. Written by that worker only ([`ServiceCounters::record`]: `Relaxed` load + store, no
/// locked instruction); control sums them over workers.
///
/// 32 bytes, not 24: arrays of it start 128-aligned, so every counter sits inside one
/// 64-byte line and a packet's bump touches exactly one line (a 24-byte stride would put a
/// quarter of them across two lines).
#[derive(Debug, FromBytes, KnownLayout)]
#[repr(C)]
pub struct ServiceCounters {
    /// Packets forwarded for the service (`sluice_service_packets_total`).
    pub packets: AtomicU64,
    /// Bytes (frames as received) forwarded for the service (`sluice_service_bytes_total`).
    pub bytes: AtomicU64,
    /// New flows: packets forwarded after the pipeline picked a backend for them by Maglev
    /// (a conntrack miss, a flow moved off a removed or down backend, or a stateless pick
    /// when conntrack is full), `sluice_service_connections_total`. Conntrack hits, NAT
    /// replies and ICMP errors never count. Since ABI version 3.
    pub connections: AtomicU64,
    /// Reserved, zero: pads the struct to 32 bytes (see above).
    pub reserved: AtomicU64,
}

const _: () = assert!(size_of::<ServiceCounters>() == 32);
const _: () = assert!(offset_of!(ServiceCounters, packets) == 0);
const _: () = assert!(offset_of!(ServiceCounters, bytes) == 8);
const _: () = assert!(offset_of!(ServiceCounters, connections) == 16);
const _: () = assert!(offset_of!(ServiceCounters, reserved) == 24);

/// One worker's counters for one backend counter slot of one service, indexed by
/// `directory index · BACKEND_COUNTER_SLOTS + counter slot` (see [`BackendEntry::counter_slot`]):
/// the same 32-byte `{packets, bytes, connections}` counters, written by that worker only
/// (`sluice_backend_{packets,bytes,connections}_total`).
pub type BackendCounters = ServiceCounters;

// === impl ServiceCounters ===

impl ServiceCounters {
    /// Counts one forwarded packet of `bytes` bytes, and one connection when `new_flow` (the
    /// pipeline picked the backend for this packet). For the single worker that owns these
    /// counters only: `Relaxed` loads and stores, no `LOCK` prefix (STYLE rule 10).
    #[inline]
    pub fn record(&self, bytes: u64, new_flow: bool) {
        super::bump(&self.packets, 1);
        super::bump(&self.bytes, bytes);
        if new_flow {
            super::bump(&self.connections, 1);
        }
    }

    /// Sets every counter to zero: control, for a counter no live worker writes any more
    /// (a freed directory index or backend counter slot, before its reuse).
    pub(crate) fn clear(&self) {
        for c in [
            &self.packets,
            &self.bytes,
            &self.connections,
            &self.reserved,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

// === Directory ===

/// The head of one directory slot, 64 bytes, followed by
/// [`Capacity::max_services`] [`ServiceEntry`]s of which the first [`count`](Self::count) are
/// meaningful.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DirHeader {
    /// The generation this slot was written for; must equal the published one.
    pub generation: u64,
    /// Entries `0..count` are meaningful (some may be unused); `count ≤ max_services`.
    pub count: u32,
    /// Reserved, zero.
    pub reserved: [u32; 13],
}

const _: () = assert!(size_of::<DirHeader>() == 64);
const _: () = assert!(offset_of!(DirHeader, count) == 8);

/// [`ServiceEntry::flags`]: the entry describes a service (otherwise it is an unused index).
pub const SERVICE_IN_USE: u8 = 1;
/// [`ServiceEntry::flags`]: client-IP affinity ([`Affinity::ClientIp`]): a new flow's Maglev
/// pick hashes its source address only, so every flow of a client lands on one backend
/// (since ABI version 4).
pub const SERVICE_CLIENT_AFFINITY: u8 = 2;

/// Address family byte for IPv4 (addresses stored v4-mapped, `::ffff:a.b.c.d`).
pub const FAMILY_V4: u8 = 4;
/// Address family byte for IPv6.
pub const FAMILY_V6: u8 = 6;

/// One service in a directory slot, 64 bytes. Its directory index stays the same for the
/// service's life, so per-service counters can be indexed by it.
#[derive(Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ServiceEntry {
    /// The VIP, v4-mapped for IPv4.
    pub vip: [u8; 16],
    /// The service port.
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP, …).
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// [`Mode`] as a byte.
    pub mode: u8,
    /// [`SERVICE_IN_USE`] | [`SERVICE_CLIENT_AFFINITY`]; other bits are reserved, zero.
    pub flags: u8,
    /// Reserved, zero.
    pub reserved0: [u8; 2],
    /// The service's stable id, chosen by control.
    pub service_id: u32,
    /// Maglev table size `M`.
    pub table_size: u32,
    /// The generation in which this service's arena block was written.
    pub version: u64,
    /// Arena offset of the `n_backends` [`BackendEntry`]s (64-byte aligned).
    pub backends_offset: u64,
    /// Arena offset of the `M` `u16` table entries (64-byte aligned).
    pub table_offset: u64,
    /// Number of backends; table entries index them (or are `u16::MAX`, empty).
    pub n_backends: u32,
    /// Reserved, zero.
    pub reserved1: u32,
}

const _: () = assert!(size_of::<ServiceEntry>() == 64);
const _: () = assert!(offset_of!(ServiceEntry, vip) == 0);
const _: () = assert!(offset_of!(ServiceEntry, port) == 16);
const _: () = assert!(offset_of!(ServiceEntry, proto) == 18);
const _: () = assert!(offset_of!(ServiceEntry, family) == 19);
const _: () = assert!(offset_of!(ServiceEntry, mode) == 20);
const _: () = assert!(offset_of!(ServiceEntry, flags) == 21);
const _: () = assert!(offset_of!(ServiceEntry, service_id) == 24);
const _: () = assert!(offset_of!(ServiceEntry, table_size) == 28);
const _: () = assert!(offset_of!(ServiceEntry, version) == 32);
const _: () = assert!(offset_of!(ServiceEntry, backends_offset) == 40);
const _: () = assert!(offset_of!(ServiceEntry, table_offset) == 48);
const _: () = assert!(offset_of!(ServiceEntry, n_backends) == 56);

impl ServiceEntry {
    /// Whether the entry describes a service.
    #[inline]
    #[must_use]
    pub fn in_use(&self) -> bool {
        self.flags & SERVICE_IN_USE != 0
    }

    /// The service key, or `None` for an unknown family byte.
    #[must_use]
    pub fn key(&self) -> Option<ServiceKey> {
        match self.family {
            FAMILY_V4 | FAMILY_V6 => Some(ServiceKey {
                addr: self.vip,
                port: self.port,
                proto: self.proto,
                family: self.family,
            }),
            _ => None,
        }
    }

    /// The forwarding mode, or `None` for an unknown byte.
    #[must_use]
    pub fn mode(&self) -> Option<Mode> {
        Mode::from_u8(self.mode)
    }

    /// The session affinity ([`SERVICE_CLIENT_AFFINITY`]).
    #[inline]
    #[must_use]
    pub fn affinity(&self) -> Affinity {
        if self.flags & SERVICE_CLIENT_AFFINITY != 0 {
            Affinity::ClientIp
        } else {
            Affinity::None
        }
    }

    /// The stable service id.
    #[must_use]
    pub fn id(&self) -> ServiceId {
        ServiceId(self.service_id)
    }

    /// The generation that wrote this service's arena block.
    #[must_use]
    pub fn version(&self) -> Generation {
        Generation(self.version)
    }

    /// The arena bytes this entry's backend array spans: `(offset, len)`.
    #[must_use]
    pub fn backends_span(&self) -> Option<(u64, u64)> {
        let len = u64::from(self.n_backends).checked_mul(BACKEND_ENTRY_SIZE)?;
        Some((self.backends_offset, len))
    }

    /// The arena bytes this entry's Maglev table spans: `(offset, len)`.
    #[must_use]
    pub fn table_span(&self) -> Option<(u64, u64)> {
        Some((
            self.table_offset,
            u64::from(self.table_size).checked_mul(2)?,
        ))
    }
}

impl fmt::Debug for ServiceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ServiceEntry");
        match self.key() {
            Some(k) => d.field("key", &k),
            None => d.field("family", &self.family),
        };
        d.field("in_use", &self.in_use())
            .field("id", &self.service_id)
            .field("mode", &self.mode)
            .field("affinity", &self.affinity())
            .field("m", &self.table_size)
            .field("version", &self.version)
            .field("backends_offset", &self.backends_offset)
            .field("table_offset", &self.table_offset)
            .field("n_backends", &self.n_backends)
            .finish()
    }
}

// === Backends ===

/// [`BackendEntry::flags`]: `mac` holds the Ethernet address to send to (the backend's own on
/// the same L2, else the next hop's).
pub const BACKEND_MAC_VALID: u8 = 1;
/// [`BackendEntry::flags`]: `next_hop` holds the gateway to reach the backend through.
pub const BACKEND_NEXT_HOP: u8 = 2;

/// The size of a [`BackendEntry`] as a `u64`.
pub const BACKEND_ENTRY_SIZE: u64 = 64;

/// One backend of a service, 64 bytes, in the arena. Entries of a service are in Maglev slot
/// order: table entry `s` names `backends[s]`.
#[derive(Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BackendEntry {
    /// Stable backend id, chosen by control.
    pub backend_id: u32,
    /// Maglev weight (0 = gets no new flows).
    pub weight: u32,
    /// Address, v4-mapped for IPv4.
    pub addr: [u8; 16],
    /// Next-hop address (v4-mapped for IPv4) when [`BACKEND_NEXT_HOP`] is set.
    pub next_hop: [u8; 16],
    /// Destination MAC when [`BACKEND_MAC_VALID`] is set.
    pub mac: [u8; 6],
    /// Backend port (NAT rewrites to it; 0 keeps the client's port).
    pub port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// [`BackendState`] as a byte.
    pub state: u8,
    /// [`BACKEND_MAC_VALID`] | [`BACKEND_NEXT_HOP`].
    pub flags: u8,
    /// Reserved, zero.
    pub reserved0: u8,
    /// The backend's counter slot in its service's `BACKEND_COUNTER_SLOTS` per-backend
    /// counters, or [`NO_COUNTER_SLOT`]. Chosen by control, stable while the backend stays in
    /// the service, reused for another backend only after every live worker acked the
    /// generation that removed it (and zeroed then).
    pub counter_slot: u16,
    /// Reserved, zero.
    pub reserved1: u16,
    /// Reserved, zero.
    pub reserved2: [u32; 2],
}

const _: () = assert!(size_of::<BackendEntry>() == 64);
const _: () = assert!(size_of::<BackendEntry>() as u64 == BACKEND_ENTRY_SIZE);
const _: () = assert!(offset_of!(BackendEntry, backend_id) == 0);
const _: () = assert!(offset_of!(BackendEntry, weight) == 4);
const _: () = assert!(offset_of!(BackendEntry, addr) == 8);
const _: () = assert!(offset_of!(BackendEntry, next_hop) == 24);
const _: () = assert!(offset_of!(BackendEntry, mac) == 40);
const _: () = assert!(offset_of!(BackendEntry, port) == 46);
const _: () = assert!(offset_of!(BackendEntry, family) == 48);
const _: () = assert!(offset_of!(BackendEntry, state) == 49);
const _: () = assert!(offset_of!(BackendEntry, flags) == 50);
const _: () = assert!(offset_of!(BackendEntry, counter_slot) == 52);
const _: () = assert!(offset_of!(BackendEntry, reserved2) == 56);

impl BackendEntry {
    /// The entry for `b`.
    #[must_use]
    pub fn new(b: &Backend) -> Self {
        let (family, addr) = encode_ip(b.addr);
        let mut flags = 0;
        let mut mac = [0; 6];
        if let Some(m) = b.mac {
            mac = m;
            flags |= BACKEND_MAC_VALID;
        }
        let mut next_hop = [0; 16];
        if let Some(nh) = b.next_hop {
            next_hop = encode_ip(nh).1;
            flags |= BACKEND_NEXT_HOP;
        }
        Self {
            backend_id: b.id.0,
            weight: b.weight,
            addr,
            next_hop,
            mac,
            port: b.port,
            family,
            state: b.state as u8,
            flags,
            counter_slot: NO_COUNTER_SLOT,
            ..Self::default()
        }
    }

    /// The stable backend id.
    #[inline]
    #[must_use]
    pub fn id(&self) -> BackendId {
        BackendId(self.backend_id)
    }

    /// The backend address; `None` for an unknown family byte.
    #[must_use]
    pub fn ip(&self) -> Option<IpAddr> {
        decode_ip(self.family, self.addr)
    }

    /// The destination MAC, if control resolved one.
    #[inline]
    #[must_use]
    pub fn mac(&self) -> Option<[u8; 6]> {
        (self.flags & BACKEND_MAC_VALID != 0).then_some(self.mac)
    }

    /// The next hop, if the backend is not on-link.
    #[must_use]
    pub fn next_hop(&self) -> Option<IpAddr> {
        if self.flags & BACKEND_NEXT_HOP == 0 {
            return None;
        }
        decode_ip(self.family, self.next_hop)
    }

    /// The backend's counter slot, `None` when it has none or it is out of range.
    #[inline]
    #[must_use]
    pub fn counter_slot(&self) -> Option<u16> {
        (u32::from(self.counter_slot) < BACKEND_COUNTER_SLOTS).then_some(self.counter_slot)
    }

    /// The backend's state; an unknown byte reads as [`BackendState::Down`].
    #[inline]
    #[must_use]
    pub fn state(&self) -> BackendState {
        BackendState::from_u8(self.state)
    }
}

impl fmt::Debug for BackendEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendEntry")
            .field("id", &self.backend_id)
            .field("addr", &self.ip())
            .field("port", &self.port)
            .field("weight", &self.weight)
            .field("state", &self.state())
            .field("mac", &self.mac())
            .field("next_hop", &self.next_hop())
            .finish()
    }
}

// === Typed values ===

/// A service's stable id (chosen by control; carried for counters and the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ServiceId(pub u32);

/// A backend's stable id (chosen by control).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BackendId(pub u32);

/// How a service's packets reach the backend (DESIGN, "Dataplane", step 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mode {
    /// Full NAT: DNAT to the backend, SNAT to the LB.
    Nat = 0,
    /// L2 direct server return: rewrite MACs only.
    Dsr = 1,
    /// IP-in-IP encapsulation to the backend.
    EncapIpip = 2,
    /// GUE/UDP encapsulation to the backend.
    EncapGue = 3,
}

impl Mode {
    /// The mode for a byte, `None` when unknown.
    #[must_use]
    pub const fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Nat),
            1 => Some(Self::Dsr),
            2 => Some(Self::EncapIpip),
            3 => Some(Self::EncapGue),
            _ => None,
        }
    }
}

/// Which new flows of a service share a backend (Kubernetes `spec.sessionAffinity`). Stored
/// as [`SERVICE_CLIENT_AFFINITY`] in [`ServiceEntry::flags`]. Only the Maglev pick of a new
/// flow changes; conntrack keeps each flow on its backend either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Affinity {
    /// Each flow is picked by the hash of its 5-tuple (3-tuple for fragments). The default.
    #[default]
    None,
    /// Every flow from one client (source) address picks the same backend, on every LB node:
    /// the pick hashes the source address only ([`crate::flow::client_hash`]), with the shared
    /// seed. Kubernetes `sessionAffinity: ClientIP` (without its timeout: the choice is
    /// stateless and lasts while the backend set does).
    ClientIp,
}

/// A backend's serving state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BackendState {
    /// Serves new and existing flows.
    Active = 0,
    /// Keeps existing flows (conntrack), gets no new ones (its weight is 0 in the table).
    Draining = 1,
    /// Gets nothing.
    Down = 2,
}

impl BackendState {
    /// The state for a byte; unknown bytes are [`BackendState::Down`].
    #[must_use]
    pub const fn from_u8(b: u8) -> Self {
        match b {
            0 => Self::Active,
            1 => Self::Draining,
            _ => Self::Down,
        }
    }
}

/// IP protocol numbers a service key uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Proto {
    /// TCP (6).
    Tcp = 6,
    /// UDP (17).
    Udp = 17,
}

/// What a packet is matched on: `(VIP, port, protocol)`. 20 bytes; cheap to build from a
/// parsed packet with [`ServiceKey::from_v4`] / [`ServiceKey::from_v6`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceKey {
    addr: [u8; 16],
    port: u16,
    proto: u8,
    family: u8,
}

impl ServiceKey {
    /// The key for `vip:port/proto`.
    #[must_use]
    pub fn new(vip: IpAddr, port: u16, proto: Proto) -> Self {
        let (family, addr) = encode_ip(vip);
        Self {
            addr,
            port,
            proto: proto as u8,
            family,
        }
    }

    /// The key for an IPv4 VIP given as octets and a raw IP protocol number.
    #[inline]
    #[must_use]
    pub const fn from_v4(vip: [u8; 4], port: u16, proto: u8) -> Self {
        let [a, b, c, d] = vip;
        Self {
            addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d],
            port,
            proto,
            family: FAMILY_V4,
        }
    }

    /// The key for an IPv6 VIP given as octets and a raw IP protocol number.
    #[inline]
    #[must_use]
    pub const fn from_v6(vip: [u8; 16], port: u16, proto: u8) -> Self {
        Self {
            addr: vip,
            port,
            proto,
            family: FAMILY_V6,
        }
    }

    /// The VIP.
    #[must_use]
    pub fn vip(&self) -> IpAddr {
        decode_ip(self.family, self.addr).unwrap_or(IpAddr::V6(Ipv6Addr::from(self.addr)))
    }

    /// The port.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// The raw IP protocol number.
    #[must_use]
    pub const fn proto(&self) -> u8 {
        self.proto
    }

    /// Writes the key into a directory entry.
    pub(crate) fn store(&self, e: &mut ServiceEntry) {
        e.vip = self.addr;
        e.port = self.port;
        e.proto = self.proto;
        e.family = self.family;
    }
}

impl std::hash::Hash for ServiceKey {
    /// Two words instead of four fields: the key is hashed once per packet.
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.addr));
        state.write_u32(
            (u32::from(self.port) << 16) | (u32::from(self.proto) << 8) | u32::from(self.family),
        );
    }
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.vip() {
            IpAddr::V4(a) => write!(f, "{a}:{}/{}", self.port, self.proto),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{}", self.port, self.proto),
        }
    }
}

/// A backend as control describes it to [`Writer::publish`](super::Writer::publish).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Stable id.
    pub id: BackendId,
    /// Address.
    pub addr: IpAddr,
    /// Port (0 keeps the client's destination port).
    pub port: u16,
    /// Destination MAC (the backend's on the same L2, else the next hop's), if resolved.
    pub mac: Option<[u8; 6]>,
    /// Gateway to reach the backend through, if it is not on-link.
    pub next_hop: Option<IpAddr>,
    /// Maglev weight (as given to the table builder).
    pub weight: u32,
    /// Serving state.
    pub state: BackendState,
}

fn encode_ip(ip: IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(a) => (FAMILY_V4, a.to_ipv6_mapped().octets()),
        IpAddr::V6(a) => (FAMILY_V6, a.octets()),
    }
}

fn decode_ip(family: u8, addr: [u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => {
            let [.., a, b, c, d] = addr;
            Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
        }
        FAMILY_V6 => Some(IpAddr::V6(Ipv6Addr::from(addr))),
        _ => None,
    }
}

// === Capacity and geometry ===

/// Why a [`Capacity`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CapacityError {
    /// `max_services` is 0 or above [`MAX_SERVICES`].
    #[error("max_services must be 1..={MAX_SERVICES}")]
    Services,
    /// `max_workers` is 0 or above [`MAX_WORKERS`].
    #[error("max_workers must be 1..={MAX_WORKERS}")]
    Workers,
    /// `dir_slots` is below 2 or above [`MAX_DIR_SLOTS`].
    #[error("dir_slots must be 2..={MAX_DIR_SLOTS}")]
    DirSlots,
    /// `arena_bytes` is below one block or above [`MAX_ARENA_BYTES`].
    #[error("arena_bytes must be {BLOCK_ALIGN}..={MAX_ARENA_BYTES}")]
    Arena,
}

/// How big a region is: chosen by control at creation, recorded in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capacity {
    /// Services the directory holds (its entries per slot).
    pub max_services: u32,
    /// Worker blocks (dataplane workers that can attach at once).
    pub max_workers: u32,
    /// Directory slots: one is published, the others are being written or wait for acks.
    /// At least 2; 4 lets control publish three times while a slow worker catches up.
    pub dir_slots: u32,
    /// Bytes for backend arrays and Maglev tables. One service with the default `M = 65 537`
    /// and `n` backends takes `64·n + 131 074` bytes (rounded up to 64); an update needs the new
    /// version's block while the old one waits for acks, so size it at about twice the sum.
    pub arena_bytes: u64,
}

impl Default for Capacity {
    /// 1024 services, 64 workers, 4 directory slots, 64 MiB of arena.
    fn default() -> Self {
        Self {
            max_services: 1024,
            max_workers: 64,
            dir_slots: 4,
            arena_bytes: 64 << 20,
        }
    }
}

/// Where each part of a region lives, derived from a [`Capacity`] by fixed rules (part of the
/// ABI): header at 0; worker blocks at 256; per-worker service counters after them
/// (`32 · max_services` bytes each, padded to 128); per-worker backend counters
/// (`32 · max_services · BACKEND_COUNTER_SLOTS` bytes each, padded to 128) after those;
/// directory slots after those, each `64 + 64·max_services` bytes padded to 128; the arena at
/// the next 4 KiB boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The capacity this was derived from (arena rounded down to [`BLOCK_ALIGN`]).
    pub capacity: Capacity,
    /// Offset of `WorkerBlock[max_workers]`.
    pub workers_offset: u64,
    /// Offset of the per-worker `ServiceCounters[max_services]` arrays.
    pub counters_offset: u64,
    /// Distance between two workers' counter arrays.
    pub counters_stride: u64,
    /// Offset of the per-worker `BackendCounters[max_services · BACKEND_COUNTER_SLOTS]`
    /// arrays.
    pub backend_counters_offset: u64,
    /// Distance between two workers' backend counter arrays.
    pub backend_counters_stride: u64,
    /// Offset of directory slot 0.
    pub dir_offset: u64,
    /// Distance between two directory slots.
    pub dir_stride: u64,
    /// Offset of the arena.
    pub arena_offset: u64,
    /// Arena length.
    pub arena_len: u64,
    /// Bytes the whole layout spans.
    pub total: u64,
}

const fn round_up(x: u64, align: u64) -> u64 {
    x.div_ceil(align) * align
}

impl Geometry {
    /// The geometry for `capacity`.
    ///
    /// # Errors
    ///
    /// [`CapacityError`] when a parameter is out of range.
    pub fn new(capacity: Capacity) -> Result<Self, CapacityError> {
        let Capacity {
            max_services,
            max_workers,
            dir_slots,
            arena_bytes,
        } = capacity;
        if max_services == 0 || max_services > MAX_SERVICES {
            return Err(CapacityError::Services);
        }
        if max_workers == 0 || max_workers > MAX_WORKERS {
            return Err(CapacityError::Workers);
        }
        if !(2..=MAX_DIR_SLOTS).contains(&dir_slots) {
            return Err(CapacityError::DirSlots);
        }
        if !(BLOCK_ALIGN..=MAX_ARENA_BYTES).contains(&arena_bytes) {
            return Err(CapacityError::Arena);
        }
        let arena_len = arena_bytes / BLOCK_ALIGN * BLOCK_ALIGN;
        // All products below are bounded by the limits above (< 2^41), so plain u64 math holds.
        let services = u64::from(max_services);
        let workers = u64::from(max_workers);
        let workers_offset = size_of::<Header>() as u64;
        let counters_offset = workers_offset + workers * size_of::<WorkerBlock>() as u64;
        let counters_stride = round_up(services * size_of::<ServiceCounters>() as u64, CACHE_PAD);
        let backend_counters_offset = counters_offset + workers * counters_stride;
        let backend_counters_stride = round_up(
            services * u64::from(BACKEND_COUNTER_SLOTS) * size_of::<BackendCounters>() as u64,
            CACHE_PAD,
        );
        let dir_offset = backend_counters_offset + workers * backend_counters_stride;
        let dir_stride = round_up(
            size_of::<DirHeader>() as u64 + services * size_of::<ServiceEntry>() as u64,
            CACHE_PAD,
        );
        let arena_offset = round_up(dir_offset + u64::from(dir_slots) * dir_stride, ARENA_ALIGN);
        Ok(Self {
            capacity: Capacity {
                arena_bytes: arena_len,
                ..capacity
            },
            workers_offset,
            counters_offset,
            counters_stride,
            backend_counters_offset,
            backend_counters_stride,
            dir_offset,
            dir_stride,
            arena_offset,
            arena_len,
            total: arena_offset + arena_len,
        })
    }

    /// Offset of worker block `i`.
    #[must_use]
    pub fn worker_offset(&self, i: u32) -> u64 {
        self.workers_offset + u64::from(i) * size_of::<WorkerBlock>() as u64
    }

    /// Offset of worker `i`'s service counters.
    #[must_use]
    pub fn counters_of(&self, i: u32) -> u64 {
        self.counters_offset + u64::from(i) * self.counters_stride
    }

    /// Offset of worker `i`'s backend counters.
    #[must_use]
    pub fn backend_counters_of(&self, i: u32) -> u64 {
        self.backend_counters_offset + u64::from(i) * self.backend_counters_stride
    }

    /// Offset of directory slot `s`.
    #[must_use]
    pub fn dir_slot_offset(&self, s: u32) -> u64 {
        self.dir_offset + u64::from(s) * self.dir_stride
    }

    /// Whether `[offset, offset + len)` lies inside the arena and `offset` is block-aligned.
    #[must_use]
    pub fn arena_span_ok(&self, offset: u64, len: u64) -> bool {
        offset.is_multiple_of(BLOCK_ALIGN)
            && offset
                .checked_add(len)
                .is_some_and(|end| end <= self.arena_len)
    }
}

/// The arena bytes one service version takes: its backend array, then its table, the whole
/// rounded up to [`BLOCK_ALIGN`]; `None` on overflow. The table starts 64-aligned because a
/// backend entry is 64 bytes.
#[must_use]
pub fn block_len(n_backends: u32, table_size: u32) -> Option<u64> {
    let b = u64::from(n_backends).checked_mul(BACKEND_ENTRY_SIZE)?;
    let t = u64::from(table_size).checked_mul(2)?;
    Some(round_up(b.checked_add(t)?, BLOCK_ALIGN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_word_round_trips() {
        for (g, s) in [(0, 0), (1, 3), (MAX_GENERATION, 254), (12345, 7)] {
            assert_eq!(
                unpack_published(pack_published(Generation(g), s)),
                (Generation(g), s)
            );
        }
        for (i, st) in [(0, OWNER_FREE), (7, OWNER_LIVE), (1 << 60, OWNER_DEAD)] {
            assert_eq!(unpack_owner(pack_owner(i, st)), (i, st));
        }
    }

    #[test]
    fn geometry_is_aligned_and_ordered() {
        let g = Geometry::new(Capacity {
            max_services: 3,
            max_workers: 5,
            dir_slots: 4,
            arena_bytes: 100_000,
        })
        .unwrap();
        assert_eq!(g.workers_offset, 256);
        assert_eq!(g.counters_offset, 256 + 5 * 384);
        // 3 services × 32 bytes, padded to 128.
        assert_eq!(g.counters_stride, 128);
        assert_eq!(g.backend_counters_offset, 256 + 5 * 384 + 5 * 128);
        assert_eq!(g.backend_counters_stride, 3 * 64 * 32);
        assert_eq!(g.dir_offset, g.backend_counters_offset + 5 * 3 * 64 * 32);
        assert_eq!(g.backend_counters_offset % CACHE_PAD, 0);
        assert_eq!(g.dir_stride, 256);
        assert_eq!(g.dir_offset % CACHE_PAD, 0);
        assert_eq!(g.arena_offset % ARENA_ALIGN, 0);
        assert!(g.arena_offset >= g.dir_offset + 4 * 256);
        assert_eq!(g.arena_len, 100_000 / 64 * 64);
        assert_eq!(g.total, g.arena_offset + g.arena_len);
        assert!(g.arena_span_ok(0, g.arena_len));
        assert!(!g.arena_span_ok(64, g.arena_len));
        assert!(!g.arena_span_ok(1, 0));
        assert!(!g.arena_span_ok(u64::MAX - 63, 128));
        // 5 services × 32 bytes = 160, padded to 256.
        let g5 = Geometry::new(Capacity {
            max_services: 5,
            max_workers: 2,
            dir_slots: 2,
            arena_bytes: 4096,
        })
        .unwrap();
        assert_eq!(g5.counters_stride, 256);
        assert_eq!(g5.backend_counters_stride, 5 * 64 * 32);
    }

    #[test]
    fn capacity_limits() {
        let ok = Capacity::default();
        assert!(Geometry::new(ok).is_ok());
        for (bad, err) in [
            (
                Capacity {
                    max_services: 0,
                    ..ok
                },
                CapacityError::Services,
            ),
            (
                Capacity {
                    max_workers: MAX_WORKERS + 1,
                    ..ok
                },
                CapacityError::Workers,
            ),
            (Capacity { dir_slots: 1, ..ok }, CapacityError::DirSlots),
            (
                Capacity {
                    dir_slots: 256,
                    ..ok
                },
                CapacityError::DirSlots,
            ),
            (
                Capacity {
                    arena_bytes: 63,
                    ..ok
                },
                CapacityError::Arena,
            ),
        ] {
            assert_eq!(Geometry::new(bad), Err(err));
        }
        // The largest geometry still fits u64 comfortably.
        let max = Geometry::new(Capacity {
            max_services: MAX_SERVICES,
            max_workers: MAX_WORKERS,
            dir_slots: MAX_DIR_SLOTS,
            arena_bytes: MAX_ARENA_BYTES,
        })
        .unwrap();
        assert!(max.total > MAX_ARENA_BYTES);
    }

    #[test]
    fn keys_and_backends_encode() {
        let k = ServiceKey::new("10.0.0.1".parse().unwrap(), 80, Proto::Tcp);
        assert_eq!(k, ServiceKey::from_v4([10, 0, 0, 1], 80, 6));
        assert_eq!(format!("{k:?}"), "10.0.0.1:80/6");
        let k6 = ServiceKey::new("2001:db8::1".parse().unwrap(), 443, Proto::Udp);
        assert_eq!(k6.vip(), "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_ne!(
            ServiceKey::from_v4([1, 2, 3, 4], 1, 6),
            ServiceKey::from_v6(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped().octets(), 1, 6)
        );
        let b = Backend {
            id: BackendId(9),
            addr: "192.0.2.7".parse().unwrap(),
            port: 8080,
            mac: Some([2, 0, 0, 0, 0, 1]),
            next_hop: None,
            weight: 3,
            state: BackendState::Draining,
        };
        let e = BackendEntry::new(&b);
        assert_eq!(e.id(), BackendId(9));
        assert_eq!(e.ip(), Some(b.addr));
        assert_eq!(e.mac(), b.mac);
        assert_eq!(e.next_hop(), None);
        assert_eq!(e.state(), BackendState::Draining);
        assert_eq!(BackendState::from_u8(200), BackendState::Down);
        assert_eq!(block_len(3, 251), Some(704));
    }
}
