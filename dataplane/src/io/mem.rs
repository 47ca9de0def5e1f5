//! Memory for the per-worker tables (conntrack): large arrays on 2 MiB pages, carved into
//! equal chunks, and a cache prefetch hint. Nothing here is DPDK: it is built without the
//! `dpdk` feature too.
//!
//! # Contract
//!
//! - [`PagedChunks::new`] maps `chunks × chunk_len` values of `T`, each set to `fill`,
//!   before it returns: every page is faulted in at construction, so the packet path never
//!   takes a page fault on the table. Pages, in order of preference: explicit 2 MiB
//!   hugepages (`MAP_HUGETLB`, taken only when the pool has enough free pages, so no
//!   `SIGBUS` later); else ordinary anonymous memory aligned to 2 MiB with
//!   `MADV_HUGEPAGE` (transparent hugepages, when the kernel grants them); else the heap.
//!   [`PagedChunks::backing`] says which one was used. Small arrays (under 2 MiB) go on the
//!   heap directly: a hugepage would be mostly empty.
//! - Each [`Chunk`] is a `&mut [T]`-like view of its own disjoint part of the allocation,
//!   and keeps the allocation alive; it is freed when the last chunk is dropped. `T: Copy`,
//!   so nothing needs dropping.
//! - [`prefetch`] hints that a value's cache lines will be read soon. It never faults and
//!   changes nothing but the cache, whatever the address; it is a no-op off x86_64.

use std::alloc::Layout;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

/// The huge page size this module asks for (x86_64's 2 MiB).
pub const HUGE_PAGE: usize = 2 << 20;

/// The pages backing a [`PagedChunks`] allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PageBacking {
    /// 2 MiB hugepages from the hugetlbfs pool (`MAP_HUGETLB`).
    Hugetlb,
    /// Anonymous memory aligned to 2 MiB with `MADV_HUGEPAGE`: the kernel backs it with
    /// transparent hugepages where it can, else with 4 KiB pages.
    TransparentHuge,
    /// The heap (4 KiB pages): small arrays, or when `mmap` failed.
    Heap,
}

impl fmt::Display for PageBacking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageBacking::Hugetlb => "hugetlb",
            PageBacking::TransparentHuge => "thp",
            PageBacking::Heap => "heap",
        })
    }
}

/// One allocation, freed on drop: an `mmap` or a heap block.
struct Allocation {
    ptr: NonNull<u8>,
    len: usize,
    /// `Some(layout)` for a heap block, `None` for a mapping of `len` bytes.
    heap: Option<Layout>,
}

// SAFETY: `Allocation` only owns memory (no thread-bound state); the chunks that point into
// it are handed out disjointly, and `Chunk` carries the `Send`/`Sync` bounds of `T`.
unsafe impl Send for Allocation {}
// SAFETY: `&Allocation` gives no access to the memory at all.
unsafe impl Sync for Allocation {}

impl Drop for Allocation {
    fn drop(&mut self) {
        match self.heap {
            // SAFETY: `ptr` came from `std::alloc::alloc(layout)` with this very layout, and
            // every chunk pointing into it is gone (they hold the `Arc` this lives in).
            Some(layout) => unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) },
            None => {
                // SAFETY: `ptr`/`len` are exactly a mapping made by `mmap` in `map_pages`,
                // still mapped, and no chunk points into it any more.
                let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
                debug_assert_eq!(rc, 0, "munmap of a table mapping failed");
            }
        }
    }
}

impl Allocation {
    /// `bytes` (> 0) of memory aligned to `align` (≤ 4096) and to 64: mapped on 2 MiB
    /// pages when `bytes` ≥ [`HUGE_PAGE`] and the kernel agrees, else from the heap. The
    /// contents are unspecified; the caller fills them.
    fn new(bytes: usize, align: usize) -> Option<(Self, PageBacking)> {
        if bytes >= HUGE_PAGE {
            let len = bytes.div_ceil(HUGE_PAGE).checked_mul(HUGE_PAGE)?;
            if let Some(a) = map_hugetlb(len) {
                return Some((a, PageBacking::Hugetlb));
            }
            if let Some(a) = map_thp(len) {
                return Some((a, PageBacking::TransparentHuge));
            }
        }
        // At least a cache line, so that values smaller than one (conntrack's 32-byte
        // slots) pair up within lines the same way on the heap as on mapped pages.
        let layout = Layout::from_size_align(bytes, align.max(64)).ok()?;
        // SAFETY: `layout` has a non-zero size (`bytes > 0`, checked by the caller).
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) })?;
        Some((
            Self {
                ptr,
                len: bytes,
                heap: Some(layout),
            },
            PageBacking::Heap,
        ))
    }
}

