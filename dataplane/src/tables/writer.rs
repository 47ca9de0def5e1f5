//! The control side: [`Writer`] creates or re-attaches to the region, publishes generations,
//! reclaims what every live worker has moved past, and reads worker heartbeats and counters.
//! See the [module docs](super) for the protocol.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_hugepages::{HugepageError, Region};
use thiserror::Error;
use zerocopy::{FromBytes, IntoBytes};

use super::Tick;
use super::alloc::Block;
use super::layout::{
    Affinity, BACKEND_COUNTER_SLOTS, BACKEND_ENTRY_SIZE, Backend, BackendEntry, BackendId,
    Capacity, DROP_REASONS, DirHeader, Generation, Geometry, MAX_BACKENDS, Mode, NO_COUNTER_SLOT,
    OWNER_DEAD, OWNER_LIVE, SERVICE_CLIENT_AFFINITY, ServiceCounters, ServiceEntry, ServiceId,
    ServiceKey, WorkerBlock, pack_owner, pack_published, unpack_owner, unpack_published,
};
use super::ledger::{BeginError, Ledger, Shape};
use super::liveness::{Liveness, Verdict};
use crate::io::shm::{Backing, Mapping, ShmError, WriterLock};
use crate::maglev::MaglevTable;

/// Writer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// How long a live worker's heartbeat may stand still before control stops waiting for its
    /// acks (and marks its block dead). Default 2 s. Keep it far above any pause a healthy
    /// worker can have: a worker judged dead while merely stalled could read tables that are
    /// being rewritten (it notices at its next burst and re-synchronises).
    pub dead_after: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            dead_after: Duration::from_secs(2),
        }
    }
}

/// A service to insert or replace.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSpec<'a> {
    /// What packets match.
    pub key: ServiceKey,
    /// Stable id.
    pub id: ServiceId,
    /// Forwarding mode.
    pub mode: Mode,
    /// Session affinity: [`Affinity::ClientIp`] publishes [`SERVICE_CLIENT_AFFINITY`].
    pub affinity: Affinity,
    /// The backends, in the order they were given to the Maglev builder for `table`.
    pub backends: &'a [Backend],
    /// The service's Maglev table, built from `backends`.
    pub table: &'a MaglevTable,
}

/// One change in a publication.
#[derive(Debug, Clone, Copy)]
pub enum ServiceUpdate<'a> {
    /// Insert or replace a service. Only its own arena block is written.
    Upsert(ServiceSpec<'a>),
    /// Remove a service (a no-op when it is not published).
    Remove(ServiceKey),
}

/// A successful publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The new generation.
    pub generation: Generation,
    /// The directory slot it was written into.
    pub dir_slot: u32,
}

/// Why a publication was refused. Nothing was published and nothing changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// Every directory slot but the published one still waits for worker acks. Retryable:
    /// call [`Writer::reclaim`] once workers have acked, then publish again.
    #[error("no free directory slot: workers have not acked recent generations yet")]
    NoFreeDirSlot,
    /// No free arena block is big enough. Retryable when `needed` is below the arena size
    /// (older versions are reclaimed once workers ack); otherwise the arena is too small.
    #[error("table arena full: need {needed} bytes, largest free block is {largest_free}")]
    ArenaFull {
        /// Bytes the first block that did not fit needs.
        needed: u64,
        /// The largest free block.
        largest_free: u64,
    },
    /// The directory has no free index for a new service (removed ones become free after
    /// acks). Retryable only after removals.
    #[error("table directory full: at most {max} services")]
    TooManyServices {
        /// The region's `max_services`.
        max: u32,
    },
    /// A key appears twice in one change set.
    #[error("service {0:?} appears twice in one publication")]
    DuplicateKey(ServiceKey),
    /// The backends do not match the Maglev table (it was built from another list).
    #[error("service {key:?}: {backends} backends given, the table was built from {table}")]
    BackendsMismatch {
        /// The service.
        key: ServiceKey,
        /// Backends passed.
        backends: usize,
        /// Backends the table was built from.
        table: usize,
    },
    /// More backends than a table can index.
    #[error("service {key:?}: {count} backends exceed {MAX_BACKENDS}")]
    TooManyBackends {
        /// The service.
        key: ServiceKey,
        /// Backends passed.
        count: usize,
    },
    /// Generation numbers are exhausted (2⁵⁶ publications); re-create the region.
    #[error("table generations exhausted")]
    GenerationsExhausted,
    /// Writing the region failed (an internal inconsistency; nothing was published).
    #[error("writing the table region failed: {0}")]
    Region(&'static str),
}

