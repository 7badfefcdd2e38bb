//! On the waypoint-shaped Envoy (`--mode waypoint`'s), with the filter
//! configured by nothing but a DestinationRule `trafficPolicy` (inventory
//! from Envoy's admin, stateful-session steering): removing a pod through
//! EDS, and adding it back, moves the filter's pick within two poll
//! periods. The pick is read from the session header the pod received.

#[allow(dead_code)]
mod common;
use common::require_envoy;

use std::time::{Duration, Instant};

use host_harness::envoy::HttpConnection;
use host_harness::runner::Player;
use host_harness::scenario::{EndpointState, Scenario};
use host_harness::waypoint::applicability::Shape;
use host_harness::waypoint::eds::{host_name, CONNECT_ORIGINATE};
use host_harness::waypoint::golden::Golden;
use host_harness::waypoint::player::{Start, WaypointPlayer};
use host_harness::waypoint::{plugin_config, SESSION_HEADER};
use locality_failover::session;
use serde_json::json;

const PERIOD: Duration = Duration::from_millis(500);

const SCENARIO: &str = r#"{
  "name": "waypoint live EDS",
  "client": {"labels": {"topology.istio.io/network": "net1",
    "topology.kubernetes.io/region": "us-east-1", "topology.kubernetes.io/zone": "us-east-1a"}},
  "endpoints": [
    {"name": "a", "address": "10.0.0.1:8080", "labels": {"topology.istio.io/network": "net1",
      "topology.kubernetes.io/region": "us-east-1", "topology.kubernetes.io/zone": "us-east-1a"}},
    {"name": "b", "address": "10.0.0.2:8080", "labels": {"topology.istio.io/network": "net1",
      "topology.kubernetes.io/region": "us-east-1", "topology.kubernetes.io/zone": "us-east-1b"}},
    {"name": "c", "address": "10.0.0.3:8080", "labels": {"topology.istio.io/network": "net1",
      "topology.kubernetes.io/region": "us-west-2", "topology.kubernetes.io/zone": "us-west-2a"}}
  ],
  "config": {"trafficPolicy": {
    "loadBalancer": {"simple": "ROUND_ROBIN", "localityLbSetting": {"enabled": true,
      "failoverPriority": ["topology.istio.io/network", "topology.kubernetes.io/region",
                           "topology.kubernetes.io/zone"]}},
    "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "3m"}}},
  "steps": []
}"#;

/// Sends requests until `n` in a row are answered by `name` with the
/// filter's session header naming it; how long that took, or None.
fn until_steered_to(p: &WaypointPlayer, name: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let want = host_name(CONNECT_ORIGINATE, &p.upstreams().addr(name)?.to_string());
    let listener = p.envoy().listener().ok()?;
    let mut conn = HttpConnection::connect(listener, Duration::from_secs(10)).ok()?;
    let mut streak = 0;
    while start.elapsed() < limit {
        let r = conn.get("/", &[]).ok()?;
        let seen = p
            .upstreams()
            .requests(name)
            .pop()
            .and_then(|q| q.header(SESSION_HEADER).and_then(session::decode));
        if r.text().trim() == name && seen.as_deref() == Some(want.as_str()) {
            streak += 1;
            if streak == 3 {
                return Some(start.elapsed());
            }
        } else {
            streak = 0;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn eds_changes_move_the_filters_pick_within_two_poll_periods() {
    require_envoy!();
    let wasm = common::wasm();
    let scenario = Scenario::parse("live.json", SCENARIO).unwrap();
    let scaled = serde_json::Value::Object(scenario.config.clone());
    let mut config = plugin_config(&scaled);
    config["inventory"]["pollInterval"] = json!(format!("{}ms", PERIOD.as_millis()));
    let golden = Golden::load("network-region-zone").unwrap();
    let mut p = WaypointPlayer::start(
        &scenario,
        Start {
            golden: &golden,
            plugin_config: config,
            scaled_config: &scaled,
            wasm: &wasm,
            scale: 1.0,
            shape: Shape::Gateway,
            // apply() returns once EDS is applied; the wait for the filter
            // is part of what is measured here.
            inventory_lag: Duration::from_millis(1),
        },
    )
    .unwrap();
    assert!(
        until_steered_to(&p, "a", PERIOD * 4).is_some(),
        "never steered to a\n{}",
        p.envoy().log_tail(30)
    );
    let t = Instant::now();
    p.apply(&[("a".to_string(), EndpointState::Removed)])
        .unwrap();
    let took = until_steered_to(&p, "b", PERIOD * 4)
        .map(|_| t.elapsed())
        .expect("pick never moved to b");
    eprintln!("EDS removal of a: pick on b after {took:?} (poll period {PERIOD:?})");
    assert!(
        took <= PERIOD * 2 + Duration::from_millis(300),
        "took {took:?}"
    );
    let t = Instant::now();
    p.apply(&[("a".to_string(), EndpointState::Present)])
        .unwrap();
    let took = until_steered_to(&p, "a", PERIOD * 4)
        .map(|_| t.elapsed())
        .expect("pick never back to a");
    eprintln!("EDS return of a: pick on a after {took:?}");
    assert!(
        took <= PERIOD * 2 + Duration::from_millis(300),
        "took {took:?}"
    );
}
