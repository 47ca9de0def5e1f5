//! The per-packet forwarding engine: one [`Pipeline`] per worker turns each received frame
//! into a [`Verdict`], rewriting it in place (DESIGN, "Dataplane", steps 2–6).
//!
//! # Contract
//!
//! - **No DPDK below `io`.** The pipeline sees a frame through [`PacketBuf`] (bytes, plus
//!   headroom to prepend into); DPDK's `Mbuf` implements it in `io`, [`VecBuf`] everywhere
//!   else. Services come through [`Services`]: the shared-memory table reader
//!   ([`Worker`](crate::tables::Worker)) in production, [`StaticServices`] in tests.
//! - **No panics, no allocation, no locks, no clock** on the packet path
//!   ([`Pipeline::process`] and friends), for any input bytes and any table contents. Every
//!   rewrite reaches the frame through `get`/`get_mut`; `now` is passed in (STYLE rule 18).
//!   The proptests and the fuzz target (`fuzz/fuzz_targets/pipeline.rs`) exercise this.
//! - **One writer.** A `Pipeline` owns its worker's [`ConnTrack`] and [`Counters`]; nothing
//!   in it is shared.
//!
//! # Per packet
//!
//! 1. [`parse_frame`]: malformed frames are dropped with the parser's reason; frames to
//!    another station's unicast MAC are dropped (`not_our_mac`), never forwarded.
//! 2. ARP request for an owned address (a VIP, per [`Services::owns_address`], or a node
//!    address) → ARP reply in place, [`Verdict::Reply`]. Other ARP, and non-IP → exception.
//! 3. TCP/UDP to a known `(VIP, port, proto)` → the service's mode (below), then
//!    [`Verdict::Forward`].
//! 4. TCP/UDP to a node address on a port of the SNAT range → a NAT reply: the worker that
//!    owns the port (the range is split per worker) looks up the reverse entry and un-NATs
//!    (addresses, ports, TTL, checksums, MACs to the client-side MAC stored at flow setup);
//!    another worker's port gives [`Verdict::Redirect`]; no entry → exception (the host's
//!    own connection).
//! 5. ICMP / ICMPv6 error whose quoted packet was sent by a service (quoted source = the
//!    VIP it was sent to, quoted source port = the service port) → the backend of the quoted
//!    flow (conntrack, else Maglev on the flow's 5-tuple). DSR and encap forward it as they
//!    forward the flow. NAT translates it for the backend: outer node → backend, quoted
//!    packet backend:port → node:SNAT port, quoted L4 checksum (incremental, when quoted),
//!    quoted IPv4 header checksum, outer checksums; a flow without state is dropped
//!    (`icmp_no_flow`). ICMP errors about NAT flows that arrive from the backend side (to
//!    the node address) go to the exception path: a narrower behaviour, documented here.
//! 6. ICMPv6 neighbor solicitation for an owned address → neighbor advertisement in place.
//! 7. Anything else to a VIP → dropped (`no_service`, or `fragment_no_flow`); anything else
//!    at all → [`Verdict::Exception`] (BGP, the host's SSH, ...).
//!
//! # Flows, conntrack and Maglev
//!
//! A flow's key is its 5-tuple; every IP fragment (first and later) uses the 3-tuple
//! ([`FlowKey::three_tuple`]), as the flow-hash contract requires. A conntrack hit keeps the
//! flow on its backend, found by stable id in the service's current backend list, whatever
//! the Maglev table says now. A hit on a backend that is **draining** stays (draining means
//! "keep existing flows"). A hit on a backend that was **removed** or is marked **down** moves
//! the flow: Maglev picks again and the entry is replaced (`Counters::backend_moves`); a down
//! backend is one control judged unable to serve, so its connections are lost anyway, and
//! moving them lets clients see a reset from a live backend at once instead of timing out.
//!
//! A miss picks `table[flow_hash(key, seed) % M]`, or for a service with client-IP affinity
//! ([`Affinity::ClientIp`](crate::tables::Affinity::ClientIp)) `table[client_hash(src, seed) % M]`
//! ([`Service::pick_hash`]): every flow and fragment of a client, on every node, then picks
//! one backend (ICMP errors use the quoted flow's client; encap entropy stays per flow:
//! [`KeyedHash`] of the flow key under the seed). Conntrack is the same either way. An
//! `EMPTY` entry means no backend. If the entry's backend is not active (the window before
//! control republishes a table without it), the next entries are probed, up to [`PROBE_LIMIT`] in all, for an active one: the
//! probe order depends only on the hash, so every node picks the same. The flow is then
//! inserted; a full table is counted (`conntrack_full_fallback`) and the packet forwarded
//! statelessly: never dropped. **Except NAT**, which cannot work without state (the reverse
//! entry un-NATs the replies): a NAT flow that does not fit is dropped
//! (`nat_conntrack_full`).
//!
//! Every packet whose backend Maglev picked — a miss, a moved flow, or a stateless pick
//! while the table is full (then each packet of the flow is one) — carries `new_flow` in its
//! [`Verdict::Forward`] and counts in [`Counters::new_flows`]; the worker counts it as a
//! connection of the service and the backend in the shared tables
//! ([`Worker::count_forward`](crate::tables::Worker::count_forward)). Conntrack hits, NAT
//! replies and ICMP errors never do.
//!
//! The first fragment of a datagram stores a 3-tuple entry that remembers the service port,
//! so later fragments (which carry no ports) find the service and the backend; a later
//! fragment whose first one was not seen is dropped (`fragment_no_flow`). Fragments are not
//! reassembled. NAT services take no fragments (`nat_fragment`).
//!
//! ## What conntrack entries hold
//!
//! [`Entry`] carries two `u32`s and a `u16` besides its times. The pipeline uses them so:
//!
//! | entry | `backend_id` | `service_id` | `nat_port` |
//! |---|---|---|---|
//! | forward (client → VIP), any mode | backend's stable id | backend's slot when chosen (a hint, checked against the id) | NAT: the SNAT port; fragment 3-tuple entry: the service port; else 0 |
//! | NAT reverse (backend → node:SNAT port) | client-side MAC bytes 0..4, big-endian | the service's directory index | client-side MAC bytes 4..6 |
//!
//! The client-side MAC is the source MAC of the flow's first packet (the router that
//! delivered it); replies go back to it.
//!
//! # Rewrites, per mode
//!
//! - **DSR**: Ethernet source = the port's MAC, destination = the backend's MAC (or its next
//!   hop's). The IP packet is not touched: an L2 hop.
//! - **NAT**: DNAT to the backend (and its port, if set), SNAT to the node address and a port
//!   of this worker's block; TTL / hop limit decremented (≤ 1 is dropped, `ttl_expired`, with
//!   no ICMP sent); IPv4 header and TCP/UDP checksums updated incrementally (RFC 1624); a zero
//!   UDP checksum over IPv4 stays zero, over IPv6 it is computed. NAT46/64 is not done.
//! - **Encap** (IP-in-IP, GUE): an outer IPv4 or IPv6 header (backend's family, any mix with
//!   the inner one) from the node's encap address, TTL 64, full header checksum; GUE adds UDP
//!   to the GUE port and a 4-byte GUE header. The inner packet is untouched. The frame grows
//!   at the front ([`PacketBuf::prepend`]); too little headroom is `encap_no_headroom`. The
//!   MTU is not checked: the backend network must carry the extra 20–52 bytes.
//!
//! VLAN tags are kept: a frame leaves on the VLAN it came on.

