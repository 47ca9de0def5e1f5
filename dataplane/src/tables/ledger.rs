//! The writer's bookkeeping, free of any region access so it can be tested on its own: the
//! current directory, which arena blocks, directory slots and service indices are in use,
//! and which were retired at which generation.
//!
//! # Retirement rule
//!
//! A resource *retired at* generation `r` was referenced by generations before `r` only. It is
//! reclaimed once every live worker has acked a generation `≥ r` ([`Ledger::reclaim`] is given
//! that minimum): from then on no live worker reads a generation that references it, and a
//! worker that registers later starts at the published generation, which is `≥ r`.
//! Retirements are queued in generation order, so reclaiming pops a prefix.
//!
//! Publication is two-phase so nothing is half-applied on error: [`Ledger::begin`] reserves a
//! free directory slot, new service indices and new arena blocks (rolling all back if any is
//! missing) and builds the next directory; the writer fills the blocks and the slot and
//! publishes; [`Ledger::commit`] then retires what the new generation no longer references.

use std::collections::{BTreeSet, VecDeque};

use hashbrown::HashMap;

use super::alloc::{ArenaAlloc, Block};
use super::layout::{
    Generation, Geometry, MAX_GENERATION, SERVICE_IN_USE, ServiceEntry, ServiceKey, block_len,
};

/// What a retired resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    /// An arena block (one service version).
    Block(Block),
    /// A directory slot.
    DirSlot(u32),
    /// A directory index (a removed service's counters stay attributed to it until reclaimed).
    Index(u32),
}

/// One change, as the ledger sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// Insert or replace the service `entry.key()`; its block needs `entry`'s backends and
    /// table. Offsets and version are filled in by [`Ledger::begin`].
    Upsert(ServiceEntry),
    /// Remove the service (a no-op when absent).
    Remove(ServiceKey),
}

impl Shape {
    fn key(&self) -> Option<ServiceKey> {
        match self {
            Self::Upsert(e) => e.key(),
            Self::Remove(k) => Some(*k),
        }
    }
}

/// Why [`Ledger::begin`] refused a change set. The writer maps it to its public error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BeginError {
    /// No directory slot is free.
    NoDirSlot,
    /// No arena block of `needed` bytes is free.
    Arena {
        /// Bytes needed for the first block that did not fit.
        needed: u64,
        /// The largest free block at that moment.
        largest_free: u64,
    },
    /// No directory index is free for a new service.
    Services,
    /// The same key appears twice in the change set.
    Duplicate(ServiceKey),
    /// An entry has no valid key.
    BadKey,
    /// Generations are exhausted.
    Generations,
}

/// A reserved, not yet published generation.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The generation being written.
    pub generation: Generation,
    /// The directory slot to write it into.
    pub dir_slot: u32,
    /// The next directory: `max_services` entries, the first `count` meaningful.
    pub entries: Vec<ServiceEntry>,
    /// `entries[..count]` is written.
    pub count: u32,
    /// For each change, by position: the directory index and the new block of an upsert.
    pub writes: Vec<Option<(u32, Block)>>,
    /// Indices newly taken by this plan.
    new_indices: Vec<u32>,
}

/// What [`Ledger::reclaim`] freed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Freed {
    /// Blocks returned to the allocator.
    pub blocks: usize,
    /// Directory slots made free.
    pub dir_slots: usize,
    /// Directory indices made free (their counters should be zeroed before reuse).
    pub indices: Vec<u32>,
}

/// The writer's bookkeeping; see the module docs.
#[derive(Debug)]
pub(crate) struct Ledger {
    alloc: ArenaAlloc,
    generation: Generation,
    current_dir: u32,
    free_dirs: BTreeSet<u32>,
    free_indices: BTreeSet<u32>,
    /// The published directory, `max_services` long.
    entries: Vec<ServiceEntry>,
    count: u32,
    /// The block of each in-use index.
    blocks: Vec<Option<Block>>,
    by_key: HashMap<ServiceKey, u32>,
    retired: VecDeque<(Generation, Resource)>,
    spare: Vec<ServiceEntry>,
}

fn usize_of(x: u32) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

/// The block an entry's backends and table occupy, if it has the writer's shape (backends
/// then table, contiguous, block-aligned).
pub(crate) fn entry_block(e: &ServiceEntry) -> Option<Block> {
    let len = block_len(e.n_backends, e.table_size)?;
    let (b_off, b_len) = e.backends_span()?;
    if e.table_offset != b_off.checked_add(b_len)? {
        return None;
    }
    Some(Block { offset: b_off, len })
}

