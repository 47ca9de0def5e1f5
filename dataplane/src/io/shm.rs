//! The mapped-memory half of the shared table region: the only code that turns the region's
//! bytes into typed references. The format, the publication protocol and the safe writer and
//! reader built on this live in [`crate::tables`]; see its docs for the layout diagram.
//!
//! # Contract
//!
//! - A [`Mapping`] is a [`Region`] whose header was checked: magic, ABI version, struct sizes,
//!   and a [`Geometry`] that fits inside the mapped length. Every typed access after that is
//!   bounds- and alignment-checked against the geometry, so offsets read from the region
//!   (written by another process) can yield an error, never an access outside the mapping.
//! - Parts that several parties write at once ([`Header`], [`WorkerBlock`], [`ServiceCounters`])
//!   consist of atomics only and are handed out as shared references from `&self`.
//! - Parts that the publication protocol keeps immutable while they are read (directory slots
//!   and arena blocks of a published generation) are handed out as plain slices by
//!   crate-private functions only; [`crate::tables`] upholds the protocol. Writing them needs
//!   `&mut Mapping`, which only the writer holds.
//! - `Shared` keeps its mapping alive: a reader's table views stay valid however long the
//!   worker keeps them, even if every other handle to the region is gone.

use std::fmt;
use std::fs::{File, TryLockError};
use std::mem::size_of;
use std::ops::Deref;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use sluice_hugepages::Backing;
use sluice_hugepages::{HugepageError, Region};
use thiserror::Error;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::tables::alloc::Block;
use crate::tables::layout::{
    ABI_VERSION, BACKEND_COUNTER_SLOTS, BackendCounters, BackendEntry, Capacity, CapacityError,
    DirHeader, Geometry, Header, MAGIC, ServiceCounters, ServiceEntry, WorkerBlock,
};

/// Why a table region could not be created, opened, or read.
#[derive(Debug, Error)]
pub enum ShmError {
    /// The region could not be created, opened or mapped.
    #[error("shared table region: {0}")]
    Region(#[from] HugepageError),
    /// The region exists but its creator has not finished writing the header (the magic is
    /// still 0). Retry shortly.
    #[error("shared table region {name:?} is not initialised yet")]
    NotInitialized {
        /// The region name.
        name: String,
    },
    /// The region does not start with [`MAGIC`]: it is not a Sluice table region.
    #[error("bad magic {0:#018x} in shared table region (expected {MAGIC:#018x})")]
    BadMagic(u64),
    /// The region was made by a build with another table format. Run control and dataplane
    /// from the same release, or let control re-create the region.
    #[error(
        "shared table region has ABI version {found}, this build reads version {expected}; refusing it"
    )]
    AbiMismatch {
        /// The version in the region.
        found: u32,
        /// The version this build speaks ([`ABI_VERSION`]).
        expected: u32,
    },
    /// A size or offset in the header disagrees with this build's layout or with the mapped
    /// length.
    #[error("shared table region {what} is {found}, expected {expected}")]
    SizeMismatch {
        /// Which size: `"region"`, `"header"`, `"worker block"`, an offset name, ….
        what: &'static str,
        /// The value found.
        found: u64,
        /// The value this build expects.
        expected: u64,
    },
    /// The capacity asked for (or recorded in a header) is out of range.
    #[error("invalid table region capacity: {0}")]
    Capacity(#[from] CapacityError),
    /// Another writer (control process) holds the region's lock.
    #[error("another writer holds table region {path}")]
    WriterBusy {
        /// The region file.
        path: PathBuf,
    },
    /// The region file could not be locked.
    #[error("cannot lock table region {path}")]
    Lock {
        /// The region file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Every worker block is taken by a live worker.
    #[error("all {max_workers} worker blocks of the table region are in use")]
    NoFreeWorkerBlock {
        /// The region's worker capacity.
        max_workers: u32,
    },
    /// The requested worker block is out of range or held by a live worker.
    #[error("worker block {index} is not available")]
    WorkerBusy {
        /// The block index.
        index: u32,
    },
    /// Control judged this worker dead and another worker has taken its block since. The
    /// worker dropped its tables; register again.
    #[error("worker block {index} was taken over after this worker was judged dead")]
    Evicted {
        /// The block index.
        index: u32,
    },
    /// The published directory or an offset in it is inconsistent. The reader keeps its
    /// previous tables and does not ack the broken generation.
    #[error("shared table region is corrupt: {what}")]
    Corrupt {
        /// What was wrong.
        what: &'static str,
    },
}

fn to_usize(x: u64) -> usize {
    // Only used on values already checked against the mapped length (a usize), or where an
    // out-of-range value must fail a later bounds check: saturating keeps that true.
    usize::try_from(x).unwrap_or(usize::MAX)
}

fn mismatch(what: &'static str, found: u64, expected: u64) -> ShmError {
    ShmError::SizeMismatch {
        what,
        found,
        expected,
    }
}

fn size_u32<T>() -> u32 {
    u32::try_from(size_of::<T>()).unwrap_or(u32::MAX)
}

/// A mapped, validated table region. See the module docs.
pub struct Mapping {
    region: Region,
    geo: Geometry,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("name", &self.region.name())
            .field("len", &self.region.len())
            .field("geometry", &self.geo)
            .finish()
    }
}

