//! [`PageSize`]: a validated memory page size (always a non-zero power of two) and the
//! arithmetic regions need (rounding up, page counts).
//!
//! Parsing accepts the spellings the kernel and people use: `2M`, `2MB`, `2MiB`, `2048kB`,
//! `2048K`, `1G`, `1024M`, and plain bytes (`2097152`). Units are binary (K = 1024) and
//! case-insensitive. Display picks the largest exact unit: `4K`, `2M`, `1G`.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::error::HugepageError;

/// A page size in bytes; always a non-zero power of two.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageSize(u64);

// === impl PageSize ===

impl PageSize {
    /// 4 KiB, the x86-64 base page.
    pub const SIZE_4K: Self = Self(4 << 10);
    /// 2 MiB, the usual default hugepage size on x86-64.
    pub const SIZE_2M: Self = Self(2 << 20);
    /// 1 GiB, the large x86-64 hugepage size.
    pub const SIZE_1G: Self = Self(1 << 30);

    /// A page size of `bytes`, or `None` unless `bytes` is a non-zero power of two.
    #[must_use]
    pub const fn new(bytes: u64) -> Option<Self> {
        if bytes.is_power_of_two() {
            Some(Self(bytes))
        } else {
            None
        }
    }

    /// A page size of `kib` KiB (the unit of `/proc/meminfo` and sysfs directory names).
    #[must_use]
    pub fn from_kib(kib: u64) -> Option<Self> {
        kib.checked_mul(1024).and_then(Self::new)
    }

    /// The base (smallest) page size of this machine, from `sysconf(_SC_PAGESIZE)`; 4 KiB if
    /// the call fails.
    #[must_use]
    pub fn base() -> Self {
        static BASE: OnceLock<PageSize> = OnceLock::new();
        *BASE.get_or_init(|| {
            // SAFETY: sysconf takes a plain integer name, touches no caller memory and is
            // thread-safe; _SC_PAGESIZE is a valid name on every Linux libc.
            let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            u64::try_from(raw)
                .ok()
                .and_then(Self::new)
                .unwrap_or(Self::SIZE_4K)
        })
    }

    /// The size in bytes.
    #[inline]
    #[must_use]
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size in KiB, rounded down (0 only for sizes under 1 KiB).
    #[inline]
    #[must_use]
    pub const fn kib(self) -> u64 {
        self.0 / 1024
    }

    /// `len` rounded up to a multiple of this page size, or `None` on overflow.
    #[must_use]
    pub const fn round_up(self, len: u64) -> Option<u64> {
        let mask = self.0 - 1;
        match len.checked_add(mask) {
            Some(v) => Some(v & !mask),
            None => None,
        }
    }

    /// How many pages `len` bytes occupy (rounded up), or `None` on overflow.
    #[must_use]
    pub const fn pages_for(self, len: u64) -> Option<u64> {
        match self.round_up(len) {
            Some(v) => Some(v / self.0),
            None => None,
        }
    }

    /// True when `len` is a multiple of this page size (0 included).
    #[must_use]
    pub const fn is_aligned(self, len: u64) -> bool {
        len & (self.0 - 1) == 0
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "T"),
            (1 << 30, "G"),
            (1 << 20, "M"),
            (1 << 10, "K"),
        ];
        for (unit, suffix) in UNITS {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", self.0 / unit);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl fmt::Debug for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PageSize {
    type Err = HugepageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = parse_size(s).ok_or_else(|| HugepageError::InvalidPageSize(s.to_owned()))?;
        Self::new(bytes).ok_or_else(|| HugepageError::InvalidPageSize(s.to_owned()))
    }
}

/// Parses `<digits>[K|M|G|T][B|iB]` (case-insensitive units, binary multiples) into bytes, the
/// way the kernel's `memparse` reads `pagesize=` and the way `/proc/meminfo` writes `kB`.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    if digits.is_empty() {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    value.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_and_human_spellings() {
        for (text, bytes) in [
            ("2M", 2 << 20),
            ("2m", 2 << 20),
            ("2MB", 2 << 20),
            ("2MiB", 2 << 20),
            ("2048kB", 2 << 20),
            ("2048 kB", 2 << 20),
            ("2048K", 2 << 20),
            ("1G", 1 << 30),
            ("1024M", 1 << 30),
            ("4096", 4096),
            (" 1g ", 1 << 30),
        ] {
            let got: PageSize = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got.bytes(), bytes, "{text}");
        }
    }

    #[test]
    fn rejects_bad_page_sizes() {
        for text in [
            "",
            "M",
            "3M",
            "0",
            "2X",
            "2MBB",
            "-2M",
            "99999999999999999999G",
            "1.5G",
        ] {
            assert!(
                text.parse::<PageSize>().is_err(),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn displays_largest_exact_unit() {
        assert_eq!(PageSize::SIZE_4K.to_string(), "4K");
        assert_eq!(PageSize::SIZE_2M.to_string(), "2M");
        assert_eq!(PageSize::SIZE_1G.to_string(), "1G");
        assert_eq!(
            PageSize::new(512).map(|p| p.to_string()).as_deref(),
            Some("512B")
        );
    }

    #[test]
    fn rounds_and_counts_pages() {
        let p = PageSize::SIZE_2M;
        assert_eq!(p.round_up(1), Some(2 << 20));
        assert_eq!(p.round_up(2 << 20), Some(2 << 20));
        assert_eq!(p.round_up((2 << 20) + 1), Some(4 << 20));
        assert_eq!(p.round_up(0), Some(0));
        assert_eq!(p.round_up(u64::MAX), None);
        assert_eq!(p.pages_for(3 << 20), Some(2));
        assert!(p.is_aligned(4 << 20));
        assert!(!p.is_aligned(4096));
        assert_eq!(PageSize::from_kib(2048), Some(p));
        assert_eq!(PageSize::from_kib(3), None);
        assert!(PageSize::base().bytes() >= 4096);
    }
}
