//! Kubernetes: MetalLB-shaped CRDs ([`crd`]), manifests ([`manifest`]), address allocation
//! ([`ipam`]).
pub mod crd;
pub mod ipam;
pub mod manifest;
