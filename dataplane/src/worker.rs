//! The forwarding worker: one per configured core, pinned, owning one RX/TX queue pair on
//! every port. Per loop: check the published table generation (one acquire load), receive a
//! burst on each port, run every packet through its [`Pipeline`], and send the results out in
//! bursts. No locks, no allocation, no syscalls per packet.
//!
//! An idle worker backs off — spin, then yield, then sleep with a growing interval up to
//! `idle_sleep_max` — so that a 2-core test machine stays usable; the first packet resets it.
//!
//! NAT replies whose SNAT port belongs to another worker are handed over through that worker's
//! bounded inbox (a lock-free queue); a full inbox drops and counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::conntrack::Tick;
use crate::io::{Mbuf, MbufBurst, RxQueue, TxQueue, tsc};
use crate::pipeline::{DropReason, Pipeline, Verdict};
use crate::tables::Worker as TablesWorker;

/// Packets a worker's inbox holds (NAT replies handed over by other workers).
pub const INBOX_CAPACITY: usize = 4096;

/// Conntrack buckets aged per idle loop (busy loops age inside `process_burst`).
const AGE_BUDGET: usize = 64;

/// Loops between copies of the pipeline counters into the shared worker block.
const PUBLISH_EVERY: u32 = 256;

/// A frame handed from one worker to another: the port it arrived on and the frame.
pub type Handoff = (u16, Mbuf);

/// Everything one worker owns.
#[derive(Debug)]
pub struct WorkerSetup {
    /// Worker index, `0..workers`.
    pub index: u16,
    /// CPU core to pin to (`None`: not pinned).
    pub core: Option<usize>,
    /// This worker's RX queue on every port (index = port index).
    pub rx: Vec<RxQueue>,
    /// This worker's TX queue on every port (index = port index).
    pub tx: Vec<TxQueue>,
    /// The exception port's RX queue (worker 0 only) and this worker's TX queue on it.
    pub exception: (Option<RxQueue>, Option<TxQueue>),
    /// This worker's view of the shared tables.
    pub tables: TablesWorker,
    /// This worker's pipeline.
    pub pipeline: Pipeline,
    /// Every worker's inbox, indexed by worker.
    pub inboxes: Arc<[ArrayQueue<Handoff>]>,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// Longest idle sleep.
    pub idle_sleep_max: Duration,
}

/// Counts the worker keeps beyond the pipeline's own.
#[derive(Debug, Default, Clone, Copy)]
struct Extra {
    tx_packets: u64,
    tx_bytes: u64,
    tx_full: u64,
    no_exception_port: u64,
    handoff_full: u64,
}

/// Spin → yield → sleep back-off for an idle worker.
#[derive(Debug)]
struct Backoff {
    idle: u32,
    max: Duration,
}

impl Backoff {
    fn reset(&mut self) {
        self.idle = 0;
    }

    fn snooze(&mut self) {
        self.idle = self.idle.saturating_add(1);
        match self.idle {
            0..64 => std::hint::spin_loop(),
            64..128 => std::thread::yield_now(),
            n => {
                if self.max.is_zero() {
                    std::thread::yield_now();
                    return;
                }
                // 10 µs, doubling every 32 idle polls, capped.
                let shift = ((n - 128) / 32).min(10);
                let d = Duration::from_micros(10u64 << shift).min(self.max);
                std::thread::sleep(d);
            }
        }
    }
}

