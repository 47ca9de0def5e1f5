//! Maglev consistent-hashing tables: the builder `control` runs and the lookup workers do.
//!
//! A [`MaglevTable`] maps a flow hash to a backend slot: `table[hash % M]`. It is built from a
//! *set* of named, weighted backends ([`MaglevBackend`]) for a table size `M` ([`TableSize`])
//! chosen per service from [`MAGLEV_SIZES`].
//!
//! # Contract
//!
//! - **Same inputs, same bytes.** The table is a pure function of the set of `(name, weight)`
//!   pairs and `M`. Input order does not matter: backends are sorted by name (byte-wise) before
//!   anything else happens, and every tie is broken by that sorted position. Hashes are xxh3
//!   with the fixed seeds [`OFFSET_SEED`] and [`SKIP_SEED`], which give the same value on every
//!   machine, CPU and build. Every LB node therefore builds a byte-identical table, so a flow
//!   lands on the same backend whichever node the router picks.
//! - **Slot values.** Entry `s` names the backend at position `s` of the name-sorted backend
//!   list; [`MaglevTable::backend_order`] maps it back to the caller's input. Backends with
//!   weight 0 keep their position (so a draining backend stays addressable) but get no entries.
//!   A table with no positive weight has every entry equal to [`EMPTY`] (`u16::MAX`); otherwise
//!   no entry is [`EMPTY`].
//! - **Weights.** Backend `i` with weight `wᵢ` gets exactly `round(M·wᵢ/Σw)` entries, rounded by
//!   the largest-remainder method so the counts sum to `M`. So `|entriesᵢ/M − wᵢ/Σw| < 1/M`,
//!   which is under 0.4 % for the smallest `M` and 0.0015 % for the default. With equal weights
//!   the counts differ by at most one. A positive weight whose share is under one entry may get
//!   none.
//! - **Stable under change.** Population follows the Maglev paper (Eisenbud et al., NSDI 2016,
//!   §3.4), so removing or adding one backend moves little beyond the entries it must gain or
//!   lose (see `tests/maglev_quality.rs` for measured figures).
//! - `M` is never derived from the backend count: changing `M` moves nearly every flow. Keep
//!   `M ≥ 100 × backends` for an even spread (DESIGN, "Maglev").
//!
//! # Algorithm
//!
//! For backend name `n`: `offset = xxh3(n, OFFSET_SEED) mod M`,
//! `skip = xxh3(n, SKIP_SEED) mod (M − 1) + 1`, and its preference list is
//! `permutation[j] = (offset + j·skip) mod M` — a full cycle, since `M` is prime. Each backend
//! gets a target (its weighted entry count, above). Then passes run over the backends with
//! targets left, in sorted order; in each pass every such backend claims its next preferred
//! entry that is still empty. A backend leaves the passes when it reaches its target; the table
//! is full exactly when all have. With equal weights this is the paper's round-robin fill
//! entry for entry (the first `M mod N` backends in sorted order take the extra entry).
//!
//! # Compatibility (an ABI-like decision)
//!
//! The hash function (xxh3-64 as specified by the xxHash project), the two seeds, the sort
//! order, the size list and the fill order above together define every table. Changing any of
//! them changes the table of every service, which moves flows on nodes running the new build
//! but not on nodes still running the old one during a rolling upgrade. `tests/maglev_golden.rs`
//! freezes reference tables so such a change cannot happen by accident.
//!
//! # Cost
//!
//! Building probes each backend's permutation on the fly (`next = cur + skip`, minus `M` on
//! overflow; no multiply, no division) into one buffer of `M` entries. Expected work is about
//! `M·ln M` probes plus a sort of the `N` names. A [`MaglevBuilder`] keeps its scratch buffers,
//! and [`MaglevBuilder::build_into`] reuses the table's own, so rebuilding allocates nothing
//! once the buffers have grown.

use std::cmp::Reverse;
use std::fmt;

use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The table sizes a service may use: primes from 251 to 655 373, each roughly twice the last
/// (except the final step). Part of the compatibility contract; see the module docs.
pub const MAGLEV_SIZES: &[u32] = &[
    251, 509, 1_021, 2_039, 4_093, 8_191, 16_381, 32_749, 65_537, 131_071, 655_373,
];

