//! Maglev builder properties over random backend sets (proptest), and its errors.
//!
//! Properties: every entry names a backend of positive weight when any weight is positive (and
//! all are `EMPTY` otherwise); each backend's entry count is its weight's share rounded
//! (`|countᵢ − M·wᵢ/Σw| < 1`); the table does not depend on input order; a reused builder gives
//! the same bytes as a fresh one.

use proptest::prelude::*;
use sluice_dataplane::maglev::{
    EMPTY, MAGLEV_SIZES, MAX_BACKENDS, MaglevBackend, MaglevBuilder, MaglevError, MaglevTable,
    TableSize, build,
};

/// A size and a set of uniquely named backends, in arbitrary order, with many zero weights.
fn backend_sets() -> impl Strategy<Value = (u32, Vec<(String, u32)>)> {
    let size = prop::sample::select(&MAGLEV_SIZES[..6]);
    let weight = prop_oneof![Just(0u32), 1u32..4, 1u32..100_000, Just(u32::MAX)];
    let set = prop::collection::btree_map("[a-z0-9.:-]{1,16}", weight, 0..200);
    (
        size,
        set.prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle(),
    )
}

fn input(set: &[(String, u32)]) -> Vec<MaglevBackend<'_>> {
    set.iter().map(|(n, w)| MaglevBackend::new(n, *w)).collect()
}

/// The table as the name each entry points at (`None` for `EMPTY`).
fn names<'a>(t: &MaglevTable, input: &[MaglevBackend<'a>]) -> Vec<Option<&'a [u8]>> {
    t.as_slice()
        .iter()
        .map(|&s| {
            t.backend_order()
                .get(usize::from(s))
                .map(|&i| input[i].name)
        })
        .collect()
}

proptest! {
    #[test]
    fn every_entry_is_a_weighted_backend_in_proportion((m, set) in backend_sets()) {
        let input = input(&set);
        let t = build(TableSize::try_new(m).unwrap(), &input).unwrap();
        prop_assert_eq!(t.as_slice().len(), usize::try_from(m).unwrap());
        prop_assert_eq!(t.backend_order().len(), input.len());
        let total: u64 = input.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            prop_assert!(t.is_empty());
            prop_assert!(t.as_slice().iter().all(|&s| s == EMPTY));
            return Ok(());
        }
        prop_assert!(!t.is_empty());
        let mut counts = vec![0u64; input.len()];
        for &s in t.as_slice() {
            prop_assert!(usize::from(s) < input.len());
            counts[usize::from(s)] += 1;
        }
        for (slot, &count) in counts.iter().enumerate() {
            let b = input[t.backend_order()[slot]];
            // count·Σw within Σw of M·w, i.e. |count − M·w/Σw| < 1, in exact integers.
            let exact = u128::from(m) * u128::from(b.weight);
            let got = u128::from(count) * u128::from(total);
            prop_assert!(got.abs_diff(exact) < u128::from(total), "slot {} count {}", slot, count);
            if b.weight == 0 {
                prop_assert_eq!(count, 0);
            }
        }
        // Slots follow the name order.
        prop_assert!(t.backend_order().windows(2).all(|w| input[w[0]].name < input[w[1]].name));
    }

    #[test]
    fn order_does_not_matter(
        (m, set) in backend_sets(),
        perm in any::<u64>(),
    ) {
        let size = TableSize::try_new(m).unwrap();
        let a = input(&set);
        let mut b = a.clone();
        // Reverse, then rotate by a random amount: a different order in every case with > 1.
        b.reverse();
        if !b.is_empty() {
            let k = usize::try_from(perm % u64::try_from(b.len()).unwrap()).unwrap();
            b.rotate_left(k);
        }
        let ta = build(size, &a).unwrap();
        let tb = build(size, &b).unwrap();
        prop_assert_eq!(ta.as_slice(), tb.as_slice());
        prop_assert_eq!(names(&ta, &a), names(&tb, &b));
    }

    #[test]
    fn a_reused_builder_gives_the_same_bytes(
        (m1, set1) in backend_sets(),
        (m2, set2) in backend_sets(),
    ) {
        let mut builder = MaglevBuilder::new();
        let mut t = MaglevTable::empty(TableSize::DEFAULT);
        for (m, set) in [(m1, &set1), (m2, &set2), (m1, &set1)] {
            let size = TableSize::try_new(m).unwrap();
            let input = input(set);
            builder.build_into(size, &input, &mut t).unwrap();
            let fresh = build(size, &input).unwrap();
            prop_assert_eq!(&t, &fresh);
            prop_assert_eq!(t.size(), size);
        }
    }
}