// === impl Mapping ===

impl Mapping {
    /// Writes a fresh header for `geo` into a newly created (zeroed) region, publishing
    /// generation 1 with an empty directory in slot 0. The magic is stored last, with release,
    /// so an early reader sees either [`ShmError::NotInitialized`] or a complete header.
    ///
    /// # Errors
    ///
    /// [`ShmError::SizeMismatch`] when the region is shorter than `geo.total`.
    pub(crate) fn initialize(region: Region, geo: Geometry) -> Result<Self, ShmError> {
        let len = region.len() as u64;
        if len < geo.total {
            return Err(mismatch("region", len, geo.total));
        }
        let first = DirHeader {
            generation: 1,
            ..DirHeader::default()
        };
        let mut this = Self { region, geo };
        this.write_dir(0, &first, &[])?;
        let h = this.header();
        let r = Ordering::Relaxed;
        h.abi_version.store(ABI_VERSION, r);
        h.layout_size.store(size_u32::<Header>(), r);
        h.region_len.store(geo.total, r);
        h.max_services.store(geo.capacity.max_services, r);
        h.max_workers.store(geo.capacity.max_workers, r);
        h.dir_slots.store(geo.capacity.dir_slots, r);
        h.worker_block_size.store(size_u32::<WorkerBlock>(), r);
        h.service_entry_size.store(size_u32::<ServiceEntry>(), r);
        h.backend_entry_size.store(size_u32::<BackendEntry>(), r);
        h.arena_len.store(geo.arena_len, r);
        h.workers_offset.store(geo.workers_offset, r);
        h.counters_offset.store(geo.counters_offset, r);
        h.counters_stride.store(geo.counters_stride, r);
        h.backend_counters_offset
            .store(geo.backend_counters_offset, r);
        h.backend_counters_stride
            .store(geo.backend_counters_stride, r);
        h.backend_counter_slots.store(BACKEND_COUNTER_SLOTS, r);
        h.counters_size.store(size_u32::<ServiceCounters>(), r);
        h.dir_offset.store(geo.dir_offset, r);
        h.dir_stride.store(geo.dir_stride, r);
        h.arena_offset.store(geo.arena_offset, r);
        h.published.store(
            crate::tables::layout::pack_published(crate::tables::Generation(1), 0),
            r,
        );
        // Ordering: everything above (and the directory slot) happens-before any reader that
        // loads this magic with acquire.
        h.magic.store(MAGIC, Ordering::Release);
        Ok(this)
    }

