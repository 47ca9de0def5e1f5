//! Publication, acks, reclaim, dead workers and restarts of the shared table region
//! (`sluice_dataplane::tables`), at the library level. Time is passed in as `Tick`s, so nothing
//! here depends on how fast the machine is. The two `*_in_another_process` tests re-run this
//! test binary as a second process (the testbed's `Proc` kills it by PID when done).

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_dataplane::maglev::{self, MaglevBackend, MaglevTable, TableSize};
use sluice_dataplane::tables::{
    Affinity, Backend, BackendId, BackendState, Backing, Capacity, Generation, Mode, Proto,
    PublishError, ServiceId, ServiceKey, ServiceSpec, ServiceUpdate, ShmError, Tables, Tick,
    WorkerState, Writer, WriterOptions, bump,
};
use sluice_testbed::Proc;

const DEAD_AFTER: Duration = Duration::from_secs(2);
const CHILD_ROLE: &str = "SLUICE_TABLES_CHILD";
const CHILD_REGION: &str = "SLUICE_TABLES_REGION";

/// Removes the region when the test ends, pass or fail.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Writer::remove(&self.0);
    }
}

fn region(tag: &str) -> (String, Cleanup) {
    let name = format!("test-{}-{tag}", std::process::id());
    let _ = Writer::remove(&name);
    (name.clone(), Cleanup(name))
}

fn cap(dir_slots: u32, arena_bytes: u64) -> Capacity {
    Capacity {
        max_services: 16,
        max_workers: 4,
        dir_slots,
        arena_bytes,
    }
}

fn options() -> WriterOptions {
    WriterOptions {
        dead_after: DEAD_AFTER,
    }
}

fn key(last: u8) -> ServiceKey {
    ServiceKey::from_v4([10, 0, 0, last], 80, 6)
}

fn backends(tag: u8, n: u8) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend {
            id: BackendId(u32::from(tag) * 100 + u32::from(i)),
            addr: IpAddr::from([192, 0, 2, tag.wrapping_mul(16).wrapping_add(i)]),
            port: 8000 + u16::from(i),
            mac: Some([2, 0, 0, 0, tag, i]),
            next_hop: (i % 2 == 1).then(|| IpAddr::from([198, 51, 100, 1])),
            weight: 1 + u32::from(i % 3),
            state: if i == 0 {
                BackendState::Draining
            } else {
                BackendState::Active
            },
        })
        .collect()
}

fn table(bs: &[Backend], m: u32) -> MaglevTable {
    let names: Vec<String> = bs.iter().map(|b| format!("b{}", b.id.0)).collect();
    let input: Vec<MaglevBackend<'_>> = names
        .iter()
        .zip(bs)
        .map(|(n, b)| MaglevBackend::new(n, b.weight))
        .collect();
    maglev::build(TableSize::try_new(m).unwrap(), &input).unwrap()
}

/// A service's inputs, kept alive while its update is published.
struct Svc {
    key: ServiceKey,
    id: u32,
    backends: Vec<Backend>,
    table: MaglevTable,
}

impl Svc {
    fn new(key: ServiceKey, id: u32, n: u8, m: u32) -> Self {
        let backends = backends(u8::try_from(id).unwrap(), n);
        let table = table(&backends, m);
        Self {
            key,
            id,
            backends,
            table,
        }
    }

    fn update(&self) -> ServiceUpdate<'_> {
        ServiceUpdate::Upsert(ServiceSpec {
            key: self.key,
            id: ServiceId(self.id),
            mode: Mode::EncapGue,
            affinity: Affinity::None,
            backends: &self.backends,
            table: &self.table,
        })
    }
}

fn t(s: u64) -> Tick {
    Tick::from_nanos(s * 1_000_000_000)
}

