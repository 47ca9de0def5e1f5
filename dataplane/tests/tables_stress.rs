//! Cross-process stress of the table publication protocol (`sluice_dataplane::tables`).
//!
//! This process is control: it publishes new generations in a tight loop for a few seconds,
//! each changing a few random services (sizes vary, so arena blocks move and get reused) and
//! always a "canary" service, while a second process — this test binary re-run as
//! `stress_workers_child` — runs worker threads that "forward packets": look up random flow
//! hashes in the tables they see.
//!
//! Everything published for service `s` at generation `v` is derived from `(v, s)`: backend
//! addresses encode `(v, s, input index)` and the Maglev table is built from names made of
//! them. So a worker can check, at each switch, that every service it sees is exactly what
//! some publication wrote (and that the canary's version is the generation it switched to),
//! and on every burst that random table entries and the backends they lead to are still
//! those bytes. A half-written or overwritten table fails these checks.
//!
//! Slot reuse is checked from both sides: control asserts, from the acks it reads *before* each
//! publication, that every directory slot and arena range it writes was last referenced by a
//! generation all live workers had moved past; workers periodically re-read their directory
//! slot and assert it still holds their generation, unchanged.
//!
//! Bounded in time (about 3 s of publishing, generous timeouts elsewhere); nothing asserts on
//! how many publications or lookups happened beyond "at least one".

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_dataplane::maglev::{self, MaglevBackend, MaglevTable, TableSize};
use sluice_dataplane::tables::layout::block_len;
use sluice_dataplane::tables::{
    Affinity, Backend, BackendId, BackendState, Backing, Capacity, Generation, Mode, ServiceId,
    ServiceKey, ServiceSpec, ServiceUpdate, Tables, Tick, WorkerState, Writer, WriterOptions,
};
use sluice_testbed::Proc;

const CHILD_ENV: &str = "SLUICE_TABLES_STRESS_REGION";
const WORKERS: usize = 2;
const PUBLISH_FOR: Duration = Duration::from_secs(3);
const M: u32 = 251;
const CANARY: u32 = 100;
const STOP: u32 = 254;
const SERVICES: u32 = 8;

fn key(s: u32) -> ServiceKey {
    let last = u8::try_from(s).unwrap();
    if s == STOP {
        ServiceKey::from_v4([10, 0, 0, last], 1, 6)
    } else {
        ServiceKey::from_v4([10, 0, 0, last], 80, 6)
    }
}

/// How many backends service `s` has at version `v`.
fn n_backends(v: u64, s: u32) -> usize {
    1 + usize::try_from((v + u64::from(s)) % 6).unwrap()
}

fn addr(v: u64, s: u32, i: u32) -> [u8; 16] {
    let mut a = [0; 16];
    a[..8].copy_from_slice(&v.to_be_bytes());
    a[8..12].copy_from_slice(&s.to_be_bytes());
    a[12..].copy_from_slice(&i.to_be_bytes());
    a
}

fn weight(v: u64, i: u32) -> u32 {
    1 + u32::try_from((u64::from(i) + v) % 3).unwrap()
}

/// The backends and table of service `s` at version `v`.
fn content(v: u64, s: u32, n: usize) -> (Vec<Backend>, MaglevTable) {
    let backends: Vec<Backend> = (0..u32::try_from(n).unwrap())
        .map(|i| Backend {
            id: BackendId(i),
            addr: IpAddr::V6(Ipv6Addr::from(addr(v, s, i))),
            port: u16::try_from(s).unwrap(),
            mac: Some([2, 0, 0, 0, 0, u8::try_from(i).unwrap()]),
            next_hop: None,
            weight: weight(v, i),
            state: BackendState::Active,
        })
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("v{v}-s{s}-b{i}")).collect();
    let input: Vec<_> = names
        .iter()
        .zip(&backends)
        .map(|(name, b)| MaglevBackend::new(name, b.weight))
        .collect();
    let table = maglev::build(TableSize::try_new(M).unwrap(), &input).unwrap();
    (backends, table)
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Writer::remove(&self.0);
    }
}