/// `len` bytes (a multiple of [`HUGE_PAGE`]) of private anonymous memory on 2 MiB hugetlb
/// pages, faulted in now; `None` when the pool has too few free pages.
fn map_hugetlb(len: usize) -> Option<Allocation> {
    let flags = libc::MAP_PRIVATE
        | libc::MAP_ANONYMOUS
        | libc::MAP_HUGETLB
        | libc::MAP_HUGE_2MB
        | libc::MAP_POPULATE;
    // SAFETY: an anonymous mapping at an address of the kernel's choice: no existing memory
    // is affected. Without MAP_NORESERVE the pages are reserved now, so the call fails
    // (instead of a later SIGBUS) when the pool is short.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    Some(Allocation {
        ptr: NonNull::new(p.cast())?,
        len,
        heap: None,
    })
}

/// `len` bytes (a multiple of [`HUGE_PAGE`]) of private anonymous memory starting on a
/// 2 MiB boundary, advised `MADV_HUGEPAGE`; `None` if `mmap` fails.
fn map_thp(len: usize) -> Option<Allocation> {
    let over = len.checked_add(HUGE_PAGE)?;
    // SAFETY: an anonymous mapping at an address of the kernel's choice.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            over,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let base = p.cast::<u8>();
    let head = (HUGE_PAGE - base.addr() % HUGE_PAGE) % HUGE_PAGE;
    let tail = over - head - len;
    let start = base.wrapping_add(head);
    if head > 0 {
        // SAFETY: `[base, base + head)` is the page-aligned front of the mapping just made
        // (mmap returns page-aligned addresses and HUGE_PAGE is a multiple of the page).
        unsafe { libc::munmap(base.cast(), head) };
    }
    if tail > 0 {
        // SAFETY: `[start + len, start + len + tail)` is the page-aligned end of the same
        // mapping; nothing points into it.
        unsafe { libc::munmap(start.wrapping_add(len).cast(), tail) };
    }
    // SAFETY: `[start, start + len)` is inside the mapping made above. The advice only asks
    // for transparent hugepages; failure (THP disabled) leaves ordinary pages.
    unsafe { libc::madvise(start.cast(), len, libc::MADV_HUGEPAGE) };
    Some(Allocation {
        ptr: NonNull::new(start)?,
        len,
        heap: None,
    })
}

/// `chunks` arrays of `chunk_len` values of `T`, carved from one allocation: see the module
/// docs. Take them apart with [`PagedChunks::into_chunks`].
#[derive(Debug)]
pub struct PagedChunks<T> {
    chunks: Vec<Chunk<T>>,
    backing: PageBacking,
    allocated: usize,
}

impl<T: Copy> PagedChunks<T> {
    /// Allocates and fills `chunks × chunk_len` values. `None` when the size overflows,
    /// `T` is zero-sized or aligned above 4096, or no memory could be had at all.
    #[must_use]
    pub fn new(chunks: usize, chunk_len: usize, fill: T) -> Option<Self> {
        let n = chunks.checked_mul(chunk_len)?;
        let bytes = n.checked_mul(size_of::<T>())?;
        if bytes == 0 || size_of::<T>() == 0 || align_of::<T>() > 4096 {
            return None;
        }
        let (alloc, backing) = Allocation::new(bytes, align_of::<T>())?;
        let base = alloc.ptr.cast::<T>();
        for i in 0..n {
            // SAFETY: `i < n` and the allocation holds `n` values of `T` from `base`, which
            // is aligned for `T` (mmap: page-aligned; heap: `align_of::<T>()`). The memory
            // is uninitialized, and writing a `T: Copy` over it drops nothing.
            unsafe { base.as_ptr().add(i).write(fill) };
        }
        let allocated = alloc.len;
        let owner = Arc::new(alloc);
        let chunks = (0..chunks)
            .map(|c| Chunk {
                // SAFETY: `c * chunk_len + chunk_len <= n`, so the offset stays inside the
                // allocation and the result is non-null.
                ptr: unsafe { base.add(c * chunk_len) },
                len: chunk_len,
                _owner: Arc::clone(&owner),
            })
            .collect();
        Some(Self {
            chunks,
            backing,
            allocated,
        })
    }

