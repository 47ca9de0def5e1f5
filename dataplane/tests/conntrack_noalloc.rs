//! The conntrack packet path allocates nothing after `ConnTrack::new` (DESIGN, Dataplane;
//! STYLE rule 7).
//!
//! dhat's heap profiler (in testing mode) is the global allocator and counts every allocation
//! in the process. One test builds a table and its inputs, reads the count, then drives every
//! per-packet call at a full-ish table: hits, misses, inserts, refusals when full, TCP FIN/RST
//! transitions, NAT pairs, removals and incremental aging with expiry churn. The count must not
//! move. A second part churns a small table through hashbrown's in-place rehashes. The parts run
//! one after another inside a single test, so nothing else in the process allocates meanwhile.

use std::net::{Ipv4Addr, Ipv6Addr};

use sluice_dataplane::conntrack::{ConnTrack, Entry, InsertError, Tick, TickRate, Timeouts};
use sluice_dataplane::flow::FlowKey;
use sluice_dataplane::wire::{IpProtocol, TcpFlags};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Allocations so far (blocks ever allocated, reallocations included).
fn allocs() -> u64 {
    dhat::HeapStats::get().total_blocks
}

#[test]
fn conntrack_allocates_nothing_per_packet() {
    let _profiler = dhat::Profiler::builder().testing().build();
    counter_sees_allocations();
    packet_path_allocates_nothing();
    churn_through_rehashes_allocates_nothing();
}

/// Seeded xorshift64 (STYLE rule 18).
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Key `i`: IPv4, except every fourth, IPv6 (whose keys live in a slab beside the slots).
fn key(i: u32, proto: IpProtocol) -> FlowKey {
    let [a, b, c, d] = i.to_be_bytes();
    if i % 4 == 3 {
        return FlowKey::v6(
            Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                u16::from(a),
                u16::from(b),
                u16::from(c),
            ),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x10),
            1024 + u16::from(d),
            443,
            proto,
        );
    }
    FlowKey::v4(
        Ipv4Addr::new(10, a, b, c),
        Ipv4Addr::new(198, 51, 100, 10),
        1024 + u16::from(d),
        443,
        proto,
    )
}

fn packet_path_allocates_nothing() {
    const CAP: usize = 20_000;
    const KEYS: usize = 3 * CAP;
    let rate = TickRate::MILLIS;
    let mut ct = ConnTrack::new(CAP, &Timeouts::default(), rate).unwrap();
    let keys: Vec<FlowKey> = (0..u32::try_from(KEYS).unwrap())
        .map(|i| {
            let proto = match i % 3 {
                0 => IpProtocol::TCP,
                1 => IpProtocol::UDP,
                _ => IpProtocol::ICMP,
            };
            key(i, proto)
        })
        .collect();
    let flags = [
        TcpFlags(TcpFlags::SYN),
        TcpFlags(TcpFlags::ACK),
        TcpFlags(TcpFlags::ACK | TcpFlags::PSH),
        TcpFlags(TcpFlags::FIN | TcpFlags::ACK),
        TcpFlags(TcpFlags::RST),
    ];
    let bytes_before = ct.allocated_bytes();
    let buckets_before = ct.buckets();
    let mut rng = 0x00c0_ffee_u64;
    let (mut hits, mut full, mut pairs) = (0u64, 0u64, 0u64);
    let mut now = 0u64;

    let before = allocs();
    for round in 0..400_000u64 {
        // 1 ms every 4 steps: 400 s in all, so the table runs full and entries keep
        // expiring (closing TCP after 40 000 steps, UDP after 240 000).
        now += u64::from(round % 4 == 0);
        let t = Tick(now);
        let r = xorshift(&mut rng);
        let k = keys[usize::try_from(r % KEYS as u64).unwrap()];
        let f = flags[usize::try_from((r >> 32) % 5).unwrap()];
        match (r >> 40) % 8 {
            0..=3 => {
                let hit = if k.proto() == IpProtocol::TCP {
                    ct.lookup_tcp(&k, f, t).is_some()
                } else {
                    ct.lookup(&k, t).is_some()
                };
                if hit {
                    hits += 1;
                } else if ct.insert(k, Entry::new(7, 1), f, t) == Err(InsertError::Full) {
                    full += 1;
                }
            }
            4 => {
                let rev = keys[usize::try_from((r >> 8) % KEYS as u64).unwrap()];
                match ct.insert_pair(
                    k,
                    Entry::new(1, 2).with_nat_port(40_000),
                    rev,
                    Entry::new(1, 2),
                    f,
                    t,
                ) {
                    Ok(()) => pairs += 1,
                    Err(InsertError::Full) => full += 1,
                    Err(InsertError::SameKey) => {}
                }
            }
            5 => {
                if let Some(e) = ct.lookup(&k, t) {
                    let _ = ct.peer_key(&e);
                }
            }
            6 => {
                let _ = ct.remove(&k);
            }
            _ => {
                let _ = ct.evict_expired(t, usize::try_from(r >> 56).unwrap());
            }
        }
        let _ = (ct.len(), ct.fill(), ct.stats());
    }
    let after = allocs();

    assert_eq!(
        after - before,
        0,
        "allocations on the conntrack packet path"
    );
    assert_eq!(
        ct.allocated_bytes(),
        bytes_before,
        "the table was reallocated"
    );
    assert_eq!(ct.buckets(), buckets_before);
    // The run exercised what it claims to.
    let s = ct.stats();
    assert!(hits > 10_000, "hits {hits}");
    assert!(full > 1_000, "full refusals {full}");
    assert!(pairs > 1_000, "pairs {pairs}");
    assert!(s.expired > 50 && s.evicted > 5_000, "{s:?}");
    assert!(ct.fill() > 0.5, "fill {}", ct.fill());
    assert!(ct.len() <= CAP);
}

/// Random churn on a one-shard table: hashbrown's tombstones pile up and force in-place
/// rehashes (the unit test `churn_rehashes_in_place_without_growing` shows they happen at
/// this size within a few hundred thousand operations); none of them allocates.
fn churn_through_rehashes_allocates_nothing() {
    const CAP: usize = 2_864;
    let mut ct = ConnTrack::new(CAP, &Timeouts::default(), TickRate::MILLIS).unwrap();
    let mut live: Vec<FlowKey> = Vec::with_capacity(CAP);
    let mut rng = 0x1234_5678_u64;
    let bytes = ct.allocated_bytes();

    let before = allocs();
    for i in 0..1_000_000u64 {
        let r = xorshift(&mut rng);
        let [a, b, c, d, e, f, ..] = r.to_le_bytes();
        let k = FlowKey::v4(
            Ipv4Addr::new(a, b, c, d),
            Ipv4Addr::new(198, 51, 100, 10),
            u16::from_le_bytes([e, f]),
            443,
            IpProtocol::UDP,
        );
        if live.len() == CAP {
            let j = usize::try_from(r >> 40).unwrap() % CAP;
            ct.remove(&live.swap_remove(j));
        }
        if ct.insert(k, Entry::new(1, 1), TcpFlags(0), Tick(i)).is_ok() {
            live.push(k);
        }
    }
    let after = allocs();

    assert_eq!(after - before, 0, "allocations while churning");
    assert_eq!(ct.allocated_bytes(), bytes);
    assert_eq!(ct.len(), CAP);
}

/// The counter works: a `Vec` allocation is seen.
fn counter_sees_allocations() {
    let before = allocs();
    let v: Vec<u64> = Vec::with_capacity(16);
    std::hint::black_box(&v);
    assert!(allocs() > before);
}
