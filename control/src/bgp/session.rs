//! The per-peer task: owns one [`Fsm`], the TCP connection, the timers and the Adj-RIB-Out,
//! and carries out what the machine asks for.
//!
//! Guarantees:
//! - the machine is the only place that decides; this task only turns sockets, timers and the
//!   desired table into [`Event`]s and [`Action`]s into I/O;
//! - once Established, the peer holds exactly the desired routes of the families it
//!   negotiated: every change of the desired set is diffed against what this session sent
//!   (the Adj-RIB-Out) and sent as withdraw + announce UPDATEs as soon as it is seen;
//! - a NOTIFICATION is flushed before the connection is closed, and the close is a FIN after
//!   which unread input is drained (so the peer reads the NOTIFICATION rather than a reset);
//! - time comes from `tokio::time` only.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use netgauze_iana::address_family::AddressType;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use super::codec::{DecodeError, Received, SessionCodec};
use super::config::{GRACEFUL_SHUTDOWN, PeerConfig, Rib, RouteAttrs};
use super::fsm::{Action, Event, Fsm, State, StopReason, Timer};
use super::message::{
    UpdateParams, announce, build_open, describe_notification, end_of_rib, notification_codes,
    prefix_counts, withdraw,
};
use super::{BgpEvent, PeerStatus};

/// How long one write may take before the connection counts as broken.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closed connection is drained before it is dropped.
const LINGER: Duration = Duration::from_secs(2);

/// What the speaker tells a session (each session has its own channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Keep going.
    Run,
    /// The speaker shuts down; with `Some(wait)`, drain first (RFC 8326).
    Stop {
        /// How long routes stay up with GRACEFUL_SHUTDOWN before they are withdrawn.
        graceful: Option<Duration>,
    },
    /// The peer left the configuration or changed: stop at once (no drain) with this Cease
    /// subcode.
    Remove(StopReason),
}

/// Counters and state one session publishes for [`Speaker::peers`](super::Speaker::peers).
#[derive(Debug)]
pub(crate) struct StatusCell {
    state: State,
    established_at: Option<Instant>,
    last_error: Option<String>,
    updates_sent: u64,
    updates_received: u64,
    prefixes_advertised: usize,
    established_transitions: u64,
    notifications_sent: u64,
    notifications_received: u64,
    malformed_attributes: u64,
}

impl StatusCell {
    pub(crate) fn new() -> Self {
        StatusCell {
            state: State::Idle,
            established_at: None,
            last_error: None,
            updates_sent: 0,
            updates_received: 0,
            prefixes_advertised: 0,
            established_transitions: 0,
            notifications_sent: 0,
            notifications_received: 0,
            malformed_attributes: 0,
        }
    }

    /// Records a problem found outside the session (a listener that cannot be opened).
    pub(crate) fn set_error(&mut self, text: String) {
        self.last_error = Some(text);
    }

