//! The static `sluice-control` config file (TOML) and its complete validation.
//!
//! Contract: [`Config::load`] / [`Config::parse`] either return a [`Desired`] state in which
//! every rule below holds, or the **first** violation as a [`ConfigError`] naming the file, the
//! field (`services[1].backends[2].mac`; indices are 0-based, in file order) and the reason.
//! Nothing is touched before validation has passed, so a bad file never changes what runs.
//! Syntax and schema errors (bad TOML, unknown field, wrong type) come from the TOML parser and
//! name the line and column instead of a field path.
//!
//! Rules checked (beyond the schema):
//! - `node.name` non-empty; `node.ipv4` / `node.ipv6` parse as addresses of that family;
//! - `tables.*` form a valid region [`Capacity`];
//! - `metrics.listen` is an `ip:port` socket address with a non-zero port;
//! - `[bgp]`: see [`bgp`](self::bgp) for its rules (MetalLB's peers and advertisements);
//! - `api.socket` is absolute (or `""` for none); `api.listen`, when set, is an `ip:port` and
//!   comes with `api.tls_cert` and `api.tls_key` (TCP only with TLS); TLS files without a
//!   listener, and neither a socket nor a listener, are refused;
//! - pool names are unique and non-empty; every pool address is a CIDR (`10.0.0.0/24`, host
//!   bits zero) or a range (`10.0.0.10-10.0.0.20`, one family, first ≤ last);
//! - service names are unique and non-empty, keys `(vip, port, protocol)` are unique, `port`
//!   is 1–65535, `protocol`/`mode`/`session_affinity` are known, `table_size` is one of
//!   [`MAGLEV_SIZES`];
//! - when any pool is configured, every VIP lies in some pool;
//! - a service has at least one backend and at most [`MAX_BACKENDS`]; no more active backends
//!   than `table_size` entries;
//! - backend names are unique within their service; `address` parses; in `nat` and `dsr` modes
//!   its family matches the VIP's; `port` other than the service port is allowed in `nat`
//!   mode only (the other modes do not rewrite ports); `mac` is a unicast, non-zero
//!   `aa:bb:cc:dd:ee:ff`; `weight` ≥ 1; `state` is `active` or `draining`;
//! - `health` (optional, one per service): `kind` is `tcp` or `http`; `port`, when given, is
//!   1–65535; `path`, `host` and `expect` are for `http` only; `path` starts with `/` and
//!   `host` is non-empty, both without whitespace or control characters; `expect` is a status
//!   code `200` or an inclusive range `200-399` within 100–599, first ≤ last; `interval_ms` is
//!   50–3600000; `timeout_ms` is at least 10 and below `interval_ms`; `rise` and `fall` are
//!   1–100;
//! - the services fit the region: at most `max_services`, and twice the sum of their arena
//!   blocks fits `arena_mb` (an update needs the new block while the old one waits for acks).
//!
//! **Weight and draining.** `weight = 0` is refused: it would silently mean "draining" without
//! saying so. To stop new flows to a backend, set `state = "draining"`: it stays in the
//! backend list (so established flows keep it through conntrack) and is given Maglev weight 0,
//! so it owns no table entries; its configured weight is kept for when it returns to `active`.
//! A service whose backends all drain accepts no new flows.
//!
//! **Health checks** ([`HealthCheck`], run by [`crate::health`]) do not change what is
//! published: a service's tables depend on its key, mode, affinity, size and backends only,
//! so a reload that changes only `[services.health]` rewrites no table.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bgp::{
    AdvertisementDef, AdvertisementSection, BgpConfig, BgpSection, PeerDef, PeerSection,
};
use serde::Deserialize;
use sluice_dataplane::maglev::{MAGLEV_SIZES, MAX_BACKENDS, TableSize};
use sluice_dataplane::tables::layout::Geometry;
use sluice_dataplane::tables::{Affinity, BackendState, Capacity, Mode, Proto, ServiceKey};

mod bgp;
mod kubernetes;

pub use kubernetes::{BackendSource, KubeConfig, KubernetesSection, NextHopSection};

/// Why a config was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not this schema (unknown field, wrong type, missing required field).
    #[error("{file}: {location}: {reason}")]
    Syntax {
        /// The file.
        file: String,
        /// `line L, column C` when the parser knows it, else `(document)`.
        location: String,
        /// The parser's message.
        reason: String,
    },
    /// A field has a value the rules refuse.
    #[error("{file}: {field}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// The field's path, e.g. `services[1].backends[2].mac`.
        field: String,
        /// Why it was refused.
        reason: String,
    },
}

impl ConfigError {
    /// The field path (for [`ConfigError::Invalid`]) or the location (for
    /// [`ConfigError::Syntax`]); empty for [`ConfigError::Read`].
    #[must_use]
    pub fn field(&self) -> &str {
        match self {
            Self::Read { .. } => "",
            Self::Syntax { location, .. } => location,
            Self::Invalid { field, .. } => field,
        }
    }
}

// === The file schema ===

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's identity. Required.
    pub node: NodeSection,
    /// The shared table region. Default: all of [`TablesSection`]'s defaults.
    #[serde(default)]
    pub tables: TablesSection,
    /// Address pools VIPs must come from. Default: none (then any VIP is accepted).
    #[serde(default)]
    pub pools: Vec<PoolSection>,
    /// The services. Default: none.
    #[serde(default)]
    pub services: Vec<ServiceSection>,
    /// The Prometheus endpoint. Default: all of [`MetricsSection`]'s defaults.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// The gRPC API. Default: all of [`ApiSection`]'s defaults.
    #[serde(default)]
    pub api: ApiSection,
    /// BGP peers and advertisements. Default: none.
    #[serde(default)]
    pub bgp: BgpSection,
    /// Services from a Kubernetes cluster. Default: none (only the file's services).
    #[serde(default)]
    pub kubernetes: Option<KubernetesSection>,
}

/// `[api]`: where the gRPC API (`sluicectl`) is served. Read at start-up only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// The Unix socket (created mode 0600). Default `"/run/sluice/control.sock"`; `""` serves
    /// no socket.
    #[serde(default = "default_api_socket")]
    pub socket: String,
    /// A TCP listen address, `ip:port`, served with TLS only. Default: none.
    #[serde(default)]
    pub listen: Option<String>,
    /// The server certificate chain (PEM file). Required with `listen`.
    #[serde(default)]
    pub tls_cert: Option<String>,
    /// The server's private key (PEM file). Required with `listen`.
    #[serde(default)]
    pub tls_key: Option<String>,
    /// A CA (PEM file): when set, TCP clients must present a certificate it signed.
    #[serde(default)]
    pub tls_client_ca: Option<String>,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            socket: default_api_socket(),
            listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

fn default_api_socket() -> String {
    "/run/sluice/control.sock".into()
}

/// The validated `[api]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// The Unix socket, if any.
    pub socket: Option<PathBuf>,
    /// The TCP address, if any (then `tls` is set).
    pub listen: Option<SocketAddr>,
    /// TLS files for the TCP listener.
    pub tls: Option<TlsFiles>,
}

/// The TCP listener's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA for client certificates (PEM), when clients must present one.
    pub client_ca: Option<PathBuf>,
}

/// `[metrics]`: the Prometheus scrape endpoint (`GET /metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Listen address, `ip:port` (IPv6 as `[::1]:9109`). Default `"127.0.0.1:9109"`.
    /// Read at start-up only: a reload that changes it is refused.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9109".into()
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The node's stable name (e.g. its hostname). Required, non-empty.
    pub name: String,
    /// The node's own IPv4 address (the dataplane's NAT source; later the BGP router id).
    /// Optional; no default.
    #[serde(default)]
    pub ipv4: Option<String>,
    /// The node's own IPv6 address. Optional; no default.
    #[serde(default)]
    pub ipv6: Option<String>,
}

