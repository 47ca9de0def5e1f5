//! `sluice-dataplane`: the DPDK forwarder. Reads its config (EAL, ports, workers, node
//! addresses), maps the shared table region that `sluice-control` publishes into, and runs one
//! pinned worker per configured core until SIGTERM or SIGINT.
//!
//! Exit codes: 0 clean stop, 1 runtime failure, 64 bad config or usage.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use crossbeam_queue::ArrayQueue;
use sluice_dataplane::config::DataplaneConfig;
use sluice_dataplane::conntrack::{TickRate, Timeouts};
use sluice_dataplane::io::{
    Eal, EalConfig, Memory, Mempool, MempoolConfig, Port, PortConfig, tsc_hz,
};
use sluice_dataplane::pipeline::{Pipeline, PipelineConfig};
use sluice_dataplane::tables::Tables;
use sluice_dataplane::wire::EthernetAddress;
use sluice_dataplane::worker::{self, INBOX_CAPACITY, WorkerSetup};

/// The Sluice dataplane: DPDK workers forwarding VIP traffic by the tables control publishes.
#[derive(Debug, Parser)]
#[command(version)]
struct Opt {
    /// Config file (TOML).
    #[arg(short, long, default_value = "/etc/sluice/dataplane.toml")]
    config: PathBuf,
    /// Validate the config and exit.
    #[arg(short = 't', long)]
    check: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let opt = Opt::parse();
    let cfg = match DataplaneConfig::load(&opt.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice-dataplane: invalid config: {e}");
            return ExitCode::from(64);
        }
    };
    if opt.check {
        println!("sluice-dataplane: {} is valid", opt.config.display());
        return ExitCode::SUCCESS;
    }
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-dataplane: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn device_name(devargs: &str) -> &str {
    devargs.split(',').next().unwrap_or(devargs)
}

