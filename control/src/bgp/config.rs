//! What a BGP session is configured with ([`PeerConfig`], MetalLB's `BGPPeer` shape) and what
//! it announces ([`Advertisement`], MetalLB's `BGPAdvertisement` shape), with the validation
//! that runs before any socket is opened.
//!
//! Guarantee: a [`PeerConfig`] that passed [`PeerConfig::validate`] and a set of advertisements
//! that passed [`Rib::build`] can always be encoded into OPEN and UPDATE messages.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv6Unicast};

/// The well-known BGP TCP port.
pub const BGP_PORT: u16 = 179;
/// RFC 6793 AS_TRANS: the 2-octet stand-in for a 4-octet AS number.
pub const AS_TRANS: u32 = 23456;
/// Default hold time (RFC 4271 suggests 90 s).
pub const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(90);
/// Default first connect-retry delay; it doubles per failure up to [`MAX_CONNECT_RETRY`].
pub const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(5);
/// Upper bound of the connect-retry back-off.
pub const MAX_CONNECT_RETRY: Duration = Duration::from_secs(60);
/// RFC 8326 GRACEFUL_SHUTDOWN community (65535:0).
pub const GRACEFUL_SHUTDOWN: u32 = 0xffff_0000;
/// LOCAL_PREF sent to internal peers when an advertisement names none (RFC 4271 requires one on
/// every iBGP UPDATE; 100 is the common default).
pub const DEFAULT_LOCAL_PREF: u32 = 100;
/// Bytes of COMMUNITIES plus LARGE_COMMUNITY values one route may carry (4 per community, 12
/// per large community), so that one prefix always fits a 4096-byte UPDATE.
pub const MAX_COMMUNITY_BYTES: usize = 3072;

/// Why a peer or an advertisement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BgpConfigError {
    /// AS 0 is reserved (RFC 7607), and AS_TRANS may not be a speaker's own AS (RFC 6793).
    #[error("peer {peer}: AS number {asn} is reserved")]
    ReservedAsn {
        /// The peer the field belongs to.
        peer: IpAddr,
        /// The refused AS number.
        asn: u32,
    },
    /// The hold time must be 0 or 3..=65535 whole seconds (RFC 4271 §4.2).
    #[error("peer {peer}: hold time {hold:?} must be 0 or 3..=65535 whole seconds")]
    BadHoldTime {
        /// The peer the field belongs to.
        peer: IpAddr,
        /// The refused hold time.
        hold: Duration,
    },
    /// The keepalive interval must be at least 1 s and below the hold time.
    #[error("peer {peer}: keepalive {keepalive:?} must be >= 1 s and < the hold time {hold:?}")]
    BadKeepalive {
        /// The peer the field belongs to.
        peer: IpAddr,
        /// The refused interval.
        keepalive: Duration,
        /// The configured hold time.
        hold: Duration,
    },
    /// The router id must be a unicast IPv4 address other than 0.0.0.0 (RFC 4271 §6.2).
    #[error("peer {peer}: router id {router_id} is not a unicast address")]
    BadRouterId {
        /// The peer the field belongs to.
        peer: IpAddr,
        /// The refused router id.
        router_id: Ipv4Addr,
    },
    /// The peer address is unspecified, multicast or broadcast.
    #[error("peer address {0} is not a unicast address")]
    BadPeerAddress(IpAddr),
    /// The source address is not of the peer address's family.
    #[error("peer {peer}: source address {source_address} is not of the peer's address family")]
    SourceFamilyMismatch {
        /// The peer the field belongs to.
        peer: IpAddr,
        /// The refused source address.
        source_address: IpAddr,
    },
    /// A port of 0 was given.
    #[error("peer {0}: port 0 is not usable")]
    BadPort(IpAddr),
    /// The connect-retry time must be in (0, 60 s].
    #[error("peer {peer}: connect retry {retry:?} must be > 0 and <= {MAX_CONNECT_RETRY:?}")]
    BadConnectRetry {
        /// The peer the field belongs to.
        peer: IpAddr,
        /// The refused delay.
        retry: Duration,
    },
    /// A TCP MD5 password (RFC 2385) must be 1–80 bytes (the kernel's key limit).
    #[error("peer {0}: the password (TCP MD5 key, RFC 2385) must be 1-80 bytes")]
    BadPassword(IpAddr),
    /// Two peers share an address.
    #[error("peer {0} is configured twice")]
    DuplicatePeer(IpAddr),
    /// An advertised prefix has bits set beyond its length (e.g. 10.0.0.1/24).
    #[error("prefix {0} has host bits set")]
    HostBitsSet(IpNet),
    /// An advertised prefix is multicast or broadcast, so it is no unicast route.
    #[error("prefix {0} is not a unicast prefix")]
    NotUnicast(IpNet),
    /// An advertisement carries so many communities that one UPDATE could not hold it
    /// (at most [`MAX_COMMUNITY_BYTES`] bytes of communities and large communities together).
    #[error("prefix {0}: too many communities for one BGP UPDATE")]
    TooManyCommunities(IpNet),
    /// An advertisement's next hop is not of its prefix's family (RFC 8950 extended next hops
    /// are not supported), or is unspecified/multicast.
    #[error("prefix {prefix}: next hop {next_hop} is not a unicast address of the prefix's family")]
    BadNextHop {
        /// The prefix.
        prefix: IpNet,
        /// The refused next hop.
        next_hop: IpAddr,
    },
    /// Two advertisements of one prefix name different next hops, so they cannot be merged.
    #[error("prefix {prefix} is advertised with two next hops ({a} and {b})")]
    ConflictingNextHop {
        /// The prefix.
        prefix: IpNet,
        /// One next hop.
        a: IpAddr,
        /// The other.
        b: IpAddr,
    },
    /// A community string is not `ASN:VALUE` with two 16-bit numbers.
    #[error("community {0:?} is not ASN:VALUE with 16-bit parts")]
    BadCommunity(String),
    /// A large community string is not `GLOBAL:LOCAL1:LOCAL2` with three 32-bit numbers.
    #[error("large community {0:?} is not GLOBAL:LOCAL1:LOCAL2 with 32-bit parts")]
    BadLargeCommunity(String),
    /// An aggregation length is longer than the address.
    #[error("aggregation length /{len} is too long for {addr}")]
    BadAggregationLength {
        /// The VIP.
        addr: IpAddr,
        /// The refused length.
        len: u8,
    },
}

