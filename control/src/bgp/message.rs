//! Building the messages a session sends (OPEN, UPDATE, End-of-RIB, NOTIFICATION) and judging
//! the OPEN and UPDATE messages it receives, on top of netgauze's message types.
//!
//! Guarantees:
//! - every UPDATE built here encodes to at most [`MAX_MESSAGE_LEN`] bytes (RFC 4271 §4.1; we do
//!   not negotiate RFC 8654 extended messages), splitting the NLRI over several UPDATEs;
//! - a received OPEN is accepted only if it passes RFC 4271 §6.2, and every refusal names the
//!   NOTIFICATION subcode to send; a received UPDATE with an unrecognized well-known attribute
//!   is refused with RFC 4271 §6.3 "Unrecognized Well-known Attribute".

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::codec::BgpCodec;
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::notification::{
    BgpNotificationMessage, CeaseError, FiniteStateMachineError, HoldTimerExpiredError,
    MessageHeaderError, OpenMessageError, RouteRefreshError, UpdateMessageError,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, Communities,
    LargeCommunities, LocalPreference, MpReach, MpUnreach, NextHop, Origin, PathAttribute,
    PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_iana::address_family::AddressType;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Encoder;

use super::config::{AS_TRANS, DEFAULT_LOCAL_PREF, PeerConfig, RouteAttrs};

/// Largest BGP message without RFC 8654 extended messages.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Hold time the RFC suggests while waiting for the peer's OPEN ("a large value", 4 minutes).
pub const OPEN_SENT_HOLD: Duration = Duration::from_secs(240);
const BGP_VERSION: u8 = 4;

/// What the two OPENs agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's AS number (from its 4-octet AS capability when present).
    pub peer_asn: u32,
    /// The peer's BGP identifier.
    pub peer_id: Ipv4Addr,
    /// Negotiated hold time in seconds: the smaller of both offers; 0 means no hold timer and
    /// no keepalives.
    pub hold_time: u16,
    /// Keepalive interval, `None` when the hold time is 0.
    pub keepalive: Option<Duration>,
    /// Both sides sent the 4-octet AS capability (RFC 6793).
    pub asn4: bool,
    /// IPv4 unicast is exchanged (the peer named it, or named no MP family at all).
    pub ipv4: bool,
    /// IPv6 unicast is exchanged (RFC 4760; the peer named it).
    pub ipv6: bool,
    /// The peer understands ROUTE-REFRESH (RFC 2918).
    pub route_refresh: bool,
}

// === impl Negotiated ===

impl Negotiated {
    /// The negotiated hold time, `None` when it is 0.
    pub fn hold(&self) -> Option<Duration> {
        (self.hold_time != 0).then(|| Duration::from_secs(u64::from(self.hold_time)))
    }

    /// Whether a prefix of this family may be sent.
    pub fn carries(&self, prefix: &IpNet) -> bool {
        match prefix {
            IpNet::V4(_) => self.ipv4,
            IpNet::V6(_) => self.ipv6,
        }
    }
}

/// Our OPEN: version 4, our AS (AS_TRANS when it needs 4 octets), hold time, router id, and
/// the capabilities MP-BGP IPv4 + IPv6 unicast (RFC 4760), route refresh (RFC 2918) and
/// 4-octet AS (RFC 6793).
pub fn build_open(cfg: &PeerConfig) -> BgpMessage {
    let my_as = u16::try_from(cfg.my_asn).unwrap_or(u16::try_from(AS_TRANS).unwrap_or(0));
    let caps = vec![
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv4Unicast,
        )),
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv6Unicast,
        )),
        BgpCapability::RouteRefresh,
        BgpCapability::FourOctetAs(FourOctetAsCapability::new(cfg.my_asn)),
    ];
    BgpMessage::Open(BgpOpenMessage::new(
        my_as,
        cfg.hold_time_secs(),
        cfg.router_id,
        vec![BgpOpenMessageParameter::new_capabilities(caps)],
    ))
}

