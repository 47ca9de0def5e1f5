//! The Sluice control daemon (grown by the control-daemon issue).
#![forbid(unsafe_code)]
