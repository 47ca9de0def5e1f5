//! The Sluice control daemon: the static TOML config ([`config`]), the runtime state layered
//! over it — operator overrides, health, events ([`state`], [`health`]) — the diff and stable
//! ids that turn it into table publications ([`publisher`]), the task that publishes into the
//! dataplane's shared region ([`daemon`]), the gRPC API and its client ([`api`], [`client`]),
//! and the Prometheus endpoint reading the region's counters ([`metrics`]).
//!
//! Guarantee: a config reaches the dataplane only after it validated completely, and only the
//! services that changed are rewritten.
#![forbid(unsafe_code)]

pub mod api;
pub mod bgp;
pub mod client;
pub mod config;
pub mod daemon;
pub mod health;
pub mod k8s;
pub mod metrics;
pub mod publisher;
pub mod state;