/// Judges the peer's OPEN against our configuration (RFC 4271 §6.2, RFC 6793, RFC 6286).
///
/// # Errors
/// The OPEN Message Error NOTIFICATION to send: Unsupported Version Number (data: our version),
/// Bad Peer AS, Bad BGP Identifier (0.0.0.0, multicast, or our own id on an internal session),
/// Unacceptable Hold Time (1 or 2 s).
pub fn check_open(cfg: &PeerConfig, open: &BgpOpenMessage) -> Result<Negotiated, OpenMessageError> {
    if open.version() != BGP_VERSION {
        return Err(OpenMessageError::UnsupportedVersionNumber {
            value: u16::from(BGP_VERSION).to_be_bytes().into(),
        });
    }
    let caps = open.capabilities();
    let asn4_cap = caps.iter().find_map(|c| match c {
        BgpCapability::FourOctetAs(a) => Some(a.asn4()),
        _ => None,
    });
    let peer_asn = asn4_cap.unwrap_or(u32::from(open.my_as()));
    // RFC 6793 §4.1: a 4-octet AS must come with AS_TRANS in the 2-octet field.
    let my_as_ok = match asn4_cap {
        Some(a) if a > 0xffff => u32::from(open.my_as()) == AS_TRANS,
        _ => true,
    };
    if peer_asn != cfg.peer_asn || !my_as_ok {
        return Err(OpenMessageError::BadPeerAs {
            value: open.my_as().to_be_bytes().into(),
        });
    }
    let peer_hold = open.hold_time();
    if peer_hold == 1 || peer_hold == 2 {
        return Err(OpenMessageError::UnacceptableHoldTime {
            value: peer_hold.to_be_bytes().into(),
        });
    }
    let id = open.bgp_id();
    let bad_id = id.is_unspecified() || id.is_multicast() || id.is_broadcast();
    if bad_id || (cfg.is_ibgp() && id == cfg.router_id) {
        return Err(OpenMessageError::BadBgpIdentifier {
            value: id.octets().into(),
        });
    }
    let hold_time = peer_hold.min(cfg.hold_time_secs());
    let keepalive = (hold_time != 0).then(|| {
        let third = Duration::from_secs(u64::from(hold_time / 3).max(1));
        cfg.keepalive.map_or(third, |k| k.min(third))
    });
    let mut any_mp = false;
    let (mut ipv4, mut ipv6) = (false, false);
    for cap in &caps {
        if let BgpCapability::MultiProtocolExtensions(mp) = cap {
            any_mp = true;
            match mp.address_type() {
                AddressType::Ipv4Unicast => ipv4 = true,
                AddressType::Ipv6Unicast => ipv6 = true,
                _ => {}
            }
        }
    }
    Ok(Negotiated {
        peer_asn,
        peer_id: id,
        hold_time,
        keepalive,
        asn4: asn4_cap.is_some(),
        // RFC 4760 §7: a peer without MP capabilities speaks IPv4 unicast only.
        ipv4: ipv4 || !any_mp,
        ipv6,
        route_refresh: caps.iter().any(|c| {
            matches!(
                c,
                BgpCapability::RouteRefresh | BgpCapability::CiscoRouteRefresh
            )
        }),
    })
}

/// How UPDATEs for one session are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateParams {
    /// Internal session: empty AS_PATH and LOCAL_PREF.
    pub ibgp: bool,
    /// Our AS number.
    pub my_asn: u32,
    /// 4-octet AS numbers negotiated (else AS_PATH is 2-octet with AS_TRANS, plus AS4_PATH).
    pub asn4: bool,
}

fn attr(optional: bool, transitive: bool, value: PathAttributeValue) -> PathAttribute {
    // The flags here are the ones RFC 4271/4760/1997/8092 give each attribute type, which is
    // exactly what `PathAttribute::from` checks; the unit tests build every kind.
    let extended = matches!(
        value,
        PathAttributeValue::MpReach(_)
            | PathAttributeValue::MpUnreach(_)
            | PathAttributeValue::Communities(_)
            | PathAttributeValue::LargeCommunities(_)
    );
    match PathAttribute::from(optional, transitive, false, extended, value) {
        Ok(a) => a,
        Err((value, e)) => unreachable!("flags of {value:?} are fixed by its RFC: {e}"),
    }
}

/// The path attributes for `attrs` on a session shaped by `params`, in type-code order.
/// `mp_reach` is the IPv6 MP_REACH_NLRI (None for IPv4 routes, which use NEXT_HOP).
fn path_attributes(
    params: UpdateParams,
    attrs: &RouteAttrs,
    extra_community: Option<u32>,
    mp_reach: Option<MpReach>,
) -> Vec<PathAttribute> {
    let mut out = Vec::with_capacity(8);
    out.push(attr(false, true, PathAttributeValue::Origin(Origin::IGP)));
    let as_path = match (params.ibgp, params.asn4) {
        (true, true) => AsPath::As4PathSegments(Box::new([])),
        (true, false) => AsPath::As2PathSegments(Box::new([])),
        (false, true) => AsPath::As4PathSegments(Box::new([As4PathSegment::new(
            AsPathSegmentType::AsSequence,
            vec![params.my_asn],
        )])),
        (false, false) => {
            let two = u16::try_from(params.my_asn).unwrap_or(u16::try_from(AS_TRANS).unwrap_or(0));
            AsPath::As2PathSegments(Box::new([As2PathSegment::new(
                AsPathSegmentType::AsSequence,
                vec![two],
            )]))
        }
    };
    out.push(attr(false, true, PathAttributeValue::AsPath(as_path)));
    if let IpAddr::V4(nh) = attrs.next_hop {
        out.push(attr(
            false,
            true,
            PathAttributeValue::NextHop(NextHop::new(nh)),
        ));
    }
    if params.ibgp {
        let lp = attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF);
        out.push(attr(
            false,
            true,
            PathAttributeValue::LocalPreference(LocalPreference::new(lp)),
        ));
    }
    let mut communities: Vec<Community> = attrs
        .communities
        .iter()
        .copied()
        .map(Community::new)
        .collect();
    if let Some(c) = extra_community
        && !attrs.communities.contains(&c)
    {
        communities.push(Community::new(c));
    }
    if !communities.is_empty() {
        out.push(attr(
            true,
            true,
            PathAttributeValue::Communities(Communities::new(communities)),
        ));
    }
    if let Some(mp) = mp_reach {
        out.push(attr(true, false, PathAttributeValue::MpReach(mp)));
    }
    if !params.ibgp && !params.asn4 && params.my_asn > 0xffff {
        // RFC 6793 §4.2.2: a NEW speaker talking to an OLD one carries the real path here.
        out.push(attr(
            true,
            true,
            PathAttributeValue::As4Path(As4Path::new(vec![As4PathSegment::new(
                AsPathSegmentType::AsSequence,
                vec![params.my_asn],
            )])),
        ));
    }
    if !attrs.large_communities.is_empty() {
        let large: Vec<LargeCommunity> = attrs
            .large_communities
            .iter()
            .map(|&(g, a, b)| LargeCommunity::new(g, a, b))
            .collect();
        out.push(attr(
            true,
            true,
            PathAttributeValue::LargeCommunities(LargeCommunities::new(large)),
        ));
    }
    out
}

