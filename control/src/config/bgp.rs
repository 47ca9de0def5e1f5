//! `[bgp]`, `[[bgp.peers]]` and `[[bgp.advertisements]]`: BGP peers and what is announced to
//! them, with MetalLB's field names and meanings (`BGPPeer`, `BGPAdvertisement`) in TOML's
//! snake_case, so a MetalLB user finds the same knobs.
//!
//! Rules checked (the field paths are `bgp.peers[0].hold_time` and so on):
//! - peer names are unique and non-empty; `my_asn` and `peer_asn` are 1–4294967295;
//!   `peer_address` is an IP address; `source_address`, when set, is an address of the same
//!   family; `peer_port` is 1–65535 (default 179);
//! - `hold_time` is `"0s"` or at least `"3s"` (default `"90s"`); `keepalive_time` (default a
//!   third of the hold time) is less than the hold time, or `"0s"` with a hold time of 0;
//! - `router_id` is an IPv4 address; it defaults to `node.ipv4` and is required without one;
//! - `nodes`, when set, lists the node names that peer (MetalLB's `nodeSelectors`, by name):
//!   peers that exclude this node are validated and then left out;
//! - an advertisement's `pools` name configured pools (empty: all); `peers` (MetalLB's
//!   per-peer advertisements) is refused for now: every advertisement goes to every peer;
//!   `communities` are `"A:B"` (0–65535 each), `"large:A:B:C"` (u32 each) or one of the
//!   well-known names `no-export`, `no-advertise`, `no-export-subconfed`, `no-peer`;
//!   `aggregation_length` is 0–32 (default 32) and `aggregation_length_v6` 0–128 (default
//!   128); `local_pref` is sent to iBGP peers only (as in MetalLB);
//! - `graceful_shutdown_wait` (default `"5s"`) is how long a planned shutdown announces with
//!   the GRACEFUL_SHUTDOWN community (RFC 8326) before it withdraws.
//!
//! As in MetalLB, peers without any advertisement announce nothing.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::Deserialize;

use super::bad;
use crate::bgp::{PeerConfig, parse_community, parse_large_community};

/// `[bgp]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpSection {
    /// The peers. Default: none (no BGP).
    #[serde(default)]
    pub peers: Vec<PeerSection>,
    /// What is announced, to which peers. Default: none.
    #[serde(default)]
    pub advertisements: Vec<AdvertisementSection>,
    /// How long a planned shutdown announces with GRACEFUL_SHUTDOWN before withdrawing.
    /// Default `"5s"`.
    #[serde(default)]
    pub graceful_shutdown_wait: Option<String>,
}

/// `[[bgp.peers]]` (MetalLB `BGPPeer`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// Unique name (advertisements refer to it). Required.
    pub name: String,
    /// This node's AS number. Required.
    pub my_asn: u32,
    /// The peer's AS number (equal to `my_asn` for iBGP). Required.
    pub peer_asn: u32,
    /// The peer's address. Required.
    pub peer_address: String,
    /// The peer's TCP port. Default 179.
    #[serde(default)]
    pub peer_port: Option<u16>,
    /// The local address to connect from. Default: chosen by the kernel.
    #[serde(default)]
    pub source_address: Option<String>,
    /// BGP hold time. Default `"90s"`.
    #[serde(default)]
    pub hold_time: Option<String>,
    /// Keepalive interval. Default: a third of the hold time.
    #[serde(default)]
    pub keepalive_time: Option<String>,
    /// BGP identifier. Default: `node.ipv4`.
    #[serde(default)]
    pub router_id: Option<String>,
    /// TCP MD5 signature password (RFC 2385). Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// Wait for the peer to connect instead of connecting. Default false.
    #[serde(default)]
    pub passive: bool,
    /// The nodes that peer, by `node.name`. Default: every node.
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
}

/// `[[bgp.advertisements]]` (MetalLB `BGPAdvertisement`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertisementSection {
    /// Pools whose VIPs it covers. Default: all (and VIPs outside every pool).
    #[serde(default)]
    pub pools: Vec<String>,
    /// Peers it goes to. Default: all.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Communities attached.
    #[serde(default)]
    pub communities: Vec<String>,
    /// LOCAL_PREF (iBGP only). Default: none.
    #[serde(default)]
    pub local_pref: Option<u32>,
    /// IPv4 prefix length announced. Default 32.
    #[serde(default)]
    pub aggregation_length: Option<u8>,
    /// IPv6 prefix length announced. Default 128.
    #[serde(default)]
    pub aggregation_length_v6: Option<u8>,
}

