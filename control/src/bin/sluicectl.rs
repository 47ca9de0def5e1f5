//! `sluicectl`: the command-line client of sluice-control's gRPC API (`sluice.v1.Control`).
//!
//! Talks to the daemon over its Unix socket (`--socket`, env `SLUICE_SOCKET`, default
//! `/run/sluice/control.sock`) or over TCP with TLS (`--endpoint https://HOST:PORT --ca FILE`,
//! optionally `--cert FILE --key FILE` and `--tls-domain NAME`). Output is aligned tables for
//! people (`-o table`, the default) or JSON for scripts (`-o json`: one document per command;
//! `events` writes one object per line, so `events --follow` streams NDJSON).
//!
//! JSON keeps the proto's field names (snake_case); enums are lowercase strings without their
//! prefix (`"state": "draining"`), addresses are strings, counters are numbers.
//!
//! Exit codes: 0 success, 1 the call failed (the gRPC status is printed), 2 usage (clap),
//! 3 cannot connect.

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use sluice_control::client::{ClientError, DEFAULT_SOCKET, Target, connect};
use sluice_proto::v1::control_client::ControlClient;
use sluice_proto::v1::{
    Backend, BackendState, Counters, DrainNodeRequest, DrainNodeResponse, DrainRequest, Event,
    EventKind, GetServiceRequest, GetStatusRequest, Health, ListPeersRequest, ListServicesRequest,
    Mode, Peer, PeerState, Protocol, Reload, Service, SetWeightRequest, Status, UndrainRequest,
    WatchEventsRequest, Worker,
};
use tonic::Code;
use tonic::transport::Channel;

/// Exit code when the call reached the daemon and failed, or the output could not be written.
const EXIT_FAILED: u8 = 1;
/// Exit code when no connection could be made (clap uses 2 for usage errors).
const EXIT_CONNECT: u8 = 3;

/// Control a running sluice-control daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Opt {
    /// The daemon's API socket [env: SLUICE_SOCKET] [default: /run/sluice/control.sock].
    /// Ignored with --endpoint.
    // Read by hand (`socket_path`): the workspace builds clap without its `env` feature.
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Connect over TCP with TLS instead: https://HOST:PORT (needs --ca).
    #[arg(long, global = true, value_name = "URL", requires = "ca")]
    endpoint: Option<String>,
    /// CA certificate (PEM) that signed the daemon's certificate.
    #[arg(long, global = true, value_name = "FILE", requires = "endpoint")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), when the daemon asks for one (needs --key).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires_all = ["endpoint", "key"]
    )]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires_all = ["endpoint", "cert"]
    )]
    key: Option<PathBuf>,
    /// Name to check the daemon's certificate against (default: the endpoint's host).
    #[arg(long, global = true, value_name = "NAME", requires = "endpoint")]
    tls_domain: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Seconds to wait for the connection and for each answer (0: wait forever).
    #[arg(long, global = true, default_value_t = 10, value_name = "SECS")]
    timeout: u64,
    #[command(subcommand)]
    command: Cmd,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts (events: one object per line).
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The daemon and the dataplane workers: generation, heartbeats, conntrack, last reload.
    Status,
    /// Every running service, with traffic counters.
    Services,
    /// One service's backends: weight, state, health, table share, counters.
    Backends {
        /// The service's name.
        service: String,
    },
    /// Stop new flows to a backend; established flows stay on it.
    Drain {
        /// The service's name.
        service: String,
        /// The backend's name.
        backend: String,
    },
    /// Let a drained backend take new flows again.
    Undrain {
        /// The service's name.
        service: String,
        /// The backend's name.
        backend: String,
    },
    /// Override a backend's weight (survives reloads; 0 is refused, use drain).
    Weight {
        /// The service's name.
        service: String,
        /// The backend's name.
        backend: String,
        /// The new weight, 1 or more.
        weight: u32,
    },
    /// The BGP sessions: state, uptime, updates, prefixes announced.
    Peers,
    /// Drain this LB node from the routers: every VIP re-announced with GRACEFUL_SHUTDOWN
    /// (RFC 8326), then withdrawn; the dataplane keeps forwarding what still arrives.
    DrainNode,
    /// Announce this LB node's VIPs again after drain-node.
    UndrainNode,
    /// Recent events, and with --follow every new one until the stream ends or Ctrl-C.
    Events {
        /// Keep printing new events as they happen.
        #[arg(short, long)]
        follow: bool,
        /// How many past events to print first (the daemon keeps the last 1024).
        #[arg(long, default_value_t = 50, value_name = "N")]
        backlog: u32,
    },
}

// === impl Opt ===

