//! Per-backend counters in the table region (ABI version 2; connections since version 3):
//! packets, bytes and connections land per backend and per service and sum across workers,
//! counter slots are stable per backend and zeroed before reuse, out-of-range lookups are
//! ignored, and a region of an older version (or another counter size) is refused.

use std::fs::OpenOptions;
use std::mem::offset_of;
use std::net::IpAddr;
use std::os::unix::fs::FileExt as _;

use sluice_dataplane::maglev::{self, MaglevBackend, MaglevTable, TableSize};
use sluice_dataplane::tables::layout::{ABI_VERSION, Header};
use sluice_dataplane::tables::{
    Affinity, BACKEND_COUNTER_SLOTS, Backend, BackendId, BackendState, Backing, Capacity, Mode,
    ServiceId, ServiceKey, ServiceSpec, ServiceUpdate, ShmError, Tables, Tick, Writer,
    WriterOptions,
};

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Writer::remove(&self.0);
    }
}

fn region(tag: &str) -> (String, Cleanup) {
    let name = format!("ctr-{}-{tag}", std::process::id());
    let _ = Writer::remove(&name);
    (name.clone(), Cleanup(name))
}

const CAP: Capacity = Capacity {
    max_services: 8,
    max_workers: 4,
    dir_slots: 4,
    arena_bytes: 1 << 20,
};

fn key() -> ServiceKey {
    ServiceKey::from_v4([10, 0, 0, 1], 80, 6)
}

fn backends(ids: impl IntoIterator<Item = u32>) -> Vec<Backend> {
    ids.into_iter()
        .map(|id| Backend {
            id: BackendId(id),
            addr: IpAddr::from([192, 0, 2, u8::try_from(id % 250).unwrap()]),
            port: 8080,
            mac: Some([2, 0, 0, 0, 0, 1]),
            next_hop: None,
            weight: 1,
            state: BackendState::Active,
        })
        .collect()
}

fn table(bs: &[Backend]) -> MaglevTable {
    let names: Vec<String> = bs.iter().map(|b| format!("b{}", b.id.0)).collect();
    let input: Vec<MaglevBackend<'_>> = names
        .iter()
        .zip(bs)
        .map(|(n, b)| MaglevBackend::new(n, b.weight))
        .collect();
    maglev::build(TableSize::try_new(251).unwrap(), &input).unwrap()
}

fn publish(w: &mut Writer, bs: &[Backend]) {
    let t = table(bs);
    w.publish(&[ServiceUpdate::Upsert(ServiceSpec {
        key: key(),
        id: ServiceId(1),
        mode: Mode::Nat,
        affinity: Affinity::None,
        backends: bs,
        table: &t,
    })])
    .unwrap();
}

/// `(backend id, packets, bytes, connections)` per backend.
fn totals(w: &Writer, index: u32) -> Vec<(u32, u64, u64, u64)> {
    w.backend_totals(index)
        .into_iter()
        .map(|(id, t)| (id.0, t.packets, t.bytes, t.connections))
        .collect()
}

#[test]
fn counts_land_per_backend_and_sum_across_workers() {
    let (name, _c) = region("sum");
    let mut w = Writer::create(&name, CAP, Backing::Shm, WriterOptions::default()).unwrap();
    publish(&mut w, &backends([7, 8, 9]));
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let a = tables.register().unwrap();
    let b = tables.register().unwrap();
    let index = a.service(&key()).unwrap().index();
    a.count_backend(index, BackendId(7), 100, true);
    a.count_backend(index, BackendId(7), 50, false);
    b.count_backend(index, BackendId(7), 10, true);
    b.count_backend(index, BackendId(9), 1, true);
    let want = vec![(7, 3, 160, 2), (8, 0, 0, 0), (9, 1, 1, 1)];
    assert_eq!(totals(&w, index), want);
    // Unknown service index, unknown backend: ignored, no panic.
    a.count_backend(index + 1, BackendId(7), 5, true);
    a.count_backend(u32::MAX, BackendId(7), 5, true);
    a.count_backend(index, BackendId(1234), 5, true);
    assert_eq!(totals(&w, index), want);
    assert!(w.backend_totals(index + 1).is_empty());
}

/// `count_forward` (what the worker loop does with each forwarded packet) counts the service
/// and the backend together: `N` new flows of several packets each give `N` connections on
/// the service and, summed, on its backends, however the packets spread over workers.
#[test]
fn connections_count_once_per_new_flow_on_service_and_backend() {
    const FLOWS: u32 = 90;
    const PACKETS: u64 = 5;
    let (name, _c) = region("conn");
    let mut w = Writer::create(&name, CAP, Backing::Shm, WriterOptions::default()).unwrap();
    publish(&mut w, &backends([7, 8, 9]));
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let workers = [tables.register().unwrap(), tables.register().unwrap()];
    let index = workers[0].service(&key()).unwrap().index();
    for flow in 0..FLOWS {
        let worker = &workers[usize::try_from(flow % 2).unwrap()];
        let backend = BackendId(7 + flow % 3);
        for p in 0..PACKETS {
            // Only the packet whose backend was picked (the first) is a new flow.
            worker.count_forward(index, Some(backend), 100, p == 0);
        }
        // A NAT reply of the flow: a packet of the service, never a connection.
        worker.count_forward(index, None, 40, false);
    }
    let n = u64::from(FLOWS);
    let s = w.service_totals(index);
    assert_eq!(
        (s.packets, s.bytes, s.connections),
        (n * (PACKETS + 1), n * (PACKETS * 100 + 40), n)
    );
    let per = totals(&w, index);
    let k = n / 3;
    assert_eq!(
        per,
        vec![
            (7, k * PACKETS, k * PACKETS * 100, k),
            (8, k * PACKETS, k * PACKETS * 100, k),
            (9, k * PACKETS, k * PACKETS * 100, k),
        ]
    );
    assert_eq!(per.iter().map(|t| t.3).sum::<u64>(), s.connections);
    // `count` (by view) counts the service the same way.
    let view = workers[0].service(&key()).unwrap();
    workers[0].count(view, 1, true);
    workers[0].count(view, 1, false);
    let s2 = w.service_totals(index);
    assert_eq!(
        (s2.packets, s2.connections),
        (s.packets + 2, s.connections + 1)
    );
    // Out of range: ignored.
    workers[1].count_forward(u32::MAX, Some(BackendId(7)), 1, true);
    workers[1].count_forward(index + 1, None, 1, true);
    assert_eq!(w.service_totals(index), s2);
    assert_eq!(w.service_totals(u32::MAX), Default::default());
}

