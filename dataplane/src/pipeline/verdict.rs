//! What the pipeline decided about a packet ([`Verdict`]), why it dropped one
//! ([`DropReason`]), and the worker's plain counters ([`Counters`]).

use core::fmt;

use crate::tables::BackendId;
use crate::tables::layout::DROP_REASONS;
use crate::wire::FrameError;

/// What to do with a packet after [`Pipeline::process`](super::Pipeline::process). `Copy`,
/// 20 bytes; the packet itself was rewritten in place (or not at all, for `Exception`,
/// `Redirect` and `Drop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub enum Verdict {
    /// Rewritten for its next hop (a backend, or a client for a NAT reply): send it out of
    /// the port it came in on.
    Forward {
        /// The service's directory index ([`Service::index`](super::Service::index)), which
        /// indexes the worker's per-service counters.
        service: u32,
        /// The backend the packet goes to; `None` for a NAT reply (backend → client), whose
        /// conntrack entry stores the client-side MAC instead of the backend id.
        backend: Option<BackendId>,
        /// Length of the frame as received (before any encapsulation), for byte counters.
        bytes: u32,
        /// The pipeline picked `backend` for this packet by Maglev: a new flow (a conntrack
        /// miss), a flow moved off a removed or down backend, or a stateless pick because
        /// conntrack is full. Counted as a connection on the service and the backend. Never
        /// set for conntrack hits, NAT replies or ICMP errors.
        new_flow: bool,
    },
    /// An ARP reply or NDP neighbor advertisement was written in place: send it back out of
    /// the port it came in on.
    Reply,
    /// Not for the load balancer (BGP, the host's own traffic, ARP/NDP for other addresses,
    /// non-IP): hand it unchanged to the exception port (the kernel's tap).
    Exception,
    /// A NAT reply whose SNAT port belongs to another worker's range: hand it, unchanged, to
    /// worker `worker`, which owns the flow's state.
    Redirect {
        /// The owning worker's index (`0..workers`).
        worker: u16,
    },
    /// Drop it; the reason was counted in [`Counters::drops`].
    Drop(DropReason),
}

/// Why a packet was dropped. `#[repr(u8)]`, dense from 0, so a worker keeps
/// `drops[reason as usize]` (the shared-memory [`WorkerBlock::drops`] has
/// [`DROP_REASONS`] slots). The first eight mirror [`FrameError`] one for one, in order.
///
/// [`WorkerBlock::drops`]: crate::tables::WorkerBlock::drops
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// [`FrameError::Truncated`].
    Truncated = 0,
    /// [`FrameError::BadArp`].
    BadArp,
    /// [`FrameError::BadIpv4Header`].
    BadIpv4Header,
    /// [`FrameError::BadIpv4Checksum`].
    BadIpv4Checksum,
    /// [`FrameError::BadIpv6Header`].
    BadIpv6Header,
    /// [`FrameError::BadIpv6ExtensionHeader`].
    BadIpv6ExtensionHeader,
    /// [`FrameError::ExtensionChainTooLong`].
    ExtensionChainTooLong,
    /// [`FrameError::BadL4Header`].
    BadL4Header,
    /// Addressed to a VIP, but no service matches its port and protocol (and it is neither a
    /// service-related ICMP error nor ARP/NDP). The kernel does not own VIPs, so the
    /// exception path would not help.
    NoService,
    /// The service has no backend that may take a new flow (empty table, or every probed
    /// entry draining or down).
    NoBackend,
    /// The chosen backend has no resolved MAC address yet.
    BackendUnresolved,
    /// NAT is an L3 hop: a TTL / hop limit of 1 or 0 cannot be forwarded. (No ICMP time
    /// exceeded is generated.)
    TtlExpired,
    /// Encapsulation needs headroom in front of the frame and the buffer had too little.
    EncapNoHeadroom,
    /// The encapsulated packet would exceed the 65 535-byte IP length limit.
    EncapTooBig,
    /// A NAT service of an address family for which the node has no source address
    /// configured (`PipelineConfig::node_ipv4` / `node_ipv6`).
    NatNoSourceAddress,
    /// A NAT service whose backend has the other address family (NAT46/64 is not done).
    NatFamilyMismatch,
    /// No SNAT port was free for this backend within [`NAT_PORT_TRIES`](super::NAT_PORT_TRIES)
    /// tries.
    NatPortsExhausted,
    /// A NAT flow needs conntrack state (the reverse entry un-NATs replies), and the table
    /// is full: unlike the other modes, NAT cannot fall back to stateless forwarding.
    NatConntrackFull,
    /// An IP fragment for a NAT service: fragments are not reassembled, and only the first
    /// one carries ports, so NAT services do not take fragments.
    NatFragment,
    /// A non-first fragment for a VIP whose first fragment was not seen (reordered ahead of
    /// it, or its state could not be stored), so its service is unknown.
    FragmentNoFlow,
    /// An ICMP error about a NAT service flow that has no conntrack state: it cannot be
    /// translated.
    IcmpNoFlow,
    /// The packet came in on a port index the pipeline has no MAC for.
    UnknownPort,
    /// Addressed to another station's unicast MAC (a port in promiscuous mode, a switch
    /// flooding unknown unicast): never forwarded, so the LB cannot duplicate or loop traffic.
    NotOurMac,
    /// A rewrite found the frame shorter than the parser reported. Never expected: a bug.
    RewriteFailed,
    /// Well-formed, but something this pipeline does not handle (e.g. hairpin NAT, where a
    /// client is its own backend).
    Unsupported,
    /// Not produced by the pipeline: for the worker loop, when the NIC refuses to transmit.
    TxFull,
    /// Not produced by the pipeline: for the worker loop, when an `Exception` verdict has no
    /// exception port to go to.
    NoExceptionPort,
}