/// Control-side bookkeeping, independent of the writer's own: which generation last
/// referenced each directory slot and each arena range.
struct ControlCheck {
    slot_last: Vec<Option<Generation>>,
    /// `(offset, len, version)` → last generation whose directory referenced it.
    blocks: HashMap<(u64, u64, u64), Generation>,
}

impl ControlCheck {
    fn verify_and_record(
        &mut self,
        w: &Writer,
        generation: Generation,
        dir_slot: u32,
        min_ack: Generation,
    ) {
        let slot = usize::try_from(dir_slot).unwrap();
        if let Some(h) = self.slot_last[slot] {
            assert!(
                min_ack > h,
                "directory slot {dir_slot} (last {h:?}) reused for {generation:?} while a live worker had acked only {min_ack:?}"
            );
        }
        self.slot_last[slot] = Some(generation);
        let current: Vec<(u64, u64, u64)> = w
            .services()
            .map(|(_, e)| {
                let len = block_len(e.n_backends, e.table_size).unwrap();
                (e.backends_offset, len, e.version)
            })
            .collect();
        for &(off, len, _) in current.iter().filter(|c| c.2 == generation.get()) {
            for (&(o, l, v), &last) in &self.blocks {
                if o < off + len && off < o + l {
                    assert!(
                        min_ack > last,
                        "arena [{off}, +{len}) of {generation:?} overlaps [{o}, +{l}) of version {v}, last referenced by {last:?}, while a live worker had acked only {min_ack:?}"
                    );
                }
            }
        }
        for c in current {
            self.blocks.insert(c, generation);
        }
        self.blocks.retain(|_, last| *last >= min_ack);
    }
}

