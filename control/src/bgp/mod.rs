//! The BGP speaker: one session per configured peer, announcing the VIPs the daemon asks for.
//!
//! ```text
//!  daemon ── set_advertisements(Vec<Advertisement>) ──► watch<Arc<Rib>> ──┬─► Session (peer 1) ─ TCP ─ router
//!         ◄─ peers() / events() ───────────────────── status + broadcast ─┴─► Session (peer 2) ─ TCP ─ router
//!                                        listener(s) ─ accepted TCP ─► passive sessions
//! ```
//!
//! - [`config`]: [`PeerConfig`] and [`Advertisement`] (MetalLB's `BGPPeer` / `BGPAdvertisement`
//!   shapes) and their validation;
//! - [`fsm`]: the RFC 4271 state machine, pure (no I/O, no clock);
//! - [`message`]: OPEN/UPDATE/NOTIFICATION building and checking over netgauze's types;
//! - [`codec`]: the framing (header checks, then netgauze's `BgpCodec`);
//! - `session`: the per-peer task that runs the machine over a socket;
//! - [`backoff`]: the jittered exponential connect-retry back-off.
//!
//! Guarantees: every session that is Established holds exactly the current advertisement set
//! (restricted to the address families the peer negotiated); a change is on the wire as soon
//! as [`Speaker::set_advertisements`] returns and the session task runs (well under a second);
//! every protocol error is answered with the RFC's NOTIFICATION and followed by a reconnect
//! with back-off; received routes are counted, never installed.
//!
//! TCP MD5 signatures (RFC 2385): a peer's password is installed on its socket before connect
//! (active) or on the listening socket for its address (passive).
//!
//! The peer set can change while the speaker runs ([`Speaker::set_peers`], fed from
//! Kubernetes `BGPPeer` objects): a peer whose configuration is unchanged keeps its session
//! and its TCP connection; a removed peer is sent Cease / Peer De-configured, a changed one
//! Cease / Other Configuration Change and then a new session (RFC 4486). Listening sockets
//! follow the passive peers: one per local (address, port), its routing table and MD5 keys
//! updated in place, closed when no passive peer uses it.
//!
//! Not implemented (yet): RFC 8950 IPv4-over-IPv6 next hops, graceful restart, ADD-PATH, enhanced route refresh, and
//! connection collision detection (a peer is either active or passive, never both).

pub mod backoff;
pub mod codec;
pub mod config;
pub mod fsm;
// The fuzz target's body (`decode_and_judge`); compiled only for tests and under `cargo fuzz`
// (`--cfg fuzzing`), see the inner `cfg` at the top of `fuzz.rs`.
pub mod fuzz;
pub mod message;
mod session;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use config::{
    Advertisement, BgpConfigError, GRACEFUL_SHUTDOWN, PeerConfig, Rib, RouteAttrs, parse_community,
    parse_large_community,
};
pub use fsm::{State, StopReason};

use fsm::Fsm;
use session::{Control, Session, StatusCell};

/// Why the speaker could not start or take a new peer set.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    /// A peer's configuration is invalid.
    #[error(transparent)]
    Config(#[from] BgpConfigError),
    /// A passive peer's listening socket could not be opened (port in use, address not local,
    /// no permission for port 179).
    #[error("cannot listen on {addr} for passive BGP peers: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// [`Speaker::set_peers`] after [`Speaker::shutdown`].
    #[error("the BGP speaker has been shut down")]
    ShutDown,
}

