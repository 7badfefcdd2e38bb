//! 1. Envoy: CPU per request and latency of (a), (b), (c) and the floor.

use std::path::{Path, PathBuf};

use crate::envoy_config::*;
use crate::measure::*;
use crate::report::*;
use crate::upstream::*;
use host_harness::envoy::{EnvoyProcess, FilterModeConfig, Layout, Steering, WasmFilter};
use serde_json::{json, Value};

/// (c) must have steered every request to priority 0, without host errors.
pub(crate) fn check_filter_stats(name: &str, envoy: &EnvoyProcess) -> Result<(), String> {
    if !name.starts_with(Variant::Filter.short()) {
        return Ok(());
    }
    let stats = envoy.stats_with_prefix("wasmcustom.locality_failover");
    let p0 = stats
        .get("wasmcustom.locality_failover.requests.priority_0")
        .copied()
        .unwrap_or(0);
    let total: u64 = stats
        .iter()
        .filter(|(k, _)| k.contains("requests.priority_"))
        .map(|(_, v)| *v)
        .sum();
    let errs = stats
        .get("wasmcustom.locality_failover.host_errors")
        .copied()
        .unwrap_or(0);
    progress(&format!(
        "filter stats: {total} steered, {p0} to P0, {errs} host errors"
    ));
    if total == 0 || p0 != total || errs != 0 {
        return Err(format!("the filter did not steer as expected: {stats:?}"));
    }
    Ok(())
}

