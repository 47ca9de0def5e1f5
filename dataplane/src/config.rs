//! The `sluice-dataplane` config file (TOML): EAL, ports, workers, the node's own addresses,
//! conntrack sizing, and where to find the tables control publishes. Services are not here:
//! they come only from the shared table region.
//!
//! Every field is documented with its default and unit; unknown fields are refused; the whole
//! file is validated before anything starts ([`DataplaneConfig::validate`]), and every error
//! names the field and the reason.
//!
//! ```toml
//! tables = "sluice"              # shared region name (control creates it)
//! flow_hash_seed = 0x5eed        # identical on every LB node
//!
//! [eal]
//! memory = "hugepages"           # or "no-huge"
//! memory_mb = 512
//!
//! [[ports]]
//! device = "net_af_packet0,iface=lb0"   # a DPDK vdev, or `pci = "0000:3b:00.0"`
//!
//! [workers]
//! cores = [1]                    # one worker per core
//!
//! [node]
//! ipv4 = "10.90.0.3"             # NAT source address; ARP is answered for it
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::Deserialize;

/// A config error: the field and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or does not match the schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (it names the line and the field).
        message: String,
    },
    /// A field has an invalid value.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's path, e.g. `workers.cores`.
        field: String,
        /// Why it was refused.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// Name of the shared table region control publishes into. Default `sluice`.
    #[serde(default = "default_tables")]
    pub tables: String,
    /// Seconds to wait at start for control to create the region. Default 30.
    #[serde(default = "default_tables_wait")]
    pub tables_wait_s: u64,
    /// Flow-hash seed. Must be identical on every LB node, so that all pick the same backend
    /// for a flow. Default `0x5eed_5eed_5eed_5eed`.
    #[serde(default = "default_seed")]
    pub flow_hash_seed: u64,
    /// DPDK EAL settings.
    #[serde(default)]
    pub eal: EalSection,
    /// The NIC ports (at least one). Traffic leaves by the port it came in on (one-armed).
    pub ports: Vec<PortSection>,
    /// The exception port towards the host kernel (`net_tap`): traffic that is not for a
    /// service (BGP, SSH, …). Optional; without it such traffic is dropped and counted.
    #[serde(default)]
    pub exception: Option<ExceptionSection>,
    /// Forwarding workers.
    #[serde(default)]
    pub workers: WorkersSection,
    /// The node's own addresses.
    #[serde(default)]
    pub node: NodeSection,
    /// Connection tracking.
    #[serde(default)]
    pub conntrack: ConntrackSection,
}

fn default_tables() -> String {
    "sluice".into()
}
fn default_tables_wait() -> u64 {
    30
}
fn default_seed() -> u64 {
    0x5eed_5eed_5eed_5eed
}

/// `[eal]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EalSection {
    /// `hugepages` (default) or `no-huge` (ordinary pages, about half the speed).
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Megabytes of memory for the EAL. Default 512.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// The EAL's main lcore (it does no forwarding). Default 0.
    #[serde(default)]
    pub main_lcore: u32,
    /// PCI devices the EAL may take. Empty (default): none (`--no-pci`).
    #[serde(default)]
    pub pci_allow: Vec<String>,
    /// DPDK log level. Default `*:notice`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Mbufs in the packet pool. Default 16383.
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
}

impl Default for EalSection {
    fn default() -> Self {
        Self {
            memory: default_memory(),
            memory_mb: default_memory_mb(),
            main_lcore: 0,
            pci_allow: Vec::new(),
            log_level: default_log_level(),
            mbufs: default_mbufs(),
        }
    }
}

fn default_memory() -> String {
    "hugepages".into()
}
fn default_memory_mb() -> u32 {
    512
}
fn default_log_level() -> String {
    "*:notice".into()
}
fn default_mbufs() -> u32 {
    16383
}

/// `[[ports]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    /// A DPDK virtual device with its arguments, e.g. `net_af_packet0,iface=lb0`.
    #[serde(default)]
    pub device: Option<String>,
    /// Or a PCI address (which must also be in `eal.pci_allow`).
    #[serde(default)]
    pub pci: Option<String>,
    /// RX/TX descriptors per queue. Default 1024.
    #[serde(default = "default_desc")]
    pub descriptors: u16,
}