/// The validated BGP settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpConfig {
    /// The peers this node uses.
    pub peers: Vec<PeerDef>,
    /// The advertisements.
    pub advertisements: Vec<AdvertisementDef>,
    /// RFC 8326 wait before withdrawing on a planned shutdown.
    pub graceful_shutdown_wait: Duration,
}

/// A validated peer: its name and the speaker's settings for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDef {
    /// Its name.
    pub name: String,
    /// What the speaker runs (keepalive is `None` with a hold time of 0).
    pub config: PeerConfig,
}

/// A validated advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisementDef {
    /// Pool names (empty: all VIPs).
    pub pools: Vec<String>,
    /// RFC 1997 communities.
    pub communities: Vec<u32>,
    /// RFC 8092 large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// LOCAL_PREF for iBGP peers.
    pub local_pref: Option<u32>,
    /// IPv4 prefix length.
    pub aggregation_length: u8,
    /// IPv6 prefix length.
    pub aggregation_length_v6: u8,
}

/// Parses `"90s"`, `"1m30s"`, `"500ms"`, `"0s"`.
pub(super) fn duration(s: &str) -> Result<Duration, String> {
    let err = || format!("{s:?} is not a duration like \"90s\", \"1m30s\" or \"500ms\"");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let n: u64 = rest
            .get(..digits)
            .ok_or_else(err)?
            .parse()
            .map_err(|_| err())?;
        rest = rest.get(digits..).ok_or_else(err)?;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest.get(..unit_len).ok_or_else(err)?;
        rest = rest.get(unit_len..).ok_or_else(err)?;
        total += match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(err()),
        };
    }
    Ok(total)
}

/// One parsed community string.
#[derive(Debug, PartialEq, Eq)]
enum Community {
    /// RFC 1997.
    Standard(u32),
    /// RFC 8092.
    Large((u32, u32, u32)),
}

/// One community string.
fn community(s: &str) -> Result<Community, String> {
    let well_known = match s {
        "no-export" => Some(0xFFFF_FF01),
        "no-advertise" => Some(0xFFFF_FF02),
        "no-export-subconfed" => Some(0xFFFF_FF03),
        "no-peer" => Some(0xFFFF_FF04),
        _ => None,
    };
    if let Some(c) = well_known {
        return Ok(Community::Standard(c));
    }
    if let Some(l) = s.strip_prefix("large:") {
        return parse_large_community(l).map(Community::Large).map_err(|_| {
            format!("{s:?} is not a large community \"large:A:B:C\" (each 0-4294967295)")
        });
    }
    parse_community(s).map(Community::Standard).map_err(|_| {
        format!(
            "{s:?} is not a community \"A:B\" (each 0-65535), \"large:A:B:C\" or a well-known name"
        )
    })
}

