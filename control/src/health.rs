//! Active health checks of backends: one tokio task per (service, backend) [`Target`], the
//! rise/fall state machine ([`Tracker`]), and every state change reported as a
//! [`Transition`].
//!
//! # Contract
//!
//! - **State.** A target starts [`Health::Unknown`]. `rise` consecutive successful checks make
//!   it [`Health::Up`], `fall` consecutive failures [`Health::Down`]; from `Unknown` whichever
//!   count is reached first decides. A result resets the count of the other kind.
//! - **Reports.** Every change of state, the first one out of `Unknown` included, is written
//!   to the shared [`Statuses`] and then sent as one [`Transition`] on the channel given to
//!   [`Checker::new`], in order per target. A slow receiver holds back that target's checks
//!   (backpressure) rather than losing a transition; with the receiver gone, checks go on and
//!   [`Statuses`] stays current. [`Status::detail`] always describes the latest check.
//! - **Checks.** `tcp`: a connect within the timeout, then close. `http`: connect, send
//!   `GET {path} HTTP/1.1` with `Host`, `User-Agent: sluice-health/0.1` and
//!   `Connection: close`, and read the status line, all within the timeout; it succeeds when
//!   the code is in `expect`. Details read `ok: connected`, `ok: HTTP 200`,
//!   `connect: Connection refused`, `timeout after 500 ms`, `HTTP 503`, `HTTP: malformed status
//!   line "…"`.
//! - **Schedule.** A task checks once as soon as it starts, so a fresh start learns state
//!   quickly. The next check comes `interval + phase` later and then one every `interval`
//!   ([`MissedTickBehavior::Delay`]: a late check shifts the later ones instead of bunching
//!   them). `phase` is `xxh3(service, backend) mod interval/4`: deterministic, and it spreads
//!   the checks of many backends configured at once.
//! - **Reload.** [`Checker::set_targets`] keeps the task and state of every target that is
//!   equal to a running one, restarts (from `Unknown`) a target whose address or check
//!   changed, starts new ones and aborts removed ones. A replaced or removed task can no longer
//!   write a status or send a transition once `set_targets` returned: every write is checked
//!   against the task's generation under the [`watch`] channel's lock.
//! - **Time** comes from `tokio::time` only.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use xxhash_rust::xxh3::xxh3_64;

use crate::config::{Desired, HealthCheck, HealthKind};

/// The `User-Agent` of HTTP checks.
pub const USER_AGENT: &str = "sluice-health/0.1";

/// The longest status line an HTTP check reads before giving up on the response.
const MAX_STATUS_LINE: usize = 1024;

/// What is checked: one backend of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The service's name.
    pub service: String,
    /// The backend's name (unique in its service).
    pub backend: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// How to check.
    pub check: HealthCheck,
}

impl Target {
    /// The target's identity: `(service, backend)`.
    #[must_use]
    pub fn key(&self) -> TargetKey {
        (self.service.clone(), self.backend.clone())
    }
}

/// A target's identity: `(service, backend)`.
pub type TargetKey = (String, String);

/// Every running target's [`Status`], by [`TargetKey`].
pub type Statuses = BTreeMap<TargetKey, Status>;

/// The targets of every backend of every service in `desired` that has a `[services.health]`
/// check, in (service, backend) order. The port is
/// [`ServiceDef::health_port`](crate::config::ServiceDef::health_port).
#[must_use]
pub fn targets(desired: &Desired) -> Vec<Target> {
    let mut out = Vec::new();
    for (name, def) in &desired.services {
        let Some(check) = &def.health else {
            continue;
        };
        for b in &def.backends {
            out.push(Target {
                service: name.clone(),
                backend: b.name.clone(),
                addr: SocketAddr::new(b.addr, def.health_port(check, b)),
                check: check.clone(),
            });
        }
    }
    out
}

/// A target's health as the checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Not decided yet: fewer than `rise` successes and `fall` failures in a row so far.
    Unknown,
    /// `rise` consecutive checks succeeded.
    Up,
    /// `fall` consecutive checks failed.
    Down,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Down => "down",
        })
    }
}

/// One change of a target's [`Health`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The service's name.
    pub service: String,
    /// The backend's name.
    pub backend: String,
    /// The checked address.
    pub addr: SocketAddr,
    /// The state before.
    pub from: Health,
    /// The state now.
    pub to: Health,
    /// The result of the check that caused it, e.g. `ok: HTTP 200` or `HTTP 503`.
    pub detail: String,
}

/// A running target's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The checked address.
    pub addr: SocketAddr,
    /// The current state.
    pub health: Health,
    /// The result of the latest check (`not checked yet` before the first one).
    pub detail: String,
    /// When `health` last changed, or the target started.
    pub since: Instant,
    /// The task that owns this entry; only it may write here.
    generation: u64,
}