/// The entry value of a table with no backend of positive weight: `u16::MAX`. A table with any
/// positive weight never contains it.
pub const EMPTY: u16 = u16::MAX;

/// The most backends one table can index: slots are `0..=65_533`. `u16::MAX` is [`EMPTY`], and
/// `u16::MAX - 1` is left unused as a reserve for a future sentinel.
pub const MAX_BACKENDS: usize = 65_534;

/// Seed of the xxh3 hash that gives a backend's `offset` (ASCII `"sluice:o"`, big-endian).
/// Changing it changes every table; see the module docs.
pub const OFFSET_SEED: u64 = u64::from_be_bytes(*b"sluice:o");

/// Seed of the xxh3 hash that gives a backend's `skip` (ASCII `"sluice:s"`, big-endian).
/// Changing it changes every table; see the module docs.
pub const SKIP_SEED: u64 = u64::from_be_bytes(*b"sluice:s");

/// Why a table size or a backend set was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MaglevError {
    /// The requested table size is not one of [`MAGLEV_SIZES`].
    #[error("invalid Maglev table size {0}: must be one of {MAGLEV_SIZES:?}")]
    InvalidSize(u32),
    /// Two backends share a name; names are the identity that every node hashes, so they must
    /// be unique. `first` and `second` are positions in the input slice (`first < second`).
    #[error("duplicate Maglev backend name {name:?} at inputs {first} and {second}")]
    DuplicateName {
        /// The shared name, lossily decoded as UTF-8.
        name: String,
        /// Position of one holder in the input slice.
        first: usize,
        /// Position of the other holder in the input slice.
        second: usize,
    },
    /// More backends than slot values exist (see [`MAX_BACKENDS`]).
    #[error("{count} Maglev backends exceed the limit of {MAX_BACKENDS}")]
    TooManyBackends {
        /// How many backends were passed.
        count: usize,
    },
    /// More backends of positive weight than table entries. Choose a larger [`TableSize`]; the
    /// size is never raised automatically because that would move every flow.
    #[error("{count} weighted Maglev backends do not fit a table of size {size}")]
    TableTooSmall {
        /// How many backends have a positive weight.
        count: usize,
        /// The table size that was requested.
        size: u32,
    },
}

/// A validated Maglev table size `M`: one of [`MAGLEV_SIZES`]. Defaults to 65 537.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableSize(u32);

// === impl TableSize ===

impl TableSize {
    /// The default size, 65 537 entries (128 KiB of `u16`).
    pub const DEFAULT: Self = Self(65_537);

    /// Validates `m` against [`MAGLEV_SIZES`].
    ///
    /// # Errors
    ///
    /// [`MaglevError::InvalidSize`] if `m` is not in the list.
    pub fn try_new(m: u32) -> Result<Self, MaglevError> {
        if MAGLEV_SIZES.contains(&m) {
            Ok(Self(m))
        } else {
            Err(MaglevError::InvalidSize(m))
        }
    }

    /// `M` as a number.
    #[inline]
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// `M` as a length.
    #[inline]
    #[must_use]
    pub fn as_usize(self) -> usize {
        // At most 655 373: `usize` is at least 32 bits on every target we build for.
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl Default for TableSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for TableSize {
    type Error = MaglevError;

    fn try_from(m: u32) -> Result<Self, MaglevError> {
        Self::try_new(m)
    }
}

impl fmt::Display for TableSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One input backend: a stable name (what every node hashes) and a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaglevBackend<'a> {
    /// The backend's stable identity, e.g. `"10.0.0.7:8080"` or a pod UID. Unique within a
    /// table. Only its bytes matter.
    pub name: &'a [u8],
    /// Relative share of entries. 0 means "in the backend list but given no entries"
    /// (draining).
    pub weight: u32,
}

// === impl MaglevBackend ===

impl<'a> MaglevBackend<'a> {
    /// A backend named by a string.
    #[must_use]
    pub const fn new(name: &'a str, weight: u32) -> Self {
        Self {
            name: name.as_bytes(),
            weight,
        }
    }

