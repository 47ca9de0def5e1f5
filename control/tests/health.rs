//! Active health checks against real TCP listeners on 127.0.0.1.
//!
//! Checks run every 50 ms, but nothing here asserts on wall-clock timing: each test waits (up
//! to [`WAIT`]) for the transition it expects and skips any other, so a loaded machine only
//! makes the tests slower.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_control::config::{Config, HealthCheck, HealthKind};
use sluice_control::health::{self, Checker, Health, Status, Target, Transition};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a test waits for one expected transition.
const WAIT: Duration = Duration::from_secs(10);

fn tcp(rise: u32, fall: u32) -> HealthCheck {
    HealthCheck {
        kind: HealthKind::Tcp,
        port: None,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(40),
        rise,
        fall,
    }
}

fn http(rise: u32, fall: u32) -> HealthCheck {
    HealthCheck {
        kind: HealthKind::Http {
            path: "/healthz".into(),
            host: None,
            expect: 200..=399,
        },
        ..tcp(rise, fall)
    }
}

fn target(backend: &str, addr: SocketAddr, check: HealthCheck) -> Target {
    Target {
        service: "web".into(),
        backend: backend.into(),
        addr,
        check,
    }
}

/// Waits for the next transition of `backend` to `to`, dropping any other (so only for tests
/// that wait on one target at a time).
async fn wait_for(rx: &mut mpsc::Receiver<Transition>, backend: &str, to: Health) -> Transition {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let t = rx.recv().await.expect("checker alive");
            if t.backend == backend && t.to == to {
                return t;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{backend}: no transition to {to} within {WAIT:?}"))
}

/// A listener that accepts and counts connections, then runs `serve` on each.
async fn listener<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(s));
        }
    });
    (addr, accepted, task)
}

/// Accepts and closes.
async fn accept_only() -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    listener(|s| async move { drop(s) }).await
}

/// Reads the request head, then writes `response` and closes.
async fn answering(response: &'static str) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    listener(move |mut s| async move {
        let _ = read_head(&mut s).await;
        let _ = s.write_all(response.as_bytes()).await;
    })
    .await
}

async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

/// An address nothing listens on (bound, then closed).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

fn status(c: &Checker, backend: &str) -> Status {
    c.status("web", backend).expect("checked")
}

/// Waits until `backend`'s status has `health` and `detail`. (Details are checked here rather
/// than on transitions: under load, a check may time out before the expected answer arrives.)
async fn wait_status(c: &Checker, backend: &str, health: Health, detail: &str) {
    let key = ("web".to_owned(), backend.to_owned());
    let mut watch = c.subscribe();
    let found = tokio::time::timeout(
        WAIT,
        watch.wait_for(|m| {
            m.get(&key)
                .is_some_and(|s| s.health == health && s.detail == detail)
        }),
    )
    .await;
    assert!(
        matches!(found, Ok(Ok(_))),
        "{backend}: never {health} with {detail:?}; now {:?}",
        c.status("web", backend)
    );
}

/// Collects the first transition of each of `backends`, in any order.
async fn first_transitions(
    rx: &mut mpsc::Receiver<Transition>,
    backends: &[&str],
) -> std::collections::BTreeMap<String, (Health, Health)> {
    let mut seen = std::collections::BTreeMap::new();
    let done = tokio::time::timeout(WAIT, async {
        while seen.len() < backends.len() {
            let t = rx.recv().await.expect("checker alive");
            seen.entry(t.backend.clone()).or_insert((t.from, t.to));
        }
    })
    .await;
    assert!(done.is_ok(), "not every target decided: {seen:?}");
    seen
}

#[tokio::test]
async fn tcp_backend_comes_up_then_goes_down_when_its_listener_closes() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut c = Checker::new(tx);
    let (addr, accepted, server) = accept_only().await;
    c.set_targets(vec![target("b1", addr, tcp(3, 3))]);
    assert_eq!(status(&c, "b1").health, Health::Unknown);
    assert_eq!(status(&c, "b1").detail, "not checked yet");

    // Three failures in a row against a listening socket would take a badly overloaded host.
    let up = wait_for(&mut rx, "b1", Health::Up).await;
    assert_eq!(
        up,
        Transition {
            service: "web".into(),
            backend: "b1".into(),
            addr,
            from: Health::Unknown,
            to: Health::Up,
            detail: "ok: connected".into(),
        }
    );
    assert!(accepted.load(Ordering::Relaxed) >= 3, "rise = 3 checks");
    assert_eq!(status(&c, "b1").health, Health::Up);

    // Closing the listener refuses connections: Down after `fall` of them.
    server.abort();
    let _ = server.await;
    let down = wait_for(&mut rx, "b1", Health::Down).await;
    assert_eq!(down.from, Health::Up);
    wait_status(&c, "b1", Health::Down, "connect: Connection refused").await;
}

