//! Maglev table build time (`sluice_dataplane::maglev`), at the default size M = 65 537.
//!
//! Cases:
//! - `maglev/build/n100`, `maglev/build/n1000`: `maglev::build` with a fresh builder and a new
//!   table allocation, equal weights.
//! - `maglev/rebuild/n100`, `maglev/rebuild/n1000`: `MaglevBuilder::build_into` with a kept
//!   builder and table, the control plane's steady state (no allocation).
//! - `maglev/rebuild_weighted/n1000`: as above with weights 1..=100 from a seeded xorshift.
//! - `maglev/rebuild/n1000_m655373`: the largest size, for scale.
//!
//! Backend names are `ip:port` strings as control passes them; the input is given in a
//! shuffled (seeded) order so the sort does real work.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_dataplane::maglev::{MaglevBackend, MaglevBuilder, MaglevTable, TableSize, build};

/// Seeded xorshift64: benches take their randomness as a value (STYLE rule 18).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn names(n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n)
        .map(|i| format!("10.{}.{}.{}:8080", (i >> 16) & 255, (i >> 8) & 255, i & 255))
        .collect();
    let mut rng = 0x6d61_676c_6576_u64;
    for i in (1..v.len()).rev() {
        let j = usize::try_from(xorshift(&mut rng) % u64::try_from(i + 1).unwrap()).unwrap();
        v.swap(i, j);
    }
    v
}

fn bench_maglev(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev");
    for n in [100, 1000] {
        let names = names(n);
        let input: Vec<_> = names.iter().map(|s| MaglevBackend::new(s, 1)).collect();

        group.bench_function(format!("build/n{n}"), |b| {
            b.iter(|| build(TableSize::DEFAULT, black_box(&input)).unwrap());
        });

        let mut builder = MaglevBuilder::new();
        let mut table = MaglevTable::empty(TableSize::DEFAULT);
        group.bench_function(format!("rebuild/n{n}"), |b| {
            b.iter(|| {
                builder
                    .build_into(TableSize::DEFAULT, black_box(&input), &mut table)
                    .unwrap();
                black_box(table.as_slice()[0])
            });
        });
    }

    let names = names(1000);
    let mut rng = 0x7765_6967_6874_u64;
    let weighted: Vec<_> = names
        .iter()
        .map(|s| MaglevBackend::new(s, 1 + u32::try_from(xorshift(&mut rng) % 100).unwrap()))
        .collect();
    let mut builder = MaglevBuilder::new();
    let mut table = MaglevTable::empty(TableSize::DEFAULT);
    group.bench_function("rebuild_weighted/n1000", |b| {
        b.iter(|| {
            builder
                .build_into(TableSize::DEFAULT, black_box(&weighted), &mut table)
                .unwrap();
            black_box(table.as_slice()[0])
        });
    });

    let largest = TableSize::try_new(655_373).unwrap();
    let input: Vec<_> = names.iter().map(|s| MaglevBackend::new(s, 1)).collect();
    group.bench_function("rebuild/n1000_m655373", |b| {
        b.iter(|| {
            builder
                .build_into(largest, black_box(&input), &mut table)
                .unwrap();
            black_box(table.as_slice()[0])
        });
    });
    group.finish();
}

criterion_group!(benches, bench_maglev);
criterion_main!(benches);