#[test]
fn only_listed_sizes_are_accepted() {
    for &m in MAGLEV_SIZES {
        assert_eq!(TableSize::try_new(m).unwrap().get(), m);
        assert_eq!(
            TableSize::try_from(m).unwrap().as_usize(),
            usize::try_from(m).unwrap()
        );
    }
    for m in [
        0,
        1,
        2,
        250,
        252,
        1_000,
        65_536,
        65_535,
        65_539,
        655_371,
        u32::MAX,
    ] {
        assert_eq!(TableSize::try_new(m), Err(MaglevError::InvalidSize(m)));
    }
    assert_eq!(TableSize::default().get(), 65_537);
    println!("{}", MaglevError::InvalidSize(7));
}

#[test]
fn duplicate_names_are_refused_with_both_positions() {
    let input = [
        MaglevBackend::new("a", 1),
        MaglevBackend::new("dup", 1),
        MaglevBackend::new("b", 1),
        MaglevBackend::new("dup", 0),
    ];
    let err = build(TableSize::DEFAULT, &input).unwrap_err();
    assert_eq!(
        err,
        MaglevError::DuplicateName {
            name: "dup".to_owned(),
            first: 1,
            second: 3
        }
    );
    println!("{err}");
}

#[test]
fn too_many_backends_are_refused() {
    let names: Vec<String> = (0..=MAX_BACKENDS).map(|i| format!("b{i}")).collect();
    let input: Vec<_> = names.iter().map(|n| MaglevBackend::new(n, 1)).collect();
    let largest = TableSize::try_new(655_373).unwrap();
    assert_eq!(
        build(largest, &input).unwrap_err(),
        MaglevError::TooManyBackends {
            count: MAX_BACKENDS + 1
        }
    );
    // Exactly the limit is fine; the highest slot is u16::MAX − 2.
    let t = build(largest, &input[..MAX_BACKENDS]).unwrap();
    assert_eq!(t.as_slice().iter().max(), Some(&(u16::MAX - 2)));
}

#[test]
fn more_weighted_backends_than_entries_are_refused() {
    let small = TableSize::try_new(251).unwrap();
    let names: Vec<String> = (0..300).map(|i| format!("b{i}")).collect();
    let input: Vec<_> = names.iter().map(|n| MaglevBackend::new(n, 1)).collect();
    assert_eq!(
        build(small, &input).unwrap_err(),
        MaglevError::TableTooSmall {
            count: 300,
            size: 251
        }
    );
    // Weight-0 backends need no entry, so they do not count against M.
    let mut drained = input.clone();
    for b in &mut drained[251..] {
        b.weight = 0;
    }
    let t = build(small, &drained).unwrap();
    let mut seen = vec![false; 300];
    for &s in t.as_slice() {
        seen[usize::from(s)] = true;
    }
    assert_eq!(seen.iter().filter(|&&s| s).count(), 251);
}

#[test]
fn no_weight_gives_an_empty_table() {
    for input in [
        vec![],
        vec![MaglevBackend::new("a", 0), MaglevBackend::new("b", 0)],
    ] {
        let t = build(TableSize::try_new(251).unwrap(), &input).unwrap();
        assert!(t.is_empty());
        assert!(t.as_slice().iter().all(|&s| s == EMPTY));
        assert_eq!(t.lookup(12_345), EMPTY);
        assert_eq!(t.backend_order().len(), input.len());
    }
    assert_eq!(EMPTY, u16::MAX);
}