/// Runs a worker until `stop` is set. Returns its final pipeline for inspection.
pub fn run(mut w: WorkerSetup) -> Pipeline {
    if let Some(core) = w.core
        && !core_affinity::set_for_current(core_affinity::CoreId { id: core })
    {
        tracing::warn!(worker = w.index, core, "could not pin worker to its core");
    }
    let _registration = match crate::io::register_thread() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(worker = w.index, error = %e, "DPDK thread registration failed; running without a mempool cache");
            None
        }
    };
    let nports = w.rx.len();
    let mut rx_burst = MbufBurst::new();
    let mut verdicts = [Verdict::Exception; crate::io::BURST];
    let mut out: Vec<MbufBurst> = (0..nports).map(|_| MbufBurst::new()).collect();
    let mut exc_out = MbufBurst::new();
    let mut backoff = Backoff {
        idle: 0,
        max: w.idle_sleep_max,
    };
    let mut extra = Extra::default();
    let mut loops = 0u32;
    // Our own handle on the inboxes, so popping ours does not borrow `w` (cloned once).
    let inboxes = Arc::clone(&w.inboxes);
    let ct = w.pipeline.conntrack();
    tracing::info!(
        worker = w.index,
        core = ?w.core,
        ports = nports,
        conntrack_capacity = ct.capacity(),
        conntrack_bytes = ct.allocated_bytes(),
        conntrack_pages = %ct.page_backing(),
        "worker running"
    );

    while !w.stop.load(Ordering::Relaxed) {
        if let Err(e) = w.tables.check() {
            tracing::debug!(worker = w.index, error = %e, "table check failed; keeping previous tables");
        }
        let now = Tick(tsc());
        let mut got = 0usize;
        for p in 0..nports {
            let n = w.rx[p].rx_burst(&mut rx_burst);
            got += n;
            if n == 0 {
                continue;
            }
            let port = u16::try_from(p).unwrap_or(u16::MAX);
            // The burst path: each packet's conntrack slot is prefetched a few packets ahead.
            let k = w.pipeline.process_burst(
                port,
                rx_burst.as_mut_slice(),
                &mut verdicts,
                &w.tables,
                now,
            );
            for (m, &v) in rx_burst.drain().zip(verdicts[..k].iter()) {
                dispatch(&mut w, &mut out, &mut exc_out, &mut extra, port, m, v);
            }
        }
        // Frames other workers handed over (NAT replies we own).
        if let Some(inbox) = inboxes.get(usize::from(w.index)) {
            let mut n = 0;
            while n < 32
                && let Some((port, m)) = inbox.pop()
            {
                handle(&mut w, &mut out, &mut exc_out, &mut extra, port, m, now);
                n += 1;
            }
            got += n;
        }
        // The host kernel's traffic (from the tap) leaves by port 0.
        if let Some(exc_rx) = w.exception.0.as_mut() {
            let n = exc_rx.rx_burst(&mut rx_burst);
            got += n;
            for m in rx_burst.drain() {
                push(&mut w.tx, &mut out, &mut extra, 0, m);
            }
        }
        for (q, b) in w.tx.iter_mut().zip(out.iter_mut()) {
            flush(q, b, &mut extra);
        }
        if let Some(exc_tx) = w.exception.1.as_mut() {
            let sent = exc_tx.tx_burst(&mut exc_out);
            extra.tx_packets += sent as u64;
            extra.tx_full += exc_out.clear() as u64;
        }
        if got == 0 {
            // `process_burst` ages the table with every burst; an idle loop ages it here.
            w.pipeline.age(now, AGE_BUDGET);
        }
        loops = loops.wrapping_add(1);
        if got == 0 {
            if backoff.idle == 0 || loops.is_multiple_of(PUBLISH_EVERY) {
                publish_counters(&w, &extra);
            }
            backoff.snooze();
        } else {
            backoff.reset();
            if loops.is_multiple_of(PUBLISH_EVERY) {
                publish_counters(&w, &extra);
            }
        }
    }
    publish_counters(&w, &extra);
    tracing::info!(worker = w.index, "worker stopped");
    w.pipeline
}

/// Processes one frame on its own (frames handed over by another worker) and dispatches it.
#[inline]
fn handle(
    w: &mut WorkerSetup,
    out: &mut [MbufBurst],
    exc_out: &mut MbufBurst,
    extra: &mut Extra,
    port: u16,
    mut m: Mbuf,
    now: Tick,
) {
    let v = w.pipeline.process_from(port, &mut m, &w.tables, now);
    dispatch(w, out, exc_out, extra, port, m, v);
}