impl Opt {
    /// The socket: `--socket`, else `SLUICE_SOCKET` (`env`, when set and not empty), else
    /// [`DEFAULT_SOCKET`].
    fn socket_path(&self, env: Option<OsString>) -> PathBuf {
        self.socket
            .clone()
            .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// Where to connect; `--endpoint` wins over `--socket`. `env` is `SLUICE_SOCKET`'s value.
    fn target(&self, env: Option<OsString>) -> Target {
        match &self.endpoint {
            None => Target::Unix(self.socket_path(env)),
            Some(url) => Target::Tls {
                url: url.clone(),
                // clap's `requires = "ca"` on --endpoint guarantees it.
                ca: self.ca.clone().unwrap_or_default(),
                identity: self.cert.clone().zip(self.key.clone()),
                domain: self.tls_domain.clone(),
            },
        }
    }

    /// The per-answer deadline; `None` for `--timeout 0`.
    fn deadline(&self) -> Option<Duration> {
        (self.timeout > 0).then(|| Duration::from_secs(self.timeout))
    }
}

/// Why a command failed; each kind has its exit code.
#[derive(Debug)]
enum CtlError {
    /// No connection could be made (exit 3). `hint` says what to check.
    Connect { error: String, hint: Option<String> },
    /// The daemon answered with an error (exit 1).
    Call(tonic::Status),
    /// No answer within `--timeout` (exit 1).
    Timeout(Duration),
    /// Writing the output failed (exit 1).
    Output(io::Error),
}

// === impl CtlError ===

impl CtlError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Connect { .. } => EXIT_CONNECT,
            Self::Call(_) | Self::Timeout(_) | Self::Output(_) => EXIT_FAILED,
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect { error, hint } => {
                f.write_str(error)?;
                if let Some(h) = hint {
                    write!(f, "\n{h}")?;
                }
                Ok(())
            }
            Self::Call(s) => f.write_str(&status_message(s)),
            Self::Timeout(d) => write!(f, "deadline exceeded: no answer within {}s", d.as_secs()),
            Self::Output(e) => write!(f, "writing output: {e}"),
        }
    }
}

