//! Where the pipeline finds services: the [`Services`] trait, implemented by the
//! shared-memory [`Worker`] (production) and by [`StaticServices`] (tests, benches, fuzzing),
//! and the per-packet view of one service, [`Service`], with the backend-choice rules.

use std::net::IpAddr;

use thiserror::Error;

use crate::flow::client_hash;
use crate::maglev::{self, EMPTY, MaglevBackend, MaglevError, MaglevTable, TableSize};
use crate::tables::{
    Affinity, Backend, BackendEntry, BackendId, BackendState, Mode, ServiceId, ServiceIndex,
    ServiceKey, ServiceView, Worker,
};

/// How many consecutive Maglev entries a new flow probes, starting at `hash % M`, for a
/// backend that is [`BackendState::Active`]. Control gives draining backends weight 0 (no
/// entries), so probing only matters in the window between a backend going down and control
/// publishing a table without it. The probe order depends only on the hash, so every LB node
/// makes the same choice.
pub const PROBE_LIMIT: usize = 8;

/// One service as the pipeline needs it for one packet: borrowed from the table source.
#[derive(Debug, Clone, Copy)]
pub struct Service<'a> {
    /// Directory index: stable for the service's life; indexes per-service counters.
    pub index: u32,
    /// The stable service id.
    pub id: ServiceId,
    /// Forwarding mode.
    pub mode: Mode,
    /// Session affinity: which hash a new flow's pick uses ([`Service::pick_hash`]).
    pub affinity: Affinity,
    /// The Maglev table: `M` backend slots, or all [`EMPTY`].
    pub table: &'a [u16],
    /// The backends in Maglev slot order (`table` entries index it).
    pub backends: &'a [BackendEntry],
}

// === impl Service ===

impl<'a> Service<'a> {
    /// The hash a new flow's [`Service::pick`] uses: `flow`, the flow hash of its key (5-tuple,
    /// 3-tuple for fragments), or with [`Affinity::ClientIp`] the [`client_hash`] of its
    /// source address `src` with the same `seed`. One test of the affinity per new flow.
    #[inline]
    #[must_use]
    pub fn pick_hash(&self, flow: u64, src: IpAddr, seed: u64) -> u64 {
        match self.affinity {
            Affinity::None => flow,
            Affinity::ClientIp => client_hash(src, seed),
        }
    }

    /// The backend for a new flow with flow hash `hash`: `backends[table[hash % M]]` if it is
    /// active, else the first active one among the next [`PROBE_LIMIT`] − 1 entries (wrapping).
    /// Returns its slot and entry; `None` for an empty table, a corrupt slot, or no active
    /// backend within the probe window. Draining and down backends never get new flows.
    #[inline]
    #[must_use]
    pub fn pick(&self, hash: u64) -> Option<(u32, &'a BackendEntry)> {
        let m = u64::try_from(self.table.len()).ok()?;
        if m == 0 {
            return None;
        }
        let start = hash % m;
        for i in 0..PROBE_LIMIT as u64 {
            let idx = usize::try_from((start + i) % m).ok()?;
            let slot = *self.table.get(idx)?;
            if slot == EMPTY {
                return None;
            }
            let b = self.backends.get(usize::from(slot))?;
            if b.state() == BackendState::Active {
                return Some((u32::from(slot), b));
            }
        }
        None
    }

    /// The backend with stable id `id`, trying slot `hint` first (where it was when the flow
    /// was tracked), then scanning. Returns its current slot and entry; `None` when the
    /// service no longer has it.
    #[inline]
    #[must_use]
    pub fn backend_by_id(&self, id: BackendId, hint: u32) -> Option<(u32, &'a BackendEntry)> {
        if let Some(b) = usize::try_from(hint)
            .ok()
            .and_then(|h| self.backends.get(h))
            && b.backend_id == id.0
        {
            return Some((hint, b));
        }
        self.backends_by_scan(id)
    }

    #[cold]
    fn backends_by_scan(&self, id: BackendId) -> Option<(u32, &'a BackendEntry)> {
        let (pos, b) = self
            .backends
            .iter()
            .enumerate()
            .find(|(_, b)| b.backend_id == id.0)?;
        Some((u32::try_from(pos).ok()?, b))
    }
}

