//! 4. Native memory of one VM's `FilterRoot`, and the .wasm size.

use std::path::Path;
use std::sync::atomic::Ordering;

use crate::alloc::{count_allocs, LIVE};
use crate::fixtures::plugin_config;
use crate::host::{served, BenchHost};
use crate::report::{human_bytes, progress, row, verdict};
use locality_failover::filter::FilterRoot;

pub(crate) fn bench_memory(wasm: &Path) {
    const N: usize = 10_000;
    let mut host = BenchHost::new(plugin_config("ROUND_ROBIN").to_string().into_bytes());
    host.publish_inventory(N, "1", 0);
    let ((root, after_load), stats) = count_allocs(|| {
        let mut root = FilterRoot::new(7);
        root.on_configure(&mut host);
        let mut after_load = 0isize;
        for i in 0..1000 {
            if let Some(mut state) = root.on_request_headers(&mut host) {
                let first = served(&root, &state);
                host.answer(200, first.as_deref());
                root.on_response_headers(&mut host, Some(&mut state));
                root.on_log(&mut host, &state);
            }
            if i == 0 {
                after_load = LIVE.load(Ordering::Relaxed) as isize;
            }
        }
        (root, after_load)
    });
    let loaded = root.engine("svc").map(|e| e.inventory().len()).unwrap_or(0);
    let _ = after_load;
    progress(&format!(
        "native FilterRoot, {loaded} endpoints: peak {} retained {}",
        stats.peak_bytes, stats.retained_bytes
    ));
    row(
        "4",
        "native heap of one FilterRoot, 10,000 endpoints (64-bit; wasm32 pointers are half): peak / live after 1,000 requests",
        &format!("{} / {}", human_bytes(stats.peak_bytes as f64), human_bytes(stats.retained_bytes as f64)),
        "< 8 MiB",
        verdict(loaded == N && stats.peak_bytes < 8 << 20),
    );
    drop(root);
    match std::fs::metadata(wasm) {
        Ok(m) => {
            let size = m.len() as f64;
            row(
                "4",
                &format!(".wasm size after wasm-opt ({})", wasm.display()),
                &human_bytes(size),
                "< 400 KiB",
                verdict(size < 400.0 * 1024.0),
            );
        }
        Err(e) => row(
            "4",
            ".wasm size after wasm-opt",
            &format!("{}: {e}", wasm.display()),
            "< 400 KiB",
            "MISS",
        ),
    }
}