    /// A backend named by raw bytes.
    #[must_use]
    pub const fn from_bytes(name: &'a [u8], weight: u32) -> Self {
        Self { name, weight }
    }
}

/// A built Maglev table: `M` entries of backend slots, plus the slot → input mapping.
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    size: TableSize,
    /// `M` entries; each a slot `< order.len()`, or all [`EMPTY`].
    slots: Vec<u16>,
    /// Slot → position in the input slice; the inputs sorted by name.
    order: Vec<usize>,
}

// === impl MaglevTable ===

impl MaglevTable {
    /// A table of `size` entries, all [`EMPTY`], with no backends. A starting value for
    /// [`MaglevBuilder::build_into`].
    #[must_use]
    pub fn empty(size: TableSize) -> Self {
        Self {
            size,
            slots: vec![EMPTY; size.as_usize()],
            order: Vec::new(),
        }
    }

    /// The table size `M`.
    #[inline]
    #[must_use]
    pub fn size(&self) -> TableSize {
        self.size
    }

    /// The `M` entries. Each is a slot (an index into [`backend_order`](Self::backend_order)),
    /// or every one is [`EMPTY`] when no backend has a positive weight.
    #[inline]
    #[must_use]
    pub fn as_slice(&self) -> &[u16] {
        &self.slots
    }

    /// The slot for a flow: `table[hash % M]`. [`EMPTY`] when the table has no backends.
    #[inline]
    #[must_use]
    pub fn lookup(&self, hash: u64) -> u16 {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "hash % M < M <= 655 373, which fits any usize"
        )]
        let i = (hash % u64::from(self.size.get())) as usize;
        self.slots.get(i).copied().unwrap_or(EMPTY)
    }

    /// Slot → input position: `backend_order()[s]` is the index, in the `backends` slice this
    /// table was built from, of the backend whose entries read `s`. Covers every input,
    /// weight-0 ones included; their names are strictly increasing along it.
    #[inline]
    #[must_use]
    pub fn backend_order(&self) -> &[usize] {
        &self.order
    }

    /// Whether no entry names a backend (all [`EMPTY`]): there was no positive weight.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.first().is_none_or(|&s| s == EMPTY)
    }

    /// The entries, giving up the slot mapping.
    #[must_use]
    pub fn into_slots(self) -> Box<[u16]> {
        self.slots.into_boxed_slice()
    }
}

impl fmt::Debug for MaglevTable {
    // The entries are too many to print; show the shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.size.get())
            .field("backends", &self.order.len())
            .field("empty", &self.is_empty())
            .finish_non_exhaustive()
    }
}

/// One backend's position in its permutation while filling.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// The next entry of the permutation to probe (`< M`).
    next: u32,
    /// `skip ∈ [1, M − 1]`.
    skip: u32,
    /// Entries still to claim (`> 0` while the cursor is in the active list).
    left: u32,
    /// The backend's slot (sorted position).
    slot: u16,
}

/// Builds [`MaglevTable`]s, keeping its scratch buffers between builds so that rebuilding many
/// services allocates nothing once the buffers have grown to the largest backend count.
#[derive(Debug, Default, Clone)]
pub struct MaglevBuilder {
    /// Input positions sorted by name.
    order: Vec<usize>,
    /// Active cursors, in slot order.
    cursors: Vec<Cursor>,
    /// `(remainder, cursor index)` for the largest-remainder rounding.
    remainders: Vec<(u64, u32)>,
}

// === impl MaglevBuilder ===