/// A source of services for the pipeline. Implemented by the shared-memory table reader
/// ([`Worker`]) and by [`StaticServices`]; lookups must not allocate or panic.
pub trait Services {
    /// The service for a packet's `(VIP, port, protocol)`.
    fn service(&self, key: &ServiceKey) -> Option<Service<'_>>;

    /// [`Services::service`] of the key `vip:port/proto` given as values. The packet path
    /// calls this one: an implementation can hash the values where they are (registers)
    /// instead of a key just stored to memory.
    #[inline]
    fn service_of(&self, vip: IpAddr, port: u16, proto: u8) -> Option<Service<'_>> {
        let key = match vip {
            IpAddr::V4(a) => ServiceKey::from_v4(a.octets(), port, proto),
            IpAddr::V6(a) => ServiceKey::from_v6(a.octets(), port, proto),
        };
        self.service(&key)
    }

    /// Whether `ip` is a VIP of some service: ARP requests and neighbor solicitations for it
    /// are answered, and packets to it that match no service are dropped (`no_service`)
    /// rather than handed to the kernel. Called only off the fast path (ARP/NDP, and packets
    /// that matched no service).
    fn owns_address(&self, ip: IpAddr) -> bool;
}

// === impl Services for Worker ===

impl Services for Worker {
    #[inline]
    fn service(&self, key: &ServiceKey) -> Option<Service<'_>> {
        Worker::service(self, key).map(view_service)
    }

    #[inline(always)]
    fn service_of(&self, vip: IpAddr, port: u16, proto: u8) -> Option<Service<'_>> {
        self.service_by_parts(vip, port, proto).map(view_service)
    }

    /// A scan of the current generation's services: O(services). It runs only for ARP/NDP
    /// and for packets that matched no service.
    fn owns_address(&self, ip: IpAddr) -> bool {
        self.services().iter().any(|v| v.key().vip() == ip)
    }
}

/// The pipeline's view of a shared-memory service.
#[inline]
fn view_service(v: &ServiceView) -> Service<'_> {
    Service {
        index: v.index(),
        id: v.id(),
        mode: v.mode(),
        affinity: v.affinity(),
        table: v.table(),
        backends: v.backends(),
    }
}

// === StaticServices ===

/// Why [`StaticServices::upsert_with_table`] refused a service.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StaticServicesError {
    /// The Maglev builder refused the backend set.
    #[error(transparent)]
    Maglev(#[from] MaglevError),
    /// The table was built from another number of backends than given.
    #[error("table built for {table} backends, {given} given")]
    BackendsMismatch {
        /// Backends the table's slot mapping covers.
        table: usize,
        /// Backends passed.
        given: usize,
    },
    /// More services than a `u32` index can name.
    #[error("too many services")]
    TooMany,
}

#[derive(Debug, Clone)]
struct StaticService {
    key: ServiceKey,
    id: ServiceId,
    mode: Mode,
    affinity: Affinity,
    table: Box<[u16]>,
    backends: Box<[BackendEntry]>,
}

/// An in-memory [`Services`]: services built with the same Maglev builder and
/// [`BackendEntry`] encoding control publishes, without a shared-memory region. For tests,
/// benches and the fuzz target. A service keeps its index across [`StaticServices::upsert`]s,
/// as a directory index does.
#[derive(Debug, Clone)]
pub struct StaticServices {
    services: Vec<Option<StaticService>>,
    by_key: ServiceIndex,
}

impl Default for StaticServices {
    fn default() -> Self {
        Self::new()
    }
}

impl StaticServices {
    /// No services.
    #[must_use]
    pub fn new() -> Self {
        // The shared-memory reader's index.
        Self {
            services: Vec::new(),
            by_key: ServiceIndex::default(),
        }
    }

