//! The `sluice-kube-standin` binary as tests use it: spawned as a process, ready line read,
//! used through the kubeconfig it wrote (also via `KUBECONFIG` and `Config::infer`), and
//! stopped with SIGTERM by PID.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Scratch, client_from_kubeconfig};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// Kills the child if the test fails before it stops it.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_until_sigterm() {
    let dir = Scratch::new("process");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = Reap(
        Command::new(env!("CARGO_BIN_EXE_sluice-kube-standin"))
            .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning sluice-kube-standin"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("sluice-kube-standin ready on ")
        .expect("the ready line")
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let client = client_from_kubeconfig(&kubeconfig).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "hello"}, "data": {"a": "b"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    // `Config::infer` through KUBECONFIG, in a child process of this test binary (the
    // environment of this process is not ours to change).
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "infer_from_kubeconfig_env",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("SLUICE_STANDIN_INFER_CHILD", "1")
        .output()
        .expect("running the infer child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("infer child saw hello"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Stop it by PID with SIGTERM; it exits cleanly.
    let pid = child.0.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("running kill");
    assert!(kill.success());
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stand-in did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

/// Runs only as the child of [`binary_serves_until_sigterm`] (it sets the environment this
/// needs); in a normal run it has nothing to check and returns.
#[tokio::test]
async fn infer_from_kubeconfig_env() {
    if std::env::var_os("SLUICE_STANDIN_INFER_CHILD").is_none() {
        return;
    }
    let config = kube::Config::infer()
        .await
        .expect("inferring the config from KUBECONFIG");
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let cm = cms.get("hello").await.unwrap();
    println!("infer child saw {}", cm.metadata.name.unwrap());
}