/// A peer's state as [`Speaker::peers`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's address.
    pub peer_address: IpAddr,
    /// The peer's AS number.
    pub peer_asn: u32,
    /// Our AS number on this session.
    pub my_asn: u32,
    /// The session state.
    pub state: State,
    /// How long the session has been Established (`None` when it is not).
    pub uptime: Option<Duration>,
    /// The last thing that went wrong (cleared when the session comes up).
    pub last_error: Option<String>,
    /// UPDATE messages sent (End-of-RIB included), over the speaker's life.
    pub updates_sent: u64,
    /// UPDATE messages received, over the speaker's life.
    pub updates_received: u64,
    /// Prefixes the peer currently has from us.
    pub prefixes_advertised: usize,
    /// How many times the session reached Established (1 + flaps).
    pub established_transitions: u64,
    /// NOTIFICATIONs sent.
    pub notifications_sent: u64,
    /// NOTIFICATIONs received.
    pub notifications_received: u64,
    /// Malformed path attributes received and ignored (RFC 7606 treat-as-withdraw).
    pub malformed_attributes: u64,
}

/// Something that happened to a session (for logs and the API's event stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BgpEvent {
    /// The session changed state.
    StateChanged {
        /// The peer.
        peer: IpAddr,
        /// Old state.
        from: State,
        /// New state.
        to: State,
    },
    /// We sent a NOTIFICATION (code, subcode per RFC 4271 §4.5).
    NotificationSent {
        /// The peer.
        peer: IpAddr,
        /// Error code.
        code: u8,
        /// Error subcode.
        subcode: u8,
    },
    /// The peer sent a NOTIFICATION.
    NotificationReceived {
        /// The peer.
        peer: IpAddr,
        /// Error code.
        code: u8,
        /// Error subcode.
        subcode: u8,
    },
}

/// One configured peer: its configuration, the status its session publishes, and the handles
/// to stop it and to hand it accepted connections.
#[derive(Debug)]
struct PeerEntry {
    cfg: PeerConfig,
    status: Arc<Mutex<StatusCell>>,
    /// The session's own control channel. [`watch::Sender::closed`] completes once the
    /// session task has ended (it holds the only receiver).
    control: watch::Sender<Control>,
    /// Where a listener hands this peer's accepted connections (passive peers only).
    inbox: Option<mpsc::Sender<TcpStream>>,
}

/// Peer address → the passive session that takes its connections, read by the accept loop
/// for every connection and replaced whole by [`Speaker::set_peers`].
type Routes = Arc<Mutex<HashMap<IpAddr, mpsc::Sender<TcpStream>>>>;

/// One listening socket shared by the passive peers with the same local (address, port).
struct Listener {
    /// Shared with the accept loop; kept here to change the socket's MD5 keys.
    socket: Arc<TcpListener>,
    routes: Routes,
    /// The TCP MD5 keys installed on `socket`, per peer.
    keys: HashMap<IpAddr, String>,
    /// The accept loop; aborting it (and dropping `socket`) closes the socket.
    task: JoinHandle<()>,
}

/// Everything [`Speaker::set_peers`] and [`Speaker::shutdown`] change. Only ever locked
/// without an `.await` in between.
#[derive(Debug, Default)]
struct Inner {
    /// In configuration order.
    peers: Vec<PeerEntry>,
    listeners: BTreeMap<SocketAddr, Listener>,
    /// Every session task, those of removed and replaced peers included until they end.
    tasks: Vec<JoinHandle<()>>,
    /// [`Speaker::shutdown`] ran: no session starts any more.
    stopped: bool,
}

impl std::fmt::Debug for Listener {
    // By hand so that the MD5 keys never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("socket", &self.socket)
            .field("routes", &self.routes.lock().keys().collect::<Vec<_>>())
            .field("keys_for", &self.keys.keys().collect::<Vec<_>>())
            .field("task", &self.task)
            .finish()
    }
}

// === impl Inner ===

impl Inner {
    /// Starts accepting on `socket` (bound to `addr`, with `keys` installed) for the passive
    /// peers of `addr`.
    fn adopt_listener(
        &mut self,
        addr: SocketAddr,
        socket: TcpListener,
        keys: HashMap<IpAddr, String>,
    ) {
        let routes = Arc::new(Mutex::new(routes_to(&self.peers, addr)));
        let socket = Arc::new(socket);
        let task = tokio::spawn(accept_loop(Arc::clone(&socket), Arc::clone(&routes)));
        let l = Listener {
            socket,
            routes,
            keys,
            task,
        };
        self.listeners.insert(addr, l);
    }
}

