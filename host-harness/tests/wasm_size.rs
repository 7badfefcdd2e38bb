//! The shipped filter stays under 400 KiB (`make build`'s output, after
//! wasm-opt): Istio pulls it into every waypoint, and each worker VM
//! compiles it. Prints `SKIP` and passes when the filter is not built.

use std::path::Path;

/// The limit, exclusive.
const LIMIT: u64 = 400 * 1024;

#[test]
fn the_wasm_is_under_400_kib() {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/locality_failover.wasm");
    let Ok(meta) = std::fs::metadata(&wasm) else {
        eprintln!("SKIP: {} is not built (make build)", wasm.display());
        return;
    };
    assert!(
        meta.len() < LIMIT,
        "{} is {} bytes ({:.1} KiB): the limit is 400 KiB",
        wasm.display(),
        meta.len(),
        meta.len() as f64 / 1024.0
    );
}
