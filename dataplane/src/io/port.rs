//! Ethernet ports and their queues.

use std::ffi::{CStr, CString, c_char};
use std::fmt;
use std::sync::Arc;

use sluice_ffi as ffi;

use super::eal::Eal;
use super::error::{DpdkError, ToResult};
use super::mbuf::MbufBurst;
use super::mempool::{Mempool, SOCKET_ID_ANY};

/// A DPDK port id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

impl fmt::Debug for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A queue index on a port.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u16);

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{}", self.0)
    }
}

/// How to set a port up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// RX queues (one per worker). Default 1.
    pub rx_queues: u16,
    /// TX queues (one per worker). Default 1.
    pub tx_queues: u16,
    /// RX descriptors per queue. Default 1024 (clamped to what the PMD allows).
    pub rx_desc: u16,
    /// TX descriptors per queue. Default 1024 (clamped to what the PMD allows).
    pub tx_desc: u16,
    /// Spread flows over RX queues by RSS when the PMD offers it. Default true.
    pub rss: bool,
    /// Receive frames for any MAC. Default true.
    pub promiscuous: bool,
    /// MTU to set, if any.
    pub mtu: Option<u16>,
}

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            rss: true,
            promiscuous: true,
            mtu: None,
        }
    }
}

/// Why a port could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The PMD cannot provide that many queues.
    #[error("{port}: {what} queues requested: {requested}, the driver allows at most {max}")]
    TooManyQueues {
        /// The port.
        port: PortId,
        /// "rx" or "tx".
        what: &'static str,
        /// Requested.
        requested: u16,
        /// The driver's maximum.
        max: u16,
    },
    /// Zero queues were requested.
    #[error("{port}: at least one rx and one tx queue is needed")]
    NoQueues {
        /// The port.
        port: PortId,
    },
    /// The mempool cannot fill every RX descriptor and still have mbufs left to work with.
    #[error(
        "{port}: mempool {pool} holds {capacity} mbufs but {rx_queues} rx queues × {rx_desc} descriptors need more (at least {needed})"
    )]
    PoolTooSmall {
        /// The port.
        port: PortId,
        /// The pool's name.
        pool: String,
        /// Mbufs in the pool.
        capacity: u32,
        /// RX queues requested.
        rx_queues: u16,
        /// RX descriptors per queue (after the driver's adjustment).
        rx_desc: u16,
        /// The minimum pool size for this port.
        needed: u32,
    },
    /// A DPDK call failed.
    #[error("{port}: {source}")]
    Dpdk {
        /// The port.
        port: PortId,
        /// DPDK's error.
        #[source]
        source: DpdkError,
    },
}

/// What the driver says about a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Driver name, e.g. `net_ring`, `net_af_packet`, `mlx5_pci`.
    pub driver: String,
    /// Device name, e.g. `net_ring0`.
    pub name: String,
    /// Maximum RX queues.
    pub max_rx_queues: u16,
    /// Maximum TX queues.
    pub max_tx_queues: u16,
    /// RSS hash types the port can compute (0 = no RSS).
    pub rss_offloads: u64,
    /// The port's NUMA socket, if known.
    pub socket: Option<i32>,
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Link is up.
    pub up: bool,
    /// Speed in Mbit/s (0 if unknown).
    pub speed_mbps: u32,
}

/// Port counters as the PMD keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets the NIC dropped because RX queues were full.
    pub rx_missed: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
    /// Per-queue received packets (first 16 queues).
    pub queue_rx_packets: Vec<u64>,
    /// Per-queue sent packets (first 16 queues).
    pub queue_tx_packets: Vec<u64>,
}

/// RSS hash types Sluice asks for: IPv4/IPv6 plus TCP and UDP ports.
const RSS_WANTED: u64 =
    (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11);

/// A started port. Hand its queues to workers with [`Port::take_queues`]; the port is stopped
/// and closed when the `Port` and all its queues are gone.
pub struct Port {
    inner: Arc<PortInner>,
    rx: Vec<RxQueue>,
    tx: Vec<TxQueue>,
}