#[test]
fn slots_are_stable_and_zeroed_before_reuse() {
    let (name, _c) = region("reuse");
    let mut w = Writer::create(&name, CAP, Backing::Shm, WriterOptions::default()).unwrap();
    // Fill every counter slot, so the next backend can only get a reused one.
    let all: Vec<u32> = (0..BACKEND_COUNTER_SLOTS).collect();
    publish(&mut w, &backends(all.iter().copied()));
    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let mut a = tables.register().unwrap();
    let index = a.service(&key()).unwrap().index();
    a.count_backend(index, BackendId(0), 10, true);
    a.count_backend(index, BackendId(1), 20, true);

    // Replace backend 0 by 1000; backend 1 keeps its slot and its counts.
    let next: Vec<u32> = (1..BACKEND_COUNTER_SLOTS).chain([1000, 1001]).collect();
    publish(&mut w, &backends(next.iter().copied()));
    a.check().unwrap();
    let v = a.service(&key()).unwrap();
    // Backend 0's slot is not reusable before the ack reclaim: 1000 and 1001 have none.
    assert_eq!(v.counter_slot(BackendId(1000)), None);
    assert_eq!(v.counter_slot(BackendId(1001)), None);
    a.count_backend(index, BackendId(1000), 99, true); // ignored: no slot
    let t = totals(&w, index);
    assert_eq!(t.first(), Some(&(1, 1, 20, 1)));
    assert!(!t.iter().any(|x| x.0 == 0 || x.0 == 1000));

    // After every live worker acked, the old slot is zeroed and handed to the next new one.
    let r = w.reclaim(Tick::from_nanos(1));
    assert!(r.safe >= a.generation());
    publish(&mut w, &backends(next.iter().copied()));
    a.check().unwrap();
    let v = a.service(&key()).unwrap();
    assert!(v.counter_slot(BackendId(1000)).is_some());
    assert_eq!(v.counter_slot(BackendId(1001)), None);
    assert_eq!(
        totals(&w, index).iter().find(|x| x.0 == 1000),
        Some(&(1000, 0, 0, 0))
    );
    a.count_backend(index, BackendId(1000), 7, true);
    let t = totals(&w, index);
    assert!(
        t.contains(&(1000, 1, 7, 1)) && t.contains(&(1, 1, 20, 1)),
        "{t:?}"
    );

    // A re-attached writer recovers the slots from the published backends.
    drop(w);
    let w = Writer::attach_with(&name, Backing::Shm, WriterOptions::default()).unwrap();
    let t = totals(&w, index);
    assert!(
        t.contains(&(1000, 1, 7, 1)) && t.contains(&(1, 1, 20, 1)),
        "{t:?}"
    );
}

/// Old regions are refused by this build with a typed error that names both versions:
/// version 2 (16-byte counters without connections) and version 3 (no client-affinity flag,
/// which a version-3 dataplane would ignore); and so is a header whose counter size disagrees
/// with this build's.
#[test]
fn older_abi_region_is_refused() {
    assert_eq!(ABI_VERSION, 4);
    let (name, _c) = region("v2");
    let w = Writer::create(&name, CAP, Backing::Shm, WriterOptions::default()).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/sluice-{name}"))
        .unwrap();
    let at = u64::try_from(offset_of!(Header, abi_version)).unwrap();
    drop(w);
    for old in [2u32, 3] {
        f.write_all_at(&old.to_ne_bytes(), at).unwrap();
        let err = Tables::map_with(&name, Backing::Shm).unwrap_err();
        assert!(
            matches!(err, ShmError::AbiMismatch { found, expected: 4 } if found == old),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("ABI version {old}")) && msg.contains("version 4"),
            "{msg}"
        );
        // A restarted control refuses it the same way instead of writing into it.
        let err = Writer::attach_with(&name, Backing::Shm, WriterOptions::default()).unwrap_err();
        assert!(
            matches!(err, ShmError::AbiMismatch { found, expected: 4 } if found == old),
            "{err:?}"
        );
    }

    // The right version with another counter size: refused as a size mismatch.
    f.write_all_at(&ABI_VERSION.to_ne_bytes(), at).unwrap();
    let at = u64::try_from(offset_of!(Header, counters_size)).unwrap();
    f.write_all_at(&16u32.to_ne_bytes(), at).unwrap();
    let err = Tables::map_with(&name, Backing::Shm).unwrap_err();
    assert!(
        matches!(
            err,
            ShmError::SizeMismatch {
                what: "service counters",
                found: 16,
                expected: 32
            }
        ),
        "{err:?}"
    );
}
