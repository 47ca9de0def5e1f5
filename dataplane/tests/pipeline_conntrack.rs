//! Conntrack through the pipeline: established flows keep their backend when the backend set
//! changes (added, removed, draining, down), new flows follow the new Maglev table, a full
//! table degrades to stateless forwarding (never a drop, except NAT), ICMP errors follow
//! the tracked backend, and connections (new flows) are counted once per flow in the shared
//! tables, per service and per backend.

#[path = "pipeline_support.rs"]
mod support;

use std::time::Duration;

use sluice_dataplane::conntrack::Tick;
use sluice_dataplane::maglev::{self, MaglevBackend, TableSize};
use sluice_dataplane::pipeline::{DropReason, Pipeline, StaticServices, Verdict};
use sluice_dataplane::tables::{
    Affinity, Backend, BackendId, BackendState, Backing, Capacity, Mode, ServiceId, ServiceKey,
    ServiceSpec, ServiceUpdate, Tables, Worker, Writer, WriterOptions,
};
use support::*;

const FLOWS: u16 = 2000;

fn key() -> ServiceKey {
    ServiceKey::new(vip(false), 80, proto(true))
}

fn services(mode: Mode, backends: &[Backend]) -> StaticServices {
    let mut s = StaticServices::new();
    s.upsert(
        key(),
        ServiceId(7),
        mode,
        TableSize::try_new(4093).unwrap(),
        backends,
    )
    .unwrap();
    s
}

fn flow_frame(i: u16, flags: u8) -> Vec<u8> {
    let mut ip = Ip::new(client(false), vip(false), 64);
    ip.src = std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        192,
        0,
        2,
        u8::try_from(i % 200).unwrap(),
    ));
    frame(
        &TO_NODE,
        &ip,
        &L4::Tcp {
            sport: 10_000 + i,
            dport: 80,
            seq: 1,
            flags,
        },
        b"x",
    )
}

fn backend_of(v: Verdict) -> u32 {
    match v {
        Verdict::Forward {
            backend: Some(b), ..
        } => b.0,
        other => panic!("not forwarded: {other:?}"),
    }
}

/// Flow `i`'s backend through `p` (an ACK: established).
fn send(p: &mut Pipeline, s: &StaticServices, i: u16, now: Tick) -> u32 {
    backend_of(run_at(p, s, &flow_frame(i, 0), now).0)
}

/// What a node without state would pick for flow `i` from `s`.
fn stateless(s: &StaticServices, i: u16) -> u32 {
    let mut fresh = pipeline();
    send(&mut fresh, s, i, NOW)
}

fn set(n: u32) -> Vec<Backend> {
    (1..=n).map(|i| backend(i, false, 8080)).collect()
}

