//! 4. Memory in a real Envoy: wasm linear memory and RSS.

use crate::BenchError;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::envoy_config::{guide_node, strip_access_logs};
use crate::fixtures::{plugin_config, synthetic_labels};
use crate::measure::rss_kib;
use crate::report::{human_bytes, progress, row, verdict};
use host_harness::envoy::{
    Endpoint as EnvoyEndpoint, EnvoyOptions, EnvoyProcess, FilterModeConfig, Layout, Steering,
    WasmFilter,
};

/// Wasm linear memories of a V8 process: a read-write mapping immediately
/// followed by the inaccessible rest of its (>= 4 GiB) reservation.
/// Returns (size, resident) in bytes for each.
pub(crate) fn wasm_memories(pid: u32) -> Vec<(u64, u64)> {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return vec![];
    };
    struct Map {
        start: u64,
        end: u64,
        perms: String,
        rss_kib: u64,
    }
    let mut maps: Vec<Map> = Vec::new();
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                maps.push(Map {
                    start,
                    end,
                    perms: parts.next().unwrap_or("").to_string(),
                    rss_kib: 0,
                });
                continue;
            }
        }
        if let Some(v) = line.strip_prefix("Rss:") {
            if let Some(m) = maps.last_mut() {
                m.rss_kib = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            }
        }
    }
    let mut out = Vec::new();
    for pair in maps.windows(2) {
        let (rw, guard) = (&pair[0], &pair[1]);
        if rw.perms.starts_with("rw")
            && guard.perms.starts_with("---")
            && rw.end == guard.start
            && (guard.end - rw.start) >= 4 << 30
        {
            out.push((rw.end - rw.start, rw.rss_kib * 1024));
        }
    }
    out
}

/// The VMs' memories as "size (resident size)".
fn memories_text(mems: &[(u64, u64)]) -> String {
    let each: Vec<String> = mems
        .iter()
        .map(|(s, r)| {
            format!(
                "{} (resident {})",
                human_bytes(*s as f64),
                human_bytes(*r as f64)
            )
        })
        .collect();
    each.join(", ")
}

/// `n` endpoints on unused loopback ports, with the synthetic labels.
fn memory_config(n: usize, filter_wasm: Option<&Path>) -> FilterModeConfig {
    let endpoints: Vec<EnvoyEndpoint> = (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([127, 0, 0, 2], 20_000 + i as u16));
            let mut e = EnvoyEndpoint::new(format!("ep-{i}"), addr);
            e.labels = synthetic_labels(i);
            e
        })
        .collect();
    let mut cfg = FilterModeConfig::new(Steering::override_host(), endpoints);
    cfg.node = guide_node();
    if let Some(wasm) = filter_wasm {
        cfg.wasm = Some(WasmFilter::new(
            wasm,
            plugin_config("ROUND_ROBIN").to_string(),
        ));
    }
    cfg
}

/// A few requests (connect failures: nobody listens; the first makes the
/// filter load the inventory), then the filter's inventory update count.
fn poke(envoy: &EnvoyProcess) -> Result<u64, BenchError> {
    let addr = envoy.listener().map_err(|e| e.to_string())?;
    for _ in 0..5 {
        let _ = host_harness::envoy::http_get(addr, "/", &[], Duration::from_secs(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    Ok(envoy
        .stat("wasmcustom.locality_failover.inventory_updates")
        .unwrap_or(0))
}

/// An inventory update (new revision, one weight changed): the old and the
/// new inventory meet in the VM's memory. Returns the memories after it.
fn update_inventory(
    envoy: &EnvoyProcess,
    cfg: &mut FilterModeConfig,
) -> Result<Vec<(u64, u64)>, BenchError> {
    cfg.revision = "2".into();
    if let Some(e) = cfg.endpoints.get_mut(1) {
        e.weight = 2;
    }
    envoy
        .apply_clusters(&cfg.clusters(), Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    // A worker re-reads the inventory's revision at most this often.
    std::thread::sleep(locality_failover::filter::REVISION_REFRESH);
    let updates = poke(envoy)?;
    let after = wasm_memories(envoy.pid());
    progress(&format!(
        "envoy memory: after an inventory update ({updates} updates): wasm memories {}",
        memories_text(&after)
    ));
    if updates < 2 {
        return Err("the filter did not take the inventory update".into());
    }
    Ok(after)
}

pub(crate) fn bench_envoy_memory(filter_wasm: &Path) -> Result<(), BenchError> {
    let work = host_harness::envoy::TempDir::new("bench-mem").map_err(|e| e.to_string())?;
    let mut rss: BTreeMap<(bool, usize), u64> = BTreeMap::new();
    let mut wasm_at_10k = Vec::new();
    for with_filter in [false, true] {
        for n in [10usize, 10_000] {
            let mut cfg = memory_config(n, with_filter.then_some(filter_wasm));
            let layout = Layout::new(work.path().join(format!("m-{with_filter}-{n}")));
            let mut generated = cfg.generate(&layout);
            strip_access_logs(&mut generated.bootstrap);
            let opts = EnvoyOptions {
                concurrency: 1,
                log_level: "error".into(),
                ready_timeout: Duration::from_secs(120),
                ..EnvoyOptions::default()
            };
            let envoy =
                EnvoyProcess::start(&layout, &generated, &opts).map_err(|e| e.to_string())?;
            let loaded = poke(&envoy)?;
            let r = rss_kib(envoy.pid()).unwrap_or(0) * 1024;
            rss.insert((with_filter, n), r);
            progress(&format!(
                "envoy memory: filter={with_filter} n={n}: RSS {}, inventory updates {loaded}, wasm memories {}",
                human_bytes(r as f64),
                memories_text(&wasm_memories(envoy.pid()))
            ));
            if with_filter && n == 10_000 {
                if loaded == 0 {
                    return Err("the filter did not load the 10,000-endpoint inventory".into());
                }
                wasm_at_10k = update_inventory(&envoy, &mut cfg)?;
            }
        }
    }
    report_memory(&wasm_at_10k, &rss);
    Ok(())
}

fn report_memory(wasm_at_10k: &[(u64, u64)], rss: &BTreeMap<(bool, usize), u64>) {
    let largest = wasm_at_10k.iter().map(|(s, _)| *s).max().unwrap_or(0);
    let resident = wasm_at_10k.iter().map(|(_, r)| *r).max().unwrap_or(0);
    row(
        "4",
        "Envoy 1.40: wasm linear memory of the worker VM, 10,000 endpoints, after load + one inventory update (memory.size from /proc/<envoy>/smaps; all VMs listed)",
        &format!(
            "{} (resident {}); VMs: {}",
            human_bytes(largest as f64),
            human_bytes(resident as f64),
            wasm_at_10k.iter().map(|(s, _)| human_bytes(*s as f64)).collect::<Vec<_>>().join(", ")
        ),
        "< 8 MiB",
        verdict(largest > 0 && largest < 8 << 20),
    );
    let d = |f| {
        rss.get(&(f, 10_000)).copied().unwrap_or(0) as f64
            - rss.get(&(f, 10)).copied().unwrap_or(0) as f64
    };
    row(
        "4",
        "Envoy 1.40 RSS 10,000 minus 10 endpoints: with the filter / without (Envoy's own hosts + metadata)",
        &format!("{} / {} (filter's share {})", human_bytes(d(true)), human_bytes(d(false)), human_bytes(d(true) - d(false))),
        "",
        "",
    );
}
