//! The gRPC API (`sluice.v1.Control`, with server reflection): served on a Unix socket by
//! default and, when configured, on TCP with TLS only.
//!
//! # Contract
//!
//! - **Listeners.** The Unix socket (`[api] socket`, default `/run/sluice/control.sock`) is
//!   created with mode `0600` (owner only; bound inside a private directory and renamed into
//!   place, so it is never reachable with wider permissions), in a directory created if
//!   missing; a stale socket file left by a dead daemon is replaced, but a socket some live
//!   process answers on is not (start-up fails instead). The socket file is removed at
//!   shutdown. The TCP listener (`[api] listen`) exists only with `[api] tls_cert` and
//!   `tls_key`; with `tls_client_ca` every client must present a certificate signed by that
//!   CA. A client speaking plaintext HTTP/2 to the TCP port fails the TLS handshake: nothing
//!   is served without TLS there.
//! - **Reads** (`GetStatus`, `ListServices`, `GetService`) are one [`Snapshot`] from the table
//!   task, so the numbers in one answer are from one moment.
//! - **Writes** (`SetWeight`, `Drain`, `Undrain`) answer after the change was published (see
//!   [`crate::daemon::Command`]) with the backend as it is then. Errors map to gRPC codes:
//!   unknown service/backend → `NOT_FOUND`, bad weight or missing names → `INVALID_ARGUMENT`,
//!   publication failure or the table task gone → `UNAVAILABLE`.
//! - **Peers** (`ListPeers`) come from the BGP speaker in the same snapshot; `DrainNode`
//!   answers once the node's state changed (the announcements follow at the next tick);
//!   without BGP peers it is `FAILED_PRECONDITION`.
//! - **Events** (`WatchEvents`): the last `backlog` events, then, with `follow`, every new one
//!   until the client goes away or the daemon stops; a follower that falls more than
//!   [`crate::state::EVENT_BACKLOG`] events behind gets `DATA_LOSS` and the stream ends.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use sluice_dataplane::tables::{BackendState, Mode, WorkerState};
use sluice_proto::v1 as pb;
use sluice_proto::v1::control_server::{Control, ControlServer};
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::config::ApiConfig;
use crate::daemon::{Change, Command, CommandError};
use crate::metrics::SnapshotRequest;
use crate::state::{
    BackendSample, Event, EventKind, Events, HealthReport, ServiceSample, Snapshot,
};

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The Unix socket could not be set up.
    #[error("api socket {path}: {reason}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TCP listener could not be set up.
    #[error("api listener {addr}: {reason}")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// The service implementation: a handle on the table task and the event log.
#[derive(Debug, Clone)]
pub struct Api {
    snapshots: mpsc::Sender<SnapshotRequest>,
    commands: mpsc::Sender<Command>,
    events: Arc<Events>,
    shutdown: watch::Receiver<bool>,
}

/// The bound listeners, ready to serve.
#[derive(Debug)]
pub struct Listeners {
    unix: Option<(UnixListener, PathBuf)>,
    tcp: Option<(tokio::net::TcpListener, ServerTlsConfig)>,
}

impl Listeners {
    /// Where they listen, for the ready line: `unix:PATH`, `tls://ADDR`.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some((_, p)) = &self.unix {
            v.push(format!("unix:{}", p.display()));
        }
        if let Some(a) = self.tcp.as_ref().and_then(|(l, _)| l.local_addr().ok()) {
            v.push(format!("tls://{a}"));
        }
        if v.is_empty() {
            "nowhere (api disabled)".to_owned()
        } else {
            v.join(" and ")
        }
    }
}

/// Binds the configured listeners (before readiness is reported, so a bad setting fails
/// start-up).
///
/// # Errors
///
/// [`ApiError`] naming the listener and the reason.
pub async fn bind(cfg: &ApiConfig) -> Result<Listeners, ApiError> {
    let unix = match &cfg.socket {
        Some(path) => Some((bind_unix(path).await?, path.clone())),
        None => None,
    };
    let tcp = match (&cfg.listen, &cfg.tls) {
        (Some(addr), Some(tls)) => {
            let tcp_err = |reason: String| ApiError::Tcp {
                addr: *addr,
                reason,
            };
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| tcp_err(format!("reading {}: {e}", p.display())))
            };
            let mut tls_config = ServerTlsConfig::new()
                .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
            if let Some(ca) = &tls.client_ca {
                tls_config = tls_config.client_ca_root(Certificate::from_pem(read(ca)?));
            }
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| tcp_err(e.to_string()))?;
            Some((l, tls_config))
        }
        // Validation refuses a TCP listener without TLS.
        _ => None,
    };
    Ok(Listeners { unix, tcp })
}