/// Validates `[bgp]` for node `node` (its name and IPv4 address).
pub(super) fn validate(
    b: &BgpSection,
    node: &str,
    node_ipv4: Option<Ipv4Addr>,
    pools: &BTreeSet<String>,
) -> Result<BgpConfig, (String, String)> {
    let mut names = BTreeSet::new();
    let mut peers = Vec::new();
    for (i, p) in b.peers.iter().enumerate() {
        let f = format!("bgp.peers[{i}]");
        if p.name.trim().is_empty() {
            return Err(bad(format!("{f}.name"), "must not be empty"));
        }
        if !names.insert(p.name.clone()) {
            return Err(bad(
                format!("{f}.name"),
                format!("peer {:?} is defined twice", p.name),
            ));
        }
        if p.my_asn == 0 {
            return Err(bad(format!("{f}.my_asn"), "must be 1-4294967295"));
        }
        if p.peer_asn == 0 {
            return Err(bad(format!("{f}.peer_asn"), "must be 1-4294967295"));
        }
        let peer_address: IpAddr = p.peer_address.parse().map_err(|_| {
            bad(
                format!("{f}.peer_address"),
                format!("{:?} is not an IP address", p.peer_address),
            )
        })?;
        let source_address = match &p.source_address {
            None => None,
            Some(s) => {
                let a: IpAddr = s.parse().map_err(|_| {
                    bad(
                        format!("{f}.source_address"),
                        format!("{s:?} is not an IP address"),
                    )
                })?;
                if a.is_ipv4() != peer_address.is_ipv4() {
                    return Err(bad(
                        format!("{f}.source_address"),
                        "must be of the peer address's family",
                    ));
                }
                Some(a)
            }
        };
        let peer_port = p.peer_port.unwrap_or(179);
        if peer_port == 0 {
            return Err(bad(format!("{f}.peer_port"), "must be 1-65535"));
        }
        let hold_time = match &p.hold_time {
            None => Duration::from_secs(90),
            Some(s) => duration(s).map_err(|r| bad(format!("{f}.hold_time"), r))?,
        };
        if hold_time != Duration::ZERO && hold_time < Duration::from_secs(3) {
            return Err(bad(
                format!("{f}.hold_time"),
                "must be 0s or at least 3s (RFC 4271)",
            ));
        }
        if hold_time > Duration::from_secs(65_535) {
            return Err(bad(format!("{f}.hold_time"), "must be at most 65535s"));
        }
        let keepalive_time = match &p.keepalive_time {
            None => hold_time / 3,
            Some(s) => duration(s).map_err(|r| bad(format!("{f}.keepalive_time"), r))?,
        };
        if hold_time == Duration::ZERO && keepalive_time != Duration::ZERO {
            return Err(bad(
                format!("{f}.keepalive_time"),
                "must be 0s when hold_time is 0s",
            ));
        }
        if hold_time != Duration::ZERO
            && (keepalive_time >= hold_time || keepalive_time < Duration::from_secs(1))
        {
            return Err(bad(
                format!("{f}.keepalive_time"),
                format!("must be at least 1s and less than hold_time ({hold_time:?})"),
            ));
        }
        let router_id = match (&p.router_id, node_ipv4) {
            (Some(r), _) => r.parse().map_err(|_| {
                bad(
                    format!("{f}.router_id"),
                    format!("{r:?} is not an IPv4 address"),
                )
            })?,
            (None, Some(v4)) => v4,
            (None, None) => {
                return Err(bad(
                    format!("{f}.router_id"),
                    "required when node.ipv4 is not set",
                ));
            }
        };
        if p.password.as_deref() == Some("") {
            return Err(bad(format!("{f}.password"), "must not be empty"));
        }
        if let Some(nodes) = &p.nodes {
            if nodes.is_empty() {
                return Err(bad(
                    format!("{f}.nodes"),
                    "must list at least one node (leave it out for every node)",
                ));
            }
            if !nodes.iter().any(|n| n == node) {
                continue;
            }
        }
        let mut config = PeerConfig::new(p.my_asn, p.peer_asn, peer_address, router_id);
        config.source_address = source_address;
        config.peer_port = peer_port;
        config.hold_time = hold_time;
        config.keepalive = (hold_time > Duration::ZERO).then_some(keepalive_time);
        config.passive = p.passive;
        config.password.clone_from(&p.password);
        peers.push(PeerDef {
            name: p.name.clone(),
            config,
        });
    }
    let mut advertisements = Vec::new();
    for (i, a) in b.advertisements.iter().enumerate() {
        let f = format!("bgp.advertisements[{i}]");
        for (j, p) in a.pools.iter().enumerate() {
            if !pools.contains(p) {
                return Err(bad(
                    format!("{f}.pools[{j}]"),
                    format!("no pool named {p:?}"),
                ));
            }
        }
        for (j, p) in a.peers.iter().enumerate() {
            if !names.contains(p) {
                return Err(bad(
                    format!("{f}.peers[{j}]"),
                    format!("no peer named {p:?}"),
                ));
            }
        }
        if !a.peers.is_empty() {
            return Err(bad(
                format!("{f}.peers"),
                "advertising to a subset of the peers is not supported yet; leave `peers` out \
                 to advertise to every peer",
            ));
        }
        let mut communities = Vec::new();
        let mut large_communities = Vec::new();
        for (j, c) in a.communities.iter().enumerate() {
            match community(c).map_err(|r| bad(format!("{f}.communities[{j}]"), r))? {
                Community::Standard(c) => communities.push(c),
                Community::Large(c) => large_communities.push(c),
            }
        }
        let aggregation_length = a.aggregation_length.unwrap_or(32);
        if aggregation_length > 32 {
            return Err(bad(format!("{f}.aggregation_length"), "must be 0-32"));
        }
        let aggregation_length_v6 = a.aggregation_length_v6.unwrap_or(128);
        if aggregation_length_v6 > 128 {
            return Err(bad(format!("{f}.aggregation_length_v6"), "must be 0-128"));
        }
        advertisements.push(AdvertisementDef {
            pools: a.pools.clone(),
            communities,
            large_communities,
            local_pref: a.local_pref,
            aggregation_length,
            aggregation_length_v6,
        });
    }
    let graceful_shutdown_wait = match &b.graceful_shutdown_wait {
        None => Duration::from_secs(5),
        Some(s) => duration(s).map_err(|r| bad("bgp.graceful_shutdown_wait", r))?,
    };
    Ok(BgpConfig {
        peers,
        advertisements,
        graceful_shutdown_wait,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_communities_parse() {
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "90", "s", "9x", "-1s", "1.5s"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert_eq!(community("65535:0"), Ok(Community::Standard(0xFFFF_0000)));
        assert_eq!(community("no-export"), Ok(Community::Standard(0xFFFF_FF01)));
        assert_eq!(community("large:1:2:3"), Ok(Community::Large((1, 2, 3))));
        for bad in ["65536:1", "1", "large:1:2", "a:b", "large:1:2:x"] {
            assert!(community(bad).is_err(), "{bad}");
        }
    }

    fn peer(name: &str) -> PeerSection {
        PeerSection {
            name: name.into(),
            my_asn: 64512,
            peer_asn: 64500,
            peer_address: "192.0.2.1".into(),
            peer_port: None,
            source_address: None,
            hold_time: None,
            keepalive_time: None,
            router_id: None,
            password: None,
            passive: false,
            nodes: None,
        }
    }

    #[test]
    fn defaults_node_filter_and_errors() {
        let pools: BTreeSet<String> = ["demo".to_owned()].into();
        let v4 = Some(Ipv4Addr::new(10, 90, 0, 3));
        let mut other = peer("r2");
        other.nodes = Some(vec!["lb2".into()]);
        let b = BgpSection {
            peers: vec![peer("r1"), other],
            advertisements: vec![AdvertisementSection {
                pools: vec!["demo".into()],
                peers: vec![],
                communities: vec!["65535:0".into(), "large:64512:1:2".into()],
                local_pref: Some(150),
                aggregation_length: None,
                aggregation_length_v6: None,
            }],
            graceful_shutdown_wait: None,
        };
        let c = validate(&b, "lb1", v4, &pools).expect("valid");
        assert_eq!(c.peers.len(), 1, "r2 is for lb2 only");
        let p = &c.peers[0].config;
        assert_eq!(
            (p.peer_port, p.hold_time, p.keepalive, p.router_id),
            (
                179,
                Duration::from_secs(90),
                Some(Duration::from_secs(30)),
                Ipv4Addr::new(10, 90, 0, 3)
            )
        );
        let a = &c.advertisements[0];
        assert_eq!(a.communities, vec![0xFFFF_0000]);
        assert_eq!(a.large_communities, vec![(64512, 1, 2)]);
        assert_eq!((a.aggregation_length, a.aggregation_length_v6), (32, 128));
        assert_eq!(c.graceful_shutdown_wait, Duration::from_secs(5));

        let check = |edit: &dyn Fn(&mut BgpSection), field: &str, reason: &str| {
            let mut b = b.clone();
            edit(&mut b);
            let (f, r) = validate(&b, "lb1", v4, &pools).expect_err(field);
            assert_eq!(f, field, "{r}");
            assert!(r.contains(reason), "{field}: {r}");
        };
        check(
            &|b| b.peers[0].hold_time = Some("2s".into()),
            "bgp.peers[0].hold_time",
            "at least 3s",
        );
        check(
            &|b| b.peers[0].keepalive_time = Some("90s".into()),
            "bgp.peers[0].keepalive_time",
            "less than hold_time",
        );
        check(
            &|b| b.peers[0].my_asn = 0,
            "bgp.peers[0].my_asn",
            "1-4294967295",
        );
        check(
            &|b| b.peers[0].peer_address = "router".into(),
            "bgp.peers[0].peer_address",
            "not an IP",
        );
        check(
            &|b| b.peers[0].source_address = Some("fd00::1".into()),
            "bgp.peers[0].source_address",
            "family",
        );
        check(
            &|b| b.peers[1].name = "r1".into(),
            "bgp.peers[1].name",
            "twice",
        );
        check(
            &|b| b.advertisements[0].pools = vec!["nope".into()],
            "bgp.advertisements[0].pools[0]",
            "no pool",
        );
        check(
            &|b| b.advertisements[0].peers = vec!["nope".into()],
            "bgp.advertisements[0].peers[0]",
            "no peer",
        );
        check(
            &|b| b.advertisements[0].peers = vec!["r1".into()],
            "bgp.advertisements[0].peers",
            "not supported yet",
        );
        check(
            &|b| b.advertisements[0].communities = vec!["1:2:3".into()],
            "bgp.advertisements[0].communities[0]",
            "0-65535",
        );
        check(
            &|b| b.advertisements[0].aggregation_length = Some(33),
            "bgp.advertisements[0].aggregation_length",
            "0-32",
        );
        let (f, r) = validate(&b, "lb1", None, &pools).expect_err("no router id");
        assert_eq!(f, "bgp.peers[0].router_id", "{r}");
    }
}
