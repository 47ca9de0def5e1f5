//! `pktgen`: a DPDK packet generator and sink for the throughput benches (issue #8).
//!
//! It builds TCP/UDP, IPv4/IPv6 frames towards a VIP from a traffic profile
//! ([`sluice_bench::pktgen`]: flows, frame size, SYN/UDP/IPv6 shares), sends bursts of 32 as
//! fast as it can (or at `--rate-kpps`) on one port, and receives whatever comes back on the
//! same port or another one, all on one core. Every frame carries the TSC at which it was
//! built, so the sink counts exactly the packets sent inside the measurement window
//! (warm-up traffic and stragglers are told apart by their stamp) and takes their latency.
//!
//! Timeline: wait for the links, `--warmup` seconds of traffic that is not counted,
//! `--seconds` of measurement, then `--drain-ms` of receiving only (for packets still in
//! flight). Loss = 1 − received / sent, over the packets stamped inside the window. When the TX
//! queue takes only part of a burst (back-pressure: the forwarder is slower), the rest is
//! offered again after a pause of about a microsecond, and the event is counted (`ring_full`);
//! a packet counts as sent when the queue takes it.
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
    /// `net_memif0,role=server,id=0,socket=/run/x.sock`. PCI devices are never taken.
    #[arg(long = "vdev", required = true)]
    vdevs: Vec<String>,
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
    /// Seconds of traffic before measuring (fills conntrack, warms caches).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Milliseconds to keep receiving after the last measured packet was sent.
    #[arg(long, default_value_t = 200)]
    drain_ms: u64,
    /// Seconds to wait for the links to come up (a memif peer may still be starting).
    #[arg(long, default_value_t = 30)]
    link_wait: u64,
    /// Distinct flows (5-tuples), sent round-robin.
    #[arg(long, default_value_t = 1000)]
    flows: u32,
    /// IPv4 VIP.
    #[arg(long, default_value = "10.90.0.100")]
    vip: Ipv4Addr,
    /// IPv6 VIP (needed with `--ipv6-share`).
    #[arg(long)]
    vip6: Option<Ipv6Addr>,
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

struct Sink<'a> {
    rx: &'a mut RxQueue,
    burst: MbufBurst,
    window: Window,
    hz: u64,
    hist: Histogram,
    sent_dst: [u8; 6],
}

impl Sink<'_> {
    /// Receives up to `max_bursts` bursts; returns packets received.
    #[inline]
    fn poll(&mut self, c: &mut Counts, max_bursts: usize) -> usize {
        let mut got = 0;
        for _ in 0..max_bursts {
            let n = self.rx.rx_burst(&mut self.burst);
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
    let mut ports = Vec::new();
    for n in &names {
        let id = eal.port_by_name(n).with_context(|| format!("port {n}"))?;
        ports.push(
            Port::new(&eal, id, &PortConfig::default(), &pool)
                .with_context(|| format!("port {n}"))?,
        );
    }
    let src_mac = match &opt.src_mac {
        Some(s) => parse_mac(s)?,
        None => ports[0].mac().context("TX port MAC")?,
    };
    let profile = Profile {
        frame_len: opt.size - 4,
        flows: opt.flows,
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

    let (mut rxs, mut txs): (Vec<RxQueue>, Vec<TxQueue>) = (Vec::new(), Vec::new());
    for p in &mut ports {
        let (r, t) = p.take_queues();
        rxs.extend(r.into_iter().take(1));
        txs.extend(t.into_iter().take(1));
    }
    let mut tx = txs.swap_remove(0);
    let mut rx = rxs.pop().context("no RX queue")?;
    drop(txs);
    drop(rxs);

    let deadline = Instant::now() + Duration::from_secs(opt.link_wait);
    while !ports.iter().all(|p| p.link().is_ok_and(|l| l.up)) {
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            bail!("links not up after {} s", opt.link_wait);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "pktgen: links up; {} flows, {} B frames, SYN {} ‰, UDP {} ‰, IPv6 {} ‰, to {}:{} via {}",
        profile.flows,
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
    let warm_end = t0 + opt.warmup * hz;
    let meas_end = warm_end + opt.seconds * hz;
    let window = Window {
        start: warm_end,
        len: meas_end - warm_end,
    };
    let mut sink = Sink {
        rx: &mut rx,
        burst: MbufBurst::new(),
        window,
        hz,
        hist: Histogram::new(),
        sent_dst: profile.dst_mac,
    };
    let mut c = Counts::default();
    let mut rng = Rng::new(opt.seed);
    let mut flow = 0u32;
    let mut next_tx_x1024 = u128::from(t0) * 1024;
    let mut next_report = warm_end + hz;
    let mut last_report = (warm_end, 0u64, 0u64);
    let mut tb = MbufBurst::new();
    let (mut burst_stamp, mut burst_bytes, mut burst_built) = (0u64, 0u64, 0u64);
    let (syn, udp, v6) = (
        profile.syn_permille,
        profile.udp_permille,
        profile.ipv6_permille,
    );

    loop {
        sink.poll(&mut c, 4);
        let now = tsc();
        if now >= meas_end || stop.load(Ordering::Relaxed) {
            break;
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
                templates.write(buf, flow, kind, now);
                burst_bytes += len as u64;
                flow += 1;
                if flow == profile.flows {
                    flow = 0;
                }
                // Cannot fail: the loop stops when the burst is full.
                let _ = tb.push(m);
            }
            burst_stamp = now;
            burst_built = tb.len() as u64;
        }
        let sent = tx.tx_burst(&mut tb) as u64;
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
         rx_mpps={rx_mpps:.3} rx_gbps={:.3} loss_pct={loss:.3} p50_us={p50:.1} p99_us={p99:.1} ring_full={} rx_rewritten={} rx_other={}",
        opt.seconds,
        profile.flows,
        opt.size,
        c.tx,
        c.rx,
        l1(c.rx, c.rx_bytes),
        c.ring_full,
        c.rx_rewritten,
        c.rx_other
    );
    // Teardown order: mbufs and queues, then ports, then the pool, then the EAL.
    drop(tb);
    drop(sink);
    drop(rx);
    drop(tx);
    drop(ports);
    drop(pool);
    drop(eal);
    Ok(())
}