/// Sends a processed frame where its verdict says, counting what cannot be sent.
#[inline]
fn dispatch(
    w: &mut WorkerSetup,
    out: &mut [MbufBurst],
    exc_out: &mut MbufBurst,
    extra: &mut Extra,
    port: u16,
    m: Mbuf,
    verdict: Verdict,
) {
    match verdict {
        Verdict::Forward {
            service,
            backend,
            bytes,
            new_flow,
        } => {
            w.tables
                .count_forward(service, backend, u64::from(bytes), new_flow);
            push(&mut w.tx, out, extra, usize::from(port), m);
        }
        Verdict::Reply => push(&mut w.tx, out, extra, usize::from(port), m),
        Verdict::Exception => {
            if w.exception.1.is_some() {
                if exc_out.is_full()
                    && let Some(tx) = w.exception.1.as_mut()
                {
                    extra.tx_packets += tx.tx_burst(exc_out) as u64;
                    extra.tx_full += exc_out.clear() as u64;
                }
                let _ = exc_out.push(m);
            } else {
                extra.no_exception_port += 1;
            }
        }
        Verdict::Redirect { worker } => {
            let full = w
                .inboxes
                .get(usize::from(worker))
                .is_none_or(|q| q.push((port, m)).is_err());
            if full {
                extra.handoff_full += 1;
            }
        }
        Verdict::Drop(_) => {} // counted by the pipeline; `m` is freed here
    }
}

#[inline]
fn push(tx: &mut [TxQueue], out: &mut [MbufBurst], extra: &mut Extra, port: usize, m: Mbuf) {
    let (Some(q), Some(b)) = (tx.get_mut(port), out.get_mut(port)) else {
        extra.tx_full += 1;
        return;
    };
    if b.is_full() {
        flush(q, b, extra);
    }
    let _ = b.push(m);
}

#[inline]
fn flush(tx: &mut TxQueue, b: &mut MbufBurst, extra: &mut Extra) {
    if b.is_empty() {
        return;
    }
    let bytes: u64 = b.as_slice().iter().map(|m| u64::from(m.pkt_len())).sum();
    let sent = tx.tx_burst(b);
    if b.is_empty() {
        extra.tx_bytes += bytes;
    } else {
        let left: u64 = b.as_slice().iter().map(|m| u64::from(m.pkt_len())).sum();
        extra.tx_bytes += bytes - left;
    }
    extra.tx_packets += sent as u64;
    extra.tx_full += b.clear() as u64;
}

/// Copies the pipeline's counters into the shared worker block (single writer, `Relaxed`).
fn publish_counters(w: &WorkerSetup, extra: &Extra) {
    let block = w.tables.block();
    let c = w.pipeline.counters();
    block.rx_packets.store(c.rx_packets, Ordering::Relaxed);
    block.rx_bytes.store(c.rx_bytes, Ordering::Relaxed);
    block.tx_packets.store(extra.tx_packets, Ordering::Relaxed);
    block.tx_bytes.store(extra.tx_bytes, Ordering::Relaxed);
    let ct = w.pipeline.conntrack();
    block
        .conntrack_entries
        .store(ct.len() as u64, Ordering::Relaxed);
    block
        .conntrack_capacity
        .store(ct.capacity() as u64, Ordering::Relaxed);
    for (slot, reason) in block.drops.iter().zip(DropReason::ALL) {
        let worker_side = match reason {
            DropReason::TxFull => extra.tx_full + extra.handoff_full,
            DropReason::NoExceptionPort => extra.no_exception_port,
            _ => 0,
        };
        slot.store(c.drops_for(reason) + worker_side, Ordering::Relaxed);
    }
}
