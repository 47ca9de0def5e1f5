//! `pktgen`: a DPDK packet generator and sink for the throughput benches (issue #8).
//!
//! It builds TCP/UDP, IPv4/IPv6 frames towards a VIP from a traffic profile
//! ([`sluice_bench::pktgen`]: flows, frame size, SYN/UDP/IPv6 shares), sends bursts of 32 as
//! fast as it can (or at `--rate-kpps`) on one port, and receives whatever comes back on the
//! same port or another one, all on one core. Every frame carries the TSC at which it was
//! built, so the sink counts exactly the packets sent inside the measurement window
//! (warm-up traffic and stragglers are told apart by their stamp) and takes their latency.
//!
//! Timeline: wait for the links, a warm-up of traffic that is not counted, `--seconds` of
//! measurement, then `--drain-ms` of receiving only (for packets still in flight). The warm-up
//! lasts `--warmup` seconds and, beyond that, until as many packets came back as there are
//! flows — with flows sent round-robin, every flow has then been through the forwarder once
//! and sits in its connection table, however many there are — but no longer than
//! `--warmup-max` seconds. "pktgen: measuring" on stderr marks the start of the window.
//! Loss = 1 − received / sent, over the packets stamped inside the window. When the TX
//! queue takes only part of a burst (back-pressure: the forwarder is slower), the rest is
//! offered again after a pause of about a microsecond, and the event is counted (`ring_full`);
//! a packet counts as sent when the queue takes it.
//!
//! With `--queues N` the port gets N queue pairs (one per forwarding worker on the other
//! end; memif has no RSS): flow `i` always leaves by TX queue `i % N`, bursts go to the queues
//! in turn, and every RX queue is polled.
//!
//! Output: one progress line per second on stderr and a final `RESULT key=value …` line on
//! stdout that scripts parse. Latency under full load is queueing latency (rings full); use
//! `--rate-kpps` for latency at a given offered load.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use sluice_bench::pktgen::{
    Histogram, Kind, MAX_FRAME_LEN, Profile, Rng, STAMP_MASK, Templates, read_stamp, stamp_age,
};
use sluice_dataplane::io::{
    BURST, Eal, EalConfig, Mbuf, MbufBurst, Memory, Mempool, MempoolConfig, Port, PortConfig,
    RxQueue, TxQueue, tsc, tsc_hz,
};

/// The default destination MAC: what `bench/throughput.sh` gives the forwarder's port.
const DEFAULT_DST_MAC: &str = "02:53:4c:00:00:01";

