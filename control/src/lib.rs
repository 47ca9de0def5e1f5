//! The Sluice control daemon. This slice owns the static TOML config ([`config`]), the diff
//! and stable ids that turn it into table publications ([`publisher`]), and the task that
//! publishes into the dataplane's shared region and reloads on SIGHUP ([`daemon`]), and the
//! Prometheus endpoint reading the region's counters ([`metrics`]).
//!
//! Guarantee: a config reaches the dataplane only after it validated completely, and only the
//! services that changed are rewritten.
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod metrics;
pub mod publisher;
