//! The Prometheus endpoint: `GET /metrics` on `[metrics] listen`, answered in the OpenMetrics
//! text format (which Prometheus scrapes natively) by a minimal HTTP/1.1 server.
//!
//! Contract:
//! - **Read at scrape time.** Each scrape asks the table task (the [`Writer`]'s single owner)
//!   for a [`Snapshot`] over a request channel and encodes it, so the values are the shared
//!   region's counters at that moment; nothing is cached between scrapes. When the table task
//!   has stopped, the scrape answers `503`.
//! - **Names** (all prefixed `sluice_`; counters end in `_total`):
//!   `service_packets_total{service}`, `service_bytes_total{service}`,
//!   `service_connections_total{service}`, `backend_connections_total{service,backend}` (new
//!   flows given a backend: a conntrack miss, never a hit or a NAT reply),
//!   `backend_health_up{service,backend}` (only for services with a health check),
//!   `backend_weight{service,backend}`, `backend_state{service,backend,state}` (1 for the
//!   published state of `active`, `draining`, `down`),
//!   `backend_packets_total{service,backend}`, `backend_bytes_total{service,backend}` (summed
//!   over workers; a service counts every packet forwarded for it in both directions, NAT
//!   replies included, while a backend counts client → backend packets only; services by config name, backends mapped from their table id back to the
//!   config name, or `id:<n>` for an id control does not know);
//!   `dataplane_drops_total{reason}` (summed over workers, one series per
//!   [`DropReason::as_str`], zeros included); `dataplane_rx_packets_total`,
//!   `dataplane_tx_packets_total`, `dataplane_rx_bytes_total`, `dataplane_tx_bytes_total`;
//!   `conntrack_entries{worker}`, `conntrack_capacity{worker}`, `dataplane_worker_up{worker}`
//!   (1 live, 0 judged dead); `table_generation`; `table_publish_duration_seconds` (histogram
//!   of one publication as [`crate::daemon::Daemon::apply`] performs it: from the first
//!   attempt to the writer accepting it, would-block retries included; it does **not** wait
//!   for the workers' acks).
//! - **BGP**: `bgp_session_up{peer,address}`, `bgp_updates_sent_total{peer,address}`,
//!   `bgp_updates_received_total{peer,address}`, `bgp_prefixes_announced{peer,address}`
//!   (absent without peers), `node_drained`.
//! - Counters come from the region and restart from zero when the region is recreated, or,
//!   for one service or backend, when it is removed and added again (Prometheus treats a
//!   decrease as a reset).
//! - **HTTP.** One request per connection (`Connection: close`); the request head must arrive
//!   within 5 s and fit 8 KiB. `GET /metrics` (any query) → 200, other paths → 404, other
//!   methods → 405, a malformed head → 400.
//!
//! [`Writer`]: sluice_dataplane::tables::Writer

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sluice_dataplane::pipeline::DropReason;
use sluice_dataplane::tables::{BackendState, WorkerState};

use crate::state::HealthReport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// A scrape's request to the table task: reply with a [`Snapshot`].
pub type SnapshotRequest = oneshot::Sender<Snapshot>;

/// The most bytes of a request head read.
const MAX_HEAD: usize = 8 << 10;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The OpenMetrics content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("metrics listener {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

pub use crate::state::{BackendSample, ServiceSample, Snapshot};

/// The publish-duration histogram: 100 µs to about 26 s in ×4 steps.
#[must_use]
pub fn publish_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-4, 4.0, 10))
}

type Labels = Vec<(&'static str, String)>;

/// The label value for a backend state.
fn state_name(s: BackendState) -> &'static str {
    match s {
        BackendState::Active => "active",
        BackendState::Draining => "draining",
        BackendState::Down => "down",
    }
}