fn v4_nlri(prefixes: &[IpNet]) -> Vec<Ipv4UnicastAddress> {
    prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V4(n) => Ipv4Unicast::from_net(*n).ok(),
            IpNet::V6(_) => None,
        })
        .map(Ipv4UnicastAddress::new_no_path_id)
        .collect()
}

fn v6_nlri(prefixes: &[IpNet]) -> Vec<Ipv6UnicastAddress> {
    prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V6(n) => Ipv6Unicast::from_net(*n).ok(),
            IpNet::V4(_) => None,
        })
        .map(|n| Ipv6UnicastAddress::new(None, n))
        .collect()
}

/// The encoded size of `msg` in bytes (0 if it cannot be encoded at all).
pub fn encoded_len(msg: &BgpMessage) -> usize {
    let mut buf = BytesMut::new();
    match BgpCodec::default().encode(msg.clone(), &mut buf) {
        Ok(()) => buf.len(),
        Err(_) => usize::MAX,
    }
}

/// Calls `make` on `items`, halving the slice until each message fits [`MAX_MESSAGE_LEN`].
fn push_split<T>(out: &mut Vec<BgpMessage>, items: &[T], make: &dyn Fn(&[T]) -> BgpMessage) {
    let msg = make(items);
    if items.len() <= 1 || encoded_len(&msg) <= MAX_MESSAGE_LEN {
        out.push(msg);
    } else {
        let (a, b) = items.split_at(items.len() / 2);
        push_split(out, a, make);
        push_split(out, b, make);
    }
}

/// UPDATEs announcing `prefixes`, all with `attrs` (whose next hop is of their family):
/// IPv4 in NLRI with NEXT_HOP, IPv6 in MP_REACH_NLRI (RFC 4760). `extra_community` is added
/// to the communities (RFC 8326 GRACEFUL_SHUTDOWN during a drain).
pub fn announce(
    params: UpdateParams,
    attrs: &RouteAttrs,
    prefixes: &[IpNet],
    extra_community: Option<u32>,
) -> Vec<BgpMessage> {
    let mut out = Vec::new();
    match attrs.next_hop {
        IpAddr::V4(_) => {
            let nlri = v4_nlri(prefixes);
            if nlri.is_empty() {
                return out;
            }
            let pa = path_attributes(params, attrs, extra_community, None);
            push_split(&mut out, &nlri, &|chunk| {
                BgpMessage::Update(BgpUpdateMessage::new(vec![], pa.clone(), chunk.to_vec()))
            });
        }
        IpAddr::V6(nh) => {
            let nlri = v6_nlri(prefixes);
            if nlri.is_empty() {
                return out;
            }
            push_split(&mut out, &nlri, &|chunk| {
                let mp = MpReach::Ipv6Unicast {
                    next_hop_global: nh,
                    next_hop_local: None,
                    nlri: chunk.into(),
                };
                let pa = path_attributes(params, attrs, extra_community, Some(mp));
                BgpMessage::Update(BgpUpdateMessage::new(vec![], pa, vec![]))
            });
        }
    }
    out
}

/// UPDATEs withdrawing `prefixes`: IPv4 in Withdrawn Routes, IPv6 in MP_UNREACH_NLRI.
pub fn withdraw(prefixes: &[IpNet]) -> Vec<BgpMessage> {
    let mut out = Vec::new();
    let v4 = v4_nlri(prefixes);
    if !v4.is_empty() {
        push_split(&mut out, &v4, &|chunk| {
            BgpMessage::Update(BgpUpdateMessage::new(chunk.to_vec(), vec![], vec![]))
        });
    }
    let v6 = v6_nlri(prefixes);
    if !v6.is_empty() {
        push_split(&mut out, &v6, &|chunk| {
            let mp = MpUnreach::Ipv6Unicast { nlri: chunk.into() };
            let pa = vec![attr(true, false, PathAttributeValue::MpUnreach(mp))];
            BgpMessage::Update(BgpUpdateMessage::new(vec![], pa, vec![]))
        });
    }
    out
}

