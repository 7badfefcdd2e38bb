//! The filter's own root and request code on the simulated host: steering,
//! shared ejections across workers, CAS under contention, host-call costs,
//! and the safe paths for bad input and failing host calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use host_harness::fixtures::guide;
use host_harness::sim::{
    lock, nanos, Behavior, RetryPolicy, RouterSteering, SimEnvoy, SimHost, EPOCH_NANOS,
};
use host_harness::sim_player::{SimPlayer, CLUSTER};
use locality_failover::filter::{FilterRoot, REVISION_REFRESH};
use locality_failover::metadata::metadata_for;
use serde_json::json;

const NS: &str = "locality-failover";
const HEADER: &str = "x-locality-failover-hosts";

/// The guide's topology: two pods in us-east-1 (1a, 1b), two in us-west-2.
fn guide_endpoints() -> Vec<(String, BTreeMap<String, String>)> {
    guide::PODS
        .iter()
        .map(|p| (p.address.to_string(), p.labels()))
        .collect()
}

fn metadata(endpoints: &[(String, BTreeMap<String, String>)], revision: u64) -> Vec<u8> {
    let list: Vec<_> = endpoints
        .iter()
        .map(|(a, l)| json!({"address": a, "labels": l}))
        .collect();
    metadata_for(
        NS,
        &json!({"revision": revision.to_string(), "endpoints": list}),
    )
}