/// Handle on the running speaker: one task per peer plus one per listening socket.
///
/// The peer set can change at run time ([`Speaker::set_peers`]); a peer whose configuration
/// is unchanged keeps its session.
///
/// Dropping it aborts every task at once (peers see the TCP connection close, no
/// NOTIFICATION); call [`Speaker::shutdown`] for an orderly stop.
#[derive(Debug)]
pub struct Speaker {
    desired: watch::Sender<Arc<Rib>>,
    events: broadcast::Sender<BgpEvent>,
    inner: Mutex<Inner>,
    /// Serialises [`Speaker::set_peers`] and [`Speaker::shutdown`], which wait in between
    /// their changes to `inner`.
    reconfig: tokio::sync::Mutex<()>,
}

// === impl Speaker ===

impl Speaker {
    /// Validates `peers`, opens the listening sockets of the passive ones, and starts a session
    /// task per peer (active peers start connecting at once). Nothing is announced until
    /// [`Speaker::set_advertisements`]. An empty list is valid: peers can come later with
    /// [`Speaker::set_peers`].
    ///
    /// # Errors
    /// An invalid peer (a password longer than 80 bytes included), two peers
    /// with one address, or a listening socket that cannot be opened; nothing is left
    /// running.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(peers: Vec<PeerConfig>) -> Result<Speaker, BgpError> {
        validate_peers(&peers)?;
        // Open every listener before spawning anything, so a failure leaves nothing behind.
        let mut bound = BTreeMap::new();
        for (addr, members) in listener_groups(peers.iter()) {
            let keys = md5_keys(members.iter().filter_map(|&i| peers.get(i)));
            let socket =
                bind_listener(addr, &keys).map_err(|source| BgpError::Listen { addr, source })?;
            bound.insert(addr, (socket, keys));
        }
        let speaker = Speaker {
            desired: watch::channel(Arc::new(Rib::default())).0,
            events: broadcast::channel(256).0,
            inner: Mutex::new(Inner::default()),
            reconfig: tokio::sync::Mutex::new(()),
        };
        {
            let mut inner = speaker.inner.lock();
            for p in peers {
                let status = Arc::new(Mutex::new(StatusCell::new()));
                let (entry, task) = speaker.spawn_session(p, status, None);
                inner.peers.push(entry);
                inner.tasks.push(task);
            }
            for (addr, (socket, keys)) in bound {
                inner.adopt_listener(addr, socket, keys);
            }
        }
        Ok(speaker)
    }

    /// Replaces the peer set with `peers` (configuration order as given), changing only what
    /// differs from the running set, peers being told apart by address:
    /// - a peer whose [`PeerConfig`] is equal to its running one keeps its session untouched
    ///   (same TCP connection, no UPDATE);
    /// - a peer no longer listed is sent NOTIFICATION Cease / Peer De-configured (RFC 4486
    ///   subcode 3) and its session ends, so the router drops the routes it learnt from it;
    /// - a peer with a changed configuration is sent Cease / Other Configuration Change
    ///   (subcode 6, what BIRD sends when a reconfiguration restarts a session); a new session
    ///   with the new configuration starts once the old one has ended, keeping the peer's
    ///   counters ([`Speaker::peers`]);
    /// - a new peer starts: an active one connects, a passive one is routed from the listener
    ///   of its local (address, port), which is opened if no other passive peer uses it.
    ///
    /// Listeners follow the passive peers: routes and TCP MD5 keys of an open listener are
    /// updated in place, a listener no passive peer uses any more is closed. New sessions
    /// announce the current advertisement set once Established, as at [`Speaker::start`].
    /// May be called before the first [`Speaker::set_advertisements`] (the set is then empty).
    ///
    /// The new set is in force when this returns (the stops themselves finish in the
    /// sessions' tasks). Cancelling the call after it started waiting leaves the new peers in
    /// force and may leave new listeners unopened; calling again with the same list finishes
    /// the job, as it retries any listener that failed to open.
    ///
    /// # Errors
    /// - [`BgpError::Config`]: an invalid peer or two peers with one address (the same rules
    ///   as [`Speaker::start`]); nothing changed;
    /// - [`BgpError::Listen`]: a listening socket could not be opened, or an MD5 key could
    ///   not be set on one; everything else is applied, the passive peers behind that
    ///   socket wait in Active with the error in their `last_error`, and the next call tries
    ///   again;
    /// - [`BgpError::ShutDown`]: [`Speaker::shutdown`] has run; nothing changed.
    pub async fn set_peers(&self, peers: Vec<PeerConfig>) -> Result<(), BgpError> {
        validate_peers(&peers)?;
        let _serial = self.reconfig.lock().await;
        let mut errors = Vec::new();
        let (wanted, closing) = {
            let mut inner = self.inner.lock();
            if inner.stopped {
                return Err(BgpError::ShutDown);
            }
            inner.tasks.retain(|t| !t.is_finished());
            self.replace_sessions(&mut inner, peers);
            let wanted = listener_groups(inner.peers.iter().map(|p| &p.cfg));
            // Close what no passive peer needs any more; abort is not immediate, so the
            // socket is only known closed once its task has been awaited below.
            let obsolete: Vec<SocketAddr> = inner
                .listeners
                .keys()
                .filter(|a| !wanted.contains_key(a))
                .copied()
                .collect();
            let mut closing = Vec::with_capacity(obsolete.len());
            for addr in obsolete {
                if let Some(l) = inner.listeners.remove(&addr) {
                    debug!(%addr, "closing a BGP listener no passive peer uses");
                    l.task.abort();
                    closing.push(l.task);
                }
            }
            let inner = &mut *inner;
            for (addr, members) in &wanted {
                if let Some(l) = inner.listeners.get_mut(addr) {
                    if let Err(source) = update_listener(l, &inner.peers, members) {
                        errors.push((*addr, source));
                    }
                    *l.routes.lock() = routes_to(&inner.peers, *addr);
                }
            }
            (wanted, closing)
        };
        // A new listener may need the address of one just closed (a wildcard replaced by a
        // specific address on the same port): open new ones only once the old are gone.
        for t in closing {
            let _ = t.await;
        }
        let mut inner = self.inner.lock();
        for (addr, members) in wanted {
            if inner.listeners.contains_key(&addr) {
                continue;
            }
            let keys = md5_keys(
                members
                    .iter()
                    .filter_map(|&i| inner.peers.get(i).map(|e| &e.cfg)),
            );
            match bind_listener(addr, &keys) {
                Ok(socket) => inner.adopt_listener(addr, socket, keys),
                Err(source) => errors.push((addr, source)),
            }
        }
        let mut first = None;
        for (addr, source) in errors {
            let e = BgpError::Listen { addr, source };
            warn!(error = %e, "BGP listener not ready");
            for p in inner
                .peers
                .iter()
                .filter(|p| p.cfg.passive && listen_addr(&p.cfg) == addr)
            {
                p.status.lock().set_error(e.to_string());
            }
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }

    /// Moves `inner.peers` to `peers`: keeps unchanged sessions, stops removed and changed
    /// ones, starts new ones. Listeners are left to the caller.
    fn replace_sessions(&self, inner: &mut Inner, peers: Vec<PeerConfig>) {
        let mut old: HashMap<IpAddr, PeerEntry> = inner
            .peers
            .drain(..)
            .map(|e| (e.cfg.peer_address, e))
            .collect();
        let mut next = Vec::with_capacity(peers.len());
        for cfg in peers {
            match old.remove(&cfg.peer_address) {
                Some(e) if e.cfg == cfg => next.push(e),
                Some(e) => {
                    info!(peer = %cfg.peer_address, "BGP peer changed; restarting its session");
                    e.control
                        .send_replace(Control::Remove(StopReason::ConfigurationChanged));
                    let (entry, task) = self.spawn_session(cfg, e.status, Some(e.control));
                    next.push(entry);
                    inner.tasks.push(task);
                }
                None => {
                    info!(peer = %cfg.peer_address, "BGP peer added");
                    let status = Arc::new(Mutex::new(StatusCell::new()));
                    let (entry, task) = self.spawn_session(cfg, status, None);
                    next.push(entry);
                    inner.tasks.push(task);
                }
            }
        }
        for e in old.into_values() {
            info!(peer = %e.cfg.peer_address, "BGP peer removed");
            // The session reads this even after the sender is gone (see `Session::run`).
            e.control
                .send_replace(Control::Remove(StopReason::PeerDeconfigured));
        }
        inner.peers = next;
    }

    /// A session task for `cfg`. With `after` (the control channel of the session it
    /// replaces), it starts only once that session has ended, so that its NOTIFICATION is
    /// out before the new connection is made.
    fn spawn_session(
        &self,
        cfg: PeerConfig,
        status: Arc<Mutex<StatusCell>>,
        after: Option<watch::Sender<Control>>,
    ) -> (PeerEntry, JoinHandle<()>) {
        let (control, control_rx) = watch::channel(Control::Run);
        let (inbox, incoming) = mpsc::channel(1);
        let session = Session::new(
            Fsm::new(cfg.clone(), seed(&cfg)),
            self.desired.subscribe(),
            control_rx,
            incoming,
            Arc::clone(&status),
            self.events.clone(),
        );
        let task = tokio::spawn(async move {
            if let Some(previous) = after {
                previous.closed().await;
            }
            session.run().await;
        });
        let inbox = cfg.passive.then_some(inbox);
        let entry = PeerEntry {
            cfg,
            status,
            control,
            inbox,
        };
        (entry, task)
    }

    /// Replaces the set of routes to announce. Every Established session sends the difference
    /// to what it has sent (withdraws, then announces) right away; sessions that come up later
    /// send the whole set.
    ///
    /// # Errors
    /// An invalid advertisement (see [`Rib::build`]); the previous set stays in force.
    pub fn set_advertisements(&self, ads: Vec<Advertisement>) -> Result<(), BgpConfigError> {
        let rib = Rib::build(&ads)?;
        self.desired.send_if_modified(|cur| {
            if **cur == rib {
                false
            } else {
                *cur = Arc::new(rib);
                true
            }
        });
        Ok(())
    }

    /// The set currently asked for.
    pub fn advertisements(&self) -> Arc<Rib> {
        self.desired.borrow().clone()
    }

    /// Every configured peer's state and counters, in configuration order (the order of the
    /// last [`Speaker::set_peers`], or of [`Speaker::start`]).
    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        self.inner
            .lock()
            .peers
            .iter()
            .map(|p| p.status.lock().snapshot(&p.cfg, now))
            .collect()
    }

    /// State changes and NOTIFICATIONs as they happen, of every session (those of removed
    /// peers included, up to their final NOTIFICATION). A receiver that falls more than 256
    /// events behind loses the oldest (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<BgpEvent> {
        self.events.subscribe()
    }

    /// Stops every session (peers added by [`Speaker::set_peers`] included) and waits for the
    /// tasks to finish. Later calls to [`Speaker::set_peers`] are refused.
    ///
    /// With `Some(wait)`, each Established session first re-announces its routes with the
    /// GRACEFUL_SHUTDOWN community 65535:0 (RFC 8326) so routers move traffic away, keeps them
    /// up for `wait`, withdraws them, and then sends NOTIFICATION Cease / Administrative
    /// Shutdown. With `None` it sends the NOTIFICATION at once (routers then drop the routes).
    /// Either way the listeners close. Tasks still running `wait` + 10 s later are aborted.
    pub async fn shutdown(&self, graceful: Option<Duration>) {
        let _serial = self.reconfig.lock().await;
        let tasks = {
            let mut inner = self.inner.lock();
            inner.stopped = true;
            for p in &inner.peers {
                p.control.send_if_modified(|c| {
                    // A session already told to go keeps its reason.
                    if *c == Control::Run {
                        *c = Control::Stop { graceful };
                        true
                    } else {
                        false
                    }
                });
            }
            let mut tasks = std::mem::take(&mut inner.tasks);
            for (_, l) in std::mem::take(&mut inner.listeners) {
                l.task.abort();
                tasks.push(l.task);
            }
            tasks
        };
        let deadline = Instant::now() + graceful.unwrap_or_default() + Duration::from_secs(10);
        for mut t in tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                warn!("BGP task did not stop in time; aborting it");
                t.abort();
            }
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        for t in inner.tasks.drain(..) {
            t.abort();
        }
        for (_, l) in std::mem::take(&mut inner.listeners) {
            l.task.abort();
        }
    }
}

