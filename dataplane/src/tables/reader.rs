//! The dataplane side: [`Tables`] maps a region and registers workers; a [`Worker`] checks
//! the published generation once per burst, switches to it, acks it, and answers lookups from
//! its own [`ServiceView`]s. See the [module docs](super) for the protocol.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hashbrown::HashTable;

use super::bump;
use super::layout::{
    Affinity, BACKEND_COUNTER_SLOTS, BackendCounters, BackendEntry, BackendId, Capacity,
    Generation, Header, MAX_BACKENDS, MAX_TABLE_SIZE, Mode, OWNER_DEAD, OWNER_FREE, OWNER_LIVE,
    ServiceCounters, ServiceEntry, ServiceId, ServiceKey, WorkerBlock, pack_owner, unpack_owner,
    unpack_published,
};
use crate::flow::folded_multiply;
use crate::io::shm::{Backing, Mapping, Shared, ShmError};
use sluice_hugepages::Region;

/// A service key as the per-worker index stores it: the VIP's 16 bytes as two words (an
/// IPv4 VIP as its 32 bits, the high word zero) and `port << 16 | proto << 8 | family`.
/// Built from a packet's fields in registers, never read back from a freshly stored key
/// (whose fields, stored one by one and loaded as words, would cost a store-forwarding stall
/// per packet).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Packed {
    lo: u64,
    hi: u64,
    meta: u32,
}

impl Packed {
    #[inline]
    fn new(vip: IpAddr, port: u16, proto: u8) -> Self {
        let (family, bits) = match vip {
            IpAddr::V4(a) => (4u8, u128::from(a.to_bits())),
            IpAddr::V6(a) => (6u8, a.to_bits()),
        };
        #[allow(clippy::cast_possible_truncation, reason = "the low word, on purpose")]
        let lo = bits as u64;
        #[allow(
            clippy::cast_possible_truncation,
            reason = "bits >> 64 fits in 64 bits"
        )]
        let hi = (bits >> 64) as u64;
        Self {
            lo,
            hi,
            meta: u32::from(port) << 16 | u32::from(proto) << 8 | u32::from(family),
        }
    }

    /// Two folded 64×64→128-bit multiplies with fixed odd constants (digits of π).
    #[inline]
    fn hash(&self) -> u64 {
        const K: [u64; 3] = [
            0x243f_6a88_85a3_08d3,
            0x1319_8a2e_0370_7345,
            0xa409_3822_299f_31d1,
        ];
        let h = folded_multiply(self.lo ^ K[0], self.hi ^ K[1]);
        folded_multiply(h ^ u64::from(self.meta) ^ K[2], K[0])
    }

    /// The bucket of the index's front ([`Front`]) with `shift` = 64 − log2(buckets): the
    /// top bits of one folded multiply of the key's words (`meta` spread over the high
    /// word). Half the cost of [`Packed::hash`]. A plain multiply (Fibonacci hashing) put a
    /// test set of mixed-family keys into a third fewer buckets than a random function
    /// would.
    #[inline(always)]
    fn front_bucket(&self, shift: u32) -> usize {
        const K: [u64; 2] = [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7345];
        let meta = u64::from(self.meta);
        let h = folded_multiply(self.lo ^ K[0], self.hi ^ (meta << 32 | meta) ^ K[1]);
        #[allow(
            clippy::cast_possible_truncation,
            reason = "shift >= 64 - MAX_BITS: the result has at most 15 bits"
        )]
        let b = (h >> shift) as usize;
        b
    }
}

/// One slot of a [`Front`]: a key and its position. Empty when `key.meta` is 0 (no key has
/// family 0).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FrontSlot {
    key: Packed,
    pos: u32,
}

/// Two [`FrontSlot`]s in one cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Bucket([FrontSlot; 2]);

const _: () = assert!(size_of::<Bucket>() == 64);

impl FrontSlot {
    const EMPTY: Self = Self {
        key: Packed {
            lo: 0,
            hi: 0,
            meta: 0,
        },
        pos: 0,
    };
}

/// The front of a [`ServiceIndex`]: a direct-mapped cache of its keys in buckets of two
/// slots (one cache line), chosen by one multiply ([`Packed::front_bucket`]), at least two
/// buckets per key (so that a key finds its bucket full rarely: 1 % for random keys, 3 % in
/// the test set). A lookup reads one line and compares; a key whose bucket was full when it
/// came is found by the hashbrown table behind. The table is the truth: every key in the
/// front is in it with the same position.
#[derive(Clone, Debug)]
struct Front {
    buckets: Box<[Bucket]>,
    /// 64 − log2(buckets).
    shift: u32,
}