/// Every lookup through the shared region answers what the Maglev table itself answers, and
/// the backend fields arrive intact.
#[test]
fn publish_and_lookup_match_maglev() {
    let (name, _c) = region("lookup");
    let mut w = Writer::create(&name, cap(4, 1 << 20), Backing::Shm, options()).unwrap();
    let a = Svc::new(key(1), 1, 7, 251);
    let b6 = Svc::new(
        ServiceKey::new("2001:db8::5".parse().unwrap(), 443, Proto::Udp),
        2,
        3,
        509,
    );
    let p = w.publish(&[a.update(), b6.update()]).unwrap();
    assert_eq!(p.generation, Generation(2));

    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let worker = tables.register().unwrap();
    assert_eq!(worker.generation(), Generation(2));
    assert_eq!(worker.services().len(), 2);
    for svc in [&a, &b6] {
        let view = worker.service(&svc.key).expect("service published");
        assert_eq!(view.id(), ServiceId(svc.id));
        assert_eq!(view.mode(), Mode::EncapGue);
        assert_eq!(view.version(), Generation(2));
        assert_eq!(view.table(), svc.table.as_slice());
        for h in (0..5000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            let slot = svc.table.lookup(h);
            let want = &svc.backends[svc.table.backend_order()[usize::from(slot)]];
            let got = view.lookup(h).expect("non-empty table");
            assert_eq!(got.id(), want.id);
            assert_eq!(got.ip(), Some(want.addr));
            assert_eq!(got.port, want.port);
            assert_eq!(got.mac(), want.mac);
            assert_eq!(got.next_hop(), want.next_hop);
            assert_eq!(got.weight, want.weight);
            assert_eq!(got.state(), want.state);
        }
    }
    assert!(worker.service(&key(9)).is_none());
}

/// The client-affinity flag travels from the writer's spec to the worker's view, next to
/// `SERVICE_IN_USE`, and a republication without it clears it.
#[test]
fn client_affinity_flag_is_published() {
    use sluice_dataplane::tables::layout::{SERVICE_CLIENT_AFFINITY, SERVICE_IN_USE};
    let (name, _c) = region("affinity");
    let mut w = Writer::create(&name, cap(4, 1 << 20), Backing::Shm, options()).unwrap();
    let a = Svc::new(key(1), 1, 3, 251);
    let spec = |affinity| {
        ServiceUpdate::Upsert(ServiceSpec {
            key: a.key,
            id: ServiceId(a.id),
            mode: Mode::Nat,
            affinity,
            backends: &a.backends,
            table: &a.table,
        })
    };
    w.publish(&[spec(Affinity::ClientIp)]).unwrap();
    let (_, e) = w.service(&a.key).unwrap();
    assert_eq!(e.flags, SERVICE_IN_USE | SERVICE_CLIENT_AFFINITY);
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let mut worker = tables.register().unwrap();
    assert_eq!(
        worker.service(&a.key).unwrap().affinity(),
        Affinity::ClientIp
    );
    let p = w.publish(&[spec(Affinity::None)]).unwrap();
    assert_eq!(worker.check().unwrap(), Some(p.generation));
    assert_eq!(worker.service(&a.key).unwrap().affinity(), Affinity::None);
    assert_eq!(w.service(&a.key).unwrap().1.flags, SERVICE_IN_USE);
}

/// Updating one service writes only its own block: the other entries keep their offsets and
/// version, their bytes are unchanged, and a worker keeps the very same views for them.
#[test]
fn updating_one_service_leaves_the_others_untouched() {
    let (name, _c) = region("untouched");
    let mut w = Writer::create(&name, cap(4, 1 << 20), Backing::Shm, options()).unwrap();
    let svcs: Vec<Svc> = (1..=3)
        .map(|i| Svc::new(key(i), u32::from(i), 4, 251))
        .collect();
    let ups: Vec<_> = svcs.iter().map(Svc::update).collect();
    w.publish(&ups).unwrap();
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let mut worker = tables.register().unwrap();

    let before: Vec<_> = svcs
        .iter()
        .map(|s| {
            let (i, e) = w.service(&s.key).unwrap();
            (i, *e, w.service_block(&s.key).unwrap().to_vec())
        })
        .collect();
    let ptr_before = worker.service(&key(2)).unwrap().table().as_ptr();

    let a2 = Svc::new(key(1), 1, 6, 251);
    let p = w.publish(&[a2.update()]).unwrap();
    assert_eq!(worker.check().unwrap(), Some(p.generation));

    let (i1, e1) = w.service(&key(1)).unwrap();
    assert_eq!(i1, before[0].0, "a service keeps its directory index");
    assert_eq!(e1.version(), p.generation);
    assert_ne!(e1.backends_offset, before[0].1.backends_offset);
    for (s, (i, e, bytes)) in svcs.iter().zip(&before).skip(1) {
        let (i_now, e_now) = w.service(&s.key).unwrap();
        assert_eq!((i_now, e_now), (*i, e), "entry of {:?} rewritten", s.key);
        assert_eq!(w.service_block(&s.key).unwrap(), &bytes[..]);
    }
    assert_eq!(
        worker.service(&key(2)).unwrap().table().as_ptr(),
        ptr_before,
        "unchanged service keeps its view"
    );
    assert_eq!(worker.service(&key(1)).unwrap().backends().len(), 6);

    // Remove: gone for the worker; the others stay.
    let p = w.publish(&[ServiceUpdate::Remove(key(3))]).unwrap();
    assert_eq!(worker.check().unwrap(), Some(p.generation));
    assert!(worker.service(&key(3)).is_none());
    assert!(worker.service(&key(2)).is_some());
    assert!(worker.revalidate());
}

