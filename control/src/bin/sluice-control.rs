//! `sluice-control`: reads the static config, publishes its services into the shared table
//! region the dataplane maps, health-checks backends, reloads on SIGHUP and when the file's
//! content changes, and exits on SIGTERM/SIGINT leaving the region published (the dataplane
//! keeps forwarding). Serves Prometheus metrics on `[metrics] listen` (`GET /metrics`) and the
//! gRPC API (`sluicectl`) on `[api] socket` (and `[api] listen` with TLS).
//!
//! Exit codes: 0 clean stop (or `--check` passed), 1 runtime failure, 64 invalid config.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sluice_control::config::Config;
use sluice_control::daemon::{Clock, Daemon, Inputs};
use sluice_control::state::Events;
use sluice_control::{api, k8s, metrics};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

/// Exit code for an invalid config (`EX_USAGE`).
const EX_CONFIG: u8 = 64;

/// The Sluice control daemon: publishes the configured services to the dataplane.
#[derive(Debug, Parser)]
#[command(version)]
struct Opt {
    /// Config file (TOML).
    #[arg(short, long, default_value = "/etc/sluice/control.toml")]
    config: PathBuf,
    /// Validate the config and exit (0 valid, 64 invalid).
    #[arg(short = 't', long)]
    check: bool,
    /// Heartbeat and reclaim period, in milliseconds.
    #[arg(long, default_value_t = 200)]
    tick_ms: u64,
    /// How often to check the config file for changes, in milliseconds (0: only on SIGHUP).
    #[arg(long, default_value_t = 1000)]
    watch_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let opt = Opt::parse();
    let desired = match Config::load(&opt.config) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sluice-control: invalid config: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if opt.check {
        println!(
            "sluice-control: {} is valid ({} services)",
            opt.config.display(),
            desired.services.len()
        );
        return ExitCode::SUCCESS;
    }
    match run(opt, desired).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-control: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(opt: Opt, desired: sluice_control::config::Desired) -> anyhow::Result<()> {
    // Signals first: SIGHUP's default action would kill us.
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;

    let clock = Clock::new(tokio::time::Instant::now());
    let region = desired.region.clone();
    let listen = desired.metrics;
    let listener = metrics::bind(listen).await?;
    let api_listeners = api::bind(&desired.api).await?;
    // A planned stop first announces with GRACEFUL_SHUTDOWN for this long (RFC 8326).
    let bgp_wait = if desired.bgp.peers.is_empty() && desired.kubernetes.is_none() {
        Duration::ZERO
    } else {
        desired.bgp.graceful_shutdown_wait + Duration::from_secs(10)
    };
    let publish_seconds = metrics::publish_histogram();
    let events = Arc::new(Events::new());
    // Kubernetes: the client is made before anything is published, so a bad kubeconfig
    // stops the daemon at start instead of leaving it half-configured.
    let kube = match &desired.kubernetes {
        Some(k) => Some((k.clone(), k8s::reconcile::client(k).await?)),
        None => None,
    };
    let node = desired.node.clone();
    let node_ipv4 = desired.node_ipv4;
    let (daemon, applied) = Daemon::start(
        opt.config.clone(),
        desired,
        clock,
        publish_seconds.clone(),
        Arc::clone(&events),
    )
    .await?;
    println!(
        "sluice-control ready: {} services published at generation {} (region {region:?}, metrics on http://{listen}/metrics, api on {})",
        applied.services,
        applied.generation.get(),
        api_listeners.describe(),
    );
    std::io::stdout().flush().context("stdout")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (reload_tx, reloads) = mpsc::channel(4);
    let (snapshot_tx, snapshots) = mpsc::channel(16);
    let (command_tx, commands) = mpsc::channel(16);
    let (cluster, mut kube_task) = match kube {
        Some((cfg, client)) => {
            let (tx, rx) = watch::channel(Arc::new(k8s::Cluster::default()));
            let task = tokio::spawn(k8s::reconcile::run(
                client,
                cfg,
                node,
                node_ipv4,
                tx,
                Arc::clone(&events),
                shutdown_rx.clone(),
            ));
            (Some(rx), Some(task))
        }
        None => (None, None),
    };
    let mut task = tokio::spawn(daemon.run(
        Inputs {
            reloads,
            snapshots,
            commands,
            shutdown: shutdown_rx.clone(),
            cluster,
        },
        Duration::from_millis(opt.tick_ms.max(1)),
        (opt.watch_ms > 0).then(|| Duration::from_millis(opt.watch_ms)),
    ));
    let mut metrics_task = tokio::spawn(metrics::serve(
        listener,
        snapshot_tx.clone(),
        publish_seconds,
        shutdown_rx.clone(),
    ));
    let mut api_task = tokio::spawn(api::serve(
        api_listeners,
        snapshot_tx,
        command_tx,
        events,
        shutdown_rx,
    ));
    let result = loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!(config = %opt.config.display(), "SIGHUP: reloading");
                // A full queue already holds a reload that will read the newest file.
                let _ = reload_tx.try_send(());
            }
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            r = &mut task => break r.context("table task").and(Err(anyhow::anyhow!("table task ended"))),
            r = &mut metrics_task => break r.context("metrics task").and(Err(anyhow::anyhow!("metrics task ended"))),
            r = &mut api_task => break r.context("api task").and(Err(anyhow::anyhow!("api task ended"))),
        }
    };
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5) + bgp_wait, async {
        if !task.is_finished() {
            let _ = (&mut task).await;
        }
        if !metrics_task.is_finished() {
            let _ = (&mut metrics_task).await;
        }
        if !api_task.is_finished() {
            let _ = (&mut api_task).await;
        }
        if let Some(t) = &mut kube_task
            && !t.is_finished()
        {
            let _ = t.await;
        }
    })
    .await;
    result
}