mod buf;
mod config;
pub mod fuzz;
mod rewrite;
mod services;
mod verdict;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use crate::conntrack::{ConnTrack, Entry, HashedKey, InsertError, Tick};
use crate::flow::{FlowKey, KeyedHash, flow_hash};
use crate::tables::{BackendEntry, BackendId, BackendState, Mode};
use crate::wire::{
    EthernetAddress, FragmentInfo, FrameError, IcmpInfo, IpProtocol, L3, ParsedFrame, TcpFlags,
    icmpv4, icmpv6, parse_frame, parse_frame_layered, parse_ipv4_fast,
};

pub use buf::{PacketBuf, VecBuf};
pub use config::{PipelineConfig, PipelineConfigError};
pub use services::{PROBE_LIMIT, Service, Services, StaticServices, StaticServicesError};
pub use verdict::{Counters, DropReason, Verdict};

use config::NatPorts;
use rewrite::{Encap, IcmpTranslation, Translation};

/// SNAT ports a new NAT flow tries (round robin through the worker's block) before it is
/// dropped as `nat_ports_exhausted`. A port is free when no reverse entry for
/// `(backend, backend port, node, port)` exists.
pub const NAT_PORT_TRIES: usize = 16;

/// Conntrack slots [`Pipeline::process_burst`] ages per burst. A pass over a table of
/// capacity `n` (about 1.64 `n` slots) then takes `n / 4.9` bursts: 0.66 s for 1M entries
/// at 10 Mpps, 6.6 s for 10M, against timeouts of 10 s (closing) to 900 s (established); an
/// idle worker ages more, and an insert into a full table sweeps first. The sweep reads
/// every slot's deadline: at 100k flows 64 slots cost ~13 ns a packet, 16 slots 3-4 ns and 8
/// slots 1.5-2 ns (bench/RESULTS.md, "Pipeline").
pub const AGE_BUDGET_PER_BURST: usize = 8;

/// How many packets ahead of the one it processes [`Pipeline::process_burst`] has staged
/// at least (parsed, key hashed, conntrack slot prefetched): far enough that a slot arrives
/// from memory in time, near enough that the lines in flight stay within the core's miss
/// buffers (in the second pass, a whole burst of prefetches up front, 32, stalled on them:
/// bench/RESULTS.md, "Pipeline").
const PREFETCH_AHEAD: usize = 8;

/// How many packets [`Pipeline::process_burst`] stages at a time, every `PREFETCH_GROUP`
/// packets, before it prefetches their conntrack slots one right after another. A prefetch
/// that misses the TLB holds up retirement while the page walk runs; with one prefetch per
/// packet, about one walk ran at a time, while back to back their walks overlap. Groups of
/// 1 / 4 / 8 / 16: DSR 100k 48.7 / 45.5 / 44.9 / 43.9 ns, the same in cache
/// (bench/RESULTS.md, "Pipeline", seventh pass); 16 would need a ring twice the size for
/// 1 ns, within this machine's noise.
const PREFETCH_GROUP: usize = 8;

/// Slots of [`Pipeline::process_burst`]'s ring of staged packets: enough for the packets
/// staged but not yet processed (at most `PREFETCH_AHEAD + PREFETCH_GROUP`), so staging
/// never overwrites a packet before its turn, and a power of two, so a slot's index is a
/// mask (with 9 slots the modulo cost ~2 ns a packet).
const STAGE_RING: usize = 2 * PREFETCH_AHEAD;