impl PublishError {
    /// Whether retrying after workers ack (and [`Writer::reclaim`]) can succeed.
    #[must_use]
    pub fn is_would_block(&self) -> bool {
        matches!(self, Self::NoFreeDirSlot | Self::ArenaFull { .. })
    }
}

/// [`Writer::wait_acked`] gave up.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("workers did not ack generation {generation} in time (lowest live ack {lowest})")]
pub struct AckTimeout {
    /// The generation waited for.
    pub generation: Generation,
    /// The lowest ack among live workers when giving up.
    pub lowest: Generation,
}

/// What a [`Writer::reclaim`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// The lowest generation any live worker acked (the published one when none is live):
    /// everything retired at or below it was freed.
    pub safe: Generation,
    /// Live workers waited for.
    pub live_workers: u32,
    /// Workers judged dead in this pass (their blocks marked dead).
    pub newly_dead: u32,
    /// Arena blocks freed.
    pub blocks: usize,
    /// Directory slots freed.
    pub dir_slots: usize,
    /// Service indices freed.
    pub indices: usize,
}

/// A worker block's state as control sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Its heartbeat moves; control waits for its acks.
    Live,
    /// Judged dead (heartbeat stale); control does not wait for it.
    Dead,
}

/// A copy of one worker's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Connection-table entries in use.
    pub conntrack_entries: u64,
    /// Connection-table capacity.
    pub conntrack_capacity: u64,
    /// Generations switched to.
    pub table_switches: u64,
    /// Invalid directory entries or directories met.
    pub table_errors: u64,
    /// Drops by reason.
    pub drops: [u64; DROP_REASONS],
}

impl WorkerCounters {
    fn read(b: &WorkerBlock) -> Self {
        let r = Ordering::Relaxed;
        Self {
            rx_packets: b.rx_packets.load(r),
            rx_bytes: b.rx_bytes.load(r),
            tx_packets: b.tx_packets.load(r),
            tx_bytes: b.tx_bytes.load(r),
            conntrack_entries: b.conntrack_entries.load(r),
            conntrack_capacity: b.conntrack_capacity.load(r),
            table_switches: b.table_switches.load(r),
            table_errors: b.table_errors.load(r),
            drops: std::array::from_fn(|i| b.drops[i].load(r)),
        }
    }
}

/// One worker block in use, as [`Writer::workers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// Block index.
    pub index: u32,
    /// Live or dead.
    pub state: WorkerState,
    /// The worker's process id.
    pub pid: u64,
    /// The generation it reads.
    pub ack: Generation,
    /// Its heartbeat counter.
    pub heartbeat: u64,
    /// Time since its heartbeat last moved (as far as this writer has watched).
    pub heartbeat_age: Duration,
    /// Its counters.
    pub counters: WorkerCounters,
}

/// Per-service (or per-backend) totals summed over every worker: what control exports as
/// `sluice_{service,backend}_{packets,bytes,connections}_total`. Each is a sum of
/// monotonic per-worker counters (wrapping at 2⁶⁴), zeroed only when the directory index or
/// backend counter slot is freed for reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceTotals {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (frames as received).
    pub bytes: u64,
    /// Connections: new flows, each counted once when the pipeline picked its backend (see
    /// [`ServiceCounters::connections`] for exactly what counts).
    pub connections: u64,
}

// === impl ServiceTotals ===