    /// Validates an opened region's header and derives its geometry.
    ///
    /// # Errors
    ///
    /// [`ShmError::NotInitialized`], [`ShmError::BadMagic`], [`ShmError::AbiMismatch`],
    /// [`ShmError::SizeMismatch`] or [`ShmError::Capacity`], checked in that order.
    pub(crate) fn validate(region: Region) -> Result<Self, ShmError> {
        let len = region.len() as u64;
        if len < size_of::<Header>() as u64 {
            return Err(mismatch("region", len, size_of::<Header>() as u64));
        }
        let this = Self {
            region,
            geo: Geometry::new(Capacity::default())?,
        };
        let h = this.header();
        let magic = h.magic.load(Ordering::Acquire);
        if magic == 0 {
            return Err(ShmError::NotInitialized {
                name: this.region.name().to_owned(),
            });
        }
        if magic != MAGIC {
            return Err(ShmError::BadMagic(magic));
        }
        let r = Ordering::Relaxed;
        let found = h.abi_version.load(r);
        if found != ABI_VERSION {
            return Err(ShmError::AbiMismatch {
                found,
                expected: ABI_VERSION,
            });
        }
        for (what, found, expected) in [
            ("header", h.layout_size.load(r), size_u32::<Header>()),
            (
                "worker block",
                h.worker_block_size.load(r),
                size_u32::<WorkerBlock>(),
            ),
            (
                "service entry",
                h.service_entry_size.load(r),
                size_u32::<ServiceEntry>(),
            ),
            (
                "backend entry",
                h.backend_entry_size.load(r),
                size_u32::<BackendEntry>(),
            ),
            (
                "backend counter slots",
                h.backend_counter_slots.load(r),
                BACKEND_COUNTER_SLOTS,
            ),
            (
                "service counters",
                h.counters_size.load(r),
                size_u32::<ServiceCounters>(),
            ),
        ] {
            if found != expected {
                return Err(mismatch(what, found.into(), expected.into()));
            }
        }
        let geo = Geometry::new(Capacity {
            max_services: h.max_services.load(r),
            max_workers: h.max_workers.load(r),
            dir_slots: h.dir_slots.load(r),
            arena_bytes: h.arena_len.load(r),
        })?;
        for (what, found, expected) in [
            ("arena length", h.arena_len.load(r), geo.arena_len),
            (
                "workers offset",
                h.workers_offset.load(r),
                geo.workers_offset,
            ),
            (
                "counters offset",
                h.counters_offset.load(r),
                geo.counters_offset,
            ),
            (
                "counters stride",
                h.counters_stride.load(r),
                geo.counters_stride,
            ),
            (
                "backend counters offset",
                h.backend_counters_offset.load(r),
                geo.backend_counters_offset,
            ),
            (
                "backend counters stride",
                h.backend_counters_stride.load(r),
                geo.backend_counters_stride,
            ),
            ("directory offset", h.dir_offset.load(r), geo.dir_offset),
            ("directory stride", h.dir_stride.load(r), geo.dir_stride),
            ("arena offset", h.arena_offset.load(r), geo.arena_offset),
            ("layout length", h.region_len.load(r), geo.total),
        ] {
            if found != expected {
                return Err(mismatch(what, found, expected));
            }
        }
        if len < geo.total {
            return Err(mismatch("region", len, geo.total));
        }
        Ok(Self {
            region: this.region,
            geo,
        })
    }

    /// The underlying region (name, backing, length).
    #[must_use]
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The validated geometry.
    #[must_use]
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// A typed reference to the atomics-only `T` at byte `offset`, or `None` when it does not
    /// fit the mapping or is misaligned.
    fn atomics_at<T: FromBytes + KnownLayout>(&self, offset: u64) -> Option<&T> {
        let offset = to_usize(offset);
        let end = offset.checked_add(size_of::<T>())?;
        if end > self.region.len() {
            return None;
        }
        let ptr = self.region.as_ptr().wrapping_add(offset);
        if !ptr.cast::<T>().is_aligned() {
            return None;
        }
        // SAFETY: `[offset, offset + size_of::<T>())` lies inside the live mapping (checked
        // above) and the pointer is aligned for `T` (checked above). `T: FromBytes` proves
        // every bit pattern is a valid `T`, and the callers only instantiate it with
        // atomics-only types (`Header`, `WorkerBlock`), so concurrent writes by other
        // processes go through `UnsafeCell` and a shared reference is sound. The reference
        // lives no longer than `&self`, which keeps the mapping.
        Some(unsafe { &*ptr.cast::<T>() })
    }

    /// The header.
    #[must_use]
    pub fn header(&self) -> &Header {
        // `validate`/`initialize` only build a `Mapping` whose length holds a header, and a
        // region starts page-aligned; the fallback is unreachable but keeps this panic-free.
        match self.atomics_at::<Header>(0) {
            Some(h) => h,
            None => unreachable!("mapping shorter than its header"),
        }
    }

