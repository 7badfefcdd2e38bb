//! Nothing lost under failure, on the real Envoy (concurrency 2): a bounded
//! load on loopback while upstreams are killed and restarted and the
//! inventory is changed under load. With override-host (the whole ranked
//! list) and a retry policy, no client may see an error while any endpoint
//! is healthy. Prints requests sent, answered and failed.
//!
//! `SOAK_SECONDS` (default 8) and `SOAK_CLIENTS` (default 4) size the run;
//! `make soak` runs it longer. Skips (printing SKIP) without `envoy`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use host_harness::envoy::config::{FilterModeConfig, Layout, Node, Steering};
use host_harness::envoy::{
    http_get, Behavior, Endpoint, EnvoyOptions, EnvoyProcess, RetryPolicy, TempDir, Upstreams,
    WasmFilter,
};
use serde_json::json;

mod common;
use common::{labels, require_envoy, wasm};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Istio's default circuit breakers (`connectionPool` unset): everything
/// at 2^32-1. Envoy's own default allows 3 concurrent retries per cluster,
/// which a loaded waypoint would overflow.
fn istio_circuit_breakers(cluster: &mut serde_json::Value) {
    let max = u64::from(u32::MAX);
    cluster["circuit_breakers"] = json!({"thresholds": [{
        "max_connections": max, "max_pending_requests": max, "max_requests": max, "max_retries": max}]});
}

fn with_breakers(mut clusters: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    clusters.iter_mut().for_each(istio_circuit_breakers);
    clusters
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
}

#[test]
fn no_client_error_while_any_endpoint_is_healthy() {
    require_envoy!();
    let seconds = env_u64("SOAK_SECONDS", 8);
    let clients = env_u64("SOAK_CLIENTS", 4) as usize;
    let names = ["east-1a", "east-1b", "west-2a", "west-2b"];
    let zones = ["us-east-1a", "us-east-1b", "us-west-2a", "us-west-2b"];
    let ups = Arc::new(Upstreams::start(&names).expect("upstreams"));
    let endpoints: Vec<Endpoint> = names
        .iter()
        .zip(zones)
        .map(|(n, z)| {
            let mut e = Endpoint::new(*n, ups.addr(n).expect("addr"));
            e.labels = labels(z);
            e
        })
        .collect();
    let plugin = json!({
        "trafficPolicy": {
            "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {"failoverPriority": [
                "topology.istio.io/network", "topology.kubernetes.io/region", "topology.kubernetes.io/zone"]}},
            "outlierDetection": {"consecutive5xxErrors": 5, "interval": "1s", "baseEjectionTime": "2s", "maxEjectionPercent": 75}},
        // The whole ranked list: every endpoint is a retry candidate.
        "steering": {"mode": "override-host", "maxHosts": 4},
    });
    let mut cfg = FilterModeConfig::new(Steering::override_host(), endpoints.clone());
    cfg.node = Node::with_labels(labels("us-east-1a"));
    cfg.wasm = Some(WasmFilter::new(wasm(), plugin.to_string()));
    cfg.retry = Some(RetryPolicy::new(
        3,
        "connect-failure,refused-stream,reset,5xx",
    ));
    let dir = TempDir::new("soak").expect("temp dir");
    let layout = Layout::new(dir.path());
    let opts = EnvoyOptions {
        concurrency: 2,
        ..EnvoyOptions::default()
    };
    let mut generated = cfg.generate(&layout);
    if let Some(clusters) = generated.clusters.as_mut() {
        clusters.iter_mut().for_each(istio_circuit_breakers);
    }
    let envoy = Arc::new(
        EnvoyProcess::start(&layout, &generated, &opts)
            .unwrap_or_else(|e| panic!("envoy did not start: {e}")),
    );
    let listener = envoy.listener().expect("listener");

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let load: Vec<_> = (0..clients)
        .map(|_| {
            let (tally, stop, errors) =
                (Arc::clone(&tally), Arc::clone(&stop), Arc::clone(&errors));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    match http_get(listener, "/", &[], Duration::from_secs(5)) {
                        Ok(r) if r.status < 500 => {
                            tally.answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            let mut e = errors.lock().unwrap_or_else(|p| p.into_inner());
                            if e.len() < 5 {
                                e.push(format!("{} {}", r.status, r.text()));
                            }
                        }
                        Err(err) => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                            let mut e = errors.lock().unwrap_or_else(|p| p.into_inner());
                            if e.len() < 5 {
                                e.push(err.to_string());
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // Chaos, in rounds: kill the local pod, kill a second, restart both,
    // drop an endpoint from the inventory, put it back. At least one
    // endpoint stays healthy throughout.
    let start = Instant::now();
    let round = Duration::from_millis(400);
    let mut step = 0usize;
    while start.elapsed() < Duration::from_secs(seconds) {
        match step % 6 {
            0 => ups.set("east-1a", Behavior::Refused).expect("kill"),
            1 => ups.set("west-2a", Behavior::Http(503)).expect("break"),
            2 => {
                ups.set("east-1a", Behavior::Healthy).expect("restart");
                ups.set("west-2a", Behavior::Healthy).expect("restart");
            }
            3 => {
                let fewer: Vec<Endpoint> = endpoints
                    .iter()
                    .filter(|e| e.name != "east-1b")
                    .cloned()
                    .collect();
                let mut c = cfg.clone();
                c.endpoints = fewer;
                c.revision = format!("r{step}");
                envoy
                    .apply_clusters(&with_breakers(c.clusters()), Duration::from_secs(5))
                    .expect("cds update");
            }
            4 => ups.set("east-1a", Behavior::Refused).expect("kill"),
            _ => {
                ups.set("east-1a", Behavior::Healthy).expect("restart");
                let mut c = cfg.clone();
                c.revision = format!("r{step}");
                envoy
                    .apply_clusters(&with_breakers(c.clusters()), Duration::from_secs(5))
                    .expect("cds update");
            }
        }
        step += 1;
        thread::sleep(round);
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().expect("client thread");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent = tally.sent.load(Ordering::Relaxed);
    let answered = tally.answered.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let ejections = envoy
        .stats_with_prefix("wasmcustom.locality_failover.ejections")
        .values()
        .sum::<u64>();
    let retried = envoy
        .stats_with_prefix("wasmcustom.locality_failover.retried")
        .values()
        .sum::<u64>();
    println!(
        "soak: {sent} sent, {answered} answered, {failed} failed in {elapsed:.1}s ({:.0} req/s, {clients} clients, Envoy concurrency 2); {step} chaos steps; filter ejections {ejections}, retried {retried}",
        sent as f64 / elapsed
    );
    assert!(
        sent > 1000,
        "the load generator sent too little to mean anything ({sent})"
    );
    assert_eq!(
        failed,
        0,
        "client-visible errors: {:?}\n{}",
        errors.lock().map(|e| e.clone()).unwrap_or_default(),
        envoy.log_tail(20)
    );
    assert!(ejections > 0, "the killed pod was never ejected");
}
