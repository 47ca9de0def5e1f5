//! Sluice's gRPC API: the `.proto` files under `proto/` and the tonic/prost code generated from
//! them.
//!
//! # Contract
//!
//! - **Versioned by package.** Each protobuf package is one Rust module: `sluice.v1` is [`v1`].
//!   Within a package, changes are additive only (new fields, methods, enum values; never a
//!   renumbered tag or a changed type). A breaking change goes into a new package, `sluice.v2`,
//!   served beside `v1` until clients have moved.
//! - **The server is `sluice-control` and the client is `sluicectl`.** The server implements
//!   [`v1::control_server::Control`] and serves it through [`v1::control_server::ControlServer`];
//!   clients use [`v1::control_client::ControlClient`].
//! - **Reflection.** [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set of every file here,
//!   source comments included, for `tonic_reflection::server::Builder::configure()
//!   .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)`, so `grpcurl` works without the
//!   `.proto` files.
//!
//! # Generated code is checked in
//!
//! `src/gen/` holds the output of protox (a pure-Rust protobuf compiler) and tonic-prost-build.
//! It is committed, not produced by a build script, so building this crate needs neither `protoc`
//! nor protox, and every API change shows up as a reviewable diff of the generated code.
//! `tests/bootstrap.rs` regenerates it and fails when it differs. After editing a `.proto` file,
//! rewrite it with:
//!
//! ```text
//! SLUICE_BLESS=1 cargo test -p sluice-proto --test bootstrap
//! ```
//!
//! and commit the `.proto` change together with `src/gen/`. Never edit `src/gen/` by hand.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// Package `sluice.v1` (`proto/sluice/v1/sluice.proto`): messages, enums, the `Control` client
/// ([`v1::control_client`]) and server ([`v1::control_server`]).
///
/// Note that the message [`v1::Status`] is the daemon's status, not [`tonic::Status`] (the RPC
/// error); import one of them under another name where both are needed.
// Generated code: fields without a comment in the `.proto` have no doc. The clippy allows are the
// pedantic lints tonic's output trips, listed one by one (not `clippy::pedantic`) so that the
// workspace's cast lints still apply here; they are off in the workspace today and are allowed
// only so that turning pedantic on later does not fail on code we do not write.
#[allow(
    missing_docs,
    clippy::default_trait_access,
    clippy::doc_markdown,
    clippy::missing_errors_doc,
    clippy::must_use_candidate,
    clippy::too_many_lines
)]
pub mod v1 {
    include!("gen/sluice.v1.rs");
}

/// The encoded `google.protobuf.FileDescriptorSet` of every `.proto` file in this crate, for
/// server reflection (`tonic_reflection`). Generated together with [`v1`].
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/file_descriptor_set.bin");

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_types::FileDescriptorSet;

    use super::FILE_DESCRIPTOR_SET;

    #[test]
    fn descriptor_set_holds_the_control_service() {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        let file = set
            .file
            .iter()
            .find(|f| f.name() == "sluice/v1/sluice.proto")
            .expect("sluice/v1/sluice.proto is in the set");
        assert_eq!(file.package(), "sluice.v1");
        let control = file
            .service
            .iter()
            .find(|s| s.name() == "Control")
            .expect("service sluice.v1.Control");
        let methods: Vec<(&str, bool)> = control
            .method
            .iter()
            .map(|m| (m.name(), m.server_streaming()))
            .collect();
        assert_eq!(
            methods,
            [
                ("GetStatus", false),
                ("ListServices", false),
                ("GetService", false),
                ("SetWeight", false),
                ("Drain", false),
                ("Undrain", false),
                ("WatchEvents", true),
                ("ListPeers", false),
                ("DrainNode", false),
            ]
        );
        // Source info is kept so that reflection clients see the comments.
        assert!(file.source_code_info.is_some());
    }

    #[test]
    fn service_name_matches_the_descriptor() {
        assert_eq!(super::v1::control_server::SERVICE_NAME, "sluice.v1.Control");
    }

    #[test]
    fn reflection_accepts_the_descriptor_set() {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .with_service_name(super::v1::control_server::SERVICE_NAME)
            .build_v1()
            .expect("reflection service builds");
    }
}