const _: () = assert!(DropReason::NoExceptionPort as usize + 1 == DropReason::COUNT);
const _: () = assert!(DropReason::COUNT <= DROP_REASONS);
// The frame-error prefix lines up one for one.
const _: () = assert!(FrameError::COUNT == DropReason::NoService as usize);

impl DropReason {
    /// Number of variants: the length of a counter array indexed by `reason as usize`.
    pub const COUNT: usize = 27;

    /// Every variant, in discriminant order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Truncated,
        DropReason::BadArp,
        DropReason::BadIpv4Header,
        DropReason::BadIpv4Checksum,
        DropReason::BadIpv6Header,
        DropReason::BadIpv6ExtensionHeader,
        DropReason::ExtensionChainTooLong,
        DropReason::BadL4Header,
        DropReason::NoService,
        DropReason::NoBackend,
        DropReason::BackendUnresolved,
        DropReason::TtlExpired,
        DropReason::EncapNoHeadroom,
        DropReason::EncapTooBig,
        DropReason::NatNoSourceAddress,
        DropReason::NatFamilyMismatch,
        DropReason::NatPortsExhausted,
        DropReason::NatConntrackFull,
        DropReason::NatFragment,
        DropReason::FragmentNoFlow,
        DropReason::IcmpNoFlow,
        DropReason::UnknownPort,
        DropReason::NotOurMac,
        DropReason::RewriteFailed,
        DropReason::Unsupported,
        DropReason::TxFull,
        DropReason::NoExceptionPort,
    ];

    /// The `snake_case` label exported with the drop counter (Prometheus
    /// `sluice_dataplane_drops_total{reason="..."}`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => FrameError::Truncated.as_str(),
            DropReason::BadArp => FrameError::BadArp.as_str(),
            DropReason::BadIpv4Header => FrameError::BadIpv4Header.as_str(),
            DropReason::BadIpv4Checksum => FrameError::BadIpv4Checksum.as_str(),
            DropReason::BadIpv6Header => FrameError::BadIpv6Header.as_str(),
            DropReason::BadIpv6ExtensionHeader => FrameError::BadIpv6ExtensionHeader.as_str(),
            DropReason::ExtensionChainTooLong => FrameError::ExtensionChainTooLong.as_str(),
            DropReason::BadL4Header => FrameError::BadL4Header.as_str(),
            DropReason::NoService => "no_service",
            DropReason::NoBackend => "no_backend",
            DropReason::BackendUnresolved => "backend_unresolved",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::EncapNoHeadroom => "encap_no_headroom",
            DropReason::EncapTooBig => "encap_too_big",
            DropReason::NatNoSourceAddress => "nat_no_source_address",
            DropReason::NatFamilyMismatch => "nat_family_mismatch",
            DropReason::NatPortsExhausted => "nat_ports_exhausted",
            DropReason::NatConntrackFull => "nat_conntrack_full",
            DropReason::NatFragment => "nat_fragment",
            DropReason::FragmentNoFlow => "fragment_no_flow",
            DropReason::IcmpNoFlow => "icmp_no_flow",
            DropReason::UnknownPort => "unknown_port",
            DropReason::NotOurMac => "not_our_mac",
            DropReason::RewriteFailed => "rewrite_failed",
            DropReason::Unsupported => "unsupported",
            DropReason::TxFull => "tx_full",
            DropReason::NoExceptionPort => "no_exception_port",
        }
    }

    /// The counter index, `self as usize`.
    #[inline]
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl From<FrameError> for DropReason {
    #[inline]
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Truncated => DropReason::Truncated,
            FrameError::BadArp => DropReason::BadArp,
            FrameError::BadIpv4Header => DropReason::BadIpv4Header,
            FrameError::BadIpv4Checksum => DropReason::BadIpv4Checksum,
            FrameError::BadIpv6Header => DropReason::BadIpv6Header,
            FrameError::BadIpv6ExtensionHeader => DropReason::BadIpv6ExtensionHeader,
            FrameError::ExtensionChainTooLong => DropReason::ExtensionChainTooLong,
            FrameError::BadL4Header => DropReason::BadL4Header,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One worker's counters: plain `u64`s, written only by the worker that owns the
/// [`Pipeline`](super::Pipeline) (STYLE rule 10). The worker copies them into its
/// shared-memory block; per-service and per-backend counts come from each
/// [`Verdict::Forward`] instead. Conntrack's own counters are in
/// [`ConnTrack::stats`](crate::conntrack::ConnTrack::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Counters {
    /// Frames processed.
    pub rx_packets: u64,
    /// Bytes of the frames processed, as received.
    pub rx_bytes: u64,
    /// [`Verdict::Forward`]s.
    pub forwarded: u64,
    /// Bytes (as received) of the forwarded frames.
    pub forwarded_bytes: u64,
    /// Of the forwarded: NAT replies un-NATed towards a client.
    pub nat_replies: u64,
    /// Of the forwarded: ICMP errors sent to the backend of the flow they quote.
    pub icmp_errors: u64,
    /// Of the forwarded: packets whose backend the pipeline picked for them
    /// ([`Verdict::Forward`] with `new_flow`), i.e. connections.
    pub new_flows: u64,
    /// [`Verdict::Reply`]s: ARP replies and neighbor advertisements.
    pub replies: u64,
    /// [`Verdict::Exception`]s.
    pub exceptions: u64,
    /// [`Verdict::Redirect`]s.
    pub redirects: u64,
    /// [`Verdict::Drop`]s by [`DropReason`] index.
    pub drops: [u64; DropReason::COUNT],
    /// Flows forwarded statelessly (Maglev only) because the conntrack table was full.
    pub conntrack_full_fallback: u64,
    /// Tracked flows moved to a new backend because theirs was removed or marked down.
    pub backend_moves: u64,
}

impl Counters {
    /// All drops, every reason.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Drops for one reason.
    #[inline]
    #[must_use]
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }

    /// Counts a verdict (the frame's `rx` side was counted already).
    #[inline]
    pub(super) fn count(&mut self, v: &Verdict) {
        match *v {
            Verdict::Forward {
                bytes, new_flow, ..
            } => {
                self.forwarded += 1;
                self.forwarded_bytes += u64::from(bytes);
                self.new_flows += u64::from(new_flow);
            }
            Verdict::Reply => self.replies += 1,
            Verdict::Exception => self.exceptions += 1,
            Verdict::Redirect { .. } => self.redirects += 1,
            Verdict::Drop(r) => {
                if let Some(c) = self.drops.get_mut(r.index()) {
                    *c += 1;
                }
            }
        }
    }
}