impl From<tonic::Status> for CtlError {
    fn from(s: tonic::Status) -> Self {
        Self::Call(s)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let opt = Opt::parse();
    match run(&opt).await {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`sluicectl events -f | head`) is not a failure.
        Err(CtlError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("sluicectl: {line}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs `fut` under the deadline (none when `None`).
async fn within<T>(
    deadline: Option<Duration>,
    fut: impl Future<Output = Result<T, CtlError>>,
) -> Result<T, CtlError> {
    match deadline {
        None => fut.await,
        Some(d) => tokio::time::timeout(d, fut)
            .await
            .map_err(|_| CtlError::Timeout(d))?,
    }
}

async fn open(opt: &Opt) -> Result<ControlClient<Channel>, CtlError> {
    let target = opt.target(std::env::var_os("SLUICE_SOCKET"));
    let hint = connect_hint(&target);
    let connecting = async {
        connect(&target).await.map_err(|e| CtlError::Connect {
            hint: matches!(e, ClientError::Connect { .. }).then(|| hint.clone()),
            error: e.to_string(),
        })
    };
    match within(opt.deadline(), connecting).await {
        Err(CtlError::Timeout(d)) => Err(CtlError::Connect {
            error: format!(
                "cannot connect to {}: no answer within {}s",
                target_name(&target),
                d.as_secs()
            ),
            hint: Some(hint),
        }),
        r => r,
    }
}

async fn run(opt: &Opt) -> Result<(), CtlError> {
    let mut client = open(opt).await?;
    let deadline = opt.deadline();
    let json = opt.output == Output::Json;
    match &opt.command {
        Cmd::Status => {
            let s = within(deadline, async {
                Ok(client.get_status(GetStatusRequest {}).await?.into_inner())
            })
            .await?;
            if json {
                out(&document(&status_json(&s)))
            } else {
                out(&status_table(&s, now_ms()))
            }
        }
        Cmd::Services => {
            let r = within(deadline, async {
                Ok(client
                    .list_services(ListServicesRequest {})
                    .await?
                    .into_inner())
            })
            .await?;
            if json {
                let services: Vec<Value> = r.services.iter().map(service_json).collect();
                out(&document(&json!({ "services": services })))
            } else {
                out(&services_table(&r.services))
            }
        }
        Cmd::Backends { service } => {
            let name = service.clone();
            let s = within(deadline, async {
                Ok(client
                    .get_service(GetServiceRequest { name })
                    .await?
                    .into_inner())
            })
            .await?;
            if json {
                out(&document(&service_json(&s)))
            } else {
                out(&backends_table(&s))
            }
        }
        Cmd::Drain { service, backend } => {
            let req = DrainRequest {
                service: service.clone(),
                backend: backend.clone(),
            };
            let b = within(deadline, async {
                Ok(client.drain(req).await?.into_inner())
            })
            .await?;
            print_change(&mut client, deadline, json, &b).await
        }
        Cmd::Undrain { service, backend } => {
            let req = UndrainRequest {
                service: service.clone(),
                backend: backend.clone(),
            };
            let b = within(deadline, async {
                Ok(client.undrain(req).await?.into_inner())
            })
            .await?;
            print_change(&mut client, deadline, json, &b).await
        }
        Cmd::Weight {
            service,
            backend,
            weight,
        } => {
            let req = SetWeightRequest {
                service: service.clone(),
                backend: backend.clone(),
                weight: *weight,
            };
            let b = within(deadline, async {
                Ok(client.set_weight(req).await?.into_inner())
            })
            .await?;
            print_change(&mut client, deadline, json, &b).await
        }
        Cmd::Peers => {
            let r = within(deadline, async {
                Ok(client.list_peers(ListPeersRequest {}).await?.into_inner())
            })
            .await?;
            if json {
                let peers: Vec<Value> = r.peers.iter().map(peer_json).collect();
                out(&document(&json!({ "peers": peers })))
            } else {
                out(&peers_table(&r.peers))
            }
        }
        Cmd::DrainNode | Cmd::UndrainNode => {
            let undrain = matches!(opt.command, Cmd::UndrainNode);
            let r = within(deadline, async {
                Ok(client
                    .drain_node(DrainNodeRequest { undrain })
                    .await?
                    .into_inner())
            })
            .await?;
            if json {
                out(&document(&drain_node_json(&r)))
            } else {
                let state = if r.drained { "drained" } else { "undrained" };
                out(&format!("node {state}: {}\n", r.message))
            }
        }
        Cmd::Events { follow, backlog } => {
            let req = WatchEventsRequest {
                follow: *follow,
                backlog: *backlog,
            };
            events(&mut client, deadline, json, req).await
        }
    }
}

/// Prints the backlog and, when following, every new event until the stream ends or Ctrl-C.
async fn events(
    client: &mut ControlClient<Channel>,
    deadline: Option<Duration>,
    json: bool,
    req: WatchEventsRequest,
) -> Result<(), CtlError> {
    let print = |e: &Event| {
        if json {
            out(&document(&event_json(e)))
        } else {
            out(&format!("{}\n", event_line(e)))
        }
    };
    if !req.follow {
        return within(deadline, async {
            let mut stream = client.watch_events(req).await?.into_inner();
            while let Some(e) = stream.message().await? {
                print(&e)?;
            }
            Ok(())
        })
        .await;
    }
    // The deadline covers the start of the stream only: following waits forever.
    let mut stream = within(deadline, async {
        Ok(client.watch_events(req).await?.into_inner())
    })
    .await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            m = stream.message() => match m? {
                Some(e) => print(&e)?,
                None => return Ok(()),
            },
            _ = &mut ctrl_c => return Ok(()),
        }
    }
}

/// Prints the backend a drain/undrain/weight call returned. The table line names the
/// generation the daemon runs after the change (the reply comes after the change was
/// published); it is left out when that second call fails, since the change itself succeeded.
async fn print_change(
    client: &mut ControlClient<Channel>,
    deadline: Option<Duration>,
    json: bool,
    b: &Backend,
) -> Result<(), CtlError> {
    if json {
        return out(&document(&backend_json(b)));
    }
    let generation = within(deadline, async {
        Ok(client.get_status(GetStatusRequest {}).await?.into_inner())
    })
    .await
    .ok()
    .map(|s| s.generation);
    out(&format!("{}\n", backend_line(b, generation)))
}

/// Writes to stdout (line-buffered), flushing so that followed events show at once.
fn out(s: &str) -> Result<(), CtlError> {
    let mut o = io::stdout().lock();
    o.write_all(s.as_bytes())
        .and_then(|()| o.flush())
        .map_err(CtlError::Output)
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn target_name(t: &Target) -> String {
    match t {
        Target::Unix(p) => format!("unix:{}", p.display()),
        Target::Tls { url, .. } => url.clone(),
    }
}

/// What to check when the daemon cannot be reached.
fn connect_hint(t: &Target) -> String {
    match t {
        Target::Unix(p) => format!("is sluice-control running? socket: {}", p.display()),
        Target::Tls { url, .. } => {
            format!(
                "is sluice-control listening there ([api] listen), with a certificate signed by \
                 --ca for this name (--tls-domain)? endpoint: {url}"
            )
        }
    }
}

// === formatting: errors ===

/// A gRPC status code in lowercase words ("not found").
fn code_words(c: Code) -> &'static str {
    match c {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// `not found: no service named "x"`.
fn status_message(s: &tonic::Status) -> String {
    let code = code_words(s.code());
    let mut out = if s.message().is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {}", s.message())
    };
    // Transport failures (a refused TLS handshake, say) keep their reason in the source chain.
    if let Some(src) = std::error::Error::source(s) {
        let why = sluice_control::client::chain(src);
        if !out.contains(&why) {
            out.push_str(": ");
            out.push_str(&why);
        }
    }
    out
}

// === formatting: values ===

/// An enum's proto name without its prefix, lowercased; `unknown(N)` for a value this client
/// does not know (a newer daemon).
fn enum_name(name: Option<&'static str>, prefix: &str, value: i32) -> String {
    match name {
        Some(n) => n.strip_prefix(prefix).unwrap_or(n).to_ascii_lowercase(),
        None => format!("unknown({value})"),
    }
}

fn protocol_name(v: i32) -> String {
    let n = Protocol::try_from(v).ok().map(|p| p.as_str_name());
    enum_name(n, "PROTOCOL_", v)
}

fn mode_name(v: i32) -> String {
    let n = Mode::try_from(v).ok().map(|m| m.as_str_name());
    enum_name(n, "MODE_", v)
}

fn state_name(v: i32) -> String {
    let n = BackendState::try_from(v).ok().map(|s| s.as_str_name());
    enum_name(n, "BACKEND_STATE_", v)
}

fn health_name(v: i32) -> String {
    let n = Health::try_from(v).ok().map(|h| h.as_str_name());
    enum_name(n, "HEALTH_", v)
}

fn kind_name(v: i32) -> String {
    let n = EventKind::try_from(v).ok().map(|k| k.as_str_name());
    enum_name(n, "EVENT_KIND_", v)
}

/// `10.0.0.1:80`, `[fd90::100]:8080`.
fn host_port(host: &str, port: u32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A backend's address, with `:port` only when it rewrites the port.
fn backend_address(b: &Backend) -> String {
    if b.port == 0 {
        b.address.clone()
    } else {
        host_port(&b.address, b.port)
    }
}

/// `3`, or `3 (config 1)` when a runtime override differs from the config.
fn weight_text(b: &Backend) -> String {
    if b.weight == b.configured_weight {
        b.weight.to_string()
    } else {
        format!("{} (config {})", b.weight, b.configured_weight)
    }
}

/// `up`, `down (connect refused)`.
fn health_text(b: &Backend) -> String {
    let h = health_name(b.health);
    if b.health_detail.is_empty() {
        h
    } else {
        format!("{h} ({})", b.health_detail)
    }
}

/// A 0.0–1.0 share as a percent with one decimal: `33.3%`.
fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// `used/capacity (pct%)`, or `used/0` without a capacity.
fn usage(used: u64, capacity: u64) -> String {
    if capacity == 0 {
        format!("{used}/0")
    } else {
        // u64 → f64 loses precision only above 2^53, far beyond any conntrack size.
        let share = used as f64 / capacity as f64;
        format!("{used}/{capacity} ({})", percent(share))
    }
}

/// Whole seconds as `42s`, `5m03s`, `1h02m03s`, `2d03h04m05s`.
fn duration_text(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h{m:02}m{s:02}s")
    } else if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Fractional seconds (uptime) as [`duration_text`], rounded down; 0 for negative or NaN.
fn seconds_text(secs: f64) -> String {
    duration_text(Duration::try_from_secs_f64(secs).map_or(0, |d| d.as_secs()))
}

/// Milliseconds as `250ms` below a second, else as [`duration_text`].
fn millis_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        duration_text(ms / 1000)
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, restricted to days ≥ 0 so it stays unsigned).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds: `2026-11-22T22:48:40.123Z`.
fn timestamp(unix_ms: u64) -> String {
    let (secs, ms) = (unix_ms / 1000, unix_ms % 1000);
    let (days, sod) = (secs / 86_400, secs % 86_400);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

// === formatting: tables ===

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Rows of text cells printed in aligned columns, two spaces apart, without trailing blanks.
#[derive(Debug)]
struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

// === impl Table ===

impl Table {
    fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len(), "one cell per column");
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let header: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        let mut text = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, (&w, (_, align)))) in
                row.iter().zip(widths.iter().zip(&self.columns)).enumerate()
            {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(w - width(cell));
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// `label: value` lines with the values aligned.
fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (k, v) in pairs {
        let _ = writeln!(text, "{:<w$}  {v}", format!("{k}:"));
    }
    text
}

fn status_table(s: &Status, now_ms: u64) -> String {
    let reload = s.last_reload.as_ref().map_or_else(
        || "none".to_owned(),
        |r| {
            let ok = if r.ok { "ok" } else { "failed" };
            let age = duration_text(now_ms.saturating_sub(r.unix_ms) / 1000);
            if r.message.is_empty() {
                format!("{ok}, {age} ago")
            } else {
                format!("{ok}, {age} ago: {}", r.message)
            }
        },
    );
    let mut text = fields(&[
        ("version", s.version.clone()),
        (
            "node",
            if s.node_drained {
                format!("{} (drained from the routers)", s.node)
            } else {
                s.node.clone()
            },
        ),
        ("config", s.config_path.clone()),
        ("region", s.region.clone()),
        ("generation", s.generation.to_string()),
        ("uptime", seconds_text(s.uptime_seconds)),
        ("services", s.services.to_string()),
        ("backends", s.backends.to_string()),
        ("last reload", reload),
    ]);
    text.push('\n');
    if s.workers.is_empty() {
        text.push_str("no dataplane workers attached\n");
        return text;
    }
    let mut t = Table::new(&[
        ("INDEX", Align::Right),
        ("PID", Align::Right),
        ("ALIVE", Align::Left),
        ("HEARTBEAT-AGE", Align::Right),
        ("ACKED-GEN", Align::Right),
        ("RX", Align::Right),
        ("TX", Align::Right),
        ("DROPS", Align::Right),
        ("CONNTRACK", Align::Left),
    ]);
    for w in &s.workers {
        t.row(vec![
            w.index.to_string(),
            w.pid.to_string(),
            if w.alive { "yes" } else { "no" }.to_owned(),
            millis_text(w.heartbeat_age_ms),
            w.acked_generation.to_string(),
            w.rx_packets.to_string(),
            w.tx_packets.to_string(),
            w.drops.to_string(),
            usage(w.conntrack_entries, w.conntrack_capacity),
        ]);
    }
    text.push_str(&t.render());
    text
}

fn is_active(b: &Backend) -> bool {
    b.state == i32::from(BackendState::Active)
}

/// `10.0.0.1:80/tcp`.
fn vip_text(s: &Service) -> String {
    format!(
        "{}/{}",
        host_port(&s.vip, s.port),
        protocol_name(s.protocol)
    )
}

fn peer_state_name(v: i32) -> String {
    let n = PeerState::try_from(v).ok().map(|k| k.as_str_name());
    enum_name(n, "PEER_STATE_", v)
}

fn peers_table(peers: &[Peer]) -> String {
    if peers.is_empty() {
        return "no BGP peers configured\n".to_owned();
    }
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("ADDRESS", Align::Left),
        ("AS", Align::Right),
        ("STATE", Align::Left),
        ("UPTIME", Align::Right),
        ("PREFIXES", Align::Right),
        ("UPDATES-OUT", Align::Right),
        ("UPDATES-IN", Align::Right),
        ("LAST-ERROR", Align::Left),
    ]);
    for p in peers {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "uptime seconds are small and non-negative"
        )]
        let up = p.uptime_seconds.max(0.0) as u64;
        t.row(vec![
            p.name.clone(),
            p.address.clone(),
            p.peer_asn.to_string(),
            peer_state_name(p.state),
            if p.state() == PeerState::Established {
                duration_text(up)
            } else {
                "-".to_owned()
            },
            p.prefixes_advertised.to_string(),
            p.updates_sent.to_string(),
            p.updates_received.to_string(),
            p.last_error.clone(),
        ]);
    }
    t.render()
}