/// The End-of-RIB marker (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an UPDATE with an
/// empty MP_UNREACH_NLRI for IPv6 unicast.
pub fn end_of_rib(ipv6: bool) -> BgpMessage {
    if ipv6 {
        let mp = MpUnreach::Ipv6Unicast { nlri: Box::new([]) };
        let pa = vec![attr(true, false, PathAttributeValue::MpUnreach(mp))];
        BgpMessage::Update(BgpUpdateMessage::new(vec![], pa, vec![]))
    } else {
        BgpMessage::Update(BgpUpdateMessage::new(vec![], vec![], vec![]))
    }
}

/// Judges a received UPDATE beyond what the decoder checks (RFC 4271 §6.3).
///
/// # Errors
/// Unrecognized Well-known Attribute, with the attribute (flags, type, length, value) as data,
/// for an attribute of unknown type whose Optional bit is clear.
pub fn check_update(update: &BgpUpdateMessage) -> Result<(), UpdateMessageError> {
    for a in update.path_attributes() {
        if let PathAttributeValue::UnknownAttribute(u) = a.value()
            && !a.optional()
        {
            let mut flags = 0u8;
            if a.transitive() {
                flags |= 0x40;
            }
            if a.partial() {
                flags |= 0x20;
            }
            let mut data = Vec::with_capacity(4 + u.value().len());
            let len = u.value().len();
            if a.extended_length() {
                data.extend_from_slice(&[flags | 0x10, u.code()]);
                data.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
            } else {
                data.extend_from_slice(&[flags, u.code(), u8::try_from(len).unwrap_or(u8::MAX)]);
            }
            data.extend_from_slice(u.value());
            return Err(UpdateMessageError::UnrecognizedWellKnownAttribute { value: data.into() });
        }
    }
    Ok(())
}

/// Number of prefixes an UPDATE announces and withdraws (IPv4 and MP).
pub fn prefix_counts(update: &BgpUpdateMessage) -> (usize, usize) {
    let (mut announced, mut withdrawn) = (update.nlri().len(), update.withdraw_routes().len());
    for a in update.path_attributes() {
        match a.value() {
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast { nlri, .. }) => {
                announced += nlri.len();
            }
            PathAttributeValue::MpReach(MpReach::Ipv4Unicast { nlri, .. }) => {
                announced += nlri.len();
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
                withdrawn += nlri.len();
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }) => {
                withdrawn += nlri.len();
            }
            _ => {}
        }
    }
    (announced, withdrawn)
}

/// Cease / Administrative Shutdown (RFC 4486) with an RFC 8203 shutdown communication.
pub fn cease_admin_shutdown(reason: &str) -> BgpNotificationMessage {
    let text = &reason.as_bytes()[..reason.len().min(128)];
    let mut value = Vec::with_capacity(1 + text.len());
    value.push(u8::try_from(text.len()).unwrap_or(0));
    value.extend_from_slice(text);
    BgpNotificationMessage::CeaseError(CeaseError::AdministrativeShutdown {
        value: value.into(),
    })
}

/// Cease / Peer De-configured (RFC 4486 subcode 3): the peer was removed from our
/// configuration.
pub fn cease_peer_deconfigured() -> BgpNotificationMessage {
    BgpNotificationMessage::CeaseError(CeaseError::PeerDeConfigured {
        value: Box::new([]),
    })
}

/// Cease / Other Configuration Change (RFC 4486 subcode 6): the peer's configuration changed
/// and the session restarts with the new one.
pub fn cease_other_configuration_change() -> BgpNotificationMessage {
    BgpNotificationMessage::CeaseError(CeaseError::OtherConfigurationChange {
        value: Box::new([]),
    })
}

/// Hold Timer Expired (RFC 4271 §6.5).
pub fn hold_timer_expired() -> BgpNotificationMessage {
    BgpNotificationMessage::HoldTimerExpiredError(HoldTimerExpiredError::Unspecific {
        sub_code: 0,
        value: Box::new([]),
    })
}

