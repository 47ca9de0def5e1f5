//! The shared-memory tables (`sluice_dataplane::tables`): what a worker pays per burst and per
//! packet, and how long a publication takes to reach every worker.
//!
//! Cases:
//! - `tables/check/unchanged`: `Worker::check` when nothing was published — the per-burst
//!   cost (a heartbeat bump, one acquire load of the published word, one load of the own
//!   owner word).
//! - `tables/lookup/service_and_backend`: `Worker::service` (hash-map probe on the
//!   `(VIP, port, proto)` key among 64 services) plus `ServiceView::lookup` (`table[h % M]`
//!   then the backend), per packet; hashes from a seeded xorshift.
//! - `tables/lookup/one_service_hot`: the same for one service and 4096 distinct hashes, so
//!   the table and backends stay in cache: the instruction cost without the cache misses.
//! - `tables/count/forward`: `Worker::count_forward`, what the worker loop does per forwarded
//!   packet: packets and bytes (and, for one packet in eight, a connection) on the service
//!   and on the backend, for random services and backends (1024 pre-drawn; 64 of each
//!   service's 100 backends have a counter slot, the rest count per service only).
//! - `tables/switch/64svc_1changed`: the slow path of `Worker::check` after control replaced
//!   one of 64 services (M = 65 537, 100 backends each): copy the directory, validate the
//!   changed entry, rebuild the index, ack. Only the check is timed.
//! - `tables/publish/1svc_m65537_n100`: `Writer::publish` of one service update (writes
//!   6.4 KiB of backends and a 128 KiB table, copies the directory), with a reclaim between
//!   iterations (untimed).
//! - `tables/publish_to_all_acked/2workers_yield`: publish one update and spin until both
//!   worker threads have acked it (`Writer::all_acked`). The workers poll `check` in a loop
//!   with `yield_now` between polls — the back-off an idle worker uses, and what lets three
//!   busy threads share a 2-core machine. Target: well under 1 ms.
//! - `tables/publish_to_all_acked/1worker_spin`: the same with one worker spinning without
//!   yielding (on a machine with a core to spare, the protocol's own latency).
//!
//! The region lives on hugetlbfs when a mount has free pages (as in production), else
//! `/dev/shm`.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_dataplane::maglev::{MaglevBackend, MaglevTable, TableSize, build};
use sluice_dataplane::tables::{
    Affinity, Backend, BackendId, BackendState, Backing, Capacity, Mode, ServiceId, ServiceKey,
    ServiceSpec, ServiceUpdate, Tables, Tick, Writer, WriterOptions,
};

const SERVICES: u8 = 64;
const BACKENDS: u8 = 100;

/// Seeded xorshift64 (STYLE rule 18).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn key(s: u8) -> ServiceKey {
    ServiceKey::from_v4([10, 1, 0, s], 443, 6)
}

struct Svc {
    key: ServiceKey,
    id: u32,
    backends: Vec<Backend>,
    table: MaglevTable,
}

impl Svc {
    /// Service `s`, variant `variant` (a different backend set per variant).
    fn new(s: u8, variant: u8) -> Self {
        let backends: Vec<Backend> = (0..BACKENDS)
            .map(|i| Backend {
                id: BackendId(u32::from(i)),
                addr: IpAddr::from([10, 2, variant, i]),
                port: 8443,
                mac: Some([2, 0, 0, s, variant, i]),
                next_hop: None,
                weight: 1,
                state: BackendState::Active,
            })
            .collect();
        let names: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
        let input: Vec<_> = names.iter().map(|n| MaglevBackend::new(n, 1)).collect();
        Self {
            key: key(s),
            id: u32::from(s),
            backends,
            table: build(TableSize::DEFAULT, &input).unwrap(),
        }
    }

    fn update(&self) -> ServiceUpdate<'_> {
        ServiceUpdate::Upsert(ServiceSpec {
            key: self.key,
            id: ServiceId(self.id),
            mode: Mode::EncapIpip,
            affinity: Affinity::None,
            backends: &self.backends,
            table: &self.table,
        })
    }
}

struct Region {
    name: String,
    writer: Writer,
    start: Instant,
}

