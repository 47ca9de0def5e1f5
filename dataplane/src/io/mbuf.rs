//! Owned packet buffers and fixed-size bursts of them.
//!
//! Only single-owner mbufs exist here: Sluice never clones or chains mbufs itself, and PMDs
//! hand out mbufs with a reference count of 1, so `&mut Mbuf` is exclusive access to the bytes.

use std::mem::MaybeUninit;
use std::ptr::NonNull;

use sluice_ffi as ffi;

use super::mempool::Mempool;

/// Packets per burst: the unit of RX, processing and TX.
pub const BURST: usize = 32;

/// `RTE_MBUF_F_RX_RSS_HASH` (a macro bindgen does not export).
const RX_RSS_HASH: u64 = 1 << 1;

/// Why an mbuf operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MbufError {
    /// The pool had no free mbuf.
    #[error("mempool exhausted")]
    PoolEmpty,
    /// Not enough headroom or tailroom, or the data is shorter than the bytes to remove.
    #[error("not enough room in the mbuf")]
    NoRoom,
    /// The operation needs a single-segment mbuf.
    #[error("mbuf is chained (multi-segment)")]
    NotContiguous,
}

/// One packet buffer, owned: dropping it returns it to its pool.
#[repr(transparent)]
pub struct Mbuf(NonNull<ffi::rte_mbuf>);

// SAFETY: an Mbuf is the sole owner of its buffer (refcnt 1, never cloned), and mempools are
// thread-safe, so moving it to another thread and freeing it there is sound.
unsafe impl Send for Mbuf {}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("len", &self.len())
            .field("pkt_len", &self.pkt_len())
            .field("segments", &self.segments())
            .finish()
    }
}

impl Mbuf {
    /// Takes one mbuf from `pool`.
    ///
    /// # Errors
    /// [`MbufError::PoolEmpty`].
    pub fn alloc(pool: &Mempool) -> Result<Mbuf, MbufError> {
        // SAFETY: the pool is live for the call (we hold a handle).
        let raw = unsafe { ffi::sluice_rte_pktmbuf_alloc(pool.as_ptr()) };
        NonNull::new(raw).map(Mbuf).ok_or(MbufError::PoolEmpty)
    }

    /// An mbuf holding a copy of `bytes`.
    ///
    /// # Errors
    /// [`MbufError::PoolEmpty`], or [`MbufError::NoRoom`] when `bytes` exceeds the data room.
    pub fn from_bytes(pool: &Mempool, bytes: &[u8]) -> Result<Mbuf, MbufError> {
        let mut m = Mbuf::alloc(pool)?;
        let n = u16::try_from(bytes.len()).map_err(|_| MbufError::NoRoom)?;
        m.append(n)?.copy_from_slice(bytes);
        Ok(m)
    }

    #[inline]
    fn raw(&self) -> &ffi::rte_mbuf {
        // SAFETY: the pointer is valid and exclusively ours for as long as `self` lives.
        unsafe { self.0.as_ref() }
    }

    #[inline]
    fn raw_mut(&mut self) -> &mut ffi::rte_mbuf {
        // SAFETY: as in `raw`, and `&mut self` makes the access exclusive.
        unsafe { self.0.as_mut() }
    }

    /// The packet bytes of the first segment (all of them for a contiguous mbuf).
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: DPDK keeps data_off + data_len within the buf_len bytes at buf_addr, which
        // stay allocated and unaliased while we own the mbuf.
        unsafe {
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// The packet bytes of the first segment, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.raw_mut();
        // SAFETY: as in `data`; `&mut self` guarantees exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// Bytes in the first segment.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.raw().data_len)
    }

