//! 1. Envoy: CPU per request and latency of (a), (b), (c) and the floor.

use crate::BenchError;
use std::path::{Path, PathBuf};

use std::net::SocketAddr;

use crate::envoy_config::{generate, guide_endpoints, guide_node, strip_access_logs, Variant};
use crate::measure::{clk_tck, Measurement};
use crate::report::{median, progress, row, verdict};
use crate::rounds::{lowest, run_rounds, Config, EnvoyParams, Results};
use crate::upstream::UpstreamProcess;
use host_harness::envoy::{EnvoyProcess, FilterModeConfig, Layout, Steering, WasmFilter};
use serde_json::{json, Value};

/// (c) must have steered every request to priority 0, without host errors.
pub(crate) fn check_filter_stats(name: &str, envoy: &EnvoyProcess) -> Result<(), BenchError> {
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
        return Err(BenchError::from(format!(
            "the filter did not steer as expected: {stats:?}"
        )));
    }
    Ok(())
}

/// What `bench_envoy` measures besides (a), (b), (c).
pub(crate) struct EnvoyBench<'a> {
    pub(crate) filter_wasm: &'a Path,
    pub(crate) noop_wasm: &'a Path,
    /// Other builds of the filter, measured in the same rounds (A/B).
    pub(crate) compare: &'a [PathBuf],
    /// The probe filter, for the floor (a fixed override-host header).
    pub(crate) floor: Option<&'a Path>,
    /// Also the floor's two variants without the header.
    pub(crate) floor_extra: bool,
}

pub(crate) fn bench_envoy(b: &EnvoyBench<'_>, phases: &[EnvoyParams]) -> Result<(), BenchError> {
    let work = host_harness::envoy::TempDir::new("bench").map_err(|e| e.to_string())?;
    let tck = clk_tck();
    for p in phases {
        let upstream = UpstreamProcess::start(4, p.client_cpus.as_deref())?;
        let dir = |name: &str| Layout::new(work.path().join(format!("c{}-{name}", p.concurrency)));
        let mut configs = Vec::new();
        for v in VARIANTS {
            let generated = generate(
                v,
                &upstream.addrs,
                &dir(v.short()),
                b.filter_wasm,
                b.noop_wasm,
            )?;
            configs.push((v.short().to_string(), generated, dir(v.short())));
        }
        for (k, other) in b.compare.iter().enumerate() {
            let name = compare_name(k);
            let generated = generate(
                Variant::Filter,
                &upstream.addrs,
                &dir(&name),
                other,
                b.noop_wasm,
            )?;
            configs.push((name.clone(), generated, dir(&name)));
        }
        if let Some(probe) = b.floor {
            configs.extend(floor_configs(probe, &upstream.addrs, b.floor_extra, &dir));
        }
        let results = run_rounds(p, &configs, tck, &check_filter_stats)?;
        let conf = format!(
            "--concurrency {}, wrk -t{} -c{} -d{}s, {} processes x {} rounds, {}",
            p.concurrency,
            p.wrk_threads,
            p.connections,
            p.seconds,
            p.processes,
            p.repeats,
            match &p.envoy_cpus {
                Some(c) => format!(
                    "Envoy on CPU {c}, wrk+upstream on CPU {}",
                    p.client_cpus.as_deref().unwrap_or("?")
                ),
                None => "unpinned".into(),
            }
        );
        report_steal(p, &results);
        report_variants(p, &results);
        report_ratios(&results, &conf);
        if b.floor.is_some() {
            report_floor(p, &results, b.floor_extra);
        }
        report_compare(p, &results, b.compare);
        drop(upstream);
    }
    Ok(())
}

const VARIANTS: [Variant; 4] = [
    Variant::Native,
    Variant::Noop,
    Variant::Filter,
    Variant::FilterUndeclared,
];

fn compare_name(k: usize) -> String {
    format!("c{}", k + 2)
}

fn cpu(m: &Measurement) -> f64 {
    m.cpu_us_per_req
}

