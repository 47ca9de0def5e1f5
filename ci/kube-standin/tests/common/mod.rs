//! Shared test helpers: a stand-in with a kube-rs client made from its kubeconfig, scratch
//! directories, and waiting for conditions with generous timeouts.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use sluice_kube_standin::{Handle, Options};

/// Generous bound for anything a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A directory removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-kube-standin-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A kube-rs client configured from the kubeconfig file at `path`, as the daemon does it.
pub async fn client_from_kubeconfig(path: &Path) -> Client {
    let kc = Kubeconfig::read_from(path).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a config from the kubeconfig");
    Client::try_from(config).expect("a client")
}

/// A client for `handle` without kube-rs' default retries (it retries 504 fifteen times with
/// back-off, which is right against a busy apiserver but hides the answer a test looks at).
pub async fn client_without_retry(handle: &Handle) -> Client {
    let dir = Scratch::new("kubeconfig");
    let path = dir.path().join("config");
    handle
        .write_kubeconfig(&path)
        .expect("writing the kubeconfig");
    let kc = Kubeconfig::read_from(&path).expect("reading the kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a config from the kubeconfig");
    config.default_retry = false;
    Client::try_from(config).expect("a client")
}

/// A stand-in with these options and a client for it.
pub async fn standin_with(opts: Options) -> (Handle, Client) {
    let handle = sluice_kube_standin::start(opts)
        .await
        .expect("starting the stand-in");
    let dir = Scratch::new("kubeconfig");
    let path = dir.path().join("config");
    handle
        .write_kubeconfig(&path)
        .expect("writing the kubeconfig");
    let client = client_from_kubeconfig(&path).await;
    (handle, client)
}

/// A stand-in with default options and a client for it.
pub async fn standin() -> (Handle, Client) {
    standin_with(Options::default()).await
}

/// Waits until `cond` holds, polling; panics with `what` after [`PATIENCE`].
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The API error inside a kube error (panics on any other error).
pub fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