struct PortInner {
    id: PortId,
    name: String,
    eal: Eal,
    _pool: Mempool,
    /// Rings backing a ring-pair port; freed after both ports are closed.
    _rings: Option<Arc<RingSet>>,
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Port {
    /// Configures and starts port `id`: `rx_queues` RX queues filled from `pool`, `tx_queues`
    /// TX queues, RSS when asked for and offered.
    ///
    /// # Errors
    /// [`PortError`] naming the port and what failed.
    pub fn new(
        eal: &Eal,
        id: PortId,
        config: &PortConfig,
        pool: &Mempool,
    ) -> Result<Port, PortError> {
        Self::with_rings(eal, id, config, pool, None)
    }

    fn with_rings(
        eal: &Eal,
        id: PortId,
        config: &PortConfig,
        pool: &Mempool,
        rings: Option<Arc<RingSet>>,
    ) -> Result<Port, PortError> {
        let dpdk = |source| PortError::Dpdk { port: id, source };
        if config.rx_queues == 0 || config.tx_queues == 0 {
            return Err(PortError::NoQueues { port: id });
        }
        let info = port_info(id).map_err(dpdk)?;
        for (what, requested, max) in [
            ("rx", config.rx_queues, info.max_rx_queues),
            ("tx", config.tx_queues, info.max_tx_queues),
        ] {
            if requested > max {
                return Err(PortError::TooManyQueues {
                    port: id,
                    what,
                    requested,
                    max,
                });
            }
        }
        // The port is closed on any error below by this guard's drop.
        let inner = Arc::new(PortInner {
            id,
            name: info.name.clone(),
            eal: eal.clone(),
            _pool: pool.clone(),
            _rings: rings,
        });

        let mut conf = ffi::rte_eth_conf::default();
        if config.rss && config.rx_queues > 1 && info.rss_offloads & RSS_WANTED != 0 {
            conf.rxmode.mq_mode = ffi::rte_eth_rx_mq_mode::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = info.rss_offloads & RSS_WANTED;
        }
        // SAFETY: `conf` is a valid rte_eth_conf for the call; the port id is valid (info
        // succeeded) and the port is not started.
        let ret = unsafe {
            ffi::rte_eth_dev_configure(id.0, config.rx_queues, config.tx_queues, &raw const conf)
        };
        ret.to_result("rte_eth_dev_configure").map_err(dpdk)?;

        let (mut rx_desc, mut tx_desc) = (config.rx_desc, config.tx_desc);
        // SAFETY: valid port; the out-pointers are valid u16s.
        let ret = unsafe {
            ffi::rte_eth_dev_adjust_nb_rx_tx_desc(id.0, &raw mut rx_desc, &raw mut tx_desc)
        };
        ret.to_result("rte_eth_dev_adjust_nb_rx_tx_desc")
            .map_err(dpdk)?;
        // Every RX descriptor holds an mbuf from the pool; keep at least two bursts spare.
        let needed = u32::from(config.rx_queues) * u32::from(rx_desc) + 2 * 32;
        if pool.capacity() < needed {
            return Err(PortError::PoolTooSmall {
                port: id,
                pool: pool.name().to_owned(),
                capacity: pool.capacity(),
                rx_queues: config.rx_queues,
                rx_desc,
                needed,
            });
        }
        let socket = u32::try_from(info.socket.unwrap_or(SOCKET_ID_ANY)).unwrap_or(u32::MAX);
        for q in 0..config.rx_queues {
            // SAFETY: configured port, queue < nb_rx_queues; NULL rxconf = driver defaults;
            // the pool outlives the port (PortInner holds it).
            let ret = unsafe {
                ffi::rte_eth_rx_queue_setup(
                    id.0,
                    q,
                    rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            ret.to_result("rte_eth_rx_queue_setup").map_err(dpdk)?;
        }
        for q in 0..config.tx_queues {
            // SAFETY: configured port, queue < nb_tx_queues; NULL txconf = driver defaults.
            let ret =
                unsafe { ffi::rte_eth_tx_queue_setup(id.0, q, tx_desc, socket, std::ptr::null()) };
            ret.to_result("rte_eth_tx_queue_setup").map_err(dpdk)?;
        }
        if let Some(mtu) = config.mtu {
            // SAFETY: valid port id.
            let ret = unsafe { ffi::rte_eth_dev_set_mtu(id.0, mtu) };
            ret.to_result("rte_eth_dev_set_mtu").map_err(dpdk)?;
        }
        // SAFETY: the port is configured with all queues set up.
        let ret = unsafe { ffi::rte_eth_dev_start(id.0) };
        ret.to_result("rte_eth_dev_start").map_err(dpdk)?;
        if config.promiscuous {
            // SAFETY: valid, started port. Some PMDs (net_ring) do not support it; that is fine.
            let ret = unsafe { ffi::rte_eth_promiscuous_enable(id.0) };
            if ret < 0 && ret != -95 {
                tracing::debug!(port = %id, ret, "promiscuous mode not enabled");
            }
        }
        let rx = (0..config.rx_queues)
            .map(|q| RxQueue {
                port: inner.clone(),
                queue: QueueId(q),
            })
            .collect();
        let tx = (0..config.tx_queues)
            .map(|q| TxQueue {
                port: inner.clone(),
                queue: QueueId(q),
            })
            .collect();
        tracing::info!(port = %id, name = %info.name, driver = %info.driver, rx_queues = config.rx_queues, tx_queues = config.tx_queues, "port started");
        Ok(Port { inner, rx, tx })
    }

    /// Two ports wired back to back through DPDK rings (`net_ring` created with
    /// `rte_eth_from_rings`): what one sends on TX queue *q*, the other receives on RX queue *q*.
    ///
    /// # Errors
    /// [`PortError`] naming the port and what failed.
    pub fn ring_pair(
        eal: &Eal,
        name: &str,
        config: &PortConfig,
        pool: &Mempool,
    ) -> Result<(Port, Port), PortError> {
        let queues = config.rx_queues.max(config.tx_queues);
        let size = u32::from(config.rx_desc.max(config.tx_desc)).next_power_of_two();
        let unknown = PortId(u16::MAX);
        let rings = Arc::new(RingSet::new(name, usize::from(queues) * 2, size).map_err(
            |source| PortError::Dpdk {
                port: unknown,
                source,
            },
        )?);
        let q = usize::from(queues);
        // Port A receives from rings[q..2q] and sends into rings[0..q]; B the reverse.
        let a = rings.eth_from_rings(&format!("{name}_a"), &rings.ptrs[q..], &rings.ptrs[..q]);
        let a = a.map_err(|source| PortError::Dpdk {
            port: unknown,
            source,
        })?;
        let b = rings.eth_from_rings(&format!("{name}_b"), &rings.ptrs[..q], &rings.ptrs[q..]);
        let b = b.map_err(|source| PortError::Dpdk {
            port: unknown,
            source,
        })?;
        let cfg = PortConfig {
            rx_queues: queues,
            tx_queues: queues,
            rss: false,
            ..config.clone()
        };
        let pa = Self::with_rings(eal, a, &cfg, pool, Some(rings.clone()))?;
        let pb = Self::with_rings(eal, b, &cfg, pool, Some(rings))?;
        Ok((pa, pb))
    }

    /// The port id.
    pub fn id(&self) -> PortId {
        self.inner.id
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Driver facts.
    ///
    /// # Errors
    /// DPDK's error.
    pub fn info(&self) -> Result<PortInfo, DpdkError> {
        port_info(self.inner.id)
    }

    /// The port's MAC address.
    ///
    /// # Errors
    /// DPDK's error.
    pub fn mac(&self) -> Result<[u8; 6], DpdkError> {
        let mut addr = ffi::rte_ether_addr::default();
        // SAFETY: valid port; `addr` is a valid out-pointer.
        let ret = unsafe { ffi::rte_eth_macaddr_get(self.inner.id.0, &raw mut addr) };
        ret.to_result("rte_eth_macaddr_get")?;
        Ok(addr.addr_bytes)
    }

    /// Link state, without waiting.
    ///
    /// # Errors
    /// DPDK's error.
    pub fn link(&self) -> Result<LinkStatus, DpdkError> {
        let mut link = ffi::rte_eth_link::default();
        // SAFETY: valid port; `link` is a valid out-pointer.
        let ret = unsafe { ffi::rte_eth_link_get_nowait(self.inner.id.0, &raw mut link) };
        ret.to_result("rte_eth_link_get_nowait")?;
        Ok(LinkStatus {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
        })
    }

    /// The PMD's counters.
    ///
    /// # Errors
    /// DPDK's error.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: valid port; `s` is a valid out-pointer.
        let ret = unsafe { ffi::rte_eth_stats_get(self.inner.id.0, &raw mut s) };
        ret.to_result("rte_eth_stats_get")?;
        let nq = self
            .rx
            .len()
            .max(self.tx.len())
            .clamp(1, s.q_ipackets.len());
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            queue_rx_packets: s.q_ipackets[..nq].to_vec(),
            queue_tx_packets: s.q_opackets[..nq].to_vec(),
        })
    }

    /// Resets the PMD's counters.
    ///
    /// # Errors
    /// DPDK's error.
    pub fn reset_stats(&self) -> Result<(), DpdkError> {
        // SAFETY: valid port.
        let ret = unsafe { ffi::rte_eth_stats_reset(self.inner.id.0) };
        ret.to_result("rte_eth_stats_reset").map(|_| ())
    }

    /// Takes the port's queues (once) to hand to workers.
    pub fn take_queues(&mut self) -> (Vec<RxQueue>, Vec<TxQueue>) {
        (std::mem::take(&mut self.rx), std::mem::take(&mut self.tx))
    }
}

impl Drop for PortInner {
    fn drop(&mut self) {
        let id = self.id.0;
        // SAFETY: no queue handle remains (each holds this PortInner), so no thread is in an
        // RX/TX call on this port; stopping and closing is then safe.
        let ret = unsafe { ffi::rte_eth_dev_stop(id) };
        if ret < 0 {
            tracing::warn!(port = %self.id, ret, "rte_eth_dev_stop failed");
        }
        // SAFETY: as above; the port is stopped.
        let ret = unsafe { ffi::rte_eth_dev_close(id) };
        if ret < 0 {
            tracing::warn!(port = %self.id, ret, "rte_eth_dev_close failed");
        }
        self.eal.remove_vdev(&self.name);
        tracing::debug!(port = %self.id, "port closed");
    }
}

fn port_info(id: PortId) -> Result<PortInfo, DpdkError> {
    let mut info = ffi::rte_eth_dev_info::default();
    // SAFETY: `info` is a valid out-pointer; DPDK validates the port id.
    let ret = unsafe { ffi::rte_eth_dev_info_get(id.0, &raw mut info) };
    ret.to_result("rte_eth_dev_info_get")?;
    let driver = if info.driver_name.is_null() {
        String::new()
    } else {
        // SAFETY: non-null driver_name points to the driver's static NUL-terminated name.
        unsafe { CStr::from_ptr(info.driver_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut name_buf = [0 as c_char; 64];
    // SAFETY: the buffer holds RTE_ETH_NAME_MAX_LEN (64) bytes as DPDK requires.
    let ret = unsafe { ffi::rte_eth_dev_get_name_by_port(id.0, name_buf.as_mut_ptr()) };
    ret.to_result("rte_eth_dev_get_name_by_port")?;
    // SAFETY: DPDK wrote a NUL-terminated name into the buffer.
    let name = unsafe { CStr::from_ptr(name_buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: valid port id.
    let socket = unsafe { ffi::rte_eth_dev_socket_id(id.0) };
    Ok(PortInfo {
        driver,
        name,
        max_rx_queues: info.max_rx_queues,
        max_tx_queues: info.max_tx_queues,
        rss_offloads: info.flow_type_rss_offloads,
        socket: (socket >= 0).then_some(socket),
    })
}

/// An RX queue, owned by one worker. `Send`, not `Sync`: one thread polls it.
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: QueueId,
}

impl fmt::Debug for RxQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}/rx{:?}", self.port.id, self.queue)
    }
}

impl RxQueue {
    /// The port.
    pub fn port(&self) -> PortId {
        self.port.id
    }

    /// The queue index.
    pub fn queue(&self) -> QueueId {
        self.queue
    }

    /// Receives into the free slots of `burst`; returns how many packets arrived.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let (ptr, room) = burst.spare();
        if room == 0 {
            return 0;
        }
        // SAFETY: the port is started (alive while we hold PortInner); `queue` was set up;
        // `ptr` has room for `room` pointers; this queue is polled by this thread only (&mut).
        let n = unsafe { ffi::sluice_rte_eth_rx_burst(self.port.id.0, self.queue.0, ptr, room) };
        let n = usize::from(n);
        // SAFETY: DPDK filled `n` ≤ room slots with owned mbufs.
        unsafe { burst.commit(n) };
        n
    }
}

/// A TX queue, owned by one worker. `Send`, not `Sync`.
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: QueueId,
}