fn check_stickiness(mode: Mode) {
    let mut backends = set(10);
    let s0 = services(mode, &backends);
    let mut c = config();
    c.conntrack_capacity = 16_384; // NAT takes two entries per flow
    let mut p = Pipeline::new(c).unwrap();
    // Establish: SYN, then ACK.
    let before: Vec<u32> = (0..FLOWS)
        .map(|i| {
            let a = backend_of(run(&mut p, &s0, &flow_frame(i, 1)).0);
            assert_eq!(send(&mut p, &s0, i, NOW), a);
            a
        })
        .collect();

    // 1. A backend is added: every established flow stays; new flows follow the new table.
    backends.push(backend(11, false, 8080));
    let s1 = services(mode, &backends);
    let mut would_move = 0;
    for i in 0..FLOWS {
        assert_eq!(
            send(&mut p, &s1, i, NOW),
            before[usize::from(i)],
            "{mode:?} flow {i} moved"
        );
        if stateless(&s1, i) != before[usize::from(i)] {
            would_move += 1;
        }
    }
    assert!(
        would_move > FLOWS / 20,
        "the new table moves flows ({would_move}): the test means something"
    );
    for i in FLOWS..FLOWS + 200 {
        assert_eq!(send(&mut p, &s1, i, NOW), stateless(&s1, i), "new flow {i}");
    }
    assert!((FLOWS..FLOWS + 200).any(|i| send(&mut p, &s1, i, NOW) == 11));

    // 2. Backend 3 drains: its flows stay, it gets no new flows.
    backends[2].state = BackendState::Draining;
    let s2 = services(mode, &backends);
    for i in 0..FLOWS {
        assert_eq!(send(&mut p, &s2, i, NOW), before[usize::from(i)]);
    }
    for i in FLOWS + 200..FLOWS + 600 {
        assert_ne!(
            send(&mut p, &s2, i, NOW),
            3,
            "a draining backend got a new flow"
        );
    }

    // 3. Backend 4 is removed and backend 5 marked down (still in the table): their flows
    //    move to what the current table says; every other flow stays.
    backends.retain(|b| b.id != BackendId(4));
    let s3a = services(mode, &backends);
    let s3 = {
        // Backend 5 down but its entries still in the table: the window before control
        // republishes. Build the table as before, then mark it down.
        let mut s = s3a.clone();
        let mut b = backends.clone();
        b.iter_mut().find(|b| b.id == BackendId(5)).unwrap().state = BackendState::Down;
        let names: Vec<String> = b.iter().map(|b| b.id.0.to_string()).collect();
        let inputs: Vec<_> = b
            .iter()
            .zip(&names)
            .map(|(b, n)| {
                let w = if b.state == BackendState::Draining {
                    0
                } else {
                    b.weight
                };
                sluice_dataplane::maglev::MaglevBackend::new(n, w)
            })
            .collect();
        let table =
            sluice_dataplane::maglev::build(TableSize::try_new(4093).unwrap(), &inputs).unwrap();
        s.upsert_with_table(key(), ServiceId(7), mode, &b, &table)
            .unwrap();
        s
    };
    let moves_before = p.counters().backend_moves;
    let mut moved = 0;
    for i in 0..FLOWS {
        let was = before[usize::from(i)];
        let now = send(&mut p, &s3, i, NOW);
        if was == 4 || was == 5 {
            moved += 1;
            assert!(
                now != 4 && now != 5,
                "flow {i} stayed on a removed/down backend"
            );
            assert_eq!(now, stateless(&s3, i), "a moved flow follows the table");
            // ... and then sticks to its new backend.
            assert_eq!(send(&mut p, &s3, i, NOW), now);
        } else {
            assert_eq!(now, was, "flow {i} moved without reason");
        }
    }
    assert!(moved > 0);
    assert_eq!(p.counters().backend_moves - moves_before, moved);
    // New flows never land on the down backend, even though the table still names it.
    for i in FLOWS + 600..FLOWS + 1000 {
        let b = send(&mut p, &s3, i, NOW);
        assert!(b != 4 && b != 5);
    }
}

#[test]
fn dsr_flows_stick_to_their_backend() {
    check_stickiness(Mode::Dsr);
}

#[test]
fn encap_flows_stick_to_their_backend() {
    check_stickiness(Mode::EncapGue);
}

#[test]
fn nat_flows_stick_to_their_backend() {
    check_stickiness(Mode::Nat);
}

#[test]
fn nat_replies_keep_working_across_table_changes() {
    let mut backends = set(4);
    let s0 = services(Mode::Nat, &backends);
    let mut p = pipeline();
    let (v, fwd) = run(&mut p, &s0, &flow_frame(1, 1));
    let b = backend_of(v);
    backends.retain(|x| x.id.0 != b % 4 + 1); // remove another backend
    let s1 = services(Mode::Nat, &backends);
    // The backend answers the forwarded SYN.
    let pf = sluice_dataplane::wire::parse_frame(&fwd).unwrap();
    let mut reply = fwd.clone();
    reply.swap(0, 6);
    for i in 0..6 {
        reply.swap(i, 6 + i);
    }
    for i in 0..4 {
        reply.swap(pf.l3_offset + 12 + i, pf.l3_offset + 16 + i);
    }
    reply.swap(pf.l4_offset, pf.l4_offset + 2);
    reply.swap(pf.l4_offset + 1, pf.l4_offset + 3);
    let (v, out) = run(&mut p, &s1, &reply);
    assert!(
        matches!(
            v,
            Verdict::Forward {
                backend: None,
                service: 0,
                ..
            }
        ),
        "{v:?}"
    );
    let o = sluice_dataplane::wire::parse_frame(&out).unwrap();
    assert_eq!((o.src, o.src_port), (vip(false), 80));
    assert_eq!(o.dst_port, 10_001);
    assert_checksums(&out);
}

