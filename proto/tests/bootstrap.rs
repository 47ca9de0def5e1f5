//! Regenerates `src/gen/` from `proto/` with protox and tonic-prost-build, and fails when the
//! result differs from the checked-in files (linkerd's `spiffe-proto/tests/bootstrap.rs`).
//!
//! The checked-in code means that building `sluice-proto` needs neither `protoc` nor protox, and
//! every API change shows up as a reviewable diff. After editing a `.proto` file, rewrite the
//! checked-in files with:
//!
//! ```text
//! SLUICE_BLESS=1 cargo test -p sluice-proto --test bootstrap
//! ```
//!
//! Output is deterministic: protox and tonic-prost-build format with `prettyplease` (pinned by
//! `Cargo.lock`), not with a `rustfmt` binary, and the descriptor set is prost's encoding of the
//! protox output, which depends only on the `.proto` text.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use prost::Message as _;

/// Name of the encoded `FileDescriptorSet` (all compiled files, with source info so that
/// reflection clients see the comments); `src/lib.rs` embeds it as `FILE_DESCRIPTOR_SET`.
const DESCRIPTOR_SET: &str = "file_descriptor_set.bin";

/// Set to `1` to overwrite `src/gen/` instead of comparing against it.
const BLESS_VAR: &str = "SLUICE_BLESS";

#[test]
fn generated_code_is_up_to_date() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let checked_in = manifest.join("src").join("gen");
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sluice-proto-bootstrap-{}", std::process::id()));
    if scratch.exists() {
        fs::remove_dir_all(&scratch).expect("clear scratch dir");
    }
    fs::create_dir_all(&scratch).expect("create scratch dir");

    generate(&manifest.join("proto"), &scratch);

    let bless = std::env::var_os(BLESS_VAR).is_some_and(|v| v == "1");
    let generated = file_names(&scratch);
    let existing = file_names(&checked_in);
    if bless {
        for stale in existing.difference(&generated) {
            fs::remove_file(checked_in.join(stale)).expect("remove stale generated file");
        }
        for name in &generated {
            fs::copy(scratch.join(name), checked_in.join(name)).expect("copy generated file");
        }
    }
    let mismatched: Vec<&String> = if bless {
        Vec::new()
    } else {
        generated
            .symmetric_difference(&existing)
            .chain(generated.intersection(&existing).filter(|name| {
                fs::read(scratch.join(name)).ok() != fs::read(checked_in.join(name)).ok()
            }))
            .collect()
    };
    fs::remove_dir_all(&scratch).expect("remove scratch dir");
    assert!(
        mismatched.is_empty(),
        "src/gen/ is out of date ({mismatched:?} differ from what proto/ generates); \
         run `{BLESS_VAR}=1 cargo test -p sluice-proto --test bootstrap` and commit the result"
    );
}

/// Compiles every `.proto` under `proto_dir` into `out_dir`: one `<package>.rs` per package, with
/// messages, client and server, plus [`DESCRIPTOR_SET`].
fn generate(proto_dir: &Path, out_dir: &Path) {
    let files = proto_files(proto_dir);
    assert!(
        !files.is_empty(),
        "no .proto files under {}",
        proto_dir.display()
    );
    let fds = protox::compile(&files, [proto_dir]).unwrap_or_else(|e| panic!("protox: {e:?}"));
    fs::write(out_dir.join(DESCRIPTOR_SET), fds.encode_to_vec()).expect("write descriptor set");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .emit_rerun_if_changed(false)
        .out_dir(out_dir)
        .compile_fds(fds)
        .expect("tonic-prost-build");
}

/// Every `.proto` file under `dir`, sorted, relative to `dir`.
fn proto_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).expect("read proto dir") {
            let path = entry.expect("read proto dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "proto") {
                out.push(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("read generated dir")
        .map(|entry| {
            let entry = entry.expect("read generated dir entry");
            entry.file_name().into_string().expect("UTF-8 file name")
        })
        .collect()
}