fn guide_config() -> serde_json::Value {
    json!({"trafficPolicy": {
        "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {"enabled": true,
            "failoverPriority": ["topology.istio.io/network", "topology.kubernetes.io/region", "topology.kubernetes.io/zone"]}},
        "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "3m", "maxEjectionPercent": 50}}})
}

fn envoy(workers: usize, config: &serde_json::Value) -> SimEnvoy {
    let mut e = SimEnvoy::new(
        workers,
        &guide::client_labels(),
        config.to_string().into_bytes(),
        7,
        RouterSteering::OverrideHost {
            header: HEADER.into(),
            prefix: String::new(),
        },
    );
    let eps = guide_endpoints();
    for (a, _) in &eps {
        e.upstreams.insert(a.clone(), Behavior::Healthy);
    }
    e.set_cluster(
        CLUSTER,
        metadata(&eps, 1),
        eps.iter().map(|(a, _)| a.clone()).collect(),
    );
    assert!(e.configure());
    e
}

#[test]
fn client_steering_header_never_reaches_the_router() {
    let mut e = envoy(1, &guide_config());
    for _ in 0..5 {
        let out = e.request(&[(HEADER, "6.6.6.6:80,10.20.0.7:8080")]);
        let steering = out.steering.expect("the filter writes its own list");
        assert!(!steering.contains("6.6.6.6"), "{steering}");
        assert!(steering.starts_with("10.10.0.15:8080"), "{steering}");
        assert_eq!(out.attempts, vec!["10.10.0.15:8080".to_string()]);
    }
    // A request the filter leaves to Envoy (no routed cluster) loses it too.
    e.set_property(&["xds", "cluster_name"], None);
    let out = e.request(&[(HEADER, "6.6.6.6:80")]);
    assert_eq!(out.steering, None, "removed, not passed on");
}

/// Sim with a connect-failure retry: the first entry refuses, the retry
/// to the second entry succeeds.
fn retrying_envoy(workers: usize) -> SimEnvoy {
    let mut e = envoy(workers, &guide_config());
    e.retry = Some(RetryPolicy {
        attempts: 2,
        retry_on: vec!["connect-failure".into()],
    });
    e
}

fn streak(e: &SimEnvoy, address: &str) -> locality_failover::outlier::Streaks {
    let s = lock(&e.shared);
    let key = format!("locality-failover/{CLUSTER}/streak/{address}");
    locality_failover::shared::decode_streaks(s.get(&key).unwrap_or_default())
}

#[test]
fn a_retried_first_entry_counts_its_failure() {
    let mut e = retrying_envoy(1);
    // Successes on the first entry: this VM learns it has no streak.
    for _ in 0..3 {
        assert_eq!(e.request(&[]).attempts, vec!["10.10.0.15:8080".to_string()]);
    }
    e.upstreams
        .insert("10.10.0.15:8080".into(), Behavior::Refused);
    let out = e.request(&[]);
    assert_eq!(out.status, 200);
    assert_eq!(
        out.attempts,
        vec!["10.10.0.15:8080".to_string(), "10.10.1.8:8080".to_string()]
    );
    assert_eq!(streak(&e, "10.10.0.15:8080").c5xx, 1, "the failed attempt");
    assert_eq!(streak(&e, "10.10.1.8:8080").c5xx, 0, "the retry succeeded");
    assert_eq!(lock(&e.shared).metric("locality_failover.retried"), 1);
    // A success on it again resets the streak: known clean no more.
    e.upstreams
        .insert("10.10.0.15:8080".into(), Behavior::Healthy);
    assert_eq!(e.request(&[]).attempts, vec!["10.10.0.15:8080".to_string()]);
    assert_eq!(streak(&e, "10.10.0.15:8080").c5xx, 0);
}

#[test]
fn a_failure_on_another_worker_is_seen_within_the_view_refresh() {
    // Requests alternate between the workers, 1 ms apart (the refresh bound).
    let mut e = retrying_envoy(2);
    for _ in 0..4 {
        e.request(&[]);
    }
    e.upstreams
        .insert("10.10.0.15:8080".into(), Behavior::Refused);
    let out = e.request(&[]);
    assert_eq!(out.attempts.len(), 2);
    assert_eq!(streak(&e, "10.10.0.15:8080").c5xx, 1);
    e.upstreams
        .insert("10.10.0.15:8080".into(), Behavior::Healthy);
    // The other worker knew the endpoint clean; the dirtied count tells it
    // to read the streak, and its success resets it, as Envoy's would.
    let out = e.request(&[]);
    assert_ne!(out.worker, 0, "the other worker");
    assert_eq!(out.attempts, vec!["10.10.0.15:8080".to_string()]);
    assert_eq!(streak(&e, "10.10.0.15:8080").c5xx, 0);
}

#[test]
fn refused_configuration_still_strips_client_headers() {
    let mut e = SimEnvoy::new(
        1,
        &guide::client_labels(),
        br#"{"trafficDistribution": "Nearby"}"#.to_vec(),
        1,
        RouterSteering::OverrideHost {
            header: HEADER.into(),
            prefix: String::new(),
        },
    );
    e.upstreams
        .insert("10.10.0.15:8080".into(), Behavior::Healthy);
    e.set_cluster(
        CLUSTER,
        metadata(&guide_endpoints()[..1], 1),
        vec!["10.10.0.15:8080".into()],
    );
    assert!(!e.configure(), "a bad configuration is refused");
    let logs = lock(&e.shared).logs.clone();
    assert!(
        logs.iter()
            .any(|(_, m)| m.contains("trafficDistribution") && m.contains("Nearby")),
        "{logs:?}"
    );
    assert_eq!(lock(&e.shared).metric("locality_failover.config_errors"), 1);
    let out = e.request(&[(HEADER, "6.6.6.6:80")]);
    assert_eq!(out.steering, None, "the client's value was removed");
}

#[test]
fn a_success_writes_no_shared_data() {
    let mut e = envoy(2, &guide_config());
    for _ in 0..10 {
        e.request(&[]);
    }
    let before = lock(&e.shared).calls;
    let n = 200;
    for _ in 0..n {
        assert_eq!(e.request(&[]).status, 200);
    }
    let after = lock(&e.shared).calls;
    assert_eq!(
        after.shared_writes, before.shared_writes,
        "no write on a success that changes nothing"
    );
    // Hot path reads: the epoch key at most once per millisecond (requests
    // here are 1 ms apart); no streak for an endpoint known clean.
    let reads = (after.shared_reads - before.shared_reads) as f64 / f64::from(n);
    assert!(reads <= 1.0, "{reads} shared-data reads per request");
    let props = (after.property_reads - before.property_reads) as f64 / f64::from(n);
    assert!(
        props <= 3.0,
        "{props} property reads per request (cluster name, revision, attempt count)"
    );
}

#[test]
fn ejection_is_shared_by_all_workers() {
    let mut e = envoy(2, &guide_config());
    e.upstreams
        .insert("10.10.0.15:8080".into(), Behavior::Http(503));
    // Requests alternate between the two workers: the fifth 5xx overall ejects.
    let statuses: Vec<u32> = (0..5).map(|_| e.request(&[]).status).collect();
    assert_eq!(statuses, vec![503; 5]);
    assert_eq!(
        e.ejected("locality-failover", CLUSTER),
        vec!["10.10.0.15:8080".to_string()]
    );
    for _ in 0..6 {
        let out = e.request(&[]);
        assert_eq!(
            out.attempts,
            vec!["10.10.1.8:8080".to_string()],
            "both workers skip the ejected pod"
        );
    }
    assert_eq!(lock(&e.shared).metric("locality_failover.ejections"), 1);
}

/// `threads` worker VMs, each on its own thread sharing one store, each
/// reporting `per_thread` answers with `status` from 10.20.0.7:8080.
fn hammer(
    config: &serde_json::Value,
    threads: u64,
    per_thread: u32,
    status: i64,
) -> host_harness::sim::Shared {
    let e = envoy(1, config);
    let shared = Arc::clone(&e.shared);
    let mut props = BTreeMap::new();
    props.insert(
        host_harness::sim::prop_key(&["xds", "cluster_name"]),
        CLUSTER.as_bytes().to_vec(),
    );
    props.insert(
        host_harness::sim::prop_key(&["xds", "cluster_metadata"]),
        metadata(&guide_endpoints(), 1),
    );
    let config_bytes = config.to_string().into_bytes();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let shared = Arc::clone(&shared);
            let props = props.clone();
            let config_bytes = config_bytes.clone();
            thread::spawn(move || {
                let faults = Default::default();
                let host = || SimHost::new(&shared, EPOCH_NANOS, &props, &config_bytes, &faults);
                let mut root = FilterRoot::new(t);
                assert!(root.on_configure(&mut host()));
                // Load the inventory through a request on this worker.
                root.on_request_headers(&mut host()).expect("steered");
                let state = root
                    .request_state(CLUSTER, &["10.20.0.7:8080"])
                    .expect("known endpoint");
                for _ in 0..per_thread {
                    let mut h = host();
                    h.set_response_property(&["response", "code"], status.to_le_bytes().to_vec());
                    h.set_response_property(&["upstream", "address"], b"10.20.0.7:8080".to_vec());
                    h.set_response_property(
                        &["upstream", "request_attempt_count"],
                        1u64.to_le_bytes().to_vec(),
                    );
                    root.on_log(&mut h, &state);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread");
    }
    shared
}

#[test]
fn concurrent_workers_lose_no_increment_and_eject_once() {
    // Threshold high enough that 8 threads x 25 failures stay below it.
    let config = json!({"trafficPolicy": {
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "outlierDetection": {"consecutive5xxErrors": 1000, "maxEjectionPercent": 100}}});
    let shared = hammer(&config, 8, 25, 503);
    let s = lock(&shared);
    let streak = s
        .get(&format!(
            "locality-failover/{CLUSTER}/streak/10.20.0.7:8080"
        ))
        .expect("streak key");
    let streaks = locality_failover::shared::decode_streaks(streak);
    assert_eq!(
        streaks.c5xx,
        8 * 25,
        "every increment survived ({} CAS retries)",
        s.calls.cas_mismatches
    );
    drop(s);

    // A threshold of 5 hammered by 8 threads: exactly one ejection.
    let config = json!({"trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 5, "maxEjectionPercent": 100}}});
    let shared = hammer(&config, 8, 25, 500);
    let s = lock(&shared);
    assert_eq!(
        s.metric("locality_failover.ejections"),
        1,
        "one ejection, not one per worker"
    );
    let table = locality_failover::shared::decode_table(
        s.get(&format!("locality-failover/{CLUSTER}/table"))
            .expect("table"),
    );
    assert_eq!(
        table.hosts.get("10.20.0.7:8080").map(|h| h.ejections),
        Some(1)
    );
}

#[test]
fn bad_inventory_keeps_the_last_good_one_and_logs_once() {
    let mut e = envoy(1, &guide_config());
    assert_eq!(e.request(&[]).attempts, vec!["10.10.0.15:8080".to_string()]);
    let mut eps = guide_endpoints();
    eps.push(eps[0].clone()); // duplicate address
    e.set_cluster(CLUSTER, metadata(&eps, 2), vec![]);
    e.set_property(
        &["xds", "cluster_metadata", "filter_metadata", NS, "revision"],
        Some(b"2".to_vec()),
    );
    e.cluster_hosts = guide_endpoints().iter().map(|(a, _)| a.clone()).collect();
    for _ in 0..50 {
        assert_eq!(e.request(&[]).attempts, vec!["10.10.0.15:8080".to_string()]);
    }
    let s = lock(&e.shared);
    assert_eq!(s.metric("locality_failover.inventory_errors"), 1);
    let refusals = s
        .logs
        .iter()
        .filter(|(_, m)| m.contains("inventory refused"))
        .count();
    assert_eq!(refusals, 1, "logged once, not per request");
}

/// The revision leaf is read at most once per [`REVISION_REFRESH`] (a CEL
/// walk of the cluster metadata in Envoy), so a new inventory is adopted by
/// the first request after that bound, never later, and the requests in
/// between still go by the old one.
#[test]
fn a_new_revision_is_adopted_within_revision_refresh() {
    let mut e = envoy(1, &guide_config());
    let spacing = Duration::from_micros(100);
    e.request_spacing = spacing;
    let home = "10.10.0.15:8080".to_string();
    for _ in 0..20 {
        assert_eq!(e.request(&[]).attempts, vec![home.clone()]);
    }
    // The control plane drops the home pod from the inventory (Envoy still
    // holds the host, so a stale pick would still be answered by it).
    let rest: Vec<_> = guide_endpoints()
        .into_iter()
        .filter(|(a, _)| *a != home)
        .collect();
    let hosts = e.cluster_hosts.clone();
    e.set_cluster(CLUSTER, metadata(&rest, 2), hosts);
    e.set_property(
        &["xds", "cluster_metadata", "filter_metadata", NS, "revision"],
        Some(b"2".to_vec()),
    );
    let bound = (REVISION_REFRESH.as_micros() / spacing.as_micros()) as usize;
    let picks: Vec<String> = (0..bound + 5)
        .map(|_| e.request(&[]).attempts.concat())
        .collect();
    let stale = picks.iter().take_while(|a| **a == home).count();
    assert!(
        stale > 0 && stale <= bound,
        "{stale} requests went by the old inventory (bound {bound})"
    );
    assert!(
        picks[stale..].iter().all(|a| *a != home),
        "once adopted the new inventory stays: {picks:?}"
    );
    let path = format!("xds.cluster_metadata.filter_metadata.{NS}.revision");
    let reads = lock(&e.shared)
        .property_paths
        .get(&path)
        .copied()
        .unwrap_or(0);
    assert!(
        (2..=3).contains(&reads),
        "{reads} revision reads over {} requests {spacing:?} apart",
        bound + 6
    );
}

#[test]
fn failing_host_calls_are_safe() {
    let mut e = envoy(1, &guide_config());
    e.faults.fail_shared_data = true;
    for _ in 0..5 {
        let out = e.request(&[]);
        assert_eq!(out.status, 200, "the request still goes through");
    }
    assert!(lock(&e.shared).metric("locality_failover.host_errors") > 0);
    e.faults.fail_shared_data = false;
    e.faults.fail_headers = true;
    let out = e.request(&[(HEADER, "6.6.6.6:80")]);
    assert_eq!(
        out.status, 503,
        "cannot strip the client's header: fail closed"
    );
    assert!(out.attempts.is_empty());
    e.faults.fail_headers = false;
    e.faults.fail_properties = true;
    let out = e.request(&[]);
    assert!(out.steering.is_none(), "no cluster known: left to Envoy");
}

#[test]
fn unknown_locality_spreads_over_all_endpoints() {
    let mut e = SimEnvoy::new(
        1,
        &BTreeMap::new(),
        guide_config().to_string().into_bytes(),
        3,
        RouterSteering::OverrideHost {
            header: HEADER.into(),
            prefix: String::new(),
        },
    );
    let eps = guide_endpoints();
    for (a, _) in &eps {
        e.upstreams.insert(a.clone(), Behavior::Healthy);
    }
    e.set_cluster(
        CLUSTER,
        metadata(&eps, 1),
        eps.iter().map(|(a, _)| a.clone()).collect(),
    );
    assert!(e.configure());
    assert!(lock(&e.shared)
        .logs
        .iter()
        .any(|(_, m)| m.contains("locality is unknown")));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        seen.extend(e.request(&[]).attempts);
    }
    assert_eq!(
        seen.len(),
        4,
        "istiod skips failoverPriority for a proxy without labels: one priority"
    );
}

#[test]
fn seed_scenarios_pass_on_two_and_four_workers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/scenarios");
    let mut played = 0;
    for entry in std::fs::read_dir(&dir).expect("shared/scenarios").flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let mut scenario = host_harness::scenario::Scenario::load(&path).expect("valid scenario");
        for workers in [2, 4] {
            scenario.workers = workers;
            let mut player = SimPlayer::new(&scenario).expect("player");
            let (_, mismatches) =
                host_harness::runner::play(&scenario, &mut player).expect("played");
            assert!(mismatches.is_empty(), "{}: {mismatches:?}", path.display());
        }
        played += 1;
    }
    assert_eq!(played, 5);
}

#[test]
fn seed_scenarios_pass_with_every_steering_mode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/scenarios");
    for file in [
        "seed-step6-zone-region-order.json",
        "seed-step6-outlier-ejection.json",
        "seed-step4-prefer-close.json",
    ] {
        let base = host_harness::scenario::Scenario::load(&dir.join(file)).expect("valid scenario");
        for mode in ["original-dst", "route-header"] {
            let mut scenario = base.clone();
            scenario
                .set_config("steering", json!({"mode": mode}))
                .expect("valid steering");
            if scenario.route_header()
                && scenario.steps.iter().any(|s| {
                    !s.set.is_empty()
                        && s.set.iter().any(|(_, st)| {
                            matches!(
                                st,
                                host_harness::scenario::EndpointState::Removed
                                    | host_harness::scenario::EndpointState::Present
                            )
                        })
                })
            {
                continue;
            }
            let mut player = SimPlayer::new(&scenario).expect("player");
            let (_, mismatches) =
                host_harness::runner::play(&scenario, &mut player).expect("played");
            assert!(mismatches.is_empty(), "{file} with {mode}: {mismatches:?}");
        }
    }
}

#[test]
fn a_request_in_flight_across_an_inventory_change_keeps_its_endpoints() {
    let e = envoy(1, &guide_config());
    let config = guide_config().to_string().into_bytes();
    let faults = Default::default();
    let props = |revision: u64, endpoints: &[(String, BTreeMap<String, String>)]| {
        let mut p = BTreeMap::new();
        p.insert(
            host_harness::sim::prop_key(&["xds", "cluster_name"]),
            CLUSTER.as_bytes().to_vec(),
        );
        p.insert(
            host_harness::sim::prop_key(&["xds", "cluster_metadata"]),
            metadata(endpoints, revision),
        );
        p.insert(
            host_harness::sim::prop_key(&[
                "xds",
                "cluster_metadata",
                "filter_metadata",
                NS,
                "revision",
            ]),
            revision.to_string().into_bytes(),
        );
        p
    };
    let first = props(1, &guide_endpoints());
    let mut reversed = guide_endpoints();
    reversed.reverse();
    let second = props(2, &reversed);
    let mut root = FilterRoot::new(1);
    assert!(root.on_configure(&mut SimHost::new(
        &e.shared,
        EPOCH_NANOS,
        &first,
        &config,
        &faults
    )));
    let state = root
        .on_request_headers(&mut SimHost::new(
            &e.shared,
            EPOCH_NANOS,
            &first,
            &config,
            &faults,
        ))
        .expect("steered");
    let picked = root.request_addresses(&state)[0].clone();
    let old_index = guide_endpoints().iter().position(|(a, _)| *a == picked);
    let same_index_now = reversed[old_index.expect("picked from the inventory")]
        .0
        .clone();
    assert_ne!(picked, same_index_now);
    // While it is in flight, a new inventory (every index moves) is loaded:
    // the next request after the revision's staleness bound reads it.
    let later = EPOCH_NANOS + nanos(REVISION_REFRESH);
    root.on_request_headers(&mut SimHost::new(
        &e.shared, later, &second, &config, &faults,
    ));
    assert_eq!(root.request_addresses(&state)[0], picked);
    let mut h = SimHost::new(&e.shared, later, &second, &config, &faults);
    h.set_response_property(&["response", "code"], 503i64.to_le_bytes().to_vec());
    h.set_response_property(&["upstream", "address"], picked.as_bytes().to_vec());
    h.set_response_property(
        &["upstream", "request_attempt_count"],
        1u64.to_le_bytes().to_vec(),
    );
    root.on_log(&mut h, &state);
    assert_eq!(streak(&e, &picked).c5xx, 1, "the endpoint it went to");
    assert_eq!(
        streak(&e, &same_index_now).c5xx,
        0,
        "not the one at its old index"
    );
}
