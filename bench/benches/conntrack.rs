//! Flow hash and per-worker conntrack (`sluice_dataplane::{flow, conntrack}`).
//!
//! Cases:
//! - `flow_hash/v4`, `flow_hash/v6`: `flow_hash` of one 5-tuple, cycling through 1024
//!   pre-generated random keys.
//! - `conntrack/hit/n100k`, `conntrack/hit/n1m`: `lookup_tcp` (ACK) of a stored key, in a
//!   table holding `n` established TCP flows, keys visited in a pre-shuffled random order
//!   (an array of keys read sequentially, so only the table's own cache misses count; both
//!   sizes exceed the caches, so this is a memory-latency figure).
//! - `conntrack/miss_insert/n100k`, `conntrack/miss_insert/n1m`: `lookup_tcp` of a new key
//!   (a miss) and then `insert` of it (SYN), in the same table. The timer covers batches of
//!   1024 miss+inserts; the batch is removed again outside the timer, so the table stays at
//!   `n` to `n + 1024` entries and never refuses.
//! - `conntrack/evict/n1m_budget64`: one `evict_expired` call with a budget of 64 buckets
//!   over the 1M table, nothing expired (the per-burst cost of aging).
//!
//! Keys are random IPv4 TCP 5-tuples from a seeded xorshift (the table's hash secrets are random).
//! Nothing in a measured loop allocates.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_dataplane::conntrack::{ConnTrack, Entry, Tick, TickRate, Timeouts};
use sluice_dataplane::flow::{FlowKey, flow_hash};
use sluice_dataplane::wire::{IpProtocol, TcpFlags};

const SEED: u64 = 0x5eed_0f5e_ed00_0001;
const BATCH: usize = 1024;

/// Seeded xorshift64: benches take their randomness as a value (STYLE rule 18).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `n` distinct random IPv4 TCP keys: the source address is a bijection of the index, the
/// source port random.
fn v4_keys(n: usize, rng: &mut u64) -> Vec<FlowKey> {
    (0..n)
        .map(|i| {
            let i = u32::try_from(i).unwrap();
            let src = Ipv4Addr::from_bits(i.wrapping_mul(0x9e37_79b9) ^ 0x0a00_0000);
            let port = u16::try_from(xorshift(rng) >> 48).unwrap();
            FlowKey::v4(
                src,
                Ipv4Addr::new(198, 51, 100, 10),
                port,
                443,
                IpProtocol::TCP,
            )
        })
        .collect()
}

fn v6_keys(n: usize, rng: &mut u64) -> Vec<FlowKey> {
    (0..n)
        .map(|_| {
            let src = Ipv6Addr::from_bits(
                0x2001_0db8_0000_0000_0000_0000_0000_0000 | u128::from(xorshift(rng)),
            );
            let port = u16::try_from(xorshift(rng) >> 48).unwrap();
            FlowKey::v6(
                src,
                "2001:db8:1::10".parse().unwrap(),
                port,
                443,
                IpProtocol::TCP,
            )
        })
        .collect()
}

fn shuffled(n: usize, rng: &mut u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = usize::try_from(xorshift(rng) % u64::try_from(i + 1).unwrap()).unwrap();
        v.swap(i, j);
    }
    v
}

fn bench_flow_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("flow_hash");
    let mut rng = 0x666c_6f77_u64;
    for (name, keys) in [
        ("v4", v4_keys(BATCH, &mut rng)),
        ("v6", v6_keys(BATCH, &mut rng)),
    ] {
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % BATCH;
                flow_hash(black_box(&keys[i]), SEED)
            });
        });
    }
    group.finish();
}

fn bench_conntrack(c: &mut Criterion) {
    let mut group = c.benchmark_group("conntrack");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    let ack = TcpFlags(TcpFlags::ACK);
    let syn = TcpFlags(TcpFlags::SYN);
    for (name, n) in [("n100k", 100_000), ("n1m", 1_000_000)] {
        let mut rng = 0x6374_u64 ^ u64::try_from(n).unwrap();
        let all = v4_keys(n + 64 * BATCH, &mut rng);
        let (stored, fresh) = all.split_at(n);
        // The stored keys in a random order, laid out sequentially: a packet's key is in
        // cache when the worker looks it up, so only the table's own misses should count.
        let probes: Vec<FlowKey> = shuffled(n, &mut rng)
            .into_iter()
            .map(|i| stored[i])
            .collect();
        let mut ct = ConnTrack::new(n + BATCH, &Timeouts::default(), TickRate::NANOS).unwrap();
        for k in stored {
            ct.insert(*k, Entry::new(1, 1), ack, Tick(1)).unwrap();
        }
        let now = Tick(2);

        let mut i = 0;
        group.bench_function(format!("hit/{name}"), |b| {
            b.iter(|| {
                i = if i + 1 == n { 0 } else { i + 1 };
                let e = ct.lookup_tcp(black_box(&probes[i]), ack, now);
                black_box(e.map(|e| e.backend_id()))
            });
        });

        assert_eq!(ct.stats().misses, 0, "every hit-bench lookup must hit");

        let mut next = 0;
        group.bench_function(format!("miss_insert/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let len = usize::try_from((iters - done).min(BATCH as u64)).unwrap();
                    let batch = &fresh[next * BATCH..next * BATCH + len];
                    next = (next + 1) % 64;
                    let t = Instant::now();
                    for k in batch {
                        if ct.lookup_tcp(black_box(k), syn, now).is_none() {
                            let _ = ct.insert(*k, Entry::new(2, 1), syn, now);
                        }
                    }
                    total += t.elapsed();
                    for k in batch {
                        ct.remove(k);
                    }
                    done += len as u64;
                }
                total
            });
        });
        assert_eq!(ct.len(), n);
        assert_eq!(ct.stats().full, 0);

        if n == 1_000_000 {
            group.bench_function(format!("evict/{name}_budget64"), |b| {
                b.iter(|| ct.evict_expired(now, 64));
            });
            eprintln!(
                "conntrack {name}: {} shards, {} slots, {} MB on {} pages",
                ct.shards(),
                ct.buckets(),
                ct.allocated_bytes() / 1_000_000,
                ct.page_backing()
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_flow_hash, bench_conntrack);
criterion_main!(benches);
