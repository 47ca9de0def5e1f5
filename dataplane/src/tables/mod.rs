//! The shared-memory tables control publishes and the dataplane reads (DESIGN, "Control →
//! dataplane: tables over shared memory"): the format, the lock-free publication protocol, the
//! [`Writer`] control calls and the [`Tables`] / [`Worker`] the dataplane calls. The mapped
//! memory itself is handled by [`crate::io::shm`]; nothing here dereferences a pointer.
//!
//! # Region layout (ABI version 4)
//!
//! One named region (hugetlbfs, else `/dev/shm`), created by control. `W` = `max_workers`,
//! `S` = `max_services`, `D` = `dir_slots`,
//! `B` = [`BACKEND_COUNTER_SLOTS`] (64); every part starts aligned as shown.
//!
//! ```text
//!  offset             part                              size               written by
//!  ────────────────── ───────────────────────────────── ────────────────── ──────────────────────
//!  0                  Header                            256                control; `magic` last
//!    0..128             magic, abi_version, layout                           at creation;
//!                       sizes, capacity, offsets,                            `published` on each
//!                       published = gen<<8 | dir slot                        publication (release)
//!    128..256           control_heartbeat, writer_epoch,                     control, often
//!                       counter slots and size (once)
//!  256                WorkerBlock[W]                    384 each, align 128 worker i (single
//!                       owner (incarnation|state), ack,                      writer; control may
//!                       heartbeat, pid, rx/tx, conntrack,                    flip owner to dead)
//!                       switches, errors, drops[32]
//!  ..                 ServiceCounters[S] per worker     32·S, pad to 128    worker i
//!                       {packets, bytes, connections,                        (control zeroes
//!                       reserved} by dir index                               freed indices)
//!  ..                 BackendCounters[S·B] per worker   32·S·B, pad to 128  worker i
//!                       {packets, bytes, connections,                        (control zeroes
//!                       reserved} by dir index · B +                         retired slots)
//!                       BackendEntry.counter_slot
//!  ..                 Directory slot[D]                 64 + 64·S, pad 128  control, only while
//!                       DirHeader {generation, count}                        no worker can read it
//!                       ServiceEntry[S] {vip, port,
//!                       proto, family, mode, flags
//!                       (in use, client affinity), id,
//!                       M, version, backends_offset,
//!                       table_offset, n_backends}
//!  .. (4 KiB aligned) Arena                             arena_bytes         control, only blocks
//!                       per service version, 64-aligned:                     no generation a live
//!                       BackendEntry[n] (64 B, Maglev                        worker may read
//!                       slot order) then u16[M] table                        references
//! ```
//!
//! Sizes and offsets of every struct are pinned by compile-time asserts in [`layout`]. The
//! header records the ABI version, the struct sizes and the whole geometry; a reader
//! recomputes the geometry and refuses any mismatch with a typed [`ShmError`]. Integers are
//! native-endian (both processes run on one host).
//!
//! # Publication protocol
//!
//! 1. To change services, control writes each changed service's backends and table into a
//!    *free* arena block, and copies the published directory into a *free* directory slot with
//!    those entries replaced. Other entries are copied as they are: their blocks are shared
//!    with the previous generation and never rewritten. A service keeps its directory index
//!    for life, so per-service counters stay attributed.
//! 2. Control stores `published = (g + 1) << 8 | slot` with release (SeqCst).
//! 3. Each worker loads `published` with acquire once per burst ([`Worker::check`]). When it
//!    changed, the worker copies the directory slot, validates every changed entry against the
//!    arena (offsets come from another process: a bad entry is skipped and counted, never
//!    trusted), builds its views and its `(VIP, port, proto)` index, drops the old views, and
//!    stores `g + 1` into its block's `ack` with release.
//! 4. The old directory slot and the replaced blocks are *retired at* `g + 1`. Control frees
//!    them once every *live* worker's ack is `≥ g + 1` ([`Writer::reclaim`]). A worker whose
//!    heartbeat has not moved for [`WriterOptions::dead_after`] is marked dead in its block
//!    and not waited for. When nothing is free, [`Writer::publish`] returns a would-block
//!    error instead of overwriting anything in use.
//!
//! So a worker only ever reads a generation that was completely written before it was
//! published, and that stays untouched until the worker has acked a newer one.
//!
//! A worker registering ([`Tables::register`]) claims a block with a SeqCst CAS and then loads
//! `published` with SeqCst; control stores `published` and loads owner words with SeqCst. So
//! either control sees the new worker and waits for its ack, or the worker starts at a
//! generation no older than anything control reclaims.
//!
//! **The dead-worker escape hatch.** Not waiting for a worker that is merely stalled (not
//! dead) would let control rewrite memory it still reads. The worker notices at its next
//! [`Worker::check`] (its block reads dead), drops its views and re-synchronises; every access
//! it makes stays inside the mapping and panic-free regardless. Choose `dead_after` far above
//! any stall a healthy worker can have.
//!
//! # Counters
//!
//! Each worker owns its [`WorkerBlock`] (rx/tx packets and bytes, conntrack fill, table
//! switches and errors, 32 drop counters by reason) and an array of [`ServiceCounters`]
//! (packets, bytes, connections) indexed by directory index, `32 · max_services` bytes padded
//! to 128: 32 KiB per worker for the default 1024 services. Workers write them with [`bump`]
//! ([`ServiceCounters::record`], [`Worker::count_forward`]); control sums them
//! ([`Writer::workers`], [`Writer::service_totals`]). A removed service's index is reused only
//! after every live worker acked its removal, and its counters are zeroed then.
//!
//! *Connections* (since ABI version 3) are new flows: a packet counts one on its service and on
//! its backend when the pipeline picked that backend by Maglev for it — a conntrack miss (the
//! entry is created then), a tracked flow moved off a removed or down backend (it is new to
//! its new backend), or a stateless pick because conntrack is full (then every packet of such
//! a flow counts, as each is a pick). Conntrack hits, NAT replies and ICMP errors about a flow
//! never count. The count rides on the packet's verdict (`new_flow` in
//! [`Verdict::Forward`](crate::pipeline::Verdict::Forward)), so it is bumped with the
//! packet's own counters, in the same cache line, and only when that packet is forwarded: a
//! flow whose first packet is dropped after its entry was made (its backend's MAC not yet
//! resolved, no encap headroom) is not counted. Service connections equal the sum over the
//! service's backends while every backend has a counter slot.
//!
//! Per-backend counters (since ABI version 2): each worker also owns `S · B`
//! [`BackendCounters`] (32 B each; 2 MiB per worker for the defaults), indexed by
//! `dir index · B + counter slot`.
//! Control gives each backend of a service a *counter slot* in `0..B`, stored in its
//! [`BackendEntry::counter_slot`]: stable while the backend stays in the service (its Maglev
//! position may change), so counts never move between backends. A removed backend's slot is
//! *retired at* the generation that removed it and, like a directory index, zeroed and reused
//! only after every live worker acked that generation ([`Writer::reclaim`]); a new backend
//! meanwhile gets another free slot or none (`u16::MAX`: not counted per backend, still
//! counted per service). A service's `B` slots are all zeroed when its directory index is
//! freed. Workers map the pipeline's `BackendId` to the slot with [`Worker::count_backend`]
//! (via [`Worker::count_forward`]; two binary searches, over services and over the service's
//! `(id, slot)` pairs sorted at switch time; no allocation per packet); control sums with
//! [`Writer::backend_totals`]. A re-attached writer recovers slots from the published
//! backends and retires every other slot of a published service at the published generation.
//!
//! # Restarts
//!
//! - **Control.** [`Writer::attach`] re-maps the region, takes the writer lock (an exclusive
//!   `flock` the kernel drops when a writer dies), rebuilds its bookkeeping from the directory
//!   slots and continues from the published generation. Workers notice nothing.
//! - **Dataplane.** A new [`Tables::map`] + [`Tables::register`] (or
//!   [`Tables::register_at`] with takeover) switches to the published generation before it
//!   returns. Blocks of dead workers are reused.
//!
//! # Time
//!
//! Logic takes time as a [`Tick`] argument; only tests, benches and
//! [`Writer::wait_acked`]'s caller-supplied clock read a clock.