/// With every slot but the published one waiting for a worker that has not acked, publishing
/// would block (typed, retryable) instead of overwriting; once the worker acks, reclaim frees
/// the slot. The same holds for arena space.
#[test]
fn publish_would_block_until_workers_ack() {
    let (name, _c) = region("wouldblock");
    // Arena for two blocks of (2 backends, M = 251): 640 bytes each.
    let mut w = Writer::create(&name, cap(2, 1280), Backing::Shm, options()).unwrap();
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let mut worker = tables.register().unwrap();
    let s1 = Svc::new(key(1), 1, 2, 251);
    let g2 = w.publish(&[s1.update()]).unwrap().generation;
    // Slot 0 (generation 1) waits for the worker, which still reads generation 1.
    assert_eq!(w.publish(&[s1.update()]), Err(PublishError::NoFreeDirSlot));
    assert!(PublishError::NoFreeDirSlot.is_would_block());
    let r = w.reclaim(t(1));
    assert_eq!((r.safe, r.dir_slots), (Generation(1), 0));
    assert_eq!(worker.check().unwrap(), Some(g2));
    let r = w.reclaim(t(1));
    assert_eq!((r.safe, r.dir_slots, r.live_workers), (g2, 1, 1));
    let g3 = w.publish(&[s1.update()]).unwrap().generation;
    // Generation 2's block is retired; the arena is full until the worker acks 3.
    assert_eq!(w.arena_free().0, 0);
    assert_eq!(worker.check().unwrap(), Some(g3));
    assert_eq!(w.publish(&[s1.update()]), Err(PublishError::NoFreeDirSlot));
    w.reclaim(t(1));
    let g4 = w.publish(&[s1.update()]).unwrap().generation;
    w.reclaim(t(1));
    let err = w.publish(&[s1.update()]).unwrap_err();
    assert!(err.is_would_block(), "{err}");
    assert_eq!(worker.check().unwrap(), Some(g4));
    w.reclaim(t(1));
    w.publish(&[s1.update()]).unwrap();
    assert!(worker.check().unwrap().is_some());

    // Too big for the whole arena: not retryable.
    w.reclaim(t(1));
    let big = Svc::new(key(2), 2, 20, 509);
    let err = w.publish(&[big.update()]).unwrap_err();
    assert!(matches!(err, PublishError::ArenaFull { .. }), "{err}");
    // A table built from other backends is refused before anything is written.
    let mut wrong = Svc::new(key(3), 3, 2, 251);
    wrong.backends.pop();
    assert!(matches!(
        w.publish(&[wrong.update()]),
        Err(PublishError::BackendsMismatch { .. })
    ));
    assert!(matches!(
        w.publish(&[s1.update(), s1.update()]),
        Err(PublishError::DuplicateKey(_))
    ));
}