/// One BGP neighbour, in the shape of MetalLB's `BGPPeer`.
///
/// Build it with [`PeerConfig::new`] (which fills the defaults below) and override fields;
/// [`Speaker::start`](super::Speaker::start) validates it.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Our AS number (4-octet; > 65535 goes out as AS_TRANS plus the RFC 6793 capability).
    pub my_asn: u32,
    /// The peer's AS number; equal to `my_asn` makes the session internal (iBGP).
    pub peer_asn: u32,
    /// The peer's address.
    pub peer_address: IpAddr,
    /// Local address to connect from (active) or listen on (passive). Default: the kernel's
    /// choice (active) or the wildcard address (passive).
    pub source_address: Option<IpAddr>,
    /// The peer's TCP port, for active sessions. Default 179.
    pub peer_port: u16,
    /// The local TCP port passive sessions listen on. Default 179.
    pub listen_port: u16,
    /// Hold time we offer, whole seconds, 0 (no keepalives) or >= 3 s. Default 90 s.
    pub hold_time: Duration,
    /// Keepalive interval. Default (`None`): a third of the negotiated hold time. Never more
    /// than a third of the negotiated hold time either way.
    pub keepalive: Option<Duration>,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Wait for the peer to connect instead of connecting (RFC 4271 PassiveTcpEstablishment).
    pub passive: bool,
    /// TCP MD5 key (RFC 2385), 1–80 bytes.
    pub password: Option<String>,
    /// First connect-retry delay after a failed or dropped session; doubles up to 60 s, with
    /// jitter. Also bounds one TCP connect attempt. Default 5 s.
    pub connect_retry: Duration,
}

impl fmt::Debug for PeerConfig {
    // By hand so that the password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("my_asn", &self.my_asn)
            .field("peer_asn", &self.peer_asn)
            .field("peer_address", &self.peer_address)
            .field("source_address", &self.source_address)
            .field("peer_port", &self.peer_port)
            .field("listen_port", &self.listen_port)
            .field("hold_time", &self.hold_time)
            .field("keepalive", &self.keepalive)
            .field("router_id", &self.router_id)
            .field("passive", &self.passive)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("connect_retry", &self.connect_retry)
            .finish()
    }
}