pub mod alloc;
pub mod layout;
mod ledger;
mod liveness;
mod reader;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::io::shm::{Backing, ShmError};
pub use layout::{
    Affinity, BACKEND_COUNTER_SLOTS, Backend, BackendCounters, BackendEntry, BackendId,
    BackendState, Capacity, CapacityError, Generation, Mode, Proto, ServiceCounters, ServiceEntry,
    ServiceId, ServiceKey, WorkerBlock,
};
pub(crate) use reader::ServiceIndex;
pub use reader::{ServiceView, Tables, Worker};
pub use writer::{
    AckTimeout, PublishError, Published, Reclaimed, ServiceSpec, ServiceTotals, ServiceUpdate,
    WorkerCounters, WorkerState, WorkerStatus, Writer, WriterOptions,
};

/// A point in time, in nanoseconds from an origin the caller chooses (a monotonic clock in
/// production; anything in tests). Passed into logic instead of reading a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tick(u64);

impl Tick {
    /// `ns` nanoseconds after the origin.
    #[must_use]
    pub const fn from_nanos(ns: u64) -> Self {
        Self(ns)
    }

    /// `d` after the origin (saturating at `u64::MAX` nanoseconds).
    #[must_use]
    pub fn from_duration(d: Duration) -> Self {
        Self(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds after the origin.
    #[must_use]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`; zero when `earlier` is later.
    #[must_use]
    pub fn saturating_since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

/// Adds `n` to a counter that only the calling worker writes: a `Relaxed` load and store, no
/// locked instruction (STYLE rule 10). Wraps on overflow.
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}