#[test]
fn expired_flows_follow_the_new_table() {
    let backends = set(10);
    let s0 = services(Mode::Dsr, &backends);
    let mut p = pipeline();
    let before: Vec<u32> = (0..FLOWS).map(|i| send(&mut p, &s0, i, NOW)).collect();
    let s1 = services(Mode::Dsr, &set(11));
    let later = Tick(NOW.0 + u64::try_from(Duration::from_secs(901).as_nanos()).unwrap());
    let mut moved = 0;
    for i in 0..FLOWS {
        let b = send(&mut p, &s1, i, later);
        assert_eq!(b, stateless(&s1, i));
        if b != before[usize::from(i)] {
            moved += 1;
        }
    }
    assert!(moved > 0);
}

#[test]
fn full_table_forwards_statelessly() {
    let backends = set(10);
    let s = services(Mode::Dsr, &backends);
    let mut c = config();
    c.conntrack_capacity = 16;
    let mut p = Pipeline::new(c).unwrap();
    for i in 0..500 {
        assert_eq!(
            send(&mut p, &s, i, NOW),
            stateless(&s, i),
            "never dropped, Maglev's choice"
        );
    }
    assert_eq!(p.counters().conntrack_full_fallback, 500 - 16);
    assert_eq!(p.counters().dropped(), 0);
    assert_eq!(p.conntrack().len(), 16);

    // NAT cannot go stateless: a pair needs two entries.
    let s = services(Mode::Nat, &backends);
    let mut c = config();
    c.conntrack_capacity = 16;
    let mut p = Pipeline::new(c).unwrap();
    let verdicts: Vec<Verdict> = (0..20)
        .map(|i| run(&mut p, &s, &flow_frame(i, 1)).0)
        .collect();
    assert!(
        verdicts[..8]
            .iter()
            .all(|v| matches!(v, Verdict::Forward { .. }))
    );
    assert!(
        verdicts[8..]
            .iter()
            .all(|v| *v == Verdict::Drop(DropReason::NatConntrackFull))
    );
}

#[test]
fn icmp_errors_follow_the_tracked_backend() {
    let mut backends = set(10);
    let s0 = services(Mode::Dsr, &backends);
    let mut p = pipeline();
    let before: Vec<u32> = (0..FLOWS).map(|i| send(&mut p, &s0, i, NOW)).collect();
    backends.push(backend(11, false, 0));
    let s1 = services(Mode::Dsr, &backends);
    // A flow the new table would move.
    let i = (0..FLOWS)
        .find(|&i| stateless(&s1, i) != before[usize::from(i)])
        .unwrap();
    let client_frame = flow_frame(i, 0);
    let pf = sluice_dataplane::wire::parse_frame(&client_frame).unwrap();
    // The packet the VIP sent to that client, as a router quotes it.
    let quoted = ip_packet(
        &Ip::new(vip(false), pf.src, 60),
        &tcp(80, pf.src_port),
        &[0; 16],
    );
    let icmp = frame(
        &TO_NODE,
        &Ip::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1)),
            vip(false),
            64,
        ),
        &L4::Icmp {
            ty: 3,
            code: 4,
            rest: [0, 0, 5, 0x78],
        },
        &quoted[..28],
    );
    assert_eq!(
        backend_of(run(&mut p, &s1, &icmp).0),
        before[usize::from(i)]
    );
}

// === connections in the shared tables ===

/// A table region that removes itself.
struct Region(String);

