//! `sluice-kube-standin`: the Kubernetes API stand-in as a process, for tests that run the
//! reconciler as a separate program. Prints `sluice-kube-standin ready on http://…` on stdout
//! once it serves and the kubeconfig is written; runs until SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// A Kubernetes API stand-in over an in-memory store (tests only).
#[derive(Debug, Parser)]
#[command(name = "sluice-kube-standin", version)]
struct Opt {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write a kubeconfig pointing at the server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 1)]
    bookmark_interval_secs: u64,
    /// Past changes kept for watches resuming from an older resourceVersion.
    #[arg(long, default_value_t = 200_000)]
    history_window: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let opt = Opt::parse();
    let handle = sluice_kube_standin::start(sluice_kube_standin::Options {
        bind: opt.listen,
        bookmark_interval: Duration::from_secs(opt.bookmark_interval_secs.max(1)),
        history_window: opt.history_window,
    })
    .await?;
    if let Some(path) = &opt.kubeconfig {
        handle.write_kubeconfig(path)?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "sluice-kube-standin ready on {}", handle.url())
            .context("writing the ready line")?;
        out.flush()?;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    handle.shutdown().await;
    Ok(())
}