/// The checks [`Speaker::start`] and [`Speaker::set_peers`] run before changing anything.
fn validate_peers(peers: &[PeerConfig]) -> Result<(), BgpConfigError> {
    let mut seen = HashSet::with_capacity(peers.len());
    for p in peers {
        p.validate()?;
        if !seen.insert(p.peer_address) {
            return Err(BgpConfigError::DuplicatePeer(p.peer_address));
        }
    }
    Ok(())
}

/// The local address a passive peer is accepted on: its source address (or the wildcard of
/// its family) and its listen port.
fn listen_addr(p: &PeerConfig) -> SocketAddr {
    let local = p.source_address.unwrap_or(match p.peer_address {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    SocketAddr::new(local, p.listen_port)
}

/// The listeners `peers` need: local address → positions (in `peers`) of the passive peers
/// behind it.
fn listener_groups<'a>(
    peers: impl Iterator<Item = &'a PeerConfig>,
) -> BTreeMap<SocketAddr, Vec<usize>> {
    let mut out: BTreeMap<SocketAddr, Vec<usize>> = BTreeMap::new();
    for (i, p) in peers.enumerate().filter(|(_, p)| p.passive) {
        out.entry(listen_addr(p)).or_default().push(i);
    }
    out
}

/// The MD5 keys of `peers` that have a password.
fn md5_keys<'a>(peers: impl Iterator<Item = &'a PeerConfig>) -> HashMap<IpAddr, String> {
    peers
        .filter_map(|p| Some((p.peer_address, p.password.clone()?)))
        .collect()
}