const _: () =
    assert!(STAGE_RING >= PREFETCH_AHEAD + PREFETCH_GROUP && STAGE_RING.is_power_of_two());

/// A frame parsed ahead of its turn: its parse and its hashed conntrack key.
#[derive(Clone, Copy, Debug)]
struct Staged {
    parsed: Result<ParsedFrame, FrameError>,
    key: Option<HashedKey>,
}

impl Staged {
    /// A placeholder, overwritten before it is read.
    const EMPTY: Self = Self {
        parsed: Err(FrameError::Truncated),
        key: None,
    };
}

/// One worker's packet pipeline. See the module docs for the contract.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    macs: Box<[EthernetAddress]>,
    node_v4: Option<Ipv4Addr>,
    node_v6: Option<Ipv6Addr>,
    encap_v4: Ipv4Addr,
    encap_v6: Ipv6Addr,
    seed: u64,
    /// The entropy of encapsulated packets ([`Encap::entropy`]), keyed by the seed.
    entropy: KeyedHash,
    gue_port: u16,
    nat: NatPorts,
    ct: ConnTrack,
    counters: Counters,
    /// Outer IPv4 identification, per worker.
    ident: u16,
    /// [`Pipeline::process_burst`]'s ring of staged packets, kept here so that a burst
    /// neither initializes one (16 copies of 136 bytes, which the compiler made `memcpy`
    /// calls) nor carries it in its stack frame. `None` only while a burst runs.
    stage_ring: Option<Box<[Staged; STAGE_RING]>>,
}

// === impl Pipeline ===

impl Pipeline {
    /// A pipeline for `config`, with its conntrack table allocated (all allocation happens
    /// here).
    ///
    /// # Errors
    ///
    /// [`PipelineConfigError`] when the config does not validate.
    pub fn new(config: PipelineConfig) -> Result<Self, PipelineConfigError> {
        config.validate()?;
        let ct = match config.conntrack_seeds {
            Some([a, b, c, d]) => ConnTrack::with_hasher(
                config.conntrack_capacity,
                &config.timeouts,
                config.tick_rate,
                ahash::RandomState::with_seeds(a, b, c, d),
            )?,
            None => ConnTrack::new(
                config.conntrack_capacity,
                &config.timeouts,
                config.tick_rate,
            )?,
        };
        Ok(Self {
            macs: config.port_macs.clone().into_boxed_slice(),
            node_v4: config.node_ipv4,
            node_v6: config.node_ipv6,
            encap_v4: config
                .encap_ipv4
                .or(config.node_ipv4)
                .unwrap_or(Ipv4Addr::UNSPECIFIED),
            encap_v6: config
                .encap_ipv6
                .or(config.node_ipv6)
                .unwrap_or(Ipv6Addr::UNSPECIFIED),
            seed: config.flow_hash_seed,
            entropy: KeyedHash::from_seed(config.flow_hash_seed),
            gue_port: config.gue_port,
            nat: NatPorts::new(&config),
            ct,
            counters: Counters::default(),
            ident: 0,
            stage_ring: Some(Box::new([Staged::EMPTY; STAGE_RING])),
            config,
        })
    }

    /// The configuration it was built from.
    #[must_use]
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The counters so far.
    #[inline]
    #[must_use]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The worker's conntrack table (its [`stats`](ConnTrack::stats), fill, entries).
    #[inline]
    #[must_use]
    pub fn conntrack(&self) -> &ConnTrack {
        &self.ct
    }

    /// The SNAT source ports this worker hands out.
    #[must_use]
    pub fn nat_ports(&self) -> RangeInclusive<u16> {
        self.nat.own()
    }

    /// The worker that owns SNAT port `port` (whose conntrack holds the flow a reply to it
    /// belongs to), or `None` outside the SNAT range. For steering replies to the right queue.
    #[must_use]
    pub fn nat_port_owner(&self, port: u16) -> Option<u16> {
        self.nat.owner(port)
    }

    /// Ages the conntrack table: up to `budget` buckets (see
    /// [`ConnTrack::evict_expired`]). Returns the entries removed.
    pub fn age(&mut self, now: Tick, budget: usize) -> usize {
        self.ct.evict_expired(now, budget)
    }

    /// [`Pipeline::process_from`] for port 0: the one-armed case.
    #[inline]
    pub fn process<B: PacketBuf, S: Services + ?Sized>(
        &mut self,
        pkt: &mut B,
        services: &S,
        now: Tick,
    ) -> Verdict {
        self.process_from(0, pkt, services, now)
    }

    /// Processes one frame received on port `port` (an index into
    /// [`PipelineConfig::port_macs`]) at time `now`: parses, classifies, rewrites in place,
    /// counts, and says what to do with it. Never panics, never allocates.
    #[inline]
    pub fn process_from<B: PacketBuf, S: Services + ?Sized>(
        &mut self,
        port: u16,
        pkt: &mut B,
        services: &S,
        now: Tick,
    ) -> Verdict {
        let parsed = parse_frame(pkt.data());
        let key = parsed.as_ref().ok().and_then(|pf| self.flow_key(pf));
        let parsed = parsed.as_ref().map_err(|e| *e);
        self.process_parsed(port, pkt, parsed, key.as_ref(), services, now)
    }

