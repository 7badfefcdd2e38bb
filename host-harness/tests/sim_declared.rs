//! What an operator may declare to save host calls per request, on the
//! simulated host: `inventory.cluster` (no `xds.cluster_name` read) and
//! `steering.attemptCount: responseHeader` (the attempt count from
//! `x-envoy-attempt-count`, read with `:status`). Neither may change what
//! the filter decides: retry attribution stays exact, a wrong declaration
//! is caught and dropped.

use std::collections::BTreeMap;
use std::time::Duration;

use host_harness::fixtures::guide;
use host_harness::sim::{lock, Behavior, RetryPolicy, RouterSteering, SimEnvoy};
use host_harness::sim_player::CLUSTER;
use locality_failover::metadata::metadata_for;
use serde_json::{json, Value};

const NS: &str = "locality-failover";
const HEADER: &str = "x-locality-failover-hosts";
const FIRST: &str = "10.10.0.15:8080";
const SECOND: &str = "10.10.1.8:8080";

fn metadata() -> Vec<u8> {
    let list: Vec<Value> = guide::PODS
        .iter()
        .map(|p| json!({"address": p.address, "labels": p.labels()}))
        .collect();
    metadata_for(NS, &json!({"revision": "1", "endpoints": list}))
}

fn hosts() -> Vec<String> {
    guide::PODS.iter().map(|p| p.address.to_string()).collect()
}

/// The guide's step-6 policy with the given `inventory` and `steering`.
fn config(inventory: Value, steering: Value) -> Value {
    json!({
        "trafficPolicy": {
            "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {"enabled": true,
                "failoverPriority": ["topology.istio.io/network", "topology.kubernetes.io/region", "topology.kubernetes.io/zone"]}},
            "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "3m", "maxEjectionPercent": 50}},
        "inventory": inventory,
        "steering": steering
    })
}

/// One worker, requests 100 µs apart, a connect-failure retry on the route.
fn envoy(config: &Value) -> SimEnvoy {
    let mut e = SimEnvoy::new(
        1,
        &guide::client_labels(),
        config.to_string().into_bytes(),
        7,
        RouterSteering::OverrideHost {
            header: HEADER.into(),
            prefix: String::new(),
        },
    );
    for a in hosts() {
        e.upstreams.insert(a, Behavior::Healthy);
    }
    e.set_cluster(CLUSTER, metadata(), hosts());
    e.retry = Some(RetryPolicy {
        attempts: 2,
        retry_on: vec!["connect-failure".into()],
    });
    e.request_spacing = Duration::from_micros(100);
    assert!(e.configure());
    e
}

fn reads(e: &SimEnvoy, path: &str) -> u64 {
    lock(&e.shared)
        .property_paths
        .get(path)
        .copied()
        .unwrap_or(0)
}

fn streak_5xx(e: &SimEnvoy, address: &str) -> u32 {
    let s = lock(&e.shared);
    let key = format!("{NS}/{CLUSTER}/streak/{address}");
    locality_failover::shared::decode_streaks(s.get(&key).unwrap_or_default()).c5xx
}

fn header_mode() -> Value {
    json!({"attemptCount": "responseHeader"})
}

/// Three successes, a retried request (first entry refuses), a success:
/// the failure is the first entry's, the retry's success the second's.
fn assert_retry_attribution(e: &mut SimEnvoy) {
    for _ in 0..3 {
        assert_eq!(e.request(&[]).attempts, vec![FIRST.to_string()]);
    }
    e.upstreams.insert(FIRST.into(), Behavior::Refused);
    let out = e.request(&[]);
    assert_eq!(out.status, 200);
    assert_eq!(out.attempts, vec![FIRST.to_string(), SECOND.to_string()]);
    assert_eq!(streak_5xx(e, FIRST), 1, "the failed attempt is counted");
    assert_eq!(streak_5xx(e, SECOND), 0);
    assert_eq!(lock(&e.shared).metric("locality_failover.retried"), 1);
    e.upstreams.insert(FIRST.into(), Behavior::Healthy);
    assert_eq!(e.request(&[]).attempts, vec![FIRST.to_string()]);
    assert_eq!(streak_5xx(e, FIRST), 0, "a success resets it");
}

#[test]
fn attempt_count_from_the_response_header_keeps_retry_attribution() {
    let mut e = envoy(&config(json!({}), header_mode()));
    assert_retry_attribution(&mut e);
    assert_eq!(
        reads(&e, "upstream.request_attempt_count"),
        0,
        "every answer carried x-envoy-attempt-count"
    );
}