/// A worker whose heartbeat stops is waited for only until the timeout (time passed in);
/// then its block is marked dead and reclaim proceeds. If it wakes up, its next check sees
/// that, drops its tables and re-synchronises to the current generation.
#[test]
fn dead_worker_is_not_waited_for() {
    let (name, _c) = region("dead");
    let mut w = Writer::create(&name, cap(2, 1 << 16), Backing::Shm, options()).unwrap();
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let mut stalled = tables.register().unwrap();
    let mut healthy = tables.register().unwrap();
    let s1 = Svc::new(key(1), 1, 2, 251);
    let g2 = w.publish(&[s1.update()]).unwrap().generation;
    healthy.check().unwrap();
    w.reclaim(t(10)); // first observation of both heartbeats
    assert_eq!(w.publish(&[s1.update()]), Err(PublishError::NoFreeDirSlot));

    // Within the timeout the stalled worker is still waited for.
    healthy.check().unwrap();
    let r = w.reclaim(t(10).saturating_add(DEAD_AFTER));
    assert_eq!(
        (r.live_workers, r.newly_dead, r.safe),
        (2, 0, Generation(1))
    );
    // Past it, it is not.
    healthy.check().unwrap();
    let r = w.reclaim(t(13));
    assert_eq!((r.live_workers, r.newly_dead, r.safe), (1, 1, g2));
    let status = w.workers(t(13));
    let dead: Vec<_> = status
        .iter()
        .filter(|s| s.state == WorkerState::Dead)
        .map(|s| s.index)
        .collect();
    assert_eq!(dead, [stalled.index()]);
    let g3 = w.publish(&[s1.update()]).unwrap().generation;

    // The stalled worker wakes up: it re-claims its block and jumps to the current tables.
    assert_eq!(stalled.check().unwrap(), Some(g3));
    assert_eq!(stalled.generation(), g3);
    assert!(stalled.service(&key(1)).is_some());
    let live = w
        .workers(t(14))
        .iter()
        .filter(|s| s.state == WorkerState::Live)
        .count();
    assert_eq!(live, 2);
}

/// A dead worker's block can be taken by a new worker; the old holder, should it wake up, is
/// told it was evicted and holds no tables any more.
#[test]
fn evicted_worker_must_register_again() {
    let (name, _c) = region("evicted");
    let mut w = Writer::create(&name, cap(4, 1 << 16), Backing::Shm, options()).unwrap();
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let mut old = tables.register().unwrap();
    let s1 = Svc::new(key(1), 1, 2, 251);
    w.publish(&[s1.update()]).unwrap();
    w.reclaim(t(0));
    assert_eq!(w.reclaim(t(3)).newly_dead, 1);
    let new = tables.register().unwrap();
    assert_eq!(new.index(), old.index(), "the dead block is reused first");
    assert!(matches!(old.check(), Err(ShmError::Evicted { .. })));
    assert!(old.services().is_empty());
    assert_eq!(new.generation(), w.generation());
    // Takeover of a live block (a restarted dataplane) works the same way.
    let mut taken = tables.register_at(3, false).unwrap();
    assert!(matches!(
        tables.register_at(3, false),
        Err(ShmError::WorkerBusy { index: 3 })
    ));
    let _successor = tables.register_at(3, true).unwrap();
    assert!(matches!(taken.check(), Err(ShmError::Evicted { index: 3 })));
    assert!(matches!(
        tables.register_at(99, true),
        Err(ShmError::WorkerBusy { index: 99 })
    ));
}

/// Dataplane restart, library level: a newly mapped reader is on the published generation as
/// soon as it registers, without waiting for another publication.
#[test]
fn new_reader_sees_the_current_generation_at_once() {
    let (name, _c) = region("newreader");
    let mut w = Writer::create(&name, cap(4, 1 << 20), Backing::Shm, options()).unwrap();
    let svcs: Vec<Svc> = (1..=4)
        .map(|i| Svc::new(key(i), u32::from(i), 3, 251))
        .collect();
    for s in &svcs {
        w.publish(&[s.update()]).unwrap();
        w.reclaim(t(0));
    }
    let tables = Tables::map(&name).unwrap();
    assert_eq!(tables.published(), w.generation());
    let worker = tables.register().unwrap();
    assert_eq!(worker.generation(), Generation(5));
    assert_eq!(worker.services().len(), 4);
    for s in &svcs {
        assert_eq!(worker.service(&s.key).unwrap().table(), s.table.as_slice());
    }
}