/// The (error code, subcode) pair of a NOTIFICATION.
pub fn notification_codes(n: &BgpNotificationMessage) -> (u8, u8) {
    use BgpNotificationMessage as N;
    match n {
        N::MessageHeaderError(e) => (
            1,
            match e {
                MessageHeaderError::Unspecific { .. } => 0,
                MessageHeaderError::ConnectionNotSynchronized { .. } => 1,
                MessageHeaderError::BadMessageLength { .. } => 2,
                MessageHeaderError::BadMessageType { .. } => 3,
            },
        ),
        N::OpenMessageError(e) => (
            2,
            match e {
                OpenMessageError::Unspecific { .. } => 0,
                OpenMessageError::UnsupportedVersionNumber { .. } => 1,
                OpenMessageError::BadPeerAs { .. } => 2,
                OpenMessageError::BadBgpIdentifier { .. } => 3,
                OpenMessageError::UnsupportedOptionalParameter { .. } => 4,
                OpenMessageError::UnacceptableHoldTime { .. } => 6,
                OpenMessageError::UnsupportedCapability { .. } => 7,
                OpenMessageError::RoleMismatch { .. } => 11,
            },
        ),
        N::UpdateMessageError(e) => (
            3,
            match e {
                UpdateMessageError::Unspecific { .. } => 0,
                UpdateMessageError::MalformedAttributeList { .. } => 1,
                UpdateMessageError::UnrecognizedWellKnownAttribute { .. } => 2,
                UpdateMessageError::MissingWellKnownAttribute { .. } => 3,
                UpdateMessageError::AttributeFlagsError { .. } => 4,
                UpdateMessageError::AttributeLengthError { .. } => 5,
                UpdateMessageError::InvalidOriginAttribute { .. } => 6,
                UpdateMessageError::InvalidNextHopAttribute { .. } => 8,
                UpdateMessageError::OptionalAttributeError { .. } => 9,
                UpdateMessageError::InvalidNetworkField { .. } => 10,
                UpdateMessageError::MalformedAsPath { .. } => 11,
            },
        ),
        N::HoldTimerExpiredError(HoldTimerExpiredError::Unspecific { sub_code, .. }) => {
            (4, *sub_code)
        }
        N::FiniteStateMachineError(e) => (
            5,
            match e {
                FiniteStateMachineError::Unspecific { .. } => 0,
                FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState { .. } => 1,
                FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState { .. } => 2,
                FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState { .. } => 3,
            },
        ),
        N::CeaseError(e) => (
            6,
            match e {
                CeaseError::MaximumNumberOfPrefixesReached { .. } => 1,
                CeaseError::AdministrativeShutdown { .. } => 2,
                CeaseError::PeerDeConfigured { .. } => 3,
                CeaseError::AdministrativeReset { .. } => 4,
                CeaseError::ConnectionRejected { .. } => 5,
                CeaseError::OtherConfigurationChange { .. } => 6,
                CeaseError::ConnectionCollisionResolution { .. } => 7,
                CeaseError::OutOfResources { .. } => 8,
                CeaseError::HardReset { .. } => 9,
                CeaseError::BfdDown { .. } => 10,
            },
        ),
        N::RouteRefreshError(RouteRefreshError::InvalidMessageLength { .. }) => (7, 1),
    }
}