/// Generate traffic towards a VIP on one DPDK port, receive what comes back, report Mpps,
/// loss and latency.
#[derive(Debug, Parser)]
struct Opt {
    /// Virtual device to create (repeatable), e.g.
    /// `net_memif0,role=server,id=0,socket=/run/x.sock`, `net_af_xdp0,iface=veth0` or
    /// `net_af_packet0,iface=veth0` (run inside the interface's network namespace). PCI
    /// devices are never taken.
    #[arg(long = "vdev", required = true)]
    vdevs: Vec<String>,
    /// Queue pairs on the port (one per worker of the forwarder under test).
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Port to transmit on (device name). Default: the first `--vdev`.
    #[arg(long)]
    tx_port: Option<String>,
    /// Port to receive on. Default: the TX port (one-armed forwarders send back on it).
    #[arg(long)]
    rx_port: Option<String>,
    /// The EAL main lcore; generation and reception run on it.
    #[arg(long, default_value_t = 0)]
    lcore: u32,
    /// Seconds to measure.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of traffic before measuring (fills conntrack, warms caches); the warm-up goes
    /// on until as many packets came back as there are flows.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Longest warm-up in seconds, whatever came back.
    #[arg(long, default_value_t = 60)]
    warmup_max: u64,
    /// Milliseconds to keep receiving after the last measured packet was sent.
    #[arg(long, default_value_t = 200)]
    drain_ms: u64,
    /// Seconds to wait for the links to come up (a memif peer may still be starting).
    #[arg(long, default_value_t = 30)]
    link_wait: u64,
    /// Distinct flows (5-tuples), sent round-robin.
    #[arg(long, default_value_t = 1000)]
    flows: u32,
    /// IPv4 VIP (the first, with `--vips`).
    #[arg(long, default_value = "10.90.0.100")]
    vip: Ipv4Addr,
    /// IPv6 VIP (needed with `--ipv6-share`).
    #[arg(long)]
    vip6: Option<Ipv6Addr>,
    /// VIPs: flow `i` goes to `--vip` (and `--vip6`) plus `i % vips` (consecutive addresses).
    #[arg(long, default_value_t = 1)]
    vips: u32,
    /// Service (destination) port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Destination MAC (the forwarder's port).
    #[arg(long, default_value = DEFAULT_DST_MAC)]
    dst_mac: String,
    /// Source MAC. Default: the TX port's own.
    #[arg(long)]
    src_mac: Option<String>,
    /// Frame size on the wire, FCS included (64 = minimum Ethernet frame). IPv6 frames are
    /// raised to 84 when smaller (headers + timestamp).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Percentage of TCP packets with SYN (the rest carry ACK).
    #[arg(long, default_value_t = 0.0)]
    syn_share: f64,
    /// Percentage of UDP packets (the rest are TCP).
    #[arg(long, default_value_t = 0.0)]
    udp_share: f64,
    /// Percentage of IPv6 packets.
    #[arg(long, default_value_t = 0.0)]
    ipv6_share: f64,
    /// Offered load in thousands of packets per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate_kpps: u64,
    /// Seed of the traffic-mix generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Mbufs in the pool.
    #[arg(long, default_value_t = 32767)]
    mbufs: u32,
    /// Use ordinary 4 KiB pages instead of hugepages.
    #[arg(long)]
    no_huge: bool,
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)");
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).with_context(|| format!("{s:?}: bad octet {p:?}"))?;
    }
    Ok(mac)
}

fn permille(what: &str, pct: f64) -> Result<u16> {
    if !(0.0..=100.0).contains(&pct) {
        bail!("--{what}-share must be 0–100 (percent), not {pct}");
    }
    // In range 0..=1000 after the check above.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((pct * 10.0).round() as u16)
}

fn device_name(devargs: &str) -> &str {
    devargs.split(',').next().unwrap_or(devargs)
}

fn ticks_to_ns(ticks: u64, hz: u64) -> u64 {
    u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(hz.max(1))).unwrap_or(u64::MAX)
}

/// Counters of one run.
#[derive(Debug, Default)]
struct Counts {
    /// Accepted by the TX queue, stamped inside the window.
    tx: u64,
    tx_bytes: u64,
    /// Received, stamped inside the window.
    rx: u64,
    rx_bytes: u64,
    /// Of `rx`: frames whose destination MAC is no longer the one sent (a forwarder rewrote
    /// it, e.g. towards a backend).
    rx_rewritten: u64,
    /// Received, stamped outside the window (warm-up).
    rx_outside: u64,
    /// Received without a readable stamp.
    rx_other: u64,
    /// Times the TX queue took only part of a burst (the ring was full: back-pressure), whole
    /// run. The rest is offered again after a short pause.
    ring_full: u64,
    /// Mbuf allocation failures, whole run.
    no_mbuf: u64,
}

/// The measurement window in 48-bit stamp space.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    len: u64,
}

impl Window {
    #[inline]
    fn contains(self, stamp: u64) -> bool {
        stamp_age(self.start & STAMP_MASK, stamp) < self.len
    }
}

struct Sink {
    rx: Vec<RxQueue>,
    burst: MbufBurst,
    window: Window,
    hz: u64,
    hist: Histogram,
    sent_dst: [u8; 6],
}

impl Sink {
    /// Receives up to `max_bursts` bursts from each queue; returns packets received.
    #[inline]
    fn poll(&mut self, c: &mut Counts, max_bursts: usize) -> usize {
        let mut got = 0;
        for q in 0..self.rx.len() {
            got += self.poll_queue(q, c, max_bursts);
        }
        got
    }

