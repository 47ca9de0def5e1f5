//! The per-packet pipeline (`sluice_dataplane::pipeline`): ns per packet, one core.
//!
//! Setup shared by every case: 64 IPv4 TCP services (`198.51.100.0..64:80`) × 32 backends
//! each, Maglev M = 4093 (≈ 128 entries per backend, so ≥ 100 × backends), built with the
//! same builder control uses and served by `StaticServices` (the same hashbrown index of
//! packed keys as the shared-memory reader has). 100 000 flows from random IPv4 clients and ports, spread over
//! the services; their frames are 64 bytes on the wire (60-byte frames: Ethernet + IPv4 +
//! TCP + 6 bytes of payload, + 4 FCS), stored back to back in a pre-shuffled order. Times are
//! nanosecond ticks. Nothing in a measured loop allocates.
//!
//! Cases (each per packet; every case refills the packet buffer from the pristine frame
//! first, a 60-byte copy that `copy_only` measures alone):
//! - `pipeline/copy_only`: the refill alone, the floor under every other case.
//! - `pipeline/{dsr,nat,gue}/hit/n100k`: steady state, all 100 000 flows established (ACK
//!   segments; NAT pairs set up), each packet a conntrack hit, flows in random order: the
//!   conntrack lookup is a cache and TLB miss, as in `conntrack/hit/n100k`. GUE prepends
//!   36 bytes into the 128-byte headroom.
//! - `pipeline/{dsr,nat,gue}/hit/n1k`: the same with 1 000 flows, whose state stays in
//!   cache: the pipeline's own cost.
//! - `pipeline/{dsr,nat,gue}/burst32/{n100k,n1k}`: the hit cases through
//!   `Pipeline::process_burst`, 32 packets a burst (the worker's burst size; the time is
//!   per packet and includes the burst's conntrack aging step), so the burst's conntrack
//!   lookups overlap.
//! - `pipeline/{dsr,nat}/miss/n100k`: every packet a new flow (a SYN from a client not in
//!   the table), on top of the 100 000 established ones: flow hash, Maglev lookup, conntrack
//!   insert (for NAT a pair, after an SNAT-port probe), rewrite. Timed in batches of 1024 out
//!   of 65 536 pre-built new flows; between batches (untimed) the clock moves 2 ms and 1/32
//!   of the table is aged, so each batch (SYN timeout 1 ms) is gone before its frames come
//!   round again, while the established flows (900 s) stay.
//!
//! The conntrack table holds four times the flows (at least 4096): NAT takes two entries a
//! flow, and the miss cases add new flows on top.
//!
//! Run: `cargo bench -p sluice-bench --bench pipeline`.
//!
//! Counting mode, for tools that count rather than time (this machine's VM exposes no
//! hardware counters; `valgrind --tool=cachegrind` counts instructions and simulates the
//! caches): `SLUICE_PIPELINE_COUNT=MODE/CASE/SIZE:N` runs `N` iterations of one hit case
//! (`dsr|nat|gue`, `hit|burst32`, `n1k|n100k|n1m|n10m`) after the usual setup and exits.
//! Two runs with different `N` give the per-packet cost as the difference over the extra packets.
//! Three more `CASE`s time one stage alone, for the per-stage breakdown: `parse`
//! (`parse_frame`), `service` (`Services::service_of` on parsed frames) and `conntrack`
//! (`ConnTrack::lookup_tcp` of each flow's key, one at a time, in a table of the same
//! capacity holding the flows). `...:N:R` times `R` rounds of `N` iterations and prints the
//! minimum, 10th percentile and median ns per packet: on a shared machine, rounds shorter than a scheduler slice (a few
//! hundred µs) often run undisturbed, so the low percentiles are steadier than criterion's
//! mean over long samples. Two knobs for the large sizes: `SLUICE_PIPELINE_CT_PERCENT`
//! sizes the conntrack in percent of the flows (default 400; 10 M flows at 125 % run on a
//! hugetlb pool of 1500 pages, their frames' 0.6 GB taken from it first), and
//! `SLUICE_PIPELINE_NS_PER_BURST` moves the clock that many
//! nanoseconds per burst (default 0), so that aging and timestamp updates run as in a worker.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use sluice_dataplane::conntrack::{ConnTrack, Entry, Tick, TickRate, Timeouts};
use sluice_dataplane::flow::FlowKey;
use sluice_dataplane::io::mem::Chunk;
use sluice_dataplane::maglev::TableSize;
use sluice_dataplane::pipeline::{
    PacketBuf, Pipeline, PipelineConfig, Services, StaticServices, VecBuf, Verdict,
};
use sluice_dataplane::tables::{
    Backend, BackendId, BackendState, Mode, Proto, ServiceId, ServiceKey,
};
use sluice_dataplane::wire::{EthernetAddress, ParsedFrame, TcpFlags, checksum, parse_frame};