/// The rise/fall state machine of one target (see the module docs). Pure: feed it results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    health: Health,
    successes: u32,
    failures: u32,
    rise: u32,
    fall: u32,
}

// === impl Tracker ===

impl Tracker {
    /// A tracker in [`Health::Unknown`]; `rise` and `fall` below 1 count as 1.
    #[must_use]
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            health: Health::Unknown,
            successes: 0,
            failures: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// The current state.
    #[must_use]
    pub fn health(&self) -> Health {
        self.health
    }

    /// Records one check's result; returns `(from, to)` when the state changed.
    pub fn record(&mut self, ok: bool) -> Option<(Health, Health)> {
        let from = self.health;
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if from != Health::Up && self.successes >= self.rise {
                self.health = Health::Up;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if from != Health::Down && self.failures >= self.fall {
                self.health = Health::Down;
            }
        }
        (self.health != from).then_some((from, self.health))
    }
}

/// Runs the checks: one task per [`Target`], owned here; dropping the checker aborts them.
#[derive(Debug)]
pub struct Checker {
    runtime: Handle,
    events: mpsc::Sender<Transition>,
    statuses: watch::Sender<Statuses>,
    running: BTreeMap<TargetKey, Running>,
    generation: u64,
}

#[derive(Debug)]
struct Running {
    target: Target,
    task: JoinHandle<()>,
}

// === impl Checker ===

impl Checker {
    /// A checker with no targets that sends [`Transition`]s to `events`. Its tasks run on the
    /// current tokio runtime, whatever thread later calls [`Checker::set_targets`].
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    #[must_use]
    pub fn new(events: mpsc::Sender<Transition>) -> Self {
        Self {
            runtime: Handle::current(),
            events,
            statuses: watch::Sender::new(Statuses::new()),
            running: BTreeMap::new(),
            generation: 0,
        }
    }

    /// Makes `targets` the checked set: unchanged targets keep their task and state, changed
    /// ones restart from [`Health::Unknown`], new ones start, missing ones stop (and leave
    /// [`Statuses`]). Of two targets with one key, the later wins. No [`Transition`] is sent
    /// for a restart or removal.
    pub fn set_targets(&mut self, targets: Vec<Target>) {
        let mut want: BTreeMap<TargetKey, Target> =
            targets.into_iter().map(|t| (t.key(), t)).collect();
        self.running.retain(|key, r| {
            let keep = want.get(key) == Some(&r.target);
            if !keep {
                r.task.abort();
            }
            keep
        });
        want.retain(|key, _| !self.running.contains_key(key));
        let now = Instant::now();
        let mut starts = Vec::with_capacity(want.len());
        for (key, target) in want {
            self.generation += 1;
            starts.push((key, target, self.generation));
        }
        // Entries first, then tasks: a task only writes to an entry of its own generation.
        let running = &self.running;
        self.statuses.send_if_modified(|m| {
            let before = m.len();
            m.retain(|key, _| running.contains_key(key));
            let mut modified = m.len() != before;
            for (key, target, generation) in &starts {
                m.insert(
                    key.clone(),
                    Status {
                        addr: target.addr,
                        health: Health::Unknown,
                        detail: "not checked yet".to_owned(),
                        since: now,
                        generation: *generation,
                    },
                );
                modified = true;
            }
            modified
        });
        for (key, target, generation) in starts {
            let task = self.runtime.spawn(run(
                target.clone(),
                generation,
                self.statuses.clone(),
                self.events.clone(),
            ));
            self.running.insert(key, Running { target, task });
        }
    }

    /// The checked targets, by key.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.running.values().map(|r| &r.target)
    }

    /// A copy of every running target's status.
    #[must_use]
    pub fn statuses(&self) -> Statuses {
        self.statuses.borrow().clone()
    }

    /// The status of `backend` of `service`, if it is checked.
    #[must_use]
    pub fn status(&self, service: &str, backend: &str) -> Option<Status> {
        self.statuses
            .borrow()
            .get(&(service.to_owned(), backend.to_owned()))
            .cloned()
    }

    /// A receiver that sees [`Statuses`] whenever a state, a detail or the target set
    /// changes.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Statuses> {
        self.statuses.subscribe()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for r in self.running.values() {
            r.task.abort();
        }
    }
}

