//! The gRPC API end to end, with the real `sluice-control` and `sluicectl` binaries and no
//! dataplane (the daemon creates the table region itself; the worker list is empty):
//!
//! - every RPC through a plain tonic client on the Unix socket: status, services, one service
//!   (and `NOT_FOUND`), weight (share rises; `INVALID_ARGUMENT` for 0, `NOT_FOUND` for an
//!   unknown backend), drain/undrain, the event backlog in order, and a followed event live;
//! - the same through `sluicectl -o json` (parsed), the tables, and its exit codes (1 for a
//!   failed call, 3 when nothing answers);
//! - the socket is mode 0600 and gone after SIGTERM (exit 0);
//! - TCP is TLS only with a client certificate signed by `tls_client_ca` (certificates made at
//!   test time with `rcgen`): a client with one is served, plaintext HTTP/2, a client without a
//!   certificate, one from another CA and a wrong server name are not; `--check` refuses
//!   `listen` without TLS files (exit 64, naming `api.listen`);
//! - a second daemon on a live socket fails to start and leaves the first alone, while a stale
//!   socket (its daemon killed) is replaced.
//!
//! Each test has its own directory `/tmp/sluice-api-PID-TAG` (config, socket, log,
//! certificates) and region `ctl-api-PID-TAG`, removed on drop after its processes, which
//! `Proc` kills by PID, on success and on panic alike. No timing assertions: every wait is a
//! generous timeout.

use std::fs;
use std::io::BufRead;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;
use sluice_control::client::{Target, connect};
use sluice_dataplane::tables::Writer;
use sluice_proto::v1::control_client::ControlClient;
use sluice_proto::v1::{
    Backend, BackendState, DrainRequest, EventKind, GetServiceRequest, GetStatusRequest, Health,
    ListServicesRequest, Mode, Protocol, Service, SetWeightRequest, UndrainRequest,
    WatchEventsRequest,
};
use sluice_testbed::{Proc, addr, control_test_config, free_port};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// The service port in [`control_test_config`].
const PORT: u16 = 8080;
/// Backends b1, b2, b3.
const BACKENDS: usize = 3;
/// The ready line `sluice-control` prints on stdout.
const READY: &str = "sluice-control ready:";
/// How long anything may take (start-up, one call, one event): generous, never a measurement.
const PATIENCE: Duration = Duration::from_secs(60);

// === fixtures ===

/// One test's directory and table regions, removed on drop. Declare it before the test's
/// `Proc`s so that they (dropped first) are killed before their files go.
struct Scratch {
    dir: PathBuf,
    tag: String,
    regions: Vec<String>,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = PathBuf::from(format!("/tmp/sluice-api-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating the test directory");
        Scratch {
            dir,
            tag: tag.to_owned(),
            regions: Vec::new(),
        }
    }

    /// A fresh region name `ctl-api-PID-TAG[-n]`, removed on drop.
    fn region(&mut self) -> String {
        let mut r = format!("ctl-api-{}-{}", std::process::id(), self.tag);
        if !self.regions.is_empty() {
            r = format!("{r}-{}", self.regions.len());
        }
        let _ = Writer::remove(&r);
        self.regions.push(r.clone());
        r
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for r in &self.regions {
            let _ = Writer::remove(r);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The testbed's control config: service `web` on `VIP4:8080` with b1..b3, API on `socket`,
/// metrics on a free loopback port.
fn control_config(region: &str, socket: &Path) -> String {
    control_test_config(region, free_port(), socket, PORT, BACKENDS)
}

/// `cfg` with its `[api]` section's socket line replaced by `api` (TOML lines).
fn with_api(cfg: &str, socket: &Path, api: &str) -> String {
    let line = format!("socket = \"{}\"\n", socket.display());
    assert!(cfg.contains(&line), "the testbed config has {line:?}");
    cfg.replacen(&line, api, 1)
}

/// Starts `sluice-control --config cfg` (stderr to `log`) and waits for its ready line.
fn spawn_control(what: &str, cfg: &Path, log: &Path) -> (Proc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-control"));
    cmd.arg("--config").arg(cfg).stderr(
        fs::File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display())),
    );
    Proc::spawn_ready(what, &mut cmd, READY, PATIENCE).unwrap_or_else(|e| {
        panic!(
            "{e}\n--- {what} stderr ---\n{}",
            fs::read_to_string(log).unwrap_or_default()
        )
    })
}

/// Runs `program args` to completion (within [`PATIENCE`]) and returns its output.
fn run_to_end(what: &str, cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Proc::spawn(what, cmd)
        .and_then(|p| p.wait_output(PATIENCE))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Sends `sig` (`-TERM`, …) to `pid` with kill(1).
fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Awaits `fut` within [`PATIENCE`].
async fn patiently<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?}"))
}