    /// Worker block `i`, or `None` when `i ≥ max_workers`.
    #[must_use]
    pub fn worker(&self, i: u32) -> Option<&WorkerBlock> {
        if i >= self.geo.capacity.max_workers {
            return None;
        }
        self.atomics_at(self.geo.worker_offset(i))
    }

    /// Worker `i`'s per-service counters (`max_services` of them), or `None` when
    /// `i ≥ max_workers`.
    #[must_use]
    pub fn service_counters(&self, i: u32) -> Option<&[ServiceCounters]> {
        if i >= self.geo.capacity.max_workers {
            return None;
        }
        self.counters_at(
            self.geo.counters_of(i),
            self.geo.capacity.max_services.into(),
        )
    }

    /// Worker `i`'s per-backend counters (`max_services · BACKEND_COUNTER_SLOTS` of them,
    /// indexed by `directory index · BACKEND_COUNTER_SLOTS + counter slot`), or `None` when
    /// `i ≥ max_workers`.
    #[must_use]
    pub fn backend_counters(&self, i: u32) -> Option<&[BackendCounters]> {
        if i >= self.geo.capacity.max_workers {
            return None;
        }
        self.counters_at(
            self.geo.backend_counters_of(i),
            u64::from(self.geo.capacity.max_services) * u64::from(BACKEND_COUNTER_SLOTS),
        )
    }

    /// `n` [`ServiceCounters`] at `offset`, or `None` when they do not fit the mapping.
    fn counters_at(&self, offset: u64, n: u64) -> Option<&[ServiceCounters]> {
        let offset = usize::try_from(offset).ok()?;
        let n = usize::try_from(n).ok()?;
        let end = offset.checked_add(n.checked_mul(size_of::<ServiceCounters>())?)?;
        if end > self.region.len() {
            return None;
        }
        let ptr = self
            .region
            .as_ptr()
            .wrapping_add(offset)
            .cast::<ServiceCounters>();
        if !ptr.is_aligned() {
            return None;
        }
        // SAFETY: `n` counters starting at `ptr` lie inside the live mapping and `ptr` is
        // aligned (both checked above). `ServiceCounters` is four `AtomicU64`s, valid for any
        // bits and made for concurrent access; the slice lives no longer than `&self`.
        Some(unsafe { std::slice::from_raw_parts(ptr, n) })
    }

    /// Bytes `[offset, offset + len)` of the mapping as a shared slice, or `None` when out of
    /// bounds. Crate-private: the caller must know nobody writes these bytes while the slice
    /// lives (the publication protocol).
    fn bytes(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let (offset, len) = (to_usize(offset), to_usize(len));
        if offset.checked_add(len)? > self.region.len() {
            return None;
        }
        // SAFETY: the range is inside the live mapping (checked above) and `u8` has no
        // alignment or validity requirement. The caller guarantees, per the publication
        // protocol, that no party writes the range while the slice lives; the slice borrows
        // `self`, which keeps the mapping.
        Some(unsafe { std::slice::from_raw_parts(self.region.as_ptr().add(offset), len) })
    }

    /// Mutable bytes `[offset, offset + len)`, or `None` when out of bounds. Crate-private:
    /// the caller (the single writer) must know no reader reads them meanwhile.
    fn bytes_mut(&mut self, offset: u64, len: u64) -> Option<&mut [u8]> {
        let (offset, len) = (to_usize(offset), to_usize(len));
        if offset.checked_add(len)? > self.region.len() {
            return None;
        }
        // SAFETY: the range is inside the live mapping (checked above); `&mut self` rules out
        // any other reference into this mapping for the slice's life, and the publication
        // protocol guarantees no other process or mapping reads or writes the range meanwhile
        // (it is a free arena block or an unpublished directory slot).
        Some(unsafe { std::slice::from_raw_parts_mut(self.region.as_mut_ptr().add(offset), len) })
    }