impl ServiceTotals {
    /// Adds one worker's counters (`Relaxed` loads: each is a monotonic counter on its own).
    fn add(&mut self, c: &ServiceCounters) {
        let r = Ordering::Relaxed;
        self.packets = self.packets.wrapping_add(c.packets.load(r));
        self.bytes = self.bytes.wrapping_add(c.bytes.load(r));
        self.connections = self.connections.wrapping_add(c.connections.load(r));
    }
}

/// The single writer of a table region (the control daemon). See the [module docs](super).
pub struct Writer {
    map: Mapping,
    _lock: WriterLock,
    ledger: Ledger,
    liveness: Liveness,
    shapes: Vec<Shape>,
    /// Backend counter slots per directory index.
    slots: HashMap<u32, CounterSlots>,
}

/// One service's backend counter slots (see [`BackendEntry::counter_slot`]).
#[derive(Debug, Clone, Default)]
struct CounterSlots {
    used: HashMap<BackendId, u16>,
    free: Vec<u16>,
    /// Slots of removed backends, reusable (after zeroing) once every live worker acked the
    /// generation.
    retired: Vec<(Generation, u16)>,
}

impl CounterSlots {
    fn new() -> Self {
        Self {
            free: (0..slot_count()).rev().collect(),
            ..Self::default()
        }
    }

    /// The slots for `backends` (by position) published at `generation`, and the state after.
    fn assign(&self, backends: &[Backend], generation: Generation) -> (Vec<u16>, Self) {
        let mut next = Self {
            used: HashMap::new(),
            free: self.free.clone(),
            retired: self.retired.clone(),
        };
        let ids: HashSet<BackendId> = backends.iter().map(|b| b.id).collect();
        for (&id, &slot) in &self.used {
            if !ids.contains(&id) {
                next.retired.push((generation, slot));
            }
        }
        let out = backends
            .iter()
            .map(|b| {
                if let Some(&s) = next.used.get(&b.id).or_else(|| self.used.get(&b.id)) {
                    next.used.insert(b.id, s);
                    return s;
                }
                match next.free.pop() {
                    Some(s) => {
                        next.used.insert(b.id, s);
                        s
                    }
                    None => NO_COUNTER_SLOT,
                }
            })
            .collect();
        (out, next)
    }
}

fn slot_count() -> u16 {
    u16::try_from(BACKEND_COUNTER_SLOTS).unwrap_or(u16::MAX)
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("region", &self.map.region().name())
            .field("generation", &self.ledger.generation())
            .field("dir_slot", &self.ledger.current_dir())
            .field("arena_free", &self.ledger.alloc().free_bytes())
            .field("retired", &self.ledger.retired_len())
            .finish_non_exhaustive()
    }
}

struct Scan {
    safe: Generation,
    live: u32,
    newly_dead: u32,
}

// === impl Writer ===

impl Writer {
    /// Creates region `name` with `capacity` where `backing` allows, and publishes generation
    /// 1 (no services).
    ///
    /// # Errors
    ///
    /// [`ShmError::Capacity`], [`ShmError::Region`] (for example `AlreadyExists`: use
    /// [`Writer::attach`] or [`Writer::open_or_create`]), [`ShmError::WriterBusy`].
    pub fn create(
        name: &str,
        capacity: Capacity,
        backing: Backing,
        options: WriterOptions,
    ) -> Result<Self, ShmError> {
        let geo = Geometry::new(capacity)?;
        let size = usize::try_from(geo.total).map_err(|_| ShmError::SizeMismatch {
            what: "region",
            found: geo.total,
            expected: usize::MAX as u64,
        })?;
        let region = Region::create_with(name, size, backing)?;
        let lock = WriterLock::acquire(&region)?;
        let map = Mapping::initialize(region, geo)?;
        Ok(Self::finish(map, lock, Ledger::new(&geo), options))
    }

    /// Re-attaches to existing region `name` (a restarted control), searching every backing.
    /// Nothing workers read is touched: the published generation stays, and the next
    /// publication continues from it.
    ///
    /// # Errors
    ///
    /// See [`Writer::attach_with`].
    pub fn attach(name: &str, options: WriterOptions) -> Result<Self, ShmError> {
        Self::attach_with(name, Backing::Auto, options)
    }