impl fmt::Debug for TxQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}/tx{:?}", self.port.id, self.queue)
    }
}

impl TxQueue {
    /// The port.
    pub fn port(&self) -> PortId {
        self.port.id
    }

    /// The queue index.
    pub fn queue(&self) -> QueueId {
        self.queue
    }

    /// Hands `burst` to the NIC. DPDK takes a prefix; those leave the burst and the refused
    /// rest moves to its front, still owned: retry it, or `clear()` it and count the drops.
    /// Returns how many were sent.
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let (ptr, n) = burst.as_raw();
        if n == 0 {
            return 0;
        }
        // SAFETY: started port, set-up queue, polled by this thread only (&mut self); `ptr`
        // holds `n` owned mbufs. DPDK takes ownership of the first `sent` of them.
        let sent = unsafe { ffi::sluice_rte_eth_tx_burst(self.port.id.0, self.queue.0, ptr, n) };
        let sent = usize::from(sent);
        burst.consume_front(sent);
        sent
    }
}

/// DPDK rings owned by a ring-pair of ports; freed after both ports have closed.
struct RingSet {
    ptrs: Vec<*mut ffi::rte_ring>,
}

// SAFETY: rte_rings are MP/MC-safe shared objects; the pointers are only passed to DPDK.
unsafe impl Send for RingSet {}
// SAFETY: as above.
unsafe impl Sync for RingSet {}

