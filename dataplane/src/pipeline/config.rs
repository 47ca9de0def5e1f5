//! [`PipelineConfig`]: what one worker's [`Pipeline`](super::Pipeline) needs to know about
//! its node, validated once at construction ([`PipelineConfig::validate`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use thiserror::Error;

use crate::conntrack::{ConntrackError, TickRate, Timeouts};
use crate::wire::{EthernetAddress, gue};

/// Why a [`PipelineConfig`] was refused. Each variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PipelineConfigError {
    /// `port_macs` is empty: the pipeline needs the MAC of at least one port.
    #[error("port_macs: at least one port MAC is needed")]
    NoPorts,
    /// `port_macs` has more entries than a `u16` port index can name.
    #[error("port_macs: at most 65536 ports")]
    TooManyPorts,
    /// A port MAC is multicast, broadcast or all-zero: frames could not be sent from it.
    #[error("port_macs[{port}]: {mac} is not a unicast address")]
    BadMac {
        /// The port index.
        port: usize,
        /// The address.
        mac: EthernetAddress,
    },
    /// A node or encap source address is unspecified, multicast, broadcast or loopback.
    #[error("{field}: {addr} cannot be a source address")]
    BadAddress {
        /// The field.
        field: &'static str,
        /// The address.
        addr: IpAddr,
    },
    /// `workers` is 0, or `worker` is not below it.
    #[error("worker {worker} is not in 0..{workers}")]
    Worker {
        /// `worker`.
        worker: u16,
        /// `workers`.
        workers: u16,
    },
    /// `nat_port_min` is 0 or above `nat_port_max`.
    #[error("nat_port_min {min} must be at least 1 and at most nat_port_max {max}")]
    NatPortRange {
        /// `nat_port_min`.
        min: u16,
        /// `nat_port_max`.
        max: u16,
    },
    /// The SNAT range has fewer ports than there are workers.
    #[error("nat ports {min}..={max} cannot be split over {workers} workers")]
    NatPortsPerWorker {
        /// `nat_port_min`.
        min: u16,
        /// `nat_port_max`.
        max: u16,
        /// `workers`.
        workers: u16,
    },
    /// `gue_port` is 0.
    #[error("gue_port must be non-zero")]
    GuePort,
    /// The conntrack capacity, timeouts or tick rate are invalid.
    #[error("conntrack: {0}")]
    Conntrack(#[from] ConntrackError),
}

/// One worker's pipeline settings. Build with [`PipelineConfig::one_armed`] and adjust the
/// public fields; [`Pipeline::new`](super::Pipeline::new) validates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// The node's MAC on each port, indexed by the port index given to
    /// [`Pipeline::process_from`](super::Pipeline::process_from). The source MAC of every
    /// frame sent out of that port, and the MAC ARP/NDP replies announce. One entry for a
    /// one-armed node.
    pub port_macs: Vec<EthernetAddress>,
    /// The node's IPv4 address: NAT source of IPv4 NAT services, answered for ARP, the
    /// default IPv4 encap source. `None`: IPv4 NAT drops (`nat_no_source_address`).
    pub node_ipv4: Option<Ipv4Addr>,
    /// The node's IPv6 address, as `node_ipv4` for IPv6 (NDP instead of ARP).
    pub node_ipv6: Option<Ipv6Addr>,
    /// Outer source address of IPv4 encapsulation. `None`: `node_ipv4`; with neither,
    /// `0.0.0.0`.
    pub encap_ipv4: Option<Ipv4Addr>,
    /// Outer source address of IPv6 encapsulation. `None`: `node_ipv6`; with neither, `::`.
    pub encap_ipv6: Option<Ipv6Addr>,
    /// Flow-hash seed for Maglev (`flow_hash(key, seed) % M`). Must be the same on every LB
    /// node, so all send a flow to the same backend. From configuration, never random.
    pub flow_hash_seed: u64,
    /// First SNAT source port (inclusive). Default 1024. Keep the range clear of the
    /// host's own ephemeral ports (`net.ipv4.ip_local_port_range`): a reply to a port in the
    /// range that matches no NAT flow goes to the exception path, but only after a lookup.
    pub nat_port_min: u16,
    /// Last SNAT source port (inclusive). Default 65535.
    pub nat_port_max: u16,
    /// This worker's index, `0..workers`.
    pub worker: u16,
    /// Number of workers. The SNAT range is split into `workers` equal contiguous blocks
    /// (the remainder goes to the last), so a reply's destination port names the worker that
    /// owns its flow (see [`Pipeline::nat_port_owner`](super::Pipeline::nat_port_owner)).
    pub workers: u16,
    /// GUE destination port. Default 6080 (IANA).
    pub gue_port: u16,
    /// Conntrack entries for this worker (a NAT flow takes two). Default 65 536.
    pub conntrack_capacity: usize,
    /// Conntrack idle timeouts.
    pub timeouts: Timeouts,
    /// Ticks per second of the `now` given to the pipeline. Default nanoseconds.
    pub tick_rate: TickRate,
    /// Seeds of the conntrack table's process-local hash. `None` (default): random, for
    /// hash-flooding resistance. Tests pass fixed seeds for reproducible runs.
    pub conntrack_seeds: Option<[u64; 4]>,
}

