//! 1p. Prices single host calls with the probe filter.

use crate::BenchError;
use std::path::Path;

use crate::envoy_config::{generate, insert_http_filter, Variant};
use crate::measure::clk_tck;
use crate::report::row;
use crate::rounds::{envoy_phases, run_rounds, EnvoyParams};
use crate::upstream::UpstreamProcess;
use host_harness::envoy::{Layout, WasmFilter};

/// Prices single host calls: the probe filter repeats one call `n` times
/// per request; (CPU/request - baseline) / n is that call's cost in Envoy.
pub(crate) fn bench_envoy_probe(
    probe_wasm: &Path,
    seconds: u32,
    repeats: usize,
    n: u32,
) -> Result<(), BenchError> {
    let work = host_harness::envoy::TempDir::new("probe").map_err(|e| e.to_string())?;
    let tck = clk_tck();
    let p = EnvoyParams {
        seconds,
        repeats,
        warmup: 1,
        ..envoy_phases(seconds, repeats, 1)
            .into_iter()
            .next()
            .ok_or("no phase")?
    };
    let upstream = UpstreamProcess::start(4, p.client_cpus.as_deref())?;
    let probes: Vec<(&str, String)> = vec![
        ("baseline (sets 1 header)", "op=none n=0".into()),
        ("get_property xds.cluster_name", format!("op=property n={n} phase=request arg=xds.cluster_name")),
        ("get_property xds.cluster_metadata.filter_metadata.locality-failover.revision", format!("op=property n={n} phase=request arg=xds.cluster_metadata.filter_metadata.locality-failover.revision")),
        ("get_property response.code (on_log)", format!("op=property n={n} phase=log arg=response.code")),
        ("get_property upstream.address (on_log)", format!("op=property n={n} phase=log arg=upstream.address")),
        ("get_shared_data (8 bytes)", format!("op=shared_get n={n} phase=request arg=probe/epoch")),
        ("get_header_map_value (absent)", format!("op=header_get n={n} phase=request arg=x-locality-failover-hosts")),
        ("replace_header_map_value", format!("op=header_set n={n} phase=request arg=x-probe")),
        ("get_current_time_nanoseconds", format!("op=now n={n} phase=request")),
        ("increment_metric", format!("op=metric_inc n={n} phase=request")),
        ("wasm malloc+free of a 48-byte String", format!("op=alloc n={n} phase=request")),
    ];
    let mut configs = Vec::new();
    for (i, (_, cfg)) in probes.iter().enumerate() {
        let layout = Layout::new(work.path().join(format!("probe-{i}")));
        let mut generated = generate(
            Variant::Native,
            &upstream.addrs,
            &layout,
            probe_wasm,
            probe_wasm,
        )?;
        let probe = WasmFilter {
            root_id: "probe".into(),
            vm_id: "probe".into(),
            ..WasmFilter::new(probe_wasm, cfg.clone())
        };
        if !insert_http_filter(&mut generated.bootstrap, probe.to_json()) {
            return Err("cannot place the probe filter".into());
        }
        configs.push((format!("p{i}"), generated, layout));
    }
    let results = run_rounds(&p, &configs, tck, &|_, _| Ok(()))?;
    let base = results.median("p0", |m| m.cpu_us_per_req);
    row(
        "1p",
        "probe baseline: no-op filter on the native cluster",
        &format!("{base:.2} µs CPU/req"),
        "",
        "",
    );
    for (i, (what, _)) in probes.iter().enumerate().skip(1) {
        let c = results.median(&format!("p{i}"), |m| m.cpu_us_per_req);
        let per = (c - base) / f64::from(n) * 1000.0;
        row(
            "1p",
            &format!("Envoy CPU per host call: {what}"),
            &format!("{per:.0} ns ({c:.2} µs/req with {n} calls)"),
            "",
            "",
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. Memory in a real Envoy.
