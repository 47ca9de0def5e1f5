//! The optimised Maglev builder against two deliberately naive references (STYLE rule 21):
//!
//! - `paper`: Pseudocode 1 of the Maglev paper (Eisenbud et al., NSDI 2016, §3.4) written out
//!   literally: full permutation arrays `(offset + j·skip) mod M` with a multiply and a modulo,
//!   round-robin until the table is full. Equal weights must give the same bytes.
//! - `weighted`: the same with per-backend targets `round(M·wᵢ/Σw)` (largest remainder, ties to
//!   the lower sorted position), computed by repeated selection instead of a sort, and each
//!   backend skipping its turn once it has reached its target.
//!
//! Both hash names exactly as documented in `sluice_dataplane::maglev` (xxh3-64 with
//! `OFFSET_SEED` / `SKIP_SEED`), so this file also pins that definition. If the builder is ever
//! rewritten, keep the old one here and compare against it over random inputs.

use proptest::prelude::*;
use sluice_dataplane::maglev::{
    EMPTY, MAGLEV_SIZES, MaglevBackend, MaglevBuilder, OFFSET_SEED, SKIP_SEED, TableSize, build,
};
use xxhash_rust::xxh3::xxh3_64_with_seed;

fn permutation(name: &[u8], m: u64) -> Vec<usize> {
    let offset = xxh3_64_with_seed(name, OFFSET_SEED) % m;
    let skip = xxh3_64_with_seed(name, SKIP_SEED) % (m - 1) + 1;
    (0..m)
        .map(|j| usize::try_from((offset + j * skip) % m).unwrap())
        .collect()
}

fn sorted<'a>(backends: &[(&'a [u8], u32)]) -> Vec<(&'a [u8], u32)> {
    let mut v = backends.to_vec();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

/// Pseudocode 1 of the paper, for equal weights.
fn paper(m: u32, names: &[&[u8]]) -> Vec<u16> {
    let mut names = names.to_vec();
    names.sort();
    let m_len = usize::try_from(m).unwrap();
    if names.is_empty() {
        return vec![EMPTY; m_len];
    }
    let perms: Vec<Vec<usize>> = names.iter().map(|n| permutation(n, u64::from(m))).collect();
    let mut next = vec![0; names.len()];
    let mut entry: Vec<Option<usize>> = vec![None; m_len];
    let mut filled = 0;
    loop {
        for i in 0..names.len() {
            let mut c = perms[i][next[i]];
            while entry[c].is_some() {
                next[i] += 1;
                c = perms[i][next[i]];
            }
            entry[c] = Some(i);
            next[i] += 1;
            filled += 1;
            if filled == m_len {
                return entry
                    .into_iter()
                    .map(|e| u16::try_from(e.unwrap()).unwrap())
                    .collect();
            }
        }
    }
}

/// The weighted scheme, naively.
fn weighted(m: u32, backends: &[(&[u8], u32)]) -> Vec<u16> {
    let backends = sorted(backends);
    let m_len = usize::try_from(m).unwrap();
    let total: u128 = backends.iter().map(|b| u128::from(b.1)).sum();
    if total == 0 {
        return vec![EMPTY; m_len];
    }
    let share = |w: u32| u128::from(m) * u128::from(w);
    let mut target: Vec<u128> = backends.iter().map(|b| share(b.1) / total).collect();
    let mut got_extra = vec![false; backends.len()];
    let mut left = u128::from(m) - target.iter().sum::<u128>();
    while left > 0 {
        // The largest remainder not yet served; the first (lowest position) among equals.
        let mut best: Option<usize> = None;
        for i in 0..backends.len() {
            if backends[i].1 == 0 || got_extra[i] {
                continue;
            }
            let rem = share(backends[i].1) % total;
            if best.is_none_or(|b| rem > share(backends[b].1) % total) {
                best = Some(i);
            }
        }
        let b = best.unwrap();
        got_extra[b] = true;
        target[b] += 1;
        left -= 1;
    }
    let perms: Vec<Vec<usize>> = backends
        .iter()
        .map(|b| permutation(b.0, u64::from(m)))
        .collect();
    let mut next = vec![0; backends.len()];
    let mut claimed = vec![0u128; backends.len()];
    let mut entry = vec![EMPTY; m_len];
    let mut filled = 0;
    while filled < m_len {
        for i in 0..backends.len() {
            if claimed[i] == target[i] {
                continue;
            }
            while entry[perms[i][next[i]]] != EMPTY {
                next[i] += 1;
            }
            entry[perms[i][next[i]]] = u16::try_from(i).unwrap();
            claimed[i] += 1;
            filled += 1;
        }
    }
    entry
}

#[test]
fn equal_weights_match_the_paper_and_the_weighted_reference() {
    let names: Vec<String> = (0..37).map(|i| format!("pod-{i:03}")).collect();
    let bytes: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
    for &m in &MAGLEV_SIZES[..9] {
        for n in [1, 2, 5, 36, 37] {
            let input: Vec<_> = bytes[..n]
                .iter()
                .map(|&b| MaglevBackend::from_bytes(b, 7))
                .collect();
            let t = build(TableSize::try_new(m).unwrap(), &input).unwrap();
            assert_eq!(
                t.as_slice(),
                paper(m, &bytes[..n]).as_slice(),
                "M={m} N={n}"
            );
            let pairs: Vec<_> = bytes[..n].iter().map(|&b| (b, 7)).collect();
            assert_eq!(t.as_slice(), weighted(m, &pairs).as_slice(), "M={m} N={n}");
        }
    }
}

fn backend_sets() -> impl Strategy<Value = (u32, Vec<(Vec<u8>, u32)>)> {
    let size = prop::sample::select(&MAGLEV_SIZES[..4]);
    let weight = prop_oneof![Just(0u32), 1u32..5, 1u32..1000, Just(u32::MAX)];
    let set = prop::collection::btree_map(prop::collection::vec(any::<u8>(), 0..12), weight, 0..60);
    (
        size,
        set.prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle(),
    )
}

proptest! {
    #[test]
    fn builder_matches_the_naive_weighted_reference((m, set) in backend_sets()) {
        let input: Vec<_> = set.iter().map(|(n, w)| MaglevBackend::from_bytes(n, *w)).collect();
        let t = MaglevBuilder::new().build(TableSize::try_new(m).unwrap(), &input).unwrap();
        let pairs: Vec<_> = set.iter().map(|(n, w)| (n.as_slice(), *w)).collect();
        let expected = weighted(m, &pairs);
        prop_assert_eq!(t.as_slice(), expected.as_slice());
    }
}
