//! EAL start-up from a typed config, and per-thread DPDK registration.

use std::collections::HashSet;
use std::ffi::{CString, c_char, c_int};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sluice_ffi as ffi;

use super::error::{DpdkError, ToResult};
use super::port::PortId;

/// Set once `rte_eal_init` has been called: DPDK supports one EAL per process.
static STARTED: AtomicBool = AtomicBool::new(false);
/// Set when a mempool had to be leaked because mbufs were still out: then `rte_eal_cleanup`
/// must not run either, since it would unmap memory those mbufs live in.
pub(crate) static LEAKED: AtomicBool = AtomicBool::new(false);

/// Where the EAL gets its memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Memory {
    /// Hugepages from a mounted hugetlbfs (the fast path: 4 KiB pages halve the rate). `mb`
    /// caps the memory preallocated (`-m`); `None` lets the EAL grow on demand.
    Hugepages {
        /// Megabytes to preallocate, or `None`.
        mb: Option<u32>,
    },
    /// Ordinary 4 KiB pages (`--no-huge -m mb`): works anywhere, about half the speed.
    NoHuge {
        /// Megabytes of memory (the EAL's default of 64 is too small for a 16k-mbuf pool).
        mb: u32,
    },
}

/// Everything needed to start the EAL. [`EalConfig::to_eal_args`] turns it into argv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EalConfig {
    /// `argv[0]`, shown in DPDK's logs. Default `sluice`.
    pub app_name: String,
    /// The main lcore (`-l N`). Workers are std threads pinned separately, so the EAL needs
    /// only this one. Default 0.
    pub main_lcore: u32,
    /// Memory source. Default: 256 MB of ordinary pages.
    pub memory: Memory,
    /// `--file-prefix` for the runtime directory. `None`: `--in-memory` with hugepages, or a
    /// per-process prefix with ordinary pages. Either way no hugepage file outlives the process.
    pub file_prefix: Option<String>,
    /// Virtual devices (`--vdev`), e.g. `net_ring0`, `net_af_packet0,iface=veth0`.
    pub vdevs: Vec<String>,
    /// PCI addresses the EAL may take (`-a`). Empty (the default) means `--no-pci`.
    pub pci_allow: Vec<String>,
    /// `--log-level`, e.g. `*:notice`. Default `*:notice`.
    pub log_level: Option<String>,
    /// Keep DPDK's telemetry socket. Default off (`--no-telemetry`).
    pub telemetry: bool,
    /// Further EAL arguments, appended last. PCI-selection flags are refused here; use
    /// `pci_allow`.
    pub extra_args: Vec<String>,
}

impl Default for EalConfig {
    fn default() -> Self {
        Self {
            app_name: "sluice".to_owned(),
            main_lcore: 0,
            memory: Memory::NoHuge { mb: 256 },
            file_prefix: None,
            vdevs: Vec::new(),
            pci_allow: Vec::new(),
            log_level: Some("*:notice".to_owned()),
            telemetry: false,
            extra_args: Vec::new(),
        }
    }
}

/// Flags that select PCI devices; only `pci_allow` may do that.
const PCI_FLAGS: &[&str] = &[
    "-a",
    "--allow",
    "-b",
    "--block",
    "-w",
    "--pci-whitelist",
    "--pci-blacklist",
    "--no-pci",
];

impl EalConfig {
    /// Checks the config without touching DPDK.
    ///
    /// # Errors
    /// [`EalError::InvalidConfig`] naming the field and the reason.
    pub fn validate(&self) -> Result<(), EalError> {
        let bad = |field: &'static str, reason: String| EalError::InvalidConfig { field, reason };
        if self.app_name.is_empty() {
            return Err(bad("app_name", "must not be empty".into()));
        }
        if self.main_lcore >= ffi::RTE_MAX_LCORE {
            return Err(bad(
                "main_lcore",
                format!(
                    "{} is not below RTE_MAX_LCORE ({})",
                    self.main_lcore,
                    ffi::RTE_MAX_LCORE
                ),
            ));
        }
        if let Memory::NoHuge { mb } = self.memory
            && mb < 64
        {
            return Err(bad(
                "memory",
                format!("{mb} MB is below the 64 MB the EAL needs"),
            ));
        }
        for a in &self.pci_allow {
            if a.is_empty() || a.contains(char::is_whitespace) {
                return Err(bad("pci_allow", format!("{a:?} is not a PCI address")));
            }
        }
        for a in &self.extra_args {
            let flag = a.split('=').next().unwrap_or_default();
            if PCI_FLAGS.contains(&flag) {
                return Err(bad(
                    "extra_args",
                    format!("{a:?} selects PCI devices; use pci_allow"),
                ));
            }
        }
        for (field, list) in [("vdevs", &self.vdevs), ("extra_args", &self.extra_args)] {
            if list.iter().any(|s| s.contains('\0')) {
                return Err(bad(field, "contains a NUL byte".into()));
            }
        }
        Ok(())
    }

