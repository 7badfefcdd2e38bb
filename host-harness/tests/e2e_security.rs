//! No client-chosen upstream, on the real Envoy: a request that carries its
//! own steering header (override list, original-dst address, route header)
//! never reaches an address or backend outside the filter's choice.
//! Skips (printing SKIP) when `envoy` is not installed.

use std::time::Duration;

use host_harness::envoy::config::{FilterModeConfig, Layout, Node, Steering};
use host_harness::envoy::{
    envoy_binary, http_get, Endpoint, EnvoyOptions, EnvoyProcess, TempDir, Upstreams, WasmFilter,
};
use serde_json::json;

mod common;
use common::{labels, wasm};

const T: Duration = Duration::from_secs(5);

/// Upstreams `local` (us-east-1a, the filter's pick), `far` (us-west-2a, in
/// the inventory) and `rogue` (listening, in no inventory).
struct Rig {
    envoy: EnvoyProcess,
    ups: Upstreams,
    _dir: TempDir,
}

fn rig(steering: Steering, steering_config: serde_json::Value) -> Option<Rig> {
    if envoy_binary().is_none() {
        eprintln!("SKIP: envoy not on PATH");
        return None;
    }
    let ups = Upstreams::start(&["local", "far", "rogue"]).expect("upstreams");
    let endpoint = |name: &str, zone: &str| {
        let mut e = Endpoint::new(name, ups.addr(name).expect("addr"));
        e.labels = labels(zone);
        e
    };
    let endpoints = vec![
        endpoint("local", "us-east-1a"),
        endpoint("far", "us-west-2a"),
    ];
    let inline: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|e| json!({"address": e.address.to_string(), "name": e.name, "labels": e.labels, "backend": e.backend_name()}))
        .collect();
    let mut steering_config = steering_config;
    let mut plugin = json!({
        "trafficPolicy": {
            "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {"failoverPriority": [
                "topology.istio.io/network", "topology.kubernetes.io/region", "topology.kubernetes.io/zone"]}},
            "outlierDetection": {"consecutive5xxErrors": 5, "maxEjectionPercent": 50}},
    });
    if steering_config["mode"] == "route-header" {
        // The route depends on the header: the inventory comes from the config.
        plugin["inventory"] = json!({"source": "config", "endpoints": inline});
    }
    plugin["steering"] = steering_config.take();
    let mut cfg = FilterModeConfig::new(steering, endpoints);
    cfg.node = Node::with_labels(labels("us-east-1a"));
    cfg.wasm = Some(WasmFilter::new(wasm(), plugin.to_string()));
    let dir = TempDir::new("security").expect("temp dir");
    let layout = Layout::new(dir.path());
    let envoy = EnvoyProcess::start(&layout, &cfg.generate(&layout), &EnvoyOptions::default())
        .unwrap_or_else(|e| panic!("envoy did not start: {e}"));
    Some(Rig {
        envoy,
        ups,
        _dir: dir,
    })
}

impl Rig {
    fn get(&self, headers: &[(&str, &str)]) -> (u16, String) {
        let listener = self.envoy.listener().expect("listener");
        let r = http_get(listener, "/", headers, T)
            .unwrap_or_else(|e| panic!("request failed: {e}\n{}", self.envoy.log_tail(30)));
        (r.status, r.text())
    }

    fn addr(&self, name: &str) -> String {
        self.ups.addr(name).expect("addr").to_string()
    }

    fn assert_only_local(&self, sent: usize) {
        assert_eq!(
            self.ups.answered("rogue"),
            0,
            "a client-chosen address was reached"
        );
        assert_eq!(
            self.ups.answered("far"),
            0,
            "a client-chosen endpoint was reached"
        );
        assert_eq!(self.ups.answered("local"), sent as u64);
    }
}

#[test]
fn override_host_list_from_the_client_is_replaced() {
    let Some(rig) = rig(Steering::override_host(), json!({"mode": "override-host"})) else {
        return;
    };
    let rogue = rig.addr("rogue");
    let far = rig.addr("far");
    let tries = [
        rogue.clone(),
        far.clone(),
        format!("{rogue},{far}"),
        format!("{far},{rogue}"),
    ];
    for value in &tries {
        let (status, body) = rig.get(&[("x-locality-failover-hosts", value)]);
        assert_eq!(status, 200);
        assert_eq!(body.trim(), "local", "client sent {value}");
    }
    // The header twice: the filter never reads it, its replace must drop
    // every value (Envoy's setCopy removes all, then adds one).
    let (status, body) = rig.get(&[
        ("x-locality-failover-hosts", &rogue),
        ("x-locality-failover-hosts", &far),
    ]);
    assert_eq!(
        (status, body.trim()),
        (200, "local"),
        "client sent it twice"
    );
    rig.assert_only_local(tries.len() + 1);
}

#[test]
fn original_dst_address_from_the_client_is_replaced() {
    let Some(rig) = rig(Steering::original_dst(), json!({"mode": "original-dst"})) else {
        return;
    };
    let rogue = rig.addr("rogue");
    for _ in 0..3 {
        let (status, body) = rig.get(&[("x-envoy-original-dst-host", &rogue)]);
        assert_eq!(status, 200);
        assert_eq!(body.trim(), "local");
    }
    rig.assert_only_local(3);
}

#[test]
fn route_header_from_the_client_is_replaced() {
    let Some(rig) = rig(Steering::route_header(), json!({"mode": "route-header"})) else {
        return;
    };
    for backend in ["far", "rogue", "svc"] {
        let (status, body) = rig.get(&[("x-locality-failover-backend", backend)]);
        assert_eq!(status, 200, "client sent {backend}");
        assert_eq!(body.trim(), "local", "client sent {backend}");
    }
    rig.assert_only_local(3);
}