#[test]
fn stress_cross_process() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let name = format!("stress-{}", std::process::id());
    let _ = Writer::remove(&name);
    let _cleanup = Cleanup(name.clone());
    let cap = Capacity {
        max_services: 16,
        max_workers: 4,
        dir_slots: 3,
        arena_bytes: 16 * 1024,
    };
    // No worker may be judged dead here: a timeout far above any scheduling hiccup.
    let options = WriterOptions {
        dead_after: Duration::from_secs(60),
    };
    let mut w = Writer::create(&name, cap, Backing::Auto, options).unwrap();
    let start = Instant::now();
    let now = || Tick::from_duration(start.elapsed());
    let mut check = ControlCheck {
        slot_last: vec![None; 3],
        blocks: HashMap::new(),
    };
    check.slot_last[0] = Some(Generation(1));
    // The canary is in every generation workers can see, from the first one on.
    let (b, t) = content(2, CANARY, n_backends(2, CANARY));
    let p = w
        .publish(&[ServiceUpdate::Upsert(ServiceSpec {
            key: key(CANARY),
            id: ServiceId(CANARY),
            mode: Mode::Nat,
            affinity: Affinity::None,
            backends: &b,
            table: &t,
        })])
        .unwrap();
    // No worker yet: the first ones will start at this generation.
    check.verify_and_record(&w, p.generation, p.dir_slot, p.generation);

    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "stress_workers_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, &name)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = Proc::spawn("stress workers", &mut cmd).unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = w
            .workers(now())
            .iter()
            .filter(|s| s.state == WorkerState::Live)
            .count();
        if live == WORKERS {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "worker process exited early"
        );
        assert!(Instant::now() < deadline, "workers did not register");
        std::thread::sleep(Duration::from_millis(5));
    }

    let mut rng = 0x5eed_u64;
    let mut present: Vec<bool> = vec![false; usize::try_from(SERVICES).unwrap() + 1];
    let (mut published, mut would_block) = (0u64, 0u64);
    let mut stopping = false;
    let mut lost = None;
    loop {
        if start.elapsed() > PUBLISH_FOR {
            stopping = true;
        }
        assert!(
            start.elapsed() < PUBLISH_FOR + Duration::from_secs(60),
            "could not publish the stop"
        );
        w.reclaim(now());
        let status = w.workers(now());
        let live: Vec<_> = status
            .iter()
            .filter(|s| s.state == WorkerState::Live)
            .collect();
        if live.len() != WORKERS {
            // A worker thread failed (or was judged dead): stop and report the child's output.
            lost = Some(format!("{status:?}"));
            break;
        }
        let min_ack = live.iter().map(|s| s.ack).min().unwrap();

        let v = w.generation().next().get();
        let mut chosen: Vec<u32> = vec![CANARY];
        if stopping {
            chosen.push(STOP);
        } else {
            for _ in 0..1 + xorshift(&mut rng) % 3 {
                let s = 1 + u32::try_from(xorshift(&mut rng) % u64::from(SERVICES)).unwrap();
                if !chosen.contains(&s) {
                    chosen.push(s);
                }
            }
        }
        let contents: Vec<(u32, Vec<Backend>, MaglevTable)> = chosen
            .iter()
            .map(|&s| {
                let (b, t) = content(v, s, n_backends(v, s));
                (s, b, t)
            })
            .collect();
        let mut updates: Vec<ServiceUpdate<'_>> = Vec::new();
        for (s, b, t) in &contents {
            let idx = usize::try_from(*s).unwrap_or(0);
            // One in eight changes of a regular service removes it instead.
            if *s <= SERVICES && present[idx] && xorshift(&mut rng).is_multiple_of(8) {
                updates.push(ServiceUpdate::Remove(key(*s)));
                continue;
            }
            updates.push(ServiceUpdate::Upsert(ServiceSpec {
                key: key(*s),
                id: ServiceId(*s),
                mode: Mode::Nat,
                affinity: Affinity::None,
                backends: b,
                table: t,
            }));
        }
        match w.publish(&updates) {
            Ok(p) => {
                assert_eq!(p.generation.get(), v);
                published += 1;
                check.verify_and_record(&w, p.generation, p.dir_slot, min_ack);
                for u in &updates {
                    let (k, there) = match u {
                        ServiceUpdate::Upsert(spec) => (spec.key, true),
                        ServiceUpdate::Remove(k) => (*k, false),
                    };
                    if let Some(s) = (1..=SERVICES).find(|&s| key(s) == k) {
                        present[usize::try_from(s).unwrap()] = there;
                    }
                }
                if stopping {
                    break;
                }
            }
            Err(e) if e.is_would_block() => {
                would_block += 1;
                std::thread::yield_now();
            }
            Err(e) => panic!("publish failed: {e}"),
        }
    }
    let generation = w.generation();
    let out = child.wait_output(Duration::from_secs(60)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "control: {published} publications, {would_block} would-block retries, last {generation:?}"
    );
    println!("--- worker process stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(
        out.status.success(),
        "worker process failed: {}",
        out.status
    );
    assert_eq!(lost, None, "a worker left before the stop");
    assert!(stdout.contains("1 passed"), "worker test did not run");
    let line = stdout
        .lines()
        .find_map(|l| Some(&l[l.find("STRESS_OK")?..]))
        .expect("worker summary");
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(field("lookups") > 0 && field("switches") > 0 && field("verified") > 0);
    assert!(published > 0);
}

#[derive(Default)]
struct Stats {
    lookups: u64,
    switches: u64,
    verified: u64,
    revalidations: u64,
}