fn services_table(services: &[Service]) -> String {
    if services.is_empty() {
        return "no services\n".to_owned();
    }
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("VIP", Align::Left),
        ("MODE", Align::Left),
        ("M", Align::Right),
        ("BACKENDS", Align::Right),
        ("PACKETS", Align::Right),
        ("BYTES", Align::Right),
        ("CONNECTIONS", Align::Right),
    ]);
    for s in services {
        let c = s.counters.unwrap_or_default();
        let active = s.backends.iter().filter(|b| is_active(b)).count();
        t.row(vec![
            s.name.clone(),
            vip_text(s),
            mode_name(s.mode),
            s.table_size.to_string(),
            format!("{active}/{}", s.backends.len()),
            c.packets.to_string(),
            c.bytes.to_string(),
            c.connections.to_string(),
        ]);
    }
    t.render()
}

fn backends_table(s: &Service) -> String {
    let active = s.backends.iter().filter(|b| is_active(b)).count();
    let mut text = format!(
        "{}: {}, {}, M {}, {active}/{} backends active\n",
        s.name,
        vip_text(s),
        mode_name(s.mode),
        s.table_size,
        s.backends.len()
    );
    if s.backends.is_empty() {
        return text;
    }
    text.push('\n');
    let mut t = Table::new(&[
        ("NAME", Align::Left),
        ("ADDRESS", Align::Left),
        ("WEIGHT", Align::Left),
        ("STATE", Align::Left),
        ("HEALTH", Align::Left),
        ("SHARE", Align::Right),
        ("PACKETS", Align::Right),
        ("BYTES", Align::Right),
        ("CONNECTIONS", Align::Right),
    ]);
    for b in &s.backends {
        let c = b.counters.unwrap_or_default();
        t.row(vec![
            b.name.clone(),
            backend_address(b),
            weight_text(b),
            state_name(b.state),
            health_text(b),
            percent(b.table_share),
            c.packets.to_string(),
            c.bytes.to_string(),
            c.connections.to_string(),
        ]);
    }
    text.push_str(&t.render());
    text
}