    /// Copies directory slot `slot` into `out` (its first `count` entries) and returns its
    /// header. Only for a slot the caller has pinned: the published one it has not acked past,
    /// or any slot when it is the writer.
    ///
    /// # Errors
    ///
    /// [`ShmError::Corrupt`] when `slot` is out of range or `count > max_services`.
    pub(crate) fn read_dir(
        &self,
        slot: u32,
        out: &mut Vec<ServiceEntry>,
    ) -> Result<DirHeader, ShmError> {
        const CORRUPT: ShmError = ShmError::Corrupt {
            what: "directory slot out of range",
        };
        if slot >= self.geo.capacity.dir_slots {
            return Err(CORRUPT);
        }
        let at = self.geo.dir_slot_offset(slot);
        let head = self
            .bytes(at, size_of::<DirHeader>() as u64)
            .ok_or(CORRUPT)?;
        let head = DirHeader::read_from_bytes(head).map_err(|_| CORRUPT)?;
        if head.count > self.geo.capacity.max_services {
            return Err(ShmError::Corrupt {
                what: "directory entry count above capacity",
            });
        }
        let len = u64::from(head.count) * size_of::<ServiceEntry>() as u64;
        let raw = self
            .bytes(at + size_of::<DirHeader>() as u64, len)
            .ok_or(CORRUPT)?;
        let entries = <[ServiceEntry]>::ref_from_bytes(raw).map_err(|_| CORRUPT)?;
        out.clear();
        out.extend_from_slice(entries);
        Ok(head)
    }

    /// Writes directory slot `slot`: its header and entries. Writer only, and only into a slot
    /// no reader can be reading.
    ///
    /// # Errors
    ///
    /// [`ShmError::Corrupt`] when `slot` or the entry count is out of range.
    pub(crate) fn write_dir(
        &mut self,
        slot: u32,
        head: &DirHeader,
        entries: &[ServiceEntry],
    ) -> Result<(), ShmError> {
        const CORRUPT: ShmError = ShmError::Corrupt {
            what: "directory write out of range",
        };
        if slot >= self.geo.capacity.dir_slots
            || entries.len() > to_usize(self.geo.capacity.max_services.into())
        {
            return Err(CORRUPT);
        }
        let at = self.geo.dir_slot_offset(slot);
        let body = entries.as_bytes();
        let dst = self
            .bytes_mut(at, (size_of::<DirHeader>() + body.len()) as u64)
            .ok_or(CORRUPT)?;
        let (h, e) = dst.split_at_mut(size_of::<DirHeader>());
        h.copy_from_slice(head.as_bytes());
        e.copy_from_slice(body);
        Ok(())
    }

    /// The arena bytes of `block`, for the writer to fill. Only for a block no reader can be
    /// reading (freshly allocated).
    ///
    /// # Errors
    ///
    /// [`ShmError::Corrupt`] when the block is outside the arena.
    pub(crate) fn arena_block_mut(&mut self, block: Block) -> Result<&mut [u8], ShmError> {
        if !self.geo.arena_span_ok(block.offset, block.len) {
            return Err(ShmError::Corrupt {
                what: "arena block outside the arena",
            });
        }
        let at = self.geo.arena_offset + block.offset;
        self.bytes_mut(at, block.len).ok_or(ShmError::Corrupt {
            what: "arena block outside the mapping",
        })
    }

    /// The arena bytes of `block`, read-only (the writer's own view, e.g. to verify).
    pub(crate) fn arena_block(&self, block: Block) -> Option<&[u8]> {
        if !self.geo.arena_span_ok(block.offset, block.len) {
            return None;
        }
        self.bytes(self.geo.arena_offset + block.offset, block.len)
    }

    /// `count` values of `T` at arena offset `offset`, pinned with the mapping. Only for a
    /// range of a generation the caller has not acked past (the protocol keeps it immutable).
    ///
    /// # Errors
    ///
    /// [`ShmError::Corrupt`] when the range leaves the arena, is not block-aligned, or
    /// overflows.
    pub(crate) fn arena_slice<T: FromBytes + Immutable + KnownLayout>(
        this: &Arc<Self>,
        offset: u64,
        count: u32,
    ) -> Result<Shared<[T]>, ShmError> {
        const BAD: ShmError = ShmError::Corrupt {
            what: "table or backend range outside the arena",
        };
        let len = u64::from(count)
            .checked_mul(size_of::<T>() as u64)
            .ok_or(BAD)?;
        if !this.geo.arena_span_ok(offset, len) {
            return Err(BAD);
        }
        let raw = this.bytes(this.geo.arena_offset + offset, len).ok_or(BAD)?;
        let typed = <[T]>::ref_from_bytes(raw).map_err(|_| BAD)?;
        Ok(Shared {
            ptr: NonNull::from(typed),
            map: Arc::clone(this),
        })
    }