/// One target's task: check, record, report, wait; until aborted.
async fn run(
    target: Target,
    generation: u64,
    statuses: watch::Sender<Statuses>,
    events: mpsc::Sender<Transition>,
) {
    let key = target.key();
    let check = &target.check;
    let host = match &check.kind {
        HealthKind::Http { host: Some(h), .. } => h.clone(),
        _ => default_host(target.addr),
    };
    let mut tracker = Tracker::new(check.rise, check.fall);
    let mut ticks = None;
    loop {
        let (ok, detail) = match probe(target.addr, &check.kind, &host, check.timeout).await {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        let change = tracker.record(ok);
        // Wait for room before taking the lock, so the transition is sent under it.
        let permit = match change {
            Some(_) => events.reserve().await.ok(),
            None => None,
        };
        statuses.send_if_modified(|m| {
            let Some(s) = m.get_mut(&key).filter(|s| s.generation == generation) else {
                return false;
            };
            let mut modified = false;
            if s.detail != detail {
                s.detail.clone_from(&detail);
                modified = true;
            }
            if let Some((from, to)) = change {
                s.health = to;
                s.since = Instant::now();
                modified = true;
                if let Some(permit) = permit {
                    permit.send(Transition {
                        service: target.service.clone(),
                        backend: target.backend.clone(),
                        addr: target.addr,
                        from,
                        to,
                        detail: detail.clone(),
                    });
                }
            }
            modified
        });
        let ticks = ticks.get_or_insert_with(|| {
            let start = Instant::now() + check.interval + phase(&target);
            let mut t = tokio::time::interval_at(start, check.interval);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        ticks.tick().await;
    }
}

/// The target's deterministic offset in `[0, interval/4)`.
fn phase(target: &Target) -> Duration {
    let quarter = u64::try_from(target.check.interval.as_millis() / 4).unwrap_or(u64::MAX);
    if quarter == 0 {
        return Duration::ZERO;
    }
    let mut name = Vec::with_capacity(target.service.len() + target.backend.len() + 1);
    name.extend_from_slice(target.service.as_bytes());
    name.push(0);
    name.extend_from_slice(target.backend.as_bytes());
    Duration::from_millis(xxh3_64(&name) % quarter)
}

/// The default `Host` header: the address, with the port unless it is 80.
fn default_host(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    if addr.port() == 80 {
        ip
    } else {
        format!("{ip}:{}", addr.port())
    }
}

/// One check; `Ok` or `Err` with its detail.
async fn probe(
    addr: SocketAddr,
    kind: &HealthKind,
    host: &str,
    timeout: Duration,
) -> Result<String, String> {
    match tokio::time::timeout(timeout, probe_untimed(addr, kind, host)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timeout after {} ms", timeout.as_millis())),
    }
}

async fn probe_untimed(addr: SocketAddr, kind: &HealthKind, host: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {}", io_detail(&e)))?;
    let HealthKind::Http { path, expect, .. } = kind else {
        return Ok("ok: connected".to_owned());
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {}", io_detail(&e)))?;
    let line = read_status_line(&mut stream).await?;
    let code = parse_status_line(&line)?;
    status_verdict(code, expect)
}

fn status_verdict(code: u16, expect: &RangeInclusive<u16>) -> Result<String, String> {
    if expect.contains(&code) {
        Ok(format!("ok: HTTP {code}"))
    } else {
        Err(format!("HTTP {code}"))
    }
}

/// Reads up to the first `\n` (at most [`MAX_STATUS_LINE`] bytes); returns the line without
/// its `\r\n`.
async fn read_status_line(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut line = Vec::with_capacity(128);
    let mut buf = [0u8; 512];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("receive: {}", io_detail(&e)))?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            return Err(if line.is_empty() {
                "HTTP: connection closed without a response".to_owned()
            } else {
                format!(
                    "HTTP: connection closed in the status line {}",
                    excerpt(&line)
                )
            });
        };
        if let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(chunk.get(..end).unwrap_or_default());
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(line);
        }
        line.extend_from_slice(chunk);
        if line.len() > MAX_STATUS_LINE {
            return Err(format!(
                "HTTP: no status line in the first {MAX_STATUS_LINE} bytes"
            ));
        }
    }
}

/// The code of `HTTP/x.y NNN[ reason]`.
fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let malformed = || format!("HTTP: malformed status line {}", excerpt(line));
    let rest = line.strip_prefix(b"HTTP/").ok_or_else(malformed)?;
    let [major, b'.', minor, b' ', rest @ ..] = rest else {
        return Err(malformed());
    };
    if !major.is_ascii_digit() || !minor.is_ascii_digit() {
        return Err(malformed());
    }
    let (code, reason) = rest.split_at_checked(3).ok_or_else(malformed)?;
    if !code.iter().all(u8::is_ascii_digit) || reason.first().is_some_and(|&b| b != b' ') {
        return Err(malformed());
    }
    let code = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&code) {
        return Err(malformed());
    }
    Ok(code)
}

