//! The BGP speaker against a scripted peer over loopback TCP: malformed input gets the RFC's
//! NOTIFICATION and the session task survives to make a new session; timers, ROUTE-REFRESH,
//! advertisement changes, active connects with back-off, graceful shutdown, and peers added,
//! changed and removed at run time (`Speaker::set_peers`), all checked on the wire by decoding
//! what the speaker sends with netgauze.
//!
//! Only loopback is used: the speaker is 127.0.0.1, peers are 127.0.0.1 and, where a test needs
//! two, 127.0.0.2 and 127.0.0.3 (Linux answers for all of 127/8). Every speaker is shut down
//! (or dropped, which aborts its tasks) when its test ends.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::codec::BgpCodec;
use netgauze_bgp_pkt::iana::RouteRefreshSubcode;
use netgauze_bgp_pkt::notification::BgpNotificationMessage;
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{MpReach, MpUnreach, PathAttributeValue};
use netgauze_bgp_pkt::route_refresh::BgpRouteRefreshMessage;
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_iana::address_family::AddressType;
use sluice_control::bgp::message::notification_codes;
use sluice_control::bgp::{Advertisement, BgpEvent, GRACEFUL_SHUTDOWN, PeerConfig, Speaker, State};
use sluice_testbed::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

/// Generous: CI machines have two loaded cores.
const WAIT: Duration = Duration::from_secs(20);
const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
const PEER_ASN: u32 = 64512;
const MY_ASN: u32 = 64513;

/// The far end of a session, driven by hand.
struct RawPeer {
    stream: TcpStream,
    buf: BytesMut,
    codec: BgpCodec,
}