/// Which session takes the connections of each peer on the listener at `addr`.
fn routes_to(peers: &[PeerEntry], addr: SocketAddr) -> HashMap<IpAddr, mpsc::Sender<TcpStream>> {
    peers
        .iter()
        .filter(|p| p.cfg.passive && listen_addr(&p.cfg) == addr)
        .filter_map(|p| Some((p.cfg.peer_address, p.inbox.clone()?)))
        .collect()
}

/// Brings the MD5 keys of an open listener in line with the passive peers `members` (indices
/// into `peers`). `l.keys` records what the kernel has, so a failed step is retried next time.
fn update_listener(l: &mut Listener, peers: &[PeerEntry], members: &[usize]) -> io::Result<()> {
    use std::os::fd::AsFd as _;

    let want = md5_keys(members.iter().filter_map(|&i| peers.get(i).map(|e| &e.cfg)));
    let fd = l.socket.as_fd();
    let stale: Vec<IpAddr> = l
        .keys
        .keys()
        .filter(|p| !want.contains_key(p))
        .copied()
        .collect();
    let mut result = Ok(());
    for peer in stale {
        match sluice_dataplane::io::sockopt::set_tcp_md5sig(fd, peer, b"") {
            // ENOENT: the kernel has no key for that peer; the goal is reached either way.
            Ok(()) => {
                l.keys.remove(&peer);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                l.keys.remove(&peer);
            }
            Err(e) => result = Err(e),
        }
    }
    for (peer, key) in want {
        if l.keys.get(&peer) == Some(&key) {
            continue;
        }
        match sluice_dataplane::io::sockopt::set_tcp_md5sig(fd, peer, key.as_bytes()) {
            Ok(()) => {
                l.keys.insert(peer, key);
            }
            Err(e) => result = Err(e),
        }
    }
    result
}