/// `web/b2: draining (weight 1, share 0.0%) at generation 12`; an override shows as
/// `(weight 3, config 1, share 50.0%)`.
fn backend_line(b: &Backend, generation: Option<u64>) -> String {
    let mut line = format!(
        "{}/{}: {} (weight {}",
        b.service,
        b.name,
        state_name(b.state),
        b.weight
    );
    if b.weight != b.configured_weight {
        let _ = write!(line, ", config {}", b.configured_weight);
    }
    let _ = write!(line, ", share {})", percent(b.table_share));
    if let Some(g) = generation {
        let _ = write!(line, " at generation {g}");
    }
    line
}

/// `2026-11-22T22:48:40.123Z #12 drained web/b2: message (generation 13)`.
fn event_line(e: &Event) -> String {
    let mut line = format!("{} #{} {}", timestamp(e.unix_ms), e.seq, kind_name(e.kind));
    match (e.service.is_empty(), e.backend.is_empty()) {
        (true, true) => {}
        (false, true) => {
            let _ = write!(line, " {}", e.service);
        }
        (true, false) => {
            let _ = write!(line, " {}", e.backend);
        }
        (false, false) => {
            let _ = write!(line, " {}/{}", e.service, e.backend);
        }
    }
    if !e.message.is_empty() {
        line.push_str(": ");
        line.push_str(&e.message);
    }
    if e.generation != 0 {
        let _ = write!(line, " (generation {})", e.generation);
    }
    line
}

// === formatting: JSON ===

/// One JSON document, newline-terminated.
fn document(v: &Value) -> String {
    format!("{v}\n")
}

fn counters_json(c: Option<&Counters>) -> Value {
    let c = c.copied().unwrap_or_default();
    json!({ "packets": c.packets, "bytes": c.bytes, "connections": c.connections })
}

fn worker_json(w: &Worker) -> Value {
    json!({
        "index": w.index,
        "pid": w.pid,
        "alive": w.alive,
        "heartbeat_age_ms": w.heartbeat_age_ms,
        "acked_generation": w.acked_generation,
        "rx_packets": w.rx_packets,
        "tx_packets": w.tx_packets,
        "rx_bytes": w.rx_bytes,
        "tx_bytes": w.tx_bytes,
        "conntrack_entries": w.conntrack_entries,
        "conntrack_capacity": w.conntrack_capacity,
        "drops": w.drops,
    })
}

fn reload_json(r: &Reload) -> Value {
    json!({ "unix_ms": r.unix_ms, "ok": r.ok, "message": r.message })
}