    pub(crate) fn snapshot(&self, cfg: &PeerConfig, now: Instant) -> PeerStatus {
        PeerStatus {
            peer_address: cfg.peer_address,
            peer_asn: cfg.peer_asn,
            my_asn: cfg.my_asn,
            state: self.state,
            uptime: self
                .established_at
                .map(|t| now.saturating_duration_since(t)),
            last_error: self.last_error.clone(),
            updates_sent: self.updates_sent,
            updates_received: self.updates_received,
            prefixes_advertised: self.prefixes_advertised,
            established_transitions: self.established_transitions,
            notifications_sent: self.notifications_sent,
            notifications_received: self.notifications_received,
            malformed_attributes: self.malformed_attributes,
        }
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// What woke the task up.
enum Input {
    Event(Event),
    Received(Received),
    Desired,
    Control,
    Accepted(TcpStream),
    DrainDone,
    SpeakerGone,
    Nothing,
}

/// One peer's task.
pub(crate) struct Session {
    fsm: Fsm,
    desired: watch::Receiver<Arc<Rib>>,
    control: watch::Receiver<Control>,
    incoming: mpsc::Receiver<TcpStream>,
    incoming_open: bool,
    status: Arc<Mutex<StatusCell>>,
    events: broadcast::Sender<BgpEvent>,
    conn: Option<Framed<TcpStream, SessionCodec>>,
    connecting: Option<Connecting>,
    deadlines: [Option<Instant>; 4],
    /// What the peer has from us, with the attributes it has them with.
    adj_out: BTreeMap<IpNet, RouteAttrs>,
    /// Graceful shutdown: routes carry GRACEFUL_SHUTDOWN until this deadline.
    draining: Option<Instant>,
    /// Graceful shutdown reached its end: announce nothing.
    withdraw_all: bool,
}

impl Session {
    pub(crate) fn new(
        fsm: Fsm,
        desired: watch::Receiver<Arc<Rib>>,
        control: watch::Receiver<Control>,
        incoming: mpsc::Receiver<TcpStream>,
        status: Arc<Mutex<StatusCell>>,
        events: broadcast::Sender<BgpEvent>,
    ) -> Self {
        Session {
            fsm,
            desired,
            control,
            incoming,
            incoming_open: true,
            status,
            events,
            conn: None,
            connecting: None,
            deadlines: [None; 4],
            adj_out: BTreeMap::new(),
            draining: None,
            withdraw_all: false,
        }
    }

    fn peer(&self) -> IpAddr {
        self.fsm.config().peer_address
    }

    /// Runs until the speaker stops it (or is dropped). A session told to stop before it
    /// ran never starts.
    pub(crate) async fn run(mut self) {
        if *self.control.borrow_and_update() != Control::Run {
            return;
        }
        info!(peer = %self.peer(), passive = self.fsm.config().passive, "BGP session starting");
        self.handle(Event::Start).await;
        let reason = loop {
            let input = self.next_input().await;
            match input {
                Input::Event(e) => self.handle(e).await,
                Input::Received(r) => {
                    let e = self.on_message(r);
                    self.handle(e).await;
                }
                Input::Desired => self.sync_or_fail().await,
                Input::Accepted(stream) => self.on_accept(stream).await,
                Input::Control => {
                    let c = *self.control.borrow_and_update();
                    match c {
                        Control::Run => {}
                        Control::Remove(reason) => break reason,
                        Control::Stop {
                            graceful: Some(wait),
                        } if self.fsm.state() == State::Established && self.draining.is_none() => {
                            info!(peer = %self.peer(), ?wait, "graceful shutdown: announcing GRACEFUL_SHUTDOWN");
                            self.draining = Some(Instant::now() + wait);
                            self.sync_or_fail().await;
                        }
                        Control::Stop { .. } if self.draining.is_some() => {}
                        Control::Stop { .. } => break StopReason::Shutdown,
                    }
                }
                Input::DrainDone => {
                    info!(peer = %self.peer(), "graceful shutdown: withdrawing");
                    self.withdraw_all = true;
                    self.sync_or_fail().await;
                    break StopReason::Shutdown;
                }
                Input::SpeakerGone => match *self.control.borrow() {
                    Control::Remove(reason) => break reason,
                    Control::Run | Control::Stop { .. } => break StopReason::Shutdown,
                },
                Input::Nothing => {}
            }
            if self.draining.is_some() && self.fsm.state() != State::Established {
                // The session dropped while draining: nothing left to drain.
                break StopReason::Shutdown;
            }
        };
        self.handle(Event::Stop(reason)).await;
        info!(peer = %self.peer(), ?reason, "BGP session stopped");
    }

    async fn next_input(&mut self) -> Input {
        let timer = Timer::ALL
            .iter()
            .filter_map(|&t| self.deadlines[t.index()].map(|d| (d, t)))
            .min();
        let established = self.fsm.state() == State::Established;
        let draining = self.draining;
        tokio::select! {
            biased;
            r = self.control.changed() => match r {
                Ok(()) => Input::Control,
                Err(_) => Input::SpeakerGone,
            },
            r = recv(&mut self.conn) => match r {
                Some(Ok(m)) => Input::Received(m),
                Some(Err(DecodeError::Malformed { notification, reason })) => {
                    self.note_error(format!("received a malformed message: {reason}"));
                    Input::Event(Event::MessageError(notification))
                }
                Some(Err(DecodeError::Io(e))) => {
                    self.note_error(format!("connection failed: {e}"));
                    Input::Event(Event::TcpFailed)
                }
                None => {
                    self.note_error("connection closed by the peer".into());
                    Input::Event(Event::TcpFailed)
                }
            },
            r = connected(&mut self.connecting) => {
                self.connecting = None;
                match r {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        self.conn = Some(Framed::new(stream, SessionCodec::default()));
                        Input::Event(Event::TcpConnected)
                    }
                    Err(e) => {
                        self.note_error(format!("connect failed: {e}"));
                        Input::Event(Event::TcpFailed)
                    }
                }
            },
            s = self.incoming.recv(), if self.incoming_open => match s {
                Some(s) => Input::Accepted(s),
                None => {
                    // No listener hands this peer connections (an active peer).
                    self.incoming_open = false;
                    Input::Nothing
                }
            },
            () = sleep_opt(timer.map(|(d, _)| d)) => {
                let t = timer.map_or(Timer::Hold, |(_, t)| t);
                self.deadlines[t.index()] = None;
                Input::Event(Event::Timer(t))
            },
            r = self.desired.changed(), if established && draining.is_none() => match r {
                Ok(()) => Input::Desired,
                Err(_) => Input::SpeakerGone,
            },
            () = sleep_opt(draining) => Input::DrainDone,
        }
    }

    async fn on_accept(&mut self, stream: TcpStream) {
        // A passive peer may redial before our zero-length IdleHold timer was polled: let it
        // fire now rather than refuse the connection.
        let idle_hold = Timer::IdleHold.index();
        if self.fsm.state() == State::Idle
            && self.fsm.config().passive
            && self.deadlines[idle_hold].is_some()
        {
            self.deadlines[idle_hold] = None;
            self.handle(Event::Timer(Timer::IdleHold)).await;
        }
        if self.fsm.state() != State::Active || self.conn.is_some() {
            debug!(peer = %self.peer(), state = %self.fsm.state(), "refusing a second connection");
            drop(stream);
            return;
        }
        let _ = stream.set_nodelay(true);
        self.conn = Some(Framed::new(stream, SessionCodec::default()));
        self.handle(Event::TcpConnected).await;
    }

    fn on_message(&mut self, r: Received) -> Event {
        if r.ignored_attributes > 0 {
            self.status.lock().malformed_attributes += r.ignored_attributes as u64;
        }
        match r.message {
            BgpMessage::Open(o) => Event::Open(Box::new(o)),
            BgpMessage::Update(u) => {
                self.status.lock().updates_received += 1;
                let (a, w) = prefix_counts(&u);
                debug!(peer = %self.peer(), announced = a, withdrawn = w, "UPDATE received");
                Event::Update(Box::new(u))
            }
            BgpMessage::Notification(n) => {
                let text = describe_notification(&n);
                warn!(peer = %self.peer(), notification = %text, "NOTIFICATION received");
                let (code, subcode) = notification_codes(&n);
                {
                    let mut s = self.status.lock();
                    s.notifications_received += 1;
                    s.last_error = Some(format!("received NOTIFICATION {text}"));
                }
                let _ = self.events.send(BgpEvent::NotificationReceived {
                    peer: self.peer(),
                    code,
                    subcode,
                });
                Event::Notification
            }
            BgpMessage::KeepAlive => Event::Keepalive,
            BgpMessage::RouteRefresh(rr) => Event::RouteRefresh(rr.address_type()),
        }
    }

    /// Feeds `event` and everything it causes through the machine.
    async fn handle(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(e) = queue.pop_front() {
            let before = self.fsm.state();
            let actions = self.fsm.fsm_event(e);
            let mut broken = false;
            for a in actions {
                if let Err(err) = self.execute(a).await {
                    if !broken {
                        self.note_error(format!("send failed: {err}"));
                    }
                    broken = true;
                }
            }
            self.note_state(before);
            if broken && self.fsm.state().is_connected() {
                queue.push_back(Event::TcpFailed);
            }
        }
    }

    async fn execute(&mut self, action: Action) -> io::Result<()> {
        match action {
            Action::Connect => {
                let cfg = self.fsm.config();
                let peer = SocketAddr::new(cfg.peer_address, cfg.peer_port);
                self.connecting = Some(Box::pin(connect(
                    peer,
                    cfg.source_address,
                    cfg.password.clone(),
                )));
            }
            Action::Close => {
                self.connecting = None;
                if let Some(conn) = self.conn.take() {
                    linger_close(conn);
                }
            }
            Action::SendOpen => self.send(build_open(self.fsm.config())).await?,
            Action::SendKeepalive => self.send(BgpMessage::KeepAlive).await?,
            Action::SendNotification(n) => self.send_notification(n).await?,
            Action::StartTimer(t, d) => self.deadlines[t.index()] = Some(Instant::now() + d),
            Action::StopTimer(t) => self.deadlines[t.index()] = None,
            Action::SessionUp => {
                {
                    let mut s = self.status.lock();
                    s.established_at = Some(Instant::now());
                    s.established_transitions += 1;
                    s.last_error = None;
                }
                self.adj_out.clear();
                self.sync_routes(true).await?;
            }
            Action::SessionDown => {
                self.adj_out.clear();
                let mut s = self.status.lock();
                s.established_at = None;
                s.prefixes_advertised = 0;
            }
            Action::ResendTable(af) => self.resend(af).await?,
        }
        Ok(())
    }

    async fn send_notification(&mut self, n: BgpNotificationMessage) -> io::Result<()> {
        let text = describe_notification(&n);
        warn!(peer = %self.peer(), notification = %text, "sending NOTIFICATION");
        let (code, subcode) = notification_codes(&n);
        {
            let mut s = self.status.lock();
            s.notifications_sent += 1;
            s.last_error = Some(format!("sent NOTIFICATION {text}"));
        }
        let _ = self.events.send(BgpEvent::NotificationSent {
            peer: self.peer(),
            code,
            subcode,
        });
        self.send(BgpMessage::Notification(n)).await
    }

    async fn send(&mut self, msg: BgpMessage) -> io::Result<()> {
        let is_update = matches!(msg, BgpMessage::Update(_));
        let Some(conn) = self.conn.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "no connection"));
        };
        match timeout(SEND_TIMEOUT, conn.send(msg)).await {
            Ok(r) => r?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
        if is_update {
            self.status.lock().updates_sent += 1;
            // RFC 4271 §10: sending an UPDATE restarts the KeepaliveTimer.
            if self.deadlines[Timer::Keepalive.index()].is_some()
                && let Some(k) = self.fsm.negotiated().and_then(|n| n.keepalive)
            {
                self.deadlines[Timer::Keepalive.index()] = Some(Instant::now() + k);
            }
        }
        Ok(())
    }

    /// Brings the peer's view in line with the desired set (plus End-of-RIB after the first
    /// full table when `initial`).
    async fn sync_routes(&mut self, initial: bool) -> io::Result<()> {
        let Some(neg) = self.fsm.negotiated().cloned() else {
            return Ok(());
        };
        if self.fsm.state() != State::Established {
            return Ok(());
        }
        let desired = self.desired.borrow_and_update().clone();
        let mut target: BTreeMap<IpNet, RouteAttrs> = BTreeMap::new();
        if !self.withdraw_all {
            for (prefix, attrs) in desired.routes() {
                if !neg.carries(prefix) {
                    continue;
                }
                let mut attrs = attrs.clone();
                if self.draining.is_some() && !attrs.communities.contains(&GRACEFUL_SHUTDOWN) {
                    attrs.communities.push(GRACEFUL_SHUTDOWN);
                    attrs.communities.sort_unstable();
                }
                target.insert(*prefix, attrs);
            }
        }
        let gone: Vec<IpNet> = self
            .adj_out
            .keys()
            .filter(|p| !target.contains_key(p))
            .copied()
            .collect();
        let mut groups: BTreeMap<&RouteAttrs, Vec<IpNet>> = BTreeMap::new();
        for (prefix, attrs) in &target {
            if self.adj_out.get(prefix) != Some(attrs) {
                groups.entry(attrs).or_default().push(*prefix);
            }
        }
        let cfg = self.fsm.config();
        let params = UpdateParams {
            ibgp: cfg.is_ibgp(),
            my_asn: cfg.my_asn,
            asn4: neg.asn4,
        };
        let mut msgs = withdraw(&gone);
        let announced: usize = groups.values().map(Vec::len).sum();
        for (attrs, prefixes) in &groups {
            msgs.extend(announce(params, attrs, prefixes, None));
        }
        if initial {
            if neg.ipv4 {
                msgs.push(end_of_rib(false));
            }
            if neg.ipv6 {
                msgs.push(end_of_rib(true));
            }
        }
        if !msgs.is_empty() {
            debug!(peer = %self.peer(), announced, withdrawn = gone.len(), updates = msgs.len(), "sending UPDATEs");
        }
        self.adj_out = target;
        self.status.lock().prefixes_advertised = self.adj_out.len();
        for m in msgs {
            self.send(m).await?;
        }
        Ok(())
    }

    /// [`Session::sync_routes`] outside the machine's actions: a failed write is event 18.
    async fn sync_or_fail(&mut self) {
        if let Err(e) = self.sync_routes(false).await {
            self.note_error(format!("send failed: {e}"));
            self.handle(Event::TcpFailed).await;
        }
    }

    /// Answers ROUTE-REFRESH (RFC 2918): everything of that family, again.
    async fn resend(&mut self, af: AddressType) -> io::Result<()> {
        let Some(neg) = self.fsm.negotiated().cloned() else {
            return Ok(());
        };
        let v6 = match af {
            AddressType::Ipv4Unicast => false,
            AddressType::Ipv6Unicast => true,
            _ => return Ok(()),
        };
        let cfg = self.fsm.config();
        let params = UpdateParams {
            ibgp: cfg.is_ibgp(),
            my_asn: cfg.my_asn,
            asn4: neg.asn4,
        };
        let mut groups: BTreeMap<&RouteAttrs, Vec<IpNet>> = BTreeMap::new();
        for (prefix, attrs) in &self.adj_out {
            if prefix.addr().is_ipv6() == v6 {
                groups.entry(attrs).or_default().push(*prefix);
            }
        }
        let msgs: Vec<BgpMessage> = groups
            .iter()
            .flat_map(|(attrs, prefixes)| announce(params, attrs, prefixes, None))
            .collect();
        for m in msgs {
            self.send(m).await?;
        }
        Ok(())
    }

    fn note_state(&mut self, before: State) {
        let after = self.fsm.state();
        self.status.lock().state = after;
        if before != after {
            info!(peer = %self.peer(), from = %before, to = %after, "BGP state change");
            let _ = self.events.send(BgpEvent::StateChanged {
                peer: self.peer(),
                from: before,
                to: after,
            });
        }
    }

    fn note_error(&self, text: String) {
        debug!(peer = %self.peer(), error = %text, "BGP session error");
        self.status.lock().last_error = Some(text);
    }
}

async fn recv(
    conn: &mut Option<Framed<TcpStream, SessionCodec>>,
) -> Option<Result<Received, DecodeError>> {
    match conn {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

async fn connected(c: &mut Option<Connecting>) -> io::Result<TcpStream> {
    match c {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn connect(
    peer: SocketAddr,
    source: Option<IpAddr>,
    password: Option<String>,
) -> io::Result<TcpStream> {
    let sock = if peer.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(pw) = &password {
        use std::os::fd::AsFd as _;
        sluice_dataplane::io::sockopt::set_tcp_md5sig(sock.as_fd(), peer.ip(), pw.as_bytes())?;
    }
    if let Some(src) = source {
        sock.bind(SocketAddr::new(src, 0))?;
    }
    sock.set_nodelay(true)?;
    sock.connect(peer).await
}

/// Closes with a FIN, then reads and discards until the peer closes too (at most [`LINGER`]),
/// so that a NOTIFICATION just written is not overtaken by a reset.
fn linger_close(conn: Framed<TcpStream, SessionCodec>) {
    let mut stream = conn.into_inner();
    tokio::spawn(async move {
        let _ = timeout(LINGER, async {
            let _ = stream.shutdown().await;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    });
}