    /// [`Pipeline::process_from`] for a frame already parsed from its current bytes, with
    /// its hashed conntrack key ([`Pipeline::flow_key`]).
    #[inline(always)]
    fn process_parsed<B: PacketBuf, S: Services + ?Sized>(
        &mut self,
        port: u16,
        pkt: &mut B,
        parsed: Result<&ParsedFrame, FrameError>,
        key: Option<&HashedKey>,
        services: &S,
        now: Tick,
    ) -> Verdict {
        let bytes = u32::try_from(pkt.data().len()).unwrap_or(u32::MAX);
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += u64::from(bytes);
        let v = match self.macs.get(usize::from(port)) {
            Some(&mac) => self.classify_parsed(mac, pkt, parsed, key, services, now, bytes),
            None => Verdict::Drop(DropReason::UnknownPort),
        };
        self.counters.count(&v);
        v
    }

    /// Processes a burst received on `port`: `verdicts[i]` for `pkts[i]`, for the first
    /// `min(pkts.len(), verdicts.len())` packets (the count is returned), then ages
    /// [`AGE_BUDGET_PER_BURST`] conntrack slots. Each verdict, rewrite and counter is what
    /// [`Pipeline::process_from`] on each packet in order gives; the burst is faster with
    /// many flows: each frame is parsed and its conntrack key hashed at least
    /// `PREFETCH_AHEAD` packets before its turn, in groups of `PREFETCH_GROUP`, and the
    /// group's conntrack slots prefetched together, so the cache and TLB misses of the
    /// stage overlap instead of coming one by one.
    pub fn process_burst<B: PacketBuf, S: Services + ?Sized>(
        &mut self,
        port: u16,
        pkts: &mut [B],
        verdicts: &mut [Verdict],
        services: &S,
        now: Tick,
    ) -> usize {
        let n = pkts.len().min(verdicts.len());
        let (pkts, verdicts) = (&mut pkts[..n], &mut verdicts[..n]);
        // Before packet i is processed, packets up to at least i + PREFETCH_AHEAD are staged
        // (when i is a multiple of PREFETCH_GROUP, the next group is). A frame's bytes do
        // not change before its turn (each packet's rewrite touches only its own buffer), so
        // its stage is its parse then. A slot is read at least PREFETCH_AHEAD packets after
        // it was written, long after its stores retired: reading a parse back straight after
        // writing it had cost a store-forwarding stall per packet (bench/RESULTS.md).
        self.ct.prefetch_sweep(AGE_BUDGET_PER_BURST);
        let Some(mut ring) = self.stage_ring.take() else {
            // Only a panic inside a burst could leave the ring out, and nothing here panics;
            // were it ever so, the packets still get their verdicts, one at a time.
            for (p, v) in pkts.iter_mut().zip(verdicts.iter_mut()) {
                *v = self.process_from(port, p, services, now);
            }
            self.ct.evict_expired(now, AGE_BUDGET_PER_BURST);
            return n;
        };
        self.stage_group(pkts, &mut ring, 0, PREFETCH_AHEAD);
        for i in 0..n {
            if i % PREFETCH_GROUP == 0 {
                self.stage_group(pkts, &mut ring, i + PREFETCH_AHEAD, PREFETCH_GROUP);
            }
            if let (Some(p), Some(v), Some(st)) = (
                pkts.get_mut(i),
                verdicts.get_mut(i),
                ring.get(i % STAGE_RING),
            ) {
                let parsed = st.parsed.as_ref().map_err(|e| *e);
                *v = self.process_parsed(port, p, parsed, st.key.as_ref(), services, now);
            }
        }
        self.stage_ring = Some(ring);
        self.ct.evict_expired(now, AGE_BUDGET_PER_BURST);
        n
    }

    /// Stages packets `from..from + count` of `pkts` (those that exist) into their ring
    /// slots, then prefetches their conntrack slots one after another.
    #[inline(always)]
    fn stage_group<B: PacketBuf>(
        &self,
        pkts: &[B],
        ring: &mut [Staged; STAGE_RING],
        from: usize,
        count: usize,
    ) {
        let to = (from + count).min(pkts.len());
        for j in from..to {
            if let (Some(p), Some(slot)) = (pkts.get(j), ring.get_mut(j % STAGE_RING)) {
                self.stage_into(p.data(), slot);
            }
        }
        for j in from..to {
            if let Some(k) = ring.get(j % STAGE_RING).and_then(|s| s.key.as_ref()) {
                self.ct.prefetch(k);
            }
        }
    }

    /// Parses `frame` into `slot` and hashes its conntrack key ([`Pipeline::flow_key`]).
    ///
    /// The common frame's parse goes into the slot field by field, as the fast parser
    /// makes it. A parse returned whole and then copied into the ring (one value for both
    /// parsers) was a stack copy: its 16-byte loads could not take their data from the
    /// parser's narrower stores, so each waited for them to retire, and with them for
    /// every older instruction, the previous packet's memory stalls included.
    #[inline(always)]
    fn stage_into(&self, frame: &[u8], slot: &mut Staged) {
        // `parse_frame`, in two branches.
        if let Some(pf) = parse_ipv4_fast(frame) {
            slot.key = self.flow_key(&pf);
            slot.parsed = Ok(pf);
            return;
        }
        let parsed = parse_frame_layered(frame);
        let key = parsed.as_ref().ok().and_then(|pf| self.flow_key(pf));
        *slot = Staged { parsed, key };
    }

    // --- classification ---

    /// The conntrack key of a parsed frame ([`flow_key_of`]), hashed once for the lookup.
    #[inline]
    fn flow_key(&self, pf: &ParsedFrame) -> Option<HashedKey> {
        flow_key_of(pf).map(|k| self.ct.hash_key(k))
    }