/// Control restart, library level: a new writer attaches, continues the generations, and
/// touches nothing workers read. Slots of older generations that a lagging worker may still
/// read stay reserved until it acks.
#[test]
fn writer_attach_continues_without_disturbing_workers() {
    let (name, _c) = region("attach");
    let mut w = Writer::create(&name, cap(4, 1 << 20), Backing::Shm, options()).unwrap();
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let mut lagging = tables.register().unwrap();
    let svcs: Vec<Svc> = (1..=3)
        .map(|i| Svc::new(key(i), u32::from(i), 3, 251))
        .collect();
    w.publish(&[svcs[0].update()]).unwrap(); // 2
    w.publish(&[svcs[1].update()]).unwrap(); // 3
    assert_eq!(lagging.check().unwrap(), Some(Generation(3)));
    let g4 = w.publish(&[svcs[2].update()]).unwrap().generation; // 4, in the last free slot
    let entries: Vec<_> = w.services().map(|(i, e)| (i, *e)).collect();
    assert!(
        matches!(
            Writer::attach(&name, options()),
            Err(ShmError::WriterBusy { .. })
        ),
        "a second writer is refused while the first lives"
    );
    drop(w);

    let mut w = Writer::attach(&name, options()).unwrap();
    assert_eq!(tables.writer_epoch(), 2);
    assert_eq!(w.generation(), g4);
    let again: Vec<_> = w.services().map(|(i, e)| (i, *e)).collect();
    assert_eq!(again, entries);
    // The worker (on 3) notices nothing but the generation it had not seen yet.
    assert!(lagging.revalidate());
    // Slots of generations 1..3 are retired at 4: the worker on 3 blocks their reuse.
    assert_eq!(
        w.publish(&[svcs[0].update()]),
        Err(PublishError::NoFreeDirSlot)
    );
    assert_eq!(lagging.check().unwrap(), Some(g4));
    w.reclaim(t(0));
    let g5 = w.publish(&[svcs[0].update()]).unwrap().generation;
    assert_eq!(g5, Generation(5));
    assert_eq!(lagging.check().unwrap(), Some(g5));
    for s in &svcs[1..] {
        assert_eq!(lagging.service(&s.key).unwrap().table(), s.table.as_slice());
    }
}

/// Per-worker counters and heartbeats reach control; per-service counters sum over workers.
#[test]
fn counters_and_heartbeats_reach_control() {
    let (name, _c) = region("counters");
    let mut w = Writer::create(&name, cap(4, 1 << 20), Backing::Shm, options()).unwrap();
    let s1 = Svc::new(key(1), 1, 3, 251);
    w.publish(&[s1.update()]).unwrap();
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let workers: Vec<_> = (0..2).map(|_| tables.register().unwrap()).collect();
    for (n, worker) in (1u64..).zip(&workers) {
        let b = worker.block();
        bump(&b.rx_packets, 10 * n);
        bump(&b.rx_bytes, 1000 * n);
        bump(&b.drops[3], n);
        let view = worker.service(&key(1)).unwrap();
        for i in 0..n {
            // One flow per worker: its first packet is the new one.
            worker.count(view, 100, i == 0);
        }
    }
    let status = w.workers(t(1));
    assert_eq!(status.len(), 2);
    assert!(status.iter().all(|s| s.state == WorkerState::Live));
    assert!(
        status
            .iter()
            .all(|s| s.pid == u64::from(std::process::id()))
    );
    assert!(status.iter().all(|s| s.counters.table_switches == 1));
    let rx: u64 = status.iter().map(|s| s.counters.rx_packets).sum();
    let drops: u64 = status.iter().map(|s| s.counters.drops[3]).sum();
    assert_eq!((rx, drops), (30, 3));
    let (index, _) = w.service(&key(1)).unwrap();
    let totals = w.service_totals(index);
    assert_eq!(
        (totals.packets, totals.bytes, totals.connections),
        (3, 300, 2)
    );
    // Heartbeat age grows while the workers are quiet and resets when they check.
    let s = w.workers(t(2));
    assert!(s.iter().all(|s| s.heartbeat_age == Duration::from_secs(1)));
    let hb = tables.control_heartbeat();
    w.heartbeat();
    assert!(tables.control_heartbeat() > hb);

    // A removed service's index is reused only after every worker acked its removal, and
    // then starts from zero.
    let mut workers = workers;
    w.publish(&[ServiceUpdate::Remove(key(1))]).unwrap();
    let s2 = Svc::new(key(2), 2, 3, 251);
    w.publish(&[s2.update()]).unwrap();
    assert_ne!(
        w.service(&key(2)).unwrap().0,
        index,
        "not reused before the acks"
    );
    for worker in &mut workers {
        worker.check().unwrap();
    }
    let r = w.reclaim(t(3));
    assert_eq!(r.indices, 1);
    let s3 = Svc::new(key(3), 3, 3, 251);
    w.publish(&[s3.update()]).unwrap();
    let (index3, _) = w.service(&key(3)).unwrap();
    assert_eq!(index3, index, "index reused");
    // Connections included.
    assert_eq!(w.service_totals(index3), Default::default());
}