/// Up to 64 bytes of `bytes`, quoted and escaped for a detail string.
fn excerpt(bytes: &[u8]) -> String {
    let cut = bytes.get(..64).unwrap_or(bytes);
    let text = String::from_utf8_lossy(cut);
    if cut.len() < bytes.len() {
        format!("{text:?}…")
    } else {
        format!("{text:?}")
    }
}

/// The error's message without the ` (os error N)` suffix: `Connection refused`.
fn io_detail(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_owned(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_rises_and_falls_on_consecutive_results() {
        let mut t = Tracker::new(2, 3);
        assert_eq!(t.health(), Health::Unknown);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some((Health::Unknown, Health::Up)));
        assert_eq!(t.record(true), None);
        // Interrupted failures never reach `fall`.
        for _ in 0..5 {
            assert_eq!(t.record(false), None);
            assert_eq!(t.record(false), None);
            assert_eq!(t.record(true), None);
        }
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some((Health::Up, Health::Down)));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some((Health::Down, Health::Up)));
    }

    #[test]
    fn from_unknown_the_first_count_reached_decides() {
        let mut t = Tracker::new(3, 1);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), Some((Health::Unknown, Health::Down)));
        let mut t = Tracker::new(1, 1);
        assert_eq!(t.record(true), Some((Health::Unknown, Health::Up)));
        assert_eq!(t.record(false), Some((Health::Up, Health::Down)));
        // Alternating results never decide with rise = fall = 2.
        let mut t = Tracker::new(2, 2);
        for i in 0..10 {
            assert_eq!(t.record(i % 2 == 0), None);
        }
        assert_eq!(t.health(), Health::Unknown);
        // Zero counts as one.
        assert_eq!(
            Tracker::new(0, 0).record(false),
            Some((Health::Unknown, Health::Down))
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Ok(503));
        assert_eq!(parse_status_line(b"HTTP/1.1 404 Not Found Here"), Ok(404));
        for bad in [
            &b""[..],
            b"garbage",
            b"HTTP/1.1",
            b"HTTP/1.1 ",
            b"HTTP/1.1 20",
            b"HTTP/1.1 2000",
            b"HTTP/1.1 20x OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/11 200 OK",
            b"HTTP/1.1 099 Low",
            b"HTTP/1.1 600 High",
            b"http/1.1 200 OK",
            b"\xff\xfe",
        ] {
            let e = parse_status_line(bad).unwrap_err();
            assert!(e.starts_with("HTTP: malformed status line \""), "{e}");
        }
        let long = [b'x'; 100];
        let e = parse_status_line(&long).unwrap_err();
        assert!(e.ends_with("\"…"), "{e}");
        assert_eq!(status_verdict(200, &(200..=399)), Ok("ok: HTTP 200".into()));
        assert_eq!(status_verdict(399, &(200..=399)), Ok("ok: HTTP 399".into()));
        assert_eq!(status_verdict(503, &(200..=399)), Err("HTTP 503".into()));
        assert_eq!(status_verdict(199, &(200..=200)), Err("HTTP 199".into()));
    }

    #[test]
    fn hosts_phases_and_io_details() {
        assert_eq!(
            default_host("10.0.0.1:8080".parse().unwrap()),
            "10.0.0.1:8080"
        );
        assert_eq!(default_host("10.0.0.1:80".parse().unwrap()), "10.0.0.1");
        assert_eq!(
            default_host("[fd90::11]:8080".parse().unwrap()),
            "[fd90::11]:8080"
        );
        assert_eq!(default_host("[fd90::11]:80".parse().unwrap()), "[fd90::11]");

        let t = |service: &str, backend: &str, ms: u64| Target {
            service: service.into(),
            backend: backend.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            check: HealthCheck {
                kind: HealthKind::Tcp,
                port: None,
                interval: Duration::from_millis(ms),
                timeout: Duration::from_millis(10),
                rise: 1,
                fall: 1,
            },
        };
        let a = phase(&t("web", "b1", 1000));
        assert_eq!(a, phase(&t("web", "b1", 1000)), "deterministic");
        assert!(a < Duration::from_millis(250));
        let spread: std::collections::BTreeSet<Duration> = (0..20)
            .map(|i| phase(&t("web", &format!("b{i}"), 1000)))
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
        // "ab"/"c" and "a"/"bc" are different targets.
        assert_ne!(
            phase(&t("ab", "c", 3_600_000)),
            phase(&t("a", "bc", 3_600_000))
        );
        assert_eq!(phase(&t("web", "b1", 3)), Duration::ZERO);

        let refused = io::Error::from_raw_os_error(111);
        assert!(refused.to_string().contains("(os error 111)"));
        assert_eq!(io_detail(&refused), "Connection refused");
        assert_eq!(io_detail(&io::Error::other("plain")), "plain");
    }
}
