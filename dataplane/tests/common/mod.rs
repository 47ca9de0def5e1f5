//! Shared set-up for the DPDK integration tests: one EAL per test process, one small mempool
//! per test.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use sluice_dataplane::io::{Eal, EalConfig, Memory, Mempool, MempoolConfig};

/// The process's EAL (ordinary pages, `--no-pci`), started on first use.
pub fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let cfg = EalConfig {
            app_name: "sluice-test".into(),
            memory: Memory::NoHuge { mb: 512 },
            ..EalConfig::default()
        };
        assert!(cfg.to_eal_args().contains(&"--no-pci".to_string()));
        Eal::init(&cfg).expect("EAL start")
    })
}

/// A fresh mempool with a unique name.
pub fn pool(size: u32) -> Mempool {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!("tp{}", N.fetch_add(1, Ordering::Relaxed));
    let cfg = MempoolConfig {
        size,
        ..MempoolConfig::named(name)
    };
    Mempool::new(eal(), &cfg).expect("mempool")
}

/// Deterministic payload for packet `seq`: 8 bytes of sequence number, then a pattern; the
/// length varies with `seq` between `min` and `min + 255`.
pub fn payload(seq: u64, min: usize, out: &mut Vec<u8>) {
    let len = min + usize::try_from(seq % 256).expect("small");
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    let base = seq.to_le_bytes()[0];
    out.extend((8..len).map(|i| base.wrapping_add(i.to_le_bytes()[0])));
}

pub mod lb;