    /// Whether the first segment holds no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.raw().data_len == 0
    }

    /// Bytes in the whole packet (all segments).
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// Number of segments.
    #[inline]
    pub fn segments(&self) -> u16 {
        self.raw().nb_segs
    }

    /// Free bytes before the data (room for [`Mbuf::prepend`]).
    #[inline]
    pub fn headroom(&self) -> u16 {
        self.raw().data_off
    }

    /// Free bytes after the data in the first segment.
    #[inline]
    pub fn tailroom(&self) -> u16 {
        let m = self.raw();
        m.buf_len
            .saturating_sub(m.data_off)
            .saturating_sub(m.data_len)
    }

    /// The port the packet arrived on.
    #[inline]
    pub fn input_port(&self) -> u16 {
        self.raw().port
    }

    /// The NIC's RSS hash, when the PMD computed one.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        let m = self.raw();
        if m.ol_flags & RX_RSS_HASH == 0 {
            return None;
        }
        // SAFETY: reading the `rss` member of the hash union is valid when the PMD set the
        // RSS flag, checked just above.
        Some(unsafe { m.__bindgen_anon_2.hash.rss })
    }

    /// Grows the packet at the front by `n` bytes (for encapsulation) and returns the whole
    /// first segment, whose first `n` bytes are uninitialised garbage to overwrite.
    ///
    /// # Errors
    /// [`MbufError::NoRoom`] when the headroom is smaller than `n`.
    #[inline]
    pub fn prepend(&mut self, n: u16) -> Result<&mut [u8], MbufError> {
        let m = self.raw_mut();
        if n > m.data_off {
            return Err(MbufError::NoRoom);
        }
        m.data_off -= n;
        m.data_len += n;
        m.pkt_len += u32::from(n);
        Ok(self.data_mut())
    }

    /// Removes `n` bytes from the front (for decapsulation).
    ///
    /// # Errors
    /// [`MbufError::NoRoom`] when the first segment is shorter than `n`.
    #[inline]
    pub fn adj(&mut self, n: u16) -> Result<(), MbufError> {
        let m = self.raw_mut();
        if n > m.data_len {
            return Err(MbufError::NoRoom);
        }
        m.data_off += n;
        m.data_len -= n;
        m.pkt_len -= u32::from(n);
        Ok(())
    }

    /// Grows a contiguous packet at the end by `n` bytes and returns the new bytes.
    ///
    /// # Errors
    /// [`MbufError::NotContiguous`] or [`MbufError::NoRoom`].
    pub fn append(&mut self, n: u16) -> Result<&mut [u8], MbufError> {
        if self.segments() != 1 {
            return Err(MbufError::NotContiguous);
        }
        if n > self.tailroom() {
            return Err(MbufError::NoRoom);
        }
        let old = self.len();
        let m = self.raw_mut();
        m.data_len += n;
        m.pkt_len += u32::from(n);
        Ok(&mut self.data_mut()[old..])
    }

    /// Shrinks a contiguous packet by `n` bytes at the end.
    ///
    /// # Errors
    /// [`MbufError::NotContiguous`] or [`MbufError::NoRoom`].
    pub fn trim(&mut self, n: u16) -> Result<(), MbufError> {
        if self.segments() != 1 {
            return Err(MbufError::NotContiguous);
        }
        let m = self.raw_mut();
        if n > m.data_len {
            return Err(MbufError::NoRoom);
        }
        m.data_len -= n;
        m.pkt_len -= u32::from(n);
        Ok(())
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is freed exactly once, here.
        unsafe { ffi::sluice_rte_pktmbuf_free(self.0.as_ptr()) };
    }
}

/// Up to [`BURST`] owned mbufs in a fixed array: no allocation, ever. Whatever it holds when
/// dropped or [`cleared`](MbufBurst::clear) is freed in one bulk call.
pub struct MbufBurst {
    len: usize,
    bufs: [MaybeUninit<Mbuf>; BURST],
}

impl std::fmt::Debug for MbufBurst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbufBurst").field("len", &self.len).finish()
    }
}

impl Default for MbufBurst {
    fn default() -> Self {
        Self::new()
    }
}

impl MbufBurst {
    /// An empty burst.
    pub const fn new() -> Self {
        Self {
            len: 0,
            bufs: [const { MaybeUninit::uninit() }; BURST],
        }
    }

