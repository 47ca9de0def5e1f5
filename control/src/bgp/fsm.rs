//! The RFC 4271 §8 session state machine, without I/O and without a clock (STYLE rule 16).
//!
//! [`Fsm::fsm_event`] takes one [`Event`] (the RFC's event names are in the comments), moves
//! the state, and returns the [`Action`]s the session driver must carry out in order: open or
//! drop the TCP connection, send messages, start and stop timers, announce the table. Timers
//! come back as [`Event::Timer`]; the machine never reads the time.
//!
//! Simplifications of the full RFC machine, all allowed by it:
//! - no DelayOpen, no collision detection: an active peer only connects and a passive peer
//!   only accepts, so there is never a second connection to compare;
//! - a failed or dropped session always goes back to Idle, and an active peer leaves Idle
//!   after the IdleHold timer (RFC 4271 §8.1.1 DampPeerOscillations), whose length comes from
//!   a jittered exponential back-off starting at `connect_retry`; a passive peer re-enters
//!   Active at once (it cannot cause a reconnect storm: the peer dials);
//! - a message that the RFC treats as an FSM error in OpenSent/OpenConfirm/Established gets
//!   the RFC 6608 subcode for that state.
//!
//! Guarantees (checked by the property tests below): a NOTIFICATION is only ever sent on an
//! open connection; every path back to Idle from a connected state drops the connection and
//! stops the hold and keepalive timers; Established is only reached through OpenSent and
//! OpenConfirm; after [`Event::Stop`] the machine stays Idle.

use std::time::Duration;

use netgauze_bgp_pkt::notification::{BgpNotificationMessage, FiniteStateMachineError};
use netgauze_bgp_pkt::open::BgpOpenMessage;
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_iana::address_family::AddressType;

use super::backoff::Backoff;
use super::config::{MAX_CONNECT_RETRY, PeerConfig};
use super::message::{
    Negotiated, OPEN_SENT_HOLD, cease_admin_shutdown, cease_other_configuration_change,
    cease_peer_deconfigured, check_open, check_update, hold_timer_expired,
};

/// RFC 4271 §8.2.2 session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Not trying; waiting for a start or for the IdleHold (back-off) timer.
    Idle,
    /// Connecting to the peer (active peers).
    Connect,
    /// Waiting for the peer to connect (passive peers).
    Active,
    /// Our OPEN is sent; waiting for the peer's.
    OpenSent,
    /// OPENs exchanged; waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Routes are exchanged.
    Established,
}

impl State {
    /// The RFC's name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }

