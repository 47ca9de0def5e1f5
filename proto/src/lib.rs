//! Sluice's gRPC API (grown by the control-daemon issue).
#![forbid(unsafe_code)]