/// `[tables]`: the shared region control creates (an existing region keeps its own size).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablesSection {
    /// Region name; must match the dataplane's `tables`. Default `"sluice"`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Services the region can hold. Default 1024.
    #[serde(default = "default_max_services")]
    pub max_services: u32,
    /// Dataplane workers that can attach at once. Default 64.
    #[serde(default = "default_max_workers")]
    pub max_workers: u32,
    /// Directory slots (generations in flight + 1), at least 2. Default 4.
    #[serde(default = "default_dir_slots")]
    pub dir_slots: u32,
    /// Arena for backend lists and Maglev tables, in MiB. Default 64.
    #[serde(default = "default_arena_mb")]
    pub arena_mb: u32,
}

impl Default for TablesSection {
    fn default() -> Self {
        Self {
            region: default_region(),
            max_services: default_max_services(),
            max_workers: default_max_workers(),
            dir_slots: default_dir_slots(),
            arena_mb: default_arena_mb(),
        }
    }
}

fn default_region() -> String {
    "sluice".into()
}
fn default_max_services() -> u32 {
    1024
}
fn default_max_workers() -> u32 {
    64
}
fn default_dir_slots() -> u32 {
    4
}
fn default_arena_mb() -> u32 {
    64
}

/// `[[pools]]`: addresses VIPs may use (parsed and checked; allocation comes later).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Unique pool name. Required.
    pub name: String,
    /// CIDRs (`"10.90.0.96/27"`, host bits zero) and inclusive ranges
    /// (`"10.90.0.100-10.90.0.110"`), IPv4 or IPv6. Required, non-empty.
    pub addresses: Vec<String>,
}

/// `[[services]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Stable, unique name: the service's identity across reloads (its `ServiceId` derives from
    /// it). Required.
    pub name: String,
    /// The virtual IP, IPv4 or IPv6. Required.
    pub vip: String,
    /// The service port, 1–65535. Required.
    pub port: u16,
    /// `"tcp"` or `"udp"`. Default `"tcp"`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// `"nat"` (full NAT), `"dsr"` (L2 direct server return), `"ipip"` or `"gue"`
    /// (encapsulation). Default `"nat"`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Maglev table size `M` in entries: one of [`MAGLEV_SIZES`]. Default 65537. Changing it
    /// moves nearly every new flow.
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    /// `"none"` (each connection is placed on its own) or `"client_ip"` (every connection
    /// from one client address goes to the same backend, on every LB node; Kubernetes
    /// `sessionAffinity: ClientIP`). Default `"none"`.
    #[serde(default = "default_session_affinity")]
    pub session_affinity: String,
    /// The backends (at least one).
    pub backends: Vec<BackendSection>,
    /// `[services.health]`: an active check run against every backend. Default: none (no
    /// checks; every backend counts as healthy).
    #[serde(default)]
    pub health: Option<HealthSection>,
}

/// `[services.health]`: how to check each backend of the service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// `"tcp"` (a connect succeeds) or `"http"` (an HTTP/1.1 `GET` answers with a status in
    /// `expect`). Required.
    pub kind: String,
    /// Port to check, 1–65535. Default: the backend's `port` when it has one, else the
    /// service port.
    #[serde(default)]
    pub port: Option<u16>,
    /// `http` only: the request path, starting with `/`. Default `"/"`.
    #[serde(default)]
    pub path: Option<String>,
    /// `http` only: the `Host` header. Default: the backend's address and, unless it is 80,
    /// the checked port (`10.90.0.11:8080`, `[fd90::11]:8080`).
    #[serde(default)]
    pub host: Option<String>,
    /// `http` only: accepted status codes, one (`"200"`) or an inclusive range
    /// (`"200-399"`), within 100–599. Default `"200-399"`.
    #[serde(default)]
    pub expect: Option<String>,
    /// Time between checks of one backend, in milliseconds, 50–3600000. Default 1000.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Time one check may take (connect, and for `http` the request and status line), in
    /// milliseconds, at least 10 and below `interval_ms`. Default 500.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes that make a backend up, 1–100. Default 2.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that make a backend down, 1–100. Default 2.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_interval_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    500
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    2
}

fn default_protocol() -> String {
    "tcp".into()
}
fn default_mode() -> String {
    "nat".into()
}
fn default_session_affinity() -> String {
    "none".into()
}
fn default_table_size() -> u32 {
    TableSize::DEFAULT.get()
}

/// `[[services.backends]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// Stable name, unique in the service: the Maglev hash input (the same on every node) and
    /// the source of its `BackendId`. Required.
    pub name: String,
    /// The backend's address. Required.
    pub address: String,
    /// Destination port after NAT. Absent or 0: the service port (the dataplane keeps the
    /// client's destination port). Only `nat` mode may name another port.
    #[serde(default)]
    pub port: u16,
    /// The backend's MAC on the LB's L2 segment, `"aa:bb:cc:dd:ee:ff"`. Required (no
    /// neighbour resolution yet).
    pub mac: String,
    /// Relative Maglev weight, ≥ 1. Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// `"active"` (gets new flows) or `"draining"` (keeps established flows only; Maglev
    /// weight 0). Default `"active"`.
    #[serde(default = "default_state")]
    pub state: String,
}

fn default_weight() -> u32 {
    1
}
fn default_state() -> String {
    "active".into()
}

// === The validated result ===

/// A validated config: what control should publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The node's name.
    pub node: String,
    /// The region name.
    pub region: String,
    /// The region capacity (used when the region does not exist yet).
    pub capacity: Capacity,
    /// The pools, by name.
    pub pools: BTreeMap<String, Vec<AddressBlock>>,
    /// The services, by name (sorted, so that everything derived is input-order independent).
    pub services: BTreeMap<String, ServiceDef>,
    /// Where the metrics endpoint listens.
    pub metrics: SocketAddr,
    /// Where the API is served.
    pub api: ApiConfig,
    /// `node.ipv4` (BGP next hop and default router id).
    pub node_ipv4: Option<Ipv4Addr>,
    /// `node.ipv6` (BGP next hop for IPv6 VIPs).
    pub node_ipv6: Option<Ipv6Addr>,
    /// BGP peers and advertisements for this node.
    pub bgp: BgpConfig,
    /// Where Kubernetes services come from, if anywhere.
    pub kubernetes: Option<KubeConfig>,
}

/// A validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDef {
    /// What packets match.
    pub key: ServiceKey,
    /// Forwarding mode.
    pub mode: Mode,
    /// Session affinity: which connections share a backend.
    pub affinity: Affinity,
    /// Maglev table size.
    pub table_size: TableSize,
    /// Backends, sorted by name (unique).
    pub backends: Vec<BackendDef>,
    /// The active health check, if configured. Not part of what is published: the publisher's
    /// diff ignores it.
    pub health: Option<HealthCheck>,
}

impl ServiceDef {
    /// The port [`HealthCheck`]s of `backend` connect to: the check's own `port`, else the
    /// backend's NAT port, else the service port.
    #[must_use]
    pub fn health_port(&self, check: &HealthCheck, backend: &BackendDef) -> u16 {
        match (check.port, backend.port) {
            (Some(p), _) => p,
            (None, 0) => self.key.port(),
            (None, p) => p,
        }
    }
}

/// A validated `[services.health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a check does.
    pub kind: HealthKind,
    /// The configured port; `None` means the backend's port (see [`ServiceDef::health_port`]).
    pub port: Option<u16>,
    /// Time between checks (50 ms – 1 h).
    pub interval: Duration,
    /// Limit for one check (≥ 10 ms, below `interval`).
    pub timeout: Duration,
    /// Consecutive successes that make a backend up (1–100).
    pub rise: u32,
    /// Consecutive failures that make a backend down (1–100).
    pub fall: u32,
}

/// The kind of a [`HealthCheck`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// A TCP connect that succeeds within the timeout.
    Tcp,
    /// An HTTP/1.1 `GET` whose status line arrives within the timeout with a code in `expect`.
    Http {
        /// Request path (starts with `/`; no whitespace or control characters).
        path: String,
        /// `Host` header; `None`: the backend's address (and port unless 80).
        host: Option<String>,
        /// Accepted status codes (within 100–599).
        expect: RangeInclusive<u16>,
    },
}