    /// The classification of a frame already parsed (`parsed` is `parse_frame` of its
    /// bytes as they are now). `key` is [`Pipeline::flow_key`] of the parse: the conntrack
    /// key of a TCP/UDP packet (5-tuple, 3-tuple for a first fragment), hashed.
    // Always inlined, into `process_burst` and `process_from` both: with two callers the
    // compiler kept it out of line, and the call (seven arguments, spills) cost the burst
    // path 3-4 ns a packet (bench/RESULTS.md, "Fourth pass").
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn classify_parsed<B: PacketBuf, S: Services + ?Sized>(
        &mut self,
        mac: EthernetAddress,
        pkt: &mut B,
        parsed: Result<&ParsedFrame, FrameError>,
        key: Option<&HashedKey>,
        services: &S,
        now: Tick,
        bytes: u32,
    ) -> Verdict {
        let pf = match parsed {
            Ok(pf) => pf,
            Err(e) => return Verdict::Drop(e.into()),
        };
        let data = pkt.data();
        // parse_frame checked the 14-byte Ethernet header.
        if let Some(dst) = data.get(..6)
            && dst.first().is_some_and(|b| b & 1 == 0)
            && dst != mac.0
        {
            return Verdict::Drop(DropReason::NotOurMac);
        }
        match pf.l3 {
            L3::Ipv4 | L3::Ipv6 => {}
            L3::Arp => return self.arp(mac, pkt, pf, services),
            L3::Other(_) => return Verdict::Exception,
        }
        if pf.proto == IpProtocol::TCP || pf.proto == IpProtocol::UDP {
            if pf.fragment == FragmentInfo::NonFirst {
                if let Some(v) = self.later_fragment(mac, pkt, pf, services, now, bytes) {
                    return v;
                }
            } else {
                // `flow_key_of` gives a key for every TCP/UDP frame but later fragments.
                if let Some(key) = key {
                    if let Some(svc) = services.service_of(pf.dst, pf.dst_port, pf.proto.0) {
                        return self.service_packet(mac, pkt, pf, &svc, key, now, bytes);
                    }
                    if let Some(v) = self.nat_reply(mac, pkt, pf, key, now, bytes) {
                        return v;
                    }
                }
            }
        } else if let Some(icmp) = pf.icmp
            && let Some(v) = self.icmp(mac, pkt, pf, icmp, services, now, bytes)
        {
            return v;
        }
        if !self.is_node_address(pf.dst) && services.owns_address(pf.dst) {
            return Verdict::Drop(if pf.fragment == FragmentInfo::NonFirst {
                DropReason::FragmentNoFlow
            } else {
                DropReason::NoService
            });
        }
        Verdict::Exception
    }