#[test]
fn without_the_header_the_attempt_count_is_read_as_a_property() {
    // Declared, but the route does not set include_attempt_count_in_response.
    let mut e = envoy(&config(json!({}), header_mode()));
    e.attempt_count_in_response = false;
    assert_retry_attribution(&mut e);
    assert_eq!(reads(&e, "upstream.request_attempt_count"), 5);
}

#[test]
fn the_default_reads_the_property_even_when_the_header_is_there() {
    let mut e = envoy(&config(json!({}), json!({})));
    assert_retry_attribution(&mut e);
    assert_eq!(reads(&e, "upstream.request_attempt_count"), 5);
}

#[test]
fn a_declared_cluster_is_read_once_then_once_per_tick() {
    let mut e = envoy(&config(json!({"cluster": CLUSTER}), header_mode()));
    assert_retry_attribution(&mut e);
    assert_eq!(reads(&e, "xds.cluster_name"), 1, "the first request checks");
    for _ in 0..100 {
        e.request(&[]);
    }
    assert_eq!(reads(&e, "xds.cluster_name"), 1);
    // The tick (1 s: interval 10 s / 10) makes the next request check again.
    e.advance(Duration::from_secs(1));
    e.request(&[]);
    e.request(&[]);
    assert_eq!(reads(&e, "xds.cluster_name"), 2);
    assert_eq!(lock(&e.shared).metric("locality_failover.config_errors"), 0);
}

#[test]
fn a_wrong_declaration_is_dropped_on_the_first_request() {
    let mut e = envoy(&config(
        json!({"cluster": "outbound|80||elsewhere"}),
        json!({}),
    ));
    // The request goes where Envoy routed it, steered from that cluster's
    // inventory, as without the declaration.
    let out = e.request(&[]);
    assert_eq!(out.attempts, vec![FIRST.to_string()]);
    assert_eq!(lock(&e.shared).metric("locality_failover.config_errors"), 1);
    let logs = lock(&e.shared).logs.clone();
    assert!(
        logs.iter()
            .any(|(_, m)| m.contains("inventory.cluster") && m.contains("elsewhere")),
        "{logs:?}"
    );
    for _ in 0..10 {
        e.request(&[]);
    }
    assert_eq!(reads(&e, "xds.cluster_name"), 11, "every request asks now");
    assert_eq!(lock(&e.shared).metric("locality_failover.config_errors"), 1);
}

#[test]
fn a_route_change_is_caught_at_the_next_tick() {
    let mut e = envoy(&config(json!({"cluster": CLUSTER}), json!({})));
    e.request(&[]);
    // The route now sends requests to another cluster, with its own
    // inventory: its second pod only.
    let other = "outbound|8000||other.mesh.internal";
    let pod = &guide::PODS[1];
    let only: BTreeMap<&str, Value> = [(
        "endpoints",
        json!([{"address": pod.address, "labels": pod.labels()}]),
    )]
    .into_iter()
    .collect();
    let mut inventory = json!(only);
    inventory["revision"] = json!("1");
    e.set_cluster(
        other,
        metadata_for(NS, &inventory),
        vec![pod.address.to_string()],
    );
    e.advance(Duration::from_secs(1));
    let out = e.request(&[]);
    assert_eq!(
        out.attempts,
        vec![pod.address.to_string()],
        "the other cluster's pick"
    );
    assert_eq!(lock(&e.shared).metric("locality_failover.config_errors"), 1);
    let out = e.request(&[]);
    assert_eq!(out.attempts, vec![pod.address.to_string()]);
}

#[test]
fn request_counters_reach_envoy_on_the_tick() {
    let mut e = envoy(&config(json!({}), json!({})));
    let counter = |e: &SimEnvoy| lock(&e.shared).metric("locality_failover.requests.priority_0");
    for _ in 0..50 {
        e.request(&[]);
    }
    assert_eq!(counter(&e), 0, "counted in the VM, not yet in Envoy");
    // The tick (1 s: interval 10 s / 10) adds them.
    e.advance(Duration::from_secs(1));
    assert_eq!(counter(&e), 50);
    for _ in 0..7 {
        e.request(&[]);
    }
    e.advance(Duration::from_secs(1));
    assert_eq!(counter(&e), 57);
}
