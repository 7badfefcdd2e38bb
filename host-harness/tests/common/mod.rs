//! Helpers shared by the real-Envoy integration tests.

/// Skips the calling test (printing SKIP) when no Envoy binary is found.
/// (Not every test crate that includes this module calls it.)
#[allow(unused_macros)]
macro_rules! require_envoy {
    () => {
        if host_harness::envoy::envoy_binary().is_none() {
            eprintln!("SKIP: envoy not on PATH (set ENVOY_BIN to run the real-Envoy tests)");
            return;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use require_envoy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// The release filter, built now (a no-op when it is up to date), so a test
/// never runs a stale `.wasm`.
pub fn wasm() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "--profile",
            "wasm",
            "-p",
            "locality-failover",
            "--target",
            "wasm32-wasip1",
        ])
        .current_dir(&root)
        .status()
        .expect("cargo build");
    assert!(status.success(), "building the filter failed");
    root.join("target/wasm32-wasip1/wasm/locality_failover.wasm")
}

/// The guide's locality labels for a zone: `us-east-1*` is `net1`, the rest `net2`.
pub fn labels(zone: &str) -> BTreeMap<String, String> {
    let region = &zone[..zone.len() - 1];
    let network = if region == "us-east-1" {
        "net1"
    } else {
        "net2"
    };
    host_harness::fixtures::guide::labels(network, region, zone)
}
