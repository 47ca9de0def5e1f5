//! A Kubernetes API stand-in for tests (see the crate description).