    /// [`Writer::attach`] in the places `backing` allows. The writer's bookkeeping is rebuilt
    /// from the directory slots: blocks of the published directory are live; blocks and slots
    /// of older generations are retired at the published one, so they are reused only after
    /// every live worker acks it.
    ///
    /// # Errors
    ///
    /// [`ShmError::Region`] (`NotFound`, …), [`ShmError::WriterBusy`] while another writer
    /// lives, the header checks of a reader ([`ShmError::AbiMismatch`], …), and
    /// [`ShmError::Corrupt`] when the published directory is inconsistent.
    pub fn attach_with(
        name: &str,
        backing: Backing,
        options: WriterOptions,
    ) -> Result<Self, ShmError> {
        let region = Region::open_with(name, backing)?;
        let lock = WriterLock::acquire(&region)?;
        let map = Mapping::validate(region)?;
        let geo = *map.geometry();
        let (generation, slot) = unpack_published(map.header().published.load(Ordering::Acquire));
        let mut current = Vec::new();
        let head = map.read_dir(slot, &mut current)?;
        if head.generation != generation.get() {
            return Err(ShmError::Corrupt {
                what: "published directory slot holds another generation",
            });
        }
        let mut older: Vec<(u64, u32, Vec<ServiceEntry>)> = Vec::new();
        for s in (0..geo.capacity.dir_slots).filter(|&s| s != slot) {
            let mut entries = Vec::new();
            if let Ok(h) = map.read_dir(s, &mut entries) {
                // A slot written for a generation that was never published (a writer died
                // between the two) is free.
                if h.generation > 0 && h.generation < generation.get() {
                    older.push((h.generation, s, entries));
                }
            }
        }
        older.sort_by_key(|o| std::cmp::Reverse(o.0));
        let older: Vec<(u32, Vec<ServiceEntry>)> =
            older.into_iter().map(|(_, s, e)| (s, e)).collect();
        let ledger = Ledger::restore(&geo, generation, slot, &current, &older)
            .map_err(|what| ShmError::Corrupt { what })?;
        tracing::info!(
            region = name,
            %generation,
            services = ledger.entries().iter().filter(|e| e.in_use()).count(),
            "table writer re-attached"
        );
        Ok(Self::finish(map, lock, ledger, options))
    }

    /// [`Writer::attach_with`] when region `name` exists, else [`Writer::create`]. An existing
    /// region keeps its own capacity (see [`Writer::capacity`]).
    ///
    /// # Errors
    ///
    /// As the two.
    pub fn open_or_create(
        name: &str,
        capacity: Capacity,
        backing: Backing,
        options: WriterOptions,
    ) -> Result<Self, ShmError> {
        match Self::attach_with(name, backing, options) {
            Err(ShmError::Region(HugepageError::NotFound { .. })) => {
                Self::create(name, capacity, backing, options)
            }
            other => other,
        }
    }

    /// Deletes region `name` (mappings stay valid until dropped). Returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`ShmError::Region`] when a file exists but cannot be removed.
    pub fn remove(name: &str) -> Result<bool, ShmError> {
        Ok(Region::remove(name)?)
    }

    fn finish(map: Mapping, lock: WriterLock, ledger: Ledger, options: WriterOptions) -> Self {
        let h = map.header();
        h.writer_epoch.fetch_add(1, Ordering::Relaxed);
        h.writer_pid
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        let liveness = Liveness::new(map.geometry().capacity.max_workers, options.dead_after);
        // Counter slots of published backends stay theirs; every other slot of a published
        // service may still be written by a worker on an older generation, so it is retired
        // at the published one (zeroed and freed by the first reclaim after every ack).
        let mut slots = HashMap::new();
        for (index, e) in (0u32..).zip(ledger.entries()) {
            if !e.in_use() {
                continue;
            }
            let mut cs = CounterSlots::default();
            let backends = super::ledger::entry_block(e)
                .and_then(|b| map.arena_block(b))
                .and_then(|bytes| bytes.get(..usize::try_from(e.backends_span()?.1).ok()?));
            for chunk in backends
                .unwrap_or_default()
                .chunks_exact(size_of::<BackendEntry>())
            {
                if let Ok(b) = BackendEntry::read_from_bytes(chunk)
                    && let Some(s) = b.counter_slot()
                {
                    cs.used.insert(b.id(), s);
                }
            }
            let taken: HashSet<u16> = cs.used.values().copied().collect();
            cs.retired = (0..slot_count())
                .filter(|s| !taken.contains(s))
                .map(|s| (ledger.generation(), s))
                .collect();
            slots.insert(index, cs);
        }
        Self {
            map,
            _lock: lock,
            ledger,
            liveness,
            shapes: Vec::new(),
            slots,
        }
    }