/// The floor of any override-host filter: the probe writes a fixed
/// override-host header (P0, P1, P2) on (c)'s cluster, nothing else; the
/// minimal job: that header alone (no marker header) and the host calls (c)
/// cannot drop (the clock, the response headers in one buffer); with
/// `extra`, the floor without the header (the override-host policy's
/// round-robin fallback) and with a plain ROUND_ROBIN cluster.
fn floor_configs(
    probe: &Path,
    addrs: &[SocketAddr],
    extra: bool,
    dir: &dyn Fn(&str) -> Layout,
) -> Vec<Config> {
    let mut cfg = FilterModeConfig::new(Steering::override_host(), guide_endpoints(addrs));
    cfg.node = guide_node();
    let value: Vec<String> = addrs.iter().take(3).map(|a| a.to_string()).collect();
    let probe_filter = |config: String| WasmFilter {
        root_id: "probe".into(),
        vm_id: "probe".into(),
        ..WasmFilter::new(probe, config)
    };
    cfg.wasm = Some(probe_filter(format!(
        "op=header_set n=1 phase=request arg=x-locality-failover-hosts val={}",
        value.join(",")
    )));
    let mut generated = cfg.generate(&dir("floor"));
    strip_access_logs(&mut generated.bootstrap);
    let mut configs = vec![("floor".to_string(), generated, dir("floor"))];
    cfg.wasm = Some(probe_filter(format!(
        "op=job n=1 phase=request arg=x-locality-failover-hosts val={}",
        value.join(",")
    )));
    let mut generated = cfg.generate(&dir("job"));
    strip_access_logs(&mut generated.bootstrap);
    configs.push(("job".to_string(), generated, dir("job")));
    for name in ["floor-fallback", "floor-rr"].into_iter().filter(|_| extra) {
        cfg.wasm = Some(probe_filter("op=none n=0".into()));
        let mut generated = cfg.generate(&dir(name));
        strip_access_logs(&mut generated.bootstrap);
        if name == "floor-rr" {
            if let Some(Value::Object(c)) = generated.clusters.as_mut().and_then(|c| c.first_mut())
            {
                c.remove("load_balancing_policy");
                c.insert("lb_policy".into(), json!("ROUND_ROBIN"));
            }
        }
        configs.push((name.to_string(), generated, dir(name)));
    }
    configs
}

/// "undisturbed µs; median µs (min-max)" of CPU per request.
fn cpu_text(results: &Results, name: &str) -> String {
    let (lo, hi) = results.range(name, cpu);
    format!(
        "{:.2} µs CPU/req undisturbed; median {:.2} ({lo:.2}-{hi:.2})",
        results.undisturbed(name, cpu),
        results.median(name, cpu)
    )
}

/// How much CPU the hypervisor stole while the samples ran: on a shared VM
/// the noise the ratios carry (a quiet machine shows well under 1 %).
fn report_steal(p: &EnvoyParams, results: &Results) {
    let names: Vec<&str> = VARIANTS.iter().map(|v| v.short()).collect();
    let mut all: Vec<f64> = names
        .iter()
        .flat_map(|n| results.values(n, |m| m.steal))
        .filter(|s| s.is_finite())
        .collect();
    if all.is_empty() {
        return;
    }
    let max = all.iter().copied().fold(0.0, f64::max);
    row(
        "1",
        &format!("--concurrency {}: CPU steal while (a), (b), (c), (c') ran (share of the machine's CPU time, /proc/stat)", p.concurrency),
        &format!("median {:.1} %, max {:.1} % over {} samples", median(&mut all) * 100.0, max * 100.0, all.len()),
        "",
        "",
    );
}

fn report_variants(p: &EnvoyParams, results: &Results) {
    for v in VARIANTS {
        let (reqs, errs) = results.totals(v.short());
        row(
            "1",
            &format!("--concurrency {}: {}", p.concurrency, v.label()),
            &format!(
                "{}, p50 {:.0} µs, p99 {:.0} µs, {:.0} req/s ({reqs} requests{}; median (min-max) of {} processes x {} rounds)",
                cpu_text(results, v.short()),
                results.median(v.short(), |m| m.p50_us),
                results.median(v.short(), |m| m.p99_us),
                results.median(v.short(), |m| m.rps),
                if errs > 0 { format!(", {errs} errors") } else { String::new() },
                p.processes,
                p.repeats
            ),
            "",
            if errs > 0 { "errors" } else { "" },
        );
    }
}

/// `num / den`: the median of the per-round ratios, with their min-max,
/// the per-process-pair range and the ratio of the two medians.
fn ratio_text(results: &Results, num: &str, den: &str) -> (f64, String) {
    let mut rounds = results.round_ratios(num, den, cpu);
    let (lo, hi) = rounds
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
            (lo.min(*r), hi.max(*r))
        });
    let r = median(&mut rounds);
    let of_medians = results.median(num, cpu) / results.median(den, cpu);
    let (plo, phi) = results.process_pair_range(num, den, cpu, median);
    (
        r,
        format!(
            "{r:.3}x (median of {} per-round ratios, range {lo:.3}-{hi:.3}; per process pair {plo:.3}-{phi:.3}; ratio of medians {of_medians:.3}x)",
            rounds.len()
        ),
    )
}