    #[inline]
    fn poll_queue(&mut self, q: usize, c: &mut Counts, max_bursts: usize) -> usize {
        let mut got = 0;
        for _ in 0..max_bursts {
            let n = self.rx[q].rx_burst(&mut self.burst);
            if n == 0 {
                break;
            }
            got += n;
            let now = tsc();
            for m in self.burst.as_slice() {
                match read_stamp(m.data()) {
                    Some(s) if self.window.contains(s) => {
                        c.rx += 1;
                        c.rx_bytes += u64::from(m.pkt_len());
                        c.rx_rewritten += u64::from(m.data().get(..6) != Some(&self.sent_dst[..]));
                        self.hist.record(ticks_to_ns(stamp_age(s, now), self.hz));
                    }
                    Some(_) => c.rx_outside += 1,
                    None => c.rx_other += 1,
                }
            }
            self.burst.clear();
        }
        got
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .init();
    let opt = Opt::parse();
    if !(64..=MAX_FRAME_LEN + 4).contains(&opt.size) {
        bail!("--size must be 64..={} bytes", MAX_FRAME_LEN + 4);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }
    let memory = if opt.no_huge {
        Memory::NoHuge { mb: 512 }
    } else {
        Memory::Hugepages { mb: Some(512) }
    };
    let eal = Eal::init(&EalConfig {
        app_name: "sluice-pktgen".into(),
        main_lcore: opt.lcore,
        memory,
        vdevs: opt.vdevs.clone(),
        log_level: Some("*:warning".into()),
        ..EalConfig::default()
    })
    .context("EAL start")?;
    // `Eal::init` gives the thread back its affinity (so that sluice-dataplane's threads
    // are not all bound to the main lcore); pktgen does its work on this thread, so it binds
    // it to `--lcore` itself. Unbound, it wandered onto the forwarder's core in some runs
    // and halved both (bench/RESULTS.md, "Throughput").
    let core = usize::try_from(opt.lcore).context("--lcore")?;
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        bail!("could not bind pktgen to CPU {core} (--lcore)");
    }
    let pool = Mempool::new(
        &eal,
        &MempoolConfig {
            size: opt.mbufs,
            ..MempoolConfig::named("pktgen")
        },
    )
    .context("mempool")?;

    let tx_name = opt
        .tx_port
        .clone()
        .unwrap_or_else(|| device_name(&opt.vdevs[0]).to_owned());
    let rx_name = opt.rx_port.clone().unwrap_or_else(|| tx_name.clone());
    let mut names = vec![tx_name.clone()];
    if rx_name != tx_name {
        names.push(rx_name.clone());
    }
    if opt.queues == 0 {
        bail!("--queues must be at least 1");
    }
    if opt.flows < u32::from(opt.queues) {
        bail!("--flows must be at least --queues (every queue sends its own flows)");
    }
    let port_config = PortConfig {
        rx_queues: opt.queues,
        tx_queues: opt.queues,
        ..PortConfig::default()
    };
    let mut ports = Vec::new();
    for n in &names {
        let id = eal.port_by_name(n).with_context(|| format!("port {n}"))?;
        ports.push(Port::new(&eal, id, &port_config, &pool).with_context(|| format!("port {n}"))?);
    }
    let src_mac = match &opt.src_mac {
        Some(s) => parse_mac(s)?,
        None => ports[0].mac().context("TX port MAC")?,
    };
    let profile = Profile {
        frame_len: opt.size - 4,
        flows: opt.flows,
        vips: opt.vips,
        vip4: opt.vip,
        vip6: opt.vip6,
        port: opt.port,
        dst_mac: parse_mac(&opt.dst_mac)?,
        src_mac,
        syn_permille: permille("syn", opt.syn_share)?,
        udp_permille: permille("udp", opt.udp_share)?,
        ipv6_permille: permille("ipv6", opt.ipv6_share)?,
    };
    let templates = Templates::new(&profile).context("traffic profile")?;

    // TX queues of the first port, RX queues of the last (the same port when one-armed).
    let mut txs: Vec<TxQueue> = Vec::new();
    let mut rxs: Vec<RxQueue> = Vec::new();
    let last = ports.len() - 1;
    for (i, p) in ports.iter_mut().enumerate() {
        let (r, t) = p.take_queues();
        if i == 0 {
            txs = t;
        }
        if i == last {
            rxs = r;
        }
    }
    if txs.is_empty() || rxs.is_empty() {
        bail!("no queues");
    }