fn default_desc() -> u16 {
    1024
}

/// `[exception]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionSection {
    /// The tap device, e.g. `net_tap0,iface=sl-host`.
    pub device: String,
}

/// `[workers]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSection {
    /// One worker per listed CPU core, pinned to it. Default `[1]`.
    #[serde(default = "default_cores")]
    pub cores: Vec<usize>,
    /// Longest sleep of an idle worker, in microseconds (it spins, then yields, then sleeps
    /// up to this). Default 1000. 0 = never sleep (a dedicated core).
    #[serde(default = "default_idle_sleep")]
    pub idle_sleep_max_us: u32,
}

impl Default for WorkersSection {
    fn default() -> Self {
        Self {
            cores: default_cores(),
            idle_sleep_max_us: default_idle_sleep(),
        }
    }
}

fn default_cores() -> Vec<usize> {
    vec![1]
}
fn default_idle_sleep() -> u32 {
    1000
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The node's IPv4 address on the service network: NAT source, answered for ARP, and
    /// source of IPv4 encapsulation. Needed by NAT and encap services over IPv4.
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    /// The node's IPv6 address (as `ipv4`, for IPv6).
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    /// First NAT source port. Default 1024.
    #[serde(default = "default_port_lo")]
    pub nat_port_min: u16,
    /// Last NAT source port. Default 65535.
    #[serde(default = "default_port_hi")]
    pub nat_port_max: u16,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            ipv4: None,
            ipv6: None,
            nat_port_min: default_port_lo(),
            nat_port_max: default_port_hi(),
        }
    }
}

fn default_port_lo() -> u16 {
    1024
}
fn default_port_hi() -> u16 {
    65535
}

/// `[conntrack]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackSection {
    /// Entries per worker. Default 1 000 000. A full table falls back to stateless Maglev.
    /// Each entry costs about 138 bytes, 138 MB per million: 32-byte slots at a load of
    /// 0.61 (52 MB per million, taken from 2 MiB hugepages when the pool has them free),
    /// the NAT pair slab (42 MB) and the slab of IPv6 keys (44 MB).
    #[serde(default = "default_ct_capacity")]
    pub capacity_per_worker: usize,
    /// TCP established idle timeout, seconds. Default 900.
    #[serde(default = "default_tcp_est")]
    pub tcp_established_s: u64,
    /// TCP idle timeout before the handshake completes, seconds. Default 30.
    #[serde(default = "default_tcp_syn")]
    pub tcp_syn_s: u64,
    /// TCP idle timeout after FIN or RST, seconds. Default 10.
    #[serde(default = "default_tcp_closing")]
    pub tcp_closing_s: u64,
    /// UDP idle timeout, seconds. Default 60.
    #[serde(default = "default_udp")]
    pub udp_s: u64,
    /// Idle timeout for other protocols, seconds. Default 30.
    #[serde(default = "default_other")]
    pub other_s: u64,
}

impl Default for ConntrackSection {
    fn default() -> Self {
        Self {
            capacity_per_worker: default_ct_capacity(),
            tcp_established_s: default_tcp_est(),
            tcp_syn_s: default_tcp_syn(),
            tcp_closing_s: default_tcp_closing(),
            udp_s: default_udp(),
            other_s: default_other(),
        }
    }
}

fn default_ct_capacity() -> usize {
    1_000_000
}
fn default_tcp_est() -> u64 {
    900
}
fn default_tcp_syn() -> u64 {
    30
}
fn default_tcp_closing() -> u64 {
    10
}
fn default_udp() -> u64 {
    60
}
fn default_other() -> u64 {
    30
}