fn status_json(s: &Status) -> Value {
    json!({
        "version": s.version,
        "node": s.node,
        "config_path": s.config_path,
        "region": s.region,
        "generation": s.generation,
        "uptime_seconds": s.uptime_seconds,
        "services": s.services,
        "backends": s.backends,
        "workers": s.workers.iter().map(worker_json).collect::<Vec<_>>(),
        "last_reload": s.last_reload.as_ref().map(reload_json),
        "node_drained": s.node_drained,
    })
}

fn backend_json(b: &Backend) -> Value {
    json!({
        "service": b.service,
        "name": b.name,
        "address": b.address,
        "port": b.port,
        "weight": b.weight,
        "configured_weight": b.configured_weight,
        "state": state_name(b.state),
        "health": health_name(b.health),
        "health_detail": b.health_detail,
        "drained": b.drained,
        "table_share": b.table_share,
        "counters": counters_json(b.counters.as_ref()),
    })
}

fn service_json(s: &Service) -> Value {
    json!({
        "name": s.name,
        "vip": s.vip,
        "port": s.port,
        "protocol": protocol_name(s.protocol),
        "mode": mode_name(s.mode),
        "table_size": s.table_size,
        "backends": s.backends.iter().map(backend_json).collect::<Vec<_>>(),
        "counters": counters_json(s.counters.as_ref()),
    })
}

fn peer_json(p: &Peer) -> Value {
    json!({
        "name": p.name,
        "address": p.address,
        "peer_asn": p.peer_asn,
        "my_asn": p.my_asn,
        "state": peer_state_name(p.state),
        "uptime_seconds": p.uptime_seconds,
        "last_error": p.last_error,
        "updates_sent": p.updates_sent,
        "updates_received": p.updates_received,
        "prefixes_advertised": p.prefixes_advertised,
        "established_transitions": p.established_transitions,
        "notifications_sent": p.notifications_sent,
        "notifications_received": p.notifications_received,
    })
}

fn drain_node_json(r: &DrainNodeResponse) -> Value {
    json!({ "drained": r.drained, "message": r.message })
}