/// Limits of `[services.health]`.
const HEALTH_INTERVAL_MS: RangeInclusive<u64> = 50..=3_600_000;
const HEALTH_MIN_TIMEOUT_MS: u64 = 10;
const HEALTH_COUNT: RangeInclusive<u32> = 1..=100;

/// A validated backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendDef {
    /// Stable name (Maglev input).
    pub name: String,
    /// Address.
    pub addr: IpAddr,
    /// Port after NAT; 0 keeps the destination port.
    pub port: u16,
    /// Destination MAC.
    pub mac: [u8; 6],
    /// Configured weight (≥ 1).
    pub weight: u32,
    /// `Active` or `Draining`.
    pub state: BackendState,
}

impl BackendDef {
    /// The weight given to Maglev: 0 while draining, else the configured one.
    #[must_use]
    pub fn maglev_weight(&self) -> u32 {
        if self.state == BackendState::Active {
            self.weight
        } else {
            0
        }
    }
}

/// One pool entry: an inclusive address range (a CIDR is stored as its range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressBlock {
    /// First address.
    pub first: IpAddr,
    /// Last address (same family as `first`, not below it).
    pub last: IpAddr,
}

impl AddressBlock {
    /// Whether `ip` lies in the block.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.first, self.last, ip) {
            (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(x)) => a <= x && x <= b,
            (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(x)) => a <= x && x <= b,
            _ => false,
        }
    }
}

// === impl Config ===

