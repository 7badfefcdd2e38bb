//! 5. Host calls per request on the hot path (simulated host).

use std::time::Duration;

use crate::alloc::count_allocs;
use crate::fixtures::{client_labels, inventory_json, plugin_config, settings, NET1};
use crate::host::{filter_with_inventory, served, BenchHost};
use crate::report::{progress, row, verdict};
use host_harness::sim::{lock, Behavior, RouterSteering, SimEnvoy};
use locality_failover::config::{LABEL_NETWORK, LABEL_REGION, LABEL_ZONE};
use locality_failover::filter::FilterRoot;
use locality_failover::inventory::EndpointSpec;

pub(crate) fn bench_calls() {
    sim_calls();
    crate::buffers::bench_buffers();
    allocations();
}

/// The guide's four endpoints (P0 us-east-1a, P1 us-east-1b, P2 us-west-2).
fn guide_specs() -> Vec<EndpointSpec> {
    (0..4)
        .map(|i| {
            let (region, zone) = [
                ("us-east-1", "us-east-1a"),
                ("us-east-1", "us-east-1b"),
                ("us-west-2", "us-west-2a"),
                ("us-west-2", "us-west-2b"),
            ][i];
            let network = if region == "us-east-1" {
                NET1
            } else {
                "cluster2-network"
            };
            EndpointSpec {
                address: format!("10.0.0.{}:8080", i + 1),
                name: Some(format!("ep-{i}")),
                labels: [
                    (LABEL_NETWORK, network),
                    (LABEL_REGION, region),
                    (LABEL_ZONE, zone),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                weight: Some(1),
                ..Default::default()
            }
        })
        .collect()
}

/// One worker of the simulated Envoy on the guide's cluster, configured.
fn guide_sim(specs: &[EndpointSpec]) -> Option<SimEnvoy> {
    let config = plugin_config("ROUND_ROBIN").to_string().into_bytes();
    let mut sim = SimEnvoy::new(
        1,
        &client_labels(),
        config,
        7,
        RouterSteering::OverrideHost {
            header: "x-locality-failover-hosts".into(),
            prefix: String::new(),
        },
    );
    let metadata =
        locality_failover::metadata::metadata_for("locality-failover", &inventory_json(specs, "1"));
    sim.set_cluster(
        "svc",
        metadata,
        specs.iter().map(|s| s.address.clone()).collect(),
    );
    sim.set_property(
        &[
            "xds",
            "cluster_metadata",
            "filter_metadata",
            "locality-failover",
            "revision",
        ],
        Some(b"1".to_vec()),
    );
    for s in specs {
        sim.upstreams.insert(s.address.clone(), Behavior::Healthy);
    }
    sim.request_spacing = Duration::from_micros(10);
    sim.configure().then_some(sim)
}

/// Host calls on the simulated host (its `CallCounts`), and the writes a
/// success does (none, unless it resets a streak).
fn sim_calls() {
    const N: u64 = 10_000;
    let specs = guide_specs();
    let Some(mut sim) = guide_sim(&specs) else {
        row(
            "5",
            "host calls per request",
            "configuration refused",
            "",
            "MISS",
        );
        return;
    };
    // The first request loads the inventory; not the hot path.
    let _ = sim.request(&[]);
    let before = lock(&sim.shared).calls;
    let mut ok = 0u64;
    for _ in 0..N {
        if sim.request(&[]).status == 200 {
            ok += 1;
        }
    }
    let after = lock(&sim.shared).calls;
    let per = |a: u64, b: u64| (a - b) as f64 / N as f64;
    let shared_reads = per(after.shared_reads, before.shared_reads);
    let shared_writes = after.shared_writes - before.shared_writes;
    let props = per(after.property_reads, before.property_reads);
    let headers = per(after.header_writes, before.header_writes);
    progress(&format!(
        "calls over {N} successes ({ok} answered 200): {after:?} - {before:?}"
    ));
    row(
        "5",
        &format!("host calls per successful request (sim CallCounts, {N} requests, steady state)"),
        &format!("{props:.2} property reads, {shared_reads:.2} shared reads, {:.2} shared writes, {headers:.2} header writes", shared_writes as f64 / N as f64),
        "",
        "",
    );
    row(
        "5",
        &format!("shared-data writes on {N} successes that change nothing"),
        &format!("{shared_writes}"),
        "0",
        verdict(shared_writes == 0 && ok == N),
    );
    // A success that does change state (it resets a failure streak) writes once.
    if let Some(a) = specs.first() {
        sim.upstreams.insert(a.address.clone(), Behavior::Http(500));
    }
    let _ = sim.request(&[]);
    if let Some(a) = specs.first() {
        sim.upstreams.insert(a.address.clone(), Behavior::Healthy);
    }
    let before = lock(&sim.shared).calls;
    let _ = sim.request(&[]);
    let reset_writes = lock(&sim.shared).calls.shared_writes - before.shared_writes;
    row(
        "5",
        "shared-data writes on a success that resets a failure streak",
        &format!("{reset_writes}"),
        "1 (state changes)",
        verdict(reset_writes == 1),
    );
}

/// Heap allocations the filter's own code makes per request.
fn allocations() {
    // Buffers the host hands over included, as Envoy allocates them in the VM.
    let settings = settings("ROUND_ROBIN");
    let (mut host, mut root) = filter_with_inventory(4, &settings);
    let one = |host: &mut BenchHost, root: &mut FilterRoot| {
        if let Some(mut state) = root.on_request_headers(host) {
            let first = served(root, &state);
            host.answer(200, first.as_deref());
            root.on_response_headers(host, Some(&mut state));
            root.on_log(host, &state);
        }
    };
    for _ in 0..100 {
        one(&mut host, &mut root);
    }
    let ((), stats) = count_allocs(|| {
        for _ in 0..1000 {
            one(&mut host, &mut root);
        }
    });
    row(
        "5",
        "heap allocations per successful request in the filter (native count, 1,000 requests)",
        &format!("{:.1}", stats.allocs as f64 / 1000.0),
        "",
        "",
    );
}