fn event_json(e: &Event) -> Value {
    json!({
        "seq": e.seq,
        "unix_ms": e.unix_ms,
        "kind": kind_name(e.kind),
        "service": e.service,
        "backend": e.backend,
        "message": e.message,
        "generation": e.generation,
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn backend(name: &str, state: BackendState, weight: u32, configured: u32) -> Backend {
        Backend {
            service: "web".into(),
            name: name.into(),
            address: "10.0.1.2".into(),
            port: 0,
            weight,
            configured_weight: configured,
            state: state.into(),
            health: Health::Up.into(),
            drained: state == BackendState::Draining,
            table_share: 0.5,
            counters: Some(Counters {
                packets: 10,
                bytes: 1500,
                connections: 2,
            }),
            health_detail: String::new(),
        }
    }

    fn service() -> Service {
        Service {
            name: "web".into(),
            vip: "fd90::100".into(),
            port: 8080,
            protocol: Protocol::Tcp.into(),
            mode: Mode::Dsr.into(),
            table_size: 65_537,
            backends: vec![
                backend("b1", BackendState::Active, 1, 1),
                backend("b2", BackendState::Draining, 3, 1),
            ],
            counters: None,
        }
    }

    #[test]
    fn cli_is_consistent() {
        Opt::command().debug_assert();
    }

    #[test]
    fn cli_parses_globals_anywhere_and_requires_ca_with_endpoint() {
        let o = Opt::try_parse_from(["sluicectl", "backends", "web", "-o", "json"]).unwrap();
        assert_eq!(o.output, Output::Json);
        assert!(matches!(o.command, Cmd::Backends { ref service } if service == "web"));
        let e = Opt::try_parse_from(["sluicectl", "--endpoint", "https://lb:7443", "status"])
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let o = Opt::try_parse_from([
            "sluicectl",
            "--endpoint",
            "https://lb:7443",
            "--ca",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "events",
            "-f",
        ])
        .unwrap();
        assert_eq!(
            o.target(Some("/env.sock".into())),
            Target::Tls {
                url: "https://lb:7443".into(),
                ca: "ca.pem".into(),
                identity: Some(("c.pem".into(), "k.pem".into())),
                domain: None,
            }
        );
        assert!(matches!(
            o.command,
            Cmd::Events {
                follow: true,
                backlog: 50
            }
        ));
        assert!(
            Opt::try_parse_from(["sluicectl", "--cert", "c.pem", "status"]).is_err(),
            "--cert needs --key and --endpoint"
        );
        let o = Opt::try_parse_from(["sluicectl", "--timeout", "0", "status"]).unwrap();
        assert_eq!(o.deadline(), None);
        assert_eq!(o.target(None), Target::Unix(DEFAULT_SOCKET.into()));
        assert_eq!(
            o.target(Some("".into())),
            Target::Unix(DEFAULT_SOCKET.into())
        );
        assert_eq!(
            o.target(Some("/e.sock".into())),
            Target::Unix("/e.sock".into())
        );
        let o = Opt::try_parse_from(["sluicectl", "status", "--socket", "/s.sock"]).unwrap();
        assert_eq!(
            o.target(Some("/e.sock".into())),
            Target::Unix("/s.sock".into())
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        // Leap days, a century leap year, and the last second of a year.
        assert_eq!(timestamp(1_709_164_800_000), "2024-02-29T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(timestamp(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn civil_from_days_matches_a_day_by_day_walk() {
        let mut ymd = (1970, 1, 1);
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        for days in 0..200_000 {
            assert_eq!(civil_from_days(days), ymd, "day {days}");
            let len = match ymd.1 {
                2 if leap(ymd.0) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            ymd = if ymd.2 < len {
                (ymd.0, ymd.1, ymd.2 + 1)
            } else if ymd.1 < 12 {
                (ymd.0, ymd.1 + 1, 1)
            } else {
                (ymd.0 + 1, 1, 1)
            };
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(59), "59s");
        assert_eq!(duration_text(60), "1m00s");
        assert_eq!(duration_text(3723), "1h02m03s");
        assert_eq!(
            duration_text(2 * 86_400 + 3 * 3600 + 4 * 60 + 5),
            "2d03h04m05s"
        );
        assert_eq!(seconds_text(3723.9), "1h02m03s");
        assert_eq!(seconds_text(-1.0), "0s");
        assert_eq!(seconds_text(f64::NAN), "0s");
        assert_eq!(millis_text(250), "250ms");
        assert_eq!(millis_text(61_500), "1m01s");
    }

    #[test]
    fn enum_names_are_lowercase_without_prefix() {
        assert_eq!(state_name(BackendState::Draining.into()), "draining");
        assert_eq!(health_name(Health::Unchecked.into()), "unchecked");
        assert_eq!(mode_name(Mode::Ipip.into()), "ipip");
        assert_eq!(protocol_name(Protocol::Udp.into()), "udp");
        assert_eq!(kind_name(EventKind::ConfigApplied.into()), "config_applied");
        assert_eq!(kind_name(0), "unspecified");
        assert_eq!(kind_name(99), "unknown(99)");
    }

    #[test]
    fn addresses() {
        assert_eq!(host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(host_port("fd90::100", 8080), "[fd90::100]:8080");
        let mut b = backend("b1", BackendState::Active, 1, 1);
        assert_eq!(backend_address(&b), "10.0.1.2");
        b.port = 8443;
        assert_eq!(backend_address(&b), "10.0.1.2:8443");
        b.address = "fd00::2".into();
        assert_eq!(backend_address(&b), "[fd00::2]:8443");
        assert_eq!(vip_text(&service()), "[fd90::100]:8080/tcp");
    }

    #[test]
    fn usage_percent() {
        assert_eq!(usage(1, 3), "1/3 (33.3%)");
        assert_eq!(usage(0, 0), "0/0");
        assert_eq!(percent(0.0), "0.0%");
        assert_eq!(percent(1.0), "100.0%");
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("NOTE", Align::Left),
        ]);
        t.row(vec!["a".into(), "1234".into(), "x".into()]);
        t.row(vec!["long-name".into(), "5".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME          N  NOTE\n\
             a          1234  x\n\
             long-name     5\n"
        );
    }

    #[test]
    fn backends_table_shows_overrides_and_health() {
        let mut s = service();
        s.backends[1].health = Health::Down.into();
        s.backends[1].health_detail = "connect refused".into();
        s.backends[1].table_share = 0.0;
        let text = backends_table(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "web: [fd90::100]:8080/tcp, dsr, M 65537, 1/2 backends active"
        );
        assert_eq!(
            lines[2],
            "NAME  ADDRESS   WEIGHT        STATE     HEALTH                  SHARE  PACKETS  BYTES  CONNECTIONS"
        );
        assert_eq!(
            lines[3],
            "b1    10.0.1.2  1             active    up                      50.0%       10   1500            2"
        );
        assert_eq!(
            lines[4],
            "b2    10.0.1.2  3 (config 1)  draining  down (connect refused)   0.0%       10   1500            2"
        );
    }

    #[test]
    fn peers_table_shows_state_and_uptime() {
        let mut p = Peer {
            name: "tor1".into(),
            address: "192.0.2.1".into(),
            peer_asn: 64500,
            uptime_seconds: 3723.0,
            prefixes_advertised: 2,
            updates_sent: 3,
            ..Peer::default()
        };
        p.set_state(PeerState::Established);
        let text = peers_table(&[p]);
        assert_eq!(
            text,
            "NAME  ADDRESS       AS  STATE          UPTIME  PREFIXES  UPDATES-OUT  UPDATES-IN  LAST-ERROR\n\
             tor1  192.0.2.1  64500  established  1h02m03s         2            3           0\n"
        );
        assert_eq!(peers_table(&[]), "no BGP peers configured\n");
    }

    #[test]
    fn services_table_counts_active_backends() {
        let text = services_table(&[service()]);
        assert_eq!(
            text,
            "NAME  VIP                   MODE      M  BACKENDS  PACKETS  BYTES  CONNECTIONS\n\
             web   [fd90::100]:8080/tcp  dsr   65537       1/2        0      0            0\n"
        );
        assert_eq!(services_table(&[]), "no services\n");
    }

    #[test]
    fn status_table_shows_workers_and_reload() {
        let s = Status {
            version: "0.1.0".into(),
            node: "lb1".into(),
            config_path: "/etc/sluice/control.toml".into(),
            region: "sluice".into(),
            generation: 12,
            uptime_seconds: 3723.4,
            services: 1,
            backends: 2,
            workers: vec![Worker {
                index: 0,
                pid: 4242,
                alive: true,
                heartbeat_age_ms: 120,
                acked_generation: 12,
                rx_packets: 100,
                tx_packets: 99,
                rx_bytes: 0,
                tx_bytes: 0,
                conntrack_entries: 1,
                conntrack_capacity: 4,
                drops: 1,
            }],
            last_reload: Some(Reload {
                unix_ms: 1_000_000,
                ok: false,
                message: "services[0].port: must be 1..65535".into(),
            }),
            node_drained: false,
        };
        let text = status_table(&s, 1_192_000);
        assert!(
            text.starts_with("version:      0.1.0\nnode:         lb1\n"),
            "{text}"
        );
        assert!(text.contains("uptime:       1h02m03s\n"), "{text}");
        assert!(
            text.contains("last reload:  failed, 3m12s ago: services[0].port: must be 1..65535\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "INDEX   PID  ALIVE  HEARTBEAT-AGE  ACKED-GEN   RX  TX  DROPS  CONNTRACK\n    \
             0  4242  yes            120ms         12  100  99      1  1/4 (25.0%)\n"
            ),
            "{text}"
        );
        let none = Status {
            last_reload: None,
            workers: vec![],
            ..s
        };
        let text = status_table(&none, 0);
        assert!(text.contains("last reload:  none\n"), "{text}");
        assert!(text.ends_with("no dataplane workers attached\n"), "{text}");
    }

    #[test]
    fn change_and_event_lines() {
        let mut b = backend("b2", BackendState::Draining, 1, 1);
        b.table_share = 0.0;
        assert_eq!(
            backend_line(&b, Some(12)),
            "web/b2: draining (weight 1, share 0.0%) at generation 12"
        );
        assert_eq!(
            backend_line(&b, None),
            "web/b2: draining (weight 1, share 0.0%)"
        );
        b.weight = 3;
        assert_eq!(
            backend_line(&b, None),
            "web/b2: draining (weight 3, config 1, share 0.0%)"
        );
        let e = Event {
            seq: 12,
            unix_ms: 1_795_000_000_123,
            kind: EventKind::Drained.into(),
            service: "web".into(),
            backend: "b2".into(),
            message: "drained by the API".into(),
            generation: 13,
        };
        assert_eq!(
            event_line(&e),
            "2026-11-18T11:06:40.123Z #12 drained web/b2: drained by the API (generation 13)"
        );
        let started = Event {
            seq: 1,
            kind: EventKind::Started.into(),
            service: String::new(),
            backend: String::new(),
            message: String::new(),
            generation: 0,
            ..e
        };
        assert_eq!(event_line(&started), "2026-11-18T11:06:40.123Z #1 started");
    }

    #[test]
    fn json_shapes() {
        let s = service();
        let v = service_json(&s);
        assert_eq!(v["vip"], "fd90::100");
        assert_eq!(v["port"], 8080);
        assert_eq!(v["protocol"], "tcp");
        assert_eq!(v["mode"], "dsr");
        assert_eq!(v["table_size"], 65_537);
        assert_eq!(
            v["counters"],
            json!({ "packets": 0, "bytes": 0, "connections": 0 })
        );
        assert_eq!(
            v["backends"][1],
            json!({
                "service": "web",
                "name": "b2",
                "address": "10.0.1.2",
                "port": 0,
                "weight": 3,
                "configured_weight": 1,
                "state": "draining",
                "health": "up",
                "health_detail": "",
                "drained": true,
                "table_share": 0.5,
                "counters": { "packets": 10, "bytes": 1500, "connections": 2 },
            })
        );
        let e = event_json(&Event {
            seq: 3,
            unix_ms: 5,
            kind: EventKind::WeightChanged.into(),
            service: "web".into(),
            backend: "b1".into(),
            message: "weight 3".into(),
            generation: 4,
        });
        let line = document(&e);
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line:?}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap(),
            json!({
                "seq": 3,
                "unix_ms": 5,
                "kind": "weight_changed",
                "service": "web",
                "backend": "b1",
                "message": "weight 3",
                "generation": 4,
            })
        );
        let st = status_json(&Status::default());
        assert_eq!(st["last_reload"], Value::Null);
        assert_eq!(st["workers"], json!([]));
        assert_eq!(st["uptime_seconds"], 0.0);
    }

    #[test]
    fn errors_name_the_code_in_words() {
        let s = tonic::Status::not_found("no service named \"x\"");
        assert_eq!(
            CtlError::Call(s).to_string(),
            "not found: no service named \"x\""
        );
        assert_eq!(
            CtlError::Call(tonic::Status::data_loss("")).to_string(),
            "data loss"
        );
        let t = Target::Unix(DEFAULT_SOCKET.into());
        assert_eq!(
            connect_hint(&t),
            "is sluice-control running? socket: /run/sluice/control.sock"
        );
        assert_eq!(target_name(&t), "unix:/run/sluice/control.sock");
        let c = CtlError::Connect {
            error: "cannot connect to unix:/x: no such file".into(),
            hint: Some(connect_hint(&Target::Unix("/x".into()))),
        };
        assert_eq!(c.exit_code(), 3);
        assert_eq!(
            c.to_string(),
            "cannot connect to unix:/x: no such file\nis sluice-control running? socket: /x"
        );
        assert_eq!(CtlError::Timeout(Duration::from_secs(10)).exit_code(), 1);
    }
}