const SERVICES: u32 = 64;
const BACKENDS: u32 = 32;
const FLOWS: usize = 100_000;
const NEW_FLOWS: usize = 65_536;
const BATCH: usize = 1024;
const BURST: usize = 32;
const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const ROUTER_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const SEED: u64 = 0x5eed_0f5e_ed00_0001;
const T0: Tick = Tick(1_000_000_000);

/// Seeded xorshift64: benches take their randomness as a value (STYLE rule 18).
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn vip(s: u32) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, u8::try_from(s).unwrap())
}

fn services(mode: Mode) -> StaticServices {
    let mut set = StaticServices::new();
    let m = TableSize::try_new(4093).unwrap();
    for s in 0..SERVICES {
        let backends: Vec<Backend> = (0..BACKENDS)
            .map(|b| {
                let id = s * BACKENDS + b;
                let [_, _, hi, lo] = id.to_be_bytes();
                Backend {
                    id: BackendId(id),
                    addr: IpAddr::V4(Ipv4Addr::new(10, 1, hi, lo)),
                    port: 8080,
                    mac: Some([0x02, 0xbe, 0, 0, hi, lo]),
                    next_hop: None,
                    weight: 1,
                    state: BackendState::Active,
                }
            })
            .collect();
        let key = ServiceKey::new(IpAddr::V4(vip(s)), 80, Proto::Tcp);
        set.upsert(key, ServiceId(s), mode, m, &backends).unwrap();
    }
    set
}