    /// Inserts or replaces the service `key` (with [`Affinity::None`]; see
    /// [`StaticServices::set_affinity`]), building its Maglev table of `size` from
    /// `backends` the way control does: each backend is named by its decimal stable id, and
    /// backends that are not [`BackendState::Active`] get weight 0 (no entries, but still
    /// addressable by tracked flows). Returns the service's index.
    ///
    /// # Errors
    ///
    /// [`StaticServicesError::Maglev`] when the builder refuses the set.
    pub fn upsert(
        &mut self,
        key: ServiceKey,
        id: ServiceId,
        mode: Mode,
        size: TableSize,
        backends: &[Backend],
    ) -> Result<u32, StaticServicesError> {
        let names: Vec<String> = backends.iter().map(|b| b.id.0.to_string()).collect();
        let inputs: Vec<MaglevBackend<'_>> = backends
            .iter()
            .zip(&names)
            .map(|(b, n)| {
                let w = if b.state == BackendState::Active {
                    b.weight
                } else {
                    0
                };
                MaglevBackend::new(n, w)
            })
            .collect();
        let table = maglev::build(size, &inputs)?;
        self.upsert_with_table(key, id, mode, backends, &table)
    }

    /// Inserts or replaces the service `key` with a table built elsewhere from `backends`
    /// (in that input order); the backends are stored in the table's slot order. Lets tests
    /// publish a table that still names a backend now marked down.
    ///
    /// # Errors
    ///
    /// [`StaticServicesError::BackendsMismatch`] when the table covers another number of
    /// backends.
    pub fn upsert_with_table(
        &mut self,
        key: ServiceKey,
        id: ServiceId,
        mode: Mode,
        backends: &[Backend],
        table: &MaglevTable,
    ) -> Result<u32, StaticServicesError> {
        let order = table.backend_order();
        if order.len() != backends.len() {
            return Err(StaticServicesError::BackendsMismatch {
                table: order.len(),
                given: backends.len(),
            });
        }
        let entries: Box<[BackendEntry]> = order
            .iter()
            .filter_map(|&i| backends.get(i))
            .map(BackendEntry::new)
            .collect();
        let svc = StaticService {
            key,
            id,
            mode,
            affinity: Affinity::None,
            table: table.as_slice().into(),
            backends: entries,
        };
        if let Some(i) = self.by_key.get(&key)
            && let Some(slot) = usize::try_from(i)
                .ok()
                .and_then(|i| self.services.get_mut(i))
        {
            *slot = Some(svc);
            return Ok(i);
        }
        let i = u32::try_from(self.services.len()).map_err(|_| StaticServicesError::TooMany)?;
        self.services.push(Some(svc));
        self.by_key.insert(key, i);
        Ok(i)
    }

    /// Sets the session affinity of service `key` (until its next upsert). Returns whether it
    /// exists.
    pub fn set_affinity(&mut self, key: &ServiceKey, affinity: Affinity) -> bool {
        let Some(s) = self
            .by_key
            .get(key)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.services.get_mut(i))
            .and_then(Option::as_mut)
        else {
            return false;
        };
        s.affinity = affinity;
        true
    }

    /// Removes the service `key`; its index is not reused. Returns whether it existed.
    pub fn remove(&mut self, key: &ServiceKey) -> bool {
        let Some(i) = self.by_key.remove(key) else {
            return false;
        };
        if let Some(slot) = usize::try_from(i)
            .ok()
            .and_then(|i| self.services.get_mut(i))
        {
            *slot = None;
        }
        true
    }

    /// Services held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no service is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The backends of service `key`, in slot order.
    #[must_use]
    pub fn backends(&self, key: &ServiceKey) -> Option<&[BackendEntry]> {
        self.service(key).map(|s| s.backends)
    }
}

impl StaticServices {
    #[inline]
    fn at(&self, i: u32) -> Option<Service<'_>> {
        let s = self.services.get(usize::try_from(i).ok()?)?.as_ref()?;
        Some(Service {
            index: i,
            id: s.id,
            mode: s.mode,
            affinity: s.affinity,
            table: &s.table,
            backends: &s.backends,
        })
    }
}

impl Services for StaticServices {
    #[inline]
    fn service(&self, key: &ServiceKey) -> Option<Service<'_>> {
        self.at(self.by_key.get(key)?)
    }

    #[inline(always)]
    fn service_of(&self, vip: IpAddr, port: u16, proto: u8) -> Option<Service<'_>> {
        self.at(self.by_key.get_parts(vip, port, proto)?)
    }

    fn owns_address(&self, ip: IpAddr) -> bool {
        self.services.iter().flatten().any(|s| s.key.vip() == ip)
    }
}
