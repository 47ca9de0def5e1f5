//! One way to turn DPDK return codes into `Result`.

use std::ffi::CStr;
use std::fmt;

use sluice_ffi as ffi;

/// An error reported by a DPDK call: the errno it returned (or left in `rte_errno`) and the
/// call's name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DpdkError {
    /// The DPDK function that failed.
    pub call: &'static str,
    /// The positive errno value.
    pub errno: i32,
}

impl DpdkError {
    /// The error for `call` from the thread's current `rte_errno`.
    pub(crate) fn from_rte_errno(call: &'static str) -> Self {
        // SAFETY: reads the calling thread's rte_errno TLS variable; no preconditions.
        let errno = unsafe { ffi::sluice_rte_errno() };
        Self { call, errno }
    }

    /// The error for `call` from a negative-errno return code.
    pub(crate) fn from_ret(call: &'static str, ret: i32) -> Self {
        Self {
            call,
            errno: ret.saturating_abs(),
        }
    }

    /// DPDK's description of the errno.
    pub fn message(&self) -> String {
        // SAFETY: rte_strerror accepts any int and returns a pointer to a static or
        // thread-local NUL-terminated string that stays valid until the next call on this
        // thread; it is copied out before returning.
        let msg = unsafe { CStr::from_ptr(ffi::rte_strerror(self.errno)) };
        msg.to_string_lossy().into_owned()
    }
}

impl fmt::Debug for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (errno {})",
            self.call,
            self.message(),
            self.errno
        )
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for DpdkError {}

/// Converts DPDK's C return conventions into `Result`.
pub(crate) trait ToResult {
    /// The success value.
    type Ok;
    /// `Ok` unless the value signals failure.
    fn to_result(self, call: &'static str) -> Result<Self::Ok, DpdkError>;
}

impl ToResult for i32 {
    type Ok = u32;
    /// Negative = `-errno` (or `-1` with `rte_errno` set); non-negative = success.
    fn to_result(self, call: &'static str) -> Result<u32, DpdkError> {
        match u32::try_from(self) {
            Ok(v) => Ok(v),
            Err(_) if self == -1 => {
                let e = DpdkError::from_rte_errno(call);
                // Some calls return -1 without setting rte_errno; report EPERM-ish honestly.
                Err(if e.errno == 0 {
                    DpdkError::from_ret(call, 1)
                } else {
                    e
                })
            }
            Err(_) => Err(DpdkError::from_ret(call, self)),
        }
    }
}

impl<T> ToResult for *mut T {
    type Ok = std::ptr::NonNull<T>;
    /// NULL = failure with `rte_errno` set.
    fn to_result(self, call: &'static str) -> Result<Self::Ok, DpdkError> {
        std::ptr::NonNull::new(self).ok_or_else(|| DpdkError::from_rte_errno(call))
    }
}