/// `RING_F_SP_ENQ | RING_F_SC_DEQ`: one producer (a TX queue), one consumer (an RX queue).
const RING_SP_SC: u32 = 0x1 | 0x2;

impl RingSet {
    fn new(name: &str, count: usize, size: u32) -> Result<RingSet, DpdkError> {
        let mut set = RingSet {
            ptrs: Vec::with_capacity(count),
        };
        for i in 0..count {
            let c = CString::new(format!("{name}_r{i}")).map_err(|_| DpdkError {
                call: "rte_ring_create",
                errno: 22,
            })?;
            // SAFETY: valid C string copied by DPDK; size is a power of two.
            let r = unsafe { ffi::rte_ring_create(c.as_ptr(), size, SOCKET_ID_ANY, RING_SP_SC) }
                .to_result("rte_ring_create")?;
            set.ptrs.push(r.as_ptr());
        }
        Ok(set)
    }

    fn eth_from_rings(
        &self,
        name: &str,
        rx: &[*mut ffi::rte_ring],
        tx: &[*mut ffi::rte_ring],
    ) -> Result<PortId, DpdkError> {
        let c = CString::new(name).map_err(|_| DpdkError {
            call: "rte_eth_from_rings",
            errno: 22,
        })?;
        let nrx = u32::try_from(rx.len()).unwrap_or(0);
        let ntx = u32::try_from(tx.len()).unwrap_or(0);
        // SAFETY: the ring pointers are live rings (owned by self, freed only after the ports
        // close); DPDK copies the arrays.
        let ret =
            unsafe { ffi::rte_eth_from_rings(c.as_ptr(), rx.as_ptr(), nrx, tx.as_ptr(), ntx, 0) };
        let id = ret.to_result("rte_eth_from_rings")?;
        Ok(PortId(u16::try_from(id).map_err(|_| DpdkError {
            call: "rte_eth_from_rings",
            errno: 34,
        })?))
    }
}

impl Drop for RingSet {
    fn drop(&mut self) {
        for &r in &self.ptrs {
            // SAFETY: both ports using these rings are closed (each holds this set); the
            // rings were created by us and are freed once.
            unsafe { ffi::rte_ring_free(r) };
        }
    }
}
