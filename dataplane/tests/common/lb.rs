//! The LB node for end-to-end tests: the table region (the test is control) and a real
//! `sluice-dataplane` process in the testbed's LB namespace.
#![allow(dead_code)]

use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sluice_dataplane::maglev::{MaglevBackend, TableSize, build};
use sluice_dataplane::tables::{
    Affinity, Backend, BackendId, BackendState, Capacity, Generation, Mode, Proto, ServiceId,
    ServiceKey, ServiceSpec, ServiceUpdate, Tick, Writer, WriterOptions,
};
use sluice_hugepages::Backing;
use sluice_testbed::{OneArm, Proc, addr, dataplane_test_config};

/// The service port.
pub const PORT: u16 = 8080;

/// The LB node: its table region (we are control) and its dataplane process.
pub struct Lb {
    pub writer: Writer,
    pub region: String,
    config: String,
    pub dataplane: Proc,
    pub start: Instant,
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.dataplane.kill();
        let _ = std::fs::remove_file(&self.config);
        let _ = Writer::remove(&self.region);
    }
}

impl Lb {
    pub fn start(tb: &OneArm, tag: &str) -> Lb {
        Lb::start_with(tb, tag, None)
    }

    /// [`Lb::start`], with an `[exception] device = …` (a `net_tap` devargs string) when
    /// `exception` is given.
    pub fn start_with(tb: &OneArm, tag: &str, exception: Option<&str>) -> Lb {
        let pid = std::process::id();
        let region = format!("e2e-{tag}-{pid}");
        let _ = Writer::remove(&region);
        let cap = Capacity {
            max_services: 16,
            max_workers: 4,
            dir_slots: 4,
            arena_bytes: 4 << 20,
        };
        let writer =
            Writer::create(&region, cap, Backing::Shm, WriterOptions::default()).expect("region");
        let config = format!("/tmp/sluice-e2e-{tag}-{pid}.toml");
        let (dataplane, _) = spawn_dataplane_with(tb, &region, &config, exception);
        Lb {
            writer,
            region,
            config,
            dataplane,
            start: Instant::now(),
        }
    }

    /// The workers' counters as text (for failure messages).
    pub fn status(&mut self) -> String {
        let now = Tick::from_duration(self.start.elapsed());
        let mut s = String::new();
        for w in self.writer.workers(now) {
            let c = w.counters;
            s += &format!(
                "worker {} {:?} ack {:?} rx {} tx {} ct {}/{} drops {:?}\n",
                w.index,
                w.state,
                w.ack,
                c.rx_packets,
                c.tx_packets,
                c.conntrack_entries,
                c.conntrack_capacity,
                c.drops
            );
        }
        s
    }

    /// Publishes one service and waits until every worker acked it.
    pub fn publish(&mut self, id: u32, vip: &str, mode: Mode, backends: &[usize]) -> Generation {
        self.publish_with(id, vip, mode, Affinity::None, backends)
    }

    /// [`Lb::publish`] with a session affinity.
    pub fn publish_with(
        &mut self,
        id: u32,
        vip: &str,
        mode: Mode,
        affinity: Affinity,
        backends: &[usize],
    ) -> Generation {
        let generation = publish_service_with(&mut self.writer, id, vip, mode, affinity, backends);
        let start = self.start;
        self.writer
            .wait_acked(generation, Duration::from_secs(10), || {
                Tick::from_duration(start.elapsed())
            })
            .expect("dataplane acked the tables");
        generation
    }
}

/// Publishes service `id` at `vip:PORT`/TCP in `mode` over testbed backends `backends`
/// (0-based), without waiting for acks.
pub fn publish_service(
    writer: &mut Writer,
    id: u32,
    vip: &str,
    mode: Mode,
    backends: &[usize],
) -> Generation {
    publish_service_with(writer, id, vip, mode, Affinity::None, backends)
}

/// [`publish_service`] with a session affinity.
pub fn publish_service_with(
    writer: &mut Writer,
    id: u32,
    vip: &str,
    mode: Mode,
    affinity: Affinity,
    backends: &[usize],
) -> Generation {
    let vip: IpAddr = vip.parse().expect("vip");
    let bs: Vec<Backend> = backends
        .iter()
        .map(|&i| {
            let ip: IpAddr = if vip.is_ipv4() {
                addr::backend4(i).parse().expect("ip")
            } else {
                addr::backend6(i).parse().expect("ip")
            };
            Backend {
                id: BackendId(u32::try_from(i).expect("small") + 1),
                addr: ip,
                port: 0,
                mac: Some(addr::mac(addr::backend_host(i))),
                next_hop: None,
                weight: 1,
                state: BackendState::Active,
            }
        })
        .collect();
    let names: Vec<String> = bs.iter().map(|b| format!("backend-{}", b.id.0)).collect();
    let mb: Vec<MaglevBackend<'_>> = names.iter().map(|n| MaglevBackend::new(n, 1)).collect();
    let table = build(TableSize::DEFAULT, &mb).expect("maglev");
    let spec = ServiceSpec {
        key: ServiceKey::new(vip, PORT, Proto::Tcp),
        id: ServiceId(id),
        mode,
        affinity,
        backends: &bs,
        table: &table,
    };
    writer
        .publish(&[ServiceUpdate::Upsert(spec)])
        .expect("publish")
        .generation
}

/// Writes a dataplane config for the testbed's LB node using table region `region`, starts
/// `sluice-dataplane` in the LB namespace and waits for its `ready` line (returned).
pub fn spawn_dataplane(tb: &OneArm, region: &str, config: &str) -> (Proc, String) {
    spawn_dataplane_with(tb, region, config, None)
}

/// [`spawn_dataplane`], with an exception port: `exception` is the `[exception] device`
/// devargs (e.g. `net_tap0,iface=slhost`); the tap appears in the LB namespace.
pub fn spawn_dataplane_with(
    tb: &OneArm,
    region: &str,
    config: &str,
    exception: Option<&str>,
) -> (Proc, String) {
    std::fs::write(config, dataplane_test_config(region, exception)).expect("config");
    let mut cmd = tb.lb.command(env!("CARGO_BIN_EXE_sluice-dataplane"));
    cmd.args(["--config", config]).stderr(Stdio::inherit());
    Proc::spawn_ready(
        "dataplane",
        &mut cmd,
        "sluice-dataplane ready",
        Duration::from_secs(60),
    )
    .expect("dataplane ready")
}