fn wait_for_tables(cfg: &DataplaneConfig, stop: &AtomicBool) -> Result<Tables> {
    let deadline = Instant::now() + Duration::from_secs(cfg.tables_wait_s);
    let mut last_err = None;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        match Tables::map(&cfg.tables) {
            Ok(t) => return Ok(t),
            Err(e) => {
                if last_err.is_none() {
                    tracing::info!(region = %cfg.tables, error = %e, "waiting for control to create the table region");
                }
                last_err = Some(e);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match last_err {
        Some(e) => Err(e).with_context(|| {
            format!(
                "table region {:?} not usable after {} s",
                cfg.tables, cfg.tables_wait_s
            )
        }),
        None => bail!("stopped before the table region appeared"),
    }
}

fn run(cfg: &DataplaneConfig) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }
    let tables = wait_for_tables(cfg, &stop)?;

    let mut vdevs: Vec<String> = cfg.ports.iter().filter_map(|p| p.device.clone()).collect();
    if let Some(exc) = &cfg.exception {
        vdevs.push(exc.device.clone());
    }
    let memory = if cfg.eal.memory == "no-huge" {
        Memory::NoHuge {
            mb: cfg.eal.memory_mb,
        }
    } else {
        Memory::Hugepages {
            mb: Some(cfg.eal.memory_mb),
        }
    };
    let eal = Eal::init(&EalConfig {
        app_name: "sluice-dataplane".into(),
        main_lcore: cfg.eal.main_lcore,
        memory,
        vdevs,
        pci_allow: cfg.eal.pci_allow.clone(),
        log_level: Some(cfg.eal.log_level.clone()),
        ..EalConfig::default()
    })?;
    let pool = Mempool::new(
        &eal,
        &MempoolConfig {
            size: cfg.eal.mbufs,
            ..MempoolConfig::named("sluice-dp")
        },
    )
    .context("packet mempool")?;

    let workers = u16::try_from(cfg.workers.cores.len()).context("too many workers")?;
    let mut ports = Vec::new();
    let mut macs = Vec::new();
    for (i, p) in cfg.ports.iter().enumerate() {
        let name = p
            .device
            .as_deref()
            .map(device_name)
            .or(p.pci.as_deref())
            .unwrap_or_default();
        let id = eal
            .port_by_name(name)
            .with_context(|| format!("ports[{i}]: no DPDK port {name:?}"))?;
        let pc = PortConfig {
            rx_queues: workers,
            tx_queues: workers,
            rx_desc: p.descriptors,
            tx_desc: p.descriptors,
            ..PortConfig::default()
        };
        let port =
            Port::new(&eal, id, &pc, &pool).with_context(|| format!("ports[{i}] ({name})"))?;
        macs.push(EthernetAddress(
            port.mac().with_context(|| format!("ports[{i}]: MAC"))?,
        ));
        ports.push(port);
    }
    let mut exception = match &cfg.exception {
        Some(e) => {
            let name = device_name(&e.device);
            let id = eal
                .port_by_name(name)
                .with_context(|| format!("exception: no DPDK port {name:?}"))?;
            let pc = PortConfig {
                rx_queues: 1,
                tx_queues: workers,
                ..PortConfig::default()
            };
            Some(Port::new(&eal, id, &pc, &pool).context("exception port")?)
        }
        None => None,
    };

    let hz = tsc_hz();
    let tick_rate = TickRate::try_new(hz).context("TSC frequency unknown")?;
    let timeouts = Timeouts {
        tcp_established: Duration::from_secs(cfg.conntrack.tcp_established_s),
        tcp_syn: Duration::from_secs(cfg.conntrack.tcp_syn_s),
        tcp_closing: Duration::from_secs(cfg.conntrack.tcp_closing_s),
        udp: Duration::from_secs(cfg.conntrack.udp_s),
        other: Duration::from_secs(cfg.conntrack.other_s),
    };

    // Split every port's queues among the workers.
    let mut rxq: Vec<Vec<_>> = Vec::new();
    let mut txq: Vec<Vec<_>> = Vec::new();
    for p in &mut ports {
        let (rx, tx) = p.take_queues();
        rxq.push(rx);
        txq.push(tx);
    }
    let (mut exc_rx, mut exc_tx) = match exception.as_mut() {
        Some(p) => {
            let (rx, tx) = p.take_queues();
            (rx, tx.into_iter().map(Some).collect::<Vec<_>>())
        }
        None => (Vec::new(), Vec::new()),
    };
    let inboxes: Arc<[ArrayQueue<worker::Handoff>]> = (0..workers)
        .map(|_| ArrayQueue::new(INBOX_CAPACITY))
        .collect();

    let mut handles = Vec::new();
    for (wi, &core) in cfg.workers.cores.iter().enumerate() {
        let index = u16::try_from(wi).context("worker index")?;
        let mut pc = PipelineConfig::one_armed(macs[0], cfg.flow_hash_seed);
        pc.port_macs = macs.clone();
        pc.node_ipv4 = cfg.node.ipv4;
        pc.node_ipv6 = cfg.node.ipv6;
        pc.nat_port_min = cfg.node.nat_port_min;
        pc.nat_port_max = cfg.node.nat_port_max;
        pc.worker = index;
        pc.workers = workers;
        pc.conntrack_capacity = cfg.conntrack.capacity_per_worker;
        pc.timeouts = timeouts;
        pc.tick_rate = tick_rate;
        let pipeline = Pipeline::new(pc).with_context(|| format!("worker {wi} pipeline"))?;
        let tw = tables
            .register()
            .with_context(|| format!("worker {wi}: table registration"))?;
        let setup = WorkerSetup {
            index,
            core: Some(core),
            rx: rxq.iter_mut().map(|q| q.remove(0)).collect(),
            tx: txq.iter_mut().map(|q| q.remove(0)).collect(),
            exception: (
                if wi == 0 { exc_rx.pop() } else { None },
                exc_tx.get_mut(wi).and_then(Option::take),
            ),
            tables: tw,
            pipeline,
            inboxes: Arc::clone(&inboxes),
            stop: Arc::clone(&stop),
            idle_sleep_max: Duration::from_micros(u64::from(cfg.workers.idle_sleep_max_us)),
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("sluice-worker-{wi}"))
                .spawn(move || worker::run(setup))
                .context("spawn worker")?,
        );
    }

    let addrs: Vec<IpAddr> = cfg
        .node
        .ipv4
        .map(IpAddr::V4)
        .into_iter()
        .chain(cfg.node.ipv6.map(IpAddr::V6))
        .collect();
    let names: Vec<&str> = ports.iter().map(Port::name).collect();
    println!(
        "sluice-dataplane ready: {workers} worker(s) on cores {:?}, ports {names:?}, node addresses {addrs:?}, tables {:?} at generation {}",
        cfg.workers.cores,
        cfg.tables,
        tables.published().0,
    );

    let mut last_report = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            for p in &ports {
                if let Ok(s) = p.stats() {
                    tracing::info!(
                        port = p.name(),
                        rx = s.rx_packets,
                        tx = s.tx_packets,
                        missed = s.rx_missed,
                        "port counters"
                    );
                }
            }
        }
    }
    tracing::info!("stopping: joining workers");
    for h in handles {
        if h.join().is_err() {
            tracing::error!("a worker panicked");
        }
    }
    // Teardown order: queues went with the workers; now ports, then the pool, then the EAL.
    drop(exception);
    drop(ports);
    drop(pool);
    drop(eal);
    println!("sluice-dataplane stopped");
    Ok(())
}