/// `num / den` of the undisturbed costs ([`Results::undisturbed`]), with
/// the per-process-pair range, then the all-rounds view ([`ratio_text`]).
fn undisturbed_text(results: &Results, num: &str, den: &str) -> (f64, String) {
    let (n, d) = (results.undisturbed(num, cpu), results.undisturbed(den, cpu));
    let r = n / d;
    let (lo, hi) = results.process_pair_range(num, den, cpu, lowest);
    let (_, all) = ratio_text(results, num, den);
    (
        r,
        format!(
            "{r:.3}x undisturbed ({n:.2} / {d:.2} µs; per process pair {lo:.3}-{hi:.3}); all rounds: {all}"
        ),
    )
}

fn report_ratios(results: &Results, conf: &str) {
    let (_, ba) = undisturbed_text(results, "b", "a");
    row(
        "1",
        &format!("CPU/req (b)/(a): the cost of any Rust wasm filter [{conf}]"),
        &ba,
        "",
        "",
    );
    let (cb, text) = undisturbed_text(results, "c", "b");
    row(
        "1",
        &format!("CPU/req (c)/(b) [{conf}]"),
        &text,
        "<= 1.08x",
        verdict(cb <= 1.08),
    );
    let (ca, text) = undisturbed_text(results, "c", "a");
    row(
        "1",
        &format!("CPU/req (c)/(a) [{conf}]"),
        &text,
        "<= 1.35x",
        verdict(ca <= 1.35),
    );
    let (_, text) = undisturbed_text(results, "cu", "b");
    row(
        "1",
        &format!("CPU/req (c')/(b), nothing declared [{conf}]"),
        &text,
        "",
        "",
    );
    let (_, text) = undisturbed_text(results, "c", "cu");
    row(
        "1",
        &format!("CPU/req (c)/(c'): what the two declarations save [{conf}]"),
        &text,
        "",
        "",
    );
    let p99 = results.median("c", |m| m.p99_us) / results.median("a", |m| m.p99_us);
    row(
        "1",
        &format!("p99 (c)/(a) [{conf}]"),
        &format!("{p99:.3}x"),
        "<= 1.2x",
        verdict(p99 <= 1.2),
    );
}

fn report_floor(p: &EnvoyParams, results: &Results, extra: bool) {
    report_reference(
        p,
        results,
        "floor",
        "floor: fixed override-host header from a no-op filter on (c)'s cluster",
    );
    report_reference(p, results, "job", "minimal job: the override-host header write, the clock, `:status` and `x-envoy-attempt-count` in one response-header buffer, nothing else (the host work (c) cannot drop)");
    let extras = [
        (
            "floor-fallback",
            "same cluster, no header (override-host policy, round-robin fallback)",
        ),
        ("floor-rr", "same cluster as plain ROUND_ROBIN, no header"),
    ];
    for (name, what) in extras.into_iter().filter(|_| extra) {
        let (_, text) = undisturbed_text(results, name, "b");
        row(
            "1",
            &format!("--concurrency {}: {what}", p.concurrency),
            &format!("{} = {text} (b)", cpu_text(results, name)),
            "",
            "",
        );
    }
}

/// A reference configuration against (b), (a) and (c): what (c) costs
/// over it, in µs and as a ratio.
fn report_reference(p: &EnvoyParams, results: &Results, name: &str, what: &str) {
    let r = results.undisturbed(name, cpu);
    let (_, vs_b) = undisturbed_text(results, name, "b");
    let (_, c_vs) = undisturbed_text(results, "c", name);
    row(
        "1",
        &format!("--concurrency {}: {what}", p.concurrency),
        &format!(
            "{} = {vs_b} (b), {:.3}x (a); (c) - {name} = {:.2} µs, (c)/{name} {c_vs}",
            cpu_text(results, name),
            r / results.undisturbed("a", cpu),
            results.undisturbed("c", cpu) - r
        ),
        "",
        "",
    );
}

fn report_compare(p: &EnvoyParams, results: &Results, compare: &[PathBuf]) {
    for (k, other) in compare.iter().enumerate() {
        let name = compare_name(k);
        let (_, vs_b) = undisturbed_text(results, &name, "b");
        let (_, c_vs) = undisturbed_text(results, "c", &name);
        let p99 = results.median(&name, |m| m.p99_us);
        row(
            "1",
            &format!(
                "--concurrency {}: compared build {} ({name}, same rounds)",
                p.concurrency,
                other.display()
            ),
            &format!(
                "{} = {vs_b} (b), {:.3}x (a); (c)/({name}) {c_vs}; p99 {p99:.0} µs = {:.3}x (a)",
                cpu_text(results, &name),
                results.undisturbed(&name, cpu) / results.undisturbed("a", cpu),
                p99 / results.median("a", |m| m.p99_us)
            ),
            "",
            "",
        );
    }
}
