//! Generates DPDK bindings with bindgen and builds the C shim, both with the exact compiler
//! flags `pkg-config --cflags libdpdk` prints (it carries `-include rte_config.h` and
//! `-march=corei7`, which the `pkg-config` crate drops; without `-march` the shim fails to build
//! in `rte_memcpy`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// DPDK releases this crate is written and tested against (the LTS in Debian 12).
const SUPPORTED: &[&str] = &["22.11"];

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => panic!(
            "libdpdk not found by pkg-config ({e}).\n\
             Install Debian's DPDK development package: apt-get install libdpdk-dev pkg-config\n\
             (ci/test.sh does this for you)."
        ),
    };
    let release = lib.version.split('.').take(2).collect::<Vec<_>>().join(".");
    if !SUPPORTED.contains(&release.as_str()) {
        println!(
            "cargo:warning=DPDK {} is not a tested release (supported: {:?}); bindings may differ",
            lib.version, SUPPORTED
        );
    }
    println!("cargo:rustc-env=SLUICE_DPDK_VERSION={}", lib.version);

    // Driver libraries are not in `pkg-config --libs libdpdk` (the EAL dlopens them as
    // plugins), but the wrapper calls two driver APIs directly: hot-plugging virtual devices
    // (`rte_vdev_init`) and building ports from rings (`rte_eth_from_rings`).
    for driver in ["rte_bus_vdev", "rte_net_ring"] {
        println!("cargo:rustc-link-lib=dylib={driver}");
    }

    let cflags = raw_cflags();

    cc::Build::new()
        .file("src/shim.c")
        .flags(&cflags)
        .flag("-DALLOW_EXPERIMENTAL_API")
        .flag("-O3")
        .flag("-Wno-unused-parameter")
        .warnings(true)
        .compile("sluice_shim");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&cflags)
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .allowlist_function("rte_.*")
        .allowlist_function("sluice_rte_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("rte_.*")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .default_enum_style(bindgen::EnumVariation::ModuleConsts)
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on wrapper.h; is libclang-common-14-dev installed?");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");
}

/// The raw `pkg-config --cflags libdpdk` tokens.
fn raw_cflags() -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("run pkg-config");
    assert!(out.status.success(), "pkg-config --cflags libdpdk failed");
    let text = String::from_utf8(out.stdout).expect("pkg-config output is UTF-8");
    let mut flags = Vec::new();
    let mut tokens = text.split_whitespace();
    while let Some(t) = tokens.next() {
        if t == "-include" {
            if let Some(file) = tokens.next() {
                flags.push("-include".to_owned());
                flags.push(file.to_owned());
            }
        } else {
            flags.push(t.to_owned());
        }
    }
    flags
}
