//! The shared table region's binary format as another process sees it: headers of another ABI
//! version, magic or size are refused with typed errors, and a directory with garbage in it
//! (offsets, sizes, family and mode bytes, counts — anything another process could write) is
//! skipped or refused, never trusted: no panic, no access outside the region.
//!
//! The corruption is written through the region file (`/dev/shm/sluice-NAME`), the way a
//! broken or foreign process would.

use std::fs::OpenOptions;
use std::mem::{offset_of, size_of};
use std::os::unix::fs::FileExt as _;

use proptest::prelude::*;
use sluice_dataplane::maglev::{self, MaglevBackend, MaglevTable, TableSize};
use sluice_dataplane::tables::layout::{
    ABI_VERSION, DirHeader, Geometry, Header, MAGIC, ServiceEntry, WorkerBlock, unpack_published,
};
use sluice_dataplane::tables::{
    Affinity, Backend, BackendId, BackendState, Backing, Capacity, Mode, ServiceId, ServiceKey,
    ServiceSpec, ServiceUpdate, ShmError, Tables, Writer, WriterOptions,
};

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Writer::remove(&self.0);
    }
}

fn region(tag: &str) -> (String, Cleanup) {
    let name = format!("fmt-{}-{tag}", std::process::id());
    let _ = Writer::remove(&name);
    (name.clone(), Cleanup(name))
}

const CAP: Capacity = Capacity {
    max_services: 8,
    max_workers: 2,
    dir_slots: 3,
    arena_bytes: 64 * 1024,
};

fn poke(name: &str, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/sluice-{name}"))
        .unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn peek(name: &str, offset: u64, len: usize) -> Vec<u8> {
    let f = OpenOptions::new()
        .read(true)
        .open(format!("/dev/shm/sluice-{name}"))
        .unwrap();
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

fn off<T>(field: usize) -> u64 {
    let _ = size_of::<T>();
    u64::try_from(field).unwrap()
}

struct Svc {
    key: ServiceKey,
    backends: Vec<Backend>,
    table: MaglevTable,
}

fn svc(last: u8, n: u8) -> Svc {
    let backends: Vec<Backend> = (0..n)
        .map(|i| Backend {
            id: BackendId(u32::from(i)),
            addr: std::net::IpAddr::from([192, 0, 2, i]),
            port: 80,
            mac: None,
            next_hop: None,
            weight: 1,
            state: BackendState::Active,
        })
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
    let input: Vec<_> = names.iter().map(|s| MaglevBackend::new(s, 1)).collect();
    let table = maglev::build(TableSize::try_new(251).unwrap(), &input).unwrap();
    Svc {
        key: ServiceKey::from_v4([10, 0, 0, last], 80, 6),
        backends,
        table,
    }
}

fn upsert(s: &Svc) -> ServiceUpdate<'_> {
    ServiceUpdate::Upsert(ServiceSpec {
        key: s.key,
        id: ServiceId(1),
        mode: Mode::Dsr,
        affinity: Affinity::None,
        backends: &s.backends,
        table: &s.table,
    })
}

/// A dataplane that meets a region of another ABI version refuses it, saying which versions.
#[test]
fn abi_mismatch_is_refused() {
    let (name, _c) = region("abi");
    let w = Writer::create(&name, CAP, Backing::Shm, WriterOptions::default()).unwrap();
    poke(
        &name,
        off::<Header>(offset_of!(Header, abi_version)),
        &(ABI_VERSION + 1).to_ne_bytes(),
    );
    let err = Tables::map_with(&name, Backing::Shm).unwrap_err();
    assert!(
        matches!(err, ShmError::AbiMismatch { found, expected } if found == ABI_VERSION + 1 && expected == ABI_VERSION),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("ABI version {}", ABI_VERSION + 1)) && msg.contains("refusing"),
        "{msg}"
    );
    drop(w);
    assert!(matches!(
        Writer::attach_with(&name, Backing::Shm, WriterOptions::default()),
        Err(ShmError::AbiMismatch { .. })
    ));
}

/// Foreign magic, an unfinished header, and sizes or offsets that disagree with this build
/// or with the file are all refused with their own error.
#[test]
fn magic_and_sizes_are_checked() {
    let (name, _c) = region("magic");
    let w = Writer::create(&name, CAP, Backing::Shm, WriterOptions::default()).unwrap();
    assert_eq!(MAGIC.to_be_bytes(), *b"SLUICEtb");
    assert_eq!(peek(&name, 0, 8), MAGIC.to_ne_bytes());

    poke(&name, 0, &0x1234_u64.to_ne_bytes());
    assert!(matches!(
        Tables::map_with(&name, Backing::Shm),
        Err(ShmError::BadMagic(0x1234))
    ));
    poke(&name, 0, &0_u64.to_ne_bytes());
    assert!(matches!(
        Tables::map_with(&name, Backing::Shm),
        Err(ShmError::NotInitialized { .. })
    ));
    poke(&name, 0, &MAGIC.to_ne_bytes());
    Tables::map_with(&name, Backing::Shm).unwrap();

    let at = off::<Header>(offset_of!(Header, worker_block_size));
    poke(&name, at, &256_u32.to_ne_bytes());
    let err = Tables::map_with(&name, Backing::Shm).unwrap_err();
    assert!(
        matches!(
            err,
            ShmError::SizeMismatch {
                what: "worker block",
                found: 256,
                expected: 384
            }
        ),
        "{err:?}"
    );
    poke(
        &name,
        at,
        &u32::try_from(size_of::<WorkerBlock>())
            .unwrap()
            .to_ne_bytes(),
    );

    // A capacity whose layout needs more bytes than the file has.
    let at = off::<Header>(offset_of!(Header, arena_len));
    poke(&name, at, &(1_u64 << 30).to_ne_bytes());
    let err = Tables::map_with(&name, Backing::Shm).unwrap_err();
    assert!(
        matches!(
            err,
            ShmError::SizeMismatch {
                what: "layout length",
                ..
            }
        ),
        "{err:?}"
    );
    poke(&name, at, &CAP.arena_bytes.to_ne_bytes());

    let at = off::<Header>(offset_of!(Header, dir_slots));
    poke(&name, at, &0_u32.to_ne_bytes());
    assert!(matches!(
        Tables::map_with(&name, Backing::Shm),
        Err(ShmError::Capacity(_))
    ));
    poke(&name, at, &CAP.dir_slots.to_ne_bytes());
    Tables::map_with(&name, Backing::Shm).unwrap();
    drop(w);
}