impl Ledger {
    /// The ledger of a freshly created region: generation 1 in slot 0, empty.
    pub(crate) fn new(geo: &Geometry) -> Self {
        let services = geo.capacity.max_services;
        Self {
            alloc: ArenaAlloc::new(geo.arena_len),
            generation: Generation(1),
            current_dir: 0,
            free_dirs: (1..geo.capacity.dir_slots).collect(),
            free_indices: (0..services).collect(),
            entries: vec![ServiceEntry::default(); usize_of(services)],
            count: 0,
            blocks: vec![None; usize_of(services)],
            by_key: HashMap::new(),
            retired: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    /// The ledger of an existing region, for a writer that re-attaches: `current` is the
    /// published generation's slot and entries; `older` are the other slots that hold a
    /// generation below it, newest first. Blocks the current directory references are live;
    /// blocks only older slots reference, and those slots, are retired at the current
    /// generation (a worker may still read them); an older block that overlaps a newer one was
    /// already reused, so that older slot cannot be read any more and the block is ignored.
    ///
    /// # Errors
    ///
    /// A static description when the current directory is inconsistent (bad key, a block
    /// outside the arena or overlapping another, a duplicate key).
    pub(crate) fn restore(
        geo: &Geometry,
        generation: Generation,
        current_dir: u32,
        current: &[ServiceEntry],
        older: &[(u32, Vec<ServiceEntry>)],
    ) -> Result<Self, &'static str> {
        let mut this = Self::new(geo);
        this.generation = generation;
        this.current_dir = current_dir;
        this.free_dirs = (0..geo.capacity.dir_slots)
            .filter(|&s| s != current_dir)
            .collect();
        if current.len() > this.entries.len() {
            return Err("directory longer than capacity");
        }
        this.count = u32::try_from(current.len()).map_err(|_| "directory too long")?;
        for (i, e) in current.iter().enumerate() {
            this.entries[i] = *e;
            if !e.in_use() {
                continue;
            }
            let index = u32::try_from(i).map_err(|_| "index overflow")?;
            let key = e.key().ok_or("entry with an unknown address family")?;
            let block = entry_block(e).ok_or("entry not laid out by a writer")?;
            if !geo.arena_span_ok(block.offset, block.len) {
                return Err("entry block outside the arena");
            }
            this.alloc
                .reserve(block)
                .map_err(|_| "entry blocks overlap")?;
            if this.by_key.insert(key, index).is_some() {
                return Err("duplicate service key");
            }
            this.blocks[i] = Some(block);
            this.free_indices.remove(&index);
        }
        for (slot, entries) in older {
            if *slot == current_dir || *slot >= geo.capacity.dir_slots {
                continue;
            }
            for e in entries.iter().filter(|e| e.in_use()) {
                let Some(block) = entry_block(e) else {
                    continue;
                };
                if this.blocks.iter().flatten().any(|b| *b == block) {
                    continue; // shared with the current directory: live
                }
                if this.alloc.reserve(block).is_ok() {
                    this.retired.push_back((generation, Resource::Block(block)));
                }
            }
            this.free_dirs.remove(slot);
            this.retired
                .push_back((generation, Resource::DirSlot(*slot)));
        }
        // Indices not in use now may still be counted into by a worker on an older generation.
        let idle: Vec<u32> = this.free_indices.iter().copied().collect();
        for i in idle.into_iter().filter(|&i| i < this.count) {
            this.free_indices.remove(&i);
            this.retired.push_back((generation, Resource::Index(i)));
        }
        Ok(this)
    }

    /// The published generation.
    pub(crate) fn generation(&self) -> Generation {
        self.generation
    }

    /// The published directory slot.
    pub(crate) fn current_dir(&self) -> u32 {
        self.current_dir
    }

    /// The published directory's meaningful entries.
    pub(crate) fn entries(&self) -> &[ServiceEntry] {
        &self.entries[..usize_of(self.count)]
    }

    /// The directory index of `key`, if published.
    pub(crate) fn index_of(&self, key: &ServiceKey) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// The allocator (for free-space figures).
    pub(crate) fn alloc(&self) -> &ArenaAlloc {
        &self.alloc
    }

    /// Resources waiting for acks.
    pub(crate) fn retired_len(&self) -> usize {
        self.retired.len()
    }

    /// Reserves everything `changes` needs and builds the next directory. Nothing is changed
    /// on error.
    pub(crate) fn begin(&mut self, changes: &[Shape]) -> Result<Plan, BeginError> {
        if self.generation.get() >= MAX_GENERATION {
            return Err(BeginError::Generations);
        }
        let generation = self.generation.next();
        // Duplicate keys make the change set ambiguous.
        let mut keys: HashMap<ServiceKey, ()> = HashMap::with_capacity(changes.len());
        for c in changes {
            let key = match c {
                Shape::Upsert(e) => e.key().ok_or(BeginError::BadKey)?,
                Shape::Remove(k) => *k,
            };
            if keys.insert(key, ()).is_some() {
                return Err(BeginError::Duplicate(key));
            }
        }
        let dir_slot = *self.free_dirs.first().ok_or(BeginError::NoDirSlot)?;
        let mut plan = Plan {
            generation,
            dir_slot,
            entries: std::mem::take(&mut self.spare),
            count: self.count,
            writes: Vec::with_capacity(changes.len()),
            new_indices: Vec::new(),
        };
        for c in changes {
            let (Shape::Upsert(e), Some(key)) = (c, c.key()) else {
                plan.writes.push(None);
                continue;
            };
            let index = match self.by_key.get(&key) {
                Some(&i) => i,
                None => {
                    let Some(i) = self.free_indices.pop_first() else {
                        self.rollback(plan);
                        return Err(BeginError::Services);
                    };
                    plan.new_indices.push(i);
                    i
                }
            };
            let needed = block_len(e.n_backends, e.table_size).unwrap_or(u64::MAX);
            let Some(block) = self.alloc.alloc(needed) else {
                let largest_free = self.alloc.largest_free();
                self.rollback(plan);
                return Err(BeginError::Arena {
                    needed,
                    largest_free,
                });
            };
            plan.writes.push(Some((index, block)));
        }
        // Build the next directory: a copy of the current one with the changes applied.
        plan.entries.clear();
        plan.entries.extend_from_slice(&self.entries);
        for (c, w) in changes.iter().zip(&plan.writes) {
            match (c, w) {
                (Shape::Upsert(e), Some((index, block))) => {
                    let mut e = *e;
                    e.flags |= SERVICE_IN_USE;
                    e.version = generation.get();
                    e.backends_offset = block.offset;
                    e.table_offset =
                        block.offset + u64::from(e.n_backends) * super::layout::BACKEND_ENTRY_SIZE;
                    plan.entries[usize_of(*index)] = e;
                    plan.count = plan.count.max(index + 1);
                }
                (Shape::Remove(k), _) => {
                    if let Some(&i) = self.by_key.get(k) {
                        plan.entries[usize_of(i)] = ServiceEntry::default();
                    }
                }
                (Shape::Upsert(_), None) => {}
            }
        }
        Ok(plan)
    }

    fn rollback(&mut self, plan: Plan) {
        for (_, block) in plan.writes.into_iter().flatten() {
            self.alloc.free(block);
        }
        self.free_indices.extend(plan.new_indices);
        self.spare = plan.entries;
    }

    /// Gives back a plan that will not be published.
    pub(crate) fn abort(&mut self, plan: Plan) {
        self.rollback(plan);
    }

    /// Records that `plan` was published: it becomes the current directory, and whatever it
    /// no longer references is retired at its generation.
    pub(crate) fn commit(&mut self, changes: &[Shape], mut plan: Plan) {
        let g = plan.generation;
        self.retired
            .push_back((g, Resource::DirSlot(self.current_dir)));
        self.free_dirs.remove(&plan.dir_slot);
        for (c, w) in changes.iter().zip(&plan.writes) {
            match (c, w) {
                (Shape::Upsert(e), Some((index, block))) => {
                    let i = usize_of(*index);
                    if let Some(old) = self.blocks[i].replace(*block) {
                        self.retired.push_back((g, Resource::Block(old)));
                    }
                    if let Some(key) = e.key() {
                        self.by_key.insert(key, *index);
                    }
                }
                (Shape::Remove(k), _) => {
                    if let Some(i) = self.by_key.remove(k) {
                        if let Some(old) = self.blocks[usize_of(i)].take() {
                            self.retired.push_back((g, Resource::Block(old)));
                        }
                        self.retired.push_back((g, Resource::Index(i)));
                    }
                }
                (Shape::Upsert(_), None) => {}
            }
        }
        self.generation = g;
        self.current_dir = plan.dir_slot;
        self.count = plan.count;
        std::mem::swap(&mut self.entries, &mut plan.entries);
        self.spare = plan.entries;
    }

    /// Frees every resource retired at a generation `≤ safe`, where `safe` is the lowest
    /// generation any live worker has acked (or the current generation when none is live).
    pub(crate) fn reclaim(&mut self, safe: Generation) -> Freed {
        let safe = safe.min(self.generation);
        let mut freed = Freed::default();
        while let Some(&(at, r)) = self.retired.front() {
            if at > safe {
                break;
            }
            self.retired.pop_front();
            match r {
                Resource::Block(b) => {
                    self.alloc.free(b);
                    freed.blocks += 1;
                }
                Resource::DirSlot(s) => {
                    self.free_dirs.insert(s);
                    freed.dir_slots += 1;
                }
                Resource::Index(i) => {
                    self.free_indices.insert(i);
                    freed.indices.push(i);
                }
            }
        }
        freed
    }

    /// Every block held, live or retired (a test aid).
    #[cfg(test)]
    fn held(&self) -> Vec<Block> {
        let mut v: Vec<Block> = self.blocks.iter().flatten().copied().collect();
        v.extend(self.retired.iter().filter_map(|(_, r)| match r {
            Resource::Block(b) => Some(*b),
            _ => None,
        }));
        v
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::tables::layout::{Capacity, Mode};

    fn geo(services: u32, dirs: u32, arena: u64) -> Geometry {
        Geometry::new(Capacity {
            max_services: services,
            max_workers: 4,
            dir_slots: dirs,
            arena_bytes: arena,
        })
        .unwrap()
    }

    fn upsert(svc: u8, n: u32, m: u32) -> Shape {
        let mut e = ServiceEntry::default();
        ServiceKey::from_v4([10, 0, 0, svc], 80, 6).store(&mut e);
        e.mode = Mode::Nat as u8;
        e.n_backends = n;
        e.table_size = m;
        Shape::Upsert(e)
    }

    fn key(svc: u8) -> ServiceKey {
        ServiceKey::from_v4([10, 0, 0, svc], 80, 6)
    }

    fn publish(l: &mut Ledger, changes: &[Shape]) -> Result<Plan, BeginError> {
        let plan = l.begin(changes)?;
        let copy = Plan {
            generation: plan.generation,
            dir_slot: plan.dir_slot,
            entries: plan.entries.clone(),
            count: plan.count,
            writes: plan.writes.clone(),
            new_indices: Vec::new(),
        };
        l.commit(changes, plan);
        Ok(copy)
    }

    #[test]
    fn update_replaces_one_block_and_retires_the_old() {
        let g = geo(4, 3, 64 * 1024);
        let mut l = Ledger::new(&g);
        let p = publish(&mut l, &[upsert(1, 2, 251), upsert(2, 2, 251)]).unwrap();
        assert_eq!(p.generation, Generation(2));
        let before = l.entries().to_vec();
        let p = publish(&mut l, &[upsert(2, 3, 251)]).unwrap();
        assert_eq!(p.generation, Generation(3));
        // Service 1's entry, and so its block, is untouched; service 2 has a new block.
        assert_eq!(l.entries()[0], before[0]);
        assert_ne!(l.entries()[1].backends_offset, before[1].backends_offset);
        assert_eq!(l.entries()[1].version, 3);
        assert_eq!(l.retired_len(), 3); // dir slot of gen 1, dir slot of gen 2, old block
        // Nothing is reclaimed while a worker is on gen 2.
        assert_eq!(
            l.reclaim(Generation(2)),
            Freed {
                blocks: 0,
                dir_slots: 1,
                indices: vec![]
            }
        );
        let f = l.reclaim(Generation(3));
        assert_eq!((f.blocks, f.dir_slots), (1, 1));
        l.alloc.check(&l.held());
    }

    #[test]
    fn failures_roll_back() {
        let g = geo(2, 2, 4096);
        let mut l = Ledger::new(&g);
        assert_eq!(
            l.begin(&[upsert(1, 1, 251), upsert(1, 1, 251)])
                .unwrap_err(),
            BeginError::Duplicate(key(1))
        );
        // 2 × 576 fits, a third service does not have an index.
        publish(&mut l, &[upsert(1, 1, 251), upsert(2, 1, 251)]).unwrap();
        assert_eq!(
            l.begin(&[upsert(3, 1, 251)]).unwrap_err(),
            BeginError::NoDirSlot
        );
        l.reclaim(Generation(2));
        assert_eq!(
            l.begin(&[upsert(3, 1, 251)]).unwrap_err(),
            BeginError::Services
        );
        // Too big for the arena: the first block's reservation is rolled back.
        let free = l.alloc().free_bytes();
        let err = l
            .begin(&[upsert(1, 1, 251), upsert(2, 60, 251)])
            .unwrap_err();
        assert!(matches!(err, BeginError::Arena { .. }), "{err:?}");
        assert_eq!(l.alloc().free_bytes(), free);
        l.alloc.check(&l.held());
        // Remove frees the index only after acks.
        publish(&mut l, &[Shape::Remove(key(1))]).unwrap();
        assert_eq!(l.index_of(&key(1)), None);
        assert_eq!(
            l.begin(&[upsert(3, 1, 251)]).unwrap_err(),
            BeginError::NoDirSlot
        );
        let f = l.reclaim(Generation(3));
        assert_eq!(f.indices, vec![0]);
        publish(&mut l, &[upsert(3, 1, 251)]).unwrap();
        assert_eq!(l.index_of(&key(3)), Some(0));
    }

    #[test]
    fn restore_rebuilds_live_and_retired() {
        let g = geo(4, 4, 64 * 1024);
        let mut l = Ledger::new(&g);
        publish(&mut l, &[upsert(1, 2, 251), upsert(2, 2, 251)]).unwrap();
        let old_slot = l.current_dir();
        let old = l.entries().to_vec();
        publish(&mut l, &[upsert(2, 4, 509)]).unwrap();
        let r = Ledger::restore(
            &g,
            l.generation(),
            l.current_dir(),
            l.entries(),
            &[(old_slot, old)],
        )
        .unwrap();
        assert_eq!(r.generation(), Generation(3));
        assert_eq!(r.index_of(&key(2)), Some(1));
        assert_eq!(r.alloc().free_bytes(), l.alloc().free_bytes());
        r.alloc.check(&r.held());
        assert!(!r.free_dirs.contains(&old_slot));
        // A bad current directory is refused.
        let mut bad = l.entries().to_vec();
        bad[1].backends_offset = bad[0].backends_offset + 64;
        bad[1].table_offset = bad[1].backends_offset + 4 * 64;
        assert!(Ledger::restore(&g, l.generation(), 0, &bad, &[]).is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Publish(Vec<(u8, u32, bool)>),
        Ack(usize),
        Die(usize),
        Reclaim,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => proptest::collection::vec((0u8..6, 0u32..40, any::<bool>()), 1..4).prop_map(Op::Publish),
            3 => (0usize..3).prop_map(Op::Ack),
            1 => (0usize..3).prop_map(Op::Die),
            2 => Just(Op::Reclaim),
        ]
    }

    proptest! {
        /// Model check of the retirement rule with three simulated workers: a plan never
        /// writes a block or a directory slot that a generation some live worker may still be
        /// reading (from its ack up to the published one) references, and blocks never
        /// overlap or leak.
        #[test]
        fn nothing_reused_before_all_live_acks(ops in proptest::collection::vec(op(), 1..120)) {
            let g = geo(8, 4, 24 * 1024);
            let mut l = Ledger::new(&g);
            // What each generation references: its slot and its blocks.
            let mut refs: BTreeMap<Generation, (u32, Vec<Block>)> = BTreeMap::new();
            refs.insert(Generation(1), (0, vec![]));
            let mut acks = [Some(Generation(1)); 3];
            for op in ops {
                match op {
                    Op::Publish(changes) => {
                        let shapes: Vec<Shape> = changes
                            .iter()
                            .map(|&(svc, n, remove)| {
                                if remove { Shape::Remove(key(svc)) } else { upsert(svc, n, 251) }
                            })
                            .collect();
                        let Ok(plan) = l.begin(&shapes) else { continue };
                        let oldest = acks.iter().flatten().min().copied().unwrap_or(l.generation());
                        for (g, (slot, blocks)) in refs.range(oldest..) {
                            prop_assert_ne!(plan.dir_slot, *slot, "slot of {:?} reused", g);
                            for (_, nb) in plan.writes.iter().flatten() {
                                for b in blocks {
                                    prop_assert!(!nb.overlaps(b), "block of {:?} reused", g);
                                }
                            }
                        }
                        let g = plan.generation;
                        let slot = plan.dir_slot;
                        l.commit(&shapes, plan);
                        let blocks = l.entries().iter().filter(|e| e.in_use())
                            .map(|e| entry_block(e).unwrap()).collect();
                        refs.insert(g, (slot, blocks));
                    }
                    Op::Ack(w) => {
                        if acks[w].is_some() {
                            acks[w] = Some(l.generation());
                        }
                    }
                    Op::Die(w) => acks[w] = None,
                    Op::Reclaim => {
                        let safe = acks.iter().flatten().min().copied().unwrap_or(l.generation());
                        l.reclaim(safe);
                    }
                }
                l.alloc.check(&l.held());
            }
        }
    }
}