    /// The header, pinned with the mapping (for a worker's per-burst load).
    pub(crate) fn shared_header(this: &Arc<Self>) -> Shared<Header> {
        Shared {
            ptr: NonNull::from(this.header()),
            map: Arc::clone(this),
        }
    }

    /// Worker block `i`, pinned with the mapping.
    pub(crate) fn shared_worker(this: &Arc<Self>, i: u32) -> Option<Shared<WorkerBlock>> {
        Some(Shared {
            ptr: NonNull::from(this.worker(i)?),
            map: Arc::clone(this),
        })
    }

    /// Worker `i`'s backend counters, pinned with the mapping.
    pub(crate) fn shared_backend_counters(
        this: &Arc<Self>,
        i: u32,
    ) -> Option<Shared<[BackendCounters]>> {
        Some(Shared {
            ptr: NonNull::from(this.backend_counters(i)?),
            map: Arc::clone(this),
        })
    }

    /// Worker `i`'s service counters, pinned with the mapping.
    pub(crate) fn shared_counters(this: &Arc<Self>, i: u32) -> Option<Shared<[ServiceCounters]>> {
        Some(Shared {
            ptr: NonNull::from(this.service_counters(i)?),
            map: Arc::clone(this),
        })
    }
}

/// A reference into a [`Mapping`] that keeps the mapping alive: what a worker's table views
/// hold. Dereferences to `T` (an atomics-only struct, or a slice of a published generation).
pub(crate) struct Shared<T: ?Sized> {
    ptr: NonNull<T>,
    map: Arc<Mapping>,
}

impl<T: ?Sized> Deref for Shared<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: `ptr` was made from a reference into `map`'s mapping after bounds,
        // alignment and validity checks (`Mapping::atomics_at`, `service_counters`,
        // `arena_slice`), and `map` keeps that mapping alive as long as `self`. What it points
        // at is either atomics only, or a published range the protocol keeps immutable until
        // the holder acks a newer generation — which `tables::Worker` does only after dropping
        // every view of the older one (views are never handed out owned or cloned, only
        // borrowed from the worker, and the ack happens under `&mut Worker`).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self {
            ptr: self.ptr,
            map: Arc::clone(&self.map),
        }
    }
}

// SAFETY: a `Shared<T>` is a `&T` plus an `Arc<Mapping>`; `&T` is `Send` when `T: Sync`, and
// `Mapping` (a `Region`: an owned `MmapMut` and plain data) is `Send + Sync`.
unsafe impl<T: ?Sized + Sync> Send for Shared<T> {}
// SAFETY: as above: sharing a `Shared<T>` shares only `&T` and the `Arc`.
unsafe impl<T: ?Sized + Sync> Sync for Shared<T> {}

impl<T: ?Sized> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("region", &self.map.region.name())
            .field("ptr", &self.ptr.cast::<u8>())
            .finish()
    }
}

/// The single-writer lock: an exclusive `flock` on the region file, released by the kernel
/// when the holder exits however it exits. So a restarted control can re-attach at once, and a
/// second control cannot write alongside the first.
#[derive(Debug)]
pub(crate) struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Takes the lock on `region`'s file without blocking.
    ///
    /// # Errors
    ///
    /// [`ShmError::WriterBusy`] when another holder has it, [`ShmError::Lock`] when the file
    /// cannot be opened or locked.
    pub(crate) fn acquire(region: &Region) -> Result<Self, ShmError> {
        let path = region.backing().path().to_owned();
        let file = File::open(&path).map_err(|source| ShmError::Lock {
            path: path.clone(),
            source,
        })?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(ShmError::WriterBusy { path }),
            Err(TryLockError::Error(source)) => Err(ShmError::Lock { path, source }),
        }
    }
}