    /// Which pages were used.
    #[must_use]
    pub fn backing(&self) -> PageBacking {
        self.backing
    }

    /// Bytes allocated (rounded up to whole 2 MiB pages when mapped).
    #[must_use]
    pub fn allocated_bytes(&self) -> usize {
        self.allocated
    }

    /// The chunks, in address order.
    #[must_use]
    pub fn into_chunks(self) -> Vec<Chunk<T>> {
        self.chunks
    }
}

/// One chunk of a [`PagedChunks`] allocation: `len` values of `T`, used like a `Box<[T]>`.
pub struct Chunk<T> {
    ptr: NonNull<T>,
    len: usize,
    /// Keeps the memory alive; never read.
    _owner: Arc<Allocation>,
}

// SAFETY: a `Chunk<T>` is the unique owner of its values (chunks never overlap), so sending
// it sends `T`s; the shared `Arc<Allocation>` is `Send + Sync`.
unsafe impl<T: Send> Send for Chunk<T> {}
// SAFETY: `&Chunk<T>` only gives `&[T]`.
unsafe impl<T: Sync> Sync for Chunk<T> {}

impl<T: Copy> Chunk<T> {
    /// `len` values set to `fill`, on the heap (or on 2 MiB pages if that large): a single
    /// chunk. `None` as for [`PagedChunks::new`].
    #[must_use]
    pub fn new(len: usize, fill: T) -> Option<Self> {
        PagedChunks::new(1, len, fill)?.into_chunks().pop()
    }
}

impl<T> Deref for Chunk<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points at `len` initialized values (filled by `PagedChunks::new`)
        // inside a live allocation (held by `_owner`) that no other chunk overlaps.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for Chunk<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference to the chunk.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> fmt::Debug for Chunk<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Hints that `*value` will be read soon: prefetches every cache line it spans into all
/// cache levels (`PREFETCHT0`). Costs a few cycles, never faults, never waits for memory.
/// A no-op off x86_64.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = std::ptr::from_ref(value).cast::<i8>();
        let size = size_of::<T>();
        let mut off = 0;
        while off < size {
            // SAFETY: PREFETCHT0 is only a hint: it never faults and has no architectural
            // effect for any address; this one is inside `*value` anyway. SSE is part of
            // the x86_64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
            off += 64;
        }
        if size > 64 && !(size - 1).is_multiple_of(64) {
            // The last byte: a value not aligned to 64 bytes can end on one more line.
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(size - 1)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_arrays_go_on_the_heap_and_are_filled() {
        let p = PagedChunks::new(3, 5, 7u64).unwrap();
        assert_eq!(p.backing(), PageBacking::Heap);
        let mut chunks = p.into_chunks();
        assert_eq!(chunks.len(), 3);
        assert!(
            chunks
                .iter()
                .all(|c| c.len() == 5 && c.iter().all(|&v| v == 7))
        );
        chunks[1][4] = 9;
        assert_eq!(chunks[1][4], 9);
        assert_eq!(chunks[2][0], 7, "chunks are disjoint");
        let c = Chunk::new(4, [1u8; 88]).unwrap();
        prefetch(&c[3]);
        assert!(PagedChunks::<u64>::new(0, 5, 0).is_none());
        assert!(PagedChunks::<()>::new(2, 5, ()).is_none());
    }

    /// 8 MiB: hugetlb if the pool has 4 free pages, else THP, else heap; each works the same
    /// way, and the chunks outlive the `PagedChunks` value.
    #[test]
    fn large_arrays_are_page_backed() {
        let p = PagedChunks::new(4, (1 << 20) / 8 * 2, 0xabu64).unwrap();
        let backing = p.backing();
        assert_ne!(backing, PageBacking::Heap, "mmap failed");
        assert_eq!(p.allocated_bytes(), 8 << 20);
        let chunks = p.into_chunks();
        for c in &chunks {
            assert!(c.iter().all(|&v| v == 0xab));
            assert_eq!(c.as_ptr().addr() % 4096, 0);
        }
        if backing == PageBacking::Hugetlb || backing == PageBacking::TransparentHuge {
            assert_eq!(chunks[0].as_ptr().addr() % HUGE_PAGE, 0);
        }
        drop(chunks);
    }
}