/// A one-line description of a NOTIFICATION for logs and [`PeerStatus`](super::PeerStatus).
pub fn describe_notification(n: &BgpNotificationMessage) -> String {
    let (code, sub) = notification_codes(n);
    let name = match (code, sub) {
        (1, 1) => "Message Header Error / Connection Not Synchronized",
        (1, 2) => "Message Header Error / Bad Message Length",
        (1, 3) => "Message Header Error / Bad Message Type",
        (1, _) => "Message Header Error",
        (2, 1) => "OPEN Message Error / Unsupported Version Number",
        (2, 2) => "OPEN Message Error / Bad Peer AS",
        (2, 3) => "OPEN Message Error / Bad BGP Identifier",
        (2, 6) => "OPEN Message Error / Unacceptable Hold Time",
        (2, _) => "OPEN Message Error",
        (3, 2) => "UPDATE Message Error / Unrecognized Well-known Attribute",
        (3, _) => "UPDATE Message Error",
        (4, _) => "Hold Timer Expired",
        (5, _) => "Finite State Machine Error",
        (6, 2) => "Cease / Administrative Shutdown",
        (6, 3) => "Cease / Peer De-configured",
        (6, 4) => "Cease / Administrative Reset",
        (6, 6) => "Cease / Other Configuration Change",
        (6, _) => "Cease",
        (7, _) => "ROUTE-REFRESH Message Error",
        _ => "unknown error",
    };
    format!("{name} ({code}/{sub})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use tokio_util::codec::Decoder;

    fn cfg() -> PeerConfig {
        PeerConfig::new(
            4_200_000_001,
            64512,
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
        )
    }

    /// Encodes then decodes with netgauze (4-octet AS numbers as negotiated).
    fn round_trip(msg: &BgpMessage, asn4: bool) -> BgpMessage {
        let mut buf = BytesMut::new();
        BgpCodec::new(asn4).encode(msg.clone(), &mut buf).unwrap();
        assert!(buf.len() <= MAX_MESSAGE_LEN, "{} bytes", buf.len());
        let mut codec = BgpCodec::new_from_ctx(asn4, BgpParsingContext::default());
        let (decoded, ignored) = codec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(ignored, Default::default());
        decoded
    }

    fn open_from(my_as: u16, hold: u16, id: &str, caps: Vec<BgpCapability>) -> BgpOpenMessage {
        BgpOpenMessage::new(
            my_as,
            hold,
            id.parse().unwrap(),
            vec![BgpOpenMessageParameter::new_capabilities(caps)],
        )
    }

    fn peer_caps(asn: u32) -> Vec<BgpCapability> {
        vec![
            BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                AddressType::Ipv4Unicast,
            )),
            BgpCapability::FourOctetAs(FourOctetAsCapability::new(asn)),
        ]
    }

    #[test]
    fn open_round_trips_with_as_trans() {
        let msg = build_open(&cfg());
        let BgpMessage::Open(open) = round_trip(&msg, true) else {
            panic!("not an OPEN");
        };
        assert_eq!(open.my_as(), 23456);
        assert_eq!(open.my_asn4(), 4_200_000_001);
        assert_eq!(open.hold_time(), 90);
        assert_eq!(open.bgp_id(), "192.0.2.2".parse::<Ipv4Addr>().unwrap());
        let caps = open.capabilities();
        assert!(caps.contains(&&BgpCapability::RouteRefresh));
        assert_eq!(caps.len(), 4);
        // Small AS numbers go out as themselves.
        let small = PeerConfig {
            my_asn: 64513,
            ..cfg()
        };
        let BgpMessage::Open(open) = build_open(&small) else {
            panic!()
        };
        assert_eq!(open.my_as(), 64513);
    }

    #[test]
    fn open_checks_follow_rfc_4271() {
        let c = cfg();
        let ok = open_from(64512, 30, "192.0.2.1", peer_caps(64512));
        let n = check_open(&c, &ok).unwrap();
        assert_eq!(n.hold_time, 30);
        assert_eq!(n.keepalive, Some(Duration::from_secs(10)));
        assert!(n.asn4 && n.ipv4 && !n.ipv6 && !n.route_refresh);

        let bad_as = open_from(64999, 30, "192.0.2.1", peer_caps(64999));
        assert!(matches!(
            check_open(&c, &bad_as),
            Err(OpenMessageError::BadPeerAs { .. })
        ));
        let bad_hold = open_from(64512, 2, "192.0.2.1", peer_caps(64512));
        assert!(matches!(
            check_open(&c, &bad_hold),
            Err(OpenMessageError::UnacceptableHoldTime { .. })
        ));
        let zero_id = open_from(64512, 30, "0.0.0.0", peer_caps(64512));
        assert!(matches!(
            check_open(&c, &zero_id),
            Err(OpenMessageError::BadBgpIdentifier { .. })
        ));
        // iBGP with our own router id.
        let ibgp = PeerConfig {
            my_asn: 64512,
            ..cfg()
        };
        let same_id = open_from(64512, 30, "192.0.2.2", peer_caps(64512));
        assert!(matches!(
            check_open(&ibgp, &same_id),
            Err(OpenMessageError::BadBgpIdentifier { .. })
        ));
        // A 4-octet AS capability without AS_TRANS in the 2-octet field.
        let c4 = PeerConfig {
            peer_asn: 4_200_000_002,
            ..cfg()
        };
        let no_trans = open_from(1, 30, "192.0.2.1", peer_caps(4_200_000_002));
        assert!(check_open(&c4, &no_trans).is_err());
        let with_trans = open_from(23456, 30, "192.0.2.1", peer_caps(4_200_000_002));
        assert!(check_open(&c4, &with_trans).is_ok());
        // No MP capability at all: IPv4 only; hold 0 means no keepalives.
        let old = open_from(64512, 0, "192.0.2.1", vec![]);
        let n = check_open(&c, &old).unwrap();
        assert!(n.ipv4 && !n.ipv6 && !n.asn4);
        assert_eq!((n.hold_time, n.keepalive), (0, None));
    }

    #[test]
    fn keepalive_never_exceeds_a_third_of_the_hold() {
        let c = PeerConfig {
            keepalive: Some(Duration::from_secs(30)),
            ..cfg()
        };
        let open = open_from(64512, 9, "192.0.2.1", peer_caps(64512));
        assert_eq!(
            check_open(&c, &open).unwrap().keepalive,
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn unrecognized_well_known_attribute_is_refused_with_its_bytes() {
        use netgauze_bgp_pkt::path_attribute::UnknownAttribute;
        let unknown = PathAttribute::from(
            false,
            true,
            false,
            false,
            PathAttributeValue::UnknownAttribute(UnknownAttribute::new(0xf0, vec![1, 2, 3])),
        )
        .unwrap();
        let u = BgpUpdateMessage::new(vec![], vec![unknown], vec![]);
        assert_eq!(
            check_update(&u),
            Err(UpdateMessageError::UnrecognizedWellKnownAttribute {
                value: vec![0x40, 0xf0, 3, 1, 2, 3].into()
            })
        );
        let optional = PathAttribute::from(
            true,
            true,
            false,
            false,
            PathAttributeValue::UnknownAttribute(UnknownAttribute::new(0xf0, vec![1])),
        )
        .unwrap();
        assert!(check_update(&BgpUpdateMessage::new(vec![], vec![optional], vec![])).is_ok());
    }

    #[test]
    fn notification_codes_match_the_wire() {
        let cases = [
            hold_timer_expired(),
            cease_admin_shutdown("bye"),
            cease_peer_deconfigured(),
            cease_other_configuration_change(),
            BgpNotificationMessage::MessageHeaderError(MessageHeaderError::BadMessageLength {
                value: vec![0, 5].into(),
            }),
            BgpNotificationMessage::UpdateMessageError(
                UpdateMessageError::UnrecognizedWellKnownAttribute {
                    value: vec![].into(),
                },
            ),
            BgpNotificationMessage::FiniteStateMachineError(
                FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState {
                    value: vec![].into(),
                },
            ),
        ];
        for n in cases {
            let mut buf = BytesMut::new();
            BgpCodec::default()
                .encode(BgpMessage::Notification(n.clone()), &mut buf)
                .unwrap();
            assert_eq!((buf[19], buf[20]), notification_codes(&n), "{n:?}");
            assert!(!describe_notification(&n).is_empty());
        }
    }

    fn attrs(next_hop: &str) -> RouteAttrs {
        RouteAttrs {
            next_hop: next_hop.parse().unwrap(),
            communities: vec![0xfde8_0064],
            large_communities: vec![(4_200_000_001, 1, 2)],
            local_pref: Some(200),
        }
    }

    /// Everything one decoded UPDATE says, flattened for comparison.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        announced: BTreeSet<IpNet>,
        withdrawn: BTreeSet<IpNet>,
        next_hop: Option<IpAddr>,
        communities: Vec<u32>,
        large: Vec<(u32, u32, u32)>,
        local_pref: Option<u32>,
        as_path: Vec<u32>,
        origin: Option<Origin>,
    }

    fn inspect(msgs: &[BgpMessage], asn4: bool) -> Seen {
        let mut s = Seen::default();
        for m in msgs {
            let BgpMessage::Update(u) = round_trip(m, asn4) else {
                panic!("not an UPDATE")
            };
            s.announced
                .extend(u.nlri().iter().map(|a| IpNet::V4(a.network().address())));
            s.withdrawn.extend(
                u.withdraw_routes()
                    .iter()
                    .map(|a| IpNet::V4(a.network().address())),
            );
            for a in u.path_attributes() {
                match a.value() {
                    PathAttributeValue::Origin(o) => s.origin = Some(*o),
                    PathAttributeValue::NextHop(n) => s.next_hop = Some(n.next_hop().into()),
                    PathAttributeValue::LocalPreference(l) => s.local_pref = Some(l.metric()),
                    PathAttributeValue::Communities(c) => {
                        s.communities = c.communities().iter().map(|c| c.value()).collect();
                    }
                    PathAttributeValue::LargeCommunities(c) => {
                        s.large = c
                            .communities()
                            .iter()
                            .map(|c| (c.global_admin(), c.local_data1(), c.local_data2()))
                            .collect();
                    }
                    PathAttributeValue::AsPath(AsPath::As4PathSegments(segs)) => {
                        s.as_path = segs.iter().flat_map(|g| g.as_numbers().to_vec()).collect();
                    }
                    PathAttributeValue::AsPath(AsPath::As2PathSegments(segs)) => {
                        s.as_path = segs
                            .iter()
                            .flat_map(|g| g.as_numbers().iter().map(|&a| u32::from(a)))
                            .collect();
                    }
                    PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                        next_hop_global,
                        nlri,
                        ..
                    }) => {
                        s.next_hop = Some((*next_hop_global).into());
                        s.announced
                            .extend(nlri.iter().map(|a| IpNet::V6(a.network().address())));
                    }
                    PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
                        s.withdrawn
                            .extend(nlri.iter().map(|a| IpNet::V6(a.network().address())));
                    }
                    _ => {}
                }
            }
        }
        s
    }

    #[test]
    fn ebgp_ipv4_update_carries_every_attribute() {
        let p = UpdateParams {
            ibgp: false,
            my_asn: 4_200_000_001,
            asn4: true,
        };
        let prefixes = ["10.90.0.100/32".parse().unwrap()];
        let msgs = announce(p, &attrs("192.0.2.2"), &prefixes, Some(0xffff_0000));
        let s = inspect(&msgs, true);
        assert_eq!(s.announced, prefixes.into_iter().collect());
        assert_eq!(s.next_hop, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(s.communities, vec![0xfde8_0064, 0xffff_0000]);
        assert_eq!(s.large, vec![(4_200_000_001, 1, 2)]);
        assert_eq!(s.local_pref, None, "no LOCAL_PREF on eBGP");
        assert_eq!(s.as_path, vec![4_200_000_001]);
        assert_eq!(s.origin, Some(Origin::IGP));
    }

    #[test]
    fn ibgp_ipv6_update_uses_mp_reach_and_local_pref() {
        let p = UpdateParams {
            ibgp: true,
            my_asn: 64512,
            asn4: true,
        };
        let prefixes = ["fd90::100/128".parse().unwrap()];
        let msgs = announce(p, &attrs("2001:db8:ffff::2"), &prefixes, None);
        let s = inspect(&msgs, true);
        assert_eq!(s.announced, prefixes.into_iter().collect());
        assert_eq!(s.next_hop, Some("2001:db8:ffff::2".parse().unwrap()));
        assert_eq!(s.local_pref, Some(200));
        assert!(s.as_path.is_empty(), "empty AS_PATH on iBGP");
    }

    #[test]
    fn two_octet_session_gets_as_trans_and_as4_path() {
        let p = UpdateParams {
            ibgp: false,
            my_asn: 4_200_000_001,
            asn4: false,
        };
        let msgs = announce(
            p,
            &attrs("192.0.2.2"),
            &["10.0.0.0/8".parse().unwrap()],
            None,
        );
        let BgpMessage::Update(u) = round_trip(&msgs[0], false) else {
            panic!()
        };
        let has_as4_path = u
            .path_attributes()
            .iter()
            .any(|a| matches!(a.value(), PathAttributeValue::As4Path(_)));
        assert!(has_as4_path);
        assert_eq!(inspect(&msgs, false).as_path, vec![23456]);
    }

    #[test]
    fn withdraw_and_end_of_rib_round_trip() {
        let prefixes: Vec<IpNet> = vec![
            "10.90.0.100/32".parse().unwrap(),
            "fd90::100/128".parse().unwrap(),
        ];
        let s = inspect(&withdraw(&prefixes), true);
        assert_eq!(s.withdrawn, prefixes.into_iter().collect());
        for v6 in [false, true] {
            let BgpMessage::Update(u) = round_trip(&end_of_rib(v6), true) else {
                panic!()
            };
            let want = if v6 {
                AddressType::Ipv6Unicast
            } else {
                AddressType::Ipv4Unicast
            };
            assert_eq!(u.end_of_rib(), Some(want));
        }
    }

    fn v4_host(i: u32) -> IpNet {
        IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
    }

    fn v6_host(i: u32) -> IpNet {
        IpNet::from(IpAddr::V6(std::net::Ipv6Addr::from(
            0xfd90_u128 << 112 | u128::from(i),
        )))
    }

    proptest! {
        /// Whatever the set, the UPDATEs decode back to exactly it, with the same attributes,
        /// and each fits 4096 bytes.
        #[test]
        fn announce_decodes_to_what_was_encoded(
            v4 in proptest::collection::btree_set(0u32..1_000_000, 0..1500),
            v6 in proptest::collection::btree_set(0u32..1_000_000, 0..400),
            communities in proptest::collection::btree_set(any::<u32>(), 0..20),
            large in proptest::collection::btree_set(any::<(u32, u32, u32)>(), 0..10),
            local_pref in proptest::option::of(any::<u32>()),
            ibgp in any::<bool>(),
            asn4 in any::<bool>(),
            my_asn in 1u32..,
        ) {
            let p = UpdateParams { ibgp, my_asn, asn4 };
            let communities: Vec<u32> = communities.into_iter().collect();
            let large: Vec<(u32, u32, u32)> = large.into_iter().collect();
            for (hosts, nh) in [
                (v4.iter().map(|&i| v4_host(i)).collect::<Vec<_>>(), "192.0.2.2"),
                (v6.iter().map(|&i| v6_host(i)).collect::<Vec<_>>(), "2001:db8::2"),
            ] {
                let a = RouteAttrs {
                    next_hop: nh.parse().unwrap(),
                    communities: communities.clone(),
                    large_communities: large.clone(),
                    local_pref,
                };
                let msgs = announce(p, &a, &hosts, None);
                let s = inspect(&msgs, asn4);
                prop_assert_eq!(&s.announced, &hosts.iter().copied().collect::<BTreeSet<_>>());
                if hosts.is_empty() {
                    prop_assert!(msgs.is_empty());
                    continue;
                }
                prop_assert_eq!(s.next_hop, Some(a.next_hop));
                prop_assert_eq!(&s.communities, &communities);
                prop_assert_eq!(&s.large, &large);
                prop_assert_eq!(s.local_pref, ibgp.then(|| local_pref.unwrap_or(100)));
                let want_path = if ibgp {
                    vec![]
                } else if asn4 || my_asn <= 0xffff {
                    vec![my_asn]
                } else {
                    vec![AS_TRANS]
                };
                prop_assert_eq!(&s.as_path, &want_path);
                let w = inspect(&withdraw(&hosts), asn4);
                prop_assert_eq!(&w.withdrawn, &hosts.iter().copied().collect::<BTreeSet<_>>());
            }
        }
    }
}
