//! The writer's arena allocator: first fit over a sorted free list, every block a multiple of
//! [`BLOCK_ALIGN`] bytes at a [`BLOCK_ALIGN`]-aligned offset, neighbours coalesced on free.
//!
//! It only does bookkeeping: it never touches the region. Which blocks may be freed (those no
//! live worker can still read) is the ledger's business.
//!
//! Invariants ([`ArenaAlloc::check`]): free segments are sorted, disjoint, never adjacent (they
//! are coalesced), inside the arena, and free plus allocated bytes equal the arena length.

use std::collections::BTreeMap;

use super::layout::BLOCK_ALIGN;

/// A range of arena bytes: `[offset, offset + len)`, both multiples of [`BLOCK_ALIGN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    /// Arena-relative start.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Block {
    /// One past the last byte.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Whether the two ranges share a byte.
    #[must_use]
    pub fn overlaps(&self, other: &Block) -> bool {
        self.offset < other.end() && other.offset < self.end()
    }
}

/// Why [`ArenaAlloc::reserve`] refused a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotFree;

/// First-fit allocator over `[0, len)`.
#[derive(Debug, Clone)]
pub struct ArenaAlloc {
    len: u64,
    /// Free segments: offset → length.
    free: BTreeMap<u64, u64>,
    free_bytes: u64,
}

impl ArenaAlloc {
    /// An allocator with the whole arena free. `len` is rounded down to [`BLOCK_ALIGN`].
    #[must_use]
    pub fn new(len: u64) -> Self {
        let len = len / BLOCK_ALIGN * BLOCK_ALIGN;
        let mut free = BTreeMap::new();
        if len > 0 {
            free.insert(0, len);
        }
        Self {
            len,
            free,
            free_bytes: len,
        }
    }