impl PipelineConfig {
    /// A one-armed node with one port of MAC `mac`, no node addresses, and defaults
    /// elsewhere (worker 0 of 1, SNAT ports 1024–65535, GUE port 6080, 65 536 conntrack
    /// entries, default timeouts, nanosecond ticks).
    #[must_use]
    pub fn one_armed(mac: EthernetAddress, flow_hash_seed: u64) -> Self {
        Self {
            port_macs: vec![mac],
            node_ipv4: None,
            node_ipv6: None,
            encap_ipv4: None,
            encap_ipv6: None,
            flow_hash_seed,
            nat_port_min: 1024,
            nat_port_max: u16::MAX,
            worker: 0,
            workers: 1,
            gue_port: gue::PORT,
            conntrack_capacity: 1 << 16,
            timeouts: Timeouts::default(),
            tick_rate: TickRate::NANOS,
            conntrack_seeds: None,
        }
    }

    /// Checks every field and the cross-field rules.
    ///
    /// # Errors
    ///
    /// The first [`PipelineConfigError`] found.
    pub fn validate(&self) -> Result<(), PipelineConfigError> {
        if self.port_macs.is_empty() {
            return Err(PipelineConfigError::NoPorts);
        }
        if self.port_macs.len() > usize::from(u16::MAX) + 1 {
            return Err(PipelineConfigError::TooManyPorts);
        }
        for (port, mac) in self.port_macs.iter().enumerate() {
            if !mac.is_unicast() || mac.0 == [0; 6] {
                return Err(PipelineConfigError::BadMac { port, mac: *mac });
            }
        }
        let addrs = [
            ("node_ipv4", self.node_ipv4.map(IpAddr::V4)),
            ("node_ipv6", self.node_ipv6.map(IpAddr::V6)),
            ("encap_ipv4", self.encap_ipv4.map(IpAddr::V4)),
            ("encap_ipv6", self.encap_ipv6.map(IpAddr::V6)),
        ];
        for (field, addr) in addrs {
            if let Some(addr) = addr
                && !usable_source(addr)
            {
                return Err(PipelineConfigError::BadAddress { field, addr });
            }
        }
        if self.workers == 0 || self.worker >= self.workers {
            return Err(PipelineConfigError::Worker {
                worker: self.worker,
                workers: self.workers,
            });
        }
        let (min, max) = (self.nat_port_min, self.nat_port_max);
        if min == 0 || min > max {
            return Err(PipelineConfigError::NatPortRange { min, max });
        }
        if u32::from(max - min) + 1 < u32::from(self.workers) {
            return Err(PipelineConfigError::NatPortsPerWorker {
                min,
                max,
                workers: self.workers,
            });
        }
        if self.gue_port == 0 {
            return Err(PipelineConfigError::GuePort);
        }
        if self.conntrack_capacity == 0 {
            return Err(ConntrackError::ZeroCapacity.into());
        }
        self.timeouts.validate(self.tick_rate)?;
        Ok(())
    }
}

fn usable_source(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            !(v.is_unspecified() || v.is_multicast() || v.is_broadcast() || v.is_loopback())
        }
        IpAddr::V6(v) => !(v.is_unspecified() || v.is_multicast() || v.is_loopback()),
    }
}

/// The SNAT port range split over workers: which ports this worker hands out, and which
/// worker owns any port of the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NatPorts {
    min: u16,
    max: u16,
    /// Ports per worker block (the last block also takes the remainder).
    per: u32,
    workers: u16,
    worker: u16,
    /// This worker's block, inclusive.
    lo: u16,
    hi: u16,
    /// The next port to try.
    next: u16,
}

impl NatPorts {
    /// The split of a validated config.
    pub(super) fn new(c: &PipelineConfig) -> Self {
        let total = u32::from(c.nat_port_max - c.nat_port_min) + 1;
        let per = (total / u32::from(c.workers)).max(1);
        let lo32 = u32::from(c.nat_port_min) + per * u32::from(c.worker);
        let hi32 = if c.worker + 1 == c.workers {
            u32::from(c.nat_port_max)
        } else {
            lo32 + per - 1
        };
        let lo = u16::try_from(lo32).unwrap_or(c.nat_port_max);
        let hi = u16::try_from(hi32).unwrap_or(c.nat_port_max);
        Self {
            min: c.nat_port_min,
            max: c.nat_port_max,
            per,
            workers: c.workers,
            worker: c.worker,
            lo,
            hi,
            next: lo,
        }
    }

    /// This worker's ports.
    pub(super) fn own(&self) -> RangeInclusive<u16> {
        self.lo..=self.hi
    }

    /// This worker's index.
    #[inline]
    pub(super) fn worker(&self) -> u16 {
        self.worker
    }

    /// The worker owning `port`, or `None` outside the SNAT range.
    #[inline]
    pub(super) fn owner(&self, port: u16) -> Option<u16> {
        if port < self.min || port > self.max {
            return None;
        }
        let block = u32::from(port - self.min) / self.per;
        let last = u32::from(self.workers - 1);
        u16::try_from(block.min(last)).ok()
    }

    /// The next port of this worker's block, round robin.
    #[inline]
    pub(super) fn next(&mut self) -> u16 {
        let p = self.next;
        self.next = if p >= self.hi { self.lo } else { p + 1 };
        p
    }
}