/// `wait_acked` returns once every live worker acked, and gives up after its timeout (on the
/// caller's clock) while a live worker lags.
#[test]
fn wait_acked_follows_workers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (name, _c) = region("wait");
    let mut w = Writer::create(&name, cap(4, 1 << 20), Backing::Shm, options()).unwrap();
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let polling = {
        let tables = tables.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut worker = tables.register().unwrap();
            while !stop.load(Ordering::Relaxed) {
                worker.check().unwrap();
                std::thread::yield_now();
            }
        })
    };
    let start = Instant::now();
    let clock = || Tick::from_duration(start.elapsed());
    let s1 = Svc::new(key(1), 1, 3, 251);
    let g = w.publish(&[s1.update()]).unwrap().generation;
    w.wait_acked(g, Duration::from_secs(60), clock).unwrap();

    // A second worker that never checks: a fake clock, 1 ms per call, times out after 1 s of
    // it — before the 2 s that would make that worker dead.
    let _lagging = tables.register().unwrap();
    let g = w.publish(&[s1.update()]).unwrap().generation;
    let mut fake = 0;
    let err = w
        .wait_acked(g, Duration::from_secs(1), || {
            fake += 1;
            Tick::from_nanos(fake * 1_000_000)
        })
        .unwrap_err();
    assert_eq!(err.generation, g);
    assert!(err.lowest < g);
    stop.store(true, Ordering::Relaxed);
    polling.join().unwrap();
}

/// The handles move between threads: a dataplane may register on its main thread and hand
/// each worker its own.
#[test]
fn handles_are_send() {
    fn send<T: Send>() {}
    send::<Writer>();
    send::<Tables>();
    send::<sluice_dataplane::tables::Worker>();
}

/// Regions of another size or an occupied name are reported as such.
#[test]
fn create_attach_errors_are_typed() {
    let (name, _c) = region("errors");
    assert!(matches!(
        Writer::attach_with(&name, Backing::Shm, options()),
        Err(ShmError::Region(_))
    ));
    assert!(matches!(
        Tables::map_with(&name, Backing::Shm),
        Err(ShmError::Region(_))
    ));
    let bad = Capacity {
        dir_slots: 1,
        ..cap(2, 4096)
    };
    assert!(matches!(
        Writer::create(&name, bad, Backing::Shm, options()),
        Err(ShmError::Capacity(_))
    ));
    let w = Writer::open_or_create(&name, cap(3, 4096), Backing::Shm, options()).unwrap();
    assert_eq!(w.capacity().dir_slots, 3);
    assert!(matches!(
        Writer::create(&name, cap(3, 4096), Backing::Shm, options()),
        Err(ShmError::Region(_))
    ));
    assert!(matches!(
        Writer::attach_with(&name, Backing::Shm, options()),
        Err(ShmError::WriterBusy { .. })
    ));
    drop(w);
    let w = Writer::open_or_create(&name, cap(2, 1 << 20), Backing::Shm, options()).unwrap();
    assert_eq!(
        w.capacity().dir_slots,
        3,
        "an existing region keeps its capacity"
    );
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let _all: Vec<_> = (0..4).map(|_| tables.register().unwrap()).collect();
    assert!(matches!(
        tables.register(),
        Err(ShmError::NoFreeWorkerBlock { max_workers: 4 })
    ));
}

// === Real-process restarts ===