pub(crate) fn bench_envoy(
    filter_wasm: &Path,
    noop_wasm: &Path,
    seconds: u32,
    repeats: usize,
    only: Option<u32>,
    compare: &[PathBuf],
    floor: Option<&Path>,
) -> Result<(), String> {
    let work = host_harness::envoy::TempDir::new("bench").map_err(|e| e.to_string())?;
    let tck = clk_tck();
    for p in envoy_phases(seconds, repeats)
        .iter()
        .filter(|p| only.is_none_or(|c| c == p.concurrency))
    {
        let upstream = UpstreamProcess::start(4, p.client_cpus.as_deref())?;
        let variants = [Variant::Native, Variant::Noop, Variant::Filter];
        let mut configs = Vec::new();
        for v in variants {
            let layout = Layout::new(
                work.path()
                    .join(format!("c{}-{}", p.concurrency, v.short())),
            );
            let generated = generate(v, &upstream.addrs, &layout, filter_wasm, noop_wasm)?;
            configs.push((v.short().to_string(), generated, layout));
        }
        // Other builds of the filter, measured in the same rounds (A/B).
        for (k, other) in compare.iter().enumerate() {
            let name = format!("c{}", k + 2);
            let layout = Layout::new(work.path().join(format!("c{}-{name}", p.concurrency)));
            let generated = generate(Variant::Filter, &upstream.addrs, &layout, other, noop_wasm)?;
            configs.push((name, generated, layout));
        }
        // The floor of any override-host filter: the probe writes a fixed
        // override-host header (P0, P1, P2) on (c)'s cluster, nothing else.
        if let Some(probe) = floor {
            let layout = Layout::new(work.path().join(format!("c{}-floor", p.concurrency)));
            let mut cfg =
                FilterModeConfig::new(Steering::override_host(), guide_endpoints(&upstream.addrs));
            cfg.node = guide_node();
            let value: Vec<String> = upstream
                .addrs
                .iter()
                .take(3)
                .map(|a| a.to_string())
                .collect();
            cfg.wasm = Some(WasmFilter {
                root_id: "probe".into(),
                vm_id: "probe".into(),
                ..WasmFilter::new(
                    probe,
                    format!(
                        "op=header_set n=1 phase=request arg=x-locality-failover-hosts val={}",
                        value.join(",")
                    ),
                )
            });
            let mut generated = cfg.generate(&layout);
            strip_access_logs(&mut generated.bootstrap);
            configs.push(("floor".into(), generated, layout));
            // The same without the header (the override-host policy's
            // round-robin fallback), and with a plain ROUND_ROBIN cluster.
            for name in ["floor-fallback", "floor-rr"] {
                let layout = Layout::new(work.path().join(format!("c{}-{name}", p.concurrency)));
                cfg.wasm = Some(WasmFilter {
                    root_id: "probe".into(),
                    vm_id: "probe".into(),
                    ..WasmFilter::new(probe, "op=none n=0")
                });
                let mut generated = cfg.generate(&layout);
                strip_access_logs(&mut generated.bootstrap);
                if name == "floor-rr" {
                    if let Some(Value::Object(c)) =
                        generated.clusters.as_mut().and_then(|c| c.first_mut())
                    {
                        c.remove("load_balancing_policy");
                        c.insert("lb_policy".into(), json!("ROUND_ROBIN"));
                    }
                }
                configs.push((name.into(), generated, layout));
            }
        }
        let results = run_rounds(p, work.path(), configs, tck, &check_filter_stats)?;
        let pin_note = match &p.envoy_cpus {
            Some(c) => format!(
                "Envoy on CPU {c}, wrk+upstream on CPU {}",
                p.client_cpus.as_deref().unwrap_or("?")
            ),
            None => "unpinned".into(),
        };
        for v in variants {
            let ms = results.get(v.short()).cloned().unwrap_or_default();
            let reqs: u64 = ms.iter().map(|m| m.requests).sum();
            let errs: u64 = ms.iter().map(|m| m.errors).sum();
            row(
                "1",
                &format!("--concurrency {}: {}", p.concurrency, v.label()),
                &format!(
                    "{:.2} µs CPU/req, p50 {:.0} µs, p99 {:.0} µs, {:.0} req/s ({} requests{}, median of {})",
                    med(&results, v.short(), |m| m.cpu_us_per_req),
                    med(&results, v.short(), |m| m.p50_us),
                    med(&results, v.short(), |m| m.p99_us),
                    med(&results, v.short(), |m| m.rps),
                    reqs,
                    if errs > 0 { format!(", {errs} errors") } else { String::new() },
                    p.repeats
                ),
                "",
                if errs > 0 { "errors" } else { "" },
            );
        }
        let cpu = |v: &str| med(&results, v, |m| m.cpu_us_per_req);
        let cb = cpu("c") / cpu("b");
        let ca = cpu("c") / cpu("a");
        let p99 = med(&results, "c", |m| m.p99_us) / med(&results, "a", |m| m.p99_us);
        let conf = format!(
            "--concurrency {}, wrk -t{} -c{} -d{}s x{}, {pin_note}",
            p.concurrency, p.wrk_threads, p.connections, p.seconds, p.repeats
        );
        row(
            "1",
            &format!("CPU/req (b)/(a): the cost of any Rust wasm filter [{conf}]"),
            &format!("{:.3}x", cpu("b") / cpu("a")),
            "",
            "",
        );
        row(
            "1",
            &format!("CPU/req (c)/(b) [{conf}]"),
            &format!("{cb:.3}x"),
            "<= 1.10x",
            verdict(cb <= 1.10),
        );
        row(
            "1",
            &format!("CPU/req (c)/(a) [{conf}]"),
            &format!("{ca:.3}x"),
            "<= 1.35x",
            verdict(ca <= 1.35),
        );
        row(
            "1",
            &format!("p99 (c)/(a) [{conf}]"),
            &format!("{p99:.3}x"),
            "<= 1.2x",
            verdict(p99 <= 1.2),
        );
        if floor.is_some() {
            let f = cpu("floor");
            row(
                "1",
                &format!("--concurrency {}: floor: fixed override-host header from a no-op filter on (c)'s cluster", p.concurrency),
                &format!("{f:.2} µs CPU/req = {:.3}x (b), {:.3}x (a); (c) - floor = {:.2} µs", f / cpu("b"), f / cpu("a"), cpu("c") - f),
                "",
                "",
            );
            for (name, what) in [
                (
                    "floor-fallback",
                    "same cluster, no header (override-host policy, round-robin fallback)",
                ),
                ("floor-rr", "same cluster as plain ROUND_ROBIN, no header"),
            ] {
                let f = cpu(name);
                row(
                    "1",
                    &format!("--concurrency {}: {what}", p.concurrency),
                    &format!("{f:.2} µs CPU/req = {:.3}x (b)", f / cpu("b")),
                    "",
                    "",
                );
            }
        }
        for (k, other) in compare.iter().enumerate() {
            let name = format!("c{}", k + 2);
            let c = cpu(&name);
            row(
                "1",
                &format!("--concurrency {}: compared build {} ({name})", p.concurrency, other.display()),
                &format!(
                    "{c:.2} µs CPU/req = {:.3}x (b), {:.3}x (a), {:.3}x (c); p99 {:.0} µs = {:.3}x (a)",
                    c / cpu("b"),
                    c / cpu("a"),
                    c / cpu("c"),
                    med(&results, &name, |m| m.p99_us),
                    med(&results, &name, |m| m.p99_us) / med(&results, "a", |m| m.p99_us)
                ),
                "",
                "",
            );
        }
        drop(upstream);
    }
    Ok(())
}