    #[inline]
    fn is_node_address(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.node_v4 == Some(a),
            IpAddr::V6(a) => self.node_v6 == Some(a),
        }
    }

    fn owns<S: Services + ?Sized>(&self, ip: IpAddr, services: &S) -> bool {
        self.is_node_address(ip) || services.owns_address(ip)
    }

    // Cold, like the ICMP and later-fragment paths below: kept out of line so that the
    // per-packet path (`classify_parsed`) stays small.
    #[cold]
    fn arp<B: PacketBuf, S: Services + ?Sized>(
        &self,
        mac: EthernetAddress,
        pkt: &mut B,
        pf: &ParsedFrame,
        services: &S,
    ) -> Verdict {
        match rewrite::arp_reply(pkt.data_mut(), pf, mac, |ip| self.owns(ip, services)) {
            Some(()) => Verdict::Reply,
            None => Verdict::Exception,
        }
    }

    // --- service traffic ---

    /// A TCP/UDP packet (whole or first fragment) that matched `svc`.
    // Always inlined, like `classify_parsed` (below `process_burst`, the one hot caller):
    // out of line it cost DSR 2 ns and GUE 3 ns a packet.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn service_packet<B: PacketBuf>(
        &mut self,
        mac: EthernetAddress,
        pkt: &mut B,
        pf: &ParsedFrame,
        svc: &Service<'_>,
        key: &HashedKey,
        now: Tick,
        bytes: u32,
    ) -> Verdict {
        let fragment = pf.fragment != FragmentInfo::None;
        if svc.mode == Mode::Nat {
            if fragment {
                return Verdict::Drop(DropReason::NatFragment);
            }
            return self.nat_forward(mac, pkt, pf, svc, key, now, bytes);
        }
        // The key is the 3-tuple for a (first) fragment; its entry remembers the port.
        let tag = if fragment { pf.dst_port } else { 0 };
        let hit = self.ct.lookup_tcp_hashed(key, pf.tcp_flags, now);
        let key = key.key();
        // `new_flow`: Maglev picked the backend (a miss, or a flow moved off its backend).
        let (backend, new_flow) = match hit.and_then(|e| tracked_backend(svc, &e)) {
            Some(b) => (b, false),
            None => {
                if hit.is_some() {
                    self.counters.backend_moves += 1;
                }
                let h = flow_hash(key, self.seed);
                match self.new_flow(svc, key, h, tag, pf.tcp_flags, now) {
                    Some(b) => (b, true),
                    None => return Verdict::Drop(DropReason::NoBackend),
                }
            }
        };
        self.send(mac, pkt, pf, svc, backend, key, new_flow, bytes)
    }

    /// Picks a backend for a new (or moved) DSR/encap flow and tracks it; a full table only
    /// counts `conntrack_full_fallback`. `hash` is the flow hash of `key`; a service with
    /// client-IP affinity picks by the client hash of `key`'s source instead.
    #[inline]
    fn new_flow<'s>(
        &mut self,
        svc: &Service<'s>,
        key: &FlowKey,
        hash: u64,
        tag: u16,
        flags: TcpFlags,
        now: Tick,
    ) -> Option<&'s BackendEntry> {
        let (slot, b) = svc.pick(svc.pick_hash(hash, key.src(), self.seed))?;
        let entry = Entry::new(b.backend_id, slot).with_nat_port(tag);
        if self.ct.insert(*key, entry, flags, now).is_err() {
            self.counters.conntrack_full_fallback += 1;
        }
        Some(b)
    }

    /// A later fragment: its service and backend come from the 3-tuple entry its first
    /// fragment stored. `None` when there is none.
    #[cold]
    fn later_fragment<B: PacketBuf, S: Services + ?Sized>(
        &mut self,
        mac: EthernetAddress,
        pkt: &mut B,
        pf: &ParsedFrame,
        services: &S,
        now: Tick,
        bytes: u32,
    ) -> Option<Verdict> {
        let key = FlowKey::three_tuple(pf.src, pf.dst, pf.proto);
        let e = self.ct.lookup(&key, now)?;
        let svc = services.service_of(pf.dst, e.nat_port(), pf.proto.0)?;
        if svc.mode == Mode::Nat {
            return Some(Verdict::Drop(DropReason::NatFragment));
        }
        let (backend, new_flow) = match tracked_backend(&svc, &e) {
            Some(b) => (b, false),
            None => {
                self.counters.backend_moves += 1;
                let h = flow_hash(&key, self.seed);
                match self.new_flow(&svc, &key, h, e.nat_port(), TcpFlags(0), now) {
                    Some(b) => (b, true),
                    None => return Some(Verdict::Drop(DropReason::NoBackend)),
                }
            }
        };
        Some(self.send(mac, pkt, pf, &svc, backend, &key, new_flow, bytes))
    }

    /// Forwards to `backend` by DSR or encap (`svc.mode`); `key` is the flow's conntrack key
    /// (its encap entropy comes from it) and `new_flow` goes into the verdict. Always
    /// inlined: on the hit path a call cost a fifth of its work.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn send<B: PacketBuf>(
        &mut self,
        mac: EthernetAddress,
        pkt: &mut B,
        pf: &ParsedFrame,
        svc: &Service<'_>,
        backend: &BackendEntry,
        key: &FlowKey,
        new_flow: bool,
        bytes: u32,
    ) -> Verdict {
        let Some(dmac) = backend.mac() else {
            return Verdict::Drop(DropReason::BackendUnresolved);
        };
        let gue_port = match svc.mode {
            Mode::Dsr => None,
            Mode::EncapIpip => Some(None),
            Mode::EncapGue => Some(Some(self.gue_port)),
            Mode::Nat => return Verdict::Drop(DropReason::Unsupported),
        };
        if let Some(gue_port) = gue_port {
            let Some(dst) = backend.ip() else {
                return Verdict::Drop(DropReason::Unsupported);
            };
            let src = match dst {
                IpAddr::V4(_) => IpAddr::V4(self.encap_v4),
                IpAddr::V6(_) => IpAddr::V6(self.encap_v6),
            };
            self.ident = self.ident.wrapping_add(1);
            // Only GUE and an IPv6 outer header carry entropy: IP-in-IP over IPv4 skips the hash.
            let entropy = if gue_port.is_some() || dst.is_ipv6() {
                self.entropy.hash_one(key)
            } else {
                0
            };
            let e = Encap {
                src,
                dst,
                gue_port,
                entropy,
                ident: self.ident,
            };
            if let Err(r) = rewrite::encap(pkt, pf, &e) {
                return Verdict::Drop(r);
            }
        }
        if rewrite::set_macs(pkt.data_mut(), dmac, mac.0).is_none() {
            return Verdict::Drop(DropReason::RewriteFailed);
        }
        Verdict::Forward {
            service: svc.index,
            backend: Some(backend.id()),
            bytes,
            new_flow,
        }
    }

    // --- NAT ---

    /// The node's NAT address of `ip`'s family.
    #[inline]
    fn nat_source(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(_) => self.node_v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.node_v6.map(IpAddr::V6),
        }
    }

    /// A client → VIP packet of a NAT service.
    // Always inlined, with `rewrite::nat`: out of line they cost NAT 2-3 ns a packet.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn nat_forward<B: PacketBuf>(
        &mut self,
        mac: EthernetAddress,
        pkt: &mut B,
        pf: &ParsedFrame,
        svc: &Service<'_>,
        key: &HashedKey,
        now: Tick,
        bytes: u32,
    ) -> Verdict {
        if pf.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let Some(node) = self.nat_source(pf.dst) else {
            return Verdict::Drop(DropReason::NatNoSourceAddress);
        };
        // Not a fragment (checked by the caller): `key` is the 5-tuple.
        let hit = self.ct.lookup_tcp_hashed(key, pf.tcp_flags, now);
        let key = key.key();
        let tracked = hit.and_then(|e| Some((tracked_backend(svc, &e)?, e.nat_port())));
        let new_flow = tracked.is_none();
        let (backend, snat) = match tracked {
            Some(t) => t,
            None => {
                if hit.is_some() {
                    self.counters.backend_moves += 1;
                    let _ = self.ct.remove(key);
                }
                let client_mac = rewrite::src_mac(pkt.data()).unwrap_or_default();
                match self.nat_new_flow(client_mac, pf, svc, key, node, now) {
                    Ok(t) => t,
                    Err(r) => return Verdict::Drop(r),
                }
            }
        };
        let Some(dmac) = backend.mac() else {
            return Verdict::Drop(DropReason::BackendUnresolved);
        };
        let Some(bip) = backend.ip().filter(|b| b.is_ipv4() == node.is_ipv4()) else {
            return Verdict::Drop(DropReason::NatFamilyMismatch);
        };
        let t = Translation {
            src: node,
            dst: bip,
            src_port: snat,
            dst_port: backend_port(backend, pf.dst_port),
        };
        let frame = pkt.data_mut();
        if rewrite::nat(frame, pf, &t).is_none() || rewrite::set_macs(frame, dmac, mac.0).is_none()
        {
            return Verdict::Drop(DropReason::RewriteFailed);
        }
        Verdict::Forward {
            service: svc.index,
            backend: Some(backend.id()),
            bytes,
            new_flow,
        }
    }

    /// Sets up a NAT flow: picks the backend and a free SNAT port, inserts the pair.
    #[inline(never)]
    fn nat_new_flow<'s>(
        &mut self,
        client_mac: [u8; 6],
        pf: &ParsedFrame,
        svc: &Service<'s>,
        key: &FlowKey,
        node: IpAddr,
        now: Tick,
    ) -> Result<(&'s BackendEntry, u16), DropReason> {
        let (slot, b) = svc
            .pick(svc.pick_hash(flow_hash(key, self.seed), pf.src, self.seed))
            .ok_or(DropReason::NoBackend)?;
        let bip = b.ip().ok_or(DropReason::Unsupported)?;
        if bip.is_ipv4() != node.is_ipv4() {
            return Err(DropReason::NatFamilyMismatch);
        }
        if b.mac().is_none() {
            return Err(DropReason::BackendUnresolved);
        }
        let bport = backend_port(b, pf.dst_port);
        let mut chosen = None;
        for _ in 0..NAT_PORT_TRIES {
            let p = self.nat.next();
            let rev = FlowKey::new(bip, node, bport, p, pf.proto);
            if self.ct.peek(&rev).is_none() {
                chosen = Some((p, rev));
                break;
            }
        }
        let (port, rev_key) = chosen.ok_or(DropReason::NatPortsExhausted)?;
        let fwd = Entry::new(b.backend_id, slot).with_nat_port(port);
        let [m0, m1, m2, m3, m4, m5] = client_mac;
        let rev = Entry::new(u32::from_be_bytes([m0, m1, m2, m3]), svc.index)
            .with_nat_port(u16::from_be_bytes([m4, m5]));
        match self
            .ct
            .insert_pair(*key, fwd, rev_key, rev, pf.tcp_flags, now)
        {
            Ok(()) => Ok((b, port)),
            Err(InsertError::Full) => Err(DropReason::NatConntrackFull),
            Err(InsertError::SameKey) => Err(DropReason::Unsupported),
        }
    }

    /// A TCP/UDP packet that matched no service: a NAT reply if it goes to a node address
    /// and a port of the SNAT range. `None` when it is not one (or no flow matches).
    #[inline]
    fn nat_reply<B: PacketBuf>(
        &mut self,
        mac: EthernetAddress,
        pkt: &mut B,
        pf: &ParsedFrame,
        key: &HashedKey,
        now: Tick,
        bytes: u32,
    ) -> Option<Verdict> {
        if !self.is_node_address(pf.dst) {
            return None;
        }
        let owner = self.nat.owner(pf.dst_port)?;
        if owner != self.nat.worker() {
            return Some(Verdict::Redirect { worker: owner });
        }
        let e = if pf.fragment == FragmentInfo::None {
            self.ct.lookup_tcp_hashed(key, pf.tcp_flags, now)?
        } else {
            // A first fragment's `key` is its 3-tuple; replies are looked up by 5-tuple.
            let key = FlowKey::new(pf.src, pf.dst, pf.src_port, pf.dst_port, pf.proto);
            self.ct.lookup_tcp(&key, pf.tcp_flags, now)?
        };
        if !e.is_reverse() {
            return None;
        }
        let fwd = self.ct.peer_key(&e)?;
        if pf.fragment != FragmentInfo::None {
            return Some(Verdict::Drop(DropReason::NatFragment));
        }
        if pf.ttl <= 1 {
            return Some(Verdict::Drop(DropReason::TtlExpired));
        }
        let [m0, m1, m2, m3] = e.backend_id().to_be_bytes();
        let [m4, m5] = e.nat_port().to_be_bytes();
        let t = Translation {
            src: fwd.dst(),
            dst: fwd.src(),
            src_port: fwd.dst_port(),
            dst_port: fwd.src_port(),
        };
        let frame = pkt.data_mut();
        if rewrite::nat(frame, pf, &t).is_none()
            || rewrite::set_macs(frame, [m0, m1, m2, m3, m4, m5], mac.0).is_none()
        {
            return Some(Verdict::Drop(DropReason::RewriteFailed));
        }
        self.counters.nat_replies += 1;
        Some(Verdict::Forward {
            service: e.service_id(),
            backend: None,
            bytes,
            new_flow: false,
        })
    }

    // --- ICMP ---

    /// ICMP errors about service flows, and neighbor solicitations. `None`: neither.
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn icmp<B: PacketBuf, S: Services + ?Sized>(
        &mut self,
        mac: EthernetAddress,
        pkt: &mut B,
        pf: &ParsedFrame,
        icmp: IcmpInfo,
        services: &S,
        now: Tick,
        bytes: u32,
    ) -> Option<Verdict> {
        let is_error = match (pf.l3, pf.proto) {
            (L3::Ipv4, IpProtocol::ICMP) => icmpv4::Message(icmp.msg_type).is_error(),
            (L3::Ipv6, IpProtocol::ICMPV6) => {
                if icmp.msg_type == icmpv6::Message::NEIGHBOR_SOLICIT.0 {
                    let data = pkt.data_mut();
                    return rewrite::ndp_reply(data, pf, mac, |ip| self.owns(ip, services))
                        .map(|()| Verdict::Reply);
                }
                icmpv6::Message(icmp.msg_type).is_error()
            }
            _ => false,
        };
        if !is_error {
            return None;
        }
        let inner = pf.inner_flow(pkt.data()).ok()?;
        if (inner.proto != IpProtocol::TCP && inner.proto != IpProtocol::UDP)
            || inner.fragment == FragmentInfo::NonFirst
            || inner.src != pf.dst
        {
            return None;
        }
        let svc = services.service_of(inner.src, inner.src_port, inner.proto.0)?;
        // The quoted packet went VIP → client: the flow is its reverse.
        let key = FlowKey::new(
            inner.dst,
            inner.src,
            inner.dst_port,
            inner.src_port,
            inner.proto,
        );
        let v = if svc.mode == Mode::Nat {
            self.icmp_nat(mac, pkt, pf, &svc, &key, now, bytes)
        } else {
            let tracked = self
                .ct
                .peek(&key)
                .filter(|e| now < e.expires())
                .and_then(|e| tracked_backend(&svc, &e));
            let hash = flow_hash(&key, self.seed);
            // An ICMP error is about a flow, never one itself: not a connection, even when
            // Maglev picks its backend (the flow has no state here).
            // The client is the quoted packet's destination (`key`'s source), not the sender.
            let pick = || svc.pick(svc.pick_hash(hash, key.src(), self.seed));
            match tracked.or_else(|| pick().map(|(_, b)| b)) {
                Some(b) => self.send(mac, pkt, pf, &svc, b, &key, false, bytes),
                None => Verdict::Drop(DropReason::NoBackend),
            }
        };
        if matches!(v, Verdict::Forward { .. }) {
            self.counters.icmp_errors += 1;
        }
        Some(v)
    }

    /// An ICMP error about the NAT flow `key` (client → VIP), translated for its backend.
    #[allow(clippy::too_many_arguments)]
    fn icmp_nat<B: PacketBuf>(
        &mut self,
        mac: EthernetAddress,
        pkt: &mut B,
        pf: &ParsedFrame,
        svc: &Service<'_>,
        key: &FlowKey,
        now: Tick,
        bytes: u32,
    ) -> Verdict {
        if pf.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let Some(e) = self.ct.peek(key).filter(|e| now < e.expires()) else {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        };
        let (Some(rev), Some(b)) = (self.ct.peer_key(&e), tracked_backend(svc, &e)) else {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        };
        let Some(dmac) = b.mac() else {
            return Verdict::Drop(DropReason::BackendUnresolved);
        };
        // `rev` is backend:port → node:SNAT port, the packet the backend sent.
        let t = IcmpTranslation {
            outer_src: rev.dst(),
            outer_dst: rev.src(),
            quote_src: rev.src(),
            quote_dst: rev.dst(),
            quote_src_port: rev.src_port(),
            quote_dst_port: rev.dst_port(),
        };
        let frame = pkt.data_mut();
        if rewrite::icmp_nat(frame, pf, &t).is_none()
            || rewrite::set_macs(frame, dmac, mac.0).is_none()
        {
            return Verdict::Drop(DropReason::RewriteFailed);
        }
        Verdict::Forward {
            service: svc.index,
            backend: Some(b.id()),
            bytes,
            new_flow: false,
        }
    }
}