    /// Packets held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether it holds [`BURST`].
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BURST
    }

    /// The held packets.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: the first `len` elements are initialised; MaybeUninit<Mbuf> has Mbuf's layout.
        unsafe { std::slice::from_raw_parts(self.bufs.as_ptr().cast::<Mbuf>(), self.len) }
    }

    /// The held packets, writable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in `as_slice`, with exclusive access through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.as_mut_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Adds a packet, or gives it back when the burst is full.
    ///
    /// # Errors
    /// The packet itself, when full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST {
            return Err(m);
        }
        self.bufs[self.len].write(m);
        self.len += 1;
        Ok(())
    }

    /// Removes the last packet.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: element `len` was initialised and is now outside the live prefix, so it is
        // read (moved out) exactly once.
        Some(unsafe { self.bufs[self.len].assume_init_read() })
    }

    /// Frees every held packet in one bulk call; returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.len;
        if n > 0 {
            self.len = 0;
            // SAFETY: the first `n` slots hold owned, non-null mbufs (Mbuf is a transparent
            // NonNull), which nothing references any more since `len` is already 0.
            unsafe {
                ffi::rte_pktmbuf_free_bulk(
                    self.bufs.as_mut_ptr().cast::<*mut ffi::rte_mbuf>(),
                    u32::try_from(n).unwrap_or(0),
                );
            }
        }
        n
    }

    /// Keeps the packets for which `keep` returns true (in order) and frees the others;
    /// returns how many were freed.
    pub fn retain_mut(&mut self, mut keep: impl FnMut(&mut Mbuf) -> bool) -> usize {
        let mut rejected = MbufBurst::new();
        let n = self.len;
        self.len = 0;
        for i in 0..n {
            // SAFETY: slot `i` < old len is initialised; it is moved out exactly once (len is
            // already 0, so neither Drop nor another path reads it again).
            let mut m = unsafe { self.bufs[i].assume_init_read() };
            if keep(&mut m) {
                self.bufs[self.len].write(m);
                self.len += 1;
            } else {
                // Cannot fail: at most `n` ≤ BURST packets are rejected.
                let _ = rejected.push(m);
            }
        }
        rejected.clear()
    }

    /// Moves every packet out, in order.
    pub fn drain(&mut self) -> Drain<'_> {
        let end = self.len;
        self.len = 0;
        Drain {
            burst: self,
            next: 0,
            end,
        }
    }

    /// Pointer to the first free slot and the number of free slots, for RX.
    #[inline]
    pub(crate) fn spare(&mut self) -> (*mut *mut ffi::rte_mbuf, u16) {
        let room = u16::try_from(BURST - self.len).unwrap_or(0);
        // SAFETY: `len` ≤ BURST, so the pointer is within or one past the array.
        let p = unsafe { self.bufs.as_mut_ptr().add(self.len) };
        (p.cast::<*mut ffi::rte_mbuf>(), room)
    }

    /// Marks `n` more slots (just filled by DPDK with owned mbufs) as held.
    ///
    /// # Safety
    /// The `n` slots after the current length must hold valid, owned, non-null mbufs.
    #[inline]
    pub(crate) unsafe fn commit(&mut self, n: usize) {
        debug_assert!(self.len + n <= BURST);
        self.len += n;
    }

    /// Pointer to the held packets, for TX.
    #[inline]
    pub(crate) fn as_raw(&mut self) -> (*mut *mut ffi::rte_mbuf, u16) {
        (
            self.bufs.as_mut_ptr().cast::<*mut ffi::rte_mbuf>(),
            u16::try_from(self.len).unwrap_or(0),
        )
    }

    /// Forgets the first `n` packets (DPDK now owns them) and moves the rest to the front.
    #[inline]
    pub(crate) fn consume_front(&mut self, n: usize) {
        let n = n.min(self.len);
        let rest = self.len - n;
        if n > 0 && rest > 0 {
            // SAFETY: source [n, len) and destination [0, rest) are within the array;
            // `ptr::copy` handles the overlap; the moved-from slots are beyond the new length.
            unsafe { std::ptr::copy(self.bufs.as_ptr().add(n), self.bufs.as_mut_ptr(), rest) };
        }
        self.len = rest;
    }
}

impl Drop for MbufBurst {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Iterator that moves packets out of an [`MbufBurst`]; frees whatever it did not yield.
#[derive(Debug)]
pub struct Drain<'a> {
    burst: &'a mut MbufBurst,
    next: usize,
    end: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next == self.end {
            return None;
        }
        let i = self.next;
        self.next += 1;
        // SAFETY: slots [next, end) are initialised and were detached from the burst (its len
        // is 0); each is read exactly once.
        Some(unsafe { self.burst.bufs[i].assume_init_read() })
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        for i in self.next..self.end {
            // SAFETY: the remaining slots are initialised and not yet moved out.
            drop(unsafe { self.burst.bufs[i].assume_init_read() });
        }
    }
}

const _: () = assert!(std::mem::size_of::<Mbuf>() == std::mem::size_of::<*mut ffi::rte_mbuf>());
const _: () = assert!(std::mem::size_of::<Option<Mbuf>>() == std::mem::size_of::<Mbuf>());

impl crate::pipeline::PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        let n = u16::try_from(n).ok()?;
        Mbuf::prepend(self, n).ok()
    }

    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        u16::try_from(n).is_ok_and(|n| Mbuf::adj(self, n).is_ok())
    }
}