async fn bind_unix(path: &Path) -> Result<UnixListener, ApiError> {
    let err = |reason: String| ApiError::Socket {
        path: path.to_owned(),
        reason,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(err(
                "another process answers on it (is sluice-control already running?)".to_owned(),
            ));
        }
        std::fs::remove_file(path).map_err(|e| err(format!("removing the stale socket: {e}")))?;
    }
    // Bound inside a private (0700) directory, made owner-only, then renamed into place: at
    // no moment can another user connect.
    let private = dir.join(format!(".sluice-control-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| err(format!("creating {}: {e}", private.display())))?;
    let tmp = private.join("sock");
    let bound = UnixListener::bind(&tmp)
        .map_err(|e| err(e.to_string()))
        .and_then(|l| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| err(e.to_string()))?;
            Ok(l)
        });
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// Resolves once `rx` reads true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            break;
        }
    }
}

/// Serves `listeners` until `shutdown` turns true; removes the socket file afterwards.
pub async fn serve(
    listeners: Listeners,
    snapshots: mpsc::Sender<SnapshotRequest>,
    commands: mpsc::Sender<Command>,
    events: Arc<Events>,
    shutdown: watch::Receiver<bool>,
) {
    let api = Api {
        snapshots,
        commands,
        events,
        shutdown: shutdown.clone(),
    };
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some((l, path)) = listeners.unix {
        let api = api.clone();
        let stop = stopped(shutdown.clone());
        match reflection() {
            Ok(refl) => {
                tasks.spawn(async move {
                    let r = Server::builder()
                        .add_service(refl)
                        .add_service(ControlServer::new(api))
                        .serve_with_incoming_shutdown(UnixListenerStream::new(l), stop)
                        .await;
                    if let Err(e) = r {
                        tracing::error!(error = %e, "api server (unix socket) failed");
                    }
                    let _ = std::fs::remove_file(&path);
                });
            }
            Err(e) => tracing::error!(error = %e, "reflection service"),
        }
    }
    if let Some((l, tls)) = listeners.tcp {
        let stop = stopped(shutdown.clone());
        match (reflection(), Server::builder().tls_config(tls)) {
            (Ok(refl), Ok(mut builder)) => {
                tasks.spawn(async move {
                    let r = builder
                        .add_service(refl)
                        .add_service(ControlServer::new(api))
                        .serve_with_incoming_shutdown(TcpListenerStream::new(l), stop)
                        .await;
                    if let Err(e) = r {
                        tracing::error!(error = %e, "api server (tcp, tls) failed");
                    }
                });
            }
            (Err(e), _) => tracing::error!(error = %e, "reflection service"),
            (_, Err(e)) => tracing::error!(error = %e, "api tls config"),
        }
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!("api server stopped");
}

// === impl Api ===

impl Api {
    async fn snapshot(&self) -> Result<Snapshot, Status> {
        let gone = || Status::unavailable("the table task has stopped");
        let (tx, rx) = oneshot::channel();
        self.snapshots.send(tx).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Sends one command to the table task and waits for its answer (the generation).
    async fn command(
        &self,
        service: String,
        backend: String,
        change: Change,
    ) -> Result<u64, Status> {
        let gone = || Status::unavailable("the table task has stopped");
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command {
                service,
                backend,
                change,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        rx.await
            .map_err(|_| gone())?
            .map_err(|e| command_status(&e))
    }

    async fn change(
        &self,
        service: String,
        backend: String,
        change: Change,
    ) -> Result<Response<pb::Backend>, Status> {
        if service.is_empty() || backend.is_empty() {
            return Err(Status::invalid_argument("service and backend are required"));
        }
        self.command(service.clone(), backend.clone(), change)
            .await?;
        let snap = self.snapshot().await?;
        snap.services
            .iter()
            .find(|s| s.name == service)
            .and_then(|s| {
                s.backends
                    .iter()
                    .find(|b| b.name == backend)
                    .map(|b| backend_pb(s, b))
            })
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("{service}/{backend} is no longer running")))
    }
}

fn command_status(e: &CommandError) -> Status {
    match e {
        CommandError::NoService(_) | CommandError::NoBackend { .. } => {
            Status::not_found(e.to_string())
        }
        CommandError::Weight(_) => Status::invalid_argument(e.to_string()),
        CommandError::Publish(_) => Status::unavailable(e.to_string()),
        CommandError::NoBgp => Status::failed_precondition(e.to_string()),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Control for Api {
    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::Status>, Status> {
        Ok(Response::new(status_pb(&self.snapshot().await?)))
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let s = self.snapshot().await?;
        Ok(Response::new(pb::ListServicesResponse {
            services: s.services.iter().map(service_pb).collect(),
        }))
    }

    async fn get_service(
        &self,
        r: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        let name = r.into_inner().name;
        let s = self.snapshot().await?;
        s.services
            .iter()
            .find(|x| x.name == name)
            .map(|x| Response::new(service_pb(x)))
            .ok_or_else(|| Status::not_found(format!("no service named {name:?}")))
    }

    async fn set_weight(
        &self,
        r: Request<pb::SetWeightRequest>,
    ) -> Result<Response<pb::Backend>, Status> {
        let r = r.into_inner();
        self.change(r.service, r.backend, Change::Weight(r.weight))
            .await
    }

    async fn drain(&self, r: Request<pb::DrainRequest>) -> Result<Response<pb::Backend>, Status> {
        let r = r.into_inner();
        self.change(r.service, r.backend, Change::Drain(true)).await
    }

    async fn undrain(
        &self,
        r: Request<pb::UndrainRequest>,
    ) -> Result<Response<pb::Backend>, Status> {
        let r = r.into_inner();
        self.change(r.service, r.backend, Change::Drain(false))
            .await
    }

    async fn list_peers(
        &self,
        _: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        let s = self.snapshot().await?;
        Ok(Response::new(pb::ListPeersResponse {
            peers: s.peers.iter().map(|(n, p)| peer_pb(n, p)).collect(),
        }))
    }

    async fn drain_node(
        &self,
        r: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        let drain = !r.into_inner().undrain;
        self.command(String::new(), String::new(), Change::DrainNode(drain))
            .await?;
        Ok(Response::new(pb::DrainNodeResponse {
            drained: drain,
            message: if drain {
                "announcing every VIP with GRACEFUL_SHUTDOWN (65535:0), then withdrawing them"
                    .to_owned()
            } else {
                "announcing every VIP again".to_owned()
            },
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        r: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let r = r.into_inner();
        let (backlog, mut rx) = self
            .events
            .follow(usize::try_from(r.backlog).unwrap_or(usize::MAX));
        let (tx, out) = mpsc::channel(64);
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            for e in &backlog {
                if tx.send(Ok(event_pb(e))).await.is_err() {
                    return;
                }
            }
            if !r.follow {
                return;
            }
            loop {
                tokio::select! {
                    e = rx.recv() => match e {
                        Ok(e) => {
                            if tx.send(Ok(event_pb(&e))).await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let lost = format!("fell {n} events behind; watch again");
                            let _ = tx.send(Err(Status::data_loss(lost))).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = tx.closed() => return,
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

// === conversions ===

fn status_pb(s: &Snapshot) -> pb::Status {
    pb::Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        node: s.node.clone(),
        config_path: s.config.clone(),
        region: s.region.clone(),
        generation: s.generation,
        uptime_seconds: s.uptime.as_secs_f64(),
        services: u32::try_from(s.services.len()).unwrap_or(u32::MAX),
        backends: u32::try_from(s.services.iter().map(|x| x.backends.len()).sum::<usize>())
            .unwrap_or(u32::MAX),
        workers: s
            .workers
            .iter()
            .map(|w| pb::Worker {
                index: w.index,
                pid: w.pid,
                alive: w.state == WorkerState::Live,
                heartbeat_age_ms: u64::try_from(w.heartbeat_age.as_millis()).unwrap_or(u64::MAX),
                acked_generation: w.ack.get(),
                rx_packets: w.counters.rx_packets,
                tx_packets: w.counters.tx_packets,
                rx_bytes: w.counters.rx_bytes,
                tx_bytes: w.counters.tx_bytes,
                conntrack_entries: w.counters.conntrack_entries,
                conntrack_capacity: w.counters.conntrack_capacity,
                drops: w.counters.drops.iter().sum(),
            })
            .collect(),
        last_reload: s.last_reload.as_ref().map(|r| pb::Reload {
            unix_ms: r.unix_ms,
            ok: r.ok,
            message: r.message.clone(),
        }),
        node_drained: s.node_drained,
    }
}

fn peer_pb(name: &str, p: &crate::bgp::PeerStatus) -> pb::Peer {
    use crate::bgp::State;
    let state = match p.state {
        State::Idle => pb::PeerState::Idle,
        State::Connect => pb::PeerState::Connect,
        State::Active => pb::PeerState::Active,
        State::OpenSent => pb::PeerState::OpenSent,
        State::OpenConfirm => pb::PeerState::OpenConfirm,
        State::Established => pb::PeerState::Established,
    };
    let mut out = pb::Peer {
        name: name.to_owned(),
        address: p.peer_address.to_string(),
        peer_asn: p.peer_asn,
        my_asn: p.my_asn,
        uptime_seconds: p.uptime.map_or(0.0, |d| d.as_secs_f64()),
        last_error: p.last_error.clone().unwrap_or_default(),
        updates_sent: p.updates_sent,
        updates_received: p.updates_received,
        prefixes_advertised: u32::try_from(p.prefixes_advertised).unwrap_or(u32::MAX),
        established_transitions: p.established_transitions,
        notifications_sent: p.notifications_sent,
        notifications_received: p.notifications_received,
        ..pb::Peer::default()
    };
    out.set_state(state);
    out
}

fn service_pb(s: &ServiceSample) -> pb::Service {
    let protocol = match s.key.proto() {
        6 => pb::Protocol::Tcp,
        17 => pb::Protocol::Udp,
        _ => pb::Protocol::Unspecified,
    };
    let mode = match s.mode {
        Mode::Nat => pb::Mode::Nat,
        Mode::Dsr => pb::Mode::Dsr,
        Mode::EncapIpip => pb::Mode::Ipip,
        Mode::EncapGue => pb::Mode::Gue,
    };
    let mut out = pb::Service {
        name: s.name.clone(),
        vip: s.key.vip().to_string(),
        port: u32::from(s.key.port()),
        table_size: s.table_size,
        backends: s.backends.iter().map(|b| backend_pb(s, b)).collect(),
        counters: Some(pb::Counters {
            packets: s.packets,
            bytes: s.bytes,
            connections: s.connections,
        }),
        ..pb::Service::default()
    };
    out.set_protocol(protocol);
    out.set_mode(mode);
    out
}

fn backend_pb(s: &ServiceSample, b: &BackendSample) -> pb::Backend {
    let state = match b.state {
        BackendState::Active => pb::BackendState::Active,
        BackendState::Draining => pb::BackendState::Draining,
        BackendState::Down => pb::BackendState::Down,
    };
    let health = match b.health {
        HealthReport::Unchecked => pb::Health::Unchecked,
        HealthReport::Unknown => pb::Health::Unknown,
        HealthReport::Up => pb::Health::Up,
        HealthReport::Down => pb::Health::Down,
    };
    let mut out = pb::Backend {
        service: s.name.clone(),
        name: b.name.clone(),
        address: b.addr.map(|a| a.to_string()).unwrap_or_default(),
        port: u32::from(b.port),
        weight: b.weight,
        configured_weight: b.configured_weight,
        drained: b.drained,
        table_share: b.table_share,
        counters: Some(pb::Counters {
            packets: b.packets,
            bytes: b.bytes,
            connections: b.connections,
        }),
        health_detail: b.health_detail.clone(),
        ..pb::Backend::default()
    };
    out.set_state(state);
    out.set_health(health);
    out
}

fn event_pb(e: &Event) -> pb::Event {
    let kind = match e.kind {
        EventKind::Started => pb::EventKind::Started,
        EventKind::ConfigApplied => pb::EventKind::ConfigApplied,
        EventKind::ConfigRejected => pb::EventKind::ConfigRejected,
        EventKind::HealthChanged => pb::EventKind::HealthChanged,
        EventKind::Drained => pb::EventKind::Drained,
        EventKind::Undrained => pb::EventKind::Undrained,
        EventKind::WeightChanged => pb::EventKind::WeightChanged,
        EventKind::WorkerChanged => pb::EventKind::WorkerChanged,
        EventKind::PublishFailed => pb::EventKind::PublishFailed,
        EventKind::PeerChanged => pb::EventKind::PeerChanged,
        EventKind::NodeDrained => pb::EventKind::NodeDrained,
        EventKind::NodeUndrained => pb::EventKind::NodeUndrained,
        EventKind::Kubernetes => pb::EventKind::Kubernetes,
    };
    let mut out = pb::Event {
        seq: e.seq,
        unix_ms: e.unix_ms,
        service: e.service.clone(),
        backend: e.backend.clone(),
        message: e.message.clone(),
        generation: e.generation,
        ..pb::Event::default()
    };
    out.set_kind(kind);
    out
}