async fn unix_client(socket: &Path) -> ControlClient<Channel> {
    patiently("connect", connect(&Target::Unix(socket.to_owned())))
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()))
}

fn backend<'a>(s: &'a Service, name: &str) -> &'a Backend {
    s.backends
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no backend {name} in {s:?}"))
}

fn share_sum(s: &Service) -> f64 {
    s.backends.iter().map(|b| b.table_share).sum()
}

// === 1. every RPC through tonic ===

#[test]
fn every_rpc_over_the_unix_socket() {
    let mut scratch = Scratch::new("rpc");
    let region = scratch.region();
    let socket = scratch.path("control.sock");
    let cfg = scratch.write("control.toml", &control_config(&region, &socket));
    let (_control, ready) = spawn_control("control", &cfg, &scratch.path("control.log"));
    assert!(
        ready.contains(&format!("unix:{}", socket.display())),
        "{ready}"
    );

    runtime().block_on(async {
        let mut c = unix_client(&socket).await;

        // GetStatus.
        let st = patiently("GetStatus", c.get_status(GetStatusRequest {}))
            .await
            .expect("GetStatus")
            .into_inner();
        assert_eq!(st.node, "lb1");
        assert_eq!(st.region, region);
        assert!(st.generation >= 1, "{st:?}");
        assert_eq!(st.config_path, cfg.display().to_string());
        assert_eq!((st.services, st.backends), (1, 3), "{st:?}");
        assert!(st.workers.is_empty(), "no dataplane: {st:?}");
        assert!(!st.version.is_empty());
        let gen0 = st.generation;

        // ListServices.
        let list = patiently("ListServices", c.list_services(ListServicesRequest {}))
            .await
            .expect("ListServices")
            .into_inner()
            .services;
        assert_eq!(list.len(), 1, "{list:?}");
        let web = &list[0];
        assert_eq!(web.name, "web");
        assert_eq!(web.vip, addr::VIP4);
        assert_eq!(web.port, u32::from(PORT));
        assert_eq!(web.protocol(), Protocol::Tcp);
        assert_eq!(web.mode(), Mode::Nat);
        assert!(web.table_size > 0);
        let names: Vec<&str> = web.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["b1", "b2", "b3"]);
        for (i, b) in web.backends.iter().enumerate() {
            assert_eq!(b.service, "web");
            assert_eq!(b.address, addr::backend4(i));
            assert_eq!((b.weight, b.configured_weight), (1, 1), "{b:?}");
            assert_eq!(b.state(), BackendState::Active, "{b:?}");
            assert_eq!(b.health(), Health::Unchecked, "{b:?}");
            assert!(!b.drained);
            assert!(
                (0.3..0.37).contains(&b.table_share),
                "equal weights, about a third each: {b:?}"
            );
        }
        assert!((share_sum(web) - 1.0).abs() < 1e-6, "{web:?}");

        // GetService: the same service; NOT_FOUND for an unknown name.
        let one = patiently(
            "GetService",
            c.get_service(GetServiceRequest { name: "web".into() }),
        )
        .await
        .expect("GetService")
        .into_inner();
        assert_eq!(&one, web);
        let e = patiently(
            "GetService",
            c.get_service(GetServiceRequest {
                name: "nope".into(),
            }),
        )
        .await
        .expect_err("unknown service");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("nope"), "{e:?}");

        // SetWeight: b1 to 5 of 5/1/1 owns most of the table.
        let weight = |backend: &str, weight| SetWeightRequest {
            service: "web".into(),
            backend: backend.into(),
            weight,
        };
        let b1 = patiently("SetWeight", c.set_weight(weight("b1", 5)))
            .await
            .expect("SetWeight")
            .into_inner();
        assert_eq!((b1.service.as_str(), b1.name.as_str()), ("web", "b1"));
        assert_eq!((b1.weight, b1.configured_weight), (5, 1), "{b1:?}");
        assert_eq!(b1.state(), BackendState::Active);
        assert!(b1.table_share > 0.5, "5 of 7: {b1:?}");
        let web = patiently(
            "GetService",
            c.get_service(GetServiceRequest { name: "web".into() }),
        )
        .await
        .expect("GetService")
        .into_inner();
        assert_eq!(backend(&web, "b1"), &b1);
        for other in ["b2", "b3"] {
            let b = backend(&web, other);
            assert!(b.table_share < 0.25, "1 of 7: {b:?}");
            assert_eq!(b.weight, 1);
        }
        assert!((share_sum(&web) - 1.0).abs() < 1e-6, "{web:?}");
        let st = c.get_status(GetStatusRequest {}).await.expect("GetStatus");
        assert!(
            st.get_ref().generation > gen0,
            "a new generation was published"
        );

        let e = patiently("SetWeight 0", c.set_weight(weight("b1", 0)))
            .await
            .expect_err("weight 0");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = patiently("SetWeight b9", c.set_weight(weight("b9", 2)))
            .await
            .expect_err("unknown backend");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = patiently(
            "SetWeight nope/b1",
            c.set_weight(SetWeightRequest {
                service: "nope".into(),
                backend: "b1".into(),
                weight: 2,
            }),
        )
        .await
        .expect_err("unknown service");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = patiently("SetWeight without names", c.set_weight(weight("", 2)))
            .await
            .expect_err("no backend name");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // Drain and Undrain b2.
        let drain = |backend: &str| DrainRequest {
            service: "web".into(),
            backend: backend.into(),
        };
        let b2 = patiently("Drain", c.drain(drain("b2")))
            .await
            .expect("Drain")
            .into_inner();
        assert_eq!(b2.state(), BackendState::Draining, "{b2:?}");
        assert!(b2.drained, "{b2:?}");
        assert!(b2.table_share.abs() < f64::EPSILON, "{b2:?}");
        let web = patiently(
            "GetService",
            c.get_service(GetServiceRequest { name: "web".into() }),
        )
        .await
        .expect("GetService")
        .into_inner();
        assert_eq!(backend(&web, "b2").state(), BackendState::Draining);
        assert!((share_sum(&web) - 1.0).abs() < 1e-6, "{web:?}");
        let e = patiently("Drain b9", c.drain(drain("b9")))
            .await
            .expect_err("unknown backend");
        assert_eq!(e.code(), Code::NotFound, "{e:?}");

        let b2 = patiently(
            "Undrain",
            c.undrain(UndrainRequest {
                service: "web".into(),
                backend: "b2".into(),
            }),
        )
        .await
        .expect("Undrain")
        .into_inner();
        assert_eq!(b2.state(), BackendState::Active, "{b2:?}");
        assert!(!b2.drained, "{b2:?}");
        assert!(b2.table_share > 0.0, "{b2:?}");

        // WatchEvents, backlog only: Started, WeightChanged, Drained, Undrained, in order.
        let backlog = |n| WatchEventsRequest {
            follow: false,
            backlog: n,
        };
        let mut stream = patiently("WatchEvents", c.watch_events(backlog(100)))
            .await
            .expect("WatchEvents")
            .into_inner();
        let mut events = Vec::new();
        while let Some(e) = patiently("WatchEvents", stream.message())
            .await
            .expect("an event")
        {
            events.push(e);
        }
        assert!(
            events.windows(2).all(|w| w[1].seq > w[0].seq),
            "increasing seq: {events:?}"
        );
        let wanted = [
            EventKind::Started,
            EventKind::WeightChanged,
            EventKind::Drained,
            EventKind::Undrained,
        ];
        let seen: Vec<EventKind> = events
            .iter()
            .map(sluice_proto::v1::Event::kind)
            .filter(|k| wanted.contains(k))
            .collect();
        assert_eq!(seen, wanted, "{events:?}");
        let weight_event = events
            .iter()
            .find(|e| e.kind() == EventKind::WeightChanged)
            .expect("a WeightChanged event");
        assert_eq!(
            (weight_event.service.as_str(), weight_event.backend.as_str()),
            ("web", "b1")
        );
        assert!(weight_event.generation > gen0, "{weight_event:?}");
        let last = events.last().expect("events").clone();
        assert_eq!(last.kind(), EventKind::Undrained);
        assert_eq!(last.backend, "b2");

        // A backlog of 2 is the last two events.
        let mut stream = c
            .watch_events(backlog(2))
            .await
            .expect("WatchEvents")
            .into_inner();
        let mut two = Vec::new();
        while let Some(e) = patiently("WatchEvents", stream.message())
            .await
            .expect("an event")
        {
            two.push(e);
        }
        assert_eq!(two, events[events.len() - 2..], "the last two");

        // WatchEvents, following: a drain made after subscribing arrives live. The handler
        // subscribes before it answers, so nothing made after the answer can be missed.
        let mut stream = patiently(
            "WatchEvents follow",
            c.watch_events(WatchEventsRequest {
                follow: true,
                backlog: 0,
            }),
        )
        .await
        .expect("WatchEvents follow")
        .into_inner();
        let mut other = c.clone();
        let b3 = patiently("Drain", other.drain(drain("b3")))
            .await
            .expect("Drain b3")
            .into_inner();
        assert_eq!(b3.state(), BackendState::Draining);
        let live = patiently("the followed event", stream.message())
            .await
            .expect("stream")
            .expect("an event, not the end");
        assert_eq!(live.kind(), EventKind::Drained, "{live:?}");
        assert_eq!(
            (live.service.as_str(), live.backend.as_str()),
            ("web", "b3")
        );
        assert_eq!(live.seq, last.seq + 1, "{live:?} after {last:?}");
    });
}