    /// The region's name.
    #[must_use]
    pub fn name(&self) -> &str {
        self.map.region().name()
    }

    /// The region's capacity.
    #[must_use]
    pub fn capacity(&self) -> Capacity {
        self.map.geometry().capacity
    }

    /// The published generation.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.ledger.generation()
    }

    /// Free arena bytes, and the largest free block.
    #[must_use]
    pub fn arena_free(&self) -> (u64, u64) {
        let a = self.ledger.alloc();
        (a.free_bytes(), a.largest_free())
    }

    /// The published services: `(directory index, entry)`.
    pub fn services(&self) -> impl Iterator<Item = (u32, &ServiceEntry)> {
        (0u32..)
            .zip(self.ledger.entries())
            .filter(|(_, e)| e.in_use())
    }

    /// The published entry of `key`: `(directory index, entry)`.
    #[must_use]
    pub fn service(&self, key: &ServiceKey) -> Option<(u32, &ServiceEntry)> {
        let i = self.ledger.index_of(key)?;
        let e = self.ledger.entries().get(usize::try_from(i).ok()?)?;
        Some((i, e))
    }

    /// The bytes of a published service's arena block (backends then table), as written.
    #[must_use]
    pub fn service_block(&self, key: &ServiceKey) -> Option<&[u8]> {
        let (_, e) = self.service(key)?;
        self.map.arena_block(super::ledger::entry_block(e)?)
    }

    /// Bumps the control heartbeat in the header.
    pub fn heartbeat(&self) {
        let h = &self.map.header().control_heartbeat;
        h.store(h.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Publishes `changes` as one new generation: writes each upserted service's backends and
    /// table into a free arena block, copies the directory into a free slot with those entries
    /// replaced (every other entry, and its block, stays as it is), and stores the new
    /// generation with release.
    ///
    /// # Errors
    ///
    /// [`PublishError`]; [`PublishError::is_would_block`] tells whether to reclaim and retry.
    /// On error nothing was published and no state changed.
    pub fn publish(&mut self, changes: &[ServiceUpdate<'_>]) -> Result<Published, PublishError> {
        self.shapes.clear();
        for c in changes {
            self.shapes.push(match c {
                ServiceUpdate::Upsert(s) => Shape::Upsert(entry_for(s)?),
                ServiceUpdate::Remove(k) => Shape::Remove(*k),
            });
        }
        let plan = self.ledger.begin(&self.shapes).map_err(|e| match e {
            BeginError::NoDirSlot => PublishError::NoFreeDirSlot,
            BeginError::Arena {
                needed,
                largest_free,
            } => PublishError::ArenaFull {
                needed,
                largest_free,
            },
            BeginError::Services => PublishError::TooManyServices {
                max: self.map.geometry().capacity.max_services,
            },
            BeginError::Duplicate(k) => PublishError::DuplicateKey(k),
            BeginError::BadKey => PublishError::Region("service key with an unknown family"),
            BeginError::Generations => PublishError::GenerationsExhausted,
        })?;
        // The new blocks were free: no worker reads them, so plain writes are fine.
        let mut next_slots = Vec::new();
        let filled = changes
            .iter()
            .zip(&plan.writes)
            .try_for_each(|(c, w)| match (c, w) {
                (ServiceUpdate::Upsert(s), Some((index, block))) => {
                    let (assigned, next) = self
                        .slots
                        .get(index)
                        .cloned()
                        .unwrap_or_else(CounterSlots::new)
                        .assign(s.backends, plan.generation);
                    next_slots.push((*index, next));
                    write_block(&mut self.map, *block, s, &assigned)
                }
                _ => Ok(()),
            });
        if let Err(e) = filled {
            self.ledger.abort(plan);
            return Err(e);
        }
        // The slot was free: the published one is never chosen, and retired ones are freed
        // only after every live worker acked a generation past them.
        let head = DirHeader {
            generation: plan.generation.get(),
            count: plan.count,
            ..DirHeader::default()
        };
        let count = usize::try_from(plan.count).unwrap_or(usize::MAX);
        let written = plan
            .entries
            .get(..count)
            .ok_or(ShmError::Corrupt { what: "" })
            .and_then(|entries| self.map.write_dir(plan.dir_slot, &head, entries));
        if written.is_err() {
            self.ledger.abort(plan);
            return Err(PublishError::Region("directory slot write out of range"));
        }
        let published = Published {
            generation: plan.generation,
            dir_slot: plan.dir_slot,
        };
        // Ordering: the block and slot writes above happen-before every worker load that
        // acquires this word (the release half). SeqCst also orders this store before the
        // owner-word loads of later reclaim passes, pairing with the SeqCst claim and
        // published load in `Tables::register`: either a reclaim pass sees a newly claimed
        // block (and waits for its ack), or that worker's first load sees this generation (and
        // never reads what this publication retires).
        self.map.header().published.store(
            pack_published(published.generation, published.dir_slot),
            Ordering::SeqCst,
        );
        self.ledger.commit(&self.shapes, plan);
        self.slots.extend(next_slots);
        self.heartbeat();
        Ok(published)
    }

    /// Judges worker heartbeats at `now` (marking stale ones dead) and frees every arena
    /// block, directory slot and service index that all live workers have acked past. Call it
    /// before publishing, or when a publication would block.
    pub fn reclaim(&mut self, now: Tick) -> Reclaimed {
        let scan = self.scan(now, |_, _, _, _| {});
        let freed = self.ledger.reclaim(scan.safe);
        // Backend counter slots retired at or below `safe`: no live worker writes them any
        // more (all acked a generation where no backend holds them), so zero and free them.
        let mut zero = Vec::new();
        for (&index, cs) in &mut self.slots {
            let (done, waiting) = cs.retired.iter().partition(|r| r.0 <= scan.safe);
            let done: Vec<(Generation, u16)> = done;
            cs.retired = waiting;
            for (_, slot) in done {
                zero.push((index, slot));
                cs.free.push(slot);
            }
        }
        for &index in &freed.indices {
            self.slots.remove(&index);
            zero.extend((0..slot_count()).map(|s| (index, s)));
        }
        for (index, slot) in zero {
            let i = u64::from(index) * u64::from(BACKEND_COUNTER_SLOTS) + u64::from(slot);
            for w in 0..self.map.geometry().capacity.max_workers {
                if let Some(c) = self
                    .map
                    .backend_counters(w)
                    .and_then(|c| c.get(usize::try_from(i).ok()?))
                {
                    c.clear();
                }
            }
        }
        // A reused index starts its counters at zero. No live worker writes them any more:
        // all acked a generation without that service.
        for &index in &freed.indices {
            for w in 0..self.map.geometry().capacity.max_workers {
                if let Some(c) = self
                    .map
                    .service_counters(w)
                    .and_then(|c| c.get(usize::try_from(index).ok()?))
                {
                    c.clear();
                }
            }
        }
        self.heartbeat();
        Reclaimed {
            safe: scan.safe,
            live_workers: scan.live,
            newly_dead: scan.newly_dead,
            blocks: freed.blocks,
            dir_slots: freed.dir_slots,
            indices: freed.indices.len(),
        }
    }

    /// Every worker block in use (live or judged dead), judged at `now` like
    /// [`Writer::reclaim`] does (so it may mark stale workers dead).
    pub fn workers(&mut self, now: Tick) -> Vec<WorkerStatus> {
        let mut out = Vec::new();
        self.scan(now, |index, b, state, age| {
            let r = Ordering::Relaxed;
            out.push(WorkerStatus {
                index,
                state,
                pid: b.pid.load(r),
                ack: Generation(b.ack.load(Ordering::Acquire)),
                heartbeat: b.heartbeat.load(r),
                heartbeat_age: age,
                counters: WorkerCounters::read(b),
            });
        });
        out
    }

    /// Whether every live worker has acked `generation` (or a newer one) at `now`.
    pub fn all_acked(&mut self, generation: Generation, now: Tick) -> bool {
        generation <= self.ledger.generation() && self.scan(now, |_, _, _, _| {}).safe >= generation
    }

    /// Spins (yielding) until every live worker acked `generation`, reading time from `clock`,
    /// for at most `timeout`. A helper for tests, benches and start-up; logic should call
    /// [`Writer::all_acked`] with its own time instead.
    ///
    /// # Errors
    ///
    /// [`AckTimeout`] with the lowest live ack when time runs out.
    pub fn wait_acked(
        &mut self,
        generation: Generation,
        timeout: Duration,
        mut clock: impl FnMut() -> Tick,
    ) -> Result<(), AckTimeout> {
        let start = clock();
        loop {
            let now = clock();
            let safe = self.scan(now, |_, _, _, _| {}).safe;
            if generation <= self.ledger.generation() && safe >= generation {
                return Ok(());
            }
            if now.saturating_since(start) > timeout {
                return Err(AckTimeout {
                    generation,
                    lowest: safe,
                });
            }
            std::thread::yield_now();
        }
    }

    /// Packets, bytes and connections of the service at directory index `index` (see
    /// [`Writer::service`]), summed over every worker block (live and dead). All zero for an
    /// unused or out-of-range index.
    #[must_use]
    pub fn service_totals(&self, index: u32) -> ServiceTotals {
        let mut t = ServiceTotals::default();
        let Ok(i) = usize::try_from(index) else {
            return t;
        };
        for w in 0..self.map.geometry().capacity.max_workers {
            if let Some(c) = self.map.service_counters(w).and_then(|c| c.get(i)) {
                t.add(c);
            }
        }
        t
    }

    /// Packets, bytes and connections of each published backend of the service at directory
    /// index `index`, summed over every worker block (live and dead), sorted by backend id.
    /// Empty for an unused index. Backends without a counter slot are left out.
    #[must_use]
    pub fn backend_totals(&self, index: u32) -> Vec<(BackendId, ServiceTotals)> {
        let Some(cs) = self.slots.get(&index) else {
            return Vec::new();
        };
        let mut out: Vec<(BackendId, ServiceTotals)> = cs
            .used
            .iter()
            .map(|(&id, &slot)| {
                let mut t = ServiceTotals::default();
                let i = u64::from(index) * u64::from(BACKEND_COUNTER_SLOTS) + u64::from(slot);
                for w in 0..self.map.geometry().capacity.max_workers {
                    if let Some(c) = self
                        .map
                        .backend_counters(w)
                        .and_then(|c| c.get(usize::try_from(i).ok()?))
                    {
                        t.add(c);
                    }
                }
                (id, t)
            })
            .collect();
        out.sort_unstable_by_key(|p| p.0);
        out
    }

    /// One pass over the worker blocks: judges live ones at `now`, marks stale ones dead, and
    /// returns the lowest ack among the live (the published generation when none is).
    fn scan(
        &mut self,
        now: Tick,
        mut each: impl FnMut(u32, &WorkerBlock, WorkerState, Duration),
    ) -> Scan {
        let mut scan = Scan {
            safe: self.ledger.generation(),
            live: 0,
            newly_dead: 0,
        };
        for i in 0..self.map.geometry().capacity.max_workers {
            let Some(b) = self.map.worker(i) else { break };
            let slot = usize::try_from(i).unwrap_or(usize::MAX);
            let owner = b.owner.load(Ordering::SeqCst);
            let (incarnation, state) = unpack_owner(owner);
            if state != OWNER_LIVE {
                self.liveness.forget(slot);
                if state == OWNER_DEAD {
                    each(i, b, WorkerState::Dead, Duration::ZERO);
                }
                continue;
            }
            let heartbeat = b.heartbeat.load(Ordering::Relaxed);
            match self.liveness.observe(slot, owner, heartbeat, now) {
                Verdict::Stale { age } => {
                    let dead = pack_owner(incarnation, OWNER_DEAD);
                    if b.owner
                        .compare_exchange(owner, dead, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                    {
                        tracing::warn!(
                            worker = i,
                            ?age,
                            "worker heartbeat stale; no longer waiting for its acks"
                        );
                        self.liveness.forget(slot);
                        scan.newly_dead += 1;
                        each(i, b, WorkerState::Dead, age);
                        continue;
                    }
                    // It changed under us (re-claimed or released): wait for it this time.
                    scan.safe = scan.safe.min(Generation(b.ack.load(Ordering::Acquire)));
                    scan.live += 1;
                    each(i, b, WorkerState::Live, age);
                }
                Verdict::Fresh { age } => {
                    // Acquire pairs with the worker's release store of its ack: everything it
                    // read from older generations happened before the writes we do next.
                    scan.safe = scan.safe.min(Generation(b.ack.load(Ordering::Acquire)));
                    scan.live += 1;
                    each(i, b, WorkerState::Live, age);
                }
            }
        }
        scan
    }
}

/// The directory entry (without offsets) for an upsert, after checking it.
fn entry_for(s: &ServiceSpec<'_>) -> Result<ServiceEntry, PublishError> {
    let n = s.backends.len();
    if n != s.table.backend_order().len() {
        return Err(PublishError::BackendsMismatch {
            key: s.key,
            backends: n,
            table: s.table.backend_order().len(),
        });
    }
    let n_backends = u32::try_from(n).ok().filter(|&n| n <= MAX_BACKENDS).ok_or(
        PublishError::TooManyBackends {
            key: s.key,
            count: n,
        },
    )?;
    let flags = match s.affinity {
        Affinity::None => 0,
        Affinity::ClientIp => SERVICE_CLIENT_AFFINITY,
    };
    let mut e = ServiceEntry {
        mode: s.mode as u8,
        flags,
        service_id: s.id.0,
        table_size: s.table.size().get(),
        n_backends,
        ..ServiceEntry::default()
    };
    s.key.store(&mut e);
    Ok(e)
}

/// Fills a fresh block: backends in Maglev slot order, then the table, then zero padding.
fn write_block(
    map: &mut Mapping,
    block: Block,
    s: &ServiceSpec<'_>,
    counter_slots: &[u16],
) -> Result<(), PublishError> {
    let bytes = map
        .arena_block_mut(block)
        .map_err(|_| PublishError::Region("arena block out of range"))?;
    let backends_len = usize::try_from(BACKEND_ENTRY_SIZE)
        .ok()
        .and_then(|b| b.checked_mul(s.backends.len()))
        .ok_or(PublishError::Region("block too small"))?;
    let (dst_backends, rest) = bytes
        .split_at_mut_checked(backends_len)
        .ok_or(PublishError::Region("block too small"))?;
    for (dst, &i) in dst_backends
        .chunks_exact_mut(size_of::<BackendEntry>())
        .zip(s.table.backend_order())
    {
        let b = s.backends.get(i).ok_or(PublishError::BackendsMismatch {
            key: s.key,
            backends: s.backends.len(),
            table: s.table.backend_order().len(),
        })?;
        let mut e = BackendEntry::new(b);
        e.counter_slot = counter_slots.get(i).copied().unwrap_or(NO_COUNTER_SLOT);
        dst.copy_from_slice(e.as_bytes());
    }
    let table = s.table.as_slice().as_bytes();
    let (dst_table, pad) = rest
        .split_at_mut_checked(table.len())
        .ok_or(PublishError::Region("block too small"))?;
    dst_table.copy_from_slice(table);
    pad.fill(0);
    Ok(())
}