impl RawPeer {
    /// Connects to a passive speaker, retrying while its listener comes up.
    async fn connect(port: u16) -> RawPeer {
        let deadline = Instant::now() + WAIT;
        loop {
            match TcpStream::connect(SocketAddr::from((LOCAL, port))).await {
                Ok(stream) => return RawPeer::from(stream),
                Err(e) if Instant::now() > deadline => panic!("connect to {port}: {e}"),
                Err(_) => sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Connects to a passive speaker from `src` (with a TCP MD5 key for the speaker's
    /// address when `key` is given), retrying while its listener comes up.
    async fn connect_from(src: Ipv4Addr, port: u16, key: Option<&str>) -> RawPeer {
        use std::os::fd::AsFd as _;

        let deadline = Instant::now() + WAIT;
        loop {
            let sock = TcpSocket::new_v4().expect("socket");
            sock.bind(SocketAddr::from((src, 0))).expect("bind");
            if let Some(k) = key {
                sluice_dataplane::io::sockopt::set_tcp_md5sig(
                    sock.as_fd(),
                    IpAddr::V4(LOCAL),
                    k.as_bytes(),
                )
                .expect("MD5 key");
            }
            let r = timeout(
                Duration::from_secs(2),
                sock.connect(SocketAddr::from((LOCAL, port))),
            )
            .await;
            match r {
                Ok(Ok(stream)) => return RawPeer::from(stream),
                _ if Instant::now() > deadline => panic!("connect from {src} to {port}: {r:?}"),
                _ => sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn from(stream: TcpStream) -> RawPeer {
        RawPeer {
            stream,
            buf: BytesMut::new(),
            codec: BgpCodec::new(true),
        }
    }

    /// The next message, or a panic after [`WAIT`].
    async fn recv(&mut self) -> BgpMessage {
        timeout(WAIT, async {
            loop {
                if let Some((m, _)) = self.codec.decode(&mut self.buf).expect("decodable") {
                    return m;
                }
                let n = self.stream.read_buf(&mut self.buf).await.expect("read");
                assert!(n > 0, "the speaker closed the connection");
            }
        })
        .await
        .expect("a message within the wait")
    }

    /// The next message that is not a KEEPALIVE.
    async fn recv_non_keepalive(&mut self) -> BgpMessage {
        loop {
            let m = self.recv().await;
            if m != BgpMessage::KeepAlive {
                return m;
            }
        }
    }

    async fn recv_update(&mut self) -> BgpUpdateMessage {
        match self.recv_non_keepalive().await {
            BgpMessage::Update(u) => u,
            other => panic!("expected an UPDATE, got {other:?}"),
        }
    }

    async fn recv_notification(&mut self) -> BgpNotificationMessage {
        match self.recv_non_keepalive().await {
            BgpMessage::Notification(n) => n,
            other => panic!("expected a NOTIFICATION, got {other:?}"),
        }
    }

    async fn send(&mut self, m: BgpMessage) {
        let mut out = BytesMut::new();
        self.codec.encode(m, &mut out).expect("encodable");
        self.send_raw(&out).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Waits for the speaker to close the connection.
    async fn expect_closed(&mut self) {
        timeout(WAIT, async {
            let mut scratch = [0u8; 1024];
            loop {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the speaker closes the connection");
    }

    /// OPEN / KEEPALIVE exchange up to Established; returns the speaker's OPEN.
    async fn handshake(&mut self, hold: u16) -> BgpOpenMessage {
        let BgpMessage::Open(theirs) = self.recv().await else {
            panic!("the speaker must open with OPEN");
        };
        self.send(BgpMessage::Open(open(PEER_ASN, hold))).await;
        self.send(BgpMessage::KeepAlive).await;
        assert_eq!(self.recv().await, BgpMessage::KeepAlive);
        theirs
    }
}

fn open(asn: u32, hold: u16) -> BgpOpenMessage {
    let caps = vec![
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv4Unicast,
        )),
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv6Unicast,
        )),
        BgpCapability::RouteRefresh,
        BgpCapability::FourOctetAs(FourOctetAsCapability::new(asn)),
    ];
    BgpOpenMessage::new(
        u16::try_from(asn).unwrap_or(23456),
        hold,
        "192.0.2.1".parse().unwrap(),
        vec![BgpOpenMessageParameter::new_capabilities(caps)],
    )
}

/// A header with the given marker byte, length and type, then `body`.
fn raw(marker: u8, len: u16, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![marker; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(kind);
    v.extend_from_slice(body);
    v
}

fn peer_config(port: u16, passive: bool) -> PeerConfig {
    PeerConfig {
        source_address: Some(IpAddr::V4(LOCAL)),
        peer_port: port,
        listen_port: port,
        passive,
        hold_time: Duration::from_secs(9),
        connect_retry: Duration::from_secs(1),
        ..PeerConfig::new(
            MY_ASN,
            PEER_ASN,
            IpAddr::V4(LOCAL),
            "192.0.2.2".parse().unwrap(),
        )
    }
}

fn passive_speaker() -> (Speaker, u16) {
    let port = free_port();
    let speaker = Speaker::start(vec![peer_config(port, true)]).expect("speaker starts");
    (speaker, port)
}

fn vip4() -> Advertisement {
    Advertisement {
        communities: vec![0xfde8_0064], // 65000:100
        large_communities: vec![(64513, 1, 2)],
        ..Advertisement::host("10.90.0.100".parse().unwrap(), "192.0.2.2".parse().unwrap())
    }
}

fn vip6() -> Advertisement {
    Advertisement::host(
        "fd90::100".parse().unwrap(),
        "2001:db8:ffff::2".parse().unwrap(),
    )
}

async fn wait_state(speaker: &Speaker, want: State) {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = speaker.peers()[0].state;
        if st == want {
            return;
        }
        assert!(Instant::now() < deadline, "peer stuck in {st}, want {want}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// The IPv4 and IPv6 prefixes an UPDATE announces, and whether it carries a community.
fn announced(u: &BgpUpdateMessage) -> (Vec<String>, Vec<u32>) {
    let mut prefixes: Vec<String> = u.nlri().iter().map(|a| a.network().to_string()).collect();
    let mut communities = Vec::new();
    for a in u.path_attributes() {
        match a.value() {
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast { nlri, .. }) => {
                prefixes.extend(nlri.iter().map(|a| a.network().to_string()));
            }
            PathAttributeValue::Communities(c) => {
                communities.extend(c.communities().iter().map(|c| c.value()));
            }
            _ => {}
        }
    }
    (prefixes, communities)
}

fn withdrawn(u: &BgpUpdateMessage) -> Vec<String> {
    let mut out: Vec<String> = u
        .withdraw_routes()
        .iter()
        .map(|a| a.network().to_string())
        .collect();
    for a in u.path_attributes() {
        if let PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) = a.value() {
            out.extend(nlri.iter().map(|a| a.network().to_string()));
        }
    }
    out
}

/// Reads the initial table up to both End-of-RIB markers; returns the announced prefixes.
async fn initial_table(p: &mut RawPeer) -> Vec<String> {
    let mut prefixes = Vec::new();
    let mut eor = Vec::new();
    while eor.len() < 2 {
        let u = p.recv_update().await;
        match u.end_of_rib() {
            Some(af) => eor.push(af),
            None => prefixes.extend(announced(&u).0),
        }
    }
    assert_eq!(eor, [AddressType::Ipv4Unicast, AddressType::Ipv6Unicast]);
    prefixes.sort();
    prefixes
}

/// After an error the same task must accept and bring up a new session.
async fn assert_recovers(speaker: &Speaker, port: u16) {
    let mut p = RawPeer::connect(port).await;
    p.handshake(9).await;
    wait_state(speaker, State::Established).await;
}

#[tokio::test]
async fn bad_marker_gets_connection_not_synchronized() {
    let (speaker, port) = passive_speaker();
    let mut p = RawPeer::connect(port).await;
    assert!(matches!(p.recv().await, BgpMessage::Open(_)));
    p.send_raw(&raw(0x00, 19, 4, &[])).await;
    assert_eq!(notification_codes(&p.recv_notification().await), (1, 1));
    p.expect_closed().await;
    assert_recovers(&speaker, port).await;
    let st = &speaker.peers()[0];
    assert_eq!(st.notifications_sent, 1);
    speaker.shutdown(None).await;
}

#[tokio::test]
async fn bad_length_gets_bad_message_length_with_the_length() {
    let (speaker, port) = passive_speaker();
    for len in [18u16, 4097, 20] {
        let mut p = RawPeer::connect(port).await;
        assert!(matches!(p.recv().await, BgpMessage::Open(_)));
        p.send_raw(&raw(0xff, len, 4, &[0; 2])).await;
        let n = p.recv_notification().await;
        assert_eq!(notification_codes(&n), (1, 2), "length {len}");
        let BgpNotificationMessage::MessageHeaderError(
            netgauze_bgp_pkt::notification::MessageHeaderError::BadMessageLength { value },
        ) = n
        else {
            panic!()
        };
        assert_eq!(&value[..], &len.to_be_bytes(), "data is the bad length");
        p.expect_closed().await;
    }
    assert_recovers(&speaker, port).await;
    speaker.shutdown(None).await;
}

#[tokio::test]
async fn bad_type_gets_bad_message_type() {
    let (speaker, port) = passive_speaker();
    let mut p = RawPeer::connect(port).await;
    assert!(matches!(p.recv().await, BgpMessage::Open(_)));
    p.send_raw(&raw(0xff, 19, 42, &[])).await;
    assert_eq!(notification_codes(&p.recv_notification().await), (1, 3));
    p.expect_closed().await;
    assert_recovers(&speaker, port).await;
    speaker.shutdown(None).await;
}

#[tokio::test]
async fn unrecognized_well_known_attribute_gets_update_message_error() {
    let (speaker, port) = passive_speaker();
    speaker.set_advertisements(vec![vip4()]).unwrap();
    let mut p = RawPeer::connect(port).await;
    p.handshake(9).await;
    assert_eq!(initial_table(&mut p).await, ["10.90.0.100/32"]);
    // UPDATE: no withdrawn routes; one attribute, flags 0x40 (well-known, transitive), type
    // 0xf0 (unassigned), length 2; no NLRI.
    let attr = [0x40, 0xf0, 0x02, 0xab, 0xcd];
    let mut body = vec![0, 0, 0, 5];
    body.extend_from_slice(&attr);
    let len = u16::try_from(19 + body.len()).unwrap();
    p.send_raw(&raw(0xff, len, 2, &body)).await;
    let n = p.recv_notification().await;
    assert_eq!(notification_codes(&n), (3, 2));
    let BgpNotificationMessage::UpdateMessageError(
        netgauze_bgp_pkt::notification::UpdateMessageError::UnrecognizedWellKnownAttribute {
            value,
        },
    ) = n
    else {
        panic!()
    };
    assert_eq!(&value[..], &attr, "data is the offending attribute");
    p.expect_closed().await;
    assert_recovers(&speaker, port).await;
    speaker.shutdown(None).await;
}

#[tokio::test]
async fn open_errors_get_open_message_errors() {
    let (speaker, port) = passive_speaker();
    // (OPEN body after the header, expected subcode)
    let mut bad_version = vec![3u8];
    bad_version.extend_from_slice(&[0xfc, 0x00, 0, 90, 192, 0, 2, 1, 0]);
    let cases: Vec<(Vec<u8>, u8)> = vec![
        (bad_version, 1),
        // AS 64999 where 64512 is configured
        (vec![4, 0xfd, 0xe7, 0, 90, 192, 0, 2, 1, 0], 2),
        // BGP identifier 0.0.0.0
        (vec![4, 0xfc, 0x00, 0, 90, 0, 0, 0, 0, 0], 3),
        // hold time 2
        (vec![4, 0xfc, 0x00, 0, 2, 192, 0, 2, 1, 0], 6),
    ];
    for (body, subcode) in cases {
        let mut p = RawPeer::connect(port).await;
        assert!(matches!(p.recv().await, BgpMessage::Open(_)));
        let len = u16::try_from(19 + body.len()).unwrap();
        p.send_raw(&raw(0xff, len, 1, &body)).await;
        assert_eq!(
            notification_codes(&p.recv_notification().await),
            (2, subcode)
        );
        p.expect_closed().await;
    }
    assert_recovers(&speaker, port).await;
    speaker.shutdown(None).await;
}

#[tokio::test]
async fn unexpected_messages_get_fsm_errors() {
    let (speaker, port) = passive_speaker();
    // KEEPALIVE before OPEN (OpenSent).
    let mut p = RawPeer::connect(port).await;
    assert!(matches!(p.recv().await, BgpMessage::Open(_)));
    p.send(BgpMessage::KeepAlive).await;
    assert_eq!(notification_codes(&p.recv_notification().await), (5, 1));
    p.expect_closed().await;
    // UPDATE before KEEPALIVE (OpenConfirm).
    let mut p = RawPeer::connect(port).await;
    assert!(matches!(p.recv().await, BgpMessage::Open(_)));
    p.send(BgpMessage::Open(open(PEER_ASN, 9))).await;
    assert_eq!(p.recv().await, BgpMessage::KeepAlive);
    p.send(BgpMessage::Update(BgpUpdateMessage::new(
        vec![],
        vec![],
        vec![],
    )))
    .await;
    assert_eq!(notification_codes(&p.recv_notification().await), (5, 2));
    p.expect_closed().await;
    // A second OPEN once Established.
    let mut p = RawPeer::connect(port).await;
    p.handshake(9).await;
    assert!(initial_table(&mut p).await.is_empty());
    p.send(BgpMessage::Open(open(PEER_ASN, 9))).await;
    assert_eq!(notification_codes(&p.recv_notification().await), (5, 3));
    p.expect_closed().await;
    assert_recovers(&speaker, port).await;
    speaker.shutdown(None).await;
}

#[tokio::test]
async fn silent_peer_gets_hold_timer_expired() {
    let (speaker, port) = passive_speaker();
    let mut p = RawPeer::connect(port).await;
    p.handshake(3).await; // negotiated hold: min(9, 3) = 3 s
    assert!(initial_table(&mut p).await.is_empty());
    let start = Instant::now();
    // Say nothing more; the speaker keeps sending KEEPALIVEs (every second) until its hold
    // timer fires.
    let n = p.recv_notification().await;
    assert_eq!(notification_codes(&n), (4, 0));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "hold timer fired after {took:?}"
    );
    p.expect_closed().await;
    assert_recovers(&speaker, port).await;
    speaker.shutdown(None).await;
}

#[tokio::test]
async fn updates_follow_the_set_and_route_refresh_resends() {
    let (speaker, port) = passive_speaker();
    let mut events = speaker.events();
    speaker.set_advertisements(vec![vip4(), vip6()]).unwrap();
    let mut p = RawPeer::connect(port).await;
    let their_open = p.handshake(9).await;
    assert_eq!(their_open.my_asn4(), MY_ASN);
    assert_eq!(
        initial_table(&mut p).await,
        ["10.90.0.100/32", "fd90::100/128"]
    );
    wait_state(&speaker, State::Established).await;
    let st = &speaker.peers()[0];
    assert_eq!(st.prefixes_advertised, 2);
    assert!(st.uptime.is_some());
    assert!(st.updates_sent >= 4, "{st:?}");

    // ROUTE-REFRESH for IPv4: the IPv4 route again.
    p.send(BgpMessage::RouteRefresh(BgpRouteRefreshMessage::new(
        AddressType::Ipv4Unicast,
        RouteRefreshSubcode::NormalRequest,
    )))
    .await;
    let u = p.recv_update().await;
    assert_eq!(announced(&u).0, ["10.90.0.100/32"]);
    assert_eq!(announced(&u).1, [0xfde8_0064]);

    // Withdraw IPv4, add a second IPv6 VIP: on the wire within a second.
    let before = Instant::now();
    let vip6b = Advertisement::host(
        "fd90::101".parse().unwrap(),
        "2001:db8:ffff::2".parse().unwrap(),
    );
    speaker.set_advertisements(vec![vip6(), vip6b]).unwrap();
    let w = p.recv_update().await;
    assert_eq!(withdrawn(&w), ["10.90.0.100/32"]);
    let a = p.recv_update().await;
    assert_eq!(announced(&a).0, ["fd90::101/128"]);
    let took = before.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // Our own UPDATEs with a received route are counted, not installed.
    let received = speaker.peers()[0].updates_received;
    p.send(BgpMessage::Update(BgpUpdateMessage::new(
        vec![],
        vec![],
        vec![],
    )))
    .await;
    let deadline = Instant::now() + WAIT;
    while speaker.peers()[0].updates_received == received {
        assert!(Instant::now() < deadline);
        sleep(Duration::from_millis(20)).await;
    }

    // The event stream saw the session come up.
    let mut saw_up = false;
    while let Ok(e) = events.try_recv() {
        saw_up |= matches!(
            e,
            BgpEvent::StateChanged {
                to: State::Established,
                ..
            }
        );
    }
    assert!(saw_up);

    speaker.shutdown(None).await;
    assert_eq!(notification_codes(&p.recv_notification().await), (6, 2));
    p.expect_closed().await;
}

#[tokio::test]
async fn active_speaker_retries_then_drains_gracefully() {
    // Nobody listens yet: the speaker's connects fail and back off.
    let port = free_port();
    let speaker = Speaker::start(vec![peer_config(port, false)]).unwrap();
    speaker.set_advertisements(vec![vip4()]).unwrap();
    sleep(Duration::from_millis(1500)).await;
    let st = &speaker.peers()[0];
    assert!(matches!(st.state, State::Idle | State::Connect), "{st:?}");
    assert!(
        st.last_error.as_deref().unwrap_or("").contains("connect"),
        "{st:?}"
    );

    let listener = TcpListener::bind(SocketAddr::from((LOCAL, port)))
        .await
        .unwrap();
    let (stream, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut p = RawPeer::from(stream);
    p.handshake(9).await;
    assert_eq!(initial_table(&mut p).await, ["10.90.0.100/32"]);

    // Graceful shutdown: GRACEFUL_SHUTDOWN re-announce, the wait, withdraw, Cease.
    let wait = Duration::from_millis(1500);
    let started = Instant::now();
    let (_, (gshut, withdraw_at, cease)) = tokio::join!(speaker.shutdown(Some(wait)), async {
        let u = p.recv_update().await;
        let (prefixes, communities) = announced(&u);
        assert_eq!(prefixes, ["10.90.0.100/32"]);
        let w = p.recv_update().await;
        let withdraw_at = started.elapsed();
        assert_eq!(withdrawn(&w), ["10.90.0.100/32"]);
        let n = p.recv_notification().await;
        (communities, withdraw_at, n)
    });
    assert!(gshut.contains(&GRACEFUL_SHUTDOWN), "{gshut:x?}");
    assert!(gshut.contains(&0xfde8_0064));
    assert!(withdraw_at >= wait, "withdrawn after {withdraw_at:?}");
    assert_eq!(notification_codes(&cease), (6, 2));
    p.expect_closed().await;
}

#[tokio::test]
async fn connections_from_unknown_addresses_are_closed() {
    let port = free_port();
    // The configured peer is 127.0.0.2; we connect from 127.0.0.1.
    let cfg = PeerConfig {
        peer_address: "127.0.0.2".parse().unwrap(),
        ..peer_config(port, true)
    };
    let speaker = Speaker::start(vec![cfg]).unwrap();
    let mut p = RawPeer::connect(port).await;
    p.expect_closed().await;
    assert_eq!(speaker.peers()[0].state, State::Active);
    speaker.shutdown(None).await;
}

#[tokio::test]
async fn start_refuses_bad_passwords_and_duplicates() {
    let port = free_port();
    let with_password = PeerConfig {
        password: Some("x".repeat(81)),
        ..peer_config(port, true)
    };
    let err = Speaker::start(vec![with_password]).unwrap_err();
    assert!(err.to_string().contains("1-80 bytes"), "{err}");
    let err = Speaker::start(vec![peer_config(port, true), peer_config(port, false)]).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}

// --- peers changed at run time (`Speaker::set_peers`) ---

const PEER2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const PEER3: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// `peer_config` for a peer at `addr`.
fn peer_at(addr: Ipv4Addr, port: u16, passive: bool) -> PeerConfig {
    PeerConfig {
        peer_address: IpAddr::V4(addr),
        ..peer_config(port, passive)
    }
}

/// Waits until the peer at `addr` is in `want`.
async fn wait_peer_state(speaker: &Speaker, addr: Ipv4Addr, want: State) {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = speaker
            .peers()
            .into_iter()
            .find(|p| p.peer_address == IpAddr::V4(addr))
            .map(|p| p.state);
        if st == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "peer {addr} is {st:?}, want {want}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

fn addresses(speaker: &Speaker) -> Vec<IpAddr> {
    speaker.peers().iter().map(|p| p.peer_address).collect()
}

/// Proves the session on `p` is the one it was: after the advertisements become `ads`, the
/// prefixes `new` arrive on this very connection as the next message that is not a KEEPALIVE
/// (a reset session would show a NOTIFICATION, a close, or a new OPEN instead).
async fn assert_same_session(
    speaker: &Speaker,
    p: &mut RawPeer,
    ads: Vec<Advertisement>,
    new: &[&str],
) {
    speaker.set_advertisements(ads).unwrap();
    let u = p.recv_update().await;
    assert_eq!(announced(&u).0, new, "{u:?}");
}

fn vip4b() -> Advertisement {
    Advertisement::host("10.90.0.101".parse().unwrap(), "192.0.2.2".parse().unwrap())
}

#[tokio::test]
async fn an_empty_speaker_takes_an_active_peer_later() {
    let speaker = Speaker::start(vec![]).expect("a speaker with no peers");
    assert!(speaker.peers().is_empty());
    // Routes asked for before the peer exists are what it gets once Established.
    speaker.set_advertisements(vec![vip4()]).unwrap();
    let port = free_port();
    let listener = TcpListener::bind(SocketAddr::from((LOCAL, port)))
        .await
        .unwrap();
    speaker
        .set_peers(vec![peer_config(port, false)])
        .await
        .unwrap();
    assert_eq!(addresses(&speaker), [IpAddr::V4(LOCAL)]);
    let (stream, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut p = RawPeer::from(stream);
    p.handshake(9).await;
    assert_eq!(initial_table(&mut p).await, ["10.90.0.100/32"]);
    wait_peer_state(&speaker, LOCAL, State::Established).await;
    // Shutdown reaches peers added after start.
    speaker.shutdown(None).await;
    assert_eq!(notification_codes(&p.recv_notification().await), (6, 2));
    p.expect_closed().await;
    let err = speaker.set_peers(vec![]).await.unwrap_err();
    assert!(err.to_string().contains("shut down"), "{err}");
}

#[tokio::test]
async fn passive_peers_added_later_are_routed_through_one_listener() {
    let port = free_port();
    let speaker = Speaker::start(vec![]).unwrap();
    speaker.set_advertisements(vec![vip4()]).unwrap();
    let a = peer_at(LOCAL, port, true);
    speaker.set_peers(vec![a.clone()]).await.unwrap();
    let mut pa = RawPeer::connect(port).await;
    pa.handshake(9).await;
    assert_eq!(initial_table(&mut pa).await, ["10.90.0.100/32"]);

    // A second passive peer on the same port, with an MD5 key: the open listener learns the
    // route and the key; the first peer's session is not touched.
    let b = PeerConfig {
        password: Some("sluice-md5".into()),
        ..peer_at(PEER2, port, true)
    };
    speaker.set_peers(vec![a.clone(), b.clone()]).await.unwrap();
    assert_eq!(addresses(&speaker), [IpAddr::V4(LOCAL), IpAddr::V4(PEER2)]);
    let mut pb = RawPeer::connect_from(PEER2, port, Some("sluice-md5")).await;
    pb.handshake(9).await;
    assert_eq!(initial_table(&mut pb).await, ["10.90.0.100/32"]);
    wait_peer_state(&speaker, PEER2, State::Established).await;
    assert_same_session(
        &speaker,
        &mut pa,
        vec![vip4(), vip4b()],
        &["10.90.0.101/32"],
    )
    .await;
    assert_eq!(
        announced(&pb.recv_update().await).0,
        ["10.90.0.101/32"],
        "the new peer follows advertisement changes too"
    );
    assert_eq!(speaker.peers()[0].established_transitions, 1);

    // No passive peer left: the listener closes.
    speaker.set_peers(vec![]).await.unwrap();
    for p in [&mut pa, &mut pb] {
        assert_eq!(notification_codes(&p.recv_notification().await), (6, 3));
        p.expect_closed().await;
    }
    let refused = TcpStream::connect(SocketAddr::from((LOCAL, port))).await;
    assert!(refused.is_err(), "the listener is closed: {refused:?}");
    speaker.shutdown(None).await;
}

#[tokio::test]
async fn unchanged_peer_keeps_its_session_while_others_come_and_go() {
    let port = free_port();
    let a = peer_at(LOCAL, port, true);
    let speaker = Speaker::start(vec![a.clone()]).unwrap();
    speaker.set_advertisements(vec![vip4()]).unwrap();
    let mut pa = RawPeer::connect(port).await;
    pa.handshake(9).await;
    assert_eq!(initial_table(&mut pa).await, ["10.90.0.100/32"]);
    wait_peer_state(&speaker, LOCAL, State::Established).await;

    // Add an active peer in front (order is the caller's), then reapply the same list.
    let active_port = free_port();
    let listener = TcpListener::bind(SocketAddr::from((PEER3, active_port)))
        .await
        .unwrap();
    let c = peer_at(PEER3, active_port, false);
    speaker.set_peers(vec![c.clone(), a.clone()]).await.unwrap();
    assert_eq!(addresses(&speaker), [IpAddr::V4(PEER3), IpAddr::V4(LOCAL)]);
    let (stream, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut pc = RawPeer::from(stream);
    pc.handshake(9).await;
    assert_eq!(initial_table(&mut pc).await, ["10.90.0.100/32"]);
    speaker.set_peers(vec![c.clone(), a.clone()]).await.unwrap();

    // Remove the active peer again.
    speaker.set_peers(vec![a.clone()]).await.unwrap();
    assert_eq!(notification_codes(&pc.recv_notification().await), (6, 3));
    pc.expect_closed().await;

    // Through all of it, the first peer's session is the one from the start.
    assert_same_session(
        &speaker,
        &mut pa,
        vec![vip4(), vip4b()],
        &["10.90.0.101/32"],
    )
    .await;
    let st = &speaker.peers()[0];
    assert_eq!(st.state, State::Established);
    assert_eq!(st.established_transitions, 1, "{st:?}");
    assert_eq!(st.notifications_sent, 0, "{st:?}");
    speaker.shutdown(None).await;
    assert_eq!(notification_codes(&pa.recv_notification().await), (6, 2));
}

#[tokio::test]
async fn removed_peer_gets_peer_deconfigured_and_its_address_is_refused() {
    let port = free_port();
    let a = peer_at(LOCAL, port, true);
    let b = peer_at(PEER2, port, true);
    let speaker = Speaker::start(vec![a.clone(), b]).unwrap();
    let mut events = speaker.events();
    let mut pa = RawPeer::connect(port).await;
    pa.handshake(9).await;
    assert!(initial_table(&mut pa).await.is_empty());
    let mut pb = RawPeer::connect_from(PEER2, port, None).await;
    pb.handshake(9).await;
    assert!(initial_table(&mut pb).await.is_empty());
    wait_peer_state(&speaker, PEER2, State::Established).await;

    speaker.set_peers(vec![a]).await.unwrap();
    assert_eq!(addresses(&speaker), [IpAddr::V4(LOCAL)]);
    assert_eq!(notification_codes(&pb.recv_notification().await), (6, 3));
    pb.expect_closed().await;

    // The event stream names the removed peer's NOTIFICATION.
    let deadline = Instant::now() + WAIT;
    loop {
        let e = timeout(deadline - Instant::now(), events.recv())
            .await
            .expect("the NOTIFICATION event")
            .unwrap();
        if e == (BgpEvent::NotificationSent {
            peer: IpAddr::V4(PEER2),
            code: 6,
            subcode: 3,
        }) {
            break;
        }
    }

    // The shared listener no longer takes the removed address.
    let mut again = RawPeer::connect_from(PEER2, port, None).await;
    again.expect_closed().await;
    assert_same_session(&speaker, &mut pa, vec![vip4()], &["10.90.0.100/32"]).await;
    speaker.shutdown(None).await;
}

#[tokio::test]
async fn changed_peer_reconnects_with_the_new_settings() {
    let port = free_port();
    let listener = TcpListener::bind(SocketAddr::from((LOCAL, port)))
        .await
        .unwrap();
    let old = peer_config(port, false);
    let speaker = Speaker::start(vec![old.clone()]).unwrap();
    speaker.set_advertisements(vec![vip4()]).unwrap();
    let (stream, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut p = RawPeer::from(stream);
    assert_eq!(p.handshake(30).await.hold_time(), 9);
    assert_eq!(initial_table(&mut p).await, ["10.90.0.100/32"]);
    wait_state(&speaker, State::Established).await;

    let new = PeerConfig {
        hold_time: Duration::from_secs(27),
        ..old
    };
    speaker.set_peers(vec![new]).await.unwrap();
    // RFC 4486 subcode 6: the peer stays configured, with other settings.
    assert_eq!(notification_codes(&p.recv_notification().await), (6, 6));
    p.expect_closed().await;
    let (stream, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let mut p = RawPeer::from(stream);
    assert_eq!(p.handshake(30).await.hold_time(), 27);
    assert_eq!(initial_table(&mut p).await, ["10.90.0.100/32"]);
    wait_state(&speaker, State::Established).await;
    // Counters run on across the change.
    let st = &speaker.peers()[0];
    assert_eq!(st.established_transitions, 2, "{st:?}");
    assert_eq!(st.notifications_sent, 1, "{st:?}");
    speaker.shutdown(None).await;
}

#[tokio::test]
async fn an_invalid_peer_list_changes_nothing() {
    let (speaker, port) = passive_speaker();
    let mut p = RawPeer::connect(port).await;
    p.handshake(9).await;
    assert!(initial_table(&mut p).await.is_empty());
    wait_state(&speaker, State::Established).await;

    let changed = PeerConfig {
        hold_time: Duration::from_secs(30),
        ..peer_config(port, true)
    };
    let err = speaker
        .set_peers(vec![changed, peer_config(port, true)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    let bad = PeerConfig {
        password: Some(String::new()),
        ..peer_at(PEER2, port, true)
    };
    let err = speaker
        .set_peers(vec![peer_config(port, true), bad])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1-80 bytes"), "{err}");
    assert_eq!(addresses(&speaker), [IpAddr::V4(LOCAL)]);
    assert_same_session(&speaker, &mut p, vec![vip4()], &["10.90.0.100/32"]).await;
    assert_eq!(speaker.peers()[0].established_transitions, 1);
    speaker.shutdown(None).await;
}