impl Drop for Region {
    fn drop(&mut self) {
        let _ = Writer::remove(&self.0);
    }
}

/// Publishes `key()` in `mode` over `backends` into `w`.
fn publish(w: &mut Writer, mode: Mode, backends: &[Backend]) {
    let names: Vec<String> = backends.iter().map(|b| b.id.0.to_string()).collect();
    let inputs: Vec<MaglevBackend<'_>> = names.iter().map(|n| MaglevBackend::new(n, 1)).collect();
    let table = maglev::build(TableSize::try_new(4093).unwrap(), &inputs).unwrap();
    w.publish(&[ServiceUpdate::Upsert(ServiceSpec {
        key: key(),
        id: ServiceId(7),
        mode,
        affinity: Affinity::None,
        backends,
        table: &table,
    })])
    .unwrap();
}

/// Runs `frame` through `p` with the shared tables as services, and counts the verdict into
/// them as the worker loop does. Returns the verdict and the frame after.
fn run_counted(p: &mut Pipeline, t: &Worker, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let (v, out) = run(p, t, frame);
    if let Verdict::Forward {
        service,
        backend,
        bytes,
        new_flow,
    } = v
    {
        t.count_forward(service, backend, u64::from(bytes), new_flow);
    }
    (v, out)
}

/// The backend's answer to a forwarded frame: MACs, addresses and ports swapped.
fn answer(fwd: &[u8]) -> Vec<u8> {
    let pf = sluice_dataplane::wire::parse_frame(fwd).unwrap();
    let mut r = fwd.to_vec();
    for i in 0..6 {
        r.swap(i, 6 + i);
    }
    for i in 0..4 {
        r.swap(pf.l3_offset + 12 + i, pf.l3_offset + 16 + i);
    }
    r.swap(pf.l4_offset, pf.l4_offset + 2);
    r.swap(pf.l4_offset + 1, pf.l4_offset + 3);
    r
}

/// `(packets, connections)` of the service, and the connections of each backend, from
/// control's side.
fn connections(w: &Writer) -> (u64, u64, Vec<(u32, u64)>) {
    let (index, _) = w.service(&key()).unwrap();
    let s = w.service_totals(index);
    let per = w
        .backend_totals(index)
        .into_iter()
        .map(|(id, t)| (id.0, t.connections))
        .collect();
    (s.packets, s.connections, per)
}