impl Front {
    /// Buckets are at most 2^15 (2 MiB): a larger index keeps its overflow in the table.
    const MAX_BITS: u32 = 15;

    fn with_bits(bits: u32) -> Self {
        Self {
            buckets: vec![Bucket([FrontSlot::EMPTY; 2]); 1 << bits].into_boxed_slice(),
            shift: 64 - bits,
        }
    }

    fn buckets(&self) -> usize {
        self.buckets.len()
    }

    #[inline(always)]
    fn get(&self, p: &Packed) -> Option<u32> {
        let Bucket(pair) = self.buckets.get(p.front_bucket(self.shift))?;
        pair.iter().find(|s| s.key == *p).map(|s| s.pos)
    }

    /// `p`'s bucket's slots.
    fn pair_mut(&mut self, p: &Packed) -> Option<&mut [FrontSlot; 2]> {
        let i = p.front_bucket(self.shift);
        self.buckets.get_mut(i).map(|b| &mut b.0)
    }

    /// Puts `p` at `pos`: in its slot if it has one, else in a free slot of its bucket,
    /// else nowhere (the table has it).
    fn put(&mut self, p: Packed, pos: u32) {
        let Some(pair) = self.pair_mut(&p) else {
            return;
        };
        if let Some(s) = pair.iter_mut().find(|s| s.key == p) {
            s.pos = pos;
        } else if let Some(s) = pair.iter_mut().find(|s| s.key.meta == 0) {
            *s = FrontSlot { key: p, pos };
        }
    }

    fn remove(&mut self, p: &Packed) {
        if let Some(s) = self
            .pair_mut(p)
            .and_then(|pair| pair.iter_mut().find(|s| s.key == *p))
        {
            *s = FrontSlot::EMPTY;
        }
    }

    fn clear(&mut self) {
        self.buckets.fill(Bucket([FrontSlot::EMPTY; 2]));
    }
}

impl Default for Front {
    fn default() -> Self {
        Self::with_bits(4)
    }
}

/// The per-worker service index, `(VIP, port, protocol)` → position, used by [`Worker`] and
/// [`StaticServices`](crate::pipeline::StaticServices): a hashbrown table of packed keys
/// ([`Packed`]) under a two-multiply hash, looked up once per packet straight from the
/// packet's fields ([`ServiceIndex::get_parts`]), behind a direct-mapped front ([`Front`])
/// that answers most lookups with one multiply and one cache line.
///
/// Why the front: the hashbrown probe (two multiplies, control-byte group match, compare)
/// cost 4 ns of a 41 ns packet (bench/RESULTS.md, "Pipeline", seventh pass).
///
/// Why not a `HashMap<ServiceKey, u32, ahash::RandomState>` (what it replaced): ahash's
/// portable fallback (no `-C target-cpu`, so no AES) plus a key stored field by field and
/// hashed as words cost about 20 ns a packet on the dev machine (bench/RESULTS.md,
/// "Pipeline"). Hash flooding is not a concern: the index holds control's keys only, so no
/// packet can lengthen a probe beyond how control's own keys collide; the fixed constants
/// keep runs reproducible (STYLE rule 18). Every [`ServiceKey`] has family 4 or 6 (its
/// constructors and the directory's validation see to that), so `(vip, port, proto)` names
/// it exactly.
#[derive(Clone, Default)]
pub(crate) struct ServiceIndex {
    table: HashTable<(Packed, u32)>,
    front: Front,
}

impl fmt::Debug for ServiceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceIndex")
            .field("len", &self.table.len())
            .finish_non_exhaustive()
    }
}

impl ServiceIndex {
    #[inline]
    fn packed(key: &ServiceKey) -> Packed {
        Packed::new(key.vip(), key.port(), key.proto())
    }

    /// The position of `key`.
    #[inline]
    pub(crate) fn get(&self, key: &ServiceKey) -> Option<u32> {
        let p = Self::packed(key);
        self.find(&p)
    }

    /// The position of the key `vip:port/proto`, computed from those values (the packet
    /// path, inlined into it: as a call it cost 4 ns a packet).
    #[inline(always)]
    pub(crate) fn get_parts(&self, vip: IpAddr, port: u16, proto: u8) -> Option<u32> {
        self.find(&Packed::new(vip, port, proto))
    }