    let deadline = Instant::now() + Duration::from_secs(opt.link_wait);
    while !ports.iter().all(|p| p.link().is_ok_and(|l| l.up)) {
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            bail!("links not up after {} s", opt.link_wait);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "pktgen: links up; {} flows over {} VIP(s) and {} queue(s), {} B frames, SYN {} ‰, UDP {} ‰, IPv6 {} ‰, to {}:{} via {}",
        profile.flows,
        profile.vips,
        txs.len(),
        opt.size,
        profile.syn_permille,
        profile.udp_permille,
        profile.ipv6_permille,
        profile.vip4,
        profile.port,
        opt.dst_mac
    );

    let hz = tsc_hz();
    if hz == 0 {
        bail!("TSC frequency unknown");
    }
    // Pacing in 1/1024 ticks per packet.
    let pace = (opt.rate_kpps > 0).then(|| hz * 1024 / (opt.rate_kpps * 1000));
    let t0 = tsc();
    let warm_min = t0 + opt.warmup * hz;
    let warm_max = t0 + opt.warmup_max.max(opt.warmup) * hz;
    // Until the warm-up ends, the window is empty and nothing is counted.
    let mut warm_end = u64::MAX;
    let mut meas_end = u64::MAX;
    let mut sink = Sink {
        rx: rxs,
        burst: MbufBurst::new(),
        window: Window { start: t0, len: 0 },
        hz,
        hist: Histogram::new(),
        sent_dst: profile.dst_mac,
    };
    let mut c = Counts::default();
    let mut rng = Rng::new(opt.seed);
    let nq = txs.len();
    let nq32 = u32::try_from(nq).unwrap_or(u32::MAX);
    // Queue q sends flows q, q + nq, q + 2·nq, …
    let mut next_flow: Vec<u32> = (0..nq32).collect();
    let mut q = 0usize;
    let mut next_tx_x1024 = u128::from(t0) * 1024;
    let mut next_report = u64::MAX;
    let mut last_report = (t0, 0u64, 0u64);
    let mut tb = MbufBurst::new();
    let (mut burst_stamp, mut burst_bytes, mut burst_built) = (0u64, 0u64, 0u64);
    let (syn, udp, v6) = (
        profile.syn_permille,
        profile.udp_permille,
        profile.ipv6_permille,
    );
    let mut warmup_s = 0.0;