// === impl PeerConfig ===

impl PeerConfig {
    /// A peer with every optional field at its default: active, port 179, hold time 90 s,
    /// keepalive a third of it, no source address, no password, connect retry 5 s.
    pub fn new(my_asn: u32, peer_asn: u32, peer_address: IpAddr, router_id: Ipv4Addr) -> Self {
        PeerConfig {
            my_asn,
            peer_asn,
            peer_address,
            source_address: None,
            peer_port: BGP_PORT,
            listen_port: BGP_PORT,
            hold_time: DEFAULT_HOLD_TIME,
            keepalive: None,
            router_id,
            passive: false,
            password: None,
            connect_retry: DEFAULT_CONNECT_RETRY,
        }
    }

    /// Whether the session is internal (same AS on both ends).
    pub fn is_ibgp(&self) -> bool {
        self.my_asn == self.peer_asn
    }

    /// The hold time we offer in OPEN, in seconds (valid after [`PeerConfig::validate`]).
    pub fn hold_time_secs(&self) -> u16 {
        u16::try_from(self.hold_time.as_secs()).unwrap_or(u16::MAX)
    }

    /// Checks every field.
    ///
    /// # Errors
    /// The first field that is out of range, named in a [`BgpConfigError`].
    pub fn validate(&self) -> Result<(), BgpConfigError> {
        let peer = self.peer_address;
        for asn in [self.my_asn, self.peer_asn] {
            if asn == 0 || asn == AS_TRANS {
                return Err(BgpConfigError::ReservedAsn { peer, asn });
            }
        }
        let hold = self.hold_time;
        let secs = hold.as_secs();
        if hold.subsec_nanos() != 0 || secs == 1 || secs == 2 || secs > u64::from(u16::MAX) {
            return Err(BgpConfigError::BadHoldTime { peer, hold });
        }
        if let Some(keepalive) = self.keepalive
            && (keepalive < Duration::from_secs(1) || (secs != 0 && keepalive >= hold))
        {
            return Err(BgpConfigError::BadKeepalive {
                peer,
                keepalive,
                hold,
            });
        }
        let id = self.router_id;
        if id.is_unspecified() || id.is_multicast() || id.is_broadcast() {
            return Err(BgpConfigError::BadRouterId {
                peer,
                router_id: id,
            });
        }
        if !is_unicast(peer) {
            return Err(BgpConfigError::BadPeerAddress(peer));
        }
        if let Some(source_address) = self.source_address
            && source_address.is_ipv4() != peer.is_ipv4()
        {
            return Err(BgpConfigError::SourceFamilyMismatch {
                peer,
                source_address,
            });
        }
        if self.peer_port == 0 || self.listen_port == 0 {
            return Err(BgpConfigError::BadPort(peer));
        }
        if self.connect_retry.is_zero() || self.connect_retry > MAX_CONNECT_RETRY {
            return Err(BgpConfigError::BadConnectRetry {
                peer,
                retry: self.connect_retry,
            });
        }
        if self.password.as_ref().is_some_and(|p| {
            p.is_empty() || p.len() > sluice_dataplane::io::sockopt::TCP_MD5_MAX_KEY
        }) {
            return Err(BgpConfigError::BadPassword(peer));
        }
        Ok(())
    }
}

fn community_bytes(communities: &[u32], large: &[(u32, u32, u32)]) -> usize {
    communities.len().saturating_mul(4) + large.len().saturating_mul(12)
}

fn is_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

/// One prefix to announce, in the shape of MetalLB's `BGPAdvertisement`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Advertisement {
    /// The prefix: a /32 or /128 host route for a VIP by default, shorter with an aggregation
    /// length. No host bits may be set.
    pub prefix: IpNet,
    /// RFC 1997 communities, each `ASN << 16 | VALUE` (see [`parse_community`]).
    pub communities: Vec<u32>,
    /// RFC 8092 large communities `(global, local1, local2)`.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// LOCAL_PREF, sent to internal peers only (default there: 100).
    pub local_pref: Option<u32>,
    /// Next hop, of the prefix's family (usually the LB node's own address on the peering
    /// link).
    pub next_hop: IpAddr,
}