    /// Whether a TCP connection is up in this state.
    pub fn is_connected(self) -> bool {
        matches!(
            self,
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The session's timers (RFC 4271 §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// Bounds one outgoing TCP connect (ConnectRetryTimer, events 9).
    ConnectRetry,
    /// The peer must speak within this time (HoldTimer, event 10).
    Hold,
    /// We speak at least this often (KeepaliveTimer, event 11).
    Keepalive,
    /// Back-off before leaving Idle again (IdleHoldTimer, event 13).
    IdleHold,
}

impl Timer {
    /// Every timer, in a fixed order (the driver indexes deadlines by it).
    pub const ALL: [Timer; 4] = [
        Timer::ConnectRetry,
        Timer::Hold,
        Timer::Keepalive,
        Timer::IdleHold,
    ];

    /// Index into [`Timer::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a session is stopped for good: the Cease subcode (RFC 4486 §4) of the NOTIFICATION
/// sent when it is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The speaker shuts down: Administrative Shutdown (subcode 2), with an RFC 8203 message.
    Shutdown,
    /// The peer was removed from the configuration: Peer De-configured (subcode 3).
    PeerDeconfigured,
    /// The peer's configuration changed and a new session replaces this one: Other
    /// Configuration Change (subcode 6), as BIRD sends when a reconfiguration restarts a
    /// session.
    ConfigurationChanged,
}

// === impl StopReason ===

impl StopReason {
    /// The NOTIFICATION that says so.
    pub fn notification(self) -> BgpNotificationMessage {
        match self {
            StopReason::Shutdown => cease_admin_shutdown("sluice: shutting down"),
            StopReason::PeerDeconfigured => cease_peer_deconfigured(),
            StopReason::ConfigurationChanged => cease_other_configuration_change(),
        }
    }
}

/// Inputs to the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Event 3 AutomaticStart, or event 5 AutomaticStart_with_PassiveTcpEstablishment for a
    /// passive peer.
    Start,
    /// Event 2 ManualStop: leave for good (a NOTIFICATION Cease with the reason's subcode if
    /// connected).
    Stop(StopReason),
    /// Events 9-13: a timer expired.
    Timer(Timer),
    /// Event 16 Tcp_CR_Acked (our connect succeeded) / event 17 TcpConnectionConfirmed (we
    /// accepted the peer's).
    TcpConnected,
    /// Event 18 TcpConnectionFails: the connect failed, or the connection closed or broke.
    TcpFailed,
    /// Event 19 BGPOpen (or 22 BGPOpenMsgErr once judged): an OPEN arrived.
    Open(Box<BgpOpenMessage>),
    /// Events 21 BGPHeaderErr / 22 BGPOpenMsgErr / 28 UpdateMsgErr found by the decoder: the
    /// NOTIFICATION to answer with.
    MessageError(BgpNotificationMessage),
    /// Event 24 NotifMsgVerErr / 25 NotifMsg: the peer sent a NOTIFICATION.
    Notification,
    /// Event 26 KeepAliveMsg.
    Keepalive,
    /// Event 27 UpdateMsg (or 28 UpdateMsgErr once judged).
    Update(Box<BgpUpdateMessage>),
    /// RFC 2918 ROUTE-REFRESH for an address family.
    RouteRefresh(AddressType),
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start an outgoing TCP connection.
    Connect,
    /// Drop the connection or the connect attempt.
    Close,
    /// Send our OPEN.
    SendOpen,
    /// Send a KEEPALIVE.
    SendKeepalive,
    /// Send this NOTIFICATION (the connection is closed right after).
    SendNotification(BgpNotificationMessage),
    /// (Re)start a timer to fire after the duration.
    StartTimer(Timer, Duration),
    /// Stop a timer.
    StopTimer(Timer),
    /// Entered Established: send the whole table, then End-of-RIB per family.
    SessionUp,
    /// Left Established: forget what was sent.
    SessionDown,
    /// The peer asked ROUTE-REFRESH for this family: resend it.
    ResendTable(AddressType),
}

/// One peer's state machine.
#[derive(Debug, Clone)]
pub struct Fsm {
    cfg: PeerConfig,
    state: State,
    backoff: Backoff,
    negotiated: Option<Negotiated>,
    stopped: bool,
}

// === impl Fsm ===

impl Fsm {
    /// A machine in Idle for a validated `cfg`; `seed` seeds the back-off jitter.
    pub fn new(cfg: PeerConfig, seed: u64) -> Self {
        let min = cfg.connect_retry.max(Duration::from_millis(1));
        let backoff = match Backoff::try_new(min, MAX_CONNECT_RETRY.max(min), seed) {
            Ok(b) => b,
            // `min` > 0 and max >= min by construction.
            Err(e) => unreachable!("{e}"),
        };
        Fsm {
            cfg,
            state: State::Idle,
            backoff,
            negotiated: None,
            stopped: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// What the OPENs agreed on, from OpenConfirm on.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The peer's configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.cfg
    }

    /// Feeds one event; returns the actions to carry out, in order.
    pub fn fsm_event(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.stopped && !matches!(event, Event::Stop(_)) {
            return out;
        }
        match (self.state, event) {
            (_, Event::Stop(reason)) => {
                if self.state.is_connected() {
                    out.push(Action::SendNotification(reason.notification()));
                }
                self.stopped = true;
                self.leave(&mut out);
                out.push(Action::StopTimer(Timer::IdleHold));
            }

            // --- Idle ---
            (State::Idle, Event::Start | Event::Timer(Timer::IdleHold)) => {
                out.push(Action::StopTimer(Timer::IdleHold));
                if self.cfg.passive {
                    self.state = State::Active;
                } else {
                    self.state = State::Connect;
                    out.push(Action::Connect);
                    out.push(Action::StartTimer(
                        Timer::ConnectRetry,
                        self.cfg.connect_retry,
                    ));
                }
            }
            (State::Idle, _) => {} // RFC: every other event is ignored in Idle.

            // --- Connect / Active ---
            (State::Connect | State::Active, Event::TcpConnected) => {
                out.push(Action::StopTimer(Timer::ConnectRetry));
                out.push(Action::SendOpen);
                out.push(Action::StartTimer(Timer::Hold, OPEN_SENT_HOLD));
                self.state = State::OpenSent;
            }
            (State::Connect, Event::Timer(Timer::ConnectRetry)) => {
                // The connect hung: drop it and try again (RFC 4271 §8.2.2 Connect, event 9).
                out.push(Action::Close);
                out.push(Action::Connect);
                out.push(Action::StartTimer(
                    Timer::ConnectRetry,
                    self.cfg.connect_retry,
                ));
            }
            (State::Connect | State::Active, Event::TcpFailed) => self.fail(&mut out, None),
            (State::Connect | State::Active, _) => {} // no connection: nothing to answer

            // --- any connected state ---
            (_, Event::TcpFailed | Event::Notification) => self.fail(&mut out, None),
            (_, Event::MessageError(n)) => self.fail(&mut out, Some(n)),
            (_, Event::Timer(Timer::Hold)) => self.fail(&mut out, Some(hold_timer_expired())),
            (State::OpenConfirm | State::Established, Event::Timer(Timer::Keepalive)) => {
                out.push(Action::SendKeepalive);
                self.start_keepalive(&mut out);
            }

            // --- OpenSent ---
            (State::OpenSent, Event::Open(open)) => match check_open(&self.cfg, &open) {
                Ok(n) => {
                    out.push(Action::SendKeepalive);
                    self.negotiated = Some(n);
                    self.start_keepalive(&mut out);
                    self.restart_hold(&mut out);
                    self.state = State::OpenConfirm;
                }
                Err(e) => self.fail(&mut out, Some(BgpNotificationMessage::OpenMessageError(e))),
            },

            // --- OpenConfirm ---
            (State::OpenConfirm, Event::Keepalive) => {
                self.restart_hold(&mut out);
                self.backoff.reset();
                self.state = State::Established;
                out.push(Action::SessionUp);
            }

            // --- Established ---
            (State::Established, Event::Keepalive) => self.restart_hold(&mut out),
            (State::Established, Event::Update(u)) => match check_update(&u) {
                Ok(()) => self.restart_hold(&mut out),
                Err(e) => self.fail(
                    &mut out,
                    Some(BgpNotificationMessage::UpdateMessageError(e)),
                ),
            },
            (State::Established, Event::RouteRefresh(af)) => {
                self.restart_hold(&mut out);
                out.push(Action::ResendTable(af));
            }

            // --- unexpected messages in a connected state: FSM error (RFC 6608 subcodes) ---
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::Open(_) | Event::Keepalive | Event::Update(_) | Event::RouteRefresh(_),
            ) => {
                let value = Box::new([]);
                let e = match self.state {
                    State::OpenSent => {
                        FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState { value }
                    }
                    State::OpenConfirm => {
                        FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState {
                            value,
                        }
                    }
                    _ => FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState {
                        value,
                    },
                };
                self.fail(
                    &mut out,
                    Some(BgpNotificationMessage::FiniteStateMachineError(e)),
                );
            }

            // Start while running, stray timers (a timer stopped after it fired), a second
            // connection (the driver refuses those before they get here): ignored.
            (
                State::OpenSent | State::OpenConfirm | State::Established,
                Event::Start | Event::Timer(_) | Event::TcpConnected,
            ) => {}
        }
        out
    }