/// Checks a freshly switched-to generation: every service is exactly what a publication of
/// its version wrote. Caches the expected table per `(service, version)`.
fn verify_generation(
    w: &sluice_dataplane::tables::Worker,
    g: Generation,
    expected: &mut HashMap<(u32, u64), MaglevTable>,
    last_version: &mut HashMap<u32, u64>,
    stats: &mut Stats,
) {
    let canary = w.service(&key(CANARY)).expect("canary in every generation");
    assert_eq!(
        canary.version(),
        g,
        "canary not of the generation switched to"
    );
    let mut keep = Vec::new();
    for view in w.services() {
        let s = view.id().0;
        assert_eq!(*view.key(), key(s));
        let v = view.version().get();
        assert!(v <= g.get(), "service {s} from the future: {v} > {g:?}");
        let last = last_version.entry(s).or_insert(0);
        assert!(
            v >= *last,
            "service {s} went back from version {last} to {v}"
        );
        *last = v;
        let n = view.backends().len();
        assert_eq!(n, n_backends(v, s), "service {s} v{v} has {n} backends");
        keep.push((s, v));
        if expected.contains_key(&(s, v)) {
            continue;
        }
        let (backends, table) = content(v, s, n);
        assert_eq!(
            view.table(),
            table.as_slice(),
            "table of service {s} v{v} differs"
        );
        for (slot, b) in view.backends().iter().enumerate() {
            let want = &backends[table.backend_order()[slot]];
            assert_eq!(b.id(), want.id, "service {s} v{v} slot {slot}");
            assert_eq!(b.ip(), Some(want.addr));
            assert_eq!(
                (b.weight, b.port, b.mac()),
                (want.weight, want.port, want.mac)
            );
        }
        stats.verified += 1;
        expected.insert((s, v), table);
    }
    expected.retain(|k, _| keep.contains(k));
}

fn worker_loop(tables: &Tables, seed: u64, stop: &AtomicBool) -> Stats {
    let mut w = tables.register().expect("register");
    let mut stats = Stats::default();
    let mut expected = HashMap::new();
    let mut last_version = HashMap::new();
    let mut rng = seed;
    let deadline = Instant::now() + Duration::from_secs(120);
    verify_generation(
        &w,
        w.generation(),
        &mut expected,
        &mut last_version,
        &mut stats,
    );
    for burst in 0u64.. {
        if let Some(g) = w.check().expect("check") {
            stats.switches += 1;
            verify_generation(&w, g, &mut expected, &mut last_version, &mut stats);
        }
        if w.service(&key(STOP)).is_some() || stop.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
            break;
        }
        let views = w.services();
        for _ in 0..32 {
            let view = &views[usize::try_from(xorshift(&mut rng)).unwrap() % views.len()];
            let h = xorshift(&mut rng);
            let (s, v) = (view.id().0, view.version().get());
            let b = view.lookup(h).expect("every table has positive weights");
            let a = b.addr;
            assert_eq!(
                (&a[..8], &a[8..12], &a[12..]),
                (
                    &v.to_be_bytes()[..],
                    &s.to_be_bytes()[..],
                    &b.id().0.to_be_bytes()[..]
                ),
                "lookup of service {s} v{v} landed on a backend of another version or service"
            );
            let i = usize::try_from(h % u64::from(M)).unwrap();
            assert_eq!(
                view.table()[i],
                expected[&(s, v)].as_slice()[i],
                "table entry {i} of service {s} v{v} changed under the worker"
            );
            stats.lookups += 1;
        }
        if burst.is_multiple_of(256) {
            assert!(w.revalidate(), "directory slot changed while in use");
            stats.revalidations += 1;
        }
        assert!(Instant::now() < deadline, "no stop signal from control");
    }
    assert!(w.revalidate());
    stats
}

/// The worker half of `stress_cross_process` (a no-op unless re-run by it).
#[test]
fn stress_workers_child() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let tables = Tables::map(&name).expect("map the region");
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..WORKERS)
        .map(|t| {
            let tables = tables.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker_loop(&tables, 0x9e37_79b9 + u64::try_from(t).unwrap(), &stop)
                }));
                // One failing worker stops the others, so the failure is reported promptly.
                stop.store(true, Ordering::Relaxed);
                match r {
                    Ok(s) => s,
                    Err(e) => std::panic::resume_unwind(e),
                }
            })
        })
        .collect();
    let mut total = Stats::default();
    for h in handles {
        let s = h.join().expect("worker thread panicked");
        total.lookups += s.lookups;
        total.switches += s.switches;
        total.verified += s.verified;
        total.revalidations += s.revalidations;
    }
    println!(
        "STRESS_OK lookups={} switches={} verified={} revalidations={}",
        total.lookups, total.switches, total.verified, total.revalidations
    );
}