// === 2. the same through sluicectl ===

/// `sluicectl --socket SOCKET ARGS…`, run to completion.
fn ctl(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluicectl"));
    cmd.env_remove("SLUICE_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(args);
    run_to_end("sluicectl", &mut cmd)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts success and returns stdout.
fn ok_stdout(what: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "sluicectl {what:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `sluicectl -o json ARGS…`: succeeds and prints one JSON document.
fn ctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut argv = vec!["-o", "json"];
    argv.extend_from_slice(args);
    let stdout = ok_stdout(&argv, &ctl(socket, &argv));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{argv:?}: {e}: {stdout}"))
}

/// Asserts that `out` exited with `code` and said something containing each of `needles` on
/// stderr.
fn assert_fails(out: &Output, code: i32, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{}: {stderr}", out.status);
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
}

fn json_backend<'a>(service: &'a Value, name: &str) -> &'a Value {
    service["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("no backend {name} in {service}"))
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn sluicectl_json_tables_and_exit_codes() {
    let mut scratch = Scratch::new("cli");
    let region = scratch.region();
    let socket = scratch.path("control.sock");
    let cfg = scratch.write("control.toml", &control_config(&region, &socket));
    let (_control, _) = spawn_control("control", &cfg, &scratch.path("control.log"));

    // status
    let st = ctl_json(&socket, &["status"]);
    assert_eq!(st["node"], "lb1");
    assert_eq!(st["region"], region.as_str());
    assert_eq!(st["config_path"], cfg.display().to_string().as_str());
    assert!(st["generation"].as_u64().is_some_and(|g| g >= 1), "{st}");
    assert_eq!(
        (&st["services"], &st["backends"]),
        (&Value::from(1), &Value::from(3))
    );
    assert_eq!(st["workers"], serde_json::json!([]));

    // services
    let list = ctl_json(&socket, &["services"]);
    let services = list["services"].as_array().expect("services array");
    assert_eq!(services.len(), 1, "{list}");
    let web = &services[0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["vip"], addr::VIP4);
    assert_eq!(web["port"], PORT);
    assert_eq!(web["protocol"], "tcp");
    assert_eq!(web["mode"], "nat");
    assert_eq!(web["backends"].as_array().map(Vec::len), Some(3), "{web}");

    // backends
    let web = ctl_json(&socket, &["backends", "web"]);
    assert_eq!(web["name"], "web");
    for (i, name) in ["b1", "b2", "b3"].into_iter().enumerate() {
        let b = json_backend(&web, name);
        assert_eq!(b["address"], addr::backend4(i).as_str(), "{b}");
        assert_eq!(b["state"], "active", "{b}");
        assert_eq!(b["health"], "unchecked", "{b}");
        assert_eq!(b["weight"], 1, "{b}");
        assert_eq!(b["drained"], false, "{b}");
    }

    // weight, drain, undrain
    let b1 = ctl_json(&socket, &["weight", "web", "b1", "5"]);
    assert_eq!((&b1["service"], &b1["name"]), (&"web".into(), &"b1".into()));
    assert_eq!(
        (&b1["weight"], &b1["configured_weight"]),
        (&5.into(), &1.into()),
        "{b1}"
    );
    assert!(f64_of(&b1["table_share"]) > 0.5, "5 of 7: {b1}");
    let b2 = ctl_json(&socket, &["drain", "web", "b2"]);
    assert_eq!(b2["state"], "draining", "{b2}");
    assert_eq!(b2["drained"], true, "{b2}");
    assert!(f64_of(&b2["table_share"]).abs() < f64::EPSILON, "{b2}");
    let b2 = ctl_json(&socket, &["undrain", "web", "b2"]);
    assert_eq!(b2["state"], "active", "{b2}");
    assert_eq!(b2["drained"], false, "{b2}");
    assert!(f64_of(&b2["table_share"]) > 0.0, "{b2}");

    // events: one JSON object per line, in order.
    let argv = ["-o", "json", "events", "--backlog", "100"];
    let lines = ok_stdout(&argv, &ctl(&socket, &argv));
    let events: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs.len(), events.len(), "every event has a seq: {lines}");
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "increasing: {lines}");
    let wanted = ["started", "weight_changed", "drained", "undrained"];
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| wanted.contains(k))
        .collect();
    assert_eq!(kinds, wanted, "{lines}");
    let last_seq = *seqs.last().expect("events");

    // events --follow: the backlog line (1) shows the stream is open; then a drain arrives.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_sluicectl"));
    follow
        .env_remove("SLUICE_SOCKET")
        .arg("--socket")
        .arg(&socket)
        .args(["-o", "json", "events", "--follow", "--backlog", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut follower = Proc::spawn("sluicectl events --follow", &mut follow).expect("spawn");
    let stdout = follower.take_stdout().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || -> Value {
        let line = rx.recv_timeout(PATIENCE).expect("a followed event line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    let first = next();
    assert_eq!(first["seq"], last_seq, "the backlog of 1: {first}");
    ctl_json(&socket, &["drain", "web", "b3"]);
    let live = next();
    assert_eq!(live["kind"], "drained", "{live}");
    assert_eq!(
        (&live["service"], &live["backend"]),
        (&"web".into(), &"b3".into())
    );
    assert_eq!(live["seq"], last_seq + 1, "{live}");
    follower.kill();

    // Tables.
    let out = ok_stdout(&["services"], &ctl(&socket, &["services"]));
    assert!(out.starts_with("NAME "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("web ") && l.contains("10.90.0.100:8080/tcp")),
        "{out}"
    );
    let out = ok_stdout(&["backends", "web"], &ctl(&socket, &["backends", "web"]));
    assert!(out.starts_with("web: 10.90.0.100:8080/tcp, nat"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("NAME ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("b1 ")), "{out}");
    let out = ok_stdout(&["status"], &ctl(&socket, &["status"]));
    assert!(
        out.lines()
            .any(|l| l.starts_with("node:") && l.ends_with(" lb1")),
        "{out}"
    );
    assert!(out.contains("no dataplane workers attached"), "{out}");
    let out = ok_stdout(&["undrain"], &ctl(&socket, &["undrain", "web", "b3"]));
    assert!(out.starts_with("web/b3: active (weight 1, share "), "{out}");
    let out = ok_stdout(&["events"], &ctl(&socket, &["events"]));
    assert!(out.lines().any(|l| l.contains(" #1 started")), "{out}");

    // Exit codes: 1 when the call fails, 3 when nothing answers.
    assert_fails(
        &ctl(&socket, &["backends", "nope"]),
        1,
        &["not found", "nope"],
    );
    assert_fails(
        &ctl(&socket, &["-o", "json", "drain", "web", "b9"]),
        1,
        &["not found", "b9"],
    );
    assert_fails(
        &ctl(&socket, &["weight", "web", "b1", "0"]),
        1,
        &["invalid argument"],
    );
    let missing = scratch.path("missing.sock");
    assert_fails(
        &ctl(&missing, &["status"]),
        3,
        &["cannot connect", &missing.display().to_string()],
    );
}

// === 3. the socket: 0600, removed on SIGTERM ===

#[test]
fn socket_is_owner_only_and_removed_after_sigterm() {
    let mut scratch = Scratch::new("sock");
    let region = scratch.region();
    // In a directory the daemon must create.
    let socket = scratch.path("run/control.sock");
    let cfg = scratch.write("control.toml", &control_config(&region, &socket));
    let (control, _) = spawn_control("control", &cfg, &scratch.path("control.log"));

    let meta = fs::symlink_metadata(&socket).expect("the socket exists");
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "mode {:o}",
        meta.permissions().mode()
    );
    let leftovers: Vec<String> = fs::read_dir(scratch.path("run"))
        .expect("socket dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "control.sock")
        .collect();
    assert!(
        leftovers.is_empty(),
        "nothing but the socket: {leftovers:?}"
    );

    signal("-TERM", control.pid());
    let out = control.wait_output(PATIENCE).expect("exits after SIGTERM");
    assert_eq!(out.status.code(), Some(0), "{}", out.status);
    assert!(
        fs::symlink_metadata(&socket).is_err(),
        "{} removed at shutdown",
        socket.display()
    );
}

// === 4. TCP with TLS and client certificates ===

/// PEM files under a directory: a CA, a server certificate for localhost/127.0.0.1 and a
/// client certificate it signed, and a client certificate from another CA.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    rogue_client: (PathBuf, PathBuf),
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

fn make_pki(scratch: &Scratch) -> Pki {
    let (ca_pem, issuer) = ca("sluice test CA");
    let (rogue_pem, rogue) = ca("another CA");
    let pair = |(cert, key): (String, String), name: &str| {
        (
            scratch.write(&format!("{name}.pem"), &cert),
            scratch.write(&format!("{name}-key.pem"), &key),
        )
    };
    let pki = Pki {
        ca: scratch.write("ca.pem", &ca_pem),
        server: pair(
            leaf(
                &issuer,
                &["localhost", "127.0.0.1"],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            "server",
        ),
        client: pair(
            leaf(&issuer, &["sluicectl"], ExtendedKeyUsagePurpose::ClientAuth),
            "client",
        ),
        rogue_client: pair(
            leaf(&rogue, &["intruder"], ExtendedKeyUsagePurpose::ClientAuth),
            "rogue",
        ),
    };
    scratch.write("rogue-ca.pem", &rogue_pem);
    pki
}

/// Connects (TLS) and calls GetStatus; the node name, or the error in words.
async fn tls_status(
    url: &str,
    pki: &Pki,
    identity: Option<&(PathBuf, PathBuf)>,
    domain: Option<&str>,
) -> Result<String, String> {
    let target = Target::Tls {
        url: url.to_owned(),
        ca: pki.ca.clone(),
        identity: identity.cloned(),
        domain: domain.map(str::to_owned),
    };
    let call = async {
        let mut c = connect(&target).await.map_err(|e| e.to_string())?;
        c.get_status(GetStatusRequest {})
            .await
            .map(|s| s.into_inner().node)
            .map_err(|e| format!("{e:?}"))
    };
    tokio::time::timeout(PATIENCE, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PATIENCE:?}")))
}

#[test]
fn tcp_is_served_with_tls_and_client_certificates_only() {
    let mut scratch = Scratch::new("tls");
    let region = scratch.region();
    let pki = make_pki(&scratch);
    let port = free_port();
    let unused = scratch.path("unused.sock");
    let api = format!(
        "socket = \"\"\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
         tls_client_ca = \"{}\"\n",
        pki.server.0.display(),
        pki.server.1.display(),
        pki.ca.display()
    );
    let cfg = scratch.write(
        "control.toml",
        &with_api(&control_config(&region, &unused), &unused, &api),
    );
    let (_control, ready) = spawn_control("control", &cfg, &scratch.path("control.log"));
    assert!(
        ready.contains(&format!("tls://127.0.0.1:{port}")),
        "{ready}"
    );
    assert!(!ready.contains("unix:"), "no socket: {ready}");

    let https = format!("https://127.0.0.1:{port}");
    runtime().block_on(async {
        // (a) With the client certificate: served, by IP (the IP SAN), with --tls-domain
        // localhost, and by name.
        let node = tls_status(&https, &pki, Some(&pki.client), Some("localhost")).await;
        assert_eq!(node.as_deref(), Ok("lb1"));
        let node = tls_status(&https, &pki, Some(&pki.client), None).await;
        assert_eq!(node.as_deref(), Ok("lb1"), "checked against the IP SAN");
        let by_name = format!("https://localhost:{port}");
        let node = tls_status(&by_name, &pki, Some(&pki.client), None).await;
        assert_eq!(node.as_deref(), Ok("lb1"), "by name");

        // (b) Plaintext HTTP/2 to the TLS port is not served.
        let plain = async {
            let ch = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            ControlClient::new(ch)
                .get_status(GetStatusRequest {})
                .await
                .map(|s| s.into_inner().node)
                .map_err(|e| format!("{e:?}"))
        };
        // A plaintext client that gets no answer at all is not served either.
        let plain = tokio::time::timeout(PATIENCE, plain)
            .await
            .unwrap_or_else(|_| Err("no answer".to_owned()));
        println!("plaintext: {plain:?}");
        assert!(plain.is_err(), "plaintext must not be served: {plain:?}");

        // (c) TLS without a client certificate, or with one from another CA: refused.
        let anon = tls_status(&https, &pki, None, Some("localhost")).await;
        println!("no client certificate: {anon:?}");
        assert!(anon.is_err(), "no client certificate: {anon:?}");
        let rogue = tls_status(&https, &pki, Some(&pki.rogue_client), Some("localhost")).await;
        println!("another CA: {rogue:?}");
        assert!(rogue.is_err(), "another CA's client certificate: {rogue:?}");
        // And the client checks the server's name.
        let wrong = tls_status(&https, &pki, Some(&pki.client), Some("not-localhost")).await;
        println!("wrong server name: {wrong:?}");
        assert!(wrong.is_err(), "wrong server name: {wrong:?}");
    });

    // (a) sluicectl with the client certificate.
    let tls_ctl = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluicectl"));
        cmd.env_remove("SLUICE_SOCKET")
            .args(["--endpoint", &https, "--tls-domain", "localhost", "--ca"])
            .arg(&pki.ca)
            .args(extra)
            .args(["-o", "json", "status"]);
        run_to_end("sluicectl (tls)", &mut cmd)
    };
    let cert = pki.client.0.display().to_string();
    let key = pki.client.1.display().to_string();
    let out = tls_ctl(&["--cert", &cert, "--key", &key]);
    let stdout = ok_stdout(&["--endpoint", "status"], &out);
    let st: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(st["node"], "lb1");
    assert_eq!(st["region"], region.as_str());
    // (c) sluicectl without one fails (the handshake may complete on the client's side
    // before the server refuses, so either "call failed" (1) or "cannot connect" (3)).
    let out = tls_ctl(&[]);
    println!(
        "sluicectl without a client certificate: {}: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        matches!(out.status.code(), Some(1 | 3)),
        "{}: {}",
        out.status,
        text(&out.stderr)
    );
}

#[test]
fn check_refuses_a_tcp_listener_without_tls() {
    let mut scratch = Scratch::new("check");
    let region = scratch.region();
    let unused = scratch.path("unused.sock");
    let api = format!("socket = \"\"\nlisten = \"127.0.0.1:{}\"\n", free_port());
    let cfg = scratch.write(
        "control.toml",
        &with_api(&control_config(&region, &unused), &unused, &api),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-control"));
    cmd.arg("--check").arg("--config").arg(&cfg);
    let out = run_to_end("sluice-control --check", &mut cmd);
    assert_fails(&out, 64, &["api.listen", "TLS"]);
    assert!(
        !text(&out.stdout).contains("is valid"),
        "{}",
        text(&out.stdout)
    );

    // The same file with the socket line back is valid: only the listener was wrong.
    let socket = scratch.path("control.sock");
    let good = scratch.write("good.toml", &control_config(&region, &socket));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-control"));
    cmd.arg("--check").arg("--config").arg(&good);
    let out = run_to_end("sluice-control --check", &mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

// === 5. one daemon per socket ===

fn is_exit_failure(s: ExitStatus) -> bool {
    !s.success() && s.code().is_some()
}

#[test]
fn a_live_socket_refuses_a_second_daemon_and_a_stale_one_is_replaced() {
    let mut scratch = Scratch::new("dup");
    let socket = scratch.path("control.sock");
    let first_region = scratch.region();
    let first_cfg = scratch.write("first.toml", &control_config(&first_region, &socket));
    let (mut first, _) = spawn_control("first", &first_cfg, &scratch.path("first.log"));

    // A second daemon (its own region and metrics port) on the same socket fails to start.
    let second_region = scratch.region();
    let second_cfg = scratch.write("second.toml", &control_config(&second_region, &socket));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice-control"));
    cmd.arg("--config").arg(&second_cfg);
    let out = run_to_end("second", &mut cmd);
    assert!(is_exit_failure(out.status), "{}", out.status);
    assert!(!text(&out.stdout).contains(READY), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&socket.display().to_string()) && stderr.contains("already running"),
        "names the socket and why: {stderr}"
    );

    // The first still answers on its socket, which the second left alone.
    let rt = runtime();
    let region_on = |socket: &Path| {
        rt.block_on(async {
            let mut c = unix_client(socket).await;
            patiently("GetStatus", c.get_status(GetStatusRequest {}))
                .await
                .expect("GetStatus")
                .into_inner()
                .region
        })
    };
    assert_eq!(region_on(&socket), first_region);

    // Killed without a chance to clean up, the first leaves its socket behind: a stale file
    // that a new daemon replaces.
    first.kill();
    assert!(
        fs::symlink_metadata(&socket).is_ok(),
        "SIGKILL leaves the socket file"
    );
    let third_region = scratch.region();
    let third_cfg = scratch.write("third.toml", &control_config(&third_region, &socket));
    let (_third, _) = spawn_control("third", &third_cfg, &scratch.path("third.log"));
    assert_eq!(region_on(&socket), third_region);
}