// === impl Advertisement ===

impl Advertisement {
    /// A host route (/32 or /128) for `vip` with no communities and no LOCAL_PREF.
    pub fn host(vip: IpAddr, next_hop: IpAddr) -> Self {
        Advertisement {
            prefix: IpNet::from(vip),
            communities: Vec::new(),
            large_communities: Vec::new(),
            local_pref: None,
            next_hop,
        }
    }

    /// The route covering `vip` aggregated to `/len` (MetalLB `aggregationLength`), host bits
    /// cleared.
    ///
    /// # Errors
    /// [`BgpConfigError::BadAggregationLength`] when `len` exceeds the address length.
    pub fn aggregated(vip: IpAddr, len: u8, next_hop: IpAddr) -> Result<Self, BgpConfigError> {
        let prefix = IpNet::new(vip, len)
            .map_err(|_| BgpConfigError::BadAggregationLength { addr: vip, len })?
            .trunc();
        Ok(Advertisement {
            prefix,
            ..Advertisement::host(vip, next_hop)
        })
    }

    /// Checks the prefix and next hop.
    ///
    /// # Errors
    /// [`BgpConfigError::HostBitsSet`] or [`BgpConfigError::BadNextHop`].
    pub fn validate(&self) -> Result<(), BgpConfigError> {
        if self.prefix != self.prefix.trunc() {
            return Err(BgpConfigError::HostBitsSet(self.prefix));
        }
        let unicast = match self.prefix {
            IpNet::V4(net) => Ipv4Unicast::from_net(net).is_ok(),
            IpNet::V6(net) => Ipv6Unicast::from_net(net).is_ok(),
        };
        if !unicast {
            return Err(BgpConfigError::NotUnicast(self.prefix));
        }
        if community_bytes(&self.communities, &self.large_communities) > MAX_COMMUNITY_BYTES {
            return Err(BgpConfigError::TooManyCommunities(self.prefix));
        }
        let same_family = self.prefix.addr().is_ipv4() == self.next_hop.is_ipv4();
        if !same_family || !is_unicast(self.next_hop) {
            return Err(BgpConfigError::BadNextHop {
                prefix: self.prefix,
                next_hop: self.next_hop,
            });
        }
        Ok(())
    }
}

/// Parses an RFC 1997 community `ASN:VALUE` (e.g. `65535:0`) into its 32-bit value.
///
/// # Errors
/// [`BgpConfigError::BadCommunity`] when either part is missing or not a 16-bit number.
pub fn parse_community(s: &str) -> Result<u32, BgpConfigError> {
    let bad = || BgpConfigError::BadCommunity(s.to_owned());
    let (hi, lo) = s.split_once(':').ok_or_else(bad)?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    Ok(u32::from(hi) << 16 | u32::from(lo))
}

/// Parses an RFC 8092 large community `GLOBAL:LOCAL1:LOCAL2`.
///
/// # Errors
/// [`BgpConfigError::BadLargeCommunity`] unless there are exactly three 32-bit numbers.
pub fn parse_large_community(s: &str) -> Result<(u32, u32, u32), BgpConfigError> {
    let bad = || BgpConfigError::BadLargeCommunity(s.to_owned());
    let mut parts = s
        .split(':')
        .map(|p| p.trim().parse::<u32>().map_err(|_| bad()));
    let (Some(a), Some(b), Some(c), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok((a?, b?, c?))
}

/// The attributes one prefix is announced with, normalised (sorted, deduplicated) so that two
/// equal sets compare equal and the Adj-RIB-Out diff sees no change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteAttrs {
    /// Next hop.
    pub next_hop: IpAddr,
    /// RFC 1997 communities, sorted and unique.
    pub communities: Vec<u32>,
    /// RFC 8092 large communities, sorted and unique.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// LOCAL_PREF for internal peers.
    pub local_pref: Option<u32>,
}

/// The desired announcements: one entry per prefix, in prefix order.
///
/// Several advertisements of one prefix (VIPs aggregated to the same prefix, or shared VIPs)
/// merge: communities and large communities are the union, LOCAL_PREF the highest given; their
/// next hops must agree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rib {
    routes: BTreeMap<IpNet, RouteAttrs>,
}