/// The backend a tracked flow stays on: its backend (by stable id) if the service still has
/// it and it is not down. Draining backends keep their flows.
#[inline]
fn tracked_backend<'s>(svc: &Service<'s>, e: &Entry) -> Option<&'s BackendEntry> {
    svc.backend_by_id(BackendId(e.backend_id()), e.service_id())
        .map(|(_, b)| b)
        .filter(|b| b.state() != BackendState::Down)
}

/// The port NAT sends to: the backend's, or the service port when the backend has none.
#[inline]
fn backend_port(b: &BackendEntry, service_port: u16) -> u16 {
    if b.port != 0 { b.port } else { service_port }
}

/// The conntrack key a TCP/UDP frame's lookup uses: its 5-tuple, or the 3-tuple for a
/// fragment (the key of [`Pipeline::service_packet`] and [`Pipeline::nat_reply`]). `None`
/// for later fragments and other protocols, whose lookups are rare.
#[inline(always)]
fn flow_key_of(pf: &ParsedFrame) -> Option<FlowKey> {
    if pf.proto != IpProtocol::TCP && pf.proto != IpProtocol::UDP {
        return None;
    }
    let (sport, dport) = match pf.fragment {
        FragmentInfo::None => (pf.src_port, pf.dst_port),
        FragmentInfo::First => (0, 0),
        FragmentInfo::NonFirst => return None,
    };
    // By reference: matching the addresses by value made the compiler load both (17 bytes
    // each) byte by byte before it looked at their family.
    Some(match (&pf.src, &pf.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => FlowKey::v4(*s, *d, sport, dport, pf.proto),
        _ => FlowKey::new(pf.src, pf.dst, sport, dport, pf.proto),
    })
}