#[tokio::test]
async fn a_refused_backend_goes_down_from_unknown() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut c = Checker::new(tx);
    let addr = closed_port().await;
    c.set_targets(vec![target("gone", addr, tcp(100, 2))]);
    let t = wait_for(&mut rx, "gone", Health::Down).await;
    assert_eq!(t.from, Health::Unknown);
    wait_status(&c, "gone", Health::Down, "connect: Connection refused").await;
}

#[tokio::test]
async fn http_checks_read_the_status_line() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut c = Checker::new(tx);
    let (ok, _, _s1) = answering("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let (redirect, _, _s2) = answering("HTTP/1.0 302 Found\r\nLocation: /\r\n\r\n").await;
    let (unavailable, _, _s3) = answering("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
    let (garbage, _, _s4) = answering("garbage\r\n\r\n").await;
    let (silent_close, _, _s5) = answering("").await;
    c.set_targets(vec![
        target("ok", ok, http(2, 100)),
        target("redirect", redirect, http(2, 100)),
        target("unavailable", unavailable, http(100, 2)),
        target("garbage", garbage, http(100, 2)),
        target("closed", silent_close, http(100, 2)),
    ]);
    // `rise` or `fall` is out of reach for each, so its first transition is the expected one.
    let seen = first_transitions(
        &mut rx,
        &["ok", "redirect", "unavailable", "garbage", "closed"],
    )
    .await;
    for (backend, to, detail) in [
        ("ok", Health::Up, "ok: HTTP 200"),
        ("redirect", Health::Up, "ok: HTTP 302"),
        ("unavailable", Health::Down, "HTTP 503"),
        (
            "garbage",
            Health::Down,
            "HTTP: malformed status line \"garbage\"",
        ),
        (
            "closed",
            Health::Down,
            "HTTP: connection closed without a response",
        ),
    ] {
        assert_eq!(seen[backend], (Health::Unknown, to), "{backend}");
        wait_status(&c, backend, to, detail).await;
    }
}

#[tokio::test]
async fn http_request_is_a_closing_get_with_host_and_user_agent() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut c = Checker::new(tx);
    let (head_tx, mut heads) = mpsc::unbounded_channel::<Vec<u8>>();
    let (addr, _, _server) = listener(move |mut s| {
        let head_tx = head_tx.clone();
        async move {
            let head = read_head(&mut s).await;
            let _ = head_tx.send(head);
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        }
    })
    .await;
    let mut custom = http(1, 100);
    custom.kind = HealthKind::Http {
        path: "/ready?full=1".into(),
        host: Some("web.example".into()),
        expect: 204..=204,
    };
    c.set_targets(vec![
        target("default", addr, http(1, 100)),
        target("custom", addr, custom),
    ]);
    let seen = first_transitions(&mut rx, &["default", "custom"]).await;
    assert!(
        seen.values().all(|&t| t == (Health::Unknown, Health::Up)),
        "{seen:?}"
    );
    let mut want = vec![
        format!(
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: sluice-health/0.1\r\nConnection: close\r\n\r\n",
            addr.port()
        ),
        "GET /ready?full=1 HTTP/1.1\r\nHost: web.example\r\nUser-Agent: sluice-health/0.1\r\nConnection: close\r\n\r\n".to_owned(),
    ];
    // Both request shapes arrive (in any order, among repeats).
    tokio::time::timeout(WAIT, async {
        while !want.is_empty() {
            let head = String::from_utf8(heads.recv().await.expect("server alive")).expect("utf8");
            want.retain(|w| *w != head);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("requests not seen: {want:?}"));
}

#[tokio::test]
async fn a_silent_backend_times_out() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut c = Checker::new(tx);
    // Accepts, reads, never answers; keeps the connection open until the checker gives up.
    let (addr, _, _server) = listener(|mut s| async move {
        let mut buf = [0u8; 256];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    c.set_targets(vec![target("mute", addr, http(100, 2))]);
    let t = wait_for(&mut rx, "mute", Health::Down).await;
    assert_eq!(
        (t.from, t.detail.as_str()),
        (Health::Unknown, "timeout after 40 ms")
    );
    assert_eq!(status(&c, "mute").detail, "timeout after 40 ms");
}

#[tokio::test]
async fn set_targets_keeps_unchanged_restarts_changed_and_stops_removed() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut c = Checker::new(tx);
    let (a, _, _sa) = accept_only().await;
    let (b, b_accepted, _sb) = accept_only().await;
    let (d, _, _sd) = accept_only().await;
    let mut watch = c.subscribe();
    c.set_targets(vec![
        target("keep", a, tcp(1, 100)),
        target("remove", b, tcp(1, 100)),
        target("change", d, tcp(1, 100)),
    ]);
    let seen = first_transitions(&mut rx, &["keep", "remove", "change"]).await;
    assert!(
        seen.values().all(|&t| t == (Health::Unknown, Health::Up)),
        "{seen:?}"
    );
    let kept = status(&c, "keep");
    assert_eq!(kept.health, Health::Up);

    // Reload: "keep" is equal, "change" has a new check, "remove" is gone, "new" arrives.
    let (n, _, _sn) = accept_only().await;
    c.set_targets(vec![
        target("change", d, tcp(2, 100)),
        target("keep", a, tcp(1, 100)),
        target("new", n, tcp(1, 100)),
    ]);
    let now = c.statuses();
    let keys: Vec<&str> = now.keys().map(|(_, b)| b.as_str()).collect();
    assert_eq!(keys, ["change", "keep", "new"]);
    let same = |s: &Status| (s.health, s.since, s.addr);
    assert_eq!(
        same(&now[&("web".into(), "keep".into())]),
        same(&kept),
        "state kept"
    );
    assert_eq!(status(&c, "change").health, Health::Unknown, "restarted");
    assert_eq!(status(&c, "new").health, Health::Unknown);
    assert!(watch.has_changed().expect("sender alive"));
    watch.mark_unchanged();
    let targets: Vec<&str> = c.targets().map(|t| t.backend.as_str()).collect();
    assert_eq!(targets, ["change", "keep", "new"]);

    // The restarted and the new target report again from Unknown; "keep" never does.
    let mut pending = vec!["change", "new"];
    tokio::time::timeout(WAIT, async {
        while !pending.is_empty() {
            let t = rx.recv().await.expect("checker alive");
            assert_ne!(t.backend, "keep", "unchanged target restarted: {t:?}");
            assert_ne!(t.backend, "remove", "removed target still reports: {t:?}");
            assert_eq!((t.from, t.to), (Health::Unknown, Health::Up), "{t:?}");
            pending.retain(|p| *p != t.backend);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no Up from {pending:?}"));
    assert_eq!(same(&status(&c, "keep")), same(&kept));
    assert!(c.status("web", "remove").is_none());

    // The removed target's task is gone: its listener stops seeing connections. (A connect
    // already under way when it was aborted may still land, so wait for the count to settle.)
    let mut settled = false;
    for _ in 0..20 {
        let before = b_accepted.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if b_accepted.load(Ordering::Relaxed) == before {
            settled = true;
            break;
        }
    }
    assert!(settled, "the removed target is still being checked");

    // An empty set stops everything.
    c.set_targets(Vec::new());
    assert!(c.statuses().is_empty());
    assert!(watch.has_changed().expect("sender alive"));
}

#[tokio::test]
async fn dropping_the_receiver_does_not_stop_the_checks() {
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let mut c = Checker::new(tx);
    let (addr, _, _s) = accept_only().await;
    c.set_targets(vec![target("b1", addr, tcp(1, 1))]);
    let mut watch = c.subscribe();
    tokio::time::timeout(
        WAIT,
        watch.wait_for(|m| m.values().all(|s| s.health == Health::Up)),
    )
    .await
    .expect("comes up without a receiver")
    .expect("sender alive");
}

#[tokio::test]
async fn targets_come_from_the_config() {
    let text = include_str!("../examples/sluice.toml").replacen(
        "mac = \"02:90:00:00:00:0c\"",
        "mac = \"02:90:00:00:00:0c\"\nport = 9090",
        1,
    );
    let desired = Config::parse(&text, "sluice.toml").expect("valid");
    let ts = health::targets(&desired);
    let got: Vec<(&str, &str, SocketAddr)> = ts
        .iter()
        .map(|t| (t.service.as_str(), t.backend.as_str(), t.addr))
        .collect();
    assert_eq!(
        got,
        [
            ("web", "b1", "10.90.0.11:8080".parse().unwrap()),
            ("web", "b2", "10.90.0.12:9090".parse().unwrap()),
            ("web", "b3", "10.90.0.13:8080".parse().unwrap()),
        ]
    );
    assert!(
        ts.iter()
            .all(|t| Some(&t.check) == desired.services["web"].health.as_ref())
    );
    // A service without a health table has no targets.
    let start = text.find("[services.health]").unwrap();
    let end = text[start..].find("\n\n").map_or(text.len(), |n| start + n);
    let mut none = text.clone();
    none.replace_range(start..end, "");
    assert!(health::targets(&Config::parse(&none, "x").expect("valid")).is_empty());
}