    loop {
        sink.poll(&mut c, 4);
        let now = tsc();
        if now >= meas_end || stop.load(Ordering::Relaxed) {
            break;
        }
        if warm_end == u64::MAX
            && now >= warm_min
            && (c.rx_outside >= u64::from(profile.flows) || now >= warm_max)
        {
            warm_end = now;
            meas_end = now + opt.seconds * hz;
            sink.window = Window {
                start: now,
                len: opt.seconds * hz,
            };
            next_report = now + hz;
            last_report = (now, 0, 0);
            warmup_s = (now - t0) as f64 / hz as f64;
            eprintln!(
                "pktgen: measuring for {} s (warm-up {warmup_s:.1} s, {} packets back{})",
                opt.seconds,
                c.rx_outside,
                if c.rx_outside < u64::from(profile.flows) {
                    "; fewer than the flows: --warmup-max reached"
                } else {
                    ""
                }
            );
        }
        // A burst is built and stamped once, then offered until the ring has taken all of it.
        if tb.is_empty() {
            if let Some(p) = pace {
                if u128::from(now) * 1024 < next_tx_x1024 {
                    continue;
                }
                // Never bank more than one burst of credit (after a stall).
                next_tx_x1024 = next_tx_x1024
                    .max(u128::from(now) * 1024 - u128::from(p) * BURST as u128)
                    + u128::from(p) * BURST as u128;
            }
            q = (q + 1) % nq;
            burst_bytes = 0;
            while !tb.is_full() {
                let Ok(mut m) = Mbuf::alloc(&pool) else {
                    c.no_mbuf += 1;
                    break;
                };
                let kind = Kind {
                    ipv6: rng.chance(v6),
                    udp: rng.chance(udp),
                    syn: rng.chance(syn),
                };
                let len = templates.len(kind);
                let Ok(buf) = m.append(u16::try_from(len).unwrap_or(u16::MAX)) else {
                    bail!("frame of {len} B does not fit an mbuf");
                };
                let flow = &mut next_flow[q];
                templates.write(buf, *flow, kind, now);
                burst_bytes += len as u64;
                *flow = flow.saturating_add(nq32);
                if *flow >= profile.flows {
                    *flow = u32::try_from(q).unwrap_or(0);
                }
                // Cannot fail: the loop stops when the burst is full.
                let _ = tb.push(m);
            }
            burst_stamp = now;
            burst_built = tb.len() as u64;
        }
        let sent = txs[q].tx_burst(&mut tb) as u64;
        if burst_stamp >= warm_end {
            c.tx += sent;
            // Frames of one burst differ in length only with an IPv6 mix; prorate.
            c.tx_bytes += burst_bytes * sent / burst_built.max(1);
        }
        if !tb.is_empty() {
            c.ring_full += 1;
            // Back off for about a microsecond instead of hammering the ring's cache lines,
            // which the forwarder is writing.
            for _ in 0..256 {
                std::hint::spin_loop();
            }
        }
        if now >= next_report {
            let (t_prev, tx_prev, rx_prev) = last_report;
            let secs = (now - t_prev) as f64 / hz as f64;
            eprintln!(
                "pktgen: TX {:.2} Mpps, RX {:.2} Mpps",
                (c.tx - tx_prev) as f64 / secs / 1e6,
                (c.rx - rx_prev) as f64 / secs / 1e6
            );
            last_report = (now, c.tx, c.rx);
            next_report += hz;
        }
    }
    let drain_end = tsc() + opt.drain_ms * hz / 1000;
    while tsc() < drain_end {
        sink.poll(&mut c, 1);
    }

    let secs = opt.seconds as f64;
    let tx_mpps = c.tx as f64 / secs / 1e6;
    let rx_mpps = c.rx as f64 / secs / 1e6;
    // Ethernet L1: frame + FCS + preamble + inter-frame gap.
    let l1 = |pkts: u64, bytes: u64| (bytes + pkts * 24) as f64 * 8.0 / secs / 1e9;
    let loss = if c.tx > 0 {
        100.0 * (1.0 - c.rx as f64 / c.tx as f64)
    } else {
        0.0
    };
    let us = |q| {
        sink.hist
            .quantile(q)
            .map_or(f64::NAN, |ns| ns as f64 / 1000.0)
    };
    let (p50, p99) = (us(0.5), us(0.99));
    eprintln!(
        "pktgen: TX {tx_mpps:.3} Mpps ({:.2} Gbit/s), RX {rx_mpps:.3} Mpps ({:.2} Gbit/s), loss {loss:.2} %, \
         latency p50 {p50:.1} µs p99 {p99:.1} µs; RX with rewritten dst MAC {}, TX ring full {} times, no mbuf {}, RX warm-up {}, RX unstamped {}",
        l1(c.tx, c.tx_bytes),
        l1(c.rx, c.rx_bytes),
        c.rx_rewritten,
        c.ring_full,
        c.no_mbuf,
        c.rx_outside,
        c.rx_other
    );
    println!(
        "RESULT tool=pktgen seconds={} flows={} size={} tx_packets={} rx_packets={} tx_mpps={tx_mpps:.3} \
         rx_mpps={rx_mpps:.3} rx_gbps={:.3} loss_pct={loss:.3} p50_us={p50:.1} p99_us={p99:.1} ring_full={} rx_rewritten={} rx_other={} \
         queues={} vips={} warmup_s={warmup_s:.1} rx_warmup={} tsc_hz={hz}",
        opt.seconds,
        profile.flows,
        opt.size,
        c.tx,
        c.rx,
        l1(c.rx, c.rx_bytes),
        c.ring_full,
        c.rx_rewritten,
        c.rx_other,
        nq,
        profile.vips,
        c.rx_outside
    );
    // Teardown order: mbufs and queues, then ports, then the pool, then the EAL.
    drop(tb);
    drop(sink);
    drop(txs);
    drop(ports);
    drop(pool);
    drop(eal);
    Ok(())
}