// === impl Rib ===

impl Rib {
    /// Validates and merges `ads`. The result does not depend on their order.
    ///
    /// # Errors
    /// The first invalid advertisement, or two next hops for one prefix.
    pub fn build(ads: &[Advertisement]) -> Result<Rib, BgpConfigError> {
        let mut routes: BTreeMap<IpNet, RouteAttrs> = BTreeMap::new();
        for ad in ads {
            ad.validate()?;
            match routes.get_mut(&ad.prefix) {
                None => {
                    routes.insert(
                        ad.prefix,
                        RouteAttrs {
                            next_hop: ad.next_hop,
                            communities: ad.communities.clone(),
                            large_communities: ad.large_communities.clone(),
                            local_pref: ad.local_pref,
                        },
                    );
                }
                Some(have) => {
                    if have.next_hop != ad.next_hop {
                        let (a, b) = if have.next_hop < ad.next_hop {
                            (have.next_hop, ad.next_hop)
                        } else {
                            (ad.next_hop, have.next_hop)
                        };
                        return Err(BgpConfigError::ConflictingNextHop {
                            prefix: ad.prefix,
                            a,
                            b,
                        });
                    }
                    have.communities.extend_from_slice(&ad.communities);
                    have.large_communities
                        .extend_from_slice(&ad.large_communities);
                    have.local_pref = have.local_pref.max(ad.local_pref);
                }
            }
        }
        for (prefix, attrs) in &mut routes {
            attrs.communities.sort_unstable();
            attrs.communities.dedup();
            attrs.large_communities.sort_unstable();
            attrs.large_communities.dedup();
            // Merging can grow the set past what one validated advertisement may carry.
            if community_bytes(&attrs.communities, &attrs.large_communities) > MAX_COMMUNITY_BYTES {
                return Err(BgpConfigError::TooManyCommunities(*prefix));
            }
        }
        Ok(Rib { routes })
    }

