//! `iofwd`: raw RX→TX forwarding through Sluice's safe DPDK wrapper, the same job as
//! `dpdk-testpmd --forward-mode=io`: ports are paired (0↔1, 2↔3, …), everything received on one
//! is sent on its partner, one core, bursts of 32. It measures the ceiling of an I/O path as
//! seen through `sluice_dataplane::io`, to compare against testpmd on the same devices.
//!
//! Output: one human line per second and a final `RESULT` line that scripts parse.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use sluice_dataplane::io::{
    Eal, EalConfig, Mbuf, MbufBurst, Memory, Mempool, MempoolConfig, Port, PortConfig,
};

/// Forward packets between paired DPDK ports and report packets per second.
#[derive(Debug, Parser)]
struct Opt {
    /// Virtual device to create (repeatable), e.g. `net_null0`, `net_af_packet0,iface=va`.
    #[arg(long = "vdev", required = true)]
    vdevs: Vec<String>,
    /// Seconds to measure (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Bursts of 64-byte frames to inject on every port before forwarding (for loops such as a
    /// veth pair, where nothing else generates traffic).
    #[arg(long, default_value_t = 0)]
    tx_first: u32,
    /// Use ordinary 4 KiB pages instead of hugepages.
    #[arg(long)]
    no_huge: bool,
    /// Main (and only) lcore to run on.
    #[arg(long, default_value_t = 0)]
    lcore: u32,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .init();
    let opt = Opt::parse();
    if opt.vdevs.len() % 2 != 0 {
        bail!("give an even number of --vdev (ports are forwarded in pairs)");
    }
    let memory = if opt.no_huge {
        Memory::NoHuge { mb: 512 }
    } else {
        Memory::Hugepages { mb: Some(512) }
    };
    let cfg = EalConfig {
        app_name: "sluice-iofwd".into(),
        main_lcore: opt.lcore,
        memory,
        vdevs: opt.vdevs.clone(),
        ..EalConfig::default()
    };
    let eal = Eal::init(&cfg).context("EAL start")?;
    let pool = Mempool::new(
        &eal,
        &MempoolConfig {
            size: 16383,
            ..MempoolConfig::named("iofwd")
        },
    )
    .context("mempool")?;
    let mut ports = Vec::new();
    for v in &opt.vdevs {
        let name = v.split(',').next().unwrap_or(v);
        let id = eal
            .port_by_name(name)
            .with_context(|| format!("port {name}"))?;
        ports.push(Port::new(&eal, id, &PortConfig::default(), &pool)?);
    }
    let mut queues: Vec<_> = ports.iter_mut().map(Port::take_queues).collect();
    let mut rx = Vec::new();
    let mut tx = Vec::new();
    for (r, t) in &mut queues {
        rx.push(r.remove(0));
        tx.push(t.remove(0));
    }
    // Connection-oriented ports (memif) drop what is sent before their link is up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ports.iter().all(|p| p.link().is_ok_and(|l| l.up)) {
        if Instant::now() > deadline {
            bail!("links not up after 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (i, t) in tx.iter_mut().enumerate() {
        for _ in 0..opt.tx_first {
            let mut b = MbufBurst::new();
            while !b.is_full() {
                let mut frame = [0u8; 60];
                frame[..6].fill(0xff);
                frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, u8::try_from(i).unwrap_or(0)]);
                frame[12..14].copy_from_slice(&[0x88, 0xb5]);
                let _ = b.push(Mbuf::from_bytes(&pool, &frame)?);
            }
            t.tx_burst(&mut b);
        }
    }

    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs(opt.seconds);
    let start = Instant::now();
    let (mut fwd, mut dropped) = (0u64, 0u64);
    let mut base: Option<(Instant, u64)> = None;
    let mut next_report = start + warmup + Duration::from_secs(1);
    let mut burst = MbufBurst::new();
    let mut polls = 0u64;
    loop {
        polls += 1;
        for i in 0..rx.len() {
            if rx[i].rx_burst(&mut burst) == 0 {
                continue;
            }
            fwd += tx[i ^ 1].tx_burst(&mut burst) as u64;
            dropped += burst.clear() as u64;
        }
        // Check the clock once per 1024 polls, not per burst.
        if polls & 0x3ff == 0 {
            let now = Instant::now();
            match base {
                None if now >= start + warmup => base = Some((now, fwd)),
                Some((t0, f0)) => {
                    if now >= next_report {
                        let mpps = (fwd - f0) as f64 / now.duration_since(t0).as_secs_f64() / 1e6;
                        eprintln!("iofwd: {mpps:.2} Mpps so far");
                        next_report += Duration::from_secs(1);
                    }
                    if now >= t0 + measure {
                        let secs = now.duration_since(t0).as_secs_f64();
                        let mpps = (fwd - f0) as f64 / secs / 1e6;
                        println!(
                            "RESULT tool=sluice-iofwd ports={} seconds={secs:.2} packets={} mpps={mpps:.3} dropped={dropped}",
                            rx.len(),
                            fwd - f0
                        );
                        break;
                    }
                }
                None => {}
            }
        }
    }
    Ok(())
}