impl Region {
    fn new(tag: &str) -> Self {
        let name = format!("bench-{tag}-{}", std::process::id());
        let _ = Writer::remove(&name);
        let cap = Capacity {
            max_services: 128,
            max_workers: 8,
            dir_slots: 4,
            arena_bytes: 64 << 20,
        };
        let writer = Writer::create(&name, cap, Backing::Auto, WriterOptions::default()).unwrap();
        Self {
            name,
            writer,
            start: Instant::now(),
        }
    }

    fn now(&self) -> Tick {
        Tick::from_duration(self.start.elapsed())
    }

    fn reclaim(&mut self) {
        let now = self.now();
        self.writer.reclaim(now);
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = Writer::remove(&self.name);
    }
}

fn bench_tables(c: &mut Criterion) {
    let mut group = c.benchmark_group("tables");
    let svcs: Vec<Svc> = (0..SERVICES).map(|s| Svc::new(s, 0)).collect();
    let alt = [Svc::new(0, 1), Svc::new(0, 2)];

    let mut r = Region::new("tables");
    for chunk in svcs.chunks(16) {
        let ups: Vec<_> = chunk.iter().map(Svc::update).collect();
        r.writer.publish(&ups).unwrap();
        r.reclaim();
    }
    let tables = Tables::map(&r.name).unwrap();
    let mut worker = tables.register().unwrap();

    group.bench_function("check/unchanged", |b| {
        b.iter(|| black_box(worker.check().unwrap()));
    });

    let mut rng = 0x7461_626c_6573_u64;
    let keys: Vec<ServiceKey> = (0..1024)
        .map(|_| key(u8::try_from(xorshift(&mut rng) % u64::from(SERVICES)).unwrap()))
        .collect();
    let mut i = 0usize;
    group.bench_function("lookup/service_and_backend", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let h = xorshift(&mut rng);
            let view = worker.service(black_box(&keys[i])).unwrap();
            black_box(view.lookup(h).unwrap().backend_id)
        });
    });

    let hot = key(7);
    group.bench_function("lookup/one_service_hot", |b| {
        b.iter(|| {
            let h = xorshift(&mut rng);
            let view = worker.service(black_box(&hot)).unwrap();
            black_box(view.lookup(h & 0xfff).unwrap().backend_id)
        });
    });

    let forwards: Vec<(u32, BackendId, bool)> = (0..1024)
        .map(|n| {
            let k = key(u8::try_from(xorshift(&mut rng) % u64::from(SERVICES)).unwrap());
            let index = worker.service(&k).unwrap().index();
            let id = u32::try_from(xorshift(&mut rng) % u64::from(BACKENDS)).unwrap();
            (index, BackendId(id), n % 8 == 0)
        })
        .collect();
    group.bench_function("count/forward", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let (index, id, new_flow) = forwards[i];
            worker.count_forward(black_box(index), Some(black_box(id)), 60, new_flow);
        });
    });

    let mut flip = 0usize;
    group.bench_function("switch/64svc_1changed", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                r.reclaim();
                flip ^= 1;
                r.writer.publish(&[alt[flip].update()]).unwrap();
                let t = Instant::now();
                black_box(worker.check().unwrap());
                total += t.elapsed();
            }
            total
        });
    });

    group.bench_function("publish/1svc_m65537_n100", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                worker.check().unwrap();
                r.reclaim();
                flip ^= 1;
                let t = Instant::now();
                black_box(r.writer.publish(&[alt[flip].update()]).unwrap());
                total += t.elapsed();
            }
            total
        });
    });
    drop(worker);

    for (label, workers, yield_between) in [("2workers_yield", 2, true), ("1worker_spin", 1, false)]
    {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                let tables = tables.clone();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut w = tables.register().unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        w.check().unwrap();
                        if yield_between {
                            std::thread::yield_now();
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        // Wait until both have registered and acked what is published.
        let g = r.writer.generation();
        let now = r.now();
        while r.writer.workers(now).len() < workers || !r.writer.all_acked(g, now) {
            std::thread::yield_now();
        }
        group.bench_function(format!("publish_to_all_acked/{label}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    r.reclaim();
                    flip ^= 1;
                    let t = Instant::now();
                    let p = r.writer.publish(&[alt[flip].update()]).unwrap();
                    let now = r.now();
                    while !r.writer.all_acked(p.generation, now) {
                        std::hint::spin_loop();
                    }
                    total += t.elapsed();
                }
                total
            });
        });
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
    }
    group.finish();
}

criterion_group!(benches, bench_tables);
criterion_main!(benches);