impl Config {
    /// Reads and validates `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `path`, the field and the reason.
    pub fn load(path: &Path) -> Result<Desired, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates `text`; `file` names it in errors.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Syntax`] or [`ConfigError::Invalid`].
    pub fn parse(text: &str, file: &str) -> Result<Desired, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            location: e.span().map_or_else(
                || "(document)".to_owned(),
                |s| {
                    let (line, col) = line_col(text, s.start);
                    format!("line {line}, column {col}")
                },
            ),
            reason: e.message().to_owned(),
        })?;
        cfg.validate()
            .map_err(|(field, reason)| ConfigError::Invalid {
                file: file.to_owned(),
                field,
                reason,
            })
    }

    /// Checks every rule (module docs) and derives the [`Desired`] state; the first violation
    /// is returned as `(field, reason)`.
    ///
    /// # Errors
    ///
    /// The first violation.
    pub fn validate(&self) -> Result<Desired, (String, String)> {
        let node = &self.node;
        if node.name.trim().is_empty() {
            return Err(bad("node.name", "must not be empty"));
        }
        let node_ipv4 = match &node.ipv4 {
            Some(a) => Some(
                a.parse::<Ipv4Addr>()
                    .map_err(|_| bad("node.ipv4", format!("{a:?} is not an IPv4 address")))?,
            ),
            None => None,
        };
        let node_ipv6 = match &node.ipv6 {
            Some(a) => Some(
                a.parse::<Ipv6Addr>()
                    .map_err(|_| bad("node.ipv6", format!("{a:?} is not an IPv6 address")))?,
            ),
            None => None,
        };

        let t = &self.tables;
        if t.region.is_empty() || t.region.contains('/') {
            return Err(bad("tables.region", "must be a non-empty name without '/'"));
        }
        let capacity = Capacity {
            max_services: t.max_services,
            max_workers: t.max_workers,
            dir_slots: t.dir_slots,
            arena_bytes: u64::from(t.arena_mb) << 20,
        };
        Geometry::new(capacity).map_err(|e| bad("tables", e.to_string()))?;

        let mut pools = BTreeMap::new();
        for (i, p) in self.pools.iter().enumerate() {
            let f = format!("pools[{i}]");
            if p.name.trim().is_empty() {
                return Err(bad(format!("{f}.name"), "must not be empty"));
            }
            if p.addresses.is_empty() {
                return Err(bad(
                    format!("{f}.addresses"),
                    "must list at least one CIDR or range",
                ));
            }
            let mut blocks = Vec::new();
            for (j, a) in p.addresses.iter().enumerate() {
                blocks.push(parse_block(a).map_err(|r| bad(format!("{f}.addresses[{j}]"), r))?);
            }
            if pools.insert(p.name.clone(), blocks).is_some() {
                return Err(bad(
                    format!("{f}.name"),
                    format!("pool {:?} is defined twice", p.name),
                ));
            }
        }

        let metrics: SocketAddr = self.metrics.listen.parse().map_err(|_| {
            bad(
                "metrics.listen",
                format!("{:?} is not an ip:port socket address", self.metrics.listen),
            )
        })?;
        if metrics.port() == 0 {
            return Err(bad("metrics.listen", "port must be 1-65535"));
        }
        let api = validate_api(&self.api)?;
        let pool_names = pools.keys().cloned().collect();
        let bgp = bgp::validate(&self.bgp, &node.name, node_ipv4, &pool_names)?;
        let kubernetes = self
            .kubernetes
            .as_ref()
            .map(kubernetes::validate)
            .transpose()?;

        let mut services = BTreeMap::new();
        let mut keys: BTreeMap<ServiceKey, usize> = BTreeMap::new();
        let mut arena: u64 = 0;
        for (i, s) in self.services.iter().enumerate() {
            let f = format!("services[{i}]");
            let def = validate_service(s, &f, &pools)?;
            if let Some(j) = keys.insert(def.key, i) {
                return Err(bad(
                    format!("{f}.vip"),
                    format!(
                        "{}:{}/{} is already used by services[{j}]",
                        s.vip, s.port, s.protocol
                    ),
                ));
            }
            arena = arena.saturating_add(block_bytes(&def));
            if services.insert(s.name.clone(), def).is_some() {
                return Err(bad(
                    format!("{f}.name"),
                    format!("service {:?} is defined twice", s.name),
                ));
            }
        }
        if services.len() > usize::try_from(t.max_services).unwrap_or(usize::MAX) {
            return Err(bad(
                "tables.max_services",
                format!(
                    "{} services configured, the region holds {}",
                    services.len(),
                    t.max_services
                ),
            ));
        }
        let need = arena.saturating_mul(2);
        if need > capacity.arena_bytes {
            return Err(bad(
                "tables.arena_mb",
                format!(
                    "services need {} MiB (twice their tables, so updates fit), have {}",
                    need.div_ceil(1 << 20),
                    t.arena_mb
                ),
            ));
        }
        Ok(Desired {
            node: node.name.clone(),
            region: t.region.clone(),
            capacity,
            pools,
            services,
            metrics,
            api,
            node_ipv4,
            node_ipv6,
            bgp,
            kubernetes,
        })
    }
}

fn validate_api(a: &ApiSection) -> Result<ApiConfig, (String, String)> {
    let socket = (!a.socket.is_empty()).then(|| PathBuf::from(&a.socket));
    if socket.as_ref().is_some_and(|p| p.is_relative()) {
        return Err(bad("api.socket", "must be an absolute path"));
    }
    let file = |field: &str, v: &Option<String>| -> Result<Option<PathBuf>, (String, String)> {
        match v.as_deref() {
            None => Ok(None),
            Some("") => Err(bad(format!("api.{field}"), "must not be empty")),
            Some(p) => Ok(Some(PathBuf::from(p))),
        }
    };
    let cert = file("tls_cert", &a.tls_cert)?;
    let key = file("tls_key", &a.tls_key)?;
    let client_ca = file("tls_client_ca", &a.tls_client_ca)?;
    let Some(listen) = &a.listen else {
        if cert.is_some() || key.is_some() || client_ca.is_some() {
            return Err(bad(
                "api.listen",
                "tls_cert / tls_key / tls_client_ca are set but there is no TCP listener",
            ));
        }
        if socket.is_none() {
            return Err(bad(
                "api.socket",
                "with no socket and no TCP listener the API would be unreachable",
            ));
        }
        return Ok(ApiConfig {
            socket,
            listen: None,
            tls: None,
        });
    };
    let addr: SocketAddr = listen.parse().map_err(|_| {
        bad(
            "api.listen",
            format!("{listen:?} is not an ip:port socket address"),
        )
    })?;
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err(bad(
            "api.listen",
            "TCP is served with TLS only: set tls_cert and tls_key (and tls_client_ca to require \
             client certificates)",
        ));
    };
    Ok(ApiConfig {
        socket,
        listen: Some(addr),
        tls: Some(TlsFiles {
            cert,
            key,
            client_ca,
        }),
    })
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> (String, String) {
    (field.into(), reason.into())
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |n| before.len() - n - 1)
        + 1;
    (line, col)
}

/// Arena bytes of one service version: 64 per backend, then `2·M`, rounded up to 64.
fn block_bytes(s: &ServiceDef) -> u64 {
    let n = u64::try_from(s.backends.len()).unwrap_or(u64::MAX);
    let raw = n
        .saturating_mul(64)
        .saturating_add(2 * u64::from(s.table_size.get()));
    raw.div_ceil(64).saturating_mul(64)
}

fn validate_service(
    s: &ServiceSection,
    f: &str,
    pools: &BTreeMap<String, Vec<AddressBlock>>,
) -> Result<ServiceDef, (String, String)> {
    if s.name.trim().is_empty() {
        return Err(bad(format!("{f}.name"), "must not be empty"));
    }
    let vip: IpAddr = s.vip.parse().map_err(|_| {
        bad(
            format!("{f}.vip"),
            format!("{:?} is not an IP address", s.vip),
        )
    })?;
    if vip.is_unspecified() || vip.is_multicast() || vip.is_loopback() {
        return Err(bad(format!("{f}.vip"), format!("{vip} cannot be a VIP")));
    }
    if !pools.is_empty() && !pools.values().flatten().any(|b| b.contains(vip)) {
        return Err(bad(
            format!("{f}.vip"),
            format!("{vip} is in no configured pool"),
        ));
    }
    if s.port == 0 {
        return Err(bad(format!("{f}.port"), "must be 1-65535"));
    }
    let proto = match s.protocol.as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => {
            return Err(bad(
                format!("{f}.protocol"),
                format!("{other:?}: expected \"tcp\" or \"udp\""),
            ));
        }
    };
    let mode = parse_mode(&s.mode).map_err(|r| bad(format!("{f}.mode"), r))?;
    let affinity = match s.session_affinity.as_str() {
        "none" => Affinity::None,
        "client_ip" => Affinity::ClientIp,
        other => {
            return Err(bad(
                format!("{f}.session_affinity"),
                format!("{other:?}: expected \"none\" or \"client_ip\""),
            ));
        }
    };
    let table_size = TableSize::try_new(s.table_size).map_err(|_| {
        bad(
            format!("{f}.table_size"),
            format!("{} is not one of {MAGLEV_SIZES:?}", s.table_size),
        )
    })?;
    if s.backends.is_empty() {
        return Err(bad(
            format!("{f}.backends"),
            "at least one backend is required",
        ));
    }
    if s.backends.len() > MAX_BACKENDS {
        return Err(bad(
            format!("{f}.backends"),
            format!(
                "{} backends exceed the limit of {MAX_BACKENDS}",
                s.backends.len()
            ),
        ));
    }
    let mut names = BTreeSet::new();
    let mut backends = Vec::with_capacity(s.backends.len());
    for (j, b) in s.backends.iter().enumerate() {
        let g = format!("{f}.backends[{j}]");
        if b.name.trim().is_empty() {
            return Err(bad(format!("{g}.name"), "must not be empty"));
        }
        if !names.insert(b.name.as_str()) {
            return Err(bad(
                format!("{g}.name"),
                format!("backend {:?} appears twice in this service", b.name),
            ));
        }
        let addr: IpAddr = b.address.parse().map_err(|_| {
            bad(
                format!("{g}.address"),
                format!("{:?} is not an IP address", b.address),
            )
        })?;
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(bad(
                format!("{g}.address"),
                format!("{addr} cannot be a backend"),
            ));
        }
        if matches!(mode, Mode::Nat | Mode::Dsr) && addr.is_ipv4() != vip.is_ipv4() {
            return Err(bad(
                format!("{g}.address"),
                format!(
                    "{addr} is not of the VIP's family ({vip}); {} mode cannot translate",
                    s.mode
                ),
            ));
        }
        if mode != Mode::Nat && b.port != 0 && b.port != s.port {
            return Err(bad(
                format!("{g}.port"),
                format!(
                    "{} mode does not rewrite ports; leave it out or set {}",
                    s.mode, s.port
                ),
            ));
        }
        let mac = parse_mac(&b.mac).map_err(|r| bad(format!("{g}.mac"), r))?;
        if b.weight == 0 {
            return Err(bad(
                format!("{g}.weight"),
                "must be at least 1; to stop new flows set state = \"draining\"",
            ));
        }
        let state = match b.state.as_str() {
            "active" => BackendState::Active,
            "draining" => BackendState::Draining,
            other => {
                return Err(bad(
                    format!("{g}.state"),
                    format!("{other:?}: expected \"active\" or \"draining\""),
                ));
            }
        };
        backends.push(BackendDef {
            name: b.name.clone(),
            addr,
            port: if b.port == s.port { 0 } else { b.port },
            mac,
            weight: b.weight,
            state,
        });
    }
    let active = backends
        .iter()
        .filter(|b| b.state == BackendState::Active)
        .count();
    if active > table_size.as_usize() {
        return Err(bad(
            format!("{f}.backends"),
            format!(
                "{active} active backends do not fit a table of {table_size} entries; raise table_size"
            ),
        ));
    }
    backends.sort_by(|a, b| a.name.cmp(&b.name));
    let health = s
        .health
        .as_ref()
        .map(|h| validate_health(h, &format!("{f}.health")))
        .transpose()?;
    Ok(ServiceDef {
        key: ServiceKey::new(vip, s.port, proto),
        mode,
        affinity,
        table_size,
        backends,
        health,
    })
}

fn validate_health(h: &HealthSection, f: &str) -> Result<HealthCheck, (String, String)> {
    let http = match h.kind.as_str() {
        "tcp" => false,
        "http" => true,
        other => {
            return Err(bad(
                format!("{f}.kind"),
                format!("{other:?}: expected \"tcp\" or \"http\""),
            ));
        }
    };
    if h.port == Some(0) {
        return Err(bad(format!("{f}.port"), "must be 1-65535"));
    }
    if !http {
        for (name, set) in [
            ("path", h.path.is_some()),
            ("host", h.host.is_some()),
            ("expect", h.expect.is_some()),
        ] {
            if set {
                return Err(bad(
                    format!("{f}.{name}"),
                    "applies to kind = \"http\" only",
                ));
            }
        }
    }
    let kind = if http {
        let path = h.path.clone().unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') {
            return Err(bad(
                format!("{f}.path"),
                format!("{path:?} must start with '/'"),
            ));
        }
        if !is_header_token(&path) {
            return Err(bad(
                format!("{f}.path"),
                format!("{path:?} must not contain whitespace or control characters"),
            ));
        }
        if let Some(host) = &h.host
            && (host.is_empty() || !is_header_token(host))
        {
            return Err(bad(
                format!("{f}.host"),
                format!("{host:?} must be non-empty, without whitespace or control characters"),
            ));
        }
        let expect = match &h.expect {
            None => 200..=399,
            Some(e) => parse_status_range(e).map_err(|r| bad(format!("{f}.expect"), r))?,
        };
        HealthKind::Http {
            path,
            host: h.host.clone(),
            expect,
        }
    } else {
        HealthKind::Tcp
    };
    if !HEALTH_INTERVAL_MS.contains(&h.interval_ms) {
        return Err(bad(
            format!("{f}.interval_ms"),
            format!(
                "{} is outside {}-{}",
                h.interval_ms,
                HEALTH_INTERVAL_MS.start(),
                HEALTH_INTERVAL_MS.end()
            ),
        ));
    }
    if h.timeout_ms < HEALTH_MIN_TIMEOUT_MS {
        return Err(bad(
            format!("{f}.timeout_ms"),
            format!("must be at least {HEALTH_MIN_TIMEOUT_MS}"),
        ));
    }
    if h.timeout_ms >= h.interval_ms {
        return Err(bad(
            format!("{f}.timeout_ms"),
            format!("must be less than interval_ms ({})", h.interval_ms),
        ));
    }
    for (name, n) in [("rise", h.rise), ("fall", h.fall)] {
        if !HEALTH_COUNT.contains(&n) {
            return Err(bad(
                format!("{f}.{name}"),
                format!(
                    "{n} is outside {}-{}",
                    HEALTH_COUNT.start(),
                    HEALTH_COUNT.end()
                ),
            ));
        }
    }
    Ok(HealthCheck {
        kind,
        port: h.port,
        interval: Duration::from_millis(h.interval_ms),
        timeout: Duration::from_millis(h.timeout_ms),
        rise: h.rise,
        fall: h.fall,
    })
}

/// Whether `s` can go into a request line or header as is: no whitespace, no control
/// characters (which would let a config value inject headers).
fn is_header_token(s: &str) -> bool {
    !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `"200"` or `"200-399"`: HTTP status codes within 100–599, first ≤ last.
fn parse_status_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let code = |c: &str| -> Result<u16, String> {
        let c = c.trim();
        match c.parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => Ok(n),
            _ => Err(format!(
                "{s:?}: {c:?} is not an HTTP status code (100-599); expected \"200\" or \"200-399\""
            )),
        }
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (code(a)?, code(b)?),
        None => {
            let n = code(s)?;
            (n, n)
        }
    };
    if lo > hi {
        return Err(format!("{s:?}: the first code is above the last"));
    }
    Ok(lo..=hi)
}

/// A forwarding mode's name: `nat`, `dsr`, `ipip` or `gue`.
pub(crate) fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "nat" => Ok(Mode::Nat),
        "dsr" => Ok(Mode::Dsr),
        "ipip" => Ok(Mode::EncapIpip),
        "gue" => Ok(Mode::EncapGue),
        other => Err(format!(
            "{other:?}: expected \"nat\", \"dsr\", \"ipip\" or \"gue\""
        )),
    }
}

/// `aa:bb:cc:dd:ee:ff` (hex, either case), unicast and not all zero.
fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts
            .next()
            .filter(|p| p.len() == 2)
            .ok_or_else(|| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
        *byte = u8::from_str_radix(p, 16)
            .map_err(|_| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    }
    if parts.next().is_some() {
        return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    }
    if mac[0] & 1 == 1 {
        return Err(format!("{s} is a multicast/broadcast address"));
    }
    if mac == [0; 6] {
        return Err("the all-zero MAC is not a host".into());
    }
    Ok(mac)
}

/// A pool entry: `addr/prefix` (host bits zero) or `first-last`.
fn parse_block(s: &str) -> Result<AddressBlock, String> {
    let s = s.trim();
    if let Some((a, p)) = s.split_once('/') {
        let ip: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("{p:?} is not a prefix length"))?;
        return match ip {
            IpAddr::V4(v4) => {
                let host = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                if prefix > 32 {
                    return Err(format!("prefix /{prefix} is longer than 32"));
                }
                let bits = u32::from(v4);
                if bits & host != 0 {
                    return Err(format!("{s} has host bits set"));
                }
                Ok(AddressBlock {
                    first: IpAddr::V4(Ipv4Addr::from(bits)),
                    last: IpAddr::V4(Ipv4Addr::from(bits | host)),
                })
            }
            IpAddr::V6(v6) => {
                if prefix > 128 {
                    return Err(format!("prefix /{prefix} is longer than 128"));
                }
                let host = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                let bits = u128::from(v6);
                if bits & host != 0 {
                    return Err(format!("{s} has host bits set"));
                }
                Ok(AddressBlock {
                    first: IpAddr::V6(Ipv6Addr::from(bits)),
                    last: IpAddr::V6(Ipv6Addr::from(bits | host)),
                })
            }
        };
    }
    if let Some((a, b)) = s.split_once('-') {
        let first: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let last: IpAddr = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} is not an IP address"))?;
        let ordered = match (first, last) {
            (IpAddr::V4(x), IpAddr::V4(y)) => x <= y,
            (IpAddr::V6(x), IpAddr::V6(y)) => x <= y,
            _ => return Err(format!("{s}: both ends must be of one family")),
        };
        if !ordered {
            return Err(format!("{s}: the first address is above the last"));
        }
        return Ok(AddressBlock { first, last });
    }
    Err(format!(
        "{s:?} is neither a CIDR (10.0.0.0/24) nor a range (10.0.0.1-10.0.0.9)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/sluice.toml");

    fn check(text: &str) -> Result<Desired, ConfigError> {
        Config::parse(text, "test.toml")
    }

    /// Applies `from → to` to the example and expects the first error at `field`.
    fn rejects(from: &str, to: &str, field: &str, reason: &str) {
        assert!(EXAMPLE.contains(from), "{from:?} not in the example");
        let text = EXAMPLE.replacen(from, to, 1);
        match check(&text) {
            Err(e @ ConfigError::Invalid { .. }) => {
                assert_eq!(e.field(), field, "{e}");
                let msg = e.to_string();
                assert!(msg.starts_with("test.toml: "), "{msg}");
                assert!(msg.contains(reason), "{msg:?} lacks {reason:?}");
            }
            other => panic!("{from:?} → {to:?}: expected an error at {field}, got {other:?}"),
        }
    }

    const SECOND: &str = r#"
[[services]]
name = "dns"
vip = "10.90.0.101"
port = 53
protocol = "udp"
mode = "dsr"
table_size = 251

[[services.backends]]
name = "d1"
address = "10.90.0.11"
mac = "02:90:00:00:00:0b"
"#;

    #[test]
    fn the_example_config_is_valid() {
        let d = check(EXAMPLE).expect("valid");
        assert_eq!(d.node, "lb1");
        assert_eq!(d.region, "sluice");
        assert_eq!(d.capacity.max_services, 64);
        assert_eq!(d.capacity.arena_bytes, 16 << 20);
        let web = &d.services["web"];
        assert_eq!(
            web.key,
            ServiceKey::new("10.90.0.100".parse().unwrap(), 8080, Proto::Tcp)
        );
        assert_eq!(web.mode, Mode::Nat);
        assert_eq!(web.table_size, TableSize::DEFAULT);
        let names: Vec<&str> = web.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["b1", "b2", "b3"]);
        assert_eq!(web.backends[2].mac, [2, 0x90, 0, 0, 0, 0x0d]);
        assert_eq!((web.backends[0].port, web.backends[0].weight), (0, 1));
        assert_eq!(web.backends[0].state, BackendState::Active);
    }

    #[test]
    fn defaults_apply() {
        let d = check(
            "[node]\nname = \"n\"\n[[services]]\nname = \"s\"\nvip = \"192.0.2.1\"\nport = 80\n\
             [[services.backends]]\nname = \"a\"\naddress = \"192.0.2.10\"\nmac = \"02:00:00:00:00:01\"\n",
        )
        .expect("valid");
        assert_eq!(d.region, "sluice");
        assert_eq!(
            d.capacity,
            Capacity {
                max_services: 1024,
                max_workers: 64,
                dir_slots: 4,
                arena_bytes: 64 << 20
            }
        );
        let s = &d.services["s"];
        assert_eq!((s.mode, s.table_size), (Mode::Nat, TableSize::DEFAULT));
        assert_eq!(
            s.key,
            ServiceKey::new("192.0.2.1".parse().unwrap(), 80, Proto::Tcp)
        );
    }

    #[test]
    fn backends_are_sorted_by_name_whatever_the_file_order() {
        let text = EXAMPLE.replacen("name = \"b1\"", "name = \"zz\"", 1);
        let d = check(&text).expect("valid");
        let names: Vec<&str> = d.services["web"]
            .backends
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        assert_eq!(names, ["b2", "b3", "zz"]);
    }

    #[test]
    fn syntax_and_schema_errors_name_file_and_line() {
        let e = check(&EXAMPLE.replacen("port = 8080", "port = 8080\ncolour = 1", 1)).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("test.toml: line 24, column 1: unknown field `colour`"),
            "{msg}"
        );
        let e = check("[node\nname = 1").unwrap_err();
        assert!(e.to_string().starts_with("test.toml: line 1"), "{e}");
        let e = check(&EXAMPLE.replacen("port = 8080", "port = 70000", 1)).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
        let e = Config::load(Path::new("/nonexistent/sluice.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/sluice.toml: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn api_defaults_to_the_socket_and_tcp_needs_tls() {
        let d = check(EXAMPLE).expect("valid");
        assert_eq!(
            d.api,
            ApiConfig {
                socket: Some("/run/sluice/control.sock".into()),
                listen: None,
                tls: None
            }
        );
        let with =
            |api: &str| EXAMPLE.replacen("[tables]", &format!("[api]\n{api}\n\n[tables]"), 1);
        let tls = with(
            "socket = \"\"\nlisten = \"127.0.0.1:9443\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"",
        );
        let d = check(&tls).expect("valid");
        assert_eq!(d.api.socket, None);
        assert_eq!(d.api.listen, Some("127.0.0.1:9443".parse().unwrap()));
        assert_eq!(d.api.tls.as_ref().map(|t| t.client_ca.clone()), Some(None));
        for (api, field, reason) in [
            ("listen = \"127.0.0.1:9443\"", "api.listen", "TLS only"),
            (
                "listen = \"127.0.0.1:9443\"\ntls_cert = \"/c.pem\"",
                "api.listen",
                "TLS only",
            ),
            ("tls_cert = \"/c.pem\"", "api.listen", "no TCP listener"),
            ("socket = \"\"", "api.socket", "unreachable"),
            ("socket = \"run/x.sock\"", "api.socket", "absolute"),
            (
                "listen = \"nope\"\ntls_cert = \"/c\"\ntls_key = \"/k\"",
                "api.listen",
                "not an ip:port",
            ),
            (
                "listen = \"[::1]:1\"\ntls_cert = \"\"\ntls_key = \"/k\"",
                "api.tls_cert",
                "empty",
            ),
        ] {
            let e = check(&with(api)).unwrap_err();
            assert_eq!(e.field(), field, "{api}: {e}");
            assert!(e.to_string().contains(reason), "{api}: {e}");
        }
    }

    #[test]
    fn metrics_listen_defaults_and_is_validated() {
        assert_eq!(
            check(EXAMPLE).expect("valid").metrics,
            "127.0.0.1:9109".parse::<SocketAddr>().unwrap()
        );
        let base = EXAMPLE.replacen(
            "[tables]",
            "[metrics]\nlisten = \"[::1]:9200\"\n\n[tables]",
            1,
        );
        assert_eq!(
            check(&base).expect("valid").metrics,
            "[::1]:9200".parse::<SocketAddr>().unwrap()
        );
        let f = "listen = \"[::1]:9200\"";
        rejects_in(
            &base,
            f,
            "listen = \"localhost:9109\"",
            "metrics.listen",
            "not an ip:port",
        );
        rejects_in(
            &base,
            f,
            "listen = \"127.0.0.1\"",
            "metrics.listen",
            "not an ip:port",
        );
        rejects_in(
            &base,
            f,
            "listen = \"127.0.0.1:0\"",
            "metrics.listen",
            "1-65535",
        );
        let e = check(&base.replacen(f, "port = 1", 1)).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    }

    #[test]
    fn node_and_tables_rules() {
        rejects("name = \"lb1\"", "name = \" \"", "node.name", "empty");
        rejects(
            "ipv4 = \"10.90.0.3\"",
            "ipv4 = \"fd90::3\"",
            "node.ipv4",
            "not an IPv4",
        );
        rejects(
            "ipv6 = \"fd90::3\"",
            "ipv6 = \"10.0.0.1\"",
            "node.ipv6",
            "not an IPv6",
        );
        rejects(
            "region = \"sluice\"",
            "region = \"a/b\"",
            "tables.region",
            "without '/'",
        );
        rejects("max_workers = 8", "max_workers = 0", "tables", "");
        rejects("arena_mb = 16", "arena_mb = 0", "tables", "");
        let two = format!("{EXAMPLE}{SECOND}").replacen("max_services = 64", "max_services = 1", 1);
        let e = check(&two).unwrap_err();
        assert_eq!(e.field(), "tables.max_services", "{e}");
        assert!(
            e.to_string()
                .contains("2 services configured, the region holds 1"),
            "{e}"
        );
    }

    #[test]
    fn arena_must_hold_every_table_twice() {
        let text = EXAMPLE.replacen("arena_mb = 16", "arena_mb = 1", 1)
            + &SECOND.replace("table_size = 251", "table_size = 655373");
        let e = check(&text).unwrap_err();
        assert_eq!(e.field(), "tables.arena_mb", "{e}");
        assert!(e.to_string().contains("need 3 MiB"), "{e}");
    }

    #[test]
    fn pool_rules() {
        rejects("name = \"demo\"", "name = \"\"", "pools[0].name", "empty");
        rejects(
            "addresses = [\"10.90.0.96/28\", \"fd90::100-fd90::1ff\"]",
            "addresses = []",
            "pools[0].addresses",
            "at least one",
        );
        rejects(
            "\"10.90.0.96/28\"",
            "\"10.90.0.97/28\"",
            "pools[0].addresses[0]",
            "host bits",
        );
        rejects(
            "\"10.90.0.96/28\"",
            "\"10.90.0.96/33\"",
            "pools[0].addresses[0]",
            "longer than 32",
        );
        rejects(
            "\"10.90.0.96/28\"",
            "\"10.90.0.x/28\"",
            "pools[0].addresses[0]",
            "not an IP",
        );
        rejects(
            "\"fd90::100-fd90::1ff\"",
            "\"fd90::1ff-fd90::100\"",
            "pools[0].addresses[1]",
            "above the last",
        );
        rejects(
            "\"fd90::100-fd90::1ff\"",
            "\"fd90::100-10.0.0.1\"",
            "pools[0].addresses[1]",
            "one family",
        );
        rejects(
            "\"fd90::100-fd90::1ff\"",
            "\"fd90::100\"",
            "pools[0].addresses[1]",
            "neither a CIDR",
        );
        let dup = EXAMPLE.replacen(
            "[[services]]",
            "[[pools]]\nname = \"demo\"\naddresses = [\"10.1.0.0/16\"]\n\n[[services]]",
            1,
        );
        let e = check(&dup).unwrap_err();
        assert_eq!(e.field(), "pools[1].name", "{e}");
        // The VIP must be in a pool when pools exist …
        rejects(
            "\"10.90.0.96/28\"",
            "\"10.90.0.96/30\"",
            "services[0].vip",
            "in no configured pool",
        );
        // … and may be anything when none do.
        let start = EXAMPLE.find("[[pools]]").unwrap();
        let end = EXAMPLE.find("[[services]]").unwrap();
        let mut no_pools = EXAMPLE.to_owned();
        no_pools.replace_range(start..end, "");
        check(&no_pools.replacen("10.90.0.100", "192.0.2.1", 1)).expect("no pools: any VIP");
    }

    #[test]
    fn service_rules() {
        rejects("name = \"web\"", "name = \"\"", "services[0].name", "empty");
        rejects(
            "vip = \"10.90.0.100\"",
            "vip = \"10.90.0.300\"",
            "services[0].vip",
            "not an IP",
        );
        rejects(
            "vip = \"10.90.0.100\"",
            "vip = \"0.0.0.0\"",
            "services[0].vip",
            "cannot be a VIP",
        );
        rejects("port = 8080", "port = 0", "services[0].port", "1-65535");
        rejects(
            "protocol = \"tcp\"",
            "protocol = \"sctp\"",
            "services[0].protocol",
            "\"tcp\" or \"udp\"",
        );
        rejects(
            "mode = \"nat\"",
            "mode = \"tunnel\"",
            "services[0].mode",
            "\"gue\"",
        );
        rejects(
            "table_size = 65537",
            "table_size = 65536",
            "services[0].table_size",
            "not one of",
        );
        rejects(
            "mode = \"nat\"",
            "mode = \"nat\"\nsession_affinity = \"ClientIP\"",
            "services[0].session_affinity",
            "\"none\" or \"client_ip\"",
        );
        // Default none; `client_ip` is taken.
        let d = check(EXAMPLE).expect("example");
        assert!(d.services.values().all(|s| s.affinity == Affinity::None));
        let sticky = EXAMPLE.replacen(
            "mode = \"nat\"",
            "mode = \"nat\"\nsession_affinity = \"client_ip\"",
            1,
        );
        let d = check(&sticky).expect("client_ip");
        assert_eq!(d.services["web"].affinity, Affinity::ClientIp);
        // More active backends than entries.
        let mut many = EXAMPLE.replacen("table_size = 65537", "table_size = 251", 1);
        for i in 0..251 {
            many += &format!(
                "[[services.backends]]\nname = \"x{i}\"\naddress = \"10.90.1.{}\"\nmac = \"02:00:00:00:01:{:02x}\"\n",
                i % 250 + 1,
                i % 256
            );
        }
        let e = check(&many).unwrap_err();
        assert_eq!(e.field(), "services[0].backends", "{e}");
        assert!(
            e.to_string()
                .contains("254 active backends do not fit a table of 251"),
            "{e}"
        );
        // No backends at all.
        let start = EXAMPLE.find("[[services.backends]]").unwrap();
        let e = check(&format!("{}backends = []\n", &EXAMPLE[..start])).unwrap_err();
        assert_eq!(e.field(), "services[0].backends", "{e}");
    }

    #[test]
    fn duplicate_service_names_and_keys_are_refused() {
        let two = format!("{EXAMPLE}{SECOND}");
        check(&two).expect("two distinct services");
        let same_name = two.replacen("name = \"dns\"", "name = \"web\"", 1);
        let e = check(&same_name).unwrap_err();
        assert_eq!(e.field(), "services[1].name", "{e}");
        let same_key = two
            .replacen("vip = \"10.90.0.101\"", "vip = \"10.90.0.100\"", 1)
            .replacen("port = 53", "port = 8080", 1)
            .replacen("protocol = \"udp\"", "protocol = \"tcp\"", 1);
        let e = check(&same_key).unwrap_err();
        assert_eq!(e.field(), "services[1].vip", "{e}");
        assert!(e.to_string().contains("already used by services[0]"), "{e}");
        // Same VIP and port over the other protocol is another service.
        check(
            &two.replacen("vip = \"10.90.0.101\"", "vip = \"10.90.0.100\"", 1)
                .replacen("port = 53", "port = 8080", 1),
        )
        .expect("tcp and udp on one port");
    }

    #[test]
    fn backend_rules() {
        rejects(
            "name = \"b2\"",
            "name = \"b1\"",
            "services[0].backends[1].name",
            "appears twice",
        );
        rejects(
            "name = \"b2\"",
            "name = \"\"",
            "services[0].backends[1].name",
            "empty",
        );
        rejects(
            "address = \"10.90.0.12\"",
            "address = \"10.90.0\"",
            "services[0].backends[1].address",
            "not an IP",
        );
        rejects(
            "address = \"10.90.0.12\"",
            "address = \"fd90::12\"",
            "services[0].backends[1].address",
            "family",
        );
        rejects(
            "mac = \"02:90:00:00:00:0c\"",
            "mac = \"02:90:00:00:00:0g\"",
            "services[0].backends[1].mac",
            "not a MAC",
        );
        rejects(
            "mac = \"02:90:00:00:00:0c\"",
            "mac = \"02:90:00:00:00:0c:00\"",
            "services[0].backends[1].mac",
            "not a MAC",
        );
        rejects(
            "mac = \"02:90:00:00:00:0c\"",
            "mac = \"ff:ff:ff:ff:ff:ff\"",
            "services[0].backends[1].mac",
            "multicast",
        );
        rejects(
            "mac = \"02:90:00:00:00:0c\"",
            "mac = \"00:00:00:00:00:00\"",
            "services[0].backends[1].mac",
            "all-zero",
        );
        rejects(
            "mac = \"02:90:00:00:00:0c\"",
            "mac = \"02:90:00:00:00:0c\"\nweight = 0",
            "services[0].backends[1].weight",
            "draining",
        );
        rejects(
            "mac = \"02:90:00:00:00:0c\"",
            "mac = \"02:90:00:00:00:0c\"\nstate = \"down\"",
            "services[0].backends[1].state",
            "\"draining\"",
        );
        // Missing MAC is a schema error.
        let e = check(&EXAMPLE.replacen("mac = \"02:90:00:00:00:0c\"", "", 1)).unwrap_err();
        assert!(e.to_string().contains("missing field `mac`"), "{e}");
    }

    #[test]
    fn ports_and_families_depend_on_the_mode() {
        let p = "mac = \"02:90:00:00:00:0c\"";
        // NAT may rewrite the port; the service port itself means "keep" (0).
        let d = check(&EXAMPLE.replacen(p, &format!("{p}\nport = 9090"), 1)).expect("nat port");
        assert_eq!(d.services["web"].backends[1].port, 9090);
        let d = check(&EXAMPLE.replacen(p, &format!("{p}\nport = 8080"), 1)).expect("same port");
        assert_eq!(d.services["web"].backends[1].port, 0);
        let dsr = EXAMPLE.replacen("mode = \"nat\"", "mode = \"dsr\"", 1);
        rejects_in(
            &dsr,
            p,
            &format!("{p}\nport = 9090"),
            "services[0].backends[1].port",
            "does not rewrite ports",
        );
        check(&dsr.replacen(p, &format!("{p}\nport = 8080"), 1)).expect("dsr, same port");
        rejects_in(
            &dsr,
            "address = \"10.90.0.12\"",
            "address = \"fd90::12\"",
            "services[0].backends[1].address",
            "family",
        );
        // Encapsulation may cross families.
        let gue = EXAMPLE.replacen("mode = \"nat\"", "mode = \"gue\"", 1);
        let d = check(&gue.replacen("address = \"10.90.0.12\"", "address = \"fd90::12\"", 1))
            .expect("gue v6 outer");
        assert_eq!(d.services["web"].mode, Mode::EncapGue);
        let ipip = EXAMPLE.replacen("mode = \"nat\"", "mode = \"ipip\"", 1);
        assert_eq!(
            check(&ipip).expect("ipip").services["web"].mode,
            Mode::EncapIpip
        );
    }

    fn rejects_in(base: &str, from: &str, to: &str, field: &str, reason: &str) {
        let e = check(&base.replacen(from, to, 1)).unwrap_err();
        assert_eq!(e.field(), field, "{e}");
        assert!(e.to_string().contains(reason), "{e}");
    }

    #[test]
    fn draining_keeps_the_backend_with_maglev_weight_zero() {
        let p = "mac = \"02:90:00:00:00:0d\"";
        let d = check(&EXAMPLE.replacen(p, &format!("{p}\nweight = 3\nstate = \"draining\""), 1))
            .expect("valid");
        let b3 = &d.services["web"].backends[2];
        assert_eq!(
            (b3.state, b3.weight, b3.maglev_weight()),
            (BackendState::Draining, 3, 0)
        );
        assert_eq!(d.services["web"].backends[0].maglev_weight(), 1);
    }

    /// The example's service with its `[services.health]` table replaced by `table`.
    fn with_health(table: &str) -> String {
        let start = EXAMPLE
            .find("[services.health]")
            .expect("example has a health table");
        let end = EXAMPLE[start..]
            .find("\n\n")
            .map_or(EXAMPLE.len(), |n| start + n);
        let mut text = EXAMPLE.to_owned();
        text.replace_range(start..end, table);
        text
    }

    fn health_rejects(table: &str, field: &str, reason: &str) {
        let e = check(&with_health(table)).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { .. }), "{table}: {e:?}");
        assert_eq!(e.field(), field, "{table}: {e}");
        assert!(e.to_string().contains(reason), "{table}: {e}");
    }

    #[test]
    fn the_example_health_check_parses() {
        let web = &check(EXAMPLE).expect("valid").services["web"];
        let h = web.health.as_ref().expect("health");
        assert_eq!(
            *h,
            HealthCheck {
                kind: HealthKind::Http {
                    path: "/".into(),
                    host: None,
                    expect: 200..=399
                },
                port: None,
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                rise: 2,
                fall: 2,
            }
        );
        // Without the table there is no check.
        let none = check(&with_health("")).expect("valid");
        assert_eq!(none.services["web"].health, None);
    }

    #[test]
    fn health_defaults_and_every_field() {
        let d = check(&with_health("[services.health]\nkind = \"tcp\"")).expect("valid");
        let web = &d.services["web"];
        let h = web.health.as_ref().expect("health");
        assert_eq!(
            (
                h.kind.clone(),
                h.port,
                h.interval,
                h.timeout,
                h.rise,
                h.fall
            ),
            (
                HealthKind::Tcp,
                None,
                Duration::from_millis(1000),
                Duration::from_millis(500),
                2,
                2
            )
        );
        let d = check(&with_health(
            "[services.health]\nkind = \"http\"\nport = 9000\npath = \"/healthz?full=1\"\n\
             host = \"web.example\"\nexpect = \"204\"\ninterval_ms = 50\ntimeout_ms = 10\n\
             rise = 1\nfall = 100",
        ))
        .expect("valid");
        let h = d.services["web"].health.clone().expect("health");
        assert_eq!(
            h,
            HealthCheck {
                kind: HealthKind::Http {
                    path: "/healthz?full=1".into(),
                    host: Some("web.example".into()),
                    expect: 204..=204
                },
                port: Some(9000),
                interval: Duration::from_millis(50),
                timeout: Duration::from_millis(10),
                rise: 1,
                fall: 100,
            }
        );
        let h = check(&with_health(
            "[services.health]\nkind = \"http\"\nexpect = \" 200 - 299 \"\ninterval_ms = 3600000\ntimeout_ms = 3599999",
        ))
        .expect("valid")
        .services["web"]
            .health
            .clone()
            .expect("health");
        assert!(matches!(h.kind, HealthKind::Http { ref expect, .. } if *expect == (200..=299)));
    }

    #[test]
    fn health_port_defaults_to_the_backend_then_the_service() {
        let p = "mac = \"02:90:00:00:00:0c\"";
        let d = check(&EXAMPLE.replacen(p, &format!("{p}\nport = 9090"), 1)).expect("valid");
        let web = &d.services["web"];
        let h = web.health.clone().expect("health");
        let ports: Vec<u16> = web
            .backends
            .iter()
            .map(|b| web.health_port(&h, b))
            .collect();
        assert_eq!(ports, [8080, 9090, 8080]);
        let fixed = HealthCheck { port: Some(7), ..h };
        assert!(web.backends.iter().all(|b| web.health_port(&fixed, b) == 7));
    }

    #[test]
    fn health_rules() {
        let f = "services[0].health";
        health_rejects(
            "[services.health]\nkind = \"icmp\"",
            &format!("{f}.kind"),
            "expected \"tcp\" or \"http\"",
        );
        health_rejects(
            "[services.health]\nkind = \"tcp\"\nport = 0",
            &format!("{f}.port"),
            "1-65535",
        );
        for field in ["path = \"/\"", "host = \"h\"", "expect = \"200\""] {
            let name = field.split(' ').next().unwrap();
            health_rejects(
                &format!("[services.health]\nkind = \"tcp\"\n{field}"),
                &format!("{f}.{name}"),
                "kind = \"http\" only",
            );
        }
        let http = "[services.health]\nkind = \"http\"\n";
        health_rejects(
            &format!("{http}path = \"healthz\""),
            &format!("{f}.path"),
            "must start with '/'",
        );
        health_rejects(
            &format!("{http}path = \"\""),
            &format!("{f}.path"),
            "must start with '/'",
        );
        health_rejects(
            &format!("{http}path = \"/a b\""),
            &format!("{f}.path"),
            "whitespace",
        );
        health_rejects(
            &format!("{http}path = \"/a\\r\\nX-Injected: 1\""),
            &format!("{f}.path"),
            "control characters",
        );
        health_rejects(
            &format!("{http}host = \"\""),
            &format!("{f}.host"),
            "non-empty",
        );
        health_rejects(
            &format!("{http}host = \"a\\nb\""),
            &format!("{f}.host"),
            "control characters",
        );
        for (expect, reason) in [
            ("\"\"", "not an HTTP status code"),
            ("\"2xx\"", "not an HTTP status code"),
            ("\"99\"", "not an HTTP status code"),
            ("\"600\"", "not an HTTP status code"),
            ("\"200-\"", "not an HTTP status code"),
            ("\"200-399-500\"", "not an HTTP status code"),
            ("\"399-200\"", "first code is above the last"),
        ] {
            health_rejects(
                &format!("{http}expect = {expect}"),
                &format!("{f}.expect"),
                reason,
            );
        }
        for (ms, reason) in [
            ("49", "outside 50-3600000"),
            ("3600001", "outside 50-3600000"),
        ] {
            health_rejects(
                &format!("{http}interval_ms = {ms}\ntimeout_ms = 10"),
                &format!("{f}.interval_ms"),
                reason,
            );
        }
        health_rejects(
            &format!("{http}timeout_ms = 9"),
            &format!("{f}.timeout_ms"),
            "at least 10",
        );
        health_rejects(
            &format!("{http}timeout_ms = 1000"),
            &format!("{f}.timeout_ms"),
            "must be less than interval_ms (1000)",
        );
        health_rejects(
            &format!("{http}interval_ms = 100"),
            &format!("{f}.timeout_ms"),
            "must be less than interval_ms (100)",
        );
        for (field, v) in [("rise", 0), ("rise", 101), ("fall", 0), ("fall", 101)] {
            health_rejects(
                &format!("{http}{field} = {v}"),
                &format!("{f}.{field}"),
                "outside 1-100",
            );
        }
        // The field path names the service by its index in the file.
        let two =
            format!("{EXAMPLE}{SECOND}[services.health]\nkind = \"tcp\"\ntimeout_ms = 1000\n");
        let e = check(&two).unwrap_err();
        assert_eq!(e.field(), "services[1].health.timeout_ms", "{e}");
        assert_eq!(
            e.to_string(),
            "test.toml: services[1].health.timeout_ms: must be less than interval_ms (1000)"
        );
    }

    #[test]
    fn health_schema_errors() {
        // `kind` is required once the table exists; unknown fields and wrong types are refused.
        for table in [
            "[services.health]\nport = 80",
            "[services.health]\nkind = \"tcp\"\nretries = 3",
            "[services.health]\nkind = \"tcp\"\nrise = \"2\"",
            "[services.health]\nkind = \"tcp\"\nport = 70000",
            "[services.health]\nkind = \"tcp\"\ninterval_ms = -1",
        ] {
            let e = check(&with_health(table)).unwrap_err();
            assert!(matches!(e, ConfigError::Syntax { .. }), "{table}: {e:?}");
        }
        let e = check(&with_health("[services.health]\nport = 80")).unwrap_err();
        assert!(e.to_string().contains("missing field `kind`"), "{e}");
    }

    #[test]
    fn the_first_error_wins() {
        let text = EXAMPLE.replacen("port = 8080", "port = 0", 1).replacen(
            "mac = \"02:90:00:00:00:0b\"",
            "mac = \"x\"",
            1,
        );
        assert_eq!(check(&text).unwrap_err().field(), "services[0].port");
    }
}
