//! The `envoy` inventory source and `stateful-session` steering settings:
//! the manifest's form parses, defaults, and every refusal names its field
//! and value.

use super::super::{Settings, SteeringMode, DEFAULT_SESSION_HEADER};
use super::*;
use crate::config::InventorySource;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{json, Value};

fn settings(v: &Value) -> Result<Settings, ConfigError> {
    Settings::from_bytes(v.to_string().as_bytes())
}

fn source(v: &Value) -> EnvoySource {
    match settings(v).unwrap().inventory {
        InventorySource::Envoy(s) => s,
        other => panic!("not the envoy source: {other:?}"),
    }
}

fn error(v: &Value) -> String {
    settings(v).unwrap_err().to_string()
}

#[test]
fn the_waypoint_manifest_parses() {
    let cfg = json!({
        "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN",
            "localityLbSetting": {"enabled": true, "failoverPriority": ["topology.istio.io/network", "topology.kubernetes.io/region", "topology.kubernetes.io/zone"]}},
            "outlierDetection": {"consecutive5xxErrors": 3, "interval": "5s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}},
        "inventory": {"source": "envoy", "adminCluster": "prometheus_stats", "pollInterval": "1s"},
        "steering": {"mode": "stateful-session", "header": "x-locality-failover-session"}});
    let s = settings(&cfg).unwrap();
    assert_eq!(s.steering.mode, SteeringMode::StatefulSession);
    assert_eq!(s.steering.header, "x-locality-failover-session");
    assert_eq!(s.steering.max_hosts, 1);
    let InventorySource::Envoy(src) = s.inventory else {
        panic!("envoy source")
    };
    assert_eq!(src.admin_cluster, "prometheus_stats");
    assert_eq!(src.poll_interval, Duration::from_secs(1));
}

#[test]
fn defaults() {
    let src = source(&json!({"inventory": {"source": "envoy"}}));
    assert_eq!(
        src,
        EnvoySource {
            admin_cluster: DEFAULT_ADMIN_CLUSTER.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            timeout: DEFAULT_POLL_INTERVAL,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            clusters: vec![],
        }
    );
    // The timeout defaults to the poll interval (at most 60s).
    let slow = source(&json!({"inventory": {"source": "envoy", "pollInterval": "5m"}}));
    assert_eq!(slow.timeout, MAX_POLL_TIMEOUT);
    let fast = source(&json!({"inventory": {"source": "envoy", "pollInterval": "300ms"}}));
    assert_eq!(fast.timeout, Duration::from_millis(300));
    let s = settings(&json!({"steering": {"mode": "stateful-session"}})).unwrap();
    assert_eq!(s.steering.header, DEFAULT_SESSION_HEADER);
}

#[test]
fn every_field_can_be_set() {
    let src = source(
        &json!({"inventory": {"source": "envoy", "adminCluster": "admin",
        "pollInterval": "250ms", "timeout": "100ms", "maxResponseBytes": 2048, "clusters": ["a|1", "b"]}}),
    );
    assert_eq!(src.admin_cluster, "admin");
    assert_eq!(src.poll_interval, Duration::from_millis(250));
    assert_eq!(src.timeout, Duration::from_millis(100));
    assert_eq!(src.max_response_bytes, 2048);
    assert_eq!(src.clusters, ["a|1", "b"]);
}

#[test]
fn refusals_name_the_field_and_value() {
    let cases = [
        (
            json!({"source": "envoy", "pollInterval": "10ms"}),
            "inventory.pollInterval",
            "\"10ms\"",
        ),
        (
            json!({"source": "envoy", "pollInterval": "1h"}),
            "inventory.pollInterval",
            "\"1h\"",
        ),
        (
            json!({"source": "envoy", "pollInterval": "soon"}),
            "inventory.pollInterval",
            "\"soon\"",
        ),
        (
            json!({"source": "envoy", "timeout": "0s"}),
            "inventory.timeout",
            "\"0s\"",
        ),
        (
            json!({"source": "envoy", "timeout": "2m"}),
            "inventory.timeout",
            "\"2m\"",
        ),
        (
            json!({"source": "envoy", "maxResponseBytes": 10}),
            "inventory.maxResponseBytes",
            "10",
        ),
        (
            json!({"source": "envoy", "maxResponseBytes": 1_000_000_000u64}),
            "inventory.maxResponseBytes",
            "1000000000",
        ),
        (
            json!({"source": "envoy", "adminCluster": ""}),
            "inventory.adminCluster",
            "\"\"",
        ),
        (
            json!({"source": "envoy", "clusters": ["ok", ""]}),
            "inventory.clusters[1]",
            "256",
        ),
        (
            json!({"source": "envoy", "endpoints": [{"address": "10.0.0.1:80"}]}),
            "inventory.endpoints",
            "envoy",
        ),
        (
            json!({"source": "clusterMetadata", "adminCluster": "x"}),
            "inventory.adminCluster",
            "clusterMetadata",
        ),
        (
            json!({"endpoints": [{"address": "10.0.0.1:80"}], "pollInterval": "1s"}),
            "inventory.pollInterval",
            "config",
        ),
        (json!({"source": "admin"}), "inventory.source", "\"admin\""),
    ];
    for (inventory, field, value) in cases {
        let e = error(&json!({ "inventory": inventory }));
        assert!(e.contains(field) && e.contains(value), "{inventory}: {e}");
    }
    let e = error(&json!({"steering": {"mode": "sticky"}}));
    assert!(
        e.contains("steering.mode") && e.contains("stateful-session"),
        "{e}"
    );
    let e = error(&json!({"steering": {"mode": "stateful-session", "header": "bad header"}}));
    assert!(
        e.contains("steering.header") && e.contains("\"bad header\""),
        "{e}"
    );
}

#[test]
fn route_header_cannot_use_the_envoy_source() {
    let e = error(&json!({"inventory": {"source": "envoy"}, "steering": {"mode": "route-header"}}));
    assert!(e.contains("inventory.source"), "{e}");
}