/// A 60-byte IPv4 TCP frame (64 on the wire) client → `vip:80`, checksums valid.
fn tcp_frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, syn: bool) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&NODE_MAC);
    f.extend_from_slice(&ROUTER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    // IPv4: 20 + 20 + 6 = 46 bytes.
    f.extend_from_slice(&[0x45, 0, 0, 46, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let c = checksum::compute(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    // TCP.
    let flags = if syn { 0x02 } else { 0x18 };
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    f.extend_from_slice(b"abcdef");
    let ph = checksum::pseudo_header_v4(src, dst, sluice_dataplane::wire::IpProtocol::TCP, 26);
    let c = !checksum::combine(&[ph, checksum::data(&f[34..60])]);
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

/// Frames of one length stored back to back, so that walking them in order streams
/// through memory (the flows' own order is what is shuffled), on 2 MiB pages when that
/// large, as DPDK's mbufs are: on 4 KiB pages the refill crossed a page every 68 frames
/// and cost the 100k cases 2 ns a packet that a worker does not pay.
struct Frames {
    data: Chunk<u8>,
    n: usize,
}

impl Frames {
    fn get(&self, i: usize) -> &[u8] {
        &self.data[i * FRAME_LEN..(i + 1) * FRAME_LEN]
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.data.chunks_exact(FRAME_LEN)
    }
}

const FRAME_LEN: usize = 60;

/// `n` distinct flows (random client address and port, service `i % 64`), shuffled.
fn flows(n: usize, rng: &mut u64, syn: bool, salt: u32) -> Frames {
    let mut v: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let i32 = u32::try_from(i).unwrap();
            let src = Ipv4Addr::from_bits(i32.wrapping_mul(0x9e37_79b9) ^ salt);
            let sport = 1024 + u16::try_from(xorshift(rng) % 60_000).unwrap();
            tcp_frame(src, sport, vip(i32 % SERVICES), syn)
        })
        .collect();
    for i in (1..v.len()).rev() {
        let j = usize::try_from(xorshift(rng) % u64::try_from(i + 1).unwrap()).unwrap();
        v.swap(i, j);
    }
    let mut data = Chunk::new(n * FRAME_LEN, 0u8).expect("frame memory");
    for (to, f) in data.chunks_exact_mut(FRAME_LEN).zip(&v) {
        to.copy_from_slice(f);
    }
    Frames { data, n }
}

fn pipeline(capacity: usize) -> Pipeline {
    let mut c = PipelineConfig::one_armed(EthernetAddress(NODE_MAC), SEED);
    c.node_ipv4 = Some(NODE_V4);
    c.conntrack_capacity = capacity;
    c.timeouts = Timeouts {
        tcp_syn: Duration::from_millis(1),
        ..Timeouts::default()
    };
    Pipeline::new(c).unwrap()
}

/// A pipeline with every flow of `established` set up (an ACK each: established at once).
fn warmed(s: &StaticServices, established: &Frames) -> Pipeline {
    // Room for every flow twice over (a NAT flow takes two entries), plus the new flows of
    // the miss cases.
    warmed_with(s, established, (4 * established.n).max(4096))
}

/// [`warmed`] with a conntrack of `capacity` entries.
fn warmed_with(s: &StaticServices, established: &Frames, capacity: usize) -> Pipeline {
    let mut p = pipeline(capacity);
    let mut buf = VecBuf::new(established.get(0));
    for f in established.iter() {
        buf.reset(f);
        let v = p.process(&mut buf, s, T0);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    }
    assert_eq!(p.counters().conntrack_full_fallback, 0);
    p
}

fn bench_pipeline(c: &mut Criterion) {
    let mut rng = 0x7069_7065_6c69_6e65_u64;
    let established = flows(FLOWS, &mut rng, false, 0x0a00_0000);
    let few = flows(1000, &mut rng, false, 0x0b00_0000);
    let new = flows(NEW_FLOWS, &mut rng, true, 0x6400_0000);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));

    let mut buf = VecBuf::new(established.get(0));
    let mut i = 0usize;
    group.bench_function("copy_only", |b| {
        b.iter(|| {
            buf.reset(established.get(i));
            i = (i + 1) % FLOWS;
            black_box(buf.data().len())
        });
    });

    for (name, mode) in [
        ("dsr", Mode::Dsr),
        ("nat", Mode::Nat),
        ("gue", Mode::EncapGue),
    ] {
        let s = services(mode);
        for (size, set) in [("n100k", &established), ("n1k", &few)] {
            let mut p = warmed(&s, set);
            // The measured packets are conntrack hits.
            let hits_before = p.conntrack().stats().hits;
            buf.reset(set.get(0));
            let _ = p.process(&mut buf, &s, T0);
            assert_eq!(p.conntrack().stats().hits, hits_before + 1);
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(name, format!("hit/{size}")), |b| {
                b.iter(|| {
                    buf.reset(set.get(i));
                    i = (i + 1) % set.n;
                    black_box(p.process(&mut buf, &s, T0))
                });
            });
            assert_eq!(p.counters().dropped(), 0, "{name}: {:?}", p.counters());

            let mut bufs: Vec<VecBuf> = (0..BURST).map(|_| VecBuf::new(set.get(0))).collect();
            let mut verdicts = [Verdict::Exception; BURST];
            let mut i = 0usize;
            group.throughput(Throughput::Elements(BURST as u64));
            group.bench_function(BenchmarkId::new(name, format!("burst32/{size}")), |b| {
                b.iter(|| {
                    for buf in &mut bufs {
                        buf.reset(set.get(i));
                        i = (i + 1) % set.n;
                    }
                    black_box(p.process_burst(0, &mut bufs, &mut verdicts, &s, T0))
                });
            });
            group.throughput(Throughput::Elements(1));
            // Still `Exception` when a filter skipped the case.
            assert!(
                verdicts
                    .iter()
                    .all(|v| matches!(v, Verdict::Forward { .. } | Verdict::Exception))
            );
            assert_eq!(p.counters().dropped(), 0, "{name}: {:?}", p.counters());
        }

        if mode == Mode::EncapGue {
            continue;
        }
        let mut p = warmed(&s, &established);
        // Two full aging passes per cycle through the new flows, spread over its batches.
        let budget = p.conntrack().buckets() * 2 / (NEW_FLOWS / BATCH);
        let mut now = T0;
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new(name, "miss/n100k"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = usize::try_from(left.min(BATCH as u64)).unwrap();
                    let start = Instant::now();
                    for _ in 0..n {
                        buf.reset(new.get(next));
                        next = (next + 1) % NEW_FLOWS;
                        let _ = black_box(p.process(&mut buf, &s, now));
                    }
                    total += start.elapsed();
                    left -= n as u64;
                    // Untimed: the batch expires (SYN timeout 1 ms) and aging removes it
                    // before its frames come round again.
                    now = Tick(now.0 + 2_000_000);
                    p.age(now, budget);
                }
                total
            });
        });
        assert_eq!(p.counters().conntrack_full_fallback, 0);
        assert_eq!(p.counters().dropped(), 0, "{name}: {:?}", p.counters());
        assert!(p.conntrack().len() >= FLOWS);
    }
    group.finish();
}