/// Entries with offsets outside the arena, bad sizes, unknown family or mode bytes, or a
/// duplicate key are skipped and counted; the valid ones are served.
#[test]
fn corrupt_entries_are_skipped_not_trusted() {
    let (name, _c) = region("entries");
    let mut w = Writer::create(&name, CAP, Backing::Shm, WriterOptions::default()).unwrap();
    let svcs: Vec<Svc> = (1..=6).map(|i| svc(i, 3)).collect();
    let ups: Vec<_> = svcs.iter().map(upsert).collect();
    let p = w.publish(&ups).unwrap();
    let geo = Geometry::new(CAP).unwrap();
    let slot = geo.dir_slot_offset(p.dir_slot) + size_of::<DirHeader>() as u64;
    let entry = |i: u64| slot + i * size_of::<ServiceEntry>() as u64;
    let field = |i: u64, f: usize| entry(i) + u64::try_from(f).unwrap();
    // 0: backends far outside the arena.
    poke(
        &name,
        field(0, offset_of!(ServiceEntry, backends_offset)),
        &(1_u64 << 40).to_ne_bytes(),
    );
    // 1: a table that runs past the arena's end.
    poke(
        &name,
        field(1, offset_of!(ServiceEntry, table_offset)),
        &(geo.arena_len - 64).to_ne_bytes(),
    );
    // 2: M = 0.
    poke(
        &name,
        field(2, offset_of!(ServiceEntry, table_size)),
        &0_u32.to_ne_bytes(),
    );
    // 3: unknown mode.
    poke(&name, field(3, offset_of!(ServiceEntry, mode)), &[9]);
    // 4: a copy of entry 5's key.
    let five = peek(&name, entry(5), 20);
    poke(&name, entry(4), &five);

    let tables = Tables::map_with(&name, Backing::Shm).unwrap();
    let worker = tables.register().unwrap();
    let served: Vec<ServiceKey> = worker.services().iter().map(|v| *v.key()).collect();
    // Entry 4 now carries entry 5's key: it is served (its own block is valid), and entry 5
    // is the duplicate.
    assert_eq!(served, [svcs[5].key]);
    assert_eq!(
        worker
            .block()
            .table_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    let view = worker.service(&svcs[5].key).unwrap();
    assert_eq!(view.index(), 4);
    assert_eq!(view.table(), svcs[4].table.as_slice());

    // A published word naming a slot that holds another generation is refused, and the
    // worker keeps its tables and its ack.
    let published = u64::from_ne_bytes(
        peek(&name, off::<Header>(offset_of!(Header, published)), 8)
            .try_into()
            .unwrap(),
    );
    let (g, s) = unpack_published(published);
    let other = (s + 1) % CAP.dir_slots;
    poke(
        &name,
        off::<Header>(offset_of!(Header, published)),
        &(((g.get() + 7) << 8) | u64::from(other)).to_ne_bytes(),
    );
    let mut worker = worker;
    assert!(matches!(worker.check(), Err(ShmError::Corrupt { .. })));
    assert_eq!(worker.generation(), g);
    assert_eq!(worker.services().len(), 1);
    // Reported once, not on every burst.
    assert!(matches!(worker.check(), Ok(None)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any bytes in the published directory slot (header and entries) give a worker either
    /// an error or a set of services whose every lookup stays inside their own validated
    /// ranges: no panic, no out-of-bounds access.
    #[test]
    fn random_directory_bytes_never_panic(
        garbage in proptest::collection::vec(any::<u8>(), 0..(64 + 8 * 64)),
        at in 0usize..(64 + 8 * 64),
        hashes in proptest::collection::vec(any::<u64>(), 16),
    ) {
        let (name, _c) = region(&format!("fuzz-{at}-{}", garbage.len()));
        let mut w = Writer::create(&name, CAP, Backing::Shm, WriterOptions::default()).unwrap();
        let svcs: Vec<Svc> = (1..=3).map(|i| svc(i, 4)).collect();
        let ups: Vec<_> = svcs.iter().map(upsert).collect();
        let p = w.publish(&ups).unwrap();
        let geo = Geometry::new(CAP).unwrap();
        let slot_len = usize::try_from(geo.dir_stride).unwrap();
        let at = at.min(slot_len);
        let n = garbage.len().min(slot_len - at);
        poke(&name, geo.dir_slot_offset(p.dir_slot) + at as u64, &garbage[..n]);

        let tables = Tables::map_with(&name, Backing::Shm).unwrap();
        match tables.register() {
            Err(ShmError::Corrupt { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
            Ok(worker) => {
                for view in worker.services() {
                    prop_assert_eq!(view.table().len(), usize::try_from(view.entry().table_size).unwrap());
                    for &h in &hashes {
                        if let Some(b) = view.lookup(h) {
                            prop_assert!(view.backends().iter().any(|x| std::ptr::eq(x, b)));
                        }
                    }
                }
            }
        }
    }
}