    /// Back to Idle after an error: optionally a NOTIFICATION, then close, then the back-off.
    fn fail(&mut self, out: &mut Vec<Action>, notification: Option<BgpNotificationMessage>) {
        if let Some(n) = notification
            && self.state.is_connected()
        {
            out.push(Action::SendNotification(n));
        }
        self.leave(out);
        let delay = if self.cfg.passive {
            Duration::ZERO
        } else {
            self.backoff.next_delay()
        };
        out.push(Action::StartTimer(Timer::IdleHold, delay));
    }

    /// Close, stop the session timers, forget the session, go Idle.
    fn leave(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Close);
        for t in [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive] {
            out.push(Action::StopTimer(t));
        }
        if self.state == State::Established {
            out.push(Action::SessionDown);
        }
        self.negotiated = None;
        self.state = State::Idle;
    }

    fn restart_hold(&self, out: &mut Vec<Action>) {
        if let Some(hold) = self.negotiated.as_ref().and_then(Negotiated::hold) {
            out.push(Action::StartTimer(Timer::Hold, hold));
        } else {
            out.push(Action::StopTimer(Timer::Hold));
        }
    }

    fn start_keepalive(&self, out: &mut Vec<Action>) {
        if let Some(k) = self.negotiated.as_ref().and_then(|n| n.keepalive) {
            out.push(Action::StartTimer(Timer::Keepalive, k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netgauze_bgp_pkt::capabilities::{
        BgpCapability, FourOctetAsCapability, MultiProtocolExtensionsCapability,
    };
    use netgauze_bgp_pkt::notification::{MessageHeaderError, OpenMessageError};
    use netgauze_bgp_pkt::open::BgpOpenMessageParameter;
    use proptest::prelude::*;

    fn cfg(passive: bool) -> PeerConfig {
        PeerConfig {
            passive,
            hold_time: Duration::from_secs(9),
            connect_retry: Duration::from_secs(1),
            ..PeerConfig::new(
                64513,
                64512,
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
            )
        }
    }

    fn peer_open(asn: u32, hold: u16) -> Event {
        let caps = vec![
            BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                AddressType::Ipv6Unicast,
            )),
            BgpCapability::FourOctetAs(FourOctetAsCapability::new(asn)),
        ];
        Event::Open(Box::new(BgpOpenMessage::new(
            u16::try_from(asn).unwrap_or(23456),
            hold,
            "192.0.2.1".parse().unwrap(),
            vec![BgpOpenMessageParameter::new_capabilities(caps)],
        )))
    }

    fn established(passive: bool) -> Fsm {
        let mut f = Fsm::new(cfg(passive), 1);
        f.fsm_event(Event::Start);
        f.fsm_event(Event::TcpConnected);
        f.fsm_event(peer_open(64512, 30));
        let a = f.fsm_event(Event::Keepalive);
        assert!(a.contains(&Action::SessionUp));
        assert_eq!(f.state(), State::Established);
        f
    }

    #[test]
    fn active_peer_walks_to_established() {
        let mut f = Fsm::new(cfg(false), 1);
        assert_eq!(
            f.fsm_event(Event::Start),
            vec![
                Action::StopTimer(Timer::IdleHold),
                Action::Connect,
                Action::StartTimer(Timer::ConnectRetry, Duration::from_secs(1)),
            ]
        );
        assert_eq!(f.state(), State::Connect);
        assert_eq!(
            f.fsm_event(Event::TcpConnected),
            vec![
                Action::StopTimer(Timer::ConnectRetry),
                Action::SendOpen,
                Action::StartTimer(Timer::Hold, OPEN_SENT_HOLD),
            ]
        );
        assert_eq!(f.state(), State::OpenSent);
        // Hold 9 (ours) vs 30 (theirs): 9 s hold, 3 s keepalive.
        assert_eq!(
            f.fsm_event(peer_open(64512, 30)),
            vec![
                Action::SendKeepalive,
                Action::StartTimer(Timer::Keepalive, Duration::from_secs(3)),
                Action::StartTimer(Timer::Hold, Duration::from_secs(9)),
            ]
        );
        assert_eq!(f.state(), State::OpenConfirm);
        let n = f.negotiated().unwrap();
        assert!(n.ipv6 && !n.ipv4, "the peer named IPv6 only");
        assert_eq!(
            f.fsm_event(Event::Keepalive),
            vec![
                Action::StartTimer(Timer::Hold, Duration::from_secs(9)),
                Action::SessionUp
            ]
        );
        assert_eq!(f.state(), State::Established);
    }

    #[test]
    fn passive_peer_waits_in_active_and_restarts_at_once() {
        let mut f = Fsm::new(cfg(true), 1);
        f.fsm_event(Event::Start);
        assert_eq!(f.state(), State::Active);
        assert_eq!(f.fsm_event(Event::Timer(Timer::ConnectRetry)), vec![]);
        f.fsm_event(Event::TcpConnected);
        let a = f.fsm_event(Event::TcpFailed);
        assert!(a.contains(&Action::StartTimer(Timer::IdleHold, Duration::ZERO)));
        assert_eq!(f.state(), State::Idle);
        f.fsm_event(Event::Timer(Timer::IdleHold));
        assert_eq!(f.state(), State::Active);
    }

    #[test]
    fn connect_failure_backs_off_and_retries() {
        let mut f = Fsm::new(cfg(false), 1);
        f.fsm_event(Event::Start);
        let a = f.fsm_event(Event::TcpFailed);
        assert_eq!(f.state(), State::Idle);
        let Some(Action::StartTimer(Timer::IdleHold, d)) = a.last() else {
            panic!("{a:?}")
        };
        assert!(*d >= Duration::from_millis(500) && *d <= Duration::from_secs(1));
        f.fsm_event(Event::Timer(Timer::IdleHold));
        assert_eq!(f.state(), State::Connect);
        // A hung connect is retried when ConnectRetry fires.
        let a = f.fsm_event(Event::Timer(Timer::ConnectRetry));
        assert_eq!(&a[..2], &[Action::Close, Action::Connect]);
        assert_eq!(f.state(), State::Connect);
    }

    #[test]
    fn bad_open_gets_open_message_error() {
        let mut f = Fsm::new(cfg(false), 1);
        f.fsm_event(Event::Start);
        f.fsm_event(Event::TcpConnected);
        let a = f.fsm_event(peer_open(65000, 30));
        assert!(matches!(
            &a[0],
            Action::SendNotification(BgpNotificationMessage::OpenMessageError(
                OpenMessageError::BadPeerAs { .. }
            ))
        ));
        assert_eq!(a[1], Action::Close);
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn unexpected_messages_get_fsm_errors_per_state() {
        let mut f = Fsm::new(cfg(false), 1);
        f.fsm_event(Event::Start);
        f.fsm_event(Event::TcpConnected);
        let a = f.fsm_event(Event::Keepalive);
        assert!(matches!(
            &a[0],
            Action::SendNotification(BgpNotificationMessage::FiniteStateMachineError(
                FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState { .. }
            ))
        ));
        let mut f = established(false);
        let a = f.fsm_event(peer_open(64512, 30));
        assert!(matches!(
            &a[0],
            Action::SendNotification(BgpNotificationMessage::FiniteStateMachineError(
                FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState { .. }
            ))
        ));
        assert!(a.contains(&Action::SessionDown));
    }

    #[test]
    fn hold_expiry_notifies_and_closes() {
        let mut f = established(false);
        let a = f.fsm_event(Event::Timer(Timer::Hold));
        assert_eq!(a[0], Action::SendNotification(hold_timer_expired()));
        assert_eq!(a[1], Action::Close);
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn keepalive_timer_sends_and_rearms() {
        let mut f = established(false);
        assert_eq!(
            f.fsm_event(Event::Timer(Timer::Keepalive)),
            vec![
                Action::SendKeepalive,
                Action::StartTimer(Timer::Keepalive, Duration::from_secs(3))
            ]
        );
    }

    #[test]
    fn route_refresh_resends() {
        let mut f = established(false);
        let a = f.fsm_event(Event::RouteRefresh(AddressType::Ipv6Unicast));
        assert_eq!(
            a.last(),
            Some(&Action::ResendTable(AddressType::Ipv6Unicast))
        );
    }

    #[test]
    fn stop_sends_cease_and_stays_idle() {
        let mut f = established(false);
        let a = f.fsm_event(Event::Stop(StopReason::Shutdown));
        assert!(matches!(
            &a[0],
            Action::SendNotification(BgpNotificationMessage::CeaseError(_))
        ));
        assert_eq!(f.state(), State::Idle);
        assert!(f.fsm_event(Event::Start).is_empty());
        assert!(f.fsm_event(Event::Timer(Timer::IdleHold)).is_empty());
        assert_eq!(f.state(), State::Idle);
    }

    #[test]
    fn stop_reasons_map_to_rfc_4486_subcodes() {
        for (reason, subcode) in [
            (StopReason::Shutdown, 2),
            (StopReason::PeerDeconfigured, 3),
            (StopReason::ConfigurationChanged, 6),
        ] {
            let mut f = established(false);
            let a = f.fsm_event(Event::Stop(reason));
            let Action::SendNotification(n) = &a[0] else {
                panic!("{a:?}")
            };
            assert_eq!(crate::bgp::message::notification_codes(n), (6, subcode));
            assert_eq!(a[1], Action::Close);
            assert!(a.contains(&Action::SessionDown));
        }
        // Not connected: nothing to send, still stopped for good.
        let mut f = Fsm::new(cfg(false), 1);
        f.fsm_event(Event::Start);
        let a = f.fsm_event(Event::Stop(StopReason::PeerDeconfigured));
        assert!(!a.iter().any(|a| matches!(a, Action::SendNotification(_))));
        assert!(f.fsm_event(Event::Timer(Timer::IdleHold)).is_empty());
    }

    #[test]
    fn zero_hold_time_runs_no_timers() {
        let mut f = Fsm::new(cfg(false), 1);
        f.fsm_event(Event::Start);
        f.fsm_event(Event::TcpConnected);
        let a = f.fsm_event(peer_open(64512, 0));
        assert_eq!(
            a,
            vec![Action::SendKeepalive, Action::StopTimer(Timer::Hold)]
        );
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Start),
            prop::sample::select(vec![
                StopReason::Shutdown,
                StopReason::PeerDeconfigured,
                StopReason::ConfigurationChanged,
            ])
            .prop_map(Event::Stop),
            prop::sample::select(Timer::ALL.to_vec()).prop_map(Event::Timer),
            Just(Event::TcpConnected),
            Just(Event::TcpFailed),
            (
                prop_oneof![Just(64512u32), Just(64999u32)],
                prop_oneof![Just(0u16), Just(2), Just(30)]
            )
                .prop_map(|(asn, hold)| peer_open(asn, hold)),
            Just(Event::MessageError(
                BgpNotificationMessage::MessageHeaderError(MessageHeaderError::BadMessageLength {
                    value: Box::new([0, 1])
                })
            )),
            Just(Event::Notification),
            Just(Event::Keepalive),
            Just(Event::Update(Box::new(BgpUpdateMessage::new(
                vec![],
                vec![],
                vec![]
            )))),
            Just(Event::RouteRefresh(AddressType::Ipv4Unicast)),
        ]
    }

    proptest! {
        #[test]
        fn invariants_hold_for_any_event_sequence(
            passive in any::<bool>(),
            seed in any::<u64>(),
            events in proptest::collection::vec(arb_event(), 0..60),
        ) {
            let mut f = Fsm::new(cfg(passive), seed);
            let mut stopped = false;
            for e in events {
                let before = f.state();
                let is_stop = matches!(e, Event::Stop(_));
                let actions = f.fsm_event(e);
                let after = f.state();
                stopped |= is_stop;
                for (i, a) in actions.iter().enumerate() {
                    if let Action::SendNotification(_) = a {
                        // Only on a live connection, and always followed by closing it.
                        prop_assert!(before.is_connected());
                        prop_assert_eq!(actions.get(i + 1), Some(&Action::Close));
                    }
                    if let Action::Connect = a {
                        prop_assert!(!passive);
                    }
                }
                if before.is_connected() && after == State::Idle {
                    prop_assert!(actions.contains(&Action::Close));
                    prop_assert!(actions.contains(&Action::StopTimer(Timer::Hold)));
                    prop_assert!(actions.contains(&Action::StopTimer(Timer::Keepalive)));
                }
                if after == State::Established && before != State::Established {
                    prop_assert_eq!(before, State::OpenConfirm);
                    prop_assert!(actions.contains(&Action::SessionUp));
                }
                if after == State::OpenConfirm && before != State::OpenConfirm {
                    prop_assert_eq!(before, State::OpenSent);
                }
                if (before == State::Established) != (after == State::Established) && after != State::Established {
                    prop_assert!(actions.contains(&Action::SessionDown));
                }
                if stopped {
                    prop_assert_eq!(after, State::Idle);
                }
                prop_assert_eq!(f.negotiated().is_some(), matches!(after, State::OpenConfirm | State::Established));
                if passive {
                    prop_assert!(after != State::Connect);
                } else {
                    prop_assert!(after != State::Active);
                }
            }
        }
    }
}