fn spawn_child(test: &str, role: &str, name: &str) -> Proc {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env(CHILD_REGION, name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Proc::spawn(role, &mut cmd).unwrap()
}

fn child_region(role: &str) -> Option<String> {
    (std::env::var(CHILD_ROLE).ok()? == role)
        .then(|| std::env::var(CHILD_REGION).ok())
        .flatten()
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The child half of `control_restart_in_another_process`: a writer that publishes in a
/// tight loop until it is killed (possibly in the middle of writing a block or a slot).
#[test]
fn child_publishing_writer() {
    let Some(name) = child_region("publishing-writer") else {
        return;
    };
    let mut w = Writer::create(&name, cap(4, 1 << 16), Backing::Auto, options()).unwrap();
    let svcs: Vec<Svc> = (1..=3)
        .map(|i| Svc::new(key(i), u32::from(i), 3, 251))
        .collect();
    let start = Instant::now();
    for n in 0usize.. {
        let now = Tick::from_duration(start.elapsed());
        w.reclaim(now);
        let _ = w.publish(&[svcs[n % 3].update()]);
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "parent never killed us"
        );
    }
}

/// Control restart with real processes: the writer process is SIGKILLed mid-loop; a worker in
/// this process keeps forwarding with its last tables; a new writer attaches at once (the
/// kernel dropped the dead writer's lock), continues the generations, and the worker follows.
#[test]
fn control_restart_in_another_process() {
    let (name, _c) = region("ctlrestart");
    let mut child = spawn_child("child_publishing_writer", "publishing-writer", &name);
    let tables = wait_for("the region", || Tables::map(&name).ok());
    let mut worker = wait_for("a registration", || tables.register().ok());
    wait_for("a few generations", || {
        worker.check().unwrap();
        (worker.generation() >= Generation(20)).then_some(())
    });
    child.kill();
    worker.check().unwrap();
    let seen = worker.generation();
    let hash_hits = (0..1000u64)
        .filter(|h| worker.services().iter().all(|v| v.lookup(*h).is_some()))
        .count();
    assert_eq!(hash_hits, 1000, "forwarding goes on with the last tables");

    let mut w = Writer::attach(&name, options()).unwrap();
    assert_eq!(
        w.generation(),
        seen,
        "attach keeps the published generation"
    );
    assert!(worker.revalidate());
    w.reclaim(t(0));
    let s = Svc::new(key(1), 1, 5, 251);
    let p = loop {
        match w.publish(&[s.update()]) {
            Ok(p) => break p,
            Err(e) if e.is_would_block() => {
                worker.check().unwrap();
                w.reclaim(t(0));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(p.generation, seen.next());
    assert_eq!(worker.check().unwrap(), Some(p.generation));
    assert_eq!(worker.service(&key(1)).unwrap().backends().len(), 5);
}

/// The child half of `dataplane_restart_in_another_process`: one worker that checks and then
/// hangs around until it is killed.
#[test]
fn child_idle_worker() {
    let Some(name) = child_region("idle-worker") else {
        return;
    };
    let tables = Tables::map(&name).unwrap();
    let mut worker = tables.register().unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        worker.check().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("parent never killed us");
}

/// Dataplane restart with real processes: a worker process is SIGKILLed; control stops
/// waiting for it once its heartbeat is stale (time passed in), and a new worker sees the
/// current tables immediately, reusing the dead block.
#[test]
fn dataplane_restart_in_another_process() {
    let (name, _c) = region("dprestart");
    let mut w = Writer::create(&name, cap(2, 1 << 16), Backing::Auto, options()).unwrap();
    let s = Svc::new(key(1), 1, 3, 251);
    let g2 = w.publish(&[s.update()]).unwrap().generation;
    let mut child = spawn_child("child_idle_worker", "idle-worker", &name);
    let index = wait_for("the child's ack", || {
        w.workers(t(0))
            .into_iter()
            .find(|st| st.ack == g2 && st.pid != u64::from(std::process::id()))
            .map(|st| st.index)
    });
    child.kill();
    w.reclaim(t(1));
    let g3 = w.publish(&[s.update()]).unwrap().generation;
    // The dead process acked 2, so slot of 2 can't be reused... until it is judged dead.
    assert_eq!(w.publish(&[s.update()]), Err(PublishError::NoFreeDirSlot));
    let r = w.reclaim(t(1).saturating_add(DEAD_AFTER * 2));
    assert_eq!(r.newly_dead, 1);
    let g4 = w.publish(&[s.update()]).unwrap().generation;
    assert!(g4 > g3);

    let tables = Tables::map(&name).unwrap();
    let worker = tables.register().unwrap();
    assert_eq!(worker.index(), index, "the dead block is reused");
    assert_eq!(worker.generation(), g4);
    assert_eq!(worker.service(&key(1)).unwrap().table(), s.table.as_slice());
}