impl MaglevBuilder {
    /// A builder with empty scratch buffers.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the table for `backends` at `size` into a new allocation.
    ///
    /// # Errors
    ///
    /// As [`build_into`](Self::build_into).
    pub fn build(
        &mut self,
        size: TableSize,
        backends: &[MaglevBackend<'_>],
    ) -> Result<MaglevTable, MaglevError> {
        let mut table = MaglevTable {
            size,
            slots: Vec::new(),
            order: Vec::new(),
        };
        self.build_into(size, backends, &mut table)?;
        Ok(table)
    }

    /// Builds the table for `backends` at `size` into `table`, reusing its buffers (its
    /// previous size and contents do not matter).
    ///
    /// # Errors
    ///
    /// - [`MaglevError::TooManyBackends`] for more than [`MAX_BACKENDS`] backends;
    /// - [`MaglevError::DuplicateName`] if two backends share a name;
    /// - [`MaglevError::TableTooSmall`] if more backends have a positive weight than `size`.
    ///
    /// On error `table` is left unchanged. All weights zero (or no backends) is not an error:
    /// it gives an all-[`EMPTY`] table.
    pub fn build_into(
        &mut self,
        size: TableSize,
        backends: &[MaglevBackend<'_>],
        table: &mut MaglevTable,
    ) -> Result<(), MaglevError> {
        self.prepare(size, backends)?;

        let m = size.get();
        table.size = size;
        table.order.clear();
        table.order.extend_from_slice(&self.order);
        table.slots.clear();
        table.slots.resize(size.as_usize(), EMPTY);
        fill(m, &mut self.cursors, &mut table.slots);
        Ok(())
    }

    /// Validates, sorts, and sets up one cursor per backend with a positive target.
    fn prepare(
        &mut self,
        size: TableSize,
        backends: &[MaglevBackend<'_>],
    ) -> Result<(), MaglevError> {
        if backends.len() > MAX_BACKENDS {
            return Err(MaglevError::TooManyBackends {
                count: backends.len(),
            });
        }

        self.order.clear();
        self.order.extend(0..backends.len());
        self.order
            .sort_unstable_by(|&a, &b| backends[a].name.cmp(backends[b].name));
        if let Some(pair) = self
            .order
            .windows(2)
            .find(|w| backends[w[0]].name == backends[w[1]].name)
        {
            return Err(MaglevError::DuplicateName {
                name: String::from_utf8_lossy(backends[pair[0]].name).into_owned(),
                first: pair[0].min(pair[1]),
                second: pair[0].max(pair[1]),
            });
        }

        let m = size.get();
        let weighted = backends.iter().filter(|b| b.weight > 0).count();
        if weighted > size.as_usize() {
            return Err(MaglevError::TableTooSmall {
                count: weighted,
                size: m,
            });
        }

        self.cursors.clear();
        self.remainders.clear();
        let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return Ok(());
        }

        // Targets: floor(M·w/Σw) each, then one more for the largest remainders (ties to the
        // lower slot) until they sum to M. No overflow: M·w ≤ 655 373 · (2³² − 1) < 2⁵² and
        // Σw < 2⁴⁸.
        let mut assigned: u64 = 0;
        for (slot, &input) in self.order.iter().enumerate() {
            let weight = backends[input].weight;
            if weight == 0 {
                continue;
            }
            let share = u64::from(m) * u64::from(weight);
            let floor = share / total;
            assigned += floor;
            let cursor = u32::try_from(self.cursors.len()).unwrap_or(u32::MAX);
            self.remainders.push((share % total, cursor));
            let name = backends[input].name;
            let offset = xxh3_64_with_seed(name, OFFSET_SEED) % u64::from(m);
            let skip = xxh3_64_with_seed(name, SKIP_SEED) % u64::from(m - 1) + 1;
            self.cursors.push(Cursor {
                // All three are below M (floor ≤ M), so they fit u32; slot < MAX_BACKENDS.
                next: u32::try_from(offset).unwrap_or(0),
                skip: u32::try_from(skip).unwrap_or(1),
                left: u32::try_from(floor).unwrap_or(0),
                slot: u16::try_from(slot).unwrap_or(EMPTY),
            });
        }
        // Σ floor > M − (number of weighted backends) ≥ 0, so this is in [0, weighted).
        let extra = usize::try_from(u64::from(m) - assigned).unwrap_or(0);
        if extra > 0 {
            // Cursor indices are unique, so this order is total and the result deterministic.
            self.remainders
                .sort_unstable_by_key(|&(rem, cursor)| (Reverse(rem), cursor));
            for &(_, cursor) in &self.remainders[..extra] {
                if let Some(c) = usize::try_from(cursor)
                    .ok()
                    .and_then(|i| self.cursors.get_mut(i))
                {
                    c.left += 1;
                }
            }
        }
        self.cursors.retain(|c| c.left > 0);
        Ok(())
    }
}

/// Runs the passes: each active cursor claims its next empty preferred entry, in slot order,
/// until every target is met. `slots` has `m` entries, all [`EMPTY`]; the cursors' targets
/// sum to `m` (or there are none).
fn fill(m: u32, cursors: &mut Vec<Cursor>, slots: &mut [u16]) {
    while !cursors.is_empty() {
        let mut kept = 0;
        for i in 0..cursors.len() {
            let mut c = cursors[i];
            // Terminates: while a target is unmet fewer than `m` entries are claimed, and the
            // permutation visits every entry (`skip` is coprime to the prime `m`).
            loop {
                let probe = c.next;
                c.next += c.skip; // < 2·M: no overflow.
                if c.next >= m {
                    c.next -= m;
                }
                let entry = &mut slots[probe as usize];
                if *entry == EMPTY {
                    *entry = c.slot;
                    break;
                }
            }
            c.left -= 1;
            if c.left > 0 {
                cursors[kept] = c;
                kept += 1;
            }
        }
        cursors.truncate(kept);
    }
}

/// Builds one table with a fresh [`MaglevBuilder`]. Use a kept builder to rebuild many tables
/// without reallocating.
///
/// # Errors
///
/// As [`MaglevBuilder::build_into`].
pub fn build(size: TableSize, backends: &[MaglevBackend<'_>]) -> Result<MaglevTable, MaglevError> {
    MaglevBuilder::new().build(size, backends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_prime(n: u32) -> bool {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn sizes_are_increasing_primes_and_default_is_listed() {
        assert!(MAGLEV_SIZES.iter().all(|&m| is_prime(m)));
        assert!(MAGLEV_SIZES.windows(2).all(|w| w[0] < w[1]));
        assert!(MAGLEV_SIZES.contains(&TableSize::DEFAULT.get()));
        assert_eq!(TableSize::default(), TableSize::DEFAULT);
        assert!(*MAGLEV_SIZES.last().unwrap() as usize >= 100 * 1000);
    }

    #[test]
    fn seeds_are_the_documented_ascii() {
        assert_eq!(OFFSET_SEED, 0x736c_7569_6365_3a6f);
        assert_eq!(SKIP_SEED, 0x736c_7569_6365_3a73);
    }

    #[test]
    fn targets_sum_to_m_and_follow_largest_remainder() {
        let size = TableSize::try_new(251).unwrap();
        // Shares 251·w/10: 25.1, 50.2, 75.3, 100.4 → floors 250, one extra to the largest
        // remainder (0.4, the weight-4 backend).
        let backends = [
            MaglevBackend::new("a", 1),
            MaglevBackend::new("b", 2),
            MaglevBackend::new("c", 3),
            MaglevBackend::new("d", 4),
        ];
        let t = build(size, &backends).unwrap();
        let mut counts = [0u32; 4];
        for &s in t.as_slice() {
            counts[usize::from(s)] += 1;
        }
        assert_eq!(counts, [25, 50, 75, 101]);
    }

    #[test]
    fn lookup_is_hash_mod_m() {
        let size = TableSize::try_new(509).unwrap();
        let backends: Vec<String> = (0..7).map(|i| format!("b{i}")).collect();
        let input: Vec<_> = backends.iter().map(|n| MaglevBackend::new(n, 1)).collect();
        let t = build(size, &input).unwrap();
        for h in [0u64, 1, 508, 509, 510, u64::MAX, 0xdead_beef_cafe] {
            assert_eq!(t.lookup(h), t.as_slice()[(h % 509) as usize]);
        }
        assert_eq!(MaglevTable::empty(size).lookup(42), EMPTY);
    }

    #[test]
    fn build_into_leaves_table_unchanged_on_error() {
        let size = TableSize::try_new(251).unwrap();
        let mut b = MaglevBuilder::new();
        let mut t = b.build(size, &[MaglevBackend::new("x", 1)]).unwrap();
        let before = t.clone();
        let dup = [MaglevBackend::new("y", 1), MaglevBackend::new("y", 2)];
        assert!(b.build_into(TableSize::DEFAULT, &dup, &mut t).is_err());
        assert_eq!(t, before);
    }
}