/// `SLUICE_PIPELINE_COUNT=MODE/CASE/SIZE:N[:R]` (module docs): `N` iterations of one hit
/// case, or `R` timed rounds of `N` iterations each.
fn count_mode(spec: &str) {
    let mut parts = spec.split(':');
    let case = parts.next().unwrap_or_default();
    let n: usize = parts.next().expect("MODE/CASE/SIZE:N").parse().expect("N");
    let rounds: usize = parts.next().map_or(1, |r| r.parse().expect("R"));
    let fields: Vec<&str> = case.split('/').collect();
    let [mode, kind, size] = fields[..] else {
        panic!("MODE/CASE/SIZE, got {case}");
    };
    let mode = match mode {
        "dsr" => Mode::Dsr,
        "nat" => Mode::Nat,
        "gue" => Mode::EncapGue,
        m => panic!("mode {m}"),
    };
    let n_flows = match size {
        "n1k" => 1000,
        "n100k" => FLOWS,
        "n1m" => 1_000_000,
        "n10m" => 10_000_000,
        z => panic!("size {z}"),
    };
    // Conntrack capacity in percent of the flows (default 400, as in the criterion cases);
    // 10 M flows at 400 % would want 7 GB of hugepages.
    let percent: usize = std::env::var("SLUICE_PIPELINE_CT_PERCENT")
        .map_or(400, |v| v.parse().expect("SLUICE_PIPELINE_CT_PERCENT"));
    let mut rng = 0x7069_7065_6c69_6e65_u64;
    let set = &flows(n_flows, &mut rng, false, 0x0a00_0000);
    let s = services(mode);
    let capacity = (n_flows * percent / 100).max(4096);
    let mut p = warmed_with(&s, set, capacity);
    let mut i = 0usize;
    let mut buf = VecBuf::new(set.get(0));
    let mut bufs: Vec<VecBuf> = (0..BURST).map(|_| VecBuf::new(set.get(0))).collect();
    let mut verdicts = [Verdict::Exception; BURST];
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Burst,
        Hit,
        Parse,
        Service,
        Conntrack,
    }
    let kind = match kind {
        "burst32" => Kind::Burst,
        "hit" => Kind::Hit,
        "parse" => Kind::Parse,
        "service" => Kind::Service,
        "conntrack" => Kind::Conntrack,
        k => panic!("case {k}"),
    };
    // The per-stage cases' inputs (built only for them: 10 M parsed frames are 1.3 GB).
    let stage = matches!(kind, Kind::Service | Kind::Conntrack);
    let parsed: Vec<ParsedFrame> = if stage {
        set.iter().map(|f| parse_frame(f).unwrap()).collect()
    } else {
        Vec::new()
    };
    let keys: Vec<FlowKey> = parsed
        .iter()
        .map(|pf| FlowKey::new(pf.src, pf.dst, pf.src_port, pf.dst_port, pf.proto))
        .collect();
    let mut ct = ConnTrack::new(
        if kind == Kind::Conntrack {
            capacity
        } else {
            4096
        },
        &Timeouts::default(),
        TickRate::NANOS,
    )
    .unwrap();
    if kind == Kind::Conntrack {
        for k in &keys {
            ct.insert(*k, Entry::new(1, 1), TcpFlags(TcpFlags::ACK), T0)
                .unwrap();
        }
    }
    let per = if kind == Kind::Burst { BURST } else { 1 };
    // Nanoseconds the clock moves per burst (default 0: every packet at T0), to run the
    // aging pass and the timestamp updates a worker's real clock brings.
    let step: u64 = std::env::var("SLUICE_PIPELINE_NS_PER_BURST")
        .map_or(0, |v| v.parse().expect("SLUICE_PIPELINE_NS_PER_BURST"));
    let mut now = T0;
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..n {
            match kind {
                Kind::Burst => {
                    for buf in &mut bufs {
                        buf.reset(set.get(i));
                        i = (i + 1) % set.n;
                    }
                    now = Tick(now.0 + step);
                    black_box(p.process_burst(0, &mut bufs, &mut verdicts, &s, now));
                }
                Kind::Hit => {
                    buf.reset(set.get(i));
                    i = (i + 1) % set.n;
                    let _ = black_box(p.process(&mut buf, &s, T0));
                }
                Kind::Parse => {
                    let _ = black_box(parse_frame(black_box(set.get(i))));
                    i = (i + 1) % set.n;
                }
                Kind::Service => {
                    let pf = &parsed[i];
                    black_box(s.service_of(pf.dst, pf.dst_port, pf.proto.0).is_some());
                    i = (i + 1) % set.n;
                }
                Kind::Conntrack => {
                    let flags = TcpFlags(TcpFlags::ACK);
                    black_box(ct.lookup_tcp(&keys[i], flags, T0).is_some());
                    i = (i + 1) % set.n;
                }
            }
        }
        let packets = u32::try_from(n * per).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e9 / f64::from(packets));
    }
    assert_eq!(p.counters().dropped(), 0);
    times.sort_by(f64::total_cmp);
    let q = |pct: usize| times[(times.len() - 1) * pct / 100];
    println!(
        "{case}: {rounds} x {n} iterations, {:?}; ns/packet min {:.1} p10 {:.1} median {:.1}",
        p.conntrack().page_backing(),
        q(0),
        q(10),
        q(50)
    );
}

criterion_group!(benches, bench_pipeline);

fn main() {
    if let Ok(spec) = std::env::var("SLUICE_PIPELINE_COUNT") {
        count_mode(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