    /// The EAL argv (including `argv[0]`). Pure: unit-tested without DPDK.
    ///
    /// Always contains `--no-pci` unless `pci_allow` is non-empty, in which case it contains one
    /// `-a ADDR` per entry instead.
    pub fn to_eal_args(&self) -> Vec<String> {
        let mut args = vec![
            self.app_name.clone(),
            "-l".into(),
            self.main_lcore.to_string(),
        ];
        match &self.memory {
            Memory::Hugepages { mb } => {
                if let Some(mb) = mb {
                    args.extend(["-m".into(), mb.to_string()]);
                }
                match &self.file_prefix {
                    None => args.push("--in-memory".into()),
                    Some(p) => {
                        args.extend(["--file-prefix".into(), p.clone(), "--huge-unlink".into()])
                    }
                }
            }
            Memory::NoHuge { mb } => {
                // `--in-memory` is incompatible with `--no-huge` (legacy memory mode), so use a
                // private prefix and no shared config files.
                let prefix = self
                    .file_prefix
                    .clone()
                    .unwrap_or_else(|| format!("sluice-{}", std::process::id()));
                args.extend([
                    "--no-huge".into(),
                    "-m".into(),
                    mb.to_string(),
                    "--no-shconf".into(),
                    "--file-prefix".into(),
                    prefix,
                ]);
            }
        }
        if self.pci_allow.is_empty() {
            args.push("--no-pci".into());
        } else {
            for a in &self.pci_allow {
                args.extend(["-a".into(), a.clone()]);
            }
        }
        for v in &self.vdevs {
            args.extend(["--vdev".into(), v.clone()]);
        }
        if !self.telemetry {
            args.push("--no-telemetry".into());
        }
        if let Some(level) = &self.log_level {
            args.extend(["--log-level".into(), level.clone()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// Why the EAL could not start.
#[derive(Debug, thiserror::Error)]
pub enum EalError {
    /// A config field is invalid.
    #[error("invalid EAL config: {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// `rte_eal_init` already ran in this process; DPDK allows it once.
    #[error("the EAL was already started in this process (DPDK allows one start per process)")]
    AlreadyStarted,
    /// `rte_eal_init` failed.
    #[error("rte_eal_init failed with args {args:?}")]
    Init {
        /// The argv passed.
        args: Vec<String>,
        /// DPDK's error.
        #[source]
        source: DpdkError,
    },
}

/// The running EAL: a cheap, clonable handle. `rte_eal_cleanup` runs when the last handle (held
/// by the caller, every mempool and every port) is dropped.
#[derive(Clone)]
pub struct Eal {
    inner: Arc<EalInner>,
}

struct EalInner {
    args: Vec<String>,
    /// Virtual devices created after start-up with [`Eal::create_vdev`], removed when their
    /// port closes.
    hotplugged: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Eal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eal")
            .field("args", &self.inner.args)
            .finish()
    }
}

impl Eal {
    /// Starts the EAL.
    ///
    /// # Errors
    /// Invalid config, a second start in the same process, or DPDK's own failure.
    pub fn init(config: &EalConfig) -> Result<Eal, EalError> {
        config.validate()?;
        let args = config.to_eal_args();
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(EalError::AlreadyStarted);
        }
        // DPDK may keep pointers into argv for the life of the process, so the strings are
        // leaked on purpose (once per process).
        let mut argv: Vec<*mut c_char> = args
            .iter()
            .map(|a| {
                CString::new(a.as_str())
                    .expect("validated: no NUL")
                    .into_raw()
            })
            .collect();
        let argc = c_int::try_from(argv.len()).expect("argv fits in c_int");
        let saved = saved_affinity();
        // SAFETY: argv holds argc valid NUL-terminated strings that are never freed; this is
        // the only call in the process (guarded by STARTED).
        let ret = unsafe { ffi::rte_eal_init(argc, argv.as_mut_ptr()) };
        restore_affinity(saved.as_ref());
        std::mem::forget(argv);
        if ret < 0 {
            return Err(EalError::Init {
                args,
                source: DpdkError::from_rte_errno("rte_eal_init"),
            });
        }
        tracing::info!(?args, "EAL started");
        Ok(Eal {
            inner: Arc::new(EalInner {
                args,
                hotplugged: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The argv the EAL was started with.
    pub fn args(&self) -> &[String] {
        &self.inner.args
    }

    /// The port id of an existing ethdev by name (`net_ring0`, `0000:3b:00.0`, …).
    ///
    /// # Errors
    /// `ENODEV` when no port has that name.
    pub fn port_by_name(&self, name: &str) -> Result<PortId, DpdkError> {
        let c = CString::new(name).map_err(|_| DpdkError {
            call: "port_by_name",
            errno: 22,
        })?;
        let mut id = 0u16;
        // SAFETY: `c` is a valid C string and `id` a valid out-pointer for the call's duration.
        let ret = unsafe { ffi::rte_eth_dev_get_port_by_name(c.as_ptr(), &raw mut id) };
        ret.to_result("rte_eth_dev_get_port_by_name")?;
        Ok(PortId(id))
    }

    /// Creates a virtual device after start-up (`net_ring5`, `net_af_packet1,iface=veth0`,
    /// `net_memif0,role=server,socket=/tmp/x.sock`, `net_tap0,iface=sl0`) and returns its port.
    /// The device is removed again when the [`Port`](super::Port) configured on it is dropped.
    ///
    /// # Errors
    /// DPDK's error (unknown driver, bad arguments, interface missing, …).
    pub fn create_vdev(&self, devargs: &str) -> Result<PortId, DpdkError> {
        let (name, args) = devargs.split_once(',').unwrap_or((devargs, ""));
        let einval = DpdkError {
            call: "rte_vdev_init",
            errno: 22,
        };
        let c_name = CString::new(name).map_err(|_| einval)?;
        let c_args = CString::new(args).map_err(|_| einval)?;
        // SAFETY: both are valid C strings for the call's duration; DPDK copies them.
        let ret = unsafe { ffi::rte_vdev_init(c_name.as_ptr(), c_args.as_ptr()) };
        ret.to_result("rte_vdev_init")?;
        let id = self.port_by_name(name)?;
        self.inner
            .hotplugged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned());
        Ok(id)
    }

    /// Removes a device created by [`Eal::create_vdev`]; no-op for other devices.
    pub(crate) fn remove_vdev(&self, name: &str) {
        let owned = self
            .inner
            .hotplugged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if owned && let Ok(c) = CString::new(name) {
            // SAFETY: valid C string; the port on this device was closed by the caller.
            let ret = unsafe { ffi::rte_vdev_uninit(c.as_ptr()) };
            if ret < 0 {
                tracing::warn!(name, ret, "rte_vdev_uninit failed");
            }
        }
    }

    /// The ids of all ports DPDK knows.
    pub fn ports(&self) -> Vec<PortId> {
        (0..u16::try_from(ffi::RTE_MAX_ETHPORTS).unwrap_or(u16::MAX))
            // SAFETY: rte_eth_dev_is_valid_port accepts any port id.
            .filter(|&p| unsafe { ffi::rte_eth_dev_is_valid_port(p) } != 0)
            .map(PortId)
            .collect()
    }
}

impl Drop for EalInner {
    fn drop(&mut self) {
        if LEAKED.load(Ordering::SeqCst) {
            tracing::warn!("skipping rte_eal_cleanup: a mempool with live mbufs was leaked");
            return;
        }
        // SAFETY: every mempool and port holds an `Eal`, so none is alive any more; the EAL was
        // started (this value exists only after a successful init).
        let ret = unsafe { ffi::rte_eal_cleanup() };
        if ret < 0 {
            tracing::warn!(ret, "rte_eal_cleanup failed");
        }
    }
}

fn saved_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain old data; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed; pid 0 = this thread.
    let ret =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) };
    (ret == 0).then_some(set)
}

fn restore_affinity(set: Option<&libc::cpu_set_t>) {
    if let Some(set) = set {
        // SAFETY: `set` is a valid cpu_set_t read by sched_getaffinity; pid 0 = this thread.
        let ret =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
        if ret != 0 {
            tracing::warn!("could not restore CPU affinity after rte_eal_init");
        }
    }
}

/// Registers the calling (non-EAL) thread with DPDK, giving it an lcore id and therefore a
/// per-thread mempool cache. Unregisters when the guard drops. The guard is not `Send`: it
/// belongs to the thread that made it.
///
/// # Errors
/// DPDK's error, e.g. when all `RTE_MAX_LCORE` ids are taken.
pub fn register_thread() -> Result<ThreadRegistration, DpdkError> {
    // SAFETY: no preconditions beyond a started EAL, which a caller holding any io type has;
    // without one DPDK returns an error rather than misbehaving.
    let ret = unsafe { ffi::rte_thread_register() };
    ret.to_result("rte_thread_register")?;
    Ok(ThreadRegistration {
        lcore: lcore_id(),
        _not_send: PhantomData,
    })
}

/// Proof that the current thread is registered with DPDK; see [`register_thread`].
#[derive(Debug)]
pub struct ThreadRegistration {
    lcore: u32,
    _not_send: PhantomData<*const ()>,
}

impl ThreadRegistration {
    /// The lcore id DPDK gave this thread.
    pub fn lcore(&self) -> u32 {
        self.lcore
    }
}

impl Drop for ThreadRegistration {
    fn drop(&mut self) {
        // SAFETY: this thread registered itself (the guard is !Send, so we are on it).
        unsafe { ffi::rte_thread_unregister() };
    }
}

/// The calling thread's lcore id (`u32::MAX` = `LCORE_ID_ANY` for unregistered threads).
pub fn lcore_id() -> u32 {
    // SAFETY: reads a thread-local; no preconditions.
    unsafe { ffi::sluice_rte_lcore_id() }
}

/// The CPU time-stamp counter.
#[inline]
pub fn tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions.
    unsafe { ffi::sluice_rte_rdtsc() }
}

/// TSC ticks per second as measured by the EAL (0 before the EAL starts).
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a global set by rte_eal_init; no preconditions.
    unsafe { ffi::sluice_rte_get_tsc_hz() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pci_by_default() {
        let args = EalConfig::default().to_eal_args();
        assert!(args.contains(&"--no-pci".to_string()), "{args:?}");
        assert!(!args.contains(&"-a".to_string()));
    }

    #[test]
    fn allow_list_replaces_no_pci() {
        let cfg = EalConfig {
            pci_allow: vec!["0000:3b:00.0".into()],
            ..EalConfig::default()
        };
        let args = cfg.to_eal_args();
        assert!(!args.contains(&"--no-pci".to_string()));
        let i = args.iter().position(|a| a == "-a").expect("-a");
        assert_eq!(args[i + 1], "0000:3b:00.0");
    }

    #[test]
    fn hugepages_never_leave_files() {
        let mut cfg = EalConfig {
            memory: Memory::Hugepages { mb: Some(512) },
            ..EalConfig::default()
        };
        assert!(cfg.to_eal_args().contains(&"--in-memory".to_string()));
        cfg.file_prefix = Some("x".into());
        let args = cfg.to_eal_args();
        assert!(args.contains(&"--huge-unlink".to_string()));
        assert!(!args.contains(&"--in-memory".to_string()));
    }

    #[test]
    fn no_huge_uses_private_prefix() {
        let args = EalConfig::default().to_eal_args();
        assert!(args.contains(&"--no-huge".to_string()));
        assert!(!args.contains(&"--in-memory".to_string()));
        assert!(args.contains(&"--file-prefix".to_string()));
    }

    #[test]
    fn pci_flags_in_extra_args_are_refused() {
        for flag in ["-a", "--allow=0000:00:01.0", "-b", "--no-pci"] {
            let cfg = EalConfig {
                extra_args: vec![flag.into()],
                ..EalConfig::default()
            };
            let err = cfg.validate().expect_err(flag);
            assert!(err.to_string().contains("extra_args"), "{err}");
        }
    }

    #[test]
    fn vdevs_and_log_level_are_passed() {
        let cfg = EalConfig {
            vdevs: vec!["net_null0".into()],
            ..EalConfig::default()
        };
        let args = cfg.to_eal_args();
        let i = args.iter().position(|a| a == "--vdev").expect("--vdev");
        assert_eq!(args[i + 1], "net_null0");
        assert!(args.contains(&"--no-telemetry".to_string()));
    }
}
