//! Conntrack through the pipeline: established flows keep their backend when the backend set
//! changes (added, removed, draining, down), new flows follow the new Maglev table, a full
//! table degrades to stateless forwarding (never a drop, except NAT), and ICMP errors follow
//! the tracked backend.

#[path = "pipeline_support.rs"]
mod support;

use std::time::Duration;

use sluice_dataplane::conntrack::Tick;
use sluice_dataplane::maglev::TableSize;
use sluice_dataplane::pipeline::{DropReason, Pipeline, StaticServices, Verdict};
use sluice_dataplane::tables::{Backend, BackendId, BackendState, Mode, ServiceId, ServiceKey};
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