    #[inline(always)]
    fn find(&self, p: &Packed) -> Option<u32> {
        if let Some(pos) = self.front.get(p) {
            return Some(pos);
        }
        self.find_in_table(p)
    }

    // Out of line: most lookups end in the front.
    #[inline(never)]
    fn find_in_table(&self, p: &Packed) -> Option<u32> {
        self.table.find(p.hash(), |(k, _)| k == p).map(|&(_, i)| i)
    }

    /// Whether `key` is held.
    pub(crate) fn contains_key(&self, key: &ServiceKey) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`'s position; returns the one it replaced.
    pub(crate) fn insert(&mut self, key: ServiceKey, pos: u32) -> Option<u32> {
        let p = Self::packed(&key);
        let old = match self
            .table
            .entry(p.hash(), |(k, _)| *k == p, |(k, _)| k.hash())
        {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                Some(std::mem::replace(&mut o.get_mut().1, pos))
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((p, pos));
                None
            }
        };
        if self.table.len() * 2 > self.front.buckets() && self.front.shift > 64 - Front::MAX_BITS {
            self.grow_front();
        } else {
            self.front.put(p, pos);
        }
        old
    }

    /// Grows the front to at least two buckets per key (up to [`Front::MAX_BITS`]) and
    /// refills it from the table.
    #[cold]
    fn grow_front(&mut self) {
        let want = (self.table.len() * 2).next_power_of_two().trailing_zeros();
        let mut front = Front::with_bits(want.clamp(64 - self.front.shift + 1, Front::MAX_BITS));
        for &(p, pos) in &self.table {
            front.put(p, pos);
        }
        self.front = front;
    }

    /// Removes `key`; returns its position.
    pub(crate) fn remove(&mut self, key: &ServiceKey) -> Option<u32> {
        let p = Self::packed(key);
        let occ = self.table.find_entry(p.hash(), |(k, _)| *k == p).ok()?;
        self.front.remove(&p);
        Some(occ.remove().0.1)
    }

    /// Keys held.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no key is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Removes every key (keeps the memory).
    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.front.clear();
    }
}

type Index = ServiceIndex;

/// A mapped table region, validated; registers [`Worker`]s.
#[derive(Debug, Clone)]
pub struct Tables {
    map: Arc<Mapping>,
}

// === impl Tables ===

impl Tables {
    /// Maps region `name`, searching every backing (hugetlbfs first, then `/dev/shm`).
    ///
    /// # Errors
    ///
    /// See [`Tables::map_with`].
    pub fn map(name: &str) -> Result<Self, ShmError> {
        Self::map_with(name, Backing::Auto)
    }

    /// Maps region `name` in the places `backing` allows and checks its header.
    ///
    /// # Errors
    ///
    /// [`ShmError::Region`] (`NotFound`, …), [`ShmError::NotInitialized`] (retry),
    /// [`ShmError::BadMagic`], [`ShmError::AbiMismatch`] (a region of another format: refused),
    /// [`ShmError::SizeMismatch`], [`ShmError::Capacity`].
    pub fn map_with(name: &str, backing: Backing) -> Result<Self, ShmError> {
        let region = Region::open_with(name, backing)?;
        Ok(Self {
            map: Arc::new(Mapping::validate(region)?),
        })
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

    /// The published generation right now.
    #[must_use]
    pub fn published(&self) -> Generation {
        unpack_published(self.map.header().published.load(Ordering::Acquire)).0
    }

    /// Control's heartbeat counter (it moves while control publishes or reclaims).
    #[must_use]
    pub fn control_heartbeat(&self) -> u64 {
        self.map.header().control_heartbeat.load(Ordering::Relaxed)
    }

    /// How many times a writer created or attached to the region.
    #[must_use]
    pub fn writer_epoch(&self) -> u64 {
        self.map.header().writer_epoch.load(Ordering::Relaxed)
    }

    /// Registers a worker in the first free (or dead) block, switched to the published
    /// generation before it returns.
    ///
    /// # Errors
    ///
    /// [`ShmError::NoFreeWorkerBlock`], or the errors of the first switch
    /// ([`ShmError::Corrupt`]).
    pub fn register(&self) -> Result<Worker, ShmError> {
        for i in 0..self.capacity().max_workers {
            match self.claim(i, false) {
                Err(ShmError::WorkerBusy { .. }) => {}
                other => return other,
            }
        }
        Err(ShmError::NoFreeWorkerBlock {
            max_workers: self.capacity().max_workers,
        })
    }

    /// Registers a worker in block `index`. With `takeover`, a block another worker still
    /// holds is taken (a restarted dataplane reclaiming its workers' blocks before control
    /// has judged the old ones dead); the old holder, if it still runs, gets
    /// [`ShmError::Evicted`] at its next check.
    ///
    /// # Errors
    ///
    /// [`ShmError::WorkerBusy`] when `index` is out of range or, without `takeover`, held by a
    /// live worker; otherwise as [`Tables::register`].
    pub fn register_at(&self, index: u32, takeover: bool) -> Result<Worker, ShmError> {
        self.claim(index, takeover)
    }

    fn claim(&self, index: u32, takeover: bool) -> Result<Worker, ShmError> {
        let busy = ShmError::WorkerBusy { index };
        let block = Mapping::shared_worker(&self.map, index).ok_or(busy)?;
        let counters =
            Mapping::shared_counters(&self.map, index).ok_or(ShmError::WorkerBusy { index })?;
        let backend_counters = Mapping::shared_backend_counters(&self.map, index)
            .ok_or(ShmError::WorkerBusy { index })?;
        let current = block.owner.load(Ordering::SeqCst);
        let (incarnation, state) = unpack_owner(current);
        if state == OWNER_LIVE && !takeover {
            return Err(ShmError::WorkerBusy { index });
        }
        let owner = pack_owner(incarnation.wrapping_add(1), OWNER_LIVE);
        block
            .owner
            .compare_exchange(current, owner, Ordering::SeqCst, Ordering::SeqCst)
            .map_err(|_| ShmError::WorkerBusy { index })?;
        block
            .pid
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        let mut worker = Worker {
            header: Mapping::shared_header(&self.map),
            block,
            counters,
            backend_counters,
            map: Arc::clone(&self.map),
            index,
            owner,
            seen: 0,
            generation: Generation::NONE,
            dir_slot: 0,
            views: Vec::new(),
            spare: Vec::new(),
            by_key: Index::default(),
            scratch: Vec::new(),
        };
        worker.heartbeat();
        // Ordering: this SeqCst load follows the SeqCst claim above; it pairs with the SeqCst
        // publish store and owner loads in `Writer` (see `Writer::publish`), so either control
        // waits for this block's ack or this load sees every generation control may reclaim
        // behind.
        let word = worker.header.published.load(Ordering::SeqCst);
        worker.switch_to(word)?;
        Ok(worker)
    }
}

/// One service as a worker sees it: validated against the arena at switch time, so every
/// accessor is bounds-checked and panic-free.
///
/// Only ever lent out by a [`Worker`] (`&ServiceView`), never owned or cloned by callers: the
/// memory it points at stays immutable only until the worker acks a newer generation, which
/// [`Worker::check`] does under `&mut self`, when no such borrow can be alive.
pub struct ServiceView {
    entry: ServiceEntry,
    key: ServiceKey,
    mode: Mode,
    index: u32,
    m: u64,
    backends: Shared<[BackendEntry]>,
    table: Shared<[u16]>,
    /// `(backend id, counter slot)` sorted by id, built at switch time: the per-packet
    /// id → slot lookup is a binary search, no scan of the 64-byte entries.
    slots: Arc<[(u32, u16)]>,
}

impl fmt::Debug for ServiceView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceView")
            .field("index", &self.index)
            .field("entry", &self.entry)
            .finish()
    }
}

// === impl ServiceView ===

impl ServiceView {
    /// A second handle on the same view, for a worker that keeps an unchanged service across
    /// a switch. Deliberately not `Clone`: see the type docs.
    fn duplicate(&self) -> Self {
        Self {
            entry: self.entry,
            key: self.key,
            mode: self.mode,
            index: self.index,
            m: self.m,
            backends: self.backends.clone(),
            table: self.table.clone(),
            slots: Arc::clone(&self.slots),
        }
    }

    /// What packets match.
    #[inline]
    #[must_use]
    pub fn key(&self) -> &ServiceKey {
        &self.key
    }

    /// The stable service id.
    #[inline]
    #[must_use]
    pub fn id(&self) -> ServiceId {
        self.entry.id()
    }

    /// The forwarding mode.
    #[inline]
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The session affinity ([`ServiceEntry::affinity`]).
    #[inline]
    #[must_use]
    pub fn affinity(&self) -> Affinity {
        self.entry.affinity()
    }

    /// The generation that wrote this service's tables.
    #[inline]
    #[must_use]
    pub fn version(&self) -> Generation {
        self.entry.version()
    }

    /// The directory index: stable for the service's life; indexes per-service counters.
    #[inline]
    #[must_use]
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The raw directory entry.
    #[must_use]
    pub fn entry(&self) -> &ServiceEntry {
        &self.entry
    }

    /// The backends in Maglev slot order.
    #[inline]
    #[must_use]
    pub fn backends(&self) -> &[BackendEntry] {
        &self.backends
    }

    /// The counter slot of backend `id` ([`BackendEntry::counter_slot`]), `None` when the
    /// service has no such backend or it has no slot. `O(log n)`, no allocation.
    #[inline]
    #[must_use]
    pub fn counter_slot(&self, id: BackendId) -> Option<u16> {
        let i = self.slots.binary_search_by_key(&id.0, |p| p.0).ok()?;
        self.slots.get(i).map(|p| p.1)
    }

    /// The Maglev table: `M` backend slots (or `u16::MAX` when empty).
    #[inline]
    #[must_use]
    pub fn table(&self) -> &[u16] {
        &self.table
    }

    /// The backend for a flow hash: `backends[table[hash % M]]`, as
    /// [`MaglevTable::lookup`](crate::maglev::MaglevTable::lookup) computes the slot. `None`
    /// when the table is empty or (corrupt) names no backend.
    #[inline]
    #[must_use]
    pub fn lookup(&self, hash: u64) -> Option<&BackendEntry> {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "hash % M < M <= 655 373, which fits any usize"
        )]
        let i = (hash % self.m) as usize;
        let slot = *self.table().get(i)?;
        self.backends().get(usize::from(slot))
    }
}

fn view_for(map: &Arc<Mapping>, index: u32, e: &ServiceEntry) -> Result<ServiceView, &'static str> {
    let key = e.key().ok_or("unknown address family")?;
    let mode = e.mode().ok_or("unknown forwarding mode")?;
    if e.table_size == 0 || e.table_size > MAX_TABLE_SIZE {
        return Err("table size out of range");
    }
    if e.n_backends > MAX_BACKENDS {
        return Err("too many backends");
    }
    let backends = Mapping::arena_slice::<BackendEntry>(map, e.backends_offset, e.n_backends)
        .map_err(|_| "backends outside the arena")?;
    let table = Mapping::arena_slice::<u16>(map, e.table_offset, e.table_size)
        .map_err(|_| "table outside the arena")?;
    let mut slots: Vec<(u32, u16)> = backends
        .iter()
        .filter_map(|b| Some((b.backend_id, b.counter_slot()?)))
        .collect();
    slots.sort_unstable();
    Ok(ServiceView {
        slots: slots.into(),
        entry: *e,
        key,
        mode,
        index,
        m: u64::from(e.table_size),
        backends,
        table,
    })
}

/// One dataplane worker's handle: its block (ack, heartbeat, counters) and the tables of the
/// generation it acked. Not shared between threads: each worker registers its own.
pub struct Worker {
    header: Shared<Header>,
    block: Shared<WorkerBlock>,
    counters: Shared<[ServiceCounters]>,
    backend_counters: Shared<[BackendCounters]>,
    map: Arc<Mapping>,
    index: u32,
    owner: u64,
    /// The last published word handled (switched to, or refused as corrupt).
    seen: u64,
    generation: Generation,
    dir_slot: u32,
    /// Valid services, in directory-index order.
    views: Vec<ServiceView>,
    spare: Vec<ServiceView>,
    by_key: Index,
    scratch: Vec<ServiceEntry>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("generation", &self.generation)
            .field("services", &self.views.len())
            .finish_non_exhaustive()
    }
}

// === impl Worker ===

impl Worker {
    /// Once per burst: bumps the heartbeat and checks the published generation (one acquire
    /// load). When it moved, switches to it and acks it (returning it); otherwise `Ok(None)`.
    /// Also notices when control judged this worker dead, and re-synchronises.
    ///
    /// # Errors
    ///
    /// [`ShmError::Corrupt`] when the published directory is inconsistent (the worker keeps
    /// its previous tables and does not ack; it retries at the next publication), or
    /// [`ShmError::Evicted`] when its block was taken over (its tables are dropped; register
    /// again).
    #[inline]
    pub fn check(&mut self) -> Result<Option<Generation>, ShmError> {
        self.heartbeat();
        let word = self.header.published.load(Ordering::Acquire);
        if word == self.seen && self.block.owner.load(Ordering::Relaxed) == self.owner {
            return Ok(None);
        }
        self.switch_to(word)
    }

    /// Bumps the heartbeat ([`Worker::check`] does it too).
    #[inline]
    pub fn heartbeat(&self) {
        bump(&self.block.heartbeat, 1);
    }

    /// The generation whose tables this worker uses (and has acked).
    #[inline]
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// This worker's block index.
    #[must_use]
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The service for a packet's `(VIP, port, proto)`.
    #[inline]
    #[must_use]
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceView> {
        let i = self.by_key.get(key)?;
        self.views.get(usize::try_from(i).ok()?)
    }

    /// [`Worker::service`] for the key `vip:port/proto` given as values (the packet path:
    /// no key is built in memory).
    #[inline(always)]
    #[must_use]
    pub(crate) fn service_by_parts(
        &self,
        vip: IpAddr,
        port: u16,
        proto: u8,
    ) -> Option<&ServiceView> {
        let i = self.by_key.get_parts(vip, port, proto)?;
        self.views.get(usize::try_from(i).ok()?)
    }

    /// Every valid service of the current generation, in directory-index order.
    #[must_use]
    pub fn services(&self) -> &[ServiceView] {
        &self.views
    }

    /// This worker's block: its counters for the worker loop to bump with
    /// [`bump`](super::bump) (single writer, `Relaxed`).
    #[inline]
    #[must_use]
    pub fn block(&self) -> &WorkerBlock {
        &self.block
    }

    /// This worker's per-service counters, indexed by [`ServiceView::index`].
    #[inline]
    #[must_use]
    pub fn service_counters(&self) -> &[ServiceCounters] {
        &self.counters
    }

    /// Counts one forwarded packet of `bytes` bytes for `view`'s service, and one connection
    /// when `new_flow` ([`ServiceCounters::record`]).
    #[inline]
    pub fn count(&self, view: &ServiceView, bytes: u64, new_flow: bool) {
        self.count_service(view.index, bytes, new_flow);
    }

    /// Counts one forwarded packet for the service at directory index `service_index` and,
    /// when `backend` is given, for that backend: what the worker loop does with each
    /// [`Verdict::Forward { service, backend, bytes, new_flow }`](crate::pipeline::Verdict::Forward).
    /// `new_flow` also counts a connection on both. No allocation, no hashing: an index for
    /// the service, [`Worker::count_backend`]'s two binary searches for the backend. Unknown
    /// services and backends are ignored.
    #[inline]
    pub fn count_forward(
        &self,
        service_index: u32,
        backend: Option<BackendId>,
        bytes: u64,
        new_flow: bool,
    ) {
        self.count_service(service_index, bytes, new_flow);
        if let Some(id) = backend {
            self.count_backend(service_index, id, bytes, new_flow);
        }
    }

    #[inline]
    fn count_service(&self, service_index: u32, bytes: u64, new_flow: bool) {
        if let Some(c) = usize::try_from(service_index)
            .ok()
            .and_then(|i| self.counters.get(i))
        {
            c.record(bytes, new_flow);
        }
    }

    /// This worker's per-backend counters, indexed by
    /// `service index · BACKEND_COUNTER_SLOTS + counter slot`.
    #[inline]
    #[must_use]
    pub fn backend_counters(&self) -> &[BackendCounters] {
        &self.backend_counters
    }

    /// Counts one forwarded packet of `bytes` bytes, and one connection when `new_flow`, for
    /// backend `backend` of the service at directory index `service_index` (what the
    /// pipeline's `Verdict::Forward` carries). Cost: a binary search of the views by index and
    /// one of the service's backends by id, then `Relaxed` load+stores into one cache line; no
    /// allocation. Unknown services or backends, and backends without a counter slot, are
    /// ignored.
    #[inline]
    pub fn count_backend(
        &self,
        service_index: u32,
        backend: BackendId,
        bytes: u64,
        new_flow: bool,
    ) {
        let Ok(v) = self.views.binary_search_by_key(&service_index, |v| v.index) else {
            return;
        };
        let Some(slot) = self.views.get(v).and_then(|v| v.counter_slot(backend)) else {
            return;
        };
        let i = u64::from(service_index) * u64::from(BACKEND_COUNTER_SLOTS) + u64::from(slot);
        if let Some(c) = usize::try_from(i)
            .ok()
            .and_then(|i| self.backend_counters.get(i))
        {
            c.record(bytes, new_flow);
        }
    }

    /// Re-reads the directory slot in use and compares it with what this worker copied at
    /// its switch: `true` when the slot still holds this generation, unchanged. A check for
    /// tests and debugging (it allocates): it is `false` only if control broke the protocol.
    #[must_use]
    pub fn revalidate(&self) -> bool {
        if self.generation == Generation::NONE {
            return true;
        }
        let mut now = Vec::new();
        let Ok(head) = self.map.read_dir(self.dir_slot, &mut now) else {
            return false;
        };
        head.generation == self.generation.get()
            && self.views.iter().all(|v| {
                usize::try_from(v.index)
                    .ok()
                    .and_then(|i| now.get(i))
                    .is_some_and(|e| *e == v.entry)
            })
    }

    /// The slow path of [`Worker::check`]: re-claim after eviction if needed, read the
    /// published directory, build views, ack.
    #[cold]
    #[inline(never)]
    fn switch_to(&mut self, mut word: u64) -> Result<Option<Generation>, ShmError> {
        if self.block.owner.load(Ordering::SeqCst) != self.owner {
            self.recover()?;
            word = self.header.published.load(Ordering::SeqCst);
        }
        self.seen = word;
        let (generation, slot) = unpack_published(word);
        let skipped = match self.build(generation, slot) {
            Ok(skipped) => skipped,
            Err(e) => {
                bump(&self.block.table_errors, 1);
                tracing::warn!(worker = self.index, %generation, error = %e, "refusing table generation");
                return Err(e);
            }
        };
        self.generation = generation;
        self.dir_slot = slot;
        bump(&self.block.table_switches, 1);
        if skipped > 0 {
            bump(&self.block.table_errors, skipped);
        }
        // Ordering: every view of the previous generation was dropped in `build` (and
        // `&mut self` means no borrow of one is alive), so this worker reads nothing older
        // than `generation` from here on. Release publishes that to control's acquire load:
        // it may now reuse what only older generations referenced.
        self.block.ack.store(generation.get(), Ordering::Release);
        Ok(Some(generation))
    }

    /// Control judged this worker dead (or another worker took the block). Drops the views —
    /// control may already be rewriting what they point at — and re-claims the block if it is
    /// still this worker's, marked dead.
    fn recover(&mut self) -> Result<(), ShmError> {
        self.views.clear();
        self.by_key.clear();
        self.generation = Generation::NONE;
        let current = self.block.owner.load(Ordering::SeqCst);
        let (incarnation, state) = unpack_owner(current);
        if incarnation == unpack_owner(self.owner).0 && state == OWNER_DEAD {
            let owner = pack_owner(incarnation.wrapping_add(1), OWNER_LIVE);
            if self
                .block
                .owner
                .compare_exchange(current, owner, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                tracing::warn!(
                    worker = self.index,
                    "control judged this worker dead; re-claimed its block"
                );
                self.owner = owner;
                return Ok(());
            }
        }
        Err(ShmError::Evicted { index: self.index })
    }

    /// Reads directory slot `slot` for `generation` and rebuilds the views: unchanged entries
    /// keep their view, changed ones are validated against the arena, invalid ones are skipped
    /// (and counted). Returns how many were skipped.
    fn build(&mut self, generation: Generation, slot: u32) -> Result<u64, ShmError> {
        let head = self.map.read_dir(slot, &mut self.scratch)?;
        if head.generation != generation.get() {
            return Err(ShmError::Corrupt {
                what: "published directory slot holds another generation",
            });
        }
        self.spare.clear();
        self.by_key.clear();
        let mut skipped = 0;
        let mut old = self.views.iter().peekable();
        for (index, e) in (0u32..).zip(&self.scratch) {
            if !e.in_use() {
                continue;
            }
            while old.next_if(|v| v.index < index).is_some() {}
            let view = match old.peek() {
                Some(v) if v.index == index && v.entry == *e => Ok(v.duplicate()),
                _ => view_for(&self.map, index, e),
            };
            match view {
                Ok(v) if !self.by_key.contains_key(&v.key) => {
                    let pos = u32::try_from(self.spare.len()).unwrap_or(u32::MAX);
                    self.by_key.insert(v.key, pos);
                    self.spare.push(v);
                }
                Ok(v) => {
                    skipped += 1;
                    tracing::warn!(worker = self.index, key = ?v.key, "duplicate service key skipped");
                }
                Err(what) => {
                    skipped += 1;
                    tracing::warn!(
                        worker = self.index,
                        index,
                        what,
                        "invalid service entry skipped"
                    );
                }
            }
        }
        std::mem::swap(&mut self.views, &mut self.spare);
        // Drop the previous generation's views before the caller acks.
        self.spare.clear();
        Ok(skipped)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.views.clear();
        self.spare.clear();
        let (incarnation, _) = unpack_owner(self.owner);
        let free = pack_owner(incarnation, OWNER_FREE);
        for from in [self.owner, pack_owner(incarnation, OWNER_DEAD)] {
            if self
                .block
                .owner
                .compare_exchange(from, free, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    /// Key `i` of a pool mixing families, ports and protocols.
    fn key(i: u32) -> ServiceKey {
        let port = u16::try_from(80 + i % 7).unwrap();
        let proto = if i.is_multiple_of(3) { 17 } else { 6 };
        if i % 4 == 3 {
            ServiceKey::from_v6(
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1 + u16::try_from(i).unwrap()).octets(),
                port,
                proto,
            )
        } else {
            ServiceKey::from_v4(Ipv4Addr::from_bits(0xc633_6400 + i).octets(), port, proto)
        }
    }

    fn get(ix: &ServiceIndex, k: &ServiceKey) -> Option<u32> {
        ix.get_parts(k.vip(), k.port(), k.proto())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u32),
        Remove(u32),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u32..400, any::<u32>()).prop_map(|(k, p)| Op::Insert(k, p)),
            3 => (0u32..400).prop_map(Op::Remove),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// The index with its front answers as a plain map would, through growth, removals
        /// and clears, for keys held and keys not held.
        #[test]
        fn index_is_a_map(ops in proptest::collection::vec(op(), 1..600)) {
            let mut ix = ServiceIndex::default();
            let mut model: HashMap<u32, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, p) => {
                        prop_assert_eq!(ix.insert(key(k), p), model.insert(k, p));
                    }
                    Op::Remove(k) => prop_assert_eq!(ix.remove(&key(k)), model.remove(&k)),
                    Op::Clear => {
                        ix.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(ix.len(), model.len());
            }
            for k in 0..400 {
                prop_assert_eq!(get(&ix, &key(k)), model.get(&k).copied(), "key {}", k);
                prop_assert_eq!(ix.get(&key(k)), model.get(&k).copied(), "key {}", k);
            }
        }
    }

    /// The front holds nearly every key (buckets ≥ keys, two slots a bucket), so lookups
    /// rarely reach the table; it stops growing at `MAX_BITS`, and keys past it are still found.
    #[test]
    fn front_holds_most_keys_and_stops_growing() {
        let mut ix = ServiceIndex::default();
        for i in 0..1000 {
            ix.insert(key(i), i);
        }
        let held = (0..1000)
            .filter(|&i| ix.front.get(&ServiceIndex::packed(&key(i))) == Some(i))
            .count();
        assert!(held >= 950, "front holds {held} of 1000");
        // The pipeline bench's 64 services (one /26 of VIPs, port 80, TCP): all in front.
        let mut bench = ServiceIndex::default();
        let vip = |i: u32| {
            ServiceKey::from_v4(
                Ipv4Addr::new(198, 51, 100, u8::try_from(i).unwrap()).octets(),
                80,
                6,
            )
        };
        for i in 0..64 {
            bench.insert(vip(i), i);
        }
        let held = (0..64)
            .filter(|&i| bench.front.get(&ServiceIndex::packed(&vip(i))) == Some(i))
            .count();
        assert_eq!(held, 64);
        assert!(ix.front.buckets() >= 2000);

        let mut big = ServiceIndex::default();
        let n = (1u32 << Front::MAX_BITS) + 5000;
        for i in 0..n {
            let k = ServiceKey::from_v4(Ipv4Addr::from_bits(0x0a00_0000 + i).octets(), 443, 6);
            big.insert(k, i);
        }
        assert_eq!(big.front.buckets(), 1 << Front::MAX_BITS);
        for i in (0..n).step_by(97) {
            let k = ServiceKey::from_v4(Ipv4Addr::from_bits(0x0a00_0000 + i).octets(), 443, 6);
            assert_eq!(get(&big, &k), Some(i));
        }
    }
}