/// Encodes `snap` and the publish histogram as OpenMetrics text.
#[must_use]
pub fn render(snap: &Snapshot, publish_seconds: &Histogram) -> String {
    let mut reg = Registry::with_prefix("sluice");

    let svc_packets = Family::<Labels, Counter>::default();
    let svc_bytes = Family::<Labels, Counter>::default();
    let svc_conns = Family::<Labels, Counter>::default();
    let be_packets = Family::<Labels, Counter>::default();
    let be_bytes = Family::<Labels, Counter>::default();
    let be_conns = Family::<Labels, Counter>::default();
    let be_health = Family::<Labels, Gauge>::default();
    let be_weight = Family::<Labels, Gauge>::default();
    let be_state = Family::<Labels, Gauge>::default();
    for s in &snap.services {
        let l = vec![("service", s.name.clone())];
        svc_packets.get_or_create(&l).inc_by(s.packets);
        svc_bytes.get_or_create(&l).inc_by(s.bytes);
        svc_conns.get_or_create(&l).inc_by(s.connections);
        for b in &s.backends {
            let l = vec![("service", s.name.clone()), ("backend", b.name.clone())];
            be_packets.get_or_create(&l).inc_by(b.packets);
            be_bytes.get_or_create(&l).inc_by(b.bytes);
            be_conns.get_or_create(&l).inc_by(b.connections);
            be_weight.get_or_create(&l).set(i64::from(b.weight));
            if b.health != HealthReport::Unchecked {
                be_health
                    .get_or_create(&l)
                    .set(i64::from(b.health != HealthReport::Down));
            }
            for st in [
                BackendState::Active,
                BackendState::Draining,
                BackendState::Down,
            ] {
                let mut l = l.clone();
                l.push(("state", state_name(st).to_owned()));
                be_state.get_or_create(&l).set(i64::from(b.state == st));
            }
        }
    }
    reg.register(
        "service_packets",
        "Packets forwarded for the service in both directions (NAT replies included), over all workers",
        svc_packets,
    );
    reg.register(
        "service_bytes",
        "Bytes forwarded for the service in both directions (NAT replies included), over all workers",
        svc_bytes,
    );
    reg.register(
        "service_connections",
        "New connections (flows) assigned a backend for the service, over all workers",
        svc_conns,
    );
    reg.register(
        "backend_connections",
        "New connections (flows) assigned to the backend, over all workers",
        be_conns,
    );
    reg.register(
        "backend_health_up",
        "1 while the backend passes its health check (or has not failed it yet), 0 while it \
         fails; absent for services without a health check",
        be_health,
    );
    reg.register(
        "backend_weight",
        "The backend's weight in effect (an API override, else the config's)",
        be_weight,
    );
    reg.register(
        "backend_state",
        "1 for the backend's published state (active, draining, down), 0 for the others",
        be_state,
    );
    reg.register(
        "backend_packets",
        "Packets forwarded from clients to the backend, over all workers",
        be_packets,
    );
    reg.register(
        "backend_bytes",
        "Bytes forwarded from clients to the backend, over all workers",
        be_bytes,
    );

    let drops = Family::<Labels, Counter>::default();
    let (rx_p, tx_p, rx_b, tx_b) = (
        Counter::<u64>::default(),
        Counter::<u64>::default(),
        Counter::<u64>::default(),
        Counter::<u64>::default(),
    );
    let entries = Family::<Labels, Gauge>::default();
    let capacity = Family::<Labels, Gauge>::default();
    let up = Family::<Labels, Gauge>::default();
    for r in DropReason::ALL {
        let _ = drops.get_or_create(&vec![("reason", r.as_str().to_owned())]);
    }
    for w in &snap.workers {
        let c = &w.counters;
        for r in DropReason::ALL {
            let n = c.drops.get(r as usize).copied().unwrap_or(0);
            drops
                .get_or_create(&vec![("reason", r.as_str().to_owned())])
                .inc_by(n);
        }
        rx_p.inc_by(c.rx_packets);
        tx_p.inc_by(c.tx_packets);
        rx_b.inc_by(c.rx_bytes);
        tx_b.inc_by(c.tx_bytes);
        let l = vec![("worker", w.index.to_string())];
        entries
            .get_or_create(&l)
            .set(i64::try_from(c.conntrack_entries).unwrap_or(i64::MAX));
        capacity
            .get_or_create(&l)
            .set(i64::try_from(c.conntrack_capacity).unwrap_or(i64::MAX));
        up.get_or_create(&l)
            .set(i64::from(w.state == WorkerState::Live));
    }
    reg.register(
        "dataplane_drops",
        "Packets dropped by the dataplane, by reason, over all workers",
        drops,
    );
    reg.register(
        "dataplane_rx_packets",
        "Packets received, over all workers",
        rx_p,
    );
    reg.register(
        "dataplane_tx_packets",
        "Packets sent, over all workers",
        tx_p,
    );
    reg.register(
        "dataplane_rx_bytes",
        "Bytes received, over all workers",
        rx_b,
    );
    reg.register("dataplane_tx_bytes", "Bytes sent, over all workers", tx_b);
    reg.register(
        "conntrack_entries",
        "Connection-table entries in use, per worker",
        entries,
    );
    reg.register(
        "conntrack_capacity",
        "Connection-table capacity, per worker",
        capacity,
    );
    reg.register(
        "dataplane_worker_up",
        "1 while the worker's heartbeat moves, 0 once judged dead",
        up,
    );

    let bgp_up = Family::<Labels, Gauge>::default();
    let bgp_sent = Family::<Labels, Counter>::default();
    let bgp_received = Family::<Labels, Counter>::default();
    let bgp_prefixes = Family::<Labels, Gauge>::default();
    for (name, p) in &snap.peers {
        let l = vec![
            ("peer", name.clone()),
            ("address", p.peer_address.to_string()),
        ];
        bgp_up
            .get_or_create(&l)
            .set(i64::from(p.state == crate::bgp::State::Established));
        bgp_sent.get_or_create(&l).inc_by(p.updates_sent);
        bgp_received.get_or_create(&l).inc_by(p.updates_received);
        bgp_prefixes
            .get_or_create(&l)
            .set(i64::try_from(p.prefixes_advertised).unwrap_or(i64::MAX));
    }
    reg.register(
        "bgp_session_up",
        "1 while the BGP session with the peer is Established",
        bgp_up,
    );
    reg.register(
        "bgp_updates_sent",
        "BGP UPDATE messages sent to the peer",
        bgp_sent,
    );
    reg.register(
        "bgp_updates_received",
        "BGP UPDATE messages received from the peer",
        bgp_received,
    );
    reg.register(
        "bgp_prefixes_announced",
        "Prefixes the peer currently has from this node",
        bgp_prefixes,
    );
    let drained = Gauge::<i64>::default();
    drained.set(i64::from(snap.node_drained));
    reg.register(
        "node_drained",
        "1 while the node is drained from the routers (sluicectl drain-node)",
        drained,
    );

    let generation = Gauge::<i64>::default();
    generation.set(i64::try_from(snap.generation).unwrap_or(i64::MAX));
    reg.register(
        "table_generation",
        "The published table generation",
        generation,
    );
    reg.register(
        "table_publish_duration_seconds",
        "Time from the first attempt to publish a generation until the writer accepted it \
         (would-block retries included; not waiting for worker acks)",
        publish_seconds.clone(),
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Binds `addr` (before readiness is reported, so a bad address fails start-up).
///
/// # Errors
///
/// [`MetricsError::Bind`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves scrapes on `listener` until `shutdown` turns true (or its sender goes away).
/// Snapshots come from the table task through `snapshots`.
pub async fn serve(
    listener: TcpListener,
    snapshots: mpsc::Sender<SnapshotRequest>,
    publish_seconds: Histogram,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let snapshots = snapshots.clone();
                    let hist = publish_seconds.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &snapshots, &hist).await {
                            tracing::debug!(%peer, error = %e, "metrics request failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    tracing::info!("metrics server stopped");
}

/// What the request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes a request head (everything up to the blank line).
fn route(head: &[u8]) -> Route {
    let Some(line) = head
        .split(|&b| b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
    else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        ("GET" | "HEAD", _) => Route::NotFound,
        _ => Route::MethodNotAllowed,
    }
}

async fn answer(
    mut stream: TcpStream,
    snapshots: &mpsc::Sender<SnapshotRequest>,
    publish_seconds: &Histogram,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(HEAD_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    let (status, body) = match read {
        Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) if !head.windows(4).any(|w| w == b"\r\n\r\n") => {
            ("400 Bad Request", "bad request\n".to_owned())
        }
        Ok(Ok(())) => match route(&head) {
            Route::Metrics => {
                let (tx, rx) = oneshot::channel();
                let snap = match snapshots.send(tx).await {
                    Ok(()) => rx.await.ok(),
                    Err(_) => None,
                };
                match snap {
                    Some(s) => ("200 OK", render(&s, publish_seconds)),
                    None => ("503 Service Unavailable", "table task stopped\n".to_owned()),
                }
            }
            Route::NotFound => ("404 Not Found", "not found; try /metrics\n".to_owned()),
            Route::MethodNotAllowed => ("405 Method Not Allowed", "use GET\n".to_owned()),
            Route::BadRequest => ("400 Bad Request", "bad request\n".to_owned()),
        },
    };
    let ctype = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use sluice_dataplane::tables::{
        Generation, Mode, Proto, ServiceKey, WorkerCounters, WorkerStatus,
    };

    use super::*;

    fn backend(name: &str, packets: u64, health: HealthReport) -> BackendSample {
        BackendSample {
            name: name.into(),
            addr: Some("10.0.0.1".parse().expect("ip")),
            port: 0,
            weight: 2,
            configured_weight: 1,
            state: BackendState::Active,
            drained: false,
            health,
            health_detail: String::new(),
            table_share: 0.5,
            packets,
            bytes: packets * 100,
            connections: packets / 2,
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff\r\n\r\n"), Route::BadRequest);
    }

    #[test]
    fn renders_parseable_text_with_every_series() {
        let mut counters = WorkerCounters {
            rx_packets: 10,
            tx_packets: 9,
            conntrack_entries: 3,
            conntrack_capacity: 1024,
            ..WorkerCounters::default()
        };
        counters.drops[DropReason::NoService as usize] = 2;
        let worker = |index, state| WorkerStatus {
            index,
            state,
            pid: 1,
            ack: Generation(4),
            heartbeat: 1,
            heartbeat_age: Duration::ZERO,
            counters,
        };
        let mut down = backend("b2", 4, HealthReport::Down);
        down.state = BackendState::Down;
        let snap = Snapshot {
            generation: 4,
            services: vec![ServiceSample {
                name: "web".into(),
                key: ServiceKey::new("10.0.0.100".parse().expect("ip"), 80, Proto::Tcp),
                mode: Mode::Nat,
                table_size: 251,
                packets: 7,
                bytes: 700,
                connections: 3,
                backends: vec![backend("b1", 3, HealthReport::Up), down],
            }],
            workers: vec![worker(0, WorkerState::Live), worker(1, WorkerState::Dead)],
            ..Snapshot::empty()
        };
        let h = publish_histogram();
        h.observe(0.002);
        let text = render(&snap, &h);
        let lines: Vec<_> = text.lines().map(|l| Ok(l.to_owned())).collect();
        let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("parses");
        let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
            let s = scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                })
                .unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{text}"));
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{name}: {other:?}"),
            }
        };
        assert_eq!(
            value("sluice_service_packets_total", &[("service", "web")]),
            7.0
        );
        assert_eq!(
            value(
                "sluice_backend_bytes_total",
                &[("service", "web"), ("backend", "b2")]
            ),
            400.0
        );
        assert_eq!(
            value("sluice_service_connections_total", &[("service", "web")]),
            3.0
        );
        assert_eq!(
            value(
                "sluice_backend_connections_total",
                &[("service", "web"), ("backend", "b2")]
            ),
            2.0
        );
        let b =
            |name: &str, backend: &str| value(name, &[("service", "web"), ("backend", backend)]);
        assert_eq!(b("sluice_backend_health_up", "b1"), 1.0);
        assert_eq!(b("sluice_backend_health_up", "b2"), 0.0);
        assert_eq!(b("sluice_backend_weight", "b1"), 2.0);
        assert_eq!(
            value(
                "sluice_backend_state",
                &[("service", "web"), ("backend", "b2"), ("state", "down")]
            ),
            1.0
        );
        assert_eq!(
            value(
                "sluice_backend_state",
                &[("service", "web"), ("backend", "b2"), ("state", "active")]
            ),
            0.0
        );
        assert_eq!(
            value("sluice_dataplane_drops_total", &[("reason", "no_service")]),
            4.0
        );
        for r in DropReason::ALL {
            value("sluice_dataplane_drops_total", &[("reason", r.as_str())]);
        }
        assert_eq!(value("sluice_dataplane_rx_packets_total", &[]), 20.0);
        assert_eq!(
            value("sluice_conntrack_capacity", &[("worker", "1")]),
            1024.0
        );
        assert_eq!(value("sluice_dataplane_worker_up", &[("worker", "0")]), 1.0);
        assert_eq!(value("sluice_dataplane_worker_up", &[("worker", "1")]), 0.0);
        assert_eq!(value("sluice_table_generation", &[]), 4.0);
        assert!(
            text.contains("sluice_table_publish_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