    /// The routes, in prefix order.
    pub fn routes(&self) -> &BTreeMap<IpNet, RouteAttrs> {
        &self.routes
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there is nothing to announce.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerConfig {
        PeerConfig::new(
            64512,
            64513,
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
        )
    }

    #[test]
    fn defaults_validate() {
        let p = peer();
        p.validate().unwrap();
        assert_eq!(p.peer_port, 179);
        assert_eq!(p.hold_time_secs(), 90);
        assert!(!p.is_ibgp());
    }

    #[test]
    fn rejects_out_of_range_fields() {
        let ip = peer().peer_address;
        let cases: Vec<(PeerConfig, BgpConfigError)> = vec![
            (
                PeerConfig {
                    my_asn: 0,
                    ..peer()
                },
                BgpConfigError::ReservedAsn { peer: ip, asn: 0 },
            ),
            (
                PeerConfig {
                    peer_asn: AS_TRANS,
                    ..peer()
                },
                BgpConfigError::ReservedAsn {
                    peer: ip,
                    asn: AS_TRANS,
                },
            ),
            (
                PeerConfig {
                    hold_time: Duration::from_secs(2),
                    ..peer()
                },
                BgpConfigError::BadHoldTime {
                    peer: ip,
                    hold: Duration::from_secs(2),
                },
            ),
            (
                PeerConfig {
                    hold_time: Duration::from_millis(3500),
                    ..peer()
                },
                BgpConfigError::BadHoldTime {
                    peer: ip,
                    hold: Duration::from_millis(3500),
                },
            ),
            (
                PeerConfig {
                    keepalive: Some(Duration::from_secs(90)),
                    ..peer()
                },
                BgpConfigError::BadKeepalive {
                    peer: ip,
                    keepalive: Duration::from_secs(90),
                    hold: Duration::from_secs(90),
                },
            ),
            (
                PeerConfig {
                    router_id: Ipv4Addr::UNSPECIFIED,
                    ..peer()
                },
                BgpConfigError::BadRouterId {
                    peer: ip,
                    router_id: Ipv4Addr::UNSPECIFIED,
                },
            ),
            (
                PeerConfig {
                    source_address: Some("2001:db8::1".parse().unwrap()),
                    ..peer()
                },
                BgpConfigError::SourceFamilyMismatch {
                    peer: ip,
                    source_address: "2001:db8::1".parse().unwrap(),
                },
            ),
            (
                PeerConfig {
                    connect_retry: Duration::ZERO,
                    ..peer()
                },
                BgpConfigError::BadConnectRetry {
                    peer: ip,
                    retry: Duration::ZERO,
                },
            ),
            (
                PeerConfig {
                    password: Some("x".repeat(81)),
                    ..peer()
                },
                BgpConfigError::BadPassword(ip),
            ),
            (
                PeerConfig {
                    password: Some(String::new()),
                    ..peer()
                },
                BgpConfigError::BadPassword(ip),
            ),
        ];
        for (cfg, want) in cases {
            assert_eq!(cfg.validate(), Err(want), "{cfg:?}");
        }
        // Hold time 0 (no keepalives) is allowed, with any keepalive >= 1 s.
        PeerConfig {
            hold_time: Duration::ZERO,
            keepalive: Some(Duration::from_secs(30)),
            ..peer()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn password_never_printed() {
        let p = PeerConfig {
            password: Some("hunter2".into()),
            ..peer()
        };
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn communities_parse() {
        assert_eq!(parse_community("65535:0"), Ok(GRACEFUL_SHUTDOWN));
        assert_eq!(parse_community("1:2"), Ok(0x0001_0002));
        assert!(parse_community("65536:0").is_err());
        assert!(parse_community("12").is_err());
        assert_eq!(
            parse_large_community("4200000001:1:2"),
            Ok((4_200_000_001, 1, 2))
        );
        assert!(parse_large_community("1:2").is_err());
        assert!(parse_large_community("1:2:3:4").is_err());
    }

    #[test]
    fn advertisements_validate_and_aggregate() {
        let nh: IpAddr = "192.0.2.2".parse().unwrap();
        let vip: IpAddr = "10.90.0.100".parse().unwrap();
        let host = Advertisement::host(vip, nh);
        assert_eq!(host.prefix.to_string(), "10.90.0.100/32");
        host.validate().unwrap();
        let agg = Advertisement::aggregated(vip, 24, nh).unwrap();
        assert_eq!(agg.prefix.to_string(), "10.90.0.0/24");
        assert!(Advertisement::aggregated(vip, 33, nh).is_err());
        let v6_nh = Advertisement::host(vip, "2001:db8::2".parse().unwrap());
        assert!(matches!(
            v6_nh.validate(),
            Err(BgpConfigError::BadNextHop { .. })
        ));
        let host_bits = Advertisement {
            prefix: "10.90.0.1/24".parse().unwrap(),
            ..host
        };
        assert!(matches!(
            host_bits.validate(),
            Err(BgpConfigError::HostBitsSet(_))
        ));
    }

    #[test]
    fn rib_merges_in_any_order() {
        let nh: IpAddr = "192.0.2.2".parse().unwrap();
        let a = Advertisement {
            communities: vec![3, 1],
            local_pref: Some(50),
            ..Advertisement::aggregated("10.90.0.1".parse().unwrap(), 24, nh).unwrap()
        };
        let b = Advertisement {
            communities: vec![2, 1],
            large_communities: vec![(1, 2, 3)],
            local_pref: Some(200),
            ..Advertisement::aggregated("10.90.0.2".parse().unwrap(), 24, nh).unwrap()
        };
        let r1 = Rib::build(&[a.clone(), b.clone()]).unwrap();
        let r2 = Rib::build(&[b, a.clone()]).unwrap();
        assert_eq!(r1, r2);
        assert_eq!(r1.len(), 1);
        let attrs = r1.routes().values().next().unwrap();
        assert_eq!(attrs.communities, vec![1, 2, 3]);
        assert_eq!(attrs.local_pref, Some(200));
        let c = Advertisement {
            next_hop: "192.0.2.3".parse().unwrap(),
            ..a
        };
        assert!(matches!(
            Rib::build(&[c.clone(), r1_ad()]),
            Err(BgpConfigError::ConflictingNextHop { .. })
        ));
        fn r1_ad() -> Advertisement {
            Advertisement::aggregated(
                "10.90.0.9".parse().unwrap(),
                24,
                "192.0.2.2".parse().unwrap(),
            )
            .unwrap()
        }
    }
}