    /// The arena length.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the arena has no bytes at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free bytes in total.
    #[must_use]
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }

    /// The largest free segment: the biggest block [`alloc`](Self::alloc) can return now.
    #[must_use]
    pub fn largest_free(&self) -> u64 {
        self.free.values().copied().max().unwrap_or(0)
    }

    /// A block of at least `size` bytes (rounded up to [`BLOCK_ALIGN`]; a zero size takes one
    /// unit so every block is distinct), from the lowest free segment that holds it. `None`
    /// when no segment is big enough.
    pub fn alloc(&mut self, size: u64) -> Option<Block> {
        let size = size.max(1).checked_next_multiple_of(BLOCK_ALIGN)?;
        let (&offset, &seg) = self.free.iter().find(|&(_, &len)| len >= size)?;
        self.free.remove(&offset);
        if seg > size {
            self.free.insert(offset + size, seg - size);
        }
        self.free_bytes -= size;
        Some(Block { offset, len: size })
    }

    /// Returns a block, coalescing it with free neighbours.
    ///
    /// # Panics
    ///
    /// When the block overlaps free space or leaves the arena: a double free is a writer bug,
    /// and carrying on would hand the same bytes out twice.
    pub fn free(&mut self, block: Block) {
        assert!(
            block.len > 0
                && block.offset.is_multiple_of(BLOCK_ALIGN)
                && block.len.is_multiple_of(BLOCK_ALIGN)
                && block.end() <= self.len,
            "freeing a block outside the arena: {block:?}"
        );
        let mut start = block.offset;
        let mut len = block.len;
        if let Some((&p, &plen)) = self.free.range(..=start).next_back() {
            assert!(p + plen <= start, "double free of {block:?}");
            if p + plen == start {
                self.free.remove(&p);
                start = p;
                len += plen;
            }
        }
        if let Some((&n, &nlen)) = self.free.range(block.offset..).next() {
            assert!(n >= block.end(), "double free of {block:?}");
            if n == block.end() {
                self.free.remove(&n);
                len += nlen;
            }
        }
        self.free.insert(start, len);
        self.free_bytes += block.len;
    }

    /// Marks a specific block allocated (a writer re-attaching rebuilds its state this way).
    ///
    /// # Errors
    ///
    /// [`NotFree`] when any byte of it is not free, or it is misaligned or outside the arena.
    pub fn reserve(&mut self, block: Block) -> Result<(), NotFree> {
        if block.len == 0
            || !block.offset.is_multiple_of(BLOCK_ALIGN)
            || !block.len.is_multiple_of(BLOCK_ALIGN)
            || block
                .offset
                .checked_add(block.len)
                .is_none_or(|e| e > self.len)
        {
            return Err(NotFree);
        }
        let (&p, &plen) = self
            .free
            .range(..=block.offset)
            .next_back()
            .ok_or(NotFree)?;
        if p + plen < block.end() {
            return Err(NotFree);
        }
        self.free.remove(&p);
        if p < block.offset {
            self.free.insert(p, block.offset - p);
        }
        if block.end() < p + plen {
            self.free.insert(block.end(), p + plen - block.end());
        }
        self.free_bytes -= block.len;
        Ok(())
    }

    /// Checks the invariants in the module docs, given the blocks the caller holds.
    ///
    /// # Panics
    ///
    /// When an invariant is broken (a test aid).
    pub fn check(&self, held: &[Block]) {
        let mut prev_end: Option<u64> = None;
        let mut sum = 0;
        for (&o, &l) in &self.free {
            assert!(l > 0 && o.is_multiple_of(BLOCK_ALIGN) && l.is_multiple_of(BLOCK_ALIGN));
            if let Some(pe) = prev_end {
                assert!(o > pe, "free segments touch or overlap at {o}");
            }
            prev_end = Some(o + l);
            sum += l;
        }
        assert!(prev_end.is_none_or(|e| e <= self.len));
        assert_eq!(sum, self.free_bytes);
        let held_sum: u64 = held.iter().map(|b| b.len).sum();
        assert_eq!(sum + held_sum, self.len, "bytes lost or double counted");
        for (i, a) in held.iter().enumerate() {
            for b in &held[i + 1..] {
                assert!(!a.overlaps(b), "held blocks overlap: {a:?} {b:?}");
            }
            for (&o, &l) in &self.free {
                assert!(
                    !a.overlaps(&Block { offset: o, len: l }),
                    "{a:?} is also free"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn first_fit_and_coalesce() {
        let mut a = ArenaAlloc::new(640 + 10);
        assert_eq!(a.len(), 640);
        let x = a.alloc(1).unwrap();
        let y = a.alloc(100).unwrap();
        let z = a.alloc(64).unwrap();
        assert_eq!((x.offset, x.len), (0, 64));
        assert_eq!((y.offset, y.len), (64, 128));
        assert_eq!((z.offset, z.len), (192, 64));
        a.check(&[x, y, z]);
        a.free(y);
        // First fit takes the hole.
        let w = a.alloc(64).unwrap();
        assert_eq!(w.offset, 64);
        a.free(x);
        a.free(w);
        a.free(z);
        a.check(&[]);
        assert_eq!(a.largest_free(), 640);
        assert!(a.alloc(641).is_none());
        let all = a.alloc(640).unwrap();
        assert!(a.alloc(1).is_none());
        a.free(all);
    }

    #[test]
    fn reserve_carves_exact_blocks() {
        let mut a = ArenaAlloc::new(1024);
        let b = Block {
            offset: 256,
            len: 128,
        };
        a.reserve(b).unwrap();
        assert_eq!(a.reserve(b), Err(NotFree));
        assert_eq!(
            a.reserve(Block {
                offset: 320,
                len: 64
            }),
            Err(NotFree)
        );
        assert_eq!(
            a.reserve(Block {
                offset: 960,
                len: 128
            }),
            Err(NotFree)
        );
        assert_eq!(a.reserve(Block { offset: 1, len: 64 }), Err(NotFree));
        a.check(&[b]);
        a.free(b);
        a.check(&[]);
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_panics() {
        let mut a = ArenaAlloc::new(1024);
        let b = a.alloc(64).unwrap();
        a.free(b);
        a.free(b);
    }

    proptest! {
        /// Any sequence of allocations and frees keeps the invariants: no two held blocks
        /// overlap, nothing held is free, no byte is lost.
        #[test]
        fn no_overlap_no_loss(ops in proptest::collection::vec((any::<bool>(), 1u64..2000, any::<prop::sample::Index>()), 1..200)) {
            let mut a = ArenaAlloc::new(16 * 1024);
            let mut held: Vec<Block> = Vec::new();
            for (alloc, size, pick) in ops {
                if alloc || held.is_empty() {
                    if let Some(b) = a.alloc(size) {
                        prop_assert!(b.len >= size && b.len < size + BLOCK_ALIGN);
                        held.push(b);
                    } else {
                        prop_assert!(a.largest_free() < size);
                    }
                } else {
                    let b = held.swap_remove(pick.index(held.len()));
                    a.free(b);
                }
                a.check(&held);
            }
            for b in held.drain(..) {
                a.free(b);
            }
            a.check(&[]);
            prop_assert_eq!(a.largest_free(), a.len());
        }
    }
}