/// A per-peer jitter seed: fixed for a given router id and peer, different between peers.
fn seed(p: &PeerConfig) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
    let addr = match p.peer_address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    for b in p.router_id.octets().iter().chain(addr.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A listening socket on `addr`, with the TCP MD5 key of each passive peer that has one.
fn bind_listener(addr: SocketAddr, keys: &HashMap<IpAddr, String>) -> io::Result<TcpListener> {
    use std::os::fd::AsFd as _;

    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    for (peer, key) in keys {
        sluice_dataplane::io::sockopt::set_tcp_md5sig(sock.as_fd(), *peer, key.as_bytes())?;
    }
    if addr.is_ipv6() {
        // So that an IPv4 wildcard listener on the same port can coexist.
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(64)?;
    TcpListener::from_std(sock.into())
}

/// Hands each accepted connection to the passive session of its source address; closes the
/// others. Runs until aborted.
async fn accept_loop(listener: Arc<TcpListener>, routes: Routes) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let ip = from.ip().to_canonical();
                let inbox = routes.lock().get(&ip).cloned();
                match inbox {
                    Some(tx) => {
                        if tx.try_send(stream).is_err() {
                            debug!(%from, "BGP session busy; closing the new connection");
                        }
                    }
                    None => debug!(%from, "connection from an unconfigured BGP peer; closing"),
                }
            }
            Err(e) => {
                warn!(error = %e, "BGP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str, source: Option<&str>, port: u16, passive: bool) -> PeerConfig {
        PeerConfig {
            source_address: source.map(|s| s.parse().unwrap()),
            listen_port: port,
            passive,
            ..PeerConfig::new(
                64513,
                64512,
                addr.parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
            )
        }
    }

    #[test]
    fn passive_peers_share_one_listener_per_local_address() {
        let peers = [
            peer("192.0.2.1", Some("192.0.2.2"), 179, true),
            peer("192.0.2.3", None, 179, false), // active: no listener
            peer("192.0.2.4", Some("192.0.2.2"), 179, true),
            peer("192.0.2.5", None, 179, true),
            peer("2001:db8::1", None, 1179, true),
        ];
        let groups = listener_groups(peers.iter());
        let want: BTreeMap<SocketAddr, Vec<usize>> = [
            ("0.0.0.0:179".parse().unwrap(), vec![3]),
            ("192.0.2.2:179".parse().unwrap(), vec![0, 2]),
            ("[::]:1179".parse().unwrap(), vec![4]),
        ]
        .into_iter()
        .collect();
        assert_eq!(groups, want);
    }

    #[test]
    fn validation_refuses_duplicates_and_bad_peers() {
        let a = peer("192.0.2.1", None, 179, true);
        assert!(validate_peers(&[]).is_ok());
        assert_eq!(
            validate_peers(&[a.clone(), peer("192.0.2.1", None, 1179, false)]),
            Err(BgpConfigError::DuplicatePeer(a.peer_address))
        );
        let bad = PeerConfig {
            connect_retry: Duration::ZERO,
            ..peer("192.0.2.9", None, 179, false)
        };
        assert!(matches!(
            validate_peers(&[a, bad]),
            Err(BgpConfigError::BadConnectRetry { .. })
        ));
    }

    #[tokio::test]
    async fn debug_output_never_shows_md5_keys() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let cfg = PeerConfig {
            password: Some("s3cret-md5-key".into()),
            ..peer("127.0.0.2", Some("127.0.0.1"), port, true)
        };
        let speaker = Speaker::start(vec![cfg]).unwrap();
        let text = format!("{speaker:?}");
        assert!(text.contains("127.0.0.2"), "{text}");
        assert!(!text.contains("s3cret-md5-key"), "{text}");
        speaker.shutdown(None).await;
    }
}
