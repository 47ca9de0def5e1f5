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

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

pub use config::{
    Advertisement, BgpConfigError, GRACEFUL_SHUTDOWN, PeerConfig, Rib, RouteAttrs, parse_community,
    parse_large_community,
};
pub use fsm::State;

use fsm::Fsm;
use session::{Control, Session, StatusCell};

/// Why the speaker could not start.
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

#[derive(Debug)]
struct PeerEntry {
    cfg: PeerConfig,
    status: Arc<Mutex<StatusCell>>,
}

/// Handle on the running speaker: one task per peer plus one per listening socket.
///
/// Dropping it aborts every task at once (peers see the TCP connection close, no
/// NOTIFICATION); call [`Speaker::shutdown`] for an orderly stop.
#[derive(Debug)]
pub struct Speaker {
    desired: watch::Sender<Arc<Rib>>,
    control: watch::Sender<Control>,
    peers: Vec<PeerEntry>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    events: broadcast::Sender<BgpEvent>,
}

// === impl Speaker ===

impl Speaker {
    /// Validates `peers`, opens the listening sockets of the passive ones, and starts a session
    /// task per peer (active peers start connecting at once). Nothing is announced until
    /// [`Speaker::set_advertisements`].
    ///
    /// # Errors
    /// An invalid peer (a password longer than 80 bytes included), two peers
    /// with one address, or a listening socket that cannot be opened.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn start(peers: Vec<PeerConfig>) -> Result<Speaker, BgpError> {
        let mut seen = HashMap::new();
        for p in &peers {
            p.validate()?;
            if seen.insert(p.peer_address, ()).is_some() {
                return Err(BgpConfigError::DuplicatePeer(p.peer_address).into());
            }
        }
        // Open every listener before spawning anything, so a failure leaves nothing behind.
        let mut listeners: HashMap<SocketAddr, HashMap<IpAddr, usize>> = HashMap::new();
        for (i, p) in peers.iter().enumerate().filter(|(_, p)| p.passive) {
            let local = p.source_address.unwrap_or(match p.peer_address {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            });
            listeners
                .entry(SocketAddr::new(local, p.listen_port))
                .or_default()
                .insert(p.peer_address, i);
        }
        let mut bound = Vec::with_capacity(listeners.len());
        for (addr, routes) in listeners {
            let keys: Vec<(IpAddr, &str)> = routes
                .iter()
                .filter_map(|(peer, &i)| Some((*peer, peers.get(i)?.password.as_deref()?)))
                .collect();
            let l =
                bind_listener(addr, &keys).map_err(|source| BgpError::Listen { addr, source })?;
            bound.push((l, routes));
        }

        let (desired, _) = watch::channel(Arc::new(Rib::default()));
        let (control, _) = watch::channel(Control::Run);
        let (events, _) = broadcast::channel(256);
        let mut tasks = Vec::new();
        let mut entries = Vec::with_capacity(peers.len());
        let mut inboxes = Vec::with_capacity(peers.len());
        for p in peers {
            let status = Arc::new(Mutex::new(StatusCell::new()));
            let (tx, rx) = mpsc::channel(1);
            inboxes.push(tx);
            let fsm = Fsm::new(p.clone(), seed(&p));
            let session = Session::new(
                fsm,
                desired.subscribe(),
                control.subscribe(),
                rx,
                Arc::clone(&status),
                events.clone(),
            );
            tasks.push(tokio::spawn(session.run()));
            entries.push(PeerEntry { cfg: p, status });
        }
        for (listener, routes) in bound {
            let routes: HashMap<IpAddr, mpsc::Sender<TcpStream>> = routes
                .into_iter()
                .map(|(addr, i)| (addr, inboxes[i].clone()))
                .collect();
            tasks.push(tokio::spawn(accept_loop(
                listener,
                routes,
                control.subscribe(),
            )));
        }
        Ok(Speaker {
            desired,
            control,
            peers: entries,
            tasks: Mutex::new(tasks),
            events,
        })
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

    /// Every peer's state and counters, in configuration order.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        self.peers
            .iter()
            .map(|p| p.status.lock().snapshot(&p.cfg, now))
            .collect()
    }

    /// State changes and NOTIFICATIONs as they happen. A receiver that falls more than 256
    /// events behind loses the oldest (`RecvError::Lagged`).
    pub fn events(&self) -> broadcast::Receiver<BgpEvent> {
        self.events.subscribe()
    }

    /// Stops every session and waits for the tasks to finish.
    ///
    /// With `Some(wait)`, each Established session first re-announces its routes with the
    /// GRACEFUL_SHUTDOWN community 65535:0 (RFC 8326) so routers move traffic away, keeps them
    /// up for `wait`, withdraws them, and then sends NOTIFICATION Cease / Administrative
    /// Shutdown. With `None` it sends the NOTIFICATION at once (routers then drop the routes).
    /// Either way the listeners close. Tasks still running `wait` + 10 s later are aborted.
    pub async fn shutdown(&self, graceful: Option<Duration>) {
        self.control.send_replace(Control::Stop { graceful });
        let tasks = std::mem::take(&mut *self.tasks.lock());
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
        for t in self.tasks.get_mut().drain(..) {
            t.abort();
        }
    }
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
fn bind_listener(addr: SocketAddr, keys: &[(IpAddr, &str)]) -> io::Result<TcpListener> {
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
/// others.
async fn accept_loop(
    listener: TcpListener,
    routes: HashMap<IpAddr, mpsc::Sender<TcpStream>>,
    mut control: watch::Receiver<Control>,
) {
    loop {
        tokio::select! {
            r = control.changed() => {
                if r.is_err() || matches!(*control.borrow_and_update(), Control::Stop { .. }) {
                    return;
                }
            }
            r = listener.accept() => match r {
                Ok((stream, from)) => {
                    let ip = from.ip().to_canonical();
                    match routes.get(&ip) {
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
            },
        }
    }
}