impl DataplaneConfig {
    /// Reads, parses and validates a file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the field and the reason.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field and the reason.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: DataplaneConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<config>".into(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every cross-field rule.
    ///
    /// # Errors
    /// The first invalid field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tables.is_empty() {
            return Err(invalid("tables", "must name the shared region"));
        }
        if !matches!(self.eal.memory.as_str(), "hugepages" | "no-huge") {
            return Err(invalid(
                "eal.memory",
                format!("{:?}: use \"hugepages\" or \"no-huge\"", self.eal.memory),
            ));
        }
        if self.eal.memory_mb < 64 {
            return Err(invalid("eal.memory_mb", "at least 64"));
        }
        if self.ports.is_empty() {
            return Err(invalid("ports", "at least one [[ports]] entry is needed"));
        }
        for (i, p) in self.ports.iter().enumerate() {
            match (&p.device, &p.pci) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(
                        format!("ports[{i}]"),
                        "give exactly one of `device` or `pci`",
                    ));
                }
                (None, Some(pci)) if !self.eal.pci_allow.contains(pci) => {
                    return Err(invalid(
                        format!("ports[{i}].pci"),
                        format!("{pci} is not in eal.pci_allow"),
                    ));
                }
                _ => {}
            }
            if p.descriptors < 64 || !p.descriptors.is_power_of_two() {
                return Err(invalid(
                    format!("ports[{i}].descriptors"),
                    "a power of two ≥ 64",
                ));
            }
        }
        if self.workers.cores.is_empty() {
            return Err(invalid("workers.cores", "at least one core"));
        }
        let mut seen = self.workers.cores.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != self.workers.cores.len() {
            return Err(invalid("workers.cores", "a core is listed twice"));
        }
        if self.node.nat_port_min == 0 || self.node.nat_port_min > self.node.nat_port_max {
            return Err(invalid(
                "node.nat_port_min",
                "must be ≥ 1 and ≤ node.nat_port_max",
            ));
        }
        let ports = usize::from(self.node.nat_port_max - self.node.nat_port_min) + 1;
        if ports < self.workers.cores.len() {
            return Err(invalid("node.nat_port_max", "fewer NAT ports than workers"));
        }
        if self.conntrack.capacity_per_worker == 0 {
            return Err(invalid("conntrack.capacity_per_worker", "must be > 0"));
        }
        for (f, v) in [
            (
                "conntrack.tcp_established_s",
                self.conntrack.tcp_established_s,
            ),
            ("conntrack.tcp_syn_s", self.conntrack.tcp_syn_s),
            ("conntrack.tcp_closing_s", self.conntrack.tcp_closing_s),
            ("conntrack.udp_s", self.conntrack.udp_s),
            ("conntrack.other_s", self.conntrack.other_s),
        ] {
            if v == 0 {
                return Err(invalid(f, "must be > 0 seconds"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[ports]]
        device = "net_af_packet0,iface=lb0"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = DataplaneConfig::parse(MINIMAL).expect("valid");
        assert_eq!(c.tables, "sluice");
        assert_eq!(c.workers.cores, vec![1]);
        assert_eq!(c.eal.memory, "hugepages");
        assert_eq!(c.conntrack.capacity_per_worker, 1_000_000);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let err = DataplaneConfig::parse(&format!("{MINIMAL}\nbogus = 1\n")).expect_err("bogus");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        for (extra, field) in [
            ("[workers]\ncores = []", "workers.cores"),
            ("[workers]\ncores = [1, 1]", "workers.cores"),
            ("[eal]\nmemory = \"lots\"", "eal.memory"),
            ("[conntrack]\nudp_s = 0", "conntrack.udp_s"),
            ("[node]\nnat_port_min = 0", "node.nat_port_min"),
        ] {
            let err = DataplaneConfig::parse(&format!("{MINIMAL}\n{extra}\n")).expect_err(extra);
            assert!(err.to_string().starts_with(field), "{extra}: {err}");
        }
        let err = DataplaneConfig::parse("ports = []").expect_err("no ports");
        assert!(err.to_string().starts_with("ports"), "{err}");
        let pci = "[[ports]]\npci = \"0000:3b:00.0\"";
        let err = DataplaneConfig::parse(pci).expect_err("pci not allowed");
        assert!(err.to_string().contains("pci_allow"), "{err}");
    }
}
