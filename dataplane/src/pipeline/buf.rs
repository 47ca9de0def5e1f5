//! The packet buffer the pipeline works on: [`PacketBuf`], so that nothing below `io` sees a
//! DPDK type, and [`VecBuf`], a heap-backed implementation with headroom for tests, benches
//! and the fuzz target.

use core::fmt;

/// A packet's bytes, with room to grow at the front (encapsulation) and shrink from it
/// (decapsulation). DPDK's `Mbuf` implements it in `io`; [`VecBuf`] everywhere else.
///
/// Implementations must not panic, must not allocate, and must keep the bytes after the
/// front untouched by `prepend` / `adj`.
pub trait PacketBuf {
    /// The frame, from the Ethernet header on.
    fn data(&self) -> &[u8];

    /// The frame, writable.
    fn data_mut(&mut self) -> &mut [u8];

    /// Grows the frame by `n` bytes at the front, into the headroom, and returns the whole
    /// frame (now `n` bytes longer; the new front bytes are unspecified). `None`, with the
    /// frame unchanged, when the headroom is smaller than `n`.
    fn prepend(&mut self, n: usize) -> Option<&mut [u8]>;

    /// Removes `n` bytes from the front. `false`, with the frame unchanged, when it is
    /// shorter than `n`.
    fn adj(&mut self, n: usize) -> bool;
}

/// A [`PacketBuf`] over a `Vec<u8>`: `buf[head..]` is the frame, `buf[..head]` the headroom.
///
/// It allocates only in [`VecBuf::with_headroom`] / [`VecBuf::new`] and when
/// [`VecBuf::reset`] is given a frame larger than any before.
#[derive(Clone, PartialEq, Eq)]
pub struct VecBuf {
    buf: Vec<u8>,
    head: usize,
    /// The headroom [`VecBuf::reset`] restores.
    initial_headroom: usize,
}

impl VecBuf {
    /// Default headroom: DPDK's `RTE_PKTMBUF_HEADROOM`, 128 bytes.
    pub const DEFAULT_HEADROOM: usize = 128;

    /// A copy of `frame` with [`VecBuf::DEFAULT_HEADROOM`] bytes of headroom.
    #[must_use]
    pub fn new(frame: &[u8]) -> Self {
        Self::with_headroom(frame, Self::DEFAULT_HEADROOM)
    }

    /// A copy of `frame` with `headroom` bytes in front of it.
    #[must_use]
    pub fn with_headroom(frame: &[u8], headroom: usize) -> Self {
        let mut buf = Vec::with_capacity(headroom + frame.len());
        buf.resize(headroom, 0);
        buf.extend_from_slice(frame);
        Self {
            buf,
            head: headroom,
            initial_headroom: headroom,
        }
    }

    /// Replaces the frame with a copy of `frame` and restores the original headroom. Does not
    /// allocate when `frame` fits the capacity already held (benches refill buffers with it).
    pub fn reset(&mut self, frame: &[u8]) {
        self.buf.truncate(self.initial_headroom);
        self.buf.extend_from_slice(frame);
        self.head = self.initial_headroom;
    }

    /// Bytes free in front of the frame.
    #[must_use]
    pub fn headroom(&self) -> usize {
        self.head
    }

    /// The frame as an owned vector.
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        self.data().to_vec()
    }
}

impl PacketBuf for VecBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        self.buf.get(self.head..).unwrap_or_default()
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.head..).unwrap_or_default()
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        self.head = self.head.checked_sub(n)?;
        self.buf.get_mut(self.head..)
    }

    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        match self.head.checked_add(n) {
            Some(h) if h <= self.buf.len() => {
                self.head = h;
                true
            }
            _ => false,
        }
    }
}

impl fmt::Debug for VecBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VecBuf")
            .field("len", &self.data().len())
            .field("headroom", &self.head)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_and_adj() {
        let mut b = VecBuf::with_headroom(&[1, 2, 3], 4);
        assert_eq!(b.data(), &[1, 2, 3]);
        assert!(b.prepend(5).is_none());
        assert_eq!(b.data(), &[1, 2, 3]);
        let d = b.prepend(2).unwrap();
        assert_eq!(d.len(), 5);
        d[0] = 9;
        assert_eq!(b.data(), &[9, 0, 1, 2, 3]);
        assert_eq!(b.headroom(), 2);
        assert!(b.adj(3));
        assert_eq!(b.data(), &[2, 3]);
        assert!(!b.adj(3));
        assert!(b.adj(2));
        assert!(b.data().is_empty());
        b.reset(&[7, 8]);
        assert_eq!((b.data(), b.headroom()), (&[7u8, 8][..], 4));
    }
}
