//! Golden Maglev tables (STYLE rule 21). Every LB node must build the same table from the same
//! backends, across builds and versions, so any change to the hash, the seeds, the sort, the
//! rounding or the fill order must fail here rather than move flows during a rolling upgrade.
//!
//! How the values were produced: by this builder, run once through
//! `cargo test -p sluice-dataplane --no-default-features --test maglev_golden -- --nocapture`
//! (each test prints the actual table in paste-able form before asserting), after
//! `tests/maglev_reference.rs` had shown the builder equal to a literal transcription of the
//! paper's Pseudocode 1 and to a naive weighted reference. Do not regenerate them to make a
//! failure go away: a diff here means every deployed table changes (see the `maglev` module
//! docs, "Compatibility").

use sluice_dataplane::maglev::{MaglevBackend, MaglevTable, TableSize, build};

/// FNV-1a 64 over the entries as little-endian bytes: a digest independent of the xxh3 that
/// the builder uses.
fn fnv1a(entries: &[u16]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in entries.iter().flat_map(|e| e.to_le_bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn show(label: &str, t: &MaglevTable) {
    let s = t.as_slice();
    println!("{label}: M={} fnv1a={:#018x}", s.len(), fnv1a(s));
    println!("{label}: first 32 = {:?}", &s[..32]);
    if s.len() <= 251 {
        println!("{label}: all = {s:?}");
    }
}

#[test]
fn golden_equal_weights_m251() {
    let names = [
        "10.0.0.1:80",
        "10.0.0.2:80",
        "10.0.0.3:80",
        "10.0.0.4:80",
        "10.0.0.5:80",
    ];
    let input: Vec<_> = names.iter().map(|n| MaglevBackend::new(n, 1)).collect();
    let t = build(TableSize::try_new(251).unwrap(), &input).unwrap();
    show("equal m251", &t);
    #[rustfmt::skip]
    const GOLDEN: [u16; 251] = [
        1, 3, 0, 3, 1, 3, 0, 1, 3, 1, 4, 1, 4, 0, 4, 3, 4, 0, 1, 3, 0, 1, 0, 4, 3,
        0, 3, 4, 1, 0, 3, 3, 0, 3, 2, 1, 0, 4, 2, 4, 3, 4, 1, 4, 0, 2, 1, 3, 0, 1,
        4, 0, 0, 1, 4, 0, 3, 1, 3, 0, 4, 2, 4, 1, 4, 3, 4, 3, 4, 2, 0, 2, 4, 1, 0,
        2, 2, 1, 0, 2, 1, 3, 0, 3, 1, 2, 2, 1, 3, 2, 2, 2, 2, 0, 1, 2, 2, 4, 2, 4,
        2, 1, 2, 2, 3, 2, 2, 2, 2, 2, 4, 4, 0, 3, 4, 1, 0, 3, 4, 1, 3, 0, 1, 1, 4,
        4, 4, 1, 4, 1, 1, 0, 0, 1, 1, 0, 3, 4, 3, 0, 3, 4, 3, 1, 1, 3, 3, 3, 0, 4,
        0, 4, 4, 4, 0, 4, 3, 1, 0, 0, 4, 3, 0, 3, 1, 3, 0, 2, 1, 0, 3, 1, 3, 0, 4,
        1, 4, 3, 4, 3, 4, 0, 4, 3, 4, 1, 3, 2, 0, 0, 3, 2, 0, 3, 2, 1, 0, 4, 2, 1,
        0, 4, 1, 4, 3, 4, 1, 0, 2, 3, 2, 4, 2, 2, 2, 0, 1, 2, 3, 2, 2, 2, 2, 1, 2,
        2, 0, 2, 2, 2, 1, 2, 2, 2, 2, 0, 4, 1, 4, 4, 3, 1, 0, 3, 1, 0, 0, 3, 1, 0,
        3,
    ];
    assert_eq!(t.as_slice(), GOLDEN);
    assert_eq!(t.backend_order(), [0, 1, 2, 3, 4]);
}

#[test]
fn golden_weighted_m251() {
    // Given out of order on purpose; a weight-0 (draining) backend keeps slot 4 but no entries.
    let input = [
        MaglevBackend::new("backend-d", 4),
        MaglevBackend::new("backend-b", 2),
        MaglevBackend::new("backend-z", 0),
        MaglevBackend::new("backend-a", 1),
        MaglevBackend::new("backend-c", 3),
    ];
    let t = build(TableSize::try_new(251).unwrap(), &input).unwrap();
    show("weighted m251", &t);
    #[rustfmt::skip]
    const GOLDEN: [u16; 251] = [
        3, 1, 3, 3, 2, 3, 3, 2, 2, 0, 3, 3, 3, 3, 2, 3, 0, 1, 2, 2, 3, 1, 3, 3, 3,
        2, 0, 2, 1, 2, 2, 3, 3, 0, 3, 1, 3, 1, 2, 1, 2, 1, 3, 0, 3, 3, 3, 3, 1, 2,
        1, 2, 3, 3, 3, 1, 3, 1, 2, 1, 0, 1, 3, 3, 3, 3, 3, 0, 1, 2, 1, 2, 2, 3, 3,
        3, 3, 0, 2, 1, 2, 1, 2, 3, 3, 3, 3, 0, 1, 2, 1, 3, 2, 3, 0, 3, 3, 1, 3, 1,
        2, 1, 2, 2, 0, 3, 3, 3, 1, 2, 1, 0, 2, 2, 3, 3, 3, 1, 3, 1, 2, 0, 2, 2, 2,
        3, 3, 3, 0, 2, 1, 3, 1, 2, 2, 3, 3, 3, 0, 1, 2, 1, 3, 2, 2, 2, 3, 3, 1, 3,
        1, 3, 1, 2, 2, 0, 3, 3, 3, 1, 3, 1, 0, 2, 2, 2, 2, 3, 1, 3, 1, 3, 1, 2, 2,
        2, 2, 3, 3, 1, 3, 1, 0, 2, 2, 2, 3, 2, 1, 0, 1, 3, 1, 3, 2, 2, 3, 2, 3, 0,
        3, 3, 3, 3, 2, 2, 3, 2, 1, 3, 1, 3, 1, 3, 2, 2, 0, 2, 2, 1, 3, 3, 3, 0, 2,
        2, 3, 2, 2, 3, 1, 3, 1, 0, 2, 2, 3, 3, 2, 2, 0, 3, 3, 3, 3, 2, 3, 3, 2, 2,
        0,
    ];
    assert_eq!(t.as_slice(), GOLDEN);
    assert_eq!(t.backend_order(), [3, 1, 4, 0, 2]);
}

#[test]
fn golden_default_size_100_backends() {
    let names: Vec<String> = (0..100)
        .map(|i| format!("10.1.{}.{}:443", i / 256, i % 256))
        .collect();
    let input: Vec<_> = names.iter().map(|n| MaglevBackend::new(n, 1)).collect();
    let t = build(TableSize::DEFAULT, &input).unwrap();
    show("equal m65537 n100", &t);
    #[rustfmt::skip]
    const FIRST_32: [u16; 32] = [
        39, 65, 65, 73, 55, 99, 85, 23, 61, 17, 38, 37, 69, 98, 14, 51,
        27, 42, 96, 44, 16, 70, 72, 6, 1, 47, 78, 67, 21, 13, 52, 99,
    ];
    assert_eq!(t.as_slice()[..32], FIRST_32);
    assert_eq!(fnv1a(t.as_slice()), 0xb552_fae3_f8a1_35c1);
}