/// `N` distinct flows of several packets each (and, for NAT, the backends' replies) give
/// `N` connections on the service and `N` summed over its backends; more packets of the same
/// flows add none. A flow moved off a removed backend is new to its new backend and counts
/// again, once.
fn check_connections(mode: Mode, tag: &str) {
    const N: u16 = 300;
    let region = Region(format!("ctconn-{tag}-{}", std::process::id()));
    let _ = Writer::remove(&region.0);
    let cap = Capacity {
        max_services: 4,
        max_workers: 2,
        dir_slots: 4,
        arena_bytes: 1 << 20,
    };
    let mut w = Writer::create(&region.0, cap, Backing::Shm, WriterOptions::default()).unwrap();
    let mut backends = set(10);
    publish(&mut w, mode, &backends);
    let tables = Tables::map_with(&region.0, Backing::Shm).unwrap();
    let mut t = tables.register().unwrap();
    let mut p = pipeline();

    let mut first = Vec::new();
    for i in 0..N {
        // SYN, then two ACKs (the ACKs are conntrack hits).
        let (v, fwd) = run_counted(&mut p, &t, &flow_frame(i, 0x02));
        assert!(
            matches!(v, Verdict::Forward { new_flow: true, .. }),
            "{v:?}"
        );
        first.push(backend_of(v));
        for _ in 0..2 {
            let (v, _) = run_counted(&mut p, &t, &flow_frame(i, 0x10));
            assert!(
                matches!(
                    v,
                    Verdict::Forward {
                        new_flow: false,
                        ..
                    }
                ),
                "{v:?}"
            );
        }
        if mode == Mode::Nat {
            // The backend's reply, un-NATed: a packet of the service, not a connection.
            let (v, _) = run_counted(&mut p, &t, &answer(&fwd));
            assert!(
                matches!(
                    v,
                    Verdict::Forward {
                        backend: None,
                        new_flow: false,
                        ..
                    }
                ),
                "{v:?}"
            );
        }
    }
    let n = u64::from(N);
    let per_flow = if mode == Mode::Nat { 4 } else { 3 };
    let (packets, conns, per) = connections(&w);
    assert_eq!((packets, conns), (n * per_flow, n), "{mode:?}");
    assert_eq!(per.iter().map(|b| b.1).sum::<u64>(), n, "{per:?}");
    assert!(
        per.iter().all(|b| b.1 > 0),
        "every backend got flows: {per:?}"
    );
    for (id, c) in &per {
        let want = first.iter().filter(|&&b| b == *id).count();
        assert_eq!(*c, u64::try_from(want).unwrap(), "backend {id}");
    }
    assert_eq!(p.counters().new_flows, n);

    // The same flows again: no new connections.
    for i in 0..N {
        let _ = run_counted(&mut p, &t, &flow_frame(i, 0x10));
    }
    let (packets, again, per_again) = connections(&w);
    assert_eq!((packets, again), (n * (per_flow + 1), n));
    assert_eq!(per_again, per);

    // Backend 4 goes away: its flows move, and each counts once on its new backend.
    backends.retain(|b| b.id != BackendId(4));
    publish(&mut w, mode, &backends);
    t.check().unwrap();
    let moved = u64::try_from(first.iter().filter(|&&b| b == 4).count()).unwrap();
    assert!(moved > 0);
    let moves = p.counters().backend_moves;
    for _ in 0..2 {
        for i in 0..N {
            let _ = run_counted(&mut p, &t, &flow_frame(i, 0x10));
        }
    }
    assert_eq!(p.counters().backend_moves - moves, moved);
    let (_, after, per_after) = connections(&w);
    assert_eq!(after, n + moved);
    // Backend 4 is no longer listed (its count left with its counter slot); the others gained
    // exactly the moved flows.
    assert!(per_after.iter().all(|b| b.0 != 4));
    assert_eq!(per_after.iter().map(|b| b.1).sum::<u64>(), n);
}

#[test]
fn dsr_connections_count_once_per_flow() {
    check_connections(Mode::Dsr, "dsr");
}

#[test]
fn nat_connections_count_once_per_flow() {
    check_connections(Mode::Nat, "nat");
}

/// With conntrack full, a flow without an entry is forwarded by a stateless Maglev pick per
/// packet, and each pick is a connection; the tracked flows still count once.
#[test]
fn stateless_picks_count_as_connections() {
    let region = Region(format!("ctconn-full-{}", std::process::id()));
    let _ = Writer::remove(&region.0);
    let cap = Capacity {
        max_services: 4,
        max_workers: 2,
        dir_slots: 4,
        arena_bytes: 1 << 20,
    };
    let mut w = Writer::create(&region.0, cap, Backing::Shm, WriterOptions::default()).unwrap();
    publish(&mut w, Mode::Dsr, &set(10));
    let tables = Tables::map_with(&region.0, Backing::Shm).unwrap();
    let t = tables.register().unwrap();
    let mut c = config();
    c.conntrack_capacity = 16;
    let mut p = Pipeline::new(c).unwrap();
    for i in 0..20 {
        for flags in [0x02, 0x10] {
            let _ = run_counted(&mut p, &t, &flow_frame(i, flags));
        }
    }
    // 16 tracked flows count once each; the 4 untracked ones count every packet.
    assert_eq!(p.counters().conntrack_full_fallback, 8);
    let (packets, conns, per) = connections(&w);
    assert_eq!((packets, conns), (40, 16 + 8));
    assert_eq!(per.iter().map(|b| b.1).sum::<u64>(), 24);
    assert_eq!(p.counters().new_flows, 24);
}
